/**
 * One typed function per admin route used by the console. Each answer's type is the `data` the
 * OpenAPI document gives the route's operation (`DataOf<'operation_id'>`), and each body is
 * checked against the operation's documented body (`BodyOf`).
 */
import { downloadUrl, request, requestEnvelope, type RequestOptions } from './client'
import type {
  AccessKeyInput,
  BodyOf,
  CopyKeysMode,
  DataOf,
  ExportStatus,
  GroupInput,
  GroupPolicy,
  GroupPolicyInput,
  KeyLimits,
  KeyStateFilter,
  KeyStatusFilter,
  LogFilters,
  PolicyInput,
  QueryOf,
  RuleTest,
  SubGroupEntry,
  UsageQuery,
} from './types'

type Opts = Pick<RequestOptions, 'quiet' | 'notify' | 'signal'>

// Groups
export const groupsApi = {
  list: (o?: Opts) => request<DataOf<'list_groups'>>('/groups', o),
  listBrief: (o?: Opts) => request<DataOf<'list_groups_light'>>('/groups/list', o),
  channelTypes: (o?: Opts) => request<DataOf<'list_channel_types'>>('/channel-types', o),
  configOptions: (o?: Opts) =>
    request<DataOf<'list_config_options'>>('/groups/config-options', o),
  create: (body: GroupInput, o?: Opts) =>
    request<DataOf<'create_group'>>('/groups', {
      method: 'POST',
      body: body satisfies BodyOf<'create_group'>,
      ...o,
    }),
  update: (id: number, body: GroupInput, o?: Opts) =>
    request<DataOf<'update_group'>>(`/groups/${id}`, {
      method: 'PUT',
      body: body satisfies BodyOf<'update_group'>,
      ...o,
    }),
  remove: (id: number, o?: Opts) =>
    request<DataOf<'delete_group'>>(`/groups/${id}`, { method: 'DELETE', ...o }),
  reorder: (items: BodyOf<'reorder_groups'>['items'], o?: Opts) =>
    request<DataOf<'reorder_groups'>>('/groups/reorder', {
      method: 'PUT',
      body: { items } satisfies BodyOf<'reorder_groups'>,
      ...o,
    }),
  stats: (id: number, o?: Opts) => request<DataOf<'group_stats'>>(`/groups/${id}/stats`, o),
  /** Why the group's keys are where they are, with its limits' state on this node. */
  keyHealth: (id: number, o?: Opts) => request<DataOf<'key_health'>>(`/groups/${id}/key-health`, o),
  copy: (id: number, copyKeys: CopyKeysMode, o?: Opts) =>
    request<DataOf<'copy_group'>>(`/groups/${id}/copy`, {
      method: 'POST',
      body: { copy_keys: copyKeys } satisfies BodyOf<'copy_group'>,
      ...o,
    }),
  subGroups: (id: number, o?: Opts) =>
    request<DataOf<'list_sub_groups'>>(`/groups/${id}/sub-groups`, o),
  addSubGroups: (id: number, subGroups: SubGroupEntry[], o?: Opts) =>
    request<DataOf<'add_sub_groups'>>(`/groups/${id}/sub-groups`, {
      method: 'POST',
      body: { sub_groups: subGroups } satisfies BodyOf<'add_sub_groups'>,
      ...o,
    }),
  updateSubGroupWeight: (id: number, subGroupId: number, weight: number, o?: Opts) =>
    request<DataOf<'update_sub_group_weight'>>(`/groups/${id}/sub-groups/${subGroupId}/weight`, {
      method: 'PUT',
      body: { weight } satisfies BodyOf<'update_sub_group_weight'>,
      ...o,
    }),
  removeSubGroup: (id: number, subGroupId: number, o?: Opts) =>
    request<DataOf<'remove_sub_group'>>(`/groups/${id}/sub-groups/${subGroupId}`, {
      method: 'DELETE',
      ...o,
    }),
  parentAggregates: (id: number, o?: Opts) =>
    request<DataOf<'list_parent_aggregates'>>(`/groups/${id}/parent-aggregate-groups`, o),
}

// Keys
/** The query of `GET /api/keys`, with the console's `all` status and state (no filter). */
export type KeyListQuery = Omit<QueryOf<'list_keys'>, 'status' | 'state'> & {
  status?: KeyStatusFilter
  state?: KeyStateFilter
}

/** `{group_id, keys_text}`, the body of the batch routes. */
const keysText = (groupId: number, text: string) =>
  ({ group_id: groupId, keys_text: text }) satisfies BodyOf<'add_keys'>
