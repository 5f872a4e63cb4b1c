/** The group form's model, its validation (gpt-load's rules) and its serialisation to the API. */
import type { GroupInput, GroupResponse, HeaderRule } from '@/api/types'
import type { MessageKey } from '@/i18n/messages'

export type GroupType = 'standard' | 'aggregate'
export type ConfigValue = string | number | boolean | null

export interface UpstreamRow {
  url: string
  weight: number
}
export interface HeaderRuleRow {
  key: string
  value: string
  action: 'set' | 'remove'
}
export interface ConfigRow {
  key: string
  value: ConfigValue
}

export interface GroupFormModel {
  group_type: GroupType
  name: string
  display_name: string
  description: string
  channel_type: string
  sort: number
  test_model: string
  validation_endpoint: string
  upstreams: UpstreamRow[]
  proxy_keys: string
  /** JSON object text. */
  param_overrides: string
  /** JSON object text: `{"from-model": "to-model"}`. */
  model_redirect_rules: string
  model_redirect_strict: boolean
  header_rules: HeaderRuleRow[]
  config: ConfigRow[]
}

export const NAME_PATTERN = /^[a-z0-9_-]{1,100}$/

export const DEFAULT_TEST_MODEL: Record<string, string> = {
  openai: 'gpt-4.1-nano',
  'openai-response': 'gpt-4.1-nano',
  gemini: 'gemini-2.0-flash-lite',
  anthropic: 'claude-3-haiku-20240307',
}

export const DEFAULT_UPSTREAM: Record<string, string> = {
  openai: 'https://api.openai.com',
  'openai-response': 'https://api.openai.com',
  gemini: 'https://generativelanguage.googleapis.com',
  anthropic: 'https://api.anthropic.com',
}

export const VALIDATION_ENDPOINT_PLACEHOLDER: Record<string, string> = {
  openai: '/v1/chat/completions',
  'openai-response': '/v1/responses',
  anthropic: '/v1/messages',
  gemini: '',
}

export function emptyGroupForm(type: GroupType = 'standard', channel = 'openai'): GroupFormModel {
  return {
    group_type: type,
    name: '',
    display_name: '',
    description: '',
    channel_type: channel,
    sort: 1,
    test_model: type === 'standard' ? (DEFAULT_TEST_MODEL[channel] ?? '') : '',
    validation_endpoint: '',
    upstreams: type === 'standard' ? [{ url: DEFAULT_UPSTREAM[channel] ?? '', weight: 1 }] : [],
    proxy_keys: '',
    param_overrides: '',
    model_redirect_rules: '',
    model_redirect_strict: false,
    header_rules: [],
    config: [],
  }
}

function jsonText(v: Record<string, unknown> | null | undefined): string {
  return v && Object.keys(v).length > 0 ? JSON.stringify(v, null, 2) : ''
}

export function groupToForm(g: GroupResponse): GroupFormModel {
  const type: GroupType = g.group_type === 'aggregate' ? 'aggregate' : 'standard'
  return {
    group_type: type,
    name: g.name,
    display_name: g.display_name,
    description: g.description,
    channel_type: g.channel_type,
    sort: g.sort,
    test_model: g.test_model === '-' ? '' : g.test_model,
    validation_endpoint: g.validation_endpoint,
    upstreams: g.upstreams.map((u) => ({ url: u.url, weight: u.weight ?? 1 })),
    proxy_keys: g.proxy_keys,
    param_overrides: jsonText(g.param_overrides),
    model_redirect_rules: jsonText(g.model_redirect_rules),
    model_redirect_strict: g.model_redirect_strict,
    header_rules: g.header_rules.map((r) => ({
      key: r.key,
      value: r.value ?? '',
      action: r.action === 'remove' ? 'remove' : 'set',
    })),
    config: Object.entries(g.config ?? {}).map(([key, value]) => ({
      key,
      value: value as ConfigValue,
    })),
  }
}

export type FieldErrors = Partial<Record<string, MessageKey>>

function parseObject(text: string): Record<string, unknown> | 'invalid' {
  if (!text.trim()) return {}
  try {
    const v: unknown = JSON.parse(text)
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>
  } catch {
    // reported below
  }
  return 'invalid'
}

