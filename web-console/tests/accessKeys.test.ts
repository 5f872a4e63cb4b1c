import { afterEach, describe, expect, it, vi } from 'vitest'
import type { AccessKey } from '@/api/types'
import AccessKeysView from '@/views/AccessKeysView.vue'
import { byTestId, click, flush, mockApi, mountWithProviders, ok, queryTestId, typeInto } from './helpers'

function accessKey(id: number, name: string, extra: Partial<AccessKey> = {}): AccessKey {
  return {
    id,
    name,
    key_hint: 'sk-gla-abc…wxyz',
    allowed_groups: [],
    allowed_models: [],
    rpm: 0,
    tpm: 0,
    daily_token_quota: 0,
    monthly_token_quota: 0,
    expires_at: null,
    enabled: true,
    status: 'active',
    notes: '',
    usage: { requests_last_minute: 0, tokens_last_minute: 0, tokens_today: 0, tokens_this_month: 0 },
    created_at: '2026-12-06T00:00:00',
    updated_at: '2026-12-06T00:00:00',
    ...extra,
  }
}

const list = {
  access_keys: [
    accessKey(1, 'search team', {
      allowed_groups: [4],
      allowed_models: ['gpt-4o*'],
      rpm: 60,
      daily_token_quota: 100000,
      usage: { requests_last_minute: 2, tokens_last_minute: 10, tokens_today: 1234, tokens_this_month: 5678 },
      notes: 'ask Ana before raising',
    }),
    accessKey(2, 'old batch', { enabled: false, status: 'disabled' }),
  ],
  legacy_keys: [
    { scope: 'global', group_id: null, group_name: null, key: 'sk-p****1234' },
    { scope: 'group', group_id: 4, group_name: 'openai-main', key: 'sk-g****5678' },
  ],
}
const groups = [{ id: 4, name: 'openai-main', display_name: 'OpenAI' }]

afterEach(() => {
  vi.restoreAllMocks()
  document.body.innerHTML = ''
})

describe('AccessKeysView', () => {
  it('lists the keys with their groups, models, limits, usage and status, and the legacy keys', async () => {
    mockApi((c) => (c.url === '/api/groups/list' ? ok(groups) : ok(list)))
    const w = mountWithProviders(AccessKeysView)
    await flush(8)
    const row = byTestId('access-row-1')
    expect(row.textContent).toContain('search team')
    expect(row.textContent).toContain('sk-gla-abc…wxyz')
    expect(row.textContent).toContain('OpenAI')
    expect(row.querySelector('[data-testid="access-models"]')!.textContent).toBe('gpt-4o*')
    const limits = row.querySelector('[data-testid="access-limits"]')!.textContent!
    expect(limits).toContain('RPM 60')
    expect(limits).toContain('TPM no limit')
    expect(limits).toContain((1234).toLocaleString())
    expect(limits).toContain((100000).toLocaleString())
    expect(row.textContent).toContain('ask Ana before raising')
    expect(byTestId('access-row-2').querySelector('[data-testid="access-status"]')!.textContent!.trim()).toBe('disabled')
    expect(byTestId('access-enabled-2').getAttribute('aria-checked')).toBe('false')
    const legacy = byTestId('legacy-keys').textContent!
    expect(legacy).toContain('sk-p****1234')
    expect(legacy).toContain('every group')
    expect(legacy).toContain('openai-main')
    w.unmount()
  })

  it('creates a key from the form and shows it once', async () => {
    const { calls } = mockApi((c) => {
      if (c.method === 'POST') return ok({ key: 'sk-gla-NEWKEY-0123456789abcdefghijklmnopqrstuv', access_key: accessKey(3, 'new') })
      if (c.url === '/api/groups/list') return ok(groups)
      return ok({ access_keys: [], legacy_keys: [] })
    })
    const w = mountWithProviders(AccessKeysView)
    await flush(8)
    expect(queryTestId('access-list-empty')).not.toBeNull()
    await click('access-new')
    await typeInto('access-form-name', 'new')
    await typeInto('access-form-models', 'gpt-4o*, claude-*')
    await typeInto('access-form-expires', '2027-01-31T00:00:00Z')
    await click('access-form-save')
    await flush(8)
    const post = calls.find((c) => c.method === 'POST')!
    expect(post.url).toBe('/api/access-keys')
    expect(post.body).toMatchObject({
      name: 'new',
      allowed_groups: [],
      allowed_models: ['gpt-4o*', 'claude-*'],
      rpm: 0,
      expires_at: '2027-01-31T00:00:00Z',
    })
    expect(byTestId('access-issued-key').textContent).toBe('sk-gla-NEWKEY-0123456789abcdefghijklmnopqrstuv')
    await click('access-issued-done')
    await flush(4)
    // Closed: the key is gone from the page (the modal may still be fading out).
    expect(document.body.textContent).not.toContain('sk-gla-NEWKEY')
    w.unmount()
  })

  it('switches a key off and rotates one after confirmation', async () => {
    const { calls } = mockApi((c) => {
      if (c.method === 'PUT') return ok(accessKey(1, 'search team', { enabled: false, status: 'disabled' }))
      if (c.method === 'POST') return ok({ key: 'sk-gla-ROTATED-key', access_key: accessKey(1, 'search team') })
      if (c.url === '/api/groups/list') return ok(groups)
      return ok(list)
    })
    const w = mountWithProviders(AccessKeysView)
    await flush(8)
    await click('access-enabled-1')
    await flush()
    const put = calls.find((c) => c.method === 'PUT')!
    expect(put.body).toEqual({ enabled: false })
    expect(put.url).toBe('/api/access-keys/1')

    await click('access-rotate-1')
    await flush()
    expect(calls.some((c) => c.method === 'POST')).toBe(false) // asked first
    await click('confirm-dialog-ok')
    await flush(8)
    expect(calls.find((c) => c.method === 'POST')!.url).toBe('/api/access-keys/1/rotate')
    expect(byTestId('access-issued-key').textContent).toBe('sk-gla-ROTATED-key')
    w.unmount()
  })
})
