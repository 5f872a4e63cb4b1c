import { afterEach, describe, expect, it } from 'vitest'
import type { UsageItem } from '@/api/types'
import { bucketStart, usageChart, usageQuery } from '@/utils/usage'
import UsageView from '@/views/UsageView.vue'
import { byTestId, flush, mockApi, mountWithProviders, ok } from './helpers'

const totals = (requests: number, prompt: number, completion: number, cached = 0) => ({
  requests,
  failures: 1,
  prompt_tokens: prompt,
  completion_tokens: completion,
  cached_tokens: cached,
  reasoning_tokens: 0,
  total_tokens: prompt + completion,
})
const item = (extra: Partial<UsageItem>, sums = totals(1, 10, 2)) => ({ ...sums, ...extra }) as UsageItem

afterEach(() => {
  document.body.innerHTML = ''
  localStorage.clear()
})

describe('usage helpers', () => {
  const now = Date.parse('2026-12-06T10:25:00Z')

  it('asks for the range ending now, of one group or all', () => {
    expect(usageQuery('24h', now, null, 'hour')).toEqual({
      start_time: '2026-12-05T10:25:00.000Z',
      end_time: '2026-12-06T10:25:00.000Z',
      group_id: undefined,
      group_by: 'hour',
    })
    expect(usageQuery('7d', now, 3, 'key').start_time).toBe('2026-11-29T10:25:00.000Z')
    expect(usageQuery('30d', now, 3, 'key').group_id).toBe(3)
  })

  it('charts one point per bucket, empty buckets at zero', () => {
    expect(bucketStart(now, 'hour')).toBe(Date.parse('2026-12-06T10:00:00Z'))
    expect(bucketStart(now, 'day')).toBe(Date.parse('2026-12-06T00:00:00Z'))
    const items = [
      item({ time: '2026-12-06T08:00:00Z' }, totals(2, 100, 20, 40)),
      item({ time: '2026-12-06T10:00:00Z' }, totals(1, 7, 3)),
    ]
    const chart = usageChart(items, 'hour', Date.parse('2026-12-06T07:25:00Z'), now, ['in', 'out', 'cached'])
    expect(chart.labels).toEqual([
      '2026-12-06T07:00:00.000Z',
      '2026-12-06T08:00:00.000Z',
      '2026-12-06T09:00:00.000Z',
      '2026-12-06T10:00:00.000Z',
    ])
    expect(chart.datasets.map((d) => [d.label, d.data])).toEqual([
      ['in', [0, 100, 0, 7]],
      ['out', [0, 20, 0, 3]],
      ['cached', [0, 40, 0, 0]],
    ])
    const daily = usageChart(items, 'day', Date.parse('2026-12-04T12:00:00Z'), now, [])
    expect(daily.labels).toHaveLength(3)
    expect(daily.datasets[0]?.data).toEqual([0, 0, 107])
  })
})

describe('UsageView', () => {
  it('shows the totals, the top keys with their peak RPM and the top models', async () => {
    const report = (group_by: string[], items: UsageItem[]) => ({
      start_time: '2026-12-05T10:00:00Z',
      end_time: '2026-12-06T10:25:00Z',
      group_by,
      totals: totals(5, 1200, 300, 600),
      items,
      truncated: false,
    })
    const { calls } = mockApi((c) => {
      if (c.url.startsWith('/api/groups/list')) return ok([{ id: 1, name: 'a', display_name: 'A' }])
      const groupBy = new URL(c.url, 'http://x').searchParams.get('group_by')
      if (groupBy === 'key') {
        return ok(
          report(['group', 'key'], [
            item({ group_id: 1, group_name: 'a', key_id: 7, key: 'sk-a****wxyz', peak_rpm: 4 }, totals(4, 1000, 200)),
            item({ group_id: 1, group_name: 'a', key_id: 8, key: '', peak_rpm: 1 }),
          ]),
        )
      }
      if (groupBy === 'model') return ok(report(['model'], [item({ model: 'gpt-4o' }), item({ model: '' })]))
      return ok(report(['hour'], [item({ time: '2026-12-06T09:00:00Z' }, totals(5, 1200, 300, 600))]))
    })
    const w = mountWithProviders(UsageView)
    await flush(10)
    expect(byTestId('usage-card-requests').dataset.value).toBe('5')
    expect(byTestId('usage-card-prompt').textContent).toContain('1,200')
    expect(byTestId('usage-card-prompt').textContent).toContain('50.00%')
    expect(byTestId('usage-card-total').dataset.value).toBe('1500')
    expect(byTestId('usage-key-7').textContent).toContain('sk-a****wxyz')
    expect(byTestId('usage-key-7').querySelector('[data-testid="usage-peak-rpm"]')!.textContent).toBe('4')
    expect(byTestId('usage-key-8').textContent).toContain('deleted key #8')
    expect(byTestId('usage-model-gpt-4o').textContent).toContain('gpt-4o')
    expect(byTestId('usage-model-').textContent).toContain('(none)')
    const asked = calls.map((c) => new URL(c.url, 'http://x').searchParams.get('group_by')).filter(Boolean)
    expect(asked.sort()).toEqual(['hour', 'key', 'model'])
    w.unmount()
  })
})
