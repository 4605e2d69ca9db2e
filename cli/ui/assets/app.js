// The operations page: plain DOM, no library. The server pushes a summary by Server-Sent Events
// (the overview); the open tab reads its rows a page at a time, again on every summary, so the
// page holds at most one page of rows however many locks or queues etcd has. Ages and TTLs
// count down here between summaries, from the server's clock (the skew is measured per summary).

const PAGE_SIZE = 100
const token = new URLSearchParams(location.search).get('token')
const authHeaders = token ? { authorization: `Bearer ${token}` } : {}

const ui = {
  summary: null,
  /** Server clock minus ours, ms. */
  skew: 0,
  tab: 'overview',
  page: 0,
  query: '',
  /** The queue whose detail is open in the queues tab. */
  queue: null,
  /** The last lookup answers (message by id, barrier by name), kept across re-renders. */
  found: '',
  barrierFound: '',
  /** Bumped on every render, so a slow answer for an older one is dropped. */
  generation: 0,
}

const $ = (selector) => document.querySelector(selector)

function escapeHtml(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

function serverNow() {
  return Date.now() + ui.skew
}

function duration(ms) {
  const s = Math.max(0, ms) / 1000
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`
  if (s < 3600) return `${Math.floor(s / 60)} m ${Math.floor(s % 60)} s`
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`
}

/** An age that counts up (ticked by the timer below); `exact` false: etcd's record predates the server, so at least this. */
function age(since, exact) {
  return `<span class="age" data-since="${since}" data-exact="${exact ? 1 : 0}">${ageText(since, exact)}</span>`
}

function ageText(since, exact) {
  return `${exact ? '' : '≥ '}${duration(serverNow() - since)}`
}

/** A lease's TTL that counts down from the summary's time. */
function ttl(entry, at) {
  if (entry.lease === null) return '<span class="empty">no lease</span>'
  if (entry.gone) return '<span class="zombie">gone</span>'
  if (entry.ttl === null) return '<span class="empty">…</span>'
  return `<span class="ttl" data-ttl="${entry.ttl}" data-at="${at}" data-granted="${entry.grantedTtl ?? ''}">${ttlText(entry.ttl, at, entry.grantedTtl)}</span>`
}

function ttlText(left, at, granted) {
  const now = Math.max(0, left - (serverNow() - at) / 1000)
  return `${now.toFixed(1)} s${granted ? ` / ${granted} s` : ''}`
}

function tick() {
  for (const el of document.querySelectorAll('[data-since]')) el.textContent = ageText(Number(el.dataset.since), el.dataset.exact === '1')
  for (const el of document.querySelectorAll('[data-ttl]'))
    el.textContent = ttlText(Number(el.dataset.ttl), Number(el.dataset.at), Number(el.dataset.granted) || 0)
  if (ui.summary) {
    const s = ui.summary
    $('#status').textContent =
      `revision ${s.revision} · read ${duration(serverNow() - s.at)} ago in ${s.readMs} ms${s.notes.length ? ` · ${s.notes.join('; ')}` : ''}`
  }
}

async function api(path) {
  const res = await fetch(path, { headers: authHeaders })
  const body = await res.json()
  if (!res.ok) throw new Error(body?.error ?? `${res.status} ${res.statusText}`)
  return body
}

async function act(name, body, question) {
  if (!window.confirm(question)) return
  const res = await fetch(`api/actions/${name}`, {
    method: 'POST',
    headers: { ...authHeaders, 'content-type': 'application/json', 'x-middy-etcd-ui': 'action' },
    body: JSON.stringify(body),
  })
  const answer = await res.json()
  showResult(res.ok ? answer.text : `refused: ${answer.error}`)
}

function showResult(text) {
  const box = $('#result')
  box.textContent = text
  box.hidden = false
  clearTimeout(showResult.timer)
  showResult.timer = setTimeout(() => {
    box.hidden = true
  }, 8000)
}

/** Replaces the view, unless the operator is typing in one of its forms (the next summary renders it). */
function setView(html) {
  if (document.activeElement?.closest?.('#view form')) return false
  $('#view').innerHTML = html
  return true
}

function showError(text) {
  const box = $('#error')
  box.textContent = text ?? ''
  box.hidden = !text
}

function revokeButton(entry) {
  if (!ui.summary?.actions || !entry.lease || entry.gone) return ''
  return ` <button type="button" class="act" data-act="revoke" data-lease="${escapeHtml(entry.lease)}" data-about="${escapeHtml(entry.key)}">revoke</button>`
}

function contenderCells(c, at) {
  return `<td class="num fence">${c.fence}</td><td class="key contender">${escapeHtml(c.key)}</td><td><code>${escapeHtml(c.lease ?? '-')}</code>${revokeButton(c)}</td><td class="num">${ttl(c, at)}</td><td class="num">${age(c.since, c.sinceExact)}</td><td>${c.zombie ? `<span class="tag bad zombie">zombie${c.gone ? ': lease gone' : c.notRenewed ? ': lease not renewed' : ': lease ending'}</span>` : ''}${c.behindZombie ? ' <span class="tag bad behind-zombie">behind a zombie holder</span>' : ''}</td>`
}

function table(headers, rows) {
  if (rows.length === 0) return '<p class="empty">none</p>'
  const head = headers.map((h) => (h.startsWith('#') ? `<th class="num">${h.slice(1)}</th>` : `<th>${h}</th>`)).join('')
  return `<table><thead><tr>${head}</tr></thead><tbody>${rows.join('')}</tbody></table>`
}

function chart(series) {
  const width = 300
  const height = 80
  const max = Math.max(1, ...series.flatMap((m) => [m.received, m.removed, m.deadLettered]))
  const line = (field, cls) => {
    const points = series.map(
      (m, i) => `${((i / (series.length - 1)) * width).toFixed(1)},${(height - (m[field] / max) * (height - 4) - 2).toFixed(1)}`,
    )
    return `<polyline class="${cls}" fill="none" stroke-width="1.5" vector-effect="non-scaling-stroke" points="${points.join(' ')}" />`
  }
  const total = (field) => series.reduce((n, m) => n + m[field], 0)
  return `<svg class="chart" viewBox="0 0 ${width} ${height}" preserveAspectRatio="none" role="img" aria-label="messages per minute, last ${series.length} minutes">${line('received', 'received')}${line('removed', 'removed')}${line('deadLettered', 'dead')}</svg>
<div class="legend"><span class="received">received ${total('received')}</span><span class="removed">removed (acked or moved) ${total('removed')}</span><span class="dead">dead-lettered ${total('deadLettered')}</span> <span class="empty">per minute, last ${series.length} min (peak ${max}/min)</span></div>`
}

function card(title, body, alarm) {
  return `<section class="card${alarm ? ' alarm' : ''}"><h2>${title}</h2>${body}</section>`
}

function renderOverview() {
  const s = ui.summary
  const st = s.stuck
  const who = (e) =>
    `<tr data-key="${escapeHtml(e.key)}"><td class="key">${escapeHtml(e.name)}</td><td>${escapeHtml(e.kind)} ${e.role}${e.behindZombie && !e.zombie ? ' <span class="tag bad behind-zombie">behind a zombie</span>' : ''}</td><td class="num fence">${e.fence}</td><td class="num">${age(e.since, e.sinceExact)}</td><td class="num">${ttl(e, s.at)}</td></tr>`
  const cards = [
    card(
      `Zombies (${st.zombies.length}): lease gone, not renewed, or under 1 s left`,
      table(
        ['NAME', 'ROLE', '#FENCE', '#FOR', '#TTL'],
        st.zombies.map((e) => who(e).replace('<tr ', '<tr class="zombie" ')),
      ),
      st.zombies.length > 0,
    ),
    card('Held longest', table(['NAME', 'ROLE', '#FENCE', '#HELD FOR', '#TTL'], st.longestHeld.map(who))),
    card('Waiting longest', table(['NAME', 'ROLE', '#FENCE', '#WAITING', '#TTL'], st.longestWaiting.map(who))),
    card(
      'Queues by oldest ready message',
      table(
        ['QUEUE', '#READY', '#OLDEST READY'],
        st.queuesByOldestReady.map(
          (q) =>
            `<tr><td><button type="button" class="link" data-queue="${escapeHtml(q.name)}">${escapeHtml(q.name)}</button></td><td class="num">${q.ready}</td><td class="num">${age(q.since, true)}</td></tr>`,
        ),
      ),
    ),
    card(
      'Dead letters that grew (since this server started)',
      table(
        ['QUEUE', 'DEAD-LETTER QUEUE', '#BEFORE', '#NOW'],
        st.deadLettersGrew.map(
          (d) =>
            `<tr><td><button type="button" class="link" data-queue="${escapeHtml(d.name)}">${escapeHtml(d.name)}</button></td><td class="key">${escapeHtml(d.deadLetter)}</td><td class="num">${d.before}</td><td class="num">${d.items}</td></tr>`,
        ),
      ),
      st.deadLettersGrew.length > 0,
    ),
    card(
      'Idempotency records in progress past their TTL',
      table(
        ['KEY', 'OWNER', '#FOR', '#TTL'],
        st.recordsOverdue.map(
          (r) =>
            `<tr><td class="key">${escapeHtml(r.key)}</td><td class="key">${escapeHtml(r.owner ?? '')}</td><td class="num">${age(r.since, r.sinceExact)}</td><td class="num">${ttl(r, s.at)}</td></tr>`,
        ),
      ),
      st.recordsOverdue.length > 0,
    ),
    card(
      'Callers queued (semaphores, rate limiters)',
      table(
        ['NAME', 'KIND', '#QUEUED', '#IN USE'],
        st.callersQueued.map(
          (p) =>
            `<tr><td class="key">${escapeHtml(p.name)}</td><td>${p.kind}</td><td class="num">${p.queued}</td><td class="num">${p.inUse}/${p.permits}</td></tr>`,
        ),
      ),
    ),
    card('Queue throughput, all queues', chart(s.throughput)),
  ]
  return `<div class="cards">${cards.join('')}</div>`
}

function pager(total) {
  const from = total === 0 ? 0 : ui.page * PAGE_SIZE + 1
  const to = Math.min(total, (ui.page + 1) * PAGE_SIZE)
  return `<div class="pager"><button type="button" data-page="-1" ${ui.page === 0 ? 'disabled' : ''}>previous</button><span class="range">${from}–${to} of <b class="total">${total}</b></span><button type="button" data-page="1" ${to >= total ? 'disabled' : ''}>next</button></div>`
}

const SECTIONS = {
  locks(rows, at) {
    return table(
      ['LOCK', 'KIND', 'ROLE', '#FENCE', 'KEY', 'LEASE', '#TTL', '#FOR', ''],
      rows.flatMap((l) => [
        ...(l.blockedBy
          ? [
              `<tr data-lock="${escapeHtml(l.name)}" data-role="blocked"><td class="key">${escapeHtml(l.name)}</td><td>${l.kind}</td><td>blocked by</td><td></td><td class="key">${escapeHtml(l.blockedBy)}</td><td colspan="4"></td></tr>`,
            ]
          : []),
        ...l.holders.map(
          (c) =>
            `<tr data-lock="${escapeHtml(l.name)}" data-role="holder"><td class="key">${escapeHtml(l.name)}</td><td>${l.kind}</td><td>holder${c.mode ? ` (${c.mode})` : ''}</td>${contenderCells(c, at)}</tr>`,
        ),
        ...l.waiters.map(
          (c, i) =>
            `<tr data-lock="${escapeHtml(l.name)}" data-role="waiter"><td class="key">${escapeHtml(l.name)}</td><td>${l.kind}</td><td>waiter #${i + 1}${c.mode ? ` (${c.mode})` : ''}</td>${contenderCells(c, at)}</tr>`,
        ),
      ]),
    )
  },
  elections(rows, at) {
    return table(
      ['ELECTION', 'ROLE', 'PROPOSAL', '#REV (FENCE)', 'KEY', 'LEASE', '#TTL', '#FOR', ''],
      rows.flatMap((l) =>
        [...l.holders.map((c) => ['leader', c]), ...l.waiters.map((c, i) => [`candidate #${i + 1}`, c])].map(
          ([role, c]) =>
            `<tr data-lock="${escapeHtml(l.name)}" data-role="${role === 'leader' ? 'leader' : 'candidate'}"><td class="key">${escapeHtml(l.name)}</td><td>${role}</td><td class="key">${escapeHtml(c.proposal ?? '')}</td>${contenderCells(c, at)}</tr>`,
        ),
      ),
    )
  },
  permits(rows, at) {
    return table(
      ['NAME', 'KIND', 'SETTINGS', 'ROLE', '#REV', 'KEY', 'LEASE', '#TTL', '#FOR', ''],
      rows.flatMap((p) => [
        `<tr data-lock="${escapeHtml(p.name)}" data-role="summary"><td class="key">${escapeHtml(p.name)}</td><td>${p.kind}</td><td><code>${escapeHtml(p.settings)}</code></td><td colspan="7">${p.holders.length} of ${p.permits} ${p.kind === 'semaphore' ? 'permits in use' : `tokens counted, <span class="admitted">${p.admittedPerSecond}</span>/s admitted (last 10 s)`}, <span class="queued">${p.waiters.length}</span> queued</td></tr>`,
        ...p.holders.map(
          (c) =>
            `<tr data-lock="${escapeHtml(p.name)}" data-role="holder"><td></td><td></td><td></td><td>${p.kind === 'semaphore' ? 'holder' : 'token'} slot ${c.slot ?? '?'}</td>${contenderCells(c, at)}</tr>`,
        ),
        ...p.waiters.map(
          (c, i) =>
            `<tr data-lock="${escapeHtml(p.name)}" data-role="waiter"><td></td><td></td><td></td><td>waiter #${i + 1}</td>${contenderCells(c, at)}</tr>`,
        ),
      ]),
    )
  },
  queues(rows) {
    return table(
      ['QUEUE', 'KIND', '#READY', '#IN FLIGHT', '#DELAYED', '#IN GROUPS', '#DLQ', '#OLDEST READY'],
      rows.map(
        (q) =>
          `<tr data-queue-row="${escapeHtml(q.name)}"><td><button type="button" class="link" data-queue="${escapeHtml(q.name)}">${escapeHtml(q.name)}</button></td><td>${q.kind}</td><td class="num">${q.ready}</td><td class="num">${q.inFlight}</td><td class="num">${q.delayed}</td><td class="num">${q.inGroups}</td><td class="num dlq">${q.deadLetter ? q.deadLetter.items : 0}</td><td class="num">${q.oldestReady ? age(q.oldestReady.since, q.oldestReady.sinceExact) : '-'}</td></tr>`,
      ),
    )
  },
  barriers(rows) {
    return `${table(
      ['BARRIER', 'HELD', '#PARTICIPANTS', 'READY'],
      rows.map(
        (b) =>
          `<tr><td class="key">${escapeHtml(b.name)}</td><td>${b.held ? 'yes' : 'no'}</td><td class="num">${b.participants}</td><td>${b.ready ? 'yes' : 'no'}</td></tr>`,
      ),
    )}<form class="inline" id="barrier-lookup"><label>A Barrier by name (a plain key: not found by a scan) <input name="name" required /></label><button type="submit">look up</button></form><div id="barrier-found">${ui.barrierFound}</div>`
  },
  records(rows, at) {
    const by = ui.summary.recordCounts
    const states = Object.entries(by.byState)
      .map(([k, n]) => `${escapeHtml(k)} ${n}`)
      .join(' · ')
    return `<p>${by.total} records${by.read < by.total ? ` (states of the first ${by.read})` : ''}${states ? `: ${states}` : ''}</p>${table(
      ['KEY', 'STATE', 'OWNER', 'LEASE', '#TTL', '#SINCE', ''],
      rows.map(
        (r) =>
          `<tr><td class="key">${escapeHtml(r.key)}</td><td>${escapeHtml(r.state)}</td><td class="key">${escapeHtml(r.owner ?? '')}</td><td><code>${escapeHtml(r.lease ?? '-')}</code></td><td class="num">${ttl(r, at)}</td><td class="num">${age(r.since, r.sinceExact)}</td><td>${r.overdue ? '<span class="tag bad">past its TTL</span>' : ''}</td></tr>`,
      ),
    )}`
  },
}

function queueActions(q) {
  if (!ui.summary.actions || !q) return ''
  const dlq = q.deadLetter ? q.deadLetter.items : 0
  return `<p>
<button type="button" class="act" data-act="redrive" data-queue="${escapeHtml(q.name)}" data-count="${dlq}" ${dlq === 0 ? 'disabled' : ''}>redrive all ${dlq} from dlq/${escapeHtml(q.name)}</button>
<form class="inline" id="redrive-some"><input name="max" type="number" min="1" value="1" aria-label="how many" class="narrow" /><button type="submit" class="act" ${dlq === 0 ? 'disabled' : ''}>redrive N</button></form>
<button type="button" class="act" data-act="purge" data-queue="${escapeHtml(q.name)}" data-count="${q.items}">purge ${q.items} items</button></p>`
}

async function renderQueue(name, generation) {
  const d = await api(`api/queue?name=${encodeURIComponent(name)}`)
  if (generation !== ui.generation) return
  const q = d.queue
  const facts = q
    ? `<div class="facts"><div><b>${q.ready}</b>ready</div><div><b>${q.inFlight}</b>in flight</div><div><b>${q.delayed}</b>delayed</div><div><b>${q.inGroups}</b>in groups</div><div><b class="dlq-count">${q.deadLetter ? q.deadLetter.items : 0}</b>dead letters</div><div><b>${q.oldestReady ? age(q.oldestReady.since, q.oldestReady.sinceExact) : '-'}</b>oldest ready</div></div>`
    : '<p class="empty">not seen in the last snapshot (empty?)</p>'
  const peek = table(
    ['#ID', 'STATE', '#RECEIVES', 'KEY', 'VALUE'],
    d.peek.map(
      (m) =>
        `<tr><td class="num">${escapeHtml(m.id)}</td><td>${m.claimed ? 'in flight' : 'ready'}</td><td class="num">${m.receives}</td><td class="key">${escapeHtml(m.key)}</td><td class="key">${escapeHtml(m.value)}</td></tr>`,
    ),
  )
  setView(`<p><button type="button" class="link" data-back="1">← all queues</button></p>
<section class="card" id="queue-detail" data-name="${escapeHtml(name)}"><h2>Queue <code>${escapeHtml(name)}</code> ${q ? `<span class="tag">${q.kind}</span>` : ''}</h2>${facts}
${chart(d.throughput)}${queueActions(q)}
<form class="inline" id="lookup"><label>message id <input name="message" inputmode="numeric" required /></label><button type="submit">look up</button></form><div id="found">${ui.found}</div>
<h2>Next ${d.peek.length}${d.more ? '+' : ''} messages (peek: nothing is claimed)</h2>${peek}</section>`)
  tick()
}

async function render() {
  const generation = ++ui.generation
  const s = ui.summary
  if (!s) return
  for (const [name, n] of Object.entries(s.counts)) {
    const el = document.querySelector(`[data-count="${name}"]`)
    if (el) el.textContent = `(${n})`
  }
  $('#mode').textContent = s.actions ? 'actions allowed (--allow-actions)' : 'read-only'
  showError(s.error)
  try {
    if (ui.tab === 'overview') {
      setView(renderOverview())
    } else if (ui.tab === 'queues' && ui.queue !== null) {
      await renderQueue(ui.queue, generation)
      return
    } else {
      const list = await api(
        `api/list?section=${ui.tab}&q=${encodeURIComponent(ui.query)}&offset=${ui.page * PAGE_SIZE}&limit=${PAGE_SIZE}`,
      )
      if (generation !== ui.generation) return
      setView(`${pager(list.total)}${SECTIONS[ui.tab](list.rows, list.at)}`)
    }
    tick()
  } catch (err) {
    showError(err.message)
  }
}

function connect() {
  const events = new EventSource(`events${token ? `?token=${encodeURIComponent(token)}` : ''}`)
  events.addEventListener('snapshot', (e) => {
    const summary = JSON.parse(e.data)
    if (!summary) return
    ui.skew = summary.at - Date.now()
    ui.summary = summary
    document.body.dataset.version = summary.version
    render()
  })
  events.onerror = () => {
    $('#status').textContent = 'disconnected from the server: reconnecting…'
  }
}

document.addEventListener('click', (e) => {
  const target = e.target.closest('button')
  if (!target) return
  if (target.dataset.tab) {
    ui.tab = target.dataset.tab
    ui.page = 0
    ui.queue = null
    for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b === target)
    render()
  } else if (target.dataset.page) {
    ui.page = Math.max(0, ui.page + Number(target.dataset.page))
    render()
  } else if (target.dataset.back) {
    ui.queue = null
    render()
  } else if (target.dataset.act === 'redrive') {
    const q = target.dataset.queue
    act('redrive', { queue: q }, `Move all ${target.dataset.count} messages of dlq/${q} back into ${q}? Their receive counts start again.`)
  } else if (target.dataset.act === 'purge') {
    const q = target.dataset.queue
    act(
      'purge',
      { queue: q },
      `Delete all ${target.dataset.count} items of queue ${q}, with their claims, delayed messages and groups? This cannot be undone.`,
    )
  } else if (target.dataset.act === 'revoke') {
    const lease = target.dataset.lease
    act(
      'revoke',
      { lease },
      `Revoke lease ${lease}? Every key on it is deleted (${target.dataset.about} and any other), so its holder loses what it holds.`,
    )
  } else if (target.dataset.queue !== undefined) {
    ui.tab = 'queues'
    ui.queue = target.dataset.queue
    ui.found = ''
    for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.tab === 'queues')
    render()
  }
})

