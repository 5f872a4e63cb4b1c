import { afterEach, describe, expect, it } from 'vitest'
import { nextTick } from 'vue'
import type { ConfigOption, GroupResponse } from '@/api/types'
import GroupFormModal from '@/components/GroupFormModal.vue'
import {
  emptyGroupForm,
  formToPayload,
  groupToForm,
  validateGroupForm,
  weightShares,
} from '@/utils/groupForm'
import { byTestId, click, flush, json, mockApi, mountWithProviders, ok, queryTestId, typeInto } from './helpers'

const group: GroupResponse = {
  id: 4,
  name: 'openai-main',
  endpoint: 'http://localhost:3001/proxy/openai-main',
  display_name: 'OpenAI',
  description: 'main pool',
  group_type: 'standard',
  upstreams: [
    { url: 'https://api.openai.com', weight: 3 },
    { url: 'https://backup.example', weight: 0 },
  ],
  channel_type: 'openai',
  sort: 2,
  test_model: 'gpt-4.1-nano',
  validation_endpoint: '/v1/chat/completions',
  param_overrides: { temperature: 0.2 },
  model_redirect_rules: { 'gpt-4': 'gpt-4o' },
  model_redirect_strict: true,
  config: { request_timeout: 30, enable_request_body_logging: true, proxy_url: 'http://p:8' },
  header_rules: [
    { key: 'X-Client', value: '${CLIENT_IP}', action: 'set' },
    { key: 'X-Drop', value: '', action: 'remove' },
  ],
  proxy_keys: 'sk-a,sk-b',
  last_validated_at: null,
  created_at: '2026-01-01T00:00:00Z',
  updated_at: '2026-01-01T00:00:00Z',
}

describe('group form model', () => {
  it('round-trips a group through the form unchanged', () => {
    const payload = formToPayload(groupToForm(group))
    expect(payload).toEqual({
      name: 'openai-main',
      display_name: 'OpenAI',
      description: 'main pool',
      group_type: 'standard',
      channel_type: 'openai',
      sort: 2,
      proxy_keys: 'sk-a,sk-b',
      test_model: 'gpt-4.1-nano',
      validation_endpoint: '/v1/chat/completions',
      upstreams: group.upstreams,
      param_overrides: { temperature: 0.2 },
      model_redirect_rules: { 'gpt-4': 'gpt-4o' },
      model_redirect_strict: true,
      header_rules: [
        { key: 'X-Client', value: '${CLIENT_IP}', action: 'set' },
        { key: 'X-Drop', value: '', action: 'remove' },
      ],
      config: { request_timeout: 30, enable_request_body_logging: true, proxy_url: 'http://p:8' },
    })
  })

  it('starts a new standard group with the channel defaults', () => {
    const m = emptyGroupForm('standard', 'anthropic')
    expect(m.test_model).toBe('claude-3-haiku-20240307')
    expect(m.upstreams).toEqual([{ url: 'https://api.anthropic.com', weight: 1 }])
    expect(validateGroupForm({ ...m, name: 'claude' })).toEqual({})
  })

  it("checks gpt-load's rules", () => {
    const m = emptyGroupForm()
    m.name = 'Bad Name'
    m.test_model = ' '
    m.validation_endpoint = 'http://x/v1'
    m.upstreams = [
      { url: 'ftp://x', weight: 0 },
      { url: 'https://ok', weight: -1 },
    ]
    m.param_overrides = '[1, 2]'
    m.model_redirect_rules = '{"a": ""}'
    m.header_rules = [
      { key: 'X-A', value: '1', action: 'set' },
      { key: 'x-a', value: '2', action: 'set' },
      { key: ' ', value: '', action: 'set' },
    ]
    m.config = [
      { key: 'max_retries', value: 1 },
      { key: 'max_retries', value: 2 },
    ]
    expect(validateGroupForm(m)).toEqual({
      name: 'group.nameInvalid',
      test_model: 'form.required',
      validation_endpoint: 'group.endpointInvalid',
      'upstreams.0.url': 'group.upstreamUrlInvalid',
      'upstreams.1.weight': 'group.weightInvalid',
      upstreams: 'group.upstreamWeightPositive',
      param_overrides: 'form.jsonObject',
      model_redirect_rules: 'group.redirectRulesInvalid',
      'header_rules.1.key': 'group.headerDuplicate',
      'config.1.key': 'group.configDuplicate',
    })
    m.upstreams = []
    expect(validateGroupForm(m).upstreams).toBe('group.upstreamRequired')
    m.name = ''
    expect(validateGroupForm(m).name).toBe('form.required')
  })

  it('serialises an aggregate with its own fields only', () => {
    const m = emptyGroupForm('aggregate', 'gemini')
    m.name = 'agg'
    m.proxy_keys = ' sk-1 ,\n sk-2 ,'
    expect(validateGroupForm(m)).toEqual({})
    expect(formToPayload(m)).toEqual({
      name: 'agg',
      display_name: '',
      description: '',
      group_type: 'aggregate',
      channel_type: 'gemini',
      sort: 1,
      proxy_keys: 'sk-1,sk-2',
    })
  })

  it('drops blank header names, values of removed headers and unset overrides', () => {
    const m = emptyGroupForm()
    m.name = 'g'
    m.header_rules = [
      { key: '  ', value: 'x', action: 'set' },
      { key: 'X-Gone', value: 'left over', action: 'remove' },
    ]
    m.config = [
      { key: 'proxy_url', value: '' },
      { key: 'max_retries', value: 0 },
    ]
    const p = formToPayload(m)
    expect(p.header_rules).toEqual([{ key: 'X-Gone', value: '', action: 'remove' }])
    expect(p.config).toEqual({ max_retries: 0 })
    expect(p.param_overrides).toEqual({})
  })

  it('computes sub-group shares', () => {
    expect(weightShares([1, 3, 0])).toEqual([25, 75, 0])
    expect(weightShares([0, 0])).toEqual([0, 0])
    expect(weightShares([1, 1, 1])).toEqual([33.3, 33.3, 33.3])
  })
})

