/**
 * The policy editor's model: a policy's fields and its rules as the structured editor holds them,
 * their conversion to and from the stored config `{"rules": [...]}` (docs/KEYS.md, "Policies"),
 * and the sample answer of the dry run (`POST /api/policies/test`).
 */
import type { Policy, PolicyInput, SampleAnswer } from '@/api/types'
import type { MessageKey } from '@/i18n/messages'
import type { Params } from '@/i18n'

export const POLICY_TYPES = ['retry', 'degradation'] as const
export type PolicyType = (typeof POLICY_TYPES)[number]

export const CONDITION_TYPES = [
  'status_code',
  'error_message',
  'body',
  'error_type',
  'model',
  'channel',
  'attempt',
  'failure_count',
] as const
export type ConditionType = (typeof CONDITION_TYPES)[number]

export const OPERATORS = [
  'equals',
  'not_equals',
  'contains',
  'regex',
  'in',
  'not_in',
  'gt',
  'lt',
  'gte',
  'lte',
] as const
export type Operator = (typeof OPERATORS)[number]

export const ACTIONS = [
  'retry',
  'retry_same',
  'cool_down',
  'degrade',
  'invalidate',
  'disable',
  'fail',
] as const
export type Action = (typeof ACTIONS)[number]

export const CHANNELS = ['openai', 'openai-response', 'anthropic', 'gemini'] as const

const NUMERIC_TYPES: readonly ConditionType[] = ['status_code', 'attempt', 'failure_count']
const TEXT_ONLY: readonly Operator[] = ['contains', 'regex']
const NUMBER_ONLY: readonly Operator[] = ['gt', 'lt', 'gte', 'lte']

export function isNumericType(type: ConditionType): boolean {
  return NUMERIC_TYPES.includes(type)
}
/** `in` and `not_in` take a list of `values`; every other operator one `value`. */
export function isListOperator(op: Operator): boolean {
  return op === 'in' || op === 'not_in'
}
/** The operators a field allows: `contains`/`regex` compare text, `gt`…`lte` numbers. */
export function operatorsFor(type: ConditionType): Operator[] {
  const excluded = isNumericType(type) ? TEXT_ONLY : NUMBER_ONLY
  return OPERATORS.filter((op) => !excluded.includes(op))
}
export function takesMaxRetries(action: Action): boolean {
  return action === 'retry' || action === 'retry_same'
}
export function takesBackoff(action: Action): boolean {
  return action === 'retry_same'
}
export function takesDuration(action: Action): boolean {
  return action === 'cool_down'
}

// The stored config, as the gateway reads it.
export type ScalarJson = string | number
export type ConditionJson = {
  type: string
  operator: string
  value?: ScalarJson
  values?: ScalarJson[]
}
export type RuleJson = {
  name?: string
  priority?: number
  conditions: ConditionJson[]
  action: string
  max_retries?: number
  backoff_ms?: number
  duration?: ScalarJson
}
export type PolicyConfig = { rules: RuleJson[] }

// The structured editor's model: every value as typed (text), every optional number nullable.
export interface ConditionRow {
  type: ConditionType
  operator: Operator
  /** For single-value operators. */
  value: string
  /** For `in` / `not_in`. */
  values: string[]
}
export interface RuleRow {
  name: string
  priority: number | null
  conditions: ConditionRow[]
  action: Action
  /** Kept while another action is chosen, sent only when the action takes it. */
  max_retries: number | null
  backoff_ms: number | null
  duration: string
}
export interface PolicyFormModel {
  name: string
  description: string
  type: string
  priority: number
  is_active: boolean
  rules: RuleRow[]
}

export function emptyCondition(): ConditionRow {
  return { type: 'status_code', operator: 'in', value: '', values: [] }
}
export function emptyRule(): RuleRow {
  return {
    name: '',
    priority: null,
    conditions: [emptyCondition()],
    action: 'retry',
    max_retries: null,
    backoff_ms: null,
    duration: '',
  }
}
export function emptyPolicyForm(): PolicyFormModel {
  return { name: '', description: '', type: 'retry', priority: 0, is_active: true, rules: [emptyRule()] }
}

