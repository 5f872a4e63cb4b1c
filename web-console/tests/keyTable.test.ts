import { NSelect } from 'naive-ui'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { nextTick, ref } from 'vue'
import type { KeyListQuery } from '@/api/endpoints'
import type { GroupResponse, KeyResponse } from '@/api/types'
import KeyTable from '@/components/KeyTable.vue'
import { useKeyTable } from '@/composables/useKeyTable'
import { byTestId, click, flush, mockApi, mountWithProviders, ok, typeInto } from './helpers'

function key(id: number, status = 'active', lifecycle: Partial<KeyResponse> = {}): KeyResponse {
  return {
    id,
    key_value: `sk-key-${id}-abcdefghijkl`,
    key_hash: `h${id}`,
    group_id: 1,
    status,
    notes: '',
    request_count: id,
    failure_count: 0,
    last_used_at: null,
    created_at: '2026-01-01T00:00:00Z',
    updated_at: '2026-01-01T00:00:00Z',
    state: status,
    consecutive_failures: 0,
    backoff_level: 0,
    model_cooling: [],
    ...lifecycle,
  }
}
function page(items: KeyResponse[], p = 1, size = 12, total = items.length) {
  return {
    items,
    pagination: { page: p, page_size: size, total_items: total, total_pages: Math.ceil(total / size) },
  }
}

describe('useKeyTable', () => {
  it('loads the first page with the default page size', async () => {
    const fetcher = vi.fn(async (q: KeyListQuery) => page([key(1)], q.page, q.page_size, 30))
    const t = useKeyTable(ref(1), fetcher)
    await t.load()
    expect(fetcher).toHaveBeenLastCalledWith({ group_id: 1, status: 'all', state: 'all', key_value: undefined, page: 1, page_size: 12 })
    expect(t.items.value).toHaveLength(1)
    expect(t.totalItems.value).toBe(30)
    expect(t.totalPages.value).toBe(3)
  })

  it('goes back to page 1 when a filter or the page size changes', async () => {
    const fetcher = vi.fn(async (q: KeyListQuery) => page([key(1)], q.page, q.page_size, 100))
    const t = useKeyTable(ref(1), fetcher)
    await t.setPage(3)
    expect(fetcher).toHaveBeenLastCalledWith(expect.objectContaining({ page: 3 }))
    await t.setStatus('invalid')
    expect(fetcher).toHaveBeenLastCalledWith(expect.objectContaining({ page: 1, status: 'invalid' }))
    await t.setPage(2)
    t.search.value = '  sk-exact  '
    await t.applySearch()
    expect(fetcher).toHaveBeenLastCalledWith(
      expect.objectContaining({ page: 1, key_value: 'sk-exact', status: 'invalid' }),
    )
    await t.setPage(2)
    await t.setPageSize(60)
    expect(fetcher).toHaveBeenLastCalledWith(expect.objectContaining({ page: 1, page_size: 60 }))
    await t.clearSearch()
    expect(fetcher).toHaveBeenLastCalledWith(expect.objectContaining({ key_value: undefined }))
  })

  it('filters by lifecycle state alongside the status', async () => {
    const fetcher = vi.fn(async (q: KeyListQuery) => page([key(1)], q.page, q.page_size, 100))
    const t = useKeyTable(ref(1), fetcher)
    await t.setPage(4)
    await t.setState('pending')
    expect(fetcher).toHaveBeenLastCalledWith(expect.objectContaining({ page: 1, state: 'pending', status: 'all' }))
    await t.setStatus('active')
    expect(fetcher).toHaveBeenLastCalledWith(expect.objectContaining({ state: 'pending', status: 'active' }))
  })

  it('resets the filters when the group changes', async () => {
    const fetcher = vi.fn(async (q: KeyListQuery) => page([key(q.group_id)]))
    const gid = ref<number | null>(1)
    const t = useKeyTable(gid, fetcher)
    await t.setStatus('disabled')
    await t.setState('cooling')
    t.search.value = 'x'
    await t.applySearch()
    gid.value = 2
    await nextTick()
    await flush()
    expect(fetcher).toHaveBeenLastCalledWith({ group_id: 2, status: 'all', state: 'all', key_value: undefined, page: 1, page_size: 12 })
    expect(t.search.value).toBe('')
    gid.value = null
    await nextTick()
    await flush()
    expect(t.items.value).toEqual([])
  })

  it('drops the answer of a superseded request', async () => {
    let release: (v: unknown) => void = () => {}
    const slow = new Promise((r) => (release = r))
    const fetcher = vi.fn(async (q: KeyListQuery) => {
      if (q.status === 'active') {
        await slow
        return page([key(1)])
      }
      return page([key(2, 'invalid')])
    })
    const t = useKeyTable(ref(1), fetcher)
    const first = t.setStatus('active')
    await t.setStatus('invalid')
    release(undefined)
    await first
    expect(t.items.value.map((k) => k.id)).toEqual([2])
    expect(t.loading.value).toBe(false)
  })

  it('steps back when the current page empties', async () => {
    const fetcher = vi.fn(async (q: KeyListQuery) =>
      q.page === 3 ? page([], 3, 12, 24) : page([key(1)], q.page, 12, 24),
    )
    const t = useKeyTable(ref(1), fetcher)
    await t.setPage(3)
    expect(t.page.value).toBe(2)
    expect(t.items.value).toHaveLength(1)
  })

  it('keeps the table empty on errors', async () => {
    const t = useKeyTable(ref(1), async () => {
      throw new Error('boom')
    })
    await t.load()
    expect(t.items.value).toEqual([])
    expect(t.loading.value).toBe(false)
  })
})

