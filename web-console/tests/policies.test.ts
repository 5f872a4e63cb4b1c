import { afterEach, describe, expect, it, vi } from 'vitest'
import type { VueWrapper } from '@vue/test-utils'
import type { GroupResponse, Policy } from '@/api/types'
import GroupPoliciesModal from '@/components/GroupPoliciesModal.vue'
import PolicyEditor from '@/components/PolicyEditor.vue'
import PolicyTestPanel from '@/components/PolicyTestPanel.vue'
import { translate } from '@/i18n'
import type { MessageKey } from '@/i18n/messages'
import type { Params } from '@/i18n'
import {
  SAMPLE_BODY,
  configToRules,
  emptyCondition,
  emptyRule,
  operatorsFor,
  parseConfigText,
  problemText,
  ruleOfMessage,
  rulesToConfig,
  sampleToJson,
  setConditionOperator,
  setConditionType,
  emptySample,
  type PolicyConfig,
} from '@/utils/policyForm'
import PoliciesView from '@/views/PoliciesView.vue'
import { byTestId, click, flush, json, mockApi, mountWithProviders, ok, queryTestId, typeInto } from './helpers'

const t = (key: MessageKey, params?: Params) => translate('en', key, params)

/** Picks a value in the Naive UI select with this test id (its menu does not render here). */
function choose(w: VueWrapper, testid: string, value: unknown) {
  const select = w.findAllComponents({ name: 'Select' }).find((c) => c.attributes('data-testid') === testid)
  if (!select) throw new Error(`no select ${testid}`)
  select.vm.$emit('update:value', value)
  return flush(2)
}
function selectOptions(w: VueWrapper, testid: string): unknown[] {
  const select = w.findAllComponents({ name: 'Select' }).find((c) => c.attributes('data-testid') === testid)
  return (select!.props('options') as { value: unknown }[]).map((o) => o.value)
}
/** Adds a value to a list: typed into its input, then Enter. */
async function addTag(id: string, value: string) {
  await typeInto(`policy-cond-values-input-${id}`, value)
  byTestId(`policy-cond-values-input-${id}`).dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }))
  await flush(3)
}

/** Every feature of a rule, as the gateway stores it. */
const fullConfig: PolicyConfig = {
  rules: [
    {
      name: 'out of credit',
      priority: 1,
      conditions: [
        { type: 'status_code', operator: 'in', values: [400, '500-599'] },
        { type: 'body', operator: 'regex', value: 'insufficient_quota' },
      ],
      action: 'invalidate',
    },
    {
      conditions: [{ type: 'model', operator: 'not_in', values: ['gpt-4o*'] }],
      action: 'retry_same',
      max_retries: 2,
      backoff_ms: 500,
    },
    {
      conditions: [
        { type: 'error_message', operator: 'contains', value: 'rate limit' },
        { type: 'failure_count', operator: 'gte', value: 3 },
      ],
      action: 'cool_down',
      duration: '5m',
    },
    { conditions: [], action: 'fail' },
  ],
}

function policy(id: number, name: string, extra: Partial<Policy> = {}): Policy {
  return {
    id,
    name,
    description: '',
    type: 'retry',
    config: { rules: [{ conditions: [{ type: 'status_code', operator: 'equals', value: 402 }], action: 'disable' }] },
    priority: 0,
    is_active: true,
    group_ids: [],
    created_at: '2026-01-01T00:00:00Z',
    updated_at: '2026-01-01T00:00:00Z',
    ...extra,
  }
}

afterEach(() => {
  document.body.innerHTML = ''
})

