import { afterEach, describe, expect, it, vi } from 'vitest'
import type { GroupResponse, SubGroup } from '@/api/types'
import GroupList from '@/components/GroupList.vue'
import SettingInput from '@/components/SettingInput.vue'
import SubGroupTable from '@/components/SubGroupTable.vue'
import DashboardView from '@/views/DashboardView.vue'
import { byTestId, click, flush, mockApi, mountWithProviders, ok, queryTestId, typeInto } from './helpers'

const g = (id: number, name: string, extra: Partial<GroupResponse> = {}) =>
  ({
    id,
    name,
    display_name: name.toUpperCase(),
    group_type: 'standard',
    channel_type: 'openai',
    ...extra,
  }) as GroupResponse

afterEach(() => {
  document.body.innerHTML = ''
  localStorage.clear()
})

describe('GroupList', () => {
  const groups = [g(1, 'alpha'), g(2, 'beta'), g(3, 'gamma', { group_type: 'aggregate' })]

  it('searches by name and display name', async () => {
    const w = mountWithProviders(GroupList, { groups, selectedId: 1 })
    await flush()
    expect(document.querySelectorAll('[data-testid^="group-item-"]')).toHaveLength(3)
    await typeInto('group-search', 'BET')
    expect([...document.querySelectorAll<HTMLElement>('[data-testid^="group-item-"]')].map((e) => e.dataset.testid)).toEqual(['group-item-beta'])
    expect(byTestId('group-item-beta').getAttribute('draggable')).toBe('false') // no reordering while searching
    await typeInto('group-search', 'zzz')
    expect(queryTestId('group-list-empty')).not.toBeNull()
    w.unmount()
  })

  it('selects, creates and reorders by drag and drop', async () => {
    const onSelect = vi.fn()
    const onCreate = vi.fn()
    const onReorder = vi.fn()
    const w = mountWithProviders(GroupList, { groups, selectedId: 1, onSelect, onCreate, onReorder })
    await flush()
    await click('group-item-beta')
    expect(onSelect).toHaveBeenCalledWith(2)
    await click('create-group-button')
    await click('create-aggregate-button')
    expect(onCreate.mock.calls).toEqual([['standard'], ['aggregate']])

    const drag = (id: string, type: string) => {
      const ev = new Event(type, { bubbles: true, cancelable: true })
      Object.defineProperty(ev, 'dataTransfer', { value: { setData: () => {}, effectAllowed: '' } })
      byTestId(id).dispatchEvent(ev)
    }
    expect(byTestId('group-item-gamma').getAttribute('draggable')).toBe('true')
    drag('group-item-gamma', 'dragstart')
    drag('group-item-alpha', 'dragover')
    drag('group-item-alpha', 'drop')
    await flush()
    expect(onReorder).toHaveBeenCalledOnce()
    expect((onReorder.mock.calls[0]![0] as GroupResponse[]).map((x) => x.name)).toEqual(['gamma', 'alpha', 'beta'])
    w.unmount()
  })
})

describe('SubGroupTable', () => {
  const sub = (id: number, name: string, weight: number, active: number): SubGroup => ({
    group: g(id, name),
    weight,
    total_keys: active + 1,
    active_keys: active,
    invalid_keys: 1,
  })
  const aggregate = g(10, 'agg', { group_type: 'aggregate' })

  it('shows each member with its share of the total weight, heaviest first', async () => {
    const w = mountWithProviders(SubGroupTable, {
      group: aggregate,
      subGroups: [sub(1, 'a', 1, 2), sub(2, 'b', 3, 0), sub(3, 'c', 0, 5)],
      allGroups: [],
    })
    await flush()
    const rows = [...document.querySelectorAll<HTMLElement>('[data-testid^="sub-group-row-"]')]
    expect(rows.map((r) => [r.dataset.testid, r.dataset.state])).toEqual([
      ['sub-group-row-b', 'unavailable'],
      ['sub-group-row-a', 'active'],
      ['sub-group-row-c', 'disabled'],
    ])
    expect(rows[0]!.querySelector('[data-testid="sub-group-share"]')!.textContent).toContain('75%')
    expect(rows[1]!.querySelector('[data-testid="sub-group-share"]')!.textContent).toContain('25%')
    byTestId('sub-group-filter-active').querySelector('input')!.click()
    await flush()
    expect(document.querySelectorAll('[data-testid^="sub-group-row-"]')).toHaveLength(1)
    w.unmount()
  })

  it('previews and saves a new weight', async () => {
    const { calls } = mockApi(() => ok(undefined, 'Weight updated'))
    const onChanged = vi.fn()
    const w = mountWithProviders(SubGroupTable, {
      group: aggregate,
      subGroups: [sub(1, 'a', 1, 2), sub(2, 'b', 3, 1)],
      allGroups: [],
      onChanged,
    })
    await flush()
    await click('sub-group-weight-edit-a')
    await typeInto('sub-group-weight-input', '9')
    expect(byTestId('sub-group-share-preview').textContent).toContain('75%')
    await click('sub-group-weight-save')
    await flush()
    expect(calls[0]!.method).toBe('PUT')
    expect(calls[0]!.url).toBe('/api/groups/10/sub-groups/1/weight')
    expect(calls[0]!.body).toEqual({ weight: 9 })
    expect(onChanged).toHaveBeenCalled()
    w.unmount()
  })

  it('asks for a group before adding', async () => {
    const { calls } = mockApi(() => ok(undefined))
    const w = mountWithProviders(SubGroupTable, {
      group: aggregate,
      subGroups: [sub(1, 'a', 1, 2)],
      allGroups: [
        g(1, 'a'),
        g(4, 'other-channel', { channel_type: 'gemini' }),
        g(5, 'candidate'),
        aggregate,
      ],
    })
    await flush()
    await click('add-sub-groups-button')
    await click('add-sub-groups-confirm')
    expect(byTestId('add-sub-groups-error').textContent).toContain('Choose at least one group')
    expect(calls).toHaveLength(0)
    w.unmount()
  })
})