/** `{group_id}`, the body of the whole-group routes. */
const groupOnly = (groupId: number) => ({ group_id: groupId }) satisfies BodyOf<'clear_all'>

export const keysApi = {
  list: (q: KeyListQuery, o?: Opts) =>
    request<DataOf<'list_keys'>>('/keys', {
      query: {
        ...q,
        status: q.status === 'all' ? undefined : q.status,
        state: q.state === 'all' ? undefined : q.state,
      } satisfies QueryOf<'list_keys'>,
      ...o,
    }),
  addAsync: (groupId: number, text: string, o?: Opts) =>
    request<DataOf<'add_async'>>('/keys/add-async', {
      method: 'POST',
      body: keysText(groupId, text),
      ...o,
    }),
  /** Multipart `group_id` + `file` (a `.txt` of keys). */
  addAsyncFile: (groupId: number, file: Blob, fileName = 'keys.txt', o?: Opts) => {
    const form = new FormData()
    form.append('group_id', String(groupId))
    form.append('file', file, fileName)
    return request<DataOf<'add_async'>>('/keys/add-async', { method: 'POST', form, ...o })
  },
  deleteAsync: (groupId: number, text: string, o?: Opts) =>
    request<DataOf<'delete_async'>>('/keys/delete-async', {
      method: 'POST',
      body: keysText(groupId, text),
      ...o,
    }),
  addMultiple: (groupId: number, text: string, o?: Opts) =>
    request<DataOf<'add_keys'>>('/keys/add-multiple', {
      method: 'POST',
      body: keysText(groupId, text),
      ...o,
    }),
  deleteMultiple: (groupId: number, text: string, o?: Opts) =>
    request<DataOf<'delete_keys'>>('/keys/delete-multiple', {
      method: 'POST',
      body: keysText(groupId, text),
      ...o,
    }),
  restoreMultiple: (groupId: number, text: string, o?: Opts) =>
    request<DataOf<'restore_keys'>>('/keys/restore-multiple', {
      method: 'POST',
      body: keysText(groupId, text),
      ...o,
    }),
  restoreAllInvalid: (groupId: number, o?: Opts) =>
    request<DataOf<'restore_all_invalid'>>('/keys/restore-all-invalid', {
      method: 'POST',
      body: groupOnly(groupId),
      ...o,
    }),
  clearAllInvalid: (groupId: number, o?: Opts) =>
    request<DataOf<'clear_all_invalid'>>('/keys/clear-all-invalid', {
      method: 'POST',
      body: groupOnly(groupId),
      ...o,
    }),
  clearAll: (groupId: number, o?: Opts) =>
    request<DataOf<'clear_all'>>('/keys/clear-all', {
      method: 'POST',
      body: groupOnly(groupId),
      ...o,
    }),
  validateGroup: (groupId: number, status?: 'active' | 'invalid', o?: Opts) =>
    request<DataOf<'validate_group'>>('/keys/validate-group', {
      method: 'POST',
      body: (status
        ? { group_id: groupId, status }
        : { group_id: groupId }) satisfies BodyOf<'validate_group'>,
      ...o,
    }),
  testMultiple: (groupId: number, text: string, o?: Opts) =>
    request<DataOf<'test_multiple'>>('/keys/test-multiple', {
      method: 'POST',
      body: keysText(groupId, text),
      notify: false,
      ...o,
    }),
  updateNotes: (id: number, notes: string, o?: Opts) =>
    request<DataOf<'update_notes'>>(`/keys/${id}/notes`, {
      method: 'PUT',
      body: { notes } satisfies BodyOf<'update_notes'>,
      ...o,
    }),
  /** A key's own limits, each replacing its group's; `{}` returns it to the group's. */
  updateLimits: (id: number, limits: KeyLimits, o?: Opts) =>
    request<DataOf<'update_limits'>>(`/keys/${id}/limits`, {
      method: 'PUT',
      body: limits satisfies BodyOf<'update_limits'>,
      ...o,
    }),
  updateStatus: (id: number, status: 'active' | 'disabled', o?: Opts) =>
    request<DataOf<'update_status'>>(`/keys/${id}/status`, {
      method: 'PUT',
      body: { status } satisfies BodyOf<'update_status'>,
      ...o,
    }),
  exportUrl: (groupId: number, status: ExportStatus) =>
    downloadUrl('/keys/export', { group_id: groupId, status } satisfies QueryOf<'export_keys'>),
}

export const tasksApi = {
  status: (o?: Opts) => request<DataOf<'task_status'>>('/tasks/status', o),
}

