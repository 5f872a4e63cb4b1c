import type { SettingInfo, SettingsCategory } from '@/api/types'
import type { MessageKey } from '@/i18n/messages'

export type SettingValue = number | boolean | string
export type FieldKind = 'number' | 'switch' | 'proxy_keys' | 'text'

/**
 * What the setting editor (`SettingInput.vue`) reads of a setting: a system setting of the
 * settings page (`SettingInfo`) and a group's config option (`ConfigOption`) both have it.
 */
export type SettingMeta = Pick<SettingInfo, 'key' | 'type'> &
  Partial<Pick<SettingInfo, 'name' | 'description' | 'min_value' | 'required'>>

/** int → number input (with min), bool → switch, `proxy_keys` → keys with generator, else text. */
export function fieldKind(s: SettingMeta): FieldKind {
  if (s.type === 'int') return 'number'
  if (s.type === 'bool') return 'switch'
  if (s.key === 'proxy_keys') return 'proxy_keys'
  return 'text'
}

function coerce(s: SettingInfo, v: unknown): SettingValue {
  switch (s.type) {
    case 'int': {
      const n = typeof v === 'number' ? v : Number(v)
      return Number.isFinite(n) ? n : 0
    }
    case 'bool':
      return v === true || v === 'true'
    default:
      return v === null || v === undefined ? '' : String(v)
  }
}

export function settingsToModel(categories: SettingsCategory[]): Record<string, SettingValue> {
  const m: Record<string, SettingValue> = {}
  for (const c of categories) for (const s of c.settings) m[s.key] = coerce(s, s.value)
  return m
}

export function validateSettings(
  categories: SettingsCategory[],
  model: Record<string, SettingValue>,
): Record<string, { key: MessageKey; params?: Record<string, number> }> {
  const errors: Record<string, { key: MessageKey; params?: Record<string, number> }> = {}
  for (const c of categories) {
    for (const s of c.settings) {
      const v = model[s.key]
      if (s.type === 'int') {
        if (typeof v !== 'number' || !Number.isInteger(v)) errors[s.key] = { key: 'form.integer' }
        else if (s.min_value !== undefined && s.min_value !== null && v < s.min_value) {
          errors[s.key] = { key: 'form.min', params: { min: s.min_value } }
        }
      } else if (s.type === 'string' && s.required && typeof v === 'string' && !v.trim()) {
        errors[s.key] = { key: 'form.required' }
      }
    }
  }
  return errors
}

/** The settings whose value differs from what the server sent (the body of `PUT /api/settings`). */
export function changedValues(
  categories: SettingsCategory[],
  model: Record<string, SettingValue>,
): Record<string, SettingValue> {
  const out: Record<string, SettingValue> = {}
  for (const c of categories) {
    for (const s of c.settings) {
      const v = model[s.key]
      if (v === undefined) continue
      if (v !== coerce(s, s.value)) out[s.key] = typeof v === 'string' && s.type === 'string' ? v.trim() : v
    }
  }
  return out
}