/** The label the gateway gives a rule in its messages: its name, or `rule N` (from 1). */
export function ruleLabel(rule: Pick<RuleRow, 'name'>, index: number): string {
  return rule.name.trim() || `rule ${index + 1}`
}

/**
 * Changes a condition's field; an operator the new field does not allow becomes `equals`.
 */
export function setConditionType(c: ConditionRow, type: ConditionType): void {
  c.type = type
  if (!operatorsFor(type).includes(c.operator)) setConditionOperator(c, 'equals')
}
/** Changes a condition's operator, carrying the value over between one value and a list. */
export function setConditionOperator(c: ConditionRow, op: Operator): void {
  const wasList = isListOperator(c.operator)
  c.operator = op
  if (wasList && !isListOperator(op)) {
    if (!c.value && c.values.length) c.value = c.values[0] ?? ''
  } else if (!wasList && isListOperator(op)) {
    if (!c.values.length && c.value.trim()) c.values = [c.value.trim()]
  }
}

/** A typed value as sent: a whole number for a numeric field (ranges stay text), else text. */
function scalar(type: ConditionType, text: string): ScalarJson {
  if (!isNumericType(type)) return text
  const t = text.trim()
  return /^\d{1,15}$/.test(t) ? Number(t) : t
}

function conditionToJson(c: ConditionRow): ConditionJson {
  const base = { type: c.type, operator: c.operator }
  if (isListOperator(c.operator)) {
    const values = c.values.map((v) => (isNumericType(c.type) ? v.trim() : v)).filter((v) => v !== '')
    return { ...base, values: values.map((v) => scalar(c.type, v)) }
  }
  return { ...base, value: scalar(c.type, c.value) }
}

/**
 * The config of the rules, its fields in the gateway's order; each action's own field only when
 * that action takes it.
 */
export function rulesToConfig(rules: RuleRow[]): PolicyConfig {
  return {
    rules: rules.map((r) => {
      const name = r.name.trim()
      const rule: RuleJson = {
        ...(name ? { name } : {}),
        ...(r.priority !== null && Number.isInteger(r.priority) ? { priority: r.priority } : {}),
        conditions: r.conditions.map(conditionToJson),
        action: r.action,
      }
      if (takesMaxRetries(r.action) && r.max_retries !== null) rule.max_retries = r.max_retries
      if (takesBackoff(r.action) && r.backoff_ms !== null) rule.backoff_ms = r.backoff_ms
      const duration = r.duration.trim()
      if (takesDuration(r.action) && duration) {
        rule.duration = /^\d{1,15}$/.test(duration) ? Number(duration) : duration
      }
      return rule
    }),
  }
}

/**
 * Why a config cannot be shown in the structured editor: a message key, its parameters, and where
 * (the rule and condition, from 1) — the message's `{where}`.
 */
export interface ConfigProblem {
  key: MessageKey
  params?: Params
  rule?: number
  condition?: number
}
export type ParsedConfig = { ok: true; rules: RuleRow[] } | { ok: false; problem: ConfigProblem }

class Problem extends Error {
  constructor(readonly problem: ConfigProblem) {
    super(problem.key)
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}
function isScalar(v: unknown): v is ScalarJson {
  return typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v))
}
function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0
}
function oneOf<T extends string>(list: readonly T[], v: unknown): v is T {
  return typeof v === 'string' && (list as readonly string[]).includes(v)
}

const RULE_FIELDS = ['name', 'priority', 'conditions', 'action', 'max_retries', 'backoff_ms', 'duration']
const CONDITION_FIELDS = ['type', 'operator', 'value', 'values']

