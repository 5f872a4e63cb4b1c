import { beforeEach, describe, expect, it } from 'vitest'
import {
  DEFAULT_LOG_COLUMNS,
  LOG_COLUMNS_STORAGE_KEY,
  buildLogFilters,
  emptyLogFilterForm,
  loadVisibleColumns,
  saveVisibleColumns,
  toRfc3339,
} from '@/utils/logFilters'
import {
  PROXY_KEY_PATTERN,
  appendGeneratedKeys,
  generateProxyKey,
  maskKey,
  splitProxyKeys,
} from '@/utils/proxyKeys'
import { moveItem, sortItems } from '@/utils/reorder'

describe('proxy key generator', () => {
  it('makes sk- + 48 characters of [A-Za-z0-9_-]', () => {
    for (let i = 0; i < 50; i++) expect(generateProxyKey()).toMatch(PROXY_KEY_PATTERN)
    expect(generateProxyKey()).not.toBe(generateProxyKey())
  })

  it('uses every symbol of the alphabet', () => {
    const bytes = new Uint8Array(48).map((_, i) => i + 16)
    expect(generateProxyKey(() => bytes)).toBe(
      'sk-QRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-ABCDEFGHIJKLMNOP'.slice(0, 51),
    )
  })

  it('appends generated keys to a comma list', () => {
    const out = appendGeneratedKeys(' sk-a ,, sk-b\nsk-a', 2)
    const parts = out.split(',')
    expect(parts.slice(0, 2)).toEqual(['sk-a', 'sk-b'])
    expect(parts).toHaveLength(4)
    expect(parts[2]).toMatch(PROXY_KEY_PATTERN)
    expect(splitProxyKeys('')).toEqual([])
  })

  it('masks keys', () => {
    expect(maskKey('sk-abcdefghijklmnop')).toBe('sk-abc••••mnop')
    expect(maskKey('short')).toBe('sh••••rt')
  })
})

describe('group reorder', () => {
  it('moves an entry and numbers the sort from 1', () => {
    const list = [{ id: 5 }, { id: 6 }, { id: 7 }]
    const moved = moveItem(list, 2, 0)
    expect(moved.map((g) => g.id)).toEqual([7, 5, 6])
    expect(list.map((g) => g.id)).toEqual([5, 6, 7])
    expect(sortItems(moved)).toEqual([
      { id: 7, sort: 1 },
      { id: 5, sort: 2 },
      { id: 6, sort: 3 },
    ])
    expect(moveItem(list, 0, 2).map((g) => g.id)).toEqual([6, 7, 5])
  })
})

describe('log filters', () => {
  beforeEach(() => localStorage.clear())

  it('leaves out blank filters', () => {
    expect(buildLogFilters(emptyLogFilterForm())).toEqual({})
  })

  it('builds every filter of GET /api/logs', () => {
    const f = emptyLogFilterForm()
    Object.assign(f, {
      parent_group_name: ' agg ',
      group_name: 'g1',
      key_value: 'sk-x',
      model: 'gpt',
      is_success: 'false',
      request_type: 'retry',
      status_code: 429,
      source_ip: '10.0.0.1',
      error_contains: 'quota',
      time_range: [Date.UTC(2026, 0, 2, 3, 4, 5, 678), Date.UTC(2026, 0, 3)],
    })
    expect(buildLogFilters(f)).toEqual({
      parent_group_name: 'agg',
      group_name: 'g1',
      key_value: 'sk-x',
      model: 'gpt',
      is_success: false,
      request_type: 'retry',
      status_code: 429,
      source_ip: '10.0.0.1',
      error_contains: 'quota',
      start_time: '2026-01-02T03:04:05Z',
      end_time: '2026-01-03T00:00:00Z',
    })
    f.is_success = 'true'
    expect(buildLogFilters(f).is_success).toBe(true)
  })

  it('formats RFC 3339', () => {
    expect(toRfc3339(0)).toBe('1970-01-01T00:00:00Z')
  })

  it('stores the visible columns', () => {
    expect(loadVisibleColumns()).toEqual(DEFAULT_LOG_COLUMNS)
    saveVisibleColumns(['timestamp', 'model'])
    expect(loadVisibleColumns()).toEqual(['timestamp', 'model'])
    localStorage.setItem(LOG_COLUMNS_STORAGE_KEY, '["bogus", "model"]')
    expect(loadVisibleColumns()).toEqual(['model'])
    localStorage.setItem(LOG_COLUMNS_STORAGE_KEY, '{not json')
    expect(loadVisibleColumns()).toEqual(DEFAULT_LOG_COLUMNS)
  })
})

describe('format', () => {
  it('reads zone-less server timestamps as UTC', async () => {
    const { parseServerTime } = await import('@/utils/format')
    expect(parseServerTime('2026-11-22T07:28:00.122568').toISOString()).toBe('2026-11-22T07:28:00.122Z')
    expect(parseServerTime('2026-11-22T07:28:00Z').toISOString()).toBe('2026-11-22T07:28:00.000Z')
    expect(parseServerTime('2026-11-22T09:28:00+02:00').toISOString()).toBe('2026-11-22T07:28:00.000Z')
  })

  it('formats relative times and percentages', async () => {
    const { relativeTime, formatPercent } = await import('@/utils/format')
    const now = Date.UTC(2026, 10, 22, 8, 0, 0)
    expect(relativeTime('2026-11-22T07:58:00', 'en', now)).toBe('2 minutes ago')
    expect(relativeTime(null, 'en', now)).toBe('never')
    expect(relativeTime(null, 'zh', now)).toBe('从未')
    expect(formatPercent(0.1234)).toBe('12.34%')
    expect(formatPercent(0)).toBe('0%')
  })
})
