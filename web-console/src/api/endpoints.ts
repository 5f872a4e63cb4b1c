/** One typed function per admin route used by the console. */
import { downloadUrl, request, requestEnvelope, type RequestOptions } from './client'
import type {
  AddResult,
  Chart,
  ConfigOption,
  CopyKeysMode,
  CopyResult,
  DashboardStats,
  DeleteResult,
  EncryptionStatus,
  ExportStatus,
  GroupBrief,
  GroupInput,
  GroupResponse,
  GroupStats,
  KeyResponse,
  KeyStatusFilter,
  LogFilters,
  LogItem,
  Page,
  ParentAggregate,
  RestoreResult,
  SettingsCategory,
  SubGroup,
  SubGroupEntry,
  TaskProgress,
  TestResults,
} from './types'

type Opts = Pick<RequestOptions, 'quiet' | 'notify' | 'signal'>

// Groups
export const groupsApi = {
  list: (o?: Opts) => request<GroupResponse[]>('/groups', o),
  listBrief: (o?: Opts) => request<GroupBrief[]>('/groups/list', o),
  channelTypes: (o?: Opts) => request<string[]>('/channel-types', o),
  configOptions: (o?: Opts) => request<ConfigOption[]>('/groups/config-options', o),
  create: (body: GroupInput, o?: Opts) =>
    request<GroupResponse>('/groups', { method: 'POST', body, ...o }),
  update: (id: number, body: GroupInput, o?: Opts) =>
    request<GroupResponse>(`/groups/${id}`, { method: 'PUT', body, ...o }),
  remove: (id: number, o?: Opts) =>
    request<unknown>(`/groups/${id}`, { method: 'DELETE', ...o }),
  reorder: (items: { id: number; sort: number }[], o?: Opts) =>
    request<unknown>('/groups/reorder', { method: 'PUT', body: { items }, ...o }),
  stats: (id: number, o?: Opts) => request<GroupStats>(`/groups/${id}/stats`, o),
  copy: (id: number, copyKeys: CopyKeysMode, o?: Opts) =>
    request<CopyResult>(`/groups/${id}/copy`, {
      method: 'POST',
      body: { copy_keys: copyKeys },
      ...o,
    }),
  subGroups: (id: number, o?: Opts) => request<SubGroup[]>(`/groups/${id}/sub-groups`, o),
  addSubGroups: (id: number, subGroups: SubGroupEntry[], o?: Opts) =>
    request<unknown>(`/groups/${id}/sub-groups`, {
      method: 'POST',
      body: { sub_groups: subGroups },
      ...o,
    }),
  updateSubGroupWeight: (id: number, subGroupId: number, weight: number, o?: Opts) =>
    request<unknown>(`/groups/${id}/sub-groups/${subGroupId}/weight`, {
      method: 'PUT',
      body: { weight },
      ...o,
    }),
  removeSubGroup: (id: number, subGroupId: number, o?: Opts) =>
    request<unknown>(`/groups/${id}/sub-groups/${subGroupId}`, { method: 'DELETE', ...o }),
  parentAggregates: (id: number, o?: Opts) =>
    request<ParentAggregate[]>(`/groups/${id}/parent-aggregate-groups`, o),
}

// Keys
export interface KeyListQuery {
  group_id: number
  status?: KeyStatusFilter
  key_value?: string
  page?: number
  page_size?: number
}