describe('GroupFormModal', () => {
  afterEach(() => {
    document.body.innerHTML = ''
  })

  const configOptions: ConfigOption[] = [
    { key: 'request_timeout', name: 'Request Timeout', description: 'Seconds', default_value: 600, type: 'int', min_value: 1 },
    { key: 'enable_request_body_logging', name: 'Body logging', description: 'Logs bodies', default_value: false, type: 'bool' },
    { key: 'proxy_url', name: 'Proxy URL', description: 'A proxy', default_value: '', type: 'string' },
  ]

  it('creates a standard group from the filled form', async () => {
    const { calls } = mockApi(() => ok({ ...group, id: 9, name: 'new-group' }, 'Success'))
    const wrapper = mountWithProviders(GroupFormModal, {
      show: true,
      groupType: 'standard',
      group: null,
      channelTypes: ['openai', 'gemini', 'anthropic'],
      configOptions,
    })
    await flush()
    await typeInto('group-form-name', 'new-group')
    await typeInto('group-form-display-name', 'New')
    await typeInto('group-form-upstream-url-0', 'http://127.0.0.1:8080')
    await click('group-form-upstream-add')
    await typeInto('group-form-upstream-url-1', 'http://127.0.0.1:8081')
    await click('proxy-keys-generate')
    await click('group-form-save')
    await flush()
    expect(calls).toHaveLength(1)
    const body = calls[0]!.body as Record<string, unknown>
    expect(calls[0]!.method).toBe('POST')
    expect(calls[0]!.url).toBe('/api/groups')
    expect(body.name).toBe('new-group')
    expect(body.display_name).toBe('New')
    expect(body.group_type).toBe('standard')
    expect(body.channel_type).toBe('openai')
    expect(body.test_model).toBe('gpt-4.1-nano')
    expect(body.upstreams).toEqual([
      { url: 'http://127.0.0.1:8080', weight: 1 },
      { url: 'http://127.0.0.1:8081', weight: 1 },
    ])
    expect(body.proxy_keys).toMatch(/^sk-[A-Za-z0-9_-]{48}$/)
    const host = wrapper.findComponent(GroupFormModal)
    expect(host.emitted('saved')?.[0]?.[0]).toMatchObject({ id: 9 })
    expect(host.emitted('update:show')?.[0]).toEqual([false])
    wrapper.unmount()
  })

  it('does not send an invalid form and shows why', async () => {
    const { calls } = mockApi(() => ok({}))
    const wrapper = mountWithProviders(GroupFormModal, {
      show: true,
      groupType: 'standard',
      group: null,
      channelTypes: ['openai'],
      configOptions,
    })
    await flush()
    await typeInto('group-form-name', 'Not Valid!')
    await click('group-form-save')
    expect(calls).toHaveLength(0)
    expect(document.body.textContent).toContain('Only lower-case letters')
    wrapper.unmount()
  })

  it("shows the server's validation error on its field", async () => {
    mockApi(() => json(409, { code: 'DUPLICATE_RESOURCE', message: 'name: a group named openai-main exists' }))
    const wrapper = mountWithProviders(GroupFormModal, {
      show: true,
      groupType: 'standard',
      group: null,
      channelTypes: ['openai'],
      configOptions,
    })
    await flush()
    await typeInto('group-form-name', 'openai-main')
    await click('group-form-save')
    await flush()
    const alert = byTestId('group-form-error')
    expect(alert.dataset.code).toBe('DUPLICATE_RESOURCE')
    expect(alert.textContent).toContain('a group named openai-main exists')
    expect(queryTestId('group-form')).not.toBeNull() // stays open
    wrapper.unmount()
  })

  it("shows the server's field errors next to the config overrides they name", async () => {
    const { calls } = mockApi(() =>
      json(400, {
        code: 'VALIDATION_FAILED',
        message: 'request_timeout: must be at most 86400; proxy_url: must be an http, https or socks5 URL',
        errors: [
          { field: 'request_timeout', message: 'must be at most 86400' },
          { field: 'proxy_url', message: 'must be an http, https or socks5 URL' },
        ],
      }),
    )
    const wrapper = mountWithProviders(GroupFormModal, {
      show: true,
      groupType: 'standard',
      group,
      channelTypes: ['openai'],
      configOptions,
    })
    await flush()
    document.querySelector<HTMLElement>('[data-testid="group-form-advanced"] .n-collapse-item__header-main')!.click()
    await flush()
    // One editor per override, its input by the option's type.
    expect(byTestId<HTMLInputElement>('group-form-config-value-0').value).toBe('30')
    expect(byTestId('group-form-config-value-1').getAttribute('role')).toBe('switch')
    expect(byTestId<HTMLInputElement>('group-form-config-value-2').value).toBe('http://p:8')
    expect(byTestId('group-form-config-item-1').textContent).toContain('Logs bodies')

    await typeInto('group-form-config-value-2', 'nonsense')
    await click('group-form-save')
    await flush()
    expect((calls[0]!.body as { config: Record<string, unknown> }).config.proxy_url).toBe('nonsense')
    const error = (i: number) =>
      byTestId(`group-form-config-item-${i}`).querySelector('.n-form-item-feedback--error')?.textContent?.trim()
    expect(error(0)).toBe('must be at most 86400')
    expect(error(1)).toBeUndefined()
    expect(error(2)).toBe('must be an http, https or socks5 URL')
    expect(byTestId('group-form-error').dataset.code).toBe('VALIDATION_FAILED')
    wrapper.unmount()
  })

  it("shows the server's error on a group field under its input", async () => {
    mockApi(() =>
      json(400, {
        code: 'VALIDATION_FAILED',
        message: 'test_model: is required for standard groups',
        errors: [{ field: 'test_model', message: 'is required for standard groups' }],
      }),
    )
    const wrapper = mountWithProviders(GroupFormModal, {
      show: true,
      groupType: 'standard',
      group: null,
      channelTypes: ['openai'],
      configOptions,
    })
    await flush()
    await typeInto('group-form-name', 'fresh')
    await click('group-form-save')
    await flush()
    const item = byTestId('group-form-test-model').closest('.n-form-item')!
    expect(item.querySelector('.n-form-item-feedback--error')?.textContent?.trim()).toBe(
      'is required for standard groups',
    )
    wrapper.unmount()
  })

  it('edits a group with a PUT of every field', async () => {
    const { calls } = mockApi(() => ok(group))
    const wrapper = mountWithProviders(GroupFormModal, {
      show: true,
      groupType: 'standard',
      group,
      channelTypes: ['openai'],
      configOptions,
    })
    await flush()
    expect(byTestId<HTMLInputElement>('group-form-name').value).toBe('openai-main')
    expect(byTestId<HTMLInputElement>('group-form-upstream-url-1').value).toBe('https://backup.example')
    await typeInto('group-form-display-name', 'Renamed')
    await click('group-form-upstream-remove-1')
    await click('group-form-save')
    await flush()
    expect(calls[0]!.method).toBe('PUT')
    expect(calls[0]!.url).toBe('/api/groups/4')
    const body = calls[0]!.body as Record<string, unknown>
    expect(body.display_name).toBe('Renamed')
    expect(body.upstreams).toEqual([{ url: 'https://api.openai.com', weight: 3 }])
    expect(body.header_rules).toHaveLength(2)
    expect(body.config).toEqual(group.config)
    await nextTick()
    wrapper.unmount()
  })

  it('shows only the aggregate fields for an aggregate', async () => {
    const { calls } = mockApi(() => ok({ ...group, group_type: 'aggregate' }))
    const wrapper = mountWithProviders(GroupFormModal, {
      show: true,
      groupType: 'aggregate',
      group: null,
      channelTypes: ['openai'],
      configOptions,
    })
    await flush()
    expect(queryTestId('group-form-test-model')).toBeNull()
    expect(queryTestId('group-form-upstream-url-0')).toBeNull()
    expect(queryTestId('group-form-proxy-keys')).not.toBeNull()
    await typeInto('group-form-name', 'agg')
    await click('group-form-save')
    await flush()
    expect(calls[0]!.body).toMatchObject({ name: 'agg', group_type: 'aggregate' })
    expect(calls[0]!.body).not.toHaveProperty('upstreams')
    wrapper.unmount()
  })
})
