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
