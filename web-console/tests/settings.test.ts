import { afterEach, describe, expect, it } from 'vitest'
import type { SettingsCategory } from '@/api/types'
import { changedValues, fieldKind, settingsToModel, validateSettings } from '@/utils/settingsForm'
import SettingsView from '@/views/SettingsView.vue'
import { byTestId, click, flush, json, mockApi, mountWithProviders, ok, queryTestId, typeInto } from './helpers'

const categories: SettingsCategory[] = [
  {
    category_name: 'Basic',
    settings: [
      { key: 'app_url', name: 'Project URL', value: 'http://localhost:3001', type: 'string', default_value: 'http://localhost:3001', description: 'Base URL', category: 'basic', required: true },
      { key: 'proxy_keys', name: 'Global Proxy Keys', value: 'sk-global', type: 'string', default_value: '', description: 'Keys', category: 'basic', required: true },
      { key: 'request_log_retention_days', name: 'Log Retention', value: 7, type: 'int', default_value: '7', description: '', category: 'basic', min_value: 0, required: false },
      { key: 'enable_request_body_logging', name: 'Body logging', value: false, type: 'bool', default_value: 'false', description: '', category: 'basic', required: false },
    ],
  },
  {
    category_name: 'Request Settings',
    settings: [
      { key: 'request_timeout', name: 'Request Timeout', value: 600, type: 'int', default_value: '600', description: '', category: 'request', min_value: 1, required: false },
      { key: 'proxy_url', name: 'Proxy URL', value: '', type: 'string', default_value: '', description: '', category: 'request', required: false },
    ],
  },
]

describe('settings form model', () => {
  it('picks the input for each type', () => {
    const kinds = categories.flatMap((c) => c.settings.map((s) => [s.key, fieldKind(s)]))
    expect(Object.fromEntries(kinds)).toEqual({
      app_url: 'text',
      proxy_keys: 'proxy_keys',
      request_log_retention_days: 'number',
      enable_request_body_logging: 'switch',
      request_timeout: 'number',
      proxy_url: 'text',
    })
  })

  it('sends only what changed', () => {
    const m = settingsToModel(categories)
    expect(changedValues(categories, m)).toEqual({})
    m.request_timeout = 30
    m.enable_request_body_logging = true
    m.proxy_url = ' http://proxy:8080 '
    expect(changedValues(categories, m)).toEqual({
      request_timeout: 30,
      enable_request_body_logging: true,
      proxy_url: 'http://proxy:8080',
    })
  })

  it('checks minimums, whole numbers and required strings', () => {
    const m = settingsToModel(categories)
    m.request_timeout = 0
    m.request_log_retention_days = 1.5
    m.app_url = '  '
    expect(validateSettings(categories, m)).toEqual({
      request_timeout: { key: 'form.min', params: { min: 1 } },
      request_log_retention_days: { key: 'form.integer' },
      app_url: { key: 'form.required' },
    })
  })
})

describe('SettingsView', () => {
  afterEach(() => {
    document.body.innerHTML = ''
  })

  it('generates one input per setting from the metadata', async () => {
    mockApi(() => ok(categories))
    const w = mountWithProviders(SettingsView)
    await flush(10)
    expect(byTestId<HTMLInputElement>('setting-app_url').value).toBe('http://localhost:3001')
    expect(byTestId<HTMLInputElement>('setting-request_timeout').value).toBe('600')
    expect(byTestId<HTMLTextAreaElement>('setting-proxy_keys').value).toBe('sk-global')
    expect(byTestId('setting-enable_request_body_logging').getAttribute('role')).toBe('switch')
    expect(byTestId('settings-category-basic').textContent).toContain('Basic')
    expect(byTestId('settings-category-request').textContent).toContain('Request Settings')
    w.unmount()
  })

  it('saves the changed values with PUT /api/settings', async () => {
    const { calls } = mockApi((c) => (c.method === 'PUT' ? ok(undefined, 'Settings updated') : ok(categories)))
    const w = mountWithProviders(SettingsView)
    await flush(10)
    await typeInto('setting-proxy_url', 'http://proxy:3128')
    await click('setting-enable_request_body_logging')
    await click('proxy-keys-generate')
    await click('settings-save')
    await flush(5)
    const put = calls.find((c) => c.method === 'PUT')!
    expect(put.url).toBe('/api/settings')
    const body = put.body as Record<string, unknown>
    expect(body.proxy_url).toBe('http://proxy:3128')
    expect(body.enable_request_body_logging).toBe(true)
    expect(body.proxy_keys).toMatch(/^sk-global,sk-[A-Za-z0-9_-]{48}$/)
    expect(Object.keys(body).sort()).toEqual(['enable_request_body_logging', 'proxy_keys', 'proxy_url'])
    expect(calls.filter((c) => c.method === 'GET')).toHaveLength(2) // reloaded after saving
    w.unmount()
  })

  it("shows each of the server's field errors next to its own input", async () => {
    mockApi((c) =>
      c.method === 'PUT'
        ? json(400, {
            code: 'VALIDATION_FAILED',
            message: 'proxy_url: must be an http, https or socks5 URL; request_timeout: must be at most 86400',
            errors: [
              { field: 'proxy_url', message: 'must be an http, https or socks5 URL' },
              { field: 'request_timeout', message: 'must be at most 86400' },
            ],
          })
        : ok(categories),
    )
    const w = mountWithProviders(SettingsView)
    await flush(10)
    await typeInto('setting-proxy_url', 'nonsense')
    await typeInto('setting-request_timeout', '90000')
    await click('settings-save')
    await flush(5)
    const alert = byTestId('settings-error')
    expect(alert.dataset.code).toBe('VALIDATION_FAILED')
    expect(alert.dataset.field).toBe('proxy_url')
    const feedback = (key: string) =>
      byTestId(`setting-item-${key}`).querySelector('.n-form-item-feedback--error')?.textContent?.trim()
    expect(feedback('proxy_url')).toBe('must be an http, https or socks5 URL')
    expect(feedback('request_timeout')).toBe('must be at most 86400')
    for (const key of ['app_url', 'proxy_keys', 'request_log_retention_days', 'enable_request_body_logging']) {
      expect(feedback(key), key).toBeUndefined()
    }
    w.unmount()
  })

  it('does not send invalid values', async () => {
    const { calls } = mockApi(() => ok(categories))
    const w = mountWithProviders(SettingsView)
    await flush(10)
    await typeInto('setting-app_url', '')
    await click('settings-save')
    expect(calls.filter((c) => c.method === 'PUT')).toHaveLength(0)
    expect(byTestId('setting-item-app_url').textContent).toContain('Required')
    expect(queryTestId('settings-error')).toBeNull()
    w.unmount()
  })

  it('shows a failure to load', async () => {
    mockApi(() => json(500, { code: 'DATABASE_ERROR', message: 'database unavailable' }))
    const w = mountWithProviders(SettingsView)
    await flush(10)
    expect(byTestId('settings-load-error').textContent).toContain('database unavailable')
    w.unmount()
  })
})
