import type { LogFilters } from '@/api/types'

/** The logs page's filter form. */
export interface LogFilterForm {
  parent_group_name: string
  group_name: string
  key_value: string
  model: string
  is_success: '' | 'true' | 'false'
  request_type: '' | 'retry' | 'final'
  status_code: number | null
  source_ip: string
  error_contains: string
  /** Epoch milliseconds [start, end] from the date picker. */
  time_range: [number, number] | null
}

export function emptyLogFilterForm(): LogFilterForm {
  return {
    parent_group_name: '',
    group_name: '',
    key_value: '',
    model: '',
    is_success: '',
    request_type: '',
    status_code: null,
    source_ip: '',
    error_contains: '',
    time_range: null,
  }
}

/** RFC 3339 in UTC (what `GET /api/logs` takes). */
export function toRfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
}

/** The query filters: blank fields left out, text trimmed, times as RFC 3339. */
export function buildLogFilters(f: LogFilterForm): LogFilters {
  const out: LogFilters = {}
  const text = [
    'parent_group_name',
    'group_name',
    'key_value',
    'model',
    'source_ip',
    'error_contains',
  ] as const
  for (const k of text) {
    const v = f[k].trim()
    if (v) out[k] = v
  }
  if (f.is_success) out.is_success = f.is_success === 'true'
  if (f.request_type) out.request_type = f.request_type
  if (f.status_code !== null && Number.isInteger(f.status_code)) out.status_code = f.status_code
  if (f.time_range) {
    out.start_time = toRfc3339(f.time_range[0])
    out.end_time = toRfc3339(f.time_range[1])
  }
  return out
}

export const LOG_COLUMNS = [
  'timestamp',
  'is_success',
  'request_type',
  'is_stream',
  'status_code',
  'duration_ms',
  'parent_group_name',
  'group_name',
  'model',
  'key_value',
  'source_ip',
  'request_path',
  'upstream_addr',
  'error_message',
] as const
export type LogColumn = (typeof LOG_COLUMNS)[number]

export const DEFAULT_LOG_COLUMNS: LogColumn[] = [
  'timestamp',
  'is_success',
  'request_type',
  'status_code',
  'duration_ms',
  'group_name',
  'model',
  'key_value',
  'source_ip',
  'error_message',
]
export const LOG_COLUMNS_STORAGE_KEY = 'log-table-visible-columns'

export function loadVisibleColumns(): LogColumn[] {
  try {
    const raw = localStorage.getItem(LOG_COLUMNS_STORAGE_KEY)
    if (!raw) return [...DEFAULT_LOG_COLUMNS]
    const parsed: unknown = JSON.parse(raw)
    if (!Array.isArray(parsed)) return [...DEFAULT_LOG_COLUMNS]
    const valid = parsed.filter((c): c is LogColumn => LOG_COLUMNS.includes(c as LogColumn))
    return valid.length ? valid : [...DEFAULT_LOG_COLUMNS]
  } catch {
    return [...DEFAULT_LOG_COLUMNS]
  }
}

export function saveVisibleColumns(cols: LogColumn[]): void {
  localStorage.setItem(LOG_COLUMNS_STORAGE_KEY, JSON.stringify(cols))
}