describe('policy rules model', () => {
  it('round-trips a config through the structured editor unchanged', () => {
    const parsed = configToRules(fullConfig)
    expect(parsed.ok).toBe(true)
    if (!parsed.ok) return
    expect(parsed.rules[0]).toEqual({
      name: 'out of credit',
      priority: 1,
      conditions: [
        { type: 'status_code', operator: 'in', value: '', values: ['400', '500-599'] },
        { type: 'body', operator: 'regex', value: 'insufficient_quota', values: [] },
      ],
      action: 'invalidate',
      max_retries: null,
      backoff_ms: null,
      duration: '',
    })
    expect(rulesToConfig(parsed.rules)).toEqual(fullConfig)
    // The same fields in the gateway's order, so the JSON view reads like the docs.
    expect(JSON.stringify(rulesToConfig(parsed.rules))).toBe(JSON.stringify(fullConfig))
  })

  it('offers each field only its operators, and resets one that no longer applies', () => {
    expect(operatorsFor('status_code')).toEqual(['equals', 'not_equals', 'in', 'not_in', 'gt', 'lt', 'gte', 'lte'])
    expect(operatorsFor('body')).toEqual(['equals', 'not_equals', 'contains', 'regex', 'in', 'not_in'])
    expect(operatorsFor('attempt')).not.toContain('regex')
    expect(operatorsFor('model')).not.toContain('gt')

    const c = emptyCondition()
    setConditionType(c, 'body')
    expect(c.operator).toBe('in') // text fields take lists too
    setConditionOperator(c, 'regex')
    setConditionType(c, 'status_code')
    expect(c.operator).toBe('equals')
    // A value carries over between one value and a list.
    c.value = '429'
    setConditionOperator(c, 'in')
    expect(c.values).toEqual(['429'])
    c.values = ['500-599', '429']
    setConditionOperator(c, 'not_equals')
    expect(c.value).toBe('429')
  })

  it("sends an action's own fields only when the action takes them", () => {
    const rule = { ...emptyRule(), conditions: [], max_retries: 3, backoff_ms: 250, duration: '90s' }
    const sent = (action: typeof rule.action) => rulesToConfig([{ ...rule, action }]).rules[0]
    expect(sent('invalidate')).toEqual({ conditions: [], action: 'invalidate' })
    expect(sent('retry')).toEqual({ conditions: [], action: 'retry', max_retries: 3 })
    expect(sent('retry_same')).toEqual({ conditions: [], action: 'retry_same', max_retries: 3, backoff_ms: 250 })
    expect(sent('cool_down')).toEqual({ conditions: [], action: 'cool_down', duration: '90s' })
    // Numbers for numeric fields (ranges stay text), text as typed for text fields.
    const typed = rulesToConfig([
      {
        ...emptyRule(),
        name: '  ',
        conditions: [
          { type: 'status_code', operator: 'in', value: '', values: [' 429 ', '500-599', ''] },
          { type: 'error_type', operator: 'equals', value: '123', values: [] },
          { type: 'attempt', operator: 'gt', value: '2', values: [] },
        ],
      },
    ])
    expect(typed.rules[0]!.conditions).toEqual([
      { type: 'status_code', operator: 'in', values: [429, '500-599'] },
      { type: 'error_type', operator: 'equals', value: '123' },
      { type: 'attempt', operator: 'gt', value: 2 },
    ])
    expect(typed.rules[0]).not.toHaveProperty('name')
  })

  it('says why a config does not fit the rule editor, naming the rule', () => {
    const problem = (text: string) => {
      const r = parseConfigText(text)
      return r.ok ? null : problemText(t, r.problem)
    }
    expect(problem('{"rules": [')).toMatch(/^Not valid JSON: /)
    expect(problem('[]')).toBe('Expected an object {"rules": [...]}')
    expect(problem('{"rules": [], "x": 1}')).toBe('config: unknown field x')
    expect(problem('{"rules": [{"conditions": [], "action": "explode"}]}')).toBe('rule 1: action is not valid')
    expect(
      problem('{"rules": [{"action": "fail"}, {"conditions": [{"type": "status_code", "operator": "regex", "value": "4.."}], "action": "fail"}]}'),
    ).toBe('rule 2, condition 1: regex does not apply to status_code')
    expect(problem('{"rules": [{"conditions": [], "action": "invalidate", "max_retries": 2}]}')).toBe(
      'rule 1: max_retries does not apply to invalidate',
    )
    // A lone `value` of `in` joins the list, as the gateway reads it.
    const r = parseConfigText('{"rules": [{"action": "fail", "conditions": [{"type": "channel", "operator": "in", "value": "gemini", "values": ["anthropic"]}]}]}')
    expect(r.ok && r.rules[0]!.conditions[0]!.values).toEqual(['gemini', 'anthropic'])
  })

  it("finds the rule a server message names", () => {
    const rules = [{ ...emptyRule() }, { ...emptyRule(), name: 'quota' }, ...Array.from({ length: 8 }, () => emptyRule())]
    expect(ruleOfMessage(rules, 'config: rule 1: condition 1: invalid regular expression')).toEqual({
      index: 0,
      reason: 'condition 1: invalid regular expression',
    })
    expect(ruleOfMessage(rules, 'quota: `duration` applies to cool_down, not fail')?.index).toBe(1)
    expect(ruleOfMessage(rules, 'rule 10: condition 2: bad')?.index).toBe(9)
    expect(ruleOfMessage(rules, 'config: missing field `action`')).toBeNull()
  })

  it('builds the sample answer from what was given', () => {
    expect(sampleToJson(emptySample())).toEqual({
      ok: true,
      sample: { status: 429, body: SAMPLE_BODY, channel: 'openai' },
    })
    const s = { ...emptySample(), status: 400, model: ' gpt-4o ', headers: 'Retry-After: 30\n\nx-ratelimit-reset-requests: 1s', attempt: 2, failure_count: 0 }
    expect(sampleToJson(s)).toEqual({
      ok: true,
      sample: {
        status: 400,
        body: SAMPLE_BODY,
        headers: { 'Retry-After': '30', 'x-ratelimit-reset-requests': '1s' },
        model: 'gpt-4o',
        channel: 'openai',
        attempt: 2,
        failure_count: 0,
      },
    })
    const bad = sampleToJson({ ...s, headers: 'Retry-After 30' })
    expect(!bad.ok && bad.field).toBe('headers')
    expect(!bad.ok && problemText(t, bad.problem)).toBe('Line 1 is not "Name: value"')
    const noStatus = sampleToJson({ ...s, status: 42 })
    expect(!noStatus.ok && noStatus.field).toBe('status')
  })
})

