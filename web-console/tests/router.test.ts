import { mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createAppRouter } from '@/router'
import { AUTH_STORAGE_KEY } from '@/stores/auth'
import LoginView from '@/views/LoginView.vue'
import { byTestId, click, flush, json, mockApi, typeInto } from './helpers'

beforeEach(() => {
  sessionStorage.clear()
  setActivePinia(createPinia())
})
afterEach(() => {
  document.body.innerHTML = ''
})

describe('router guard', () => {
  it('sends a visitor without a key to /login, keeping the target', async () => {
    const router = createAppRouter()
    await router.push('/logs')
    expect(router.currentRoute.value.name).toBe('login')
    expect(router.currentRoute.value.query.redirect).toBe('/logs')
  })

  it('lets a logged-in user through and away from /login', async () => {
    sessionStorage.setItem(AUTH_STORAGE_KEY, 'sk-admin')
    const router = createAppRouter()
    await router.push('/settings')
    expect(router.currentRoute.value.name).toBe('settings')
    await router.push('/policies')
    expect(router.currentRoute.value.name).toBe('policies')
    await router.push('/login')
    expect(router.currentRoute.value.name).toBe('dashboard')
  })
})

describe('LoginView', () => {
  async function mountLogin() {
    const pinia = createPinia()
    setActivePinia(pinia)
    const router = createAppRouter()
    await router.push('/login?redirect=/keys')
    const w = mount(LoginView, { attachTo: document.body, global: { plugins: [pinia, router] } })
    return { w, router }
  }

  it('shows the server message for a wrong key', async () => {
    mockApi(() => json(401, { success: false, message: 'Authentication failed' }))
    const { w, router } = await mountLogin()
    await typeInto('login-key-input', 'wrong')
    await click('login-submit')
    await flush(5)
    expect(byTestId('login-error').textContent).toContain('Authentication failed')
    expect(router.currentRoute.value.name).toBe('login')
    w.unmount()
  })

  it('logs in and goes to the page asked for', { timeout: 10_000 }, async () => {
    const { calls } = mockApi(() => json(200, { success: true, message: 'ok' }))
    const { w, router } = await mountLogin()
    await typeInto('login-key-input', 'sk-admin')
    await click('login-submit')
    // The target route's component is loaded lazily.
    for (let i = 0; i < 250 && router.currentRoute.value.name === 'login'; i++) {
      await new Promise((r) => setTimeout(r, 20))
    }
    expect(calls[0]!.body).toEqual({ auth_key: 'sk-admin' })
    expect(sessionStorage.getItem(AUTH_STORAGE_KEY)).toBe('sk-admin')
    expect(document.querySelector('[data-testid="login-error"]')?.textContent ?? '').toBe('')
    expect(router.currentRoute.value.fullPath).toBe('/keys')
    w.unmount()
  })

  it('asks for a key before sending anything', async () => {
    const { calls } = mockApi(() => json(200, { success: true, message: 'ok' }))
    const { w } = await mountLogin()
    await click('login-submit')
    expect(calls).toHaveLength(0)
    expect(byTestId('login-error').textContent).toContain('Enter the admin key')
    w.unmount()
  })
})
