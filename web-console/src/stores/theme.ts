import { defineStore } from 'pinia'
import { computed, ref, watch } from 'vue'

export type ThemeMode = 'light' | 'dark' | 'system'
export const THEME_STORAGE_KEY = 'gpt-load-theme-mode'

function storedMode(): ThemeMode {
  const v = localStorage.getItem(THEME_STORAGE_KEY)
  return v === 'light' || v === 'dark' || v === 'system' ? v : 'system'
}

/** Light, dark or the system's preference (`prefers-color-scheme`, followed live). */
export const useThemeStore = defineStore('theme', () => {
  const mode = ref<ThemeMode>(storedMode())
  const media =
    typeof window !== 'undefined' && typeof window.matchMedia === 'function'
      ? window.matchMedia('(prefers-color-scheme: dark)')
      : null
  const systemDark = ref(media?.matches ?? false)
  media?.addEventListener?.('change', (e) => {
    systemDark.value = e.matches
  })

  const isDark = computed(() => (mode.value === 'system' ? systemDark.value : mode.value === 'dark'))

  watch(mode, (v) => localStorage.setItem(THEME_STORAGE_KEY, v))
  watch(
    isDark,
    (dark) => {
      document.documentElement.classList.toggle('dark', dark)
      document.documentElement.style.colorScheme = dark ? 'dark' : 'light'
    },
    { immediate: true },
  )

  function setMode(v: ThemeMode) {
    mode.value = v
  }
  /** system → light → dark → system */
  function cycle() {
    mode.value = mode.value === 'system' ? 'light' : mode.value === 'light' ? 'dark' : 'system'
  }

  return { mode, isDark, systemDark, setMode, cycle }
})
