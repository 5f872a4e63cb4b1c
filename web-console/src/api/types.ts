/**
 * The API's types, all taken from the generated `schema.d.ts` (the gateway's OpenAPI document):
 * its schemas by name, and for each route, by operation id, what it answers (`DataOf`), takes as
 * query (`QueryOf`) and as JSON body (`BodyOf`).
 */
import type { components, operations } from './schema'

type S = components['schemas']
type Operation = keyof operations
type JsonOf<R> = R extends { content: { 'application/json': infer B } } ? B : never

/** The success envelope an operation answers (its documented 200). */
export type OkOf<O extends Operation> = JsonOf<operations[O]['responses'][200]>
/** The `data` of an operation's success envelope; `undefined` when it answers only a message. */
export type DataOf<O extends Operation> = OkOf<O> extends { data: infer D } ? D : undefined
/** An operation's query parameters. */
export type QueryOf<O extends Operation> = NonNullable<operations[O]['parameters']['query']>
/** An operation's JSON body. */
export type BodyOf<O extends Operation> = operations[O] extends { requestBody?: infer B }
  ? JsonOf<NonNullable<B>>
  : never

export type GroupResponse = S['GroupResponse']
export type GroupInput = S['GroupInput']
export type GroupBrief = S['GroupBrief']
export type GroupStats = S['GroupStats']
export type RequestStats = S['RequestStats']
export type UpstreamSpec = S['UpstreamSpec']
export type HeaderRule = S['HeaderRuleJson']
export type ConfigOption = S['ConfigOption']
export type SubGroup = S['SubGroup']
export type SubGroupEntry = S['SubGroupEntry']
export type ParentAggregate = S['ParentAggregate']
export type CopyResult = S['CopyResult']
export type KeyResponse = S['KeyResponse']
export type AddResult = S['AddResult']
export type DeleteResult = S['DeleteResult']
export type RestoreResult = S['RestoreResult']
export type TestResults = S['TestResults']
export type TestedKey = S['TestedKey']
export type TaskStatus = S['TaskStatus']
export type TaskProgress = S['TaskProgress']
export type TaskType = S['TaskType']
export type LogItem = S['LogItem']
export type Pagination = S['Pagination']
export type SettingInfo = S['SettingInfo']
export type SettingsCategory = S['SettingsCategory']
export type DashboardStats = S['DashboardStats']
export type StatCard = S['Card']
export type Chart = S['Chart']
export type ClusterStatus = S['ClusterStatus']
export type NodeEntry = S['NodeEntry']
export type SecurityWarning = S['SecurityWarning']
export type EncryptionStatus = S['EncryptionStatus']
export type ErrorCode = S['ErrorCode']
export type Failure = S['Failure']
export type InvalidField = S['InvalidField']
export type Ack = S['Ack']
export type Policy = S['PolicyJson']
export type PolicyInput = S['PolicyInput']
export type RuleTest = S['RuleTest']
export type RuleTestResult = S['RuleTestResult']
export type SampleAnswer = S['SampleAnswer']
/** One entry of `PUT /api/groups/{id}/policies`'s body. */
export type GroupPolicyInput = S['GroupPolicyEntry']
/** One of a group's policies as `GET`/`PUT /api/groups/{id}/policies` answer it. */
export type GroupPolicy = S['GroupPolicyJson']
export type LimitState = S['LimitState']
/** A key's own limits (`PUT /api/keys/{id}/limits`). */
export type KeyLimits = S['KeyLimitOverride']
export type AccessKey = S['AccessKeyJson']
export type AccessKeyInput = S['AccessKeyInput']
export type LegacyKey = S['LegacyKeyJson']
export type UsageReport = S['UsageReport']
export type UsageItem = S['UsageItem']
/** The query of `GET /api/usage` and `GET /api/usage/export`. */
export type UsageQuery = QueryOf<'get_usage'>

/** One page of keys (`GET /api/keys`). */
export type KeyPage = DataOf<'list_keys'>
/** One page of request logs (`GET /api/logs`). */
export type LogPage = DataOf<'list_logs'>

// The document types these parameters as plain strings (their values are only in its
// descriptions), so the console states the values it sends; `all` means no filter.
export type KeyStatusFilter = 'all' | 'active' | 'invalid' | 'disabled'
/** The lifecycle states `GET /api/keys?state=` filters by (docs/KEYS.md). */
export type KeyStateFilter = 'all' | 'pending' | 'active' | 'degraded' | 'cooling' | 'invalid' | 'disabled'
export type ExportStatus = 'all' | 'active' | 'invalid'
export type CopyKeysMode = 'all' | 'valid_only' | 'none'

/** The filters of `GET /api/logs` and `GET /api/logs/export`: their query without paging. */
export type LogFilters = Omit<QueryOf<'list_logs'>, 'page' | 'page_size'>

export function isTaskStatus(t: TaskProgress | null | undefined): t is TaskStatus {
  return !!t && 'task_type' in t
}