document.addEventListener('submit', async (e) => {
  e.preventDefault()
  const form = e.target
  // getAttribute: a control named like a form property (id, name) would shadow it.
  try {
    if (form.getAttribute('id') === 'lookup') {
      const id = form.elements.message.value.trim()
      const res = await fetch(`api/message?queue=${encodeURIComponent(ui.queue)}&id=${encodeURIComponent(id)}`, { headers: authHeaders })
      const m = await res.json()
      ui.found = res.ok
        ? `<p>message ${escapeHtml(m.id)} in <code>${escapeHtml(m.queue)}</code>${m.deadLetter ? ' <span class="tag bad">dead letter</span>' : ''}: ${m.claimed ? 'in flight' : 'ready'}, received ${m.receives} times, key <code>${escapeHtml(m.key)}</code>, value <code>${escapeHtml(m.value)}</code></p>`
        : `<p class="empty">${escapeHtml(m.error)}</p>`
      $('#found').innerHTML = ui.found
    } else if (form.getAttribute('id') === 'barrier-lookup') {
      const b = await api(`api/barrier?name=${encodeURIComponent(form.elements.name.value)}`)
      ui.barrierFound = `<p><code>${escapeHtml(b.barrier)}</code>: ${b.held ? `held since revision ${b.heldSince}` : 'not held'}; ${b.doubleBarrier.participants} participants, ${b.doubleBarrier.ready ? 'ready' : 'not ready'}</p>`
      $('#barrier-found').innerHTML = ui.barrierFound
    } else if (form.getAttribute('id') === 'redrive-some') {
      const max = Number(form.elements.max.value)
      await act(
        'redrive',
        { queue: ui.queue, max },
        `Move up to ${max} messages of dlq/${ui.queue} back into ${ui.queue}? Their receive counts start again.`,
      )
    }
  } catch (err) {
    showError(err.message)
  }
  form.querySelector('input')?.blur()
})

let searchTimer
$('#search').addEventListener('input', (e) => {
  clearTimeout(searchTimer)
  searchTimer = setTimeout(() => {
    ui.query = e.target.value.trim()
    ui.page = 0
    // A message id names a message of the open queue; anything else filters the open list.
    if (ui.tab === 'overview') {
      ui.tab = 'locks'
      for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.tab === 'locks')
    }
    render()
  }, 200)
})

setInterval(tick, 500)
connect()
