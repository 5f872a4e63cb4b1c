import type { components } from './schema'

type S = components['schemas']

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
export type SecurityWarning = S['SecurityWarning']
export type EncryptionStatus = S['EncryptionStatus']

export interface Page<T> {
  items: T[]
  pagination: Pagination
}

export type KeyStatusFilter = 'all' | 'active' | 'invalid' | 'disabled'
export type ExportStatus = 'all' | 'active' | 'invalid'
export type CopyKeysMode = 'all' | 'valid_only' | 'none'

/** The filters of `GET /api/logs` and `GET /api/logs/export`. */
export interface LogFilters {
  parent_group_name?: string
  group_name?: string
  key_value?: string
  model?: string
  is_success?: boolean
  request_type?: 'retry' | 'final'
  status_code?: number
  source_ip?: string
  error_contains?: string
  start_time?: string
  end_time?: string
}

export function isTaskStatus(t: TaskProgress | null | undefined): t is TaskStatus {
  return !!t && 'task_type' in t
}
