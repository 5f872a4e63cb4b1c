import type { Chart, UsageItem, UsageQuery } from '@/api/types'

/** The ranges the usage page offers, and the bucket its chart uses for each. */
export const USAGE_RANGES = [
  { value: '24h', hours: 24, bucket: 'hour' },
  { value: '7d', hours: 24 * 7, bucket: 'day' },
  { value: '30d', hours: 24 * 30, bucket: 'day' },
] as const
export type UsageRange = (typeof USAGE_RANGES)[number]['value']
export type UsageBucket = 'hour' | 'day'

const HOUR_MS = 3_600_000
const DAY_MS = 24 * HOUR_MS

/** The start of `at`'s hour or UTC day. */
export function bucketStart(at: number, bucket: UsageBucket): number {
  const size = bucket === 'hour' ? HOUR_MS : DAY_MS
  return Math.floor(at / size) * size
}

/** The query for `range` ending at `now`, optionally of one group, grouped by `groupBy`. */
export function usageQuery(range: UsageRange, now: number, groupId: number | null, groupBy: string): UsageQuery {
  const { hours } = USAGE_RANGES.find((r) => r.value === range) ?? USAGE_RANGES[0]
  return {
    start_time: new Date(now - hours * HOUR_MS).toISOString(),
    end_time: new Date(now).toISOString(),
    group_id: groupId ?? undefined,
    group_by: groupBy,
  }
}

/** The token series the chart draws, with their colours. */
export const TOKEN_SERIES = [
  { field: 'prompt_tokens', color: 'rgba(24, 160, 88, 1)' },
  { field: 'completion_tokens', color: 'rgba(32, 128, 240, 1)' },
  { field: 'cached_tokens', color: 'rgba(240, 160, 32, 1)' },
] as const

/**
 * A chart of the tokens in `items` (a report grouped by time), one point per bucket from `start`'s
 * to `end`'s: the items within a bucket added up, buckets without usage at 0. `names` labels the
 * series in order.
 */
export function usageChart(
  items: UsageItem[],
  bucket: UsageBucket,
  start: number,
  end: number,
  names: string[],
): Chart {
  const step = bucket === 'hour' ? HOUR_MS : DAY_MS
  const labels: string[] = []
  for (let t = bucketStart(start, bucket); t <= end; t += step) labels.push(new Date(t).toISOString())
  const index = new Map(labels.map((l, i) => [Date.parse(l), i]))
  const datasets = TOKEN_SERIES.map((s, i) => {
    const data = labels.map(() => 0)
    for (const item of items) {
      const at = item.time ? index.get(bucketStart(Date.parse(item.time), bucket)) : undefined
      if (at !== undefined) data[at] = (data[at] ?? 0) + item[s.field]
    }
    return { label: names[i] ?? s.field, color: s.color, data }
  })
  return { labels, datasets }
}