describe('DashboardView', () => {
  it('shows the cards, warnings and the encryption alert', async () => {
    const card = (value: number, trend: number, growth: boolean, sub?: number) => ({
      value,
      trend,
      trend_is_growth: growth,
      sub_value: sub,
      sub_value_tip: sub === undefined ? undefined : 'Invalid keys',
    })
    const { calls } = mockApi((c) => {
      if (c.url.startsWith('/api/dashboard/stats')) {
        return ok({
          key_count: card(12, 0, true, 3),
          rpm: card(3.2, 50, true),
          request_count: card(320, -10, false),
          error_rate: card(1.5, -0.5, true),
          security_warnings: [
            { type: 'auth_key', message: 'AUTH_KEY is short', severity: 'high', suggestion: 'Use 32+ characters' },
          ],
        })
      }
      if (c.url.startsWith('/api/dashboard/encryption-status')) {
        return ok({ has_mismatch: true, scenario_type: 'key_mismatch', message: 'wrong key', suggestion: 'fix it' })
      }
      if (c.url.startsWith('/api/groups/list')) return ok([{ id: 1, name: 'a', display_name: 'A' }])
      if (c.url.startsWith('/api/usage')) {
        // The last 24 hours first, then the 24 before.
        const earlier = new Date(c.url.match(/end_time=([^&]+)/)![1]!.replace(/%3A/g, ':')).getTime() < Date.now() - 3_600_000
        const total = earlier ? 1000 : 1500
        return ok({ totals: { total_tokens: total, cached_tokens: earlier ? 0 : 200 }, items: [] })
      }
      if (c.url.startsWith('/api/cluster/status')) {
        const node = (node_id: string, role: string) => ({
          node_id,
          role,
          version: '0.1.0',
          address: `${node_id}:3001`,
          last_seen: '2026-01-01T00:00:00Z',
        })
        return ok({
          mode: 'cluster',
          node_id: 'b',
          role: 'follower',
          redis: 'disconnected',
          nodes: [node('a', 'leader'), node('b', 'follower')],
        })
      }
      return ok({ labels: [], datasets: [] })
    })
    const w = mountWithProviders(DashboardView)
    await flush(10)
    expect(byTestId('stat-card-key_count').textContent).toContain('12')
    expect(byTestId('stat-card-key_count').textContent).toContain('3')
    expect(byTestId('stat-card-rpm').querySelector('[data-testid="stat-trend"]')!.textContent).toContain('↑ 50%')
    const rate = byTestId('stat-card-error_rate')
    expect(rate.textContent).toContain('1.5%')
    expect(rate.querySelector('[data-testid="stat-trend"]')!.className).toContain('ok')
    expect(byTestId('stat-card-request_count').querySelector('[data-testid="stat-trend"]')!.className).toContain('bad')
    expect(byTestId('security-warning-0').dataset.severity).toBe('high')
    expect(byTestId('encryption-alert').dataset.scenario).toBe('key_mismatch')
    expect(byTestId('encryption-command').textContent).toContain('--from')
    expect(calls.map((c) => c.url)).toContain('/api/dashboard/chart')
    const tokens = byTestId('stat-card-tokens')
    expect(tokens.textContent).toContain('1,500')
    expect(tokens.textContent).toContain('200')
    expect(tokens.querySelector('[data-testid="stat-trend"]')!.textContent).toContain('↑ 50%')
    expect(byTestId('cluster-card').dataset.mode).toBe('cluster')
    expect(byTestId('cluster-summary').textContent).toContain('Cluster of 2')
    expect(byTestId('cluster-redis').dataset.redis).toBe('disconnected')
    expect(byTestId('cluster-node-a').dataset.role).toBe('leader')
    expect(byTestId('cluster-node-b').textContent).toContain('this node')
    expect(byTestId('cluster-node-b').textContent).toContain('b:3001')
    w.unmount()
  })
})