function conditionFromJson(c: unknown, n: number, m: number): ConditionRow {
  const fail = (key: MessageKey, params: Params = {}): never => {
    throw new Problem({ key, params, rule: n, condition: m })
  }
  if (!isRecord(c)) return fail('policy.jsonNotObject')
  const unknown = Object.keys(c).find((k) => !CONDITION_FIELDS.includes(k))
  if (unknown) fail('policy.jsonUnknownField', { field: unknown })
  if (!oneOf(CONDITION_TYPES, c.type)) return fail('policy.jsonBadValue', { field: 'type' })
  if (!oneOf(OPERATORS, c.operator)) return fail('policy.jsonBadValue', { field: 'operator' })
  const type = c.type
  const operator = c.operator
  if (!operatorsFor(type).includes(operator)) fail('policy.jsonOperatorType', { operator, field: type })
  if (c.value !== undefined && !isScalar(c.value)) fail('policy.jsonBadValue', { field: 'value' })
  if (c.values !== undefined && !(Array.isArray(c.values) && c.values.every(isScalar))) {
    fail('policy.jsonBadValue', { field: 'values' })
  }
  const value = c.value === undefined ? '' : String(c.value)
  const values = ((c.values as ScalarJson[] | undefined) ?? []).map(String)
  // `in` also takes a lone `value` (the gateway adds it to the list).
  if (isListOperator(operator)) {
    return { type, operator, value: '', values: value ? [value, ...values] : values }
  }
  return { type, operator, value, values: [] }
}

function ruleFromJson(r: unknown, n: number): RuleRow {
  const fail = (key: MessageKey, params: Params = {}): never => {
    throw new Problem({ key, params, rule: n })
  }
  if (!isRecord(r)) return fail('policy.jsonNotObject')
  const unknown = Object.keys(r).find((k) => !RULE_FIELDS.includes(k))
  if (unknown) fail('policy.jsonUnknownField', { field: unknown })
  if (r.name !== undefined && typeof r.name !== 'string') fail('policy.jsonBadValue', { field: 'name' })
  if (r.priority !== undefined && !(typeof r.priority === 'number' && Number.isInteger(r.priority))) {
    fail('policy.jsonBadValue', { field: 'priority' })
  }
  if (r.conditions !== undefined && !Array.isArray(r.conditions)) fail('policy.jsonBadValue', { field: 'conditions' })
  if (!oneOf(ACTIONS, r.action)) return fail('policy.jsonBadValue', { field: 'action' })
  const action = r.action
  const notFor = (field: string) => fail('policy.jsonNotForAction', { field, action })
  if (r.max_retries !== undefined) {
    if (!isCount(r.max_retries)) fail('policy.jsonBadValue', { field: 'max_retries' })
    if (!takesMaxRetries(action)) notFor('max_retries')
  }
  if (r.backoff_ms !== undefined) {
    if (!isCount(r.backoff_ms)) fail('policy.jsonBadValue', { field: 'backoff_ms' })
    if (!takesBackoff(action)) notFor('backoff_ms')
  }
  if (r.duration !== undefined) {
    if (!isScalar(r.duration)) fail('policy.jsonBadValue', { field: 'duration' })
    if (!takesDuration(action)) notFor('duration')
  }
  const conditions = ((r.conditions as unknown[] | undefined) ?? []).map((c, m) =>
    conditionFromJson(c, n, m + 1),
  )
  return {
    name: (r.name as string | undefined) ?? '',
    priority: (r.priority as number | undefined) ?? null,
    conditions,
    action,
    max_retries: (r.max_retries as number | undefined) ?? null,
    backoff_ms: (r.backoff_ms as number | undefined) ?? null,
    duration: r.duration === undefined ? '' : String(r.duration),
  }
}

/** The rules of a config, or why the structured editor cannot hold it. */
export function configToRules(config: unknown): ParsedConfig {
  if (!isRecord(config) || !Array.isArray(config.rules)) {
    return { ok: false, problem: { key: 'policy.jsonShape' } }
  }
  const extra = Object.keys(config).find((k) => k !== 'rules')
  if (extra) {
    return { ok: false, problem: { key: 'policy.jsonUnknownField', params: { field: extra } } }
  }
  try {
    return { ok: true, rules: config.rules.map((r, i) => ruleFromJson(r, i + 1)) }
  } catch (e) {
    if (e instanceof Problem) return { ok: false, problem: e.problem }
    throw e
  }
}