// Mounting the whole editor (a modal of many inputs) takes a while in happy-dom.
describe('PolicyEditor', { timeout: 20_000 }, () => {
  const mountEditor = (p: Policy | null = null) =>
    mountWithProviders(PolicyEditor, { show: true, policy: p })

  it('turns the structured rule into the config it creates', async () => {
    const { calls } = mockApi(() => ok(policy(7, 'out of credit'), 'Policy created'))
    const w = mountEditor()
    await flush()
    await typeInto('policy-form-name', '  out of credit ')
    // A new policy starts with one rule of one condition: status_code in [...].
    await addTag('0-0', '400')
    expect(byTestId('policy-cond-values-0-0').textContent).toContain('400')
    // Numbers may come comma-separated; a tag's close button removes it.
    await addTag('0-0', '429, 500-599')
    expect(byTestId('policy-cond-tag-0-0-2').textContent).toContain('500-599')
    byTestId('policy-cond-tag-0-0-1').querySelector<HTMLElement>('.n-tag__close')!.click()
    await flush()
    byTestId('policy-cond-tag-0-0-1').querySelector<HTMLElement>('.n-tag__close')!.click()
    await flush()
    expect(queryTestId('policy-cond-tag-0-0-1')).toBeNull()
    await click('policy-cond-add-0')
    await choose(w, 'policy-cond-type-0-1', 'body')
    expect(selectOptions(w, 'policy-cond-op-0-1')).toContain('regex')
    expect(selectOptions(w, 'policy-cond-op-0-1')).not.toContain('gt')
    expect(selectOptions(w, 'policy-cond-op-0-0')).not.toContain('regex')
    await choose(w, 'policy-cond-op-0-1', 'regex')
    await typeInto('policy-cond-value-0-1', 'insufficient_quota')
    await choose(w, 'policy-rule-action-0', 'invalidate')
    expect(byTestId('policy-rule-help-0').textContent).toContain('blacklisted now')
    await click('policy-editor-save')
    await flush()
    expect(calls).toHaveLength(1)
    expect(calls[0]!.method).toBe('POST')
    expect(calls[0]!.url).toBe('/api/policies')
    expect(calls[0]!.body).toEqual({
      name: 'out of credit',
      description: '',
      type: 'retry',
      config: {
        rules: [
          {
            conditions: [
              { type: 'status_code', operator: 'in', values: [400] },
              { type: 'body', operator: 'regex', value: 'insufficient_quota' },
            ],
            action: 'invalidate',
          },
        ],
      },
      priority: 0,
      is_active: true,
    })
    const host = w.findComponent(PolicyEditor)
    expect(host.emitted('saved')?.[0]?.[0]).toMatchObject({ id: 7 })
    expect(host.emitted('update:show')?.[0]).toEqual([false])
    w.unmount()
  })

  it("shows an action's own fields only when they apply, and sends only those", async () => {
    const { calls } = mockApi(() => ok(policy(1, 'p')))
    const w = mountEditor()
    await flush()
    await typeInto('policy-form-name', 'p')
    await click('policy-cond-remove-0-0')
    expect(queryTestId('policy-rule-max-retries-0')).not.toBeNull() // retry
    expect(queryTestId('policy-rule-backoff-0')).toBeNull()
    await choose(w, 'policy-rule-action-0', 'retry_same')
    await typeInto('policy-rule-max-retries-0', '2')
    await typeInto('policy-rule-backoff-0', '1500')
    expect(queryTestId('policy-rule-duration-0')).toBeNull()
    await choose(w, 'policy-rule-action-0', 'cool_down')
    expect(queryTestId('policy-rule-max-retries-0')).toBeNull()
    expect(queryTestId('policy-rule-backoff-0')).toBeNull()
    await typeInto('policy-rule-duration-0', '5m')
    await click('policy-editor-save')
    await flush()
    const body = calls[0]!.body as { config: PolicyConfig }
    expect(body.config.rules).toEqual([{ conditions: [], action: 'cool_down', duration: '5m' }])
    w.unmount()
  })

  it('keeps the JSON view and the rule editor in step', async () => {
    const { calls } = mockApi(() => ok(policy(3, 'edited')))
    const w = mountEditor(policy(3, 'stored', { config: fullConfig, priority: 4, type: 'degradation' }))
    await flush()
    expect(byTestId<HTMLInputElement>('policy-form-name').value).toBe('stored')
    expect(byTestId<HTMLInputElement>('policy-rule-name-0').value).toBe('out of credit')
    expect(byTestId('policy-cond-values-0-0').textContent).toContain('500-599')
    expect(byTestId<HTMLInputElement>('policy-rule-backoff-1').value).toBe('500')
    expect(byTestId<HTMLInputElement>('policy-rule-duration-2').value).toBe('5m')

    await typeInto('policy-rule-name-1', 'same key')
    byTestId('policy-mode-json').querySelector('input')!.click()
    await flush()
    const text = byTestId<HTMLTextAreaElement>('policy-json')
    const shown = JSON.parse(text.value) as PolicyConfig
    expect(shown.rules[1]).toEqual({ ...fullConfig.rules[1], name: 'same key' })
    expect(shown.rules[0]).toEqual(fullConfig.rules[0])

    // Invalid JSON: said under the view; the rule editor cannot be opened, nothing is saved.
    await typeInto('policy-json', '{"rules": [{"action": "fail"')
    expect(byTestId('policy-json-error').textContent).toContain('Not valid JSON')
    byTestId('policy-mode-form').querySelector('input')!.click()
    await flush()
    expect(queryTestId('policy-json')).not.toBeNull()
    await click('policy-editor-save')
    await flush()
    expect(calls).toHaveLength(0)

    // Valid JSON is the rule editor's rules.
    await typeInto(
      'policy-json',
      JSON.stringify({ rules: [{ conditions: [{ type: 'attempt', operator: 'lte', value: 2 }], action: 'retry', max_retries: 1 }] }),
    )
    expect(queryTestId('policy-json-error')).toBeNull()
    byTestId('policy-mode-form').querySelector('input')!.click()
    await flush()
    expect(queryTestId('policy-rule-1')).toBeNull()
    expect(byTestId<HTMLInputElement>('policy-cond-value-0-0').value).toBe('2')
    expect(byTestId<HTMLInputElement>('policy-rule-max-retries-0').value).toBe('1')
    await click('policy-editor-save')
    await flush()
    expect(calls[0]!.method).toBe('PUT')
    expect(calls[0]!.url).toBe('/api/policies/3')
    expect(calls[0]!.body).toEqual({
      name: 'stored',
      description: '',
      type: 'degradation',
      config: { rules: [{ conditions: [{ type: 'attempt', operator: 'lte', value: 2 }], action: 'retry', max_retries: 1 }] },
      priority: 4,
      is_active: true,
    })
    w.unmount()
  })

  it('reorders and removes rules', async () => {
    const { calls } = mockApi(() => ok(policy(3, 'p')))
    const w = mountEditor(policy(3, 'p', { config: fullConfig }))
    await flush()
    await click('policy-rule-down-0')
    expect(byTestId<HTMLInputElement>('policy-rule-name-1').value).toBe('out of credit')
    await click('policy-rule-up-3')
    await click('policy-rule-remove-0')
    await click('policy-rule-add')
    await click('policy-editor-save')
    await flush()
    const rules = (calls[0]!.body as { config: PolicyConfig }).config.rules
    expect(rules.map((r) => r.action)).toEqual(['invalidate', 'fail', 'cool_down', 'retry'])
    expect(rules[3]).toEqual({ conditions: [{ type: 'status_code', operator: 'in', values: [] }], action: 'retry' })
    w.unmount()
  })

  it('shows the gateway’s error on the rule it names and stays open', async () => {
    const reason = 'condition 2: invalid regular expression `(`: regex parse error'
    mockApi(() =>
      json(400, {
        code: 'VALIDATION_FAILED',
        message: `config: rule 2: ${reason}`,
        errors: [{ field: 'config', message: `rule 2: ${reason}` }],
      }),
    )
    const w = mountEditor()
    await flush()
    await typeInto('policy-form-name', 'bad')
    await click('policy-rule-add')
    await click('policy-editor-save')
    await flush()
    const alert = byTestId('policy-editor-error')
    expect(alert.dataset.code).toBe('VALIDATION_FAILED')
    expect(alert.textContent).toContain(`config: rule 2: ${reason}`)
    expect(byTestId('policy-rule-error-1').textContent).toContain(reason)
    expect(queryTestId('policy-rule-error-0')).toBeNull()
    expect(w.findComponent(PolicyEditor).emitted('saved')).toBeUndefined()

    // A name is asked for before anything is sent.
    await typeInto('policy-form-name', ' ')
    await click('policy-editor-save')
    expect(document.querySelector('.n-form-item-feedback--error')?.textContent).toContain('Required')
    w.unmount()
  })

  it('tries the rules as edited, unsaved, against the sample', async () => {
    const { calls } = mockApi(() =>
      ok({ matched: true, rule: 'quota', outcome: 'invalidate', builtin_outcome: 'failure', message: 'You exceeded your current quota' }),
    )
    const w = mountEditor(policy(3, 'p'))
    await flush()
    await typeInto('policy-rule-name-0', 'quota')
    await click('policy-test-run')
    await flush()
    expect(calls[0]!.url).toBe('/api/policies/test')
    expect((calls[0]!.body as { config: PolicyConfig }).config).toEqual({
      rules: [{ name: 'quota', conditions: [{ type: 'status_code', operator: 'equals', value: 402 }], action: 'disable' }],
    })
    expect(byTestId('policy-test-result').dataset.outcome).toBe('invalidate')
    w.unmount()
  })
})