// Logs
export const logsApi = {
  list: (filters: LogFilters, page: number, pageSize: number, o?: Opts) =>
    request<DataOf<'list_logs'>>('/logs', {
      query: { ...filters, page, page_size: pageSize } satisfies QueryOf<'list_logs'>,
      ...o,
    }),
  exportUrl: (filters: LogFilters) =>
    downloadUrl('/logs/export', { ...filters } satisfies QueryOf<'export_logs'>),
}

// Usage
export const usageApi = {
  get: (query: UsageQuery, o?: Opts) =>
    request<DataOf<'get_usage'>>('/usage', { query: query satisfies QueryOf<'get_usage'>, ...o }),
  exportUrl: (query: UsageQuery) => downloadUrl('/usage/export', { ...query } satisfies QueryOf<'export_usage'>),
}

// Dashboard
export const dashboardApi = {
  stats: (o?: Opts) => request<DataOf<'stats'>>('/dashboard/stats', o),
  chart: (groupId?: number | null, o?: Opts) =>
    request<DataOf<'chart'>>('/dashboard/chart', {
      query: { groupId: groupId ?? undefined } satisfies QueryOf<'chart'>,
      ...o,
    }),
  encryptionStatus: (o?: Opts) =>
    request<DataOf<'encryption_status'>>('/dashboard/encryption-status', o),
  cluster: (o?: Opts) => request<DataOf<'cluster_status'>>('/cluster/status', o),
}

// Policies
export const policiesApi = {
  list: (o?: Opts) => request<DataOf<'list_policies'>>('/policies', o),
  get: (id: number, o?: Opts) => request<DataOf<'get_policy'>>(`/policies/${id}`, o),
  create: (body: PolicyInput, o?: Opts) =>
    request<DataOf<'create_policy'>>('/policies', {
      method: 'POST',
      body: body satisfies BodyOf<'create_policy'>,
      ...o,
    }),
  /** Every field is optional: what is left out is kept. */
  update: (id: number, body: PolicyInput, o?: Opts) =>
    request<DataOf<'update_policy'>>(`/policies/${id}`, {
      method: 'PUT',
      body: body satisfies BodyOf<'update_policy'>,
      ...o,
    }),
  remove: (id: number, o?: Opts) =>
    request<DataOf<'delete_policy'>>(`/policies/${id}`, { method: 'DELETE', ...o }),
  /** A dry run of rules against a sample answer (no toast: the result is the answer). */
  test: (body: RuleTest, o?: Opts) =>
    request<DataOf<'test_rules'>>('/policies/test', {
      method: 'POST',
      body: body satisfies BodyOf<'test_rules'>,
      notify: false,
      ...o,
    }),
  ofGroup: (groupId: number, o?: Opts) =>
    request<GroupPolicy[]>(`/groups/${groupId}/policies`, o) satisfies Promise<DataOf<'list_group_policies'>>,
  /** Replaces the group's whole list; answers the new list. */
  setForGroup: (groupId: number, policies: GroupPolicyInput[], o?: Opts) =>
    request<GroupPolicy[]>(`/groups/${groupId}/policies`, {
      method: 'PUT',
      body: { policies } satisfies BodyOf<'set_group_policies'>,
      ...o,
    }) satisfies Promise<DataOf<'set_group_policies'>>,
}

// Access keys
export const accessKeysApi = {
  /** The access keys and the legacy proxy keys (masked). */
  list: (o?: Opts) => request<DataOf<'list_access_keys'>>('/access-keys', o),
  /** Answers the new key: the only time it is shown. */
  create: (body: AccessKeyInput, o?: Opts) =>
    request<DataOf<'create_access_key'>>('/access-keys', {
      method: 'POST',
      body: body satisfies BodyOf<'create_access_key'>,
      ...o,
    }),
  /** Every field is optional: what is left out is kept. */
  update: (id: number, body: AccessKeyInput, o?: Opts) =>
    request<DataOf<'update_access_key'>>(`/access-keys/${id}`, {
      method: 'PUT',
      body: body satisfies BodyOf<'update_access_key'>,
      ...o,
    }),
  /** A new key for the record; the old one stops working. */
  rotate: (id: number, o?: Opts) =>
    request<DataOf<'rotate_access_key'>>(`/access-keys/${id}/rotate`, { method: 'POST', ...o }),
  remove: (id: number, o?: Opts) =>
    request<DataOf<'delete_access_key'>>(`/access-keys/${id}`, { method: 'DELETE', ...o }),
}

// Settings
export const settingsApi = {
  list: (o?: Opts) => request<DataOf<'list_settings'>>('/settings', o),
  update: (values: BodyOf<'update_settings'>, o?: Opts) =>
    requestEnvelope<DataOf<'update_settings'>>('/settings', { method: 'PUT', body: values, ...o }),
}
