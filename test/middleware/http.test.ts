/**
 * middleware/http.ts: which events are HTTP requests, and the key helpers that read them —
 * header names in any case (payload 2.0 lower-cases them, 1.0 keeps the caller's), on the event
 * shapes API Gateway, function URLs and ALB send (issue 23, item 7).
 */
import { describe, expect, it } from 'vitest'
import { InvalidArgumentError, InvalidRequestError } from '../../lib/index.js'
import { isHttpEvent, jsonResponse } from '../../middleware/http.js'
import { fromEvent, fromHeader } from '../../middleware/index.js'
import { albEvent, httpApiEvent, restEvent, scheduledEvent } from '../support/http-events.js'

describe('isHttpEvent', () => {
  it('REST API, HTTP API, function URL and ALB events are HTTP; scheduled, SQS-like and plain events are not', () => {
    for (const event of [restEvent(), httpApiEvent(), httpApiEvent({}, 'url'), albEvent()]) expect(isHttpEvent(event)).toBe(true)
    for (const event of [scheduledEvent, { Records: [{ messageId: 'm-1', body: '{}' }] }, {}, null, 'GET /', { httpMethod: 'GET' }])
      expect(isHttpEvent(event)).toBe(false)
  })
})

describe('jsonResponse', () => {
  it('a proxy response with a JSON body; an ALB with multi-value headers on gets multiValueHeaders, which is all it reads', () => {
    expect(jsonResponse(httpApiEvent(), 409, { leader: false }, { 'Retry-After': '1' })).toEqual({
      statusCode: 409,
      headers: { 'Content-Type': 'application/json', 'Retry-After': '1' },
      body: '{"leader":false}',
      isBase64Encoded: false,
    })
    const multi = { ...albEvent(), headers: undefined, multiValueHeaders: { accept: ['*/*'] } }
    expect(jsonResponse(multi, 429, {})).toEqual({
      statusCode: 429,
      multiValueHeaders: { 'Content-Type': ['application/json'] },
      body: '{}',
      isBase64Encoded: false,
    })
    // REST events carry multiValueHeaders too, and read headers.
    expect(jsonResponse(restEvent({ headers: { Accept: '*/*' } }), 409, {}).headers).toEqual({ 'Content-Type': 'application/json' })
  })
})

describe('fromHeader', () => {
  const key = fromHeader('Idempotency-Key')

  it('finds the header whatever its case, in every HTTP event shape', () => {
    for (const sent of ['Idempotency-Key', 'idempotency-key', 'IDEMPOTENCY-KEY']) {
      expect(key(restEvent({ headers: { [sent]: 'k-1' } })), `REST, sent as ${sent}`).toBe('k-1')
      expect(key(httpApiEvent({ headers: { [sent]: 'k-1' } })), `HTTP API, sent as ${sent}`).toBe('k-1')
      expect(key(httpApiEvent({ headers: { [sent]: 'k-1' } }, 'url')), `function URL, sent as ${sent}`).toBe('k-1')
      expect(key(albEvent({ headers: { [sent]: 'k-1' } })), `ALB, sent as ${sent}`).toBe('k-1')
    }
    // An ALB with multi-value headers on has only multiValueHeaders: the last value, as 1.0's headers.
    expect(key({ ...albEvent(), headers: undefined, multiValueHeaders: { 'idempotency-key': ['a', 'b'] } })).toBe('b')
    // An exact match wins over another case of the same name.
    expect(key({ headers: { 'idempotency-key': 'lower', 'Idempotency-Key': 'exact' } })).toBe('exact')
  })

  it('is undefined without the header, with a blank one, with headers null (REST without any) and for events that are not HTTP', () => {
    expect(key(restEvent())).toBeUndefined()
    expect(restEvent().headers).toBeNull()
    expect(key(restEvent({ headers: { 'Idempotency-Key': '   ' } }))).toBeUndefined()
    expect(key(httpApiEvent({ headers: { Accept: '*/*' } }))).toBeUndefined()
    expect(key(scheduledEvent)).toBeUndefined()
    expect(key(undefined)).toBeUndefined()
  })

  it('says where it reads, and refuses a name that is no header name', () => {
    expect(key.source).toBe('the Idempotency-Key header')
    for (const bad of ['', 'Idempotency Key', 'key:', undefined as unknown as string])
      expect(() => fromHeader(bad)).toThrow(InvalidArgumentError)
  })
})

describe('fromEvent', () => {
  it('reads a dotted path: a string as is, a number in decimal; missing or empty is undefined', () => {
    const orderId = fromEvent('pathParameters.orderId')
    expect(orderId(restEvent({ pathParameters: { orderId: 'o-7' } }))).toBe('o-7')
    expect(orderId(httpApiEvent({ pathParameters: { orderId: 'o-7' } }))).toBe('o-7')
    expect(orderId(restEvent())).toBeUndefined()
    expect(orderId({ pathParameters: { orderId: '' } })).toBeUndefined()
    expect(fromEvent('detail.seq')({ detail: { seq: 42 } })).toBe('42')
    expect(fromEvent('detail.toString')({ detail: {} })).toBeUndefined()
    expect(orderId.source).toBe("the event's pathParameters.orderId")
  })

  it("another value there is the request's fault (400); a bad path is the programmer's", () => {
    const err = (() => {
      try {
        fromEvent('detail')(scheduledEvent)
      } catch (e) {
        return e
      }
    })()
    expect(err).toBeInstanceOf(InvalidRequestError)
    expect(err).toMatchObject({ statusCode: 400, expose: true })
    expect(() => fromEvent('detail.flag')({ detail: { flag: true } })).toThrow(/is boolean, not a string or number/)
    for (const bad of ['', 'a..b', '.a', undefined as unknown as string]) expect(() => fromEvent(bad)).toThrow(InvalidArgumentError)
  })
})
