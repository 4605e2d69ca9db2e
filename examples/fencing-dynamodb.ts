// Fencing a DynamoDB write (not run here: there is no DynamoDB in the test set-up). The item
// keeps the fence of the last write; a ConditionExpression lets a write land only with a higher
// fence. Send the input with @aws-sdk/client-dynamodb:
//
//   import { DynamoDBClient, UpdateItemCommand } from '@aws-sdk/client-dynamodb'
//   try {
//     await ddb.send(new UpdateItemCommand(fencedUpdateItem('accounts', { id: { S: 'alice' } }, { balance: { N: '120' } }, fence)))
//   } catch (err) {
//     if ((err as Error).name === 'ConditionalCheckFailedException') requireFenced(false, fence, 'accounts/alice') // throws FenceRejectedError
//     throw err
//   }
type AttributeValue = { S: string } | { N: string } | { BOOL: boolean }

/** UpdateItem input: sets `set` and the fence, only if the item is new or its fence is lower. */
export function fencedUpdateItem(table: string, key: Record<string, AttributeValue>, set: Record<string, AttributeValue>, fence: bigint) {
  const names: Record<string, string> = { '#fence': 'fence' }
  const values: Record<string, AttributeValue> = { ':fence': { N: fence.toString() } }
  const assignments = Object.entries(set).map(([attribute, value], i) => {
    names[`#a${i}`] = attribute
    values[`:a${i}`] = value
    return `#a${i} = :a${i}`
  })
  return {
    TableName: table,
    Key: key,
    UpdateExpression: `SET ${[...assignments, '#fence = :fence'].join(', ')}`,
    ConditionExpression: 'attribute_not_exists(#fence) OR #fence < :fence',
    ExpressionAttributeNames: names,
    ExpressionAttributeValues: values,
  }
}