describe('TaskProgress', () => {
  it('shows a running task and reports its result when it ends', async () => {
    vi.useFakeTimers()
    const { setNotifier } = await import('@/ui/notify')
    const { useTaskStore } = await import('@/stores/task')
    const TaskProgress = (await import('@/components/TaskProgress.vue')).default
    const success = vi.fn()
    setNotifier({ success, error: vi.fn(), info: vi.fn(), warning: vi.fn() })
    const base = { task_type: 'KEY_IMPORT', group_name: 'g1', total: 4, started_at: '2026-01-01T00:00:00Z' }
    const answers = [
      ok({ ...base, is_running: true, processed: 1 }),
      ok({ ...base, is_running: false, processed: 4, result: { added_count: 4, ignored_count: 0 } }),
    ]
    mockApi(() => answers.shift() ?? ok({ is_running: false }))
    const w = mountWithProviders(TaskProgress)
    await vi.advanceTimersByTimeAsync(10)
    const bar = byTestId('task-progress')
    expect(bar.dataset.taskType).toBe('KEY_IMPORT')
    expect(bar.textContent).toContain('Importing keys into g1')
    expect(bar.textContent).toContain('1 / 4')
    await vi.advanceTimersByTimeAsync(1000)
    expect(queryTestId('task-progress')).toBeNull()
    expect(success).toHaveBeenCalledWith('Importing keys into g1: done — added: 4, ignored: 0')
    useTaskStore().stop()
    setNotifier(null)
    w.unmount()
    vi.useRealTimers()
  })
})

describe('SettingInput', () => {
  const mountInput = (props: Record<string, unknown>) =>
    mountWithProviders(SettingInput, { testid: 'edit', ...props })

  it("renders the input for the setting's type, with its minimum", async () => {
    const int = { key: 'request_timeout', type: 'int', name: 'Request Timeout', description: 'Seconds', min_value: 1, required: true }
    const w = mountInput({ setting: int, value: 600, hint: 'a hint' })
    await flush()
    const input = byTestId<HTMLInputElement>('edit')
    expect(input.value).toBe('600')
    expect(document.body.textContent).toContain('Request Timeout')
    expect(document.body.textContent).toContain('a hint')
    expect(document.querySelector('.n-form-item-label__asterisk')).not.toBeNull() // required
    const inner = w.findComponent({ name: 'InputNumber' })
    expect(inner.props('min')).toBe(1)
    await typeInto('edit', '42')
    expect(w.findComponent(SettingInput).emitted('update:value')?.at(-1)).toEqual([42])
    w.unmount()
  })

  it('renders a switch, the proxy keys editor and a text input', async () => {
    let w = mountInput({ setting: { key: 'enable_request_body_logging', type: 'bool' }, value: true })
    await flush()
    expect(byTestId('edit').getAttribute('role')).toBe('switch')
    expect(byTestId('edit').getAttribute('aria-checked')).toBe('true')
    await click('edit')
    expect(w.findComponent(SettingInput).emitted('update:value')?.at(-1)).toEqual([false])
    w.unmount()

    w = mountInput({ setting: { key: 'proxy_keys', type: 'string' }, value: 'sk-a' })
    await flush()
    expect(byTestId('edit').tagName).toBe('TEXTAREA')
    expect(queryTestId('proxy-keys-generate')).not.toBeNull()
    w.unmount()

    w = mountInput({ setting: { key: 'proxy_url', type: 'string' }, value: null, placeholder: 'http://proxy' })
    await flush()
    expect(byTestId<HTMLInputElement>('edit').value).toBe('')
    expect(byTestId<HTMLInputElement>('edit').placeholder).toBe('http://proxy')
    w.unmount()

    // An empty string is an empty text, not a boolean attribute's `true`.
    w = mountInput({ setting: { key: 'proxy_url', type: 'string' }, value: '' })
    await flush()
    expect(byTestId<HTMLInputElement>('edit').value).toBe('')
    w.unmount()
  })

  it('shows an error instead of the hint, and no label when asked', async () => {
    const w = mountInput({
      setting: { key: 'max_retries', type: 'int', name: 'Max Retries', min_value: 0 },
      value: Number.NaN,
      label: false,
      hint: 'a hint',
      error: 'must be at least 0',
    })
    await flush()
    expect(byTestId<HTMLInputElement>('edit').value).toBe('')
    expect(document.querySelector('.n-form-item-feedback--error')?.textContent?.trim()).toBe('must be at least 0')
    expect(document.body.textContent).not.toContain('a hint')
    expect(document.body.textContent).not.toContain('Max Retries')
    w.unmount()
  })
})
