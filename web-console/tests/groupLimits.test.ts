import { afterEach, describe, expect, it, vi } from 'vitest'
import type { LimitState } from '@/api/types'
import GroupLimitsPanel from '@/components/GroupLimitsPanel.vue'
import { byTestId, click, flush, mockApi, mountWithProviders, ok, queryTestId } from './helpers'

function limits(extra: Partial<LimitState> = {}): LimitState {
  return {
    key_rpm: 0,
    key_rpd: 0,
    key_max_concurrency: 0,
    key_tpm: 0,
    group_rpm: 0,
    group_max_concurrency: 0,
    group_tpm: 0,
    limit_queue_timeout_ms: 0,
    group_last_minute: 0,
    group_in_flight: 0,
    group_tokens_last_minute: 0,
    keys_at_limit: [],
    ...extra,
  }
}

afterEach(() => {
  vi.restoreAllMocks()
  document.body.innerHTML = ''
})

describe('GroupLimitsPanel', () => {
  it('shows the limits that are set, the group now, and the keys at a limit', async () => {
    const { calls } = mockApi(() =>
      ok({
        limits: limits({
          key_rpm: 3,
          group_tpm: 40000,
          group_last_minute: 12,
          group_in_flight: 2,
          group_tokens_last_minute: 31000,
          keys_at_limit: [
            { key_id: 7, key: 'sk-a****wxyz', limit: 'key_rpm', until: '2026-12-06T10:00:30Z', last_minute: 3, today: 40 },
          ],
        }),
      }),
    )
    const w = mountWithProviders(GroupLimitsPanel, { groupId: 5 })
    await flush(8)
    expect(calls[0]!.url).toBe('/api/groups/5/key-health')
    expect(byTestId('limit-key_rpm').textContent).toContain('3')
    expect(byTestId('limit-group_tpm').textContent).toContain('40,000')
    expect(queryTestId('limit-key_rpd')).toBeNull() // not set
    const now = byTestId('group-limits-now').textContent!
    expect(now).toContain('12')
    expect(now).toContain('31,000')
    const key = byTestId('key-at-limit').textContent!
    expect(key).toContain('sk-a****wxyz')
    expect(key).toContain('key_rpm')

    await click('group-limits-refresh')
    await flush(4)
    expect(calls.length).toBe(2)
    w.unmount()
  })

  it('shows nothing for a group without limits', async () => {
    mockApi(() => ok({ limits: limits() }))
    const w = mountWithProviders(GroupLimitsPanel, { groupId: 5 })
    await flush(8)
    expect(queryTestId('group-limits')).toBeNull()
    w.unmount()
  })
})
