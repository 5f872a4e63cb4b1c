import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { login as apiLogin } from '@/api/client'

/** The admin key lives for the browser session only. */
export const AUTH_STORAGE_KEY = 'gpt-load-auth-key'

export const useAuthStore = defineStore('auth', () => {
  const key = ref<string | null>(sessionStorage.getItem(AUTH_STORAGE_KEY))
  const isAuthenticated = computed(() => !!key.value)

  /** Checks the key with `POST /api/auth/login` and keeps it; throws an ApiError otherwise. */
  async function login(authKey: string): Promise<void> {
    const trimmed = authKey.trim()
    await apiLogin(trimmed)
    key.value = trimmed
    sessionStorage.setItem(AUTH_STORAGE_KEY, trimmed)
  }

  function logout() {
    key.value = null
    sessionStorage.removeItem(AUTH_STORAGE_KEY)
  }

  return { key, isAuthenticated, login, logout }
})