describe('PolicyTestPanel', () => {
  const config: PolicyConfig = {
    rules: [
      {
        name: 'quota',
        conditions: [
          { type: 'status_code', operator: 'in', values: [400] },
          { type: 'body', operator: 'regex', value: 'insufficient_quota' },
        ],
        action: 'invalidate',
      },
    ],
  }

  it('sends the rules and the sample, and shows both decisions', async () => {
    const { calls, onSuccess } = mockApi(() =>
      ok({ matched: true, rule: 'quota', outcome: 'invalidate', builtin_outcome: 'failure', message: 'You exceeded your current quota' }),
    )
    const w = mountWithProviders(PolicyTestPanel, { config })
    await flush()
    expect(byTestId<HTMLTextAreaElement>('policy-test-body').value).toContain('insufficient_quota')
    await typeInto('policy-test-status', '400')
    await typeInto('policy-test-model', 'gpt-4o-mini')
    await typeInto('policy-test-headers', 'Retry-After: 30')
    await click('policy-test-run')
    await flush()
    expect(calls).toHaveLength(1)
    expect(calls[0]!.method).toBe('POST')
    expect(calls[0]!.url).toBe('/api/policies/test')
    expect(calls[0]!.body).toEqual({
      config,
      sample: {
        status: 400,
        body: SAMPLE_BODY,
        headers: { 'Retry-After': '30' },
        model: 'gpt-4o-mini',
        channel: 'openai',
      },
    })
    const result = byTestId('policy-test-result')
    expect(result.dataset.matched).toBe('true')
    expect(result.dataset.outcome).toBe('invalidate')
    expect(byTestId('policy-test-verdict').textContent).toBe('Rule "quota" → invalidate')
    expect(byTestId('policy-test-builtin').textContent?.trim()).toBe('(built-in rules alone: failure)')
    expect(byTestId('policy-test-message').textContent).toBe('You exceeded your current quota')
    expect(onSuccess).not.toHaveBeenCalled() // a dry run is no change
    w.unmount()
  })

  it('says when no rule matched, and shows a refused test', async () => {
    const answers = [
      ok({ matched: false, rule: null, outcome: 'cool_down', builtin_outcome: 'cool_down', message: '' }),
      json(400, { code: 'VALIDATION_FAILED', message: 'config: rule 1: condition 2: invalid regular expression' }),
    ]
    const { calls, onError } = mockApi(() => answers.shift()!)
    const w = mountWithProviders(PolicyTestPanel, { config })
    await flush()
    await click('policy-test-run')
    await flush()
    expect((calls[0]!.body as { sample: { status: number } }).sample.status).toBe(429)
    expect(byTestId('policy-test-result').dataset.matched).toBe('false')
    expect(byTestId('policy-test-verdict').textContent).toBe('No rule matched → cool_down')
    await click('policy-test-run')
    await flush()
    expect(queryTestId('policy-test-result')).toBeNull()
    expect(byTestId('policy-test-error').textContent).toContain('rule 1: condition 2: invalid regular expression')
    expect(onError).not.toHaveBeenCalled() // shown in the panel, not as a toast
    w.unmount()
  })

  it('sends nothing for a bad sample or without rules', async () => {
    const { calls } = mockApi(() => ok({}))
    let w = mountWithProviders(PolicyTestPanel, { config })
    await flush()
    await typeInto('policy-test-headers', 'no colon here')
    await click('policy-test-run')
    expect(document.body.textContent).toContain('Line 1 is not "Name: value"')
    w.unmount()
    w = mountWithProviders(PolicyTestPanel, { config: null, configError: 'Not valid JSON: oops' })
    await flush()
    await click('policy-test-run')
    expect(byTestId('policy-test-error').textContent).toBe('Not valid JSON: oops')
    expect(calls).toHaveLength(0)
    w.unmount()
  })
})

