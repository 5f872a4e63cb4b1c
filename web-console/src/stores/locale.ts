import { defineStore } from 'pinia'
import { ref, watch } from 'vue'
import type { Language } from '@/api/client'

export const LOCALE_STORAGE_KEY = 'locale'

export function detectLanguage(): Language {
  const stored = localStorage.getItem(LOCALE_STORAGE_KEY)
  if (stored === 'en' || stored === 'zh') return stored
  const nav = typeof navigator !== 'undefined' ? navigator.language : ''
  return nav.toLowerCase().startsWith('zh') ? 'zh' : 'en'
}

/** The UI language (English or Chinese), kept in localStorage. */
export const useLocaleStore = defineStore('locale', () => {
  const lang = ref<Language>(detectLanguage())
  watch(lang, (v) => {
    localStorage.setItem(LOCALE_STORAGE_KEY, v)
    document.documentElement.lang = v === 'zh' ? 'zh-CN' : 'en'
  })
  function setLang(v: Language) {
    lang.value = v
  }
  return { lang, setLang }
})
