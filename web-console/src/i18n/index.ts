import { computed } from 'vue'
import { messages, type MessageKey } from './messages'
import { useLocaleStore } from '@/stores/locale'
import type { Language } from '@/api/client'

export type { MessageKey }
export type Params = Record<string, string | number>

export function translate(lang: Language, key: MessageKey, params?: Params): string {
  const entry = messages[key]
  let text: string = lang === 'zh' ? entry[1] : entry[0]
  if (params) {
    for (const [k, v] of Object.entries(params)) text = text.split(`{${k}}`).join(String(v))
  }
  return text
}

/** `t(key, params)` in the current UI language; reactive inside templates and computeds. */
export function useI18n() {
  const locale = useLocaleStore()
  const t = (key: MessageKey, params?: Params) => translate(locale.lang, key, params)
  return { t, lang: computed(() => locale.lang) }
}