describe('PoliciesView', () => {
  const policies = [
    policy(1, 'out of credit', { group_ids: [4, 9], description: 'quota errors' }),
    policy(2, 'slow down', { is_active: false, type: 'degradation', config: { rules: [] } }),
  ]

  it('lists the policies with their rules, groups and switch', async () => {
    const { calls } = mockApi((c) => {
      if (c.url === '/api/policies') return ok(policies)
      if (c.url === '/api/groups/list') return ok([{ id: 4, name: 'openai-main', display_name: 'OpenAI' }, { id: 9, name: 'backup', display_name: '' }])
      return ok(policy(2, 'slow down', { is_active: true }), 'Policy updated')
    })
    const w = mountWithProviders(PoliciesView)
    await flush(8)
    const row1 = byTestId('policy-row-1')
    expect(row1.dataset.policyName).toBe('out of credit')
    expect(row1.querySelector('[data-testid="policy-rule-count"]')!.textContent).toBe('1 rule(s)')
    expect(row1.querySelector('[data-testid="policy-groups"]')!.textContent).toContain('OpenAI')
    expect(row1.querySelector('[data-testid="policy-groups"]')!.textContent).toContain('backup')
    expect(row1.textContent).toContain('quota errors')
    const row2 = byTestId('policy-row-2')
    expect(row2.textContent).toContain('Degradation')
    expect(row2.textContent).toContain('0 rule(s)')
    expect(row2.textContent).toContain('Not attached')
    expect(byTestId('policy-active-2').getAttribute('aria-checked')).toBe('false')

    await click('policy-active-2')
    await flush()
    const put = calls.find((c) => c.method === 'PUT')!
    expect(put.url).toBe('/api/policies/2')
    expect(put.body).toEqual({ is_active: true })
    expect(byTestId('policy-active-2').getAttribute('aria-checked')).toBe('true')

    await click('policy-edit-1')
    await flush()
    expect(byTestId<HTMLInputElement>('policy-form-name').value).toBe('out of credit')
    w.unmount()
  })

  it('deletes a policy after confirmation and reloads the list', async () => {
    let list = policies
    const { calls } = mockApi((c) => {
      if (c.method === 'DELETE') {
        list = list.filter((p) => p.id !== 1)
        return ok(undefined, 'Policy deleted')
      }
      if (c.url === '/api/policies') return ok(list)
      return ok([])
    })
    const w = mountWithProviders(PoliciesView)
    await flush(8)
    await click('policy-delete-1')
    await flush()
    expect(calls.some((c) => c.method === 'DELETE')).toBe(false) // asked first
    expect(document.body.textContent).toContain('Delete the policy out of credit? It is detached from its 2 group(s).')
    await click('confirm-dialog-ok')
    await flush(8)
    const del = calls.find((c) => c.method === 'DELETE')!
    expect(del.url).toBe('/api/policies/1')
    expect(queryTestId('policy-row-1')).toBeNull()
    expect(queryTestId('policy-row-2')).not.toBeNull()
    w.unmount()
  })

  it('shows the empty state with a way to create one', async () => {
    mockApi(() => ok([]))
    const w = mountWithProviders(PoliciesView)
    await flush(8)
    expect(queryTestId('policy-list-empty')).not.toBeNull()
    await click('policy-empty-new')
    await flush()
    expect(queryTestId('policy-editor')).not.toBeNull()
    w.unmount()
  })
})