/** Checks the model as the gateway would; keys are field names (`upstreams.0.url`, …). */
export function validateGroupForm(m: GroupFormModel): FieldErrors {
  const e: FieldErrors = {}
  if (!m.name.trim()) e.name = 'form.required'
  else if (!NAME_PATTERN.test(m.name.trim())) e.name = 'group.nameInvalid'
  if (!m.channel_type) e.channel_type = 'form.required'
  if (!Number.isInteger(m.sort)) e.sort = 'form.integer'

  if (m.group_type === 'aggregate') return e

  if (!m.test_model.trim()) e.test_model = 'form.required'
  const ve = m.validation_endpoint.trim()
  if (ve && (!ve.startsWith('/') || ve.includes('://'))) e.validation_endpoint = 'group.endpointInvalid'

  if (m.upstreams.length === 0) e.upstreams = 'group.upstreamRequired'
  m.upstreams.forEach((u, i) => {
    if (!/^https?:\/\/\S+$/.test(u.url.trim())) e[`upstreams.${i}.url`] = 'group.upstreamUrlInvalid'
    if (!Number.isInteger(u.weight) || u.weight < 0) e[`upstreams.${i}.weight`] = 'group.weightInvalid'
  })
  if (m.upstreams.length > 0 && !m.upstreams.some((u) => u.weight > 0)) {
    e.upstreams = 'group.upstreamWeightPositive'
  }

  if (parseObject(m.param_overrides) === 'invalid') e.param_overrides = 'form.jsonObject'
  const rules = parseObject(m.model_redirect_rules)
  if (rules === 'invalid') e.model_redirect_rules = 'form.jsonObject'
  else if (
    Object.entries(rules).some(([k, v]) => !k.trim() || typeof v !== 'string' || !v.trim())
  ) {
    e.model_redirect_rules = 'group.redirectRulesInvalid'
  }

  const seen = new Set<string>()
  m.header_rules.forEach((r, i) => {
    const name = r.key.trim().toLowerCase()
    if (!name) return
    if (seen.has(name)) e[`header_rules.${i}.key`] = 'group.headerDuplicate'
    seen.add(name)
  })

  const keys = new Set<string>()
  m.config.forEach((c, i) => {
    if (!c.key) e[`config.${i}.key`] = 'form.required'
    else if (keys.has(c.key)) e[`config.${i}.key`] = 'group.configDuplicate'
    keys.add(c.key)
  })
  return e
}

/** The body of `POST /api/groups` / `PUT /api/groups/{id}`. Validate first. */
export function formToPayload(m: GroupFormModel): GroupInput {
  const base: GroupInput = {
    name: m.name.trim(),
    display_name: m.display_name.trim(),
    description: m.description.trim(),
    group_type: m.group_type,
    channel_type: m.channel_type,
    sort: m.sort,
    proxy_keys: m.proxy_keys
      .split(/[,\n]/)
      .map((k) => k.trim())
      .filter(Boolean)
      .join(','),
  }
  if (m.group_type === 'aggregate') return base

  const params = parseObject(m.param_overrides)
  const rules = parseObject(m.model_redirect_rules)
  const config: Record<string, unknown> = {}
  for (const c of m.config) {
    if (c.key && c.value !== null && c.value !== '') config[c.key] = c.value
  }
  const headerRules: HeaderRule[] = m.header_rules
    .filter((r) => r.key.trim())
    .map((r) => ({
      key: r.key.trim(),
      value: r.action === 'remove' ? '' : r.value,
      action: r.action,
    }))
  return {
    ...base,
    test_model: m.test_model.trim(),
    validation_endpoint: m.validation_endpoint.trim(),
    upstreams: m.upstreams.map((u) => ({ url: u.url.trim(), weight: u.weight })),
    param_overrides: params === 'invalid' ? {} : params,
    model_redirect_rules: rules === 'invalid' ? {} : rules,
    model_redirect_strict: m.model_redirect_strict,
    header_rules: headerRules,
    config,
  }
}

/** Percentage of the total weight each member gets (0 when all weights are 0). */
export function weightShares(weights: number[]): number[] {
  const total = weights.reduce((a, b) => a + Math.max(0, b), 0)
  return weights.map((w) => (total > 0 ? Math.round((Math.max(0, w) / total) * 1000) / 10 : 0))
}