export const keysApi = {
  list: (q: KeyListQuery, o?: Opts) =>
    request<Page<KeyResponse>>('/keys', {
      query: { ...q, status: q.status === 'all' ? undefined : q.status },
      ...o,
    }),
  addAsync: (groupId: number, keysText: string, o?: Opts) =>
    request<TaskProgress>('/keys/add-async', {
      method: 'POST',
      body: { group_id: groupId, keys_text: keysText },
      ...o,
    }),
  /** Multipart `group_id` + `file` (a `.txt` of keys). */
  addAsyncFile: (groupId: number, file: Blob, fileName = 'keys.txt', o?: Opts) => {
    const form = new FormData()
    form.append('group_id', String(groupId))
    form.append('file', file, fileName)
    return request<TaskProgress>('/keys/add-async', { method: 'POST', form, ...o })
  },
  deleteAsync: (groupId: number, keysText: string, o?: Opts) =>
    request<TaskProgress>('/keys/delete-async', {
      method: 'POST',
      body: { group_id: groupId, keys_text: keysText },
      ...o,
    }),
  addMultiple: (groupId: number, keysText: string, o?: Opts) =>
    request<AddResult>('/keys/add-multiple', {
      method: 'POST',
      body: { group_id: groupId, keys_text: keysText },
      ...o,
    }),
  deleteMultiple: (groupId: number, keysText: string, o?: Opts) =>
    request<DeleteResult>('/keys/delete-multiple', {
      method: 'POST',
      body: { group_id: groupId, keys_text: keysText },
      ...o,
    }),
  restoreMultiple: (groupId: number, keysText: string, o?: Opts) =>
    request<RestoreResult>('/keys/restore-multiple', {
      method: 'POST',
      body: { group_id: groupId, keys_text: keysText },
      ...o,
    }),
  restoreAllInvalid: (groupId: number, o?: Opts) =>
    request<unknown>('/keys/restore-all-invalid', {
      method: 'POST',
      body: { group_id: groupId },
      ...o,
    }),
  clearAllInvalid: (groupId: number, o?: Opts) =>
    request<unknown>('/keys/clear-all-invalid', {
      method: 'POST',
      body: { group_id: groupId },
      ...o,
    }),
  clearAll: (groupId: number, o?: Opts) =>
    request<unknown>('/keys/clear-all', { method: 'POST', body: { group_id: groupId }, ...o }),
  validateGroup: (groupId: number, status?: 'active' | 'invalid', o?: Opts) =>
    request<TaskProgress>('/keys/validate-group', {
      method: 'POST',
      body: status ? { group_id: groupId, status } : { group_id: groupId },
      ...o,
    }),
  testMultiple: (groupId: number, keysText: string, o?: Opts) =>
    request<TestResults>('/keys/test-multiple', {
      method: 'POST',
      body: { group_id: groupId, keys_text: keysText },
      notify: false,
      ...o,
    }),
  updateNotes: (id: number, notes: string, o?: Opts) =>
    request<unknown>(`/keys/${id}/notes`, { method: 'PUT', body: { notes }, ...o }),
  updateStatus: (id: number, status: 'active' | 'disabled', o?: Opts) =>
    request<unknown>(`/keys/${id}/status`, { method: 'PUT', body: { status }, ...o }),
  exportUrl: (groupId: number, status: ExportStatus) =>
    downloadUrl('/keys/export', { group_id: groupId, status }),
}

export const tasksApi = {
  status: (o?: Opts) => request<TaskProgress>('/tasks/status', o),
}

// Logs
export const logsApi = {
  list: (filters: LogFilters, page: number, pageSize: number, o?: Opts) =>
    request<Page<LogItem>>('/logs', { query: { ...filters, page, page_size: pageSize }, ...o }),
  exportUrl: (filters: LogFilters) => downloadUrl('/logs/export', { ...filters }),
}

// Dashboard
export const dashboardApi = {
  stats: (o?: Opts) => request<DashboardStats>('/dashboard/stats', o),
  chart: (groupId?: number | null, o?: Opts) =>
    request<Chart>('/dashboard/chart', { query: { groupId: groupId ?? undefined }, ...o }),
  encryptionStatus: (o?: Opts) => request<EncryptionStatus>('/dashboard/encryption-status', o),
}

// Settings
export const settingsApi = {
  list: (o?: Opts) => request<SettingsCategory[]>('/settings', o),
  update: (values: Record<string, unknown>, o?: Opts) =>
    requestEnvelope<unknown>('/settings', { method: 'PUT', body: values, ...o }),
}