describe('GroupPoliciesModal', () => {
  const group = { id: 4, name: 'openai-main', display_name: 'OpenAI', group_type: 'standard' } as GroupResponse

  it("attaches, orders and switches the group's policies with one PUT", async () => {
    const { calls } = mockApi((c) => {
      if (c.url === '/api/policies') {
        return ok([policy(1, 'out of credit'), policy(2, 'slow down', { is_active: false }), policy(3, 'unused')])
      }
      if (c.method === 'PUT') {
        return ok([{ policy_id: 1, priority: 3, is_active: true, name: 'out of credit', policy_active: true }], 'Group policies updated')
      }
      return ok([{ policy_id: 2, priority: 5, is_active: false, name: 'slow down', policy_active: false }])
    })
    const onSaved = vi.fn()
    const w = mountWithProviders(GroupPoliciesModal, { show: true, group, onSaved })
    await flush(8)
    expect(calls.map((c) => c.url).sort()).toEqual(['/api/groups/4/policies', '/api/policies'])
    expect(byTestId('group-policy-2').dataset.attached).toBe('true')
    expect(byTestId<HTMLInputElement>('group-policy-priority-2').value).toBe('5')
    expect(byTestId('group-policy-active-2').getAttribute('aria-checked')).toBe('false')
    expect(byTestId('group-policy-2').textContent).toContain('policy inactive')
    expect(byTestId('group-policy-1').dataset.attached).toBe('false')

    await click('group-policy-check-1')
    await typeInto('group-policy-priority-1', '3')
    await click('group-policy-active-2')
    await click('group-policy-check-3')
    await click('group-policy-check-3')
    await click('group-policies-save')
    await flush()
    const put = calls.find((c) => c.method === 'PUT')!
    expect(put.url).toBe('/api/groups/4/policies')
    expect(put.body).toEqual({
      policies: [
        { policy_id: 1, priority: 3, is_active: true },
        { policy_id: 2, priority: 5, is_active: true },
      ],
    })
    expect(onSaved).toHaveBeenCalledWith([
      { policy_id: 1, priority: 3, is_active: true, name: 'out of credit', policy_active: true },
    ])
    w.unmount()
  })

  it('detaches everything with an empty list, and shows a refused save', async () => {
    const { calls } = mockApi((c) => {
      if (c.method === 'PUT') return json(400, { code: 'VALIDATION_FAILED', message: 'policies[0].policy_id: no policy 1' })
      if (c.url === '/api/policies') return ok([policy(1, 'only')])
      return ok([{ policy_id: 1, priority: 0, is_active: true }])
    })
    const w = mountWithProviders(GroupPoliciesModal, { show: true, group })
    await flush(8)
    await click('group-policy-check-1')
    await click('group-policies-save')
    await flush()
    expect(calls.find((c) => c.method === 'PUT')!.body).toEqual({ policies: [] })
    expect(byTestId('group-policies-error').textContent).toContain('no policy 1')
    expect(queryTestId('group-policies-modal')).not.toBeNull()
    w.unmount()
  })
})

