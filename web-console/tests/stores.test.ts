import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { nextTick } from 'vue'
import { AUTH_STORAGE_KEY, useAuthStore } from '@/stores/auth'
import { LOCALE_STORAGE_KEY, detectLanguage, useLocaleStore } from '@/stores/locale'
import { THEME_STORAGE_KEY, useThemeStore } from '@/stores/theme'
import { translate } from '@/i18n'
import { messages } from '@/i18n/messages'
import { json, mockApi } from './helpers'

beforeEach(() => {
  sessionStorage.clear()
  localStorage.clear()
  setActivePinia(createPinia())
})

describe('auth store', () => {
  it('keeps a checked key for the browser session', async () => {
    const { calls } = mockApi(() => json(200, { success: true, message: 'ok' }))
    const auth = useAuthStore()
    expect(auth.isAuthenticated).toBe(false)
    await auth.login('  sk-admin  ')
    expect(calls[0]!.body).toEqual({ auth_key: 'sk-admin' })
    expect(auth.isAuthenticated).toBe(true)
    expect(auth.key).toBe('sk-admin')
    expect(sessionStorage.getItem(AUTH_STORAGE_KEY)).toBe('sk-admin')
    expect(localStorage.getItem(AUTH_STORAGE_KEY)).toBeNull()
  })

  it('keeps nothing when the key is wrong', async () => {
    mockApi(() => json(401, { success: false, message: 'Authentication failed' }))
    const auth = useAuthStore()
    await expect(auth.login('bad')).rejects.toMatchObject({ status: 401 })
    expect(auth.isAuthenticated).toBe(false)
    expect(sessionStorage.getItem(AUTH_STORAGE_KEY)).toBeNull()
  })

  it('restores the key from sessionStorage and forgets it on logout', () => {
    sessionStorage.setItem(AUTH_STORAGE_KEY, 'sk-saved')
    const auth = useAuthStore()
    expect(auth.key).toBe('sk-saved')
    auth.logout()
    expect(auth.isAuthenticated).toBe(false)
    expect(sessionStorage.getItem(AUTH_STORAGE_KEY)).toBeNull()
  })
})

describe('theme store', () => {
  let listeners: ((e: { matches: boolean }) => void)[] = []
  let dark = false
  beforeEach(() => {
    listeners = []
    dark = false
    vi.stubGlobal('matchMedia', (q: string) => ({
      media: q,
      get matches() {
        return dark
      },
      addEventListener: (_: string, fn: (e: { matches: boolean }) => void) => listeners.push(fn),
      removeEventListener: () => {},
    }))
  })
  afterEach(() => vi.unstubAllGlobals())

  it('defaults to the system preference and follows it live', async () => {
    dark = true
    const theme = useThemeStore()
    expect(theme.mode).toBe('system')
    expect(theme.isDark).toBe(true)
    await nextTick()
    expect(document.documentElement.classList.contains('dark')).toBe(true)
    listeners.forEach((fn) => fn({ matches: false }))
    expect(theme.isDark).toBe(false)
    await nextTick()
    expect(document.documentElement.classList.contains('dark')).toBe(false)
  })

  it('cycles system → light → dark → system and stores the choice', async () => {
    const theme = useThemeStore()
    theme.cycle()
    expect(theme.mode).toBe('light')
    await nextTick()
    expect(localStorage.getItem(THEME_STORAGE_KEY)).toBe('light')
    theme.cycle()
    expect(theme.mode).toBe('dark')
    expect(theme.isDark).toBe(true)
    theme.cycle()
    expect(theme.mode).toBe('system')
  })

  it('reads the stored mode', () => {
    localStorage.setItem(THEME_STORAGE_KEY, 'dark')
    expect(useThemeStore().isDark).toBe(true)
    setActivePinia(createPinia())
    localStorage.setItem(THEME_STORAGE_KEY, 'bogus')
    expect(useThemeStore().mode).toBe('system')
  })
})

describe('locale store and translations', () => {
  it('stores the language', async () => {
    const locale = useLocaleStore()
    locale.setLang('zh')
    await nextTick()
    expect(localStorage.getItem(LOCALE_STORAGE_KEY)).toBe('zh')
    expect(document.documentElement.lang).toBe('zh-CN')
  })

  it('detects the language from storage, then the browser', () => {
    localStorage.setItem(LOCALE_STORAGE_KEY, 'zh')
    expect(detectLanguage()).toBe('zh')
    localStorage.removeItem(LOCALE_STORAGE_KEY)
    const spy = vi.spyOn(navigator, 'language', 'get').mockReturnValue('zh-TW')
    expect(detectLanguage()).toBe('zh')
    spy.mockReturnValue('de-DE')
    expect(detectLanguage()).toBe('en')
  })

  it('translates with parameters', () => {
    expect(translate('en', 'common.total', { n: 5 })).toBe('5 in total')
    expect(translate('zh', 'common.total', { n: 5 })).toBe('共 5 条')
  })

  it('has both languages for every message', () => {
    for (const [key, [en, zh]] of Object.entries(messages)) {
      expect(en, key).not.toBe('')
      expect(zh, key).not.toBe('')
      const params = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort()
      expect(params(zh), key).toEqual(params(en))
    }
  })
})