const group = {
  id: 1,
  name: 'g1',
  display_name: 'G1',
  group_type: 'standard',
  channel_type: 'openai',
} as unknown as GroupResponse

describe('KeyTable', () => {
  afterEach(() => {
    document.body.innerHTML = ''
  })

  it('lists keys with their actions and filters by status', async () => {
    const { calls } = mockApi((c) => {
      if (c.url.startsWith('/api/keys?')) {
        return c.url.includes('status=invalid') ? ok(page([key(3, 'invalid')])) : ok(page([key(1), key(2, 'disabled')]))
      }
      return ok(undefined, 'Success')
    })
    const w = mountWithProviders(KeyTable, { group })
    await flush(8)
    expect(calls[0]!.url).toBe('/api/keys?group_id=1&page=1&page_size=12')
    expect(byTestId('key-row-1').dataset.keyStatus).toBe('active')
    expect(byTestId('key-row-2').dataset.keyStatus).toBe('disabled')
    expect(byTestId('key-toggle-1').textContent).toContain('Disable')
    expect(byTestId('key-toggle-2').textContent).toContain('Enable')
    expect(document.querySelector('[data-testid="key-restore-1"]')).toBeNull()

    byTestId('key-status-invalid').querySelector('input')!.click()
    await flush(8)
    expect(calls.at(-1)!.url).toBe('/api/keys?group_id=1&status=invalid&page=1&page_size=12')
    expect(byTestId('key-row-3')).toBeTruthy()
    expect(byTestId('key-restore-3')).toBeTruthy()
    w.unmount()
  })

  it('shows a degraded or cooling key and its last error', async () => {
    const cooling = key(1, 'active', {
      state: 'cooling',
      backoff_level: 2,
      cooling_until: '2026-01-01T00:05:00Z',
      last_error_message: 'Rate limit reached for requests',
    })
    const degraded = key(2, 'active', { state: 'degraded', consecutive_failures: 1, failure_count: 1 })
    mockApi(() => ok(page([cooling, degraded, key(3)])))
    const w = mountWithProviders(KeyTable, { group })
    await flush(8)
    const state = (id: number) => byTestId(`key-row-${id}`).querySelector('[data-testid="key-state"]')
    expect(state(1)?.textContent).toContain('Cooling')
    expect(state(2)?.textContent).toContain('Degraded')
    expect(state(3)).toBeNull()
    expect(byTestId('key-row-1').dataset.keyStatus).toBe('active')
    const error = byTestId('key-row-1').querySelector('[data-testid="key-last-error"]')
    expect(error?.textContent).toContain('Rate limit reached for requests')
    expect(byTestId('key-row-3').querySelector('[data-testid="key-last-error"]')).toBeNull()
    w.unmount()
  })

  it('tags a pending key and asks the API for one lifecycle state', async () => {
    const pending = key(4, 'active', { state: 'pending' })
    const { calls } = mockApi(() => ok(page([pending])))
    const w = mountWithProviders(KeyTable, { group })
    await flush(8)
    const tag = byTestId('key-row-4').querySelector('[data-testid="key-state"]')
    expect(tag?.textContent).toContain('Pending')
    expect(byTestId('key-row-4').dataset.keyStatus).toBe('active')

    w.findComponent(NSelect).vm.$emit('update:value', 'pending')
    await flush(8)
    expect(calls.at(-1)!.url).toBe('/api/keys?group_id=1&state=pending&page=1&page_size=12')
    w.findComponent(NSelect).vm.$emit('update:value', 'all')
    await flush(8)
    expect(calls.at(-1)!.url).toBe('/api/keys?group_id=1&page=1&page_size=12')
    w.unmount()
  })

  it('disables a key with PUT /api/keys/{id}/status and reloads', async () => {
    const { calls } = mockApi((c) => (c.url.startsWith('/api/keys?') ? ok(page([key(1)])) : ok(undefined)))
    const w = mountWithProviders(KeyTable, { group })
    await flush(8)
    await click('key-toggle-1')
    await flush(5)
    const put = calls.find((c) => c.method === 'PUT')!
    expect(put.url).toBe('/api/keys/1/status')
    expect(put.body).toEqual({ status: 'disabled' })
    expect(calls.filter((c) => c.url.startsWith('/api/keys?')).length).toBe(2)
    w.unmount()
  })

  it("shows a key's own limits and sets them with PUT /api/keys/{id}/limits", async () => {
    const { calls } = mockApi((c) =>
      c.url.startsWith('/api/keys?') ? ok(page([key(1, 'active', { limits: { rpm: 60, tpm: 0 } }), key(2)])) : ok(undefined),
    )
    const w = mountWithProviders(KeyTable, { group })
    await flush(8)
    expect(byTestId('key-limits-1').textContent).toContain('rpm 60 · tpm 0')
    expect(document.querySelector('[data-testid="key-limits-2"]')).toBeNull()

    await click('key-limits-edit-1')
    await flush(3)
    expect(byTestId<HTMLInputElement>('key-limit-rpm').value).toBe('60')
    expect(byTestId<HTMLInputElement>('key-limit-rpd').value).toBe('')
    await typeInto('key-limit-rpd', '500')
    byTestId('key-limit-rpd').dispatchEvent(new Event('blur'))
    await flush(3)
    await click('key-limits-save')
    await flush(5)
    const put = calls.find((c) => c.method === 'PUT')!
    expect(put.url).toBe('/api/keys/1/limits')
    expect(put.body).toEqual({ rpm: 60, rpd: 500, tpm: 0 })
    expect(calls.filter((c) => c.url.startsWith('/api/keys?')).length).toBe(2)
    w.unmount()
  })

  it('searches an exact key', async () => {
    const { calls } = mockApi(() => ok(page([key(1)])))
    const w = mountWithProviders(KeyTable, { group })
    await flush(8)
    await typeInto('key-search-input', 'sk-key-1-abcdefghijkl')
    await click('key-search-button')
    await flush(5)
    expect(calls.at(-1)!.url).toBe('/api/keys?group_id=1&key_value=sk-key-1-abcdefghijkl&page=1&page_size=12')
    w.unmount()
  })

  it('adds keys from text as an async import and tracks the task', async () => {
    const { calls } = mockApi((c) =>
      c.url === '/api/keys/add-async'
        ? ok({ task_type: 'KEY_IMPORT', is_running: true, group_name: 'g1', processed: 0, total: 2, started_at: '2026-01-01T00:00:00Z' })
        : ok(page([])),
    )
    const w = mountWithProviders(KeyTable, { group })
    await flush(8)
    await click('add-keys-button')
    await typeInto('add-keys-text', 'sk-1\nsk-2')
    await click('add-keys-submit')
    await flush(5)
    const post = calls.find((c) => c.url === '/api/keys/add-async')!
    expect(post.body).toEqual({ group_id: 1, keys_text: 'sk-1\nsk-2' })
    const { useTaskStore } = await import('@/stores/task')
    expect(useTaskStore().running).toBe(true)
    useTaskStore().stop()
    w.unmount()
  })

  it('shows the server error of a refused import in the dialog', async () => {
    mockApi((c) =>
      c.url === '/api/keys/add-async'
        ? new Response(JSON.stringify({ code: 'TASK_IN_PROGRESS', message: 'a task is already running' }), { status: 409 })
        : ok(page([])),
    )
    const w = mountWithProviders(KeyTable, { group })
    await flush(8)
    await click('add-keys-button')
    await typeInto('add-keys-text', 'sk-1')
    await click('add-keys-submit')
    await flush(5)
    expect(byTestId('add-keys-error').textContent).toContain('a task is already running')
    w.unmount()
  })

  it('changes the page size and page', async () => {
    const { calls } = mockApi((c) => {
      const m = /page=(\d+)&page_size=(\d+)/.exec(c.url)!
      return ok(page([key(1)], Number(m[1]), Number(m[2]), 200))
    })
    const w = mountWithProviders(KeyTable, { group })
    await flush(8)
    const items = [...document.querySelectorAll<HTMLElement>('[data-testid="key-pagination"] .n-pagination-item')]
    items.find((el) => el.textContent?.trim() === '2')!.click()
    await flush(5)
    expect(calls.at(-1)!.url).toContain('page=2&page_size=12')
    w.unmount()
  })
})