/** {@link configToRules} of JSON text. */
export function parseConfigText(text: string): ParsedConfig {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (e) {
    const error = e instanceof Error ? e.message : String(e)
    return { ok: false, problem: { key: 'policy.jsonSyntax', params: { error } } }
  }
  return configToRules(value)
}

export function configText(rules: RuleRow[]): string {
  return JSON.stringify(rulesToConfig(rules), null, 2)
}

type Translate = (key: MessageKey, params?: Params) => string

/** A problem in words, with where it is. */
export function problemText(t: Translate, p: ConfigProblem): string {
  let where = 'config'
  if (p.rule !== undefined && p.condition !== undefined) {
    where = t('policy.whereCondition', { n: p.rule, m: p.condition })
  } else if (p.rule !== undefined) {
    where = t('policy.whereRule', { n: p.rule })
  }
  return t(p.key, { where, ...p.params })
}

export function policyToForm(p: Policy): PolicyFormModel {
  const parsed = configToRules(p.config)
  return {
    name: p.name,
    description: p.description,
    type: p.type,
    priority: p.priority,
    is_active: p.is_active,
    rules: parsed.ok ? parsed.rules : [],
  }
}

/** The body of `POST /api/policies` / `PUT /api/policies/{id}`. */
export function formToPayload(m: PolicyFormModel, config: PolicyConfig = rulesToConfig(m.rules)): PolicyInput {
  return {
    name: m.name.trim(),
    description: m.description.trim(),
    type: m.type,
    config,
    priority: m.priority,
    is_active: m.is_active,
  }
}

/**
 * The rule a server message names (`config: rule 2: condition 1: …`, or the rule's name): its
 * index and the rest of the message.
 */
export function ruleOfMessage(rules: RuleRow[], message: string): { index: number; reason: string } | null {
  const text = message.replace(/^config:\s*/, '')
  // The longest label first: `rule 1` must not claim `rule 10`'s message.
  const labels = rules
    .map((r, index) => ({ index, label: ruleLabel(r, index) }))
    .sort((a, b) => b.label.length - a.label.length)
  for (const { index, label } of labels) {
    if (text.startsWith(`${label}: `)) return { index, reason: text.slice(label.length + 2) }
  }
  return null
}

// The dry run's sample answer.
export const SAMPLE_BODY = JSON.stringify(
  {
    error: {
      message:
        'You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.',
      type: 'insufficient_quota',
      param: null,
      code: 'insufficient_quota',
    },
  },
  null,
  2,
)

export interface SampleForm {
  status: number | null
  body: string
  model: string
  channel: string
  /** `Name: value` per line. */
  headers: string
  attempt: number | null
  failure_count: number | null
}

export function emptySample(): SampleForm {
  return { status: 429, body: SAMPLE_BODY, model: '', channel: 'openai', headers: '', attempt: null, failure_count: null }
}

export type SampleResult = { ok: true; sample: SampleAnswer } | { ok: false; problem: ConfigProblem; field: string }

/** The sample as the API takes it: only what was given; headers parsed from their lines. */
export function sampleToJson(s: SampleForm): SampleResult {
  if (s.status === null || !Number.isInteger(s.status) || s.status < 100 || s.status > 999) {
    return { ok: false, field: 'status', problem: { key: 'policy.test.statusInvalid' } }
  }
  const headers: Record<string, string> = {}
  const lines = s.headers.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim()
    if (!line) continue
    const colon = line.indexOf(':')
    if (colon <= 0) {
      return { ok: false, field: 'headers', problem: { key: 'policy.test.headersInvalid', params: { n: i + 1 } } }
    }
    headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim()
  }
  const sample: SampleAnswer = { status: s.status, body: s.body }
  if (Object.keys(headers).length) sample.headers = headers
  if (s.model.trim()) sample.model = s.model.trim()
  if (s.channel) sample.channel = s.channel
  if (s.attempt !== null) sample.attempt = s.attempt
  if (s.failure_count !== null) sample.failure_count = s.failure_count
  return { ok: true, sample }
}