describe('GroupInfoCard', () => {
  it("shows the group's policies and opens their dialog", async () => {
    const GroupInfoCard = (await import('@/components/GroupInfoCard.vue')).default
    const group = {
      id: 4,
      name: 'openai-main',
      display_name: 'OpenAI',
      group_type: 'standard',
      channel_type: 'openai',
      endpoint: 'http://localhost:3001/proxy/openai-main',
      upstreams: [],
      header_rules: [],
      config: {},
      proxy_keys: '',
      model_redirect_rules: {},
      param_overrides: {},
    } as unknown as GroupResponse
    const { calls } = mockApi((c) => {
      if (c.url === '/api/groups/4/policies') {
        return ok([{ policy_id: 1, priority: 2, is_active: true, name: 'out of credit', policy_active: true }])
      }
      if (c.url === '/api/policies') return ok([policy(1, 'out of credit')])
      if (c.url === '/api/groups/4/parent-aggregate-groups') return ok([])
      return ok({
        key_stats: { total_keys: 0, active_keys: 0, invalid_keys: 0 },
        stats_24_hour: null,
        stats_7_day: null,
        stats_30_day: null,
      })
    })
    const w = mountWithProviders(GroupInfoCard, { group, configOptions: [] })
    await flush(8)
    const button = byTestId('group-policies-button')
    expect(button.dataset.count).toBe('1')
    expect(button.textContent).toContain('Policies (1)')
    byTestId('group-details-toggle').querySelector<HTMLElement>('.n-collapse-item__header-main')!.click()
    await flush()
    expect(byTestId('group-policy-item').textContent).toContain('out of credit')
    await click('group-policies-button')
    await flush(8)
    expect(byTestId('group-policy-1').dataset.attached).toBe('true')
    expect(calls.filter((c) => c.url === '/api/groups/4/policies')).toHaveLength(2)
    w.unmount()
  })
})
