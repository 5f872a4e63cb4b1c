import { vi } from 'vitest'
import { configureClient, resetClient } from '@/api/client'

export interface Call {
  url: string
  method: string
  headers: Record<string, string>
  body: unknown
}

export function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  })
}

export const ok = (data?: unknown, message = 'Success') =>
  json(200, data === undefined ? { code: 0, message } : { code: 0, message, data })

/**
 * Points the API client at a fake fetch. `route` answers each call; every call is recorded with
 * its parsed JSON body (or the FormData itself).
 */
export function mockApi(route: (call: Call) => Response | Promise<Response>) {
  resetClient()
  const calls: Call[] = []
  const onError = vi.fn()
  const onSuccess = vi.fn()
  const onUnauthorized = vi.fn()
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const headers = (init?.headers ?? {}) as Record<string, string>
    let body: unknown = init?.body
    if (typeof body === 'string') body = JSON.parse(body)
    const call: Call = { url: String(input), method: init?.method ?? 'GET', headers, body }
    calls.push(call)
    return route(call)
  })
  configureClient({
    fetch: fetchMock as unknown as typeof fetch,
    getToken: () => 'sk-admin',
    getLanguage: () => 'en',
    onError,
    onSuccess,
    onUnauthorized,
  })
  return { calls, fetchMock, onError, onSuccess, onUnauthorized }
}

export async function flush(times = 5) {
  for (let i = 0; i < times; i++) await new Promise((r) => setTimeout(r, 0))
}

import { mount } from '@vue/test-utils'
import { NDialogProvider, NMessageProvider } from 'naive-ui'
import { createPinia, setActivePinia } from 'pinia'
import { defineComponent, h, type Component } from 'vue'

/** Mounts a component inside the Naive UI providers it needs, with a fresh store. */
export function mountWithProviders(comp: Component, props: Record<string, unknown> = {}) {
  const pinia = createPinia()
  setActivePinia(pinia)
  const Host = defineComponent({
    setup() {
      return () =>
        h(NMessageProvider, null, {
          default: () => h(NDialogProvider, null, { default: () => h(comp, props) }),
        })
    },
  })
  return mount(Host, { attachTo: document.body, global: { plugins: [pinia] } })
}

/** An element anywhere in the document (modals are teleported to <body>). */
export function byTestId<T extends Element = HTMLElement>(id: string): T {
  const el = document.querySelector<T>(`[data-testid="${id}"]`)
  if (!el) throw new Error(`no element with data-testid=${id}`)
  return el
}

export function queryTestId(id: string): HTMLElement | null {
  return document.querySelector<HTMLElement>(`[data-testid="${id}"]`)
}

export async function typeInto(id: string, value: string) {
  const el = byTestId<HTMLInputElement | HTMLTextAreaElement>(id)
  el.value = value
  el.dispatchEvent(new Event('input', { bubbles: true }))
  await flush(2)
}

export async function click(id: string) {
  byTestId(id).click()
  await flush(3)
}
