import { beforeEach, describe, expect, it, vi } from 'vitest'
import {
  ApiError,
  acceptLanguage,
  buildQuery,
  configureClient,
  downloadUrl,
  login,
  request,
  requestEnvelope,
  resetClient,
} from '@/api/client'
import { keysApi, logsApi } from '@/api/endpoints'
import { json, mockApi, ok } from './helpers'

describe('api client', () => {
  beforeEach(() => resetClient())

  it('unwraps the envelope and returns data', async () => {
    const { calls } = mockApi(() => ok([{ id: 1, name: 'a', display_name: '' }]))
    const data = await request<{ id: number }[]>('/groups/list')
    expect(data).toEqual([{ id: 1, name: 'a', display_name: '' }])
    expect(calls[0]!.url).toBe('/api/groups/list')
    expect(calls[0]!.method).toBe('GET')
  })

  it('returns the message with requestEnvelope', async () => {
    mockApi(() => ok(undefined, 'Settings updated'))
    const env = await requestEnvelope('/settings', { method: 'PUT', body: {} })
    expect(env.message).toBe('Settings updated')
    expect(env.data).toBeUndefined()
  })

  it('sends the admin key as a bearer token and the language', async () => {
    const { calls } = mockApi(() => ok({}))
    await request('/dashboard/stats')
    expect(calls[0]!.headers.Authorization).toBe('Bearer sk-admin')
    expect(calls[0]!.headers['Accept-Language']).toBe('en')

    configureClient({ getLanguage: () => 'zh' })
    await request('/dashboard/stats')
    expect(calls[1]!.headers['Accept-Language']).toMatch(/^zh-CN/)
  })

  it('omits the authorization header without a key', async () => {
    const { calls } = mockApi(() => ok({}))
    configureClient({ getToken: () => null })
    await request('/groups')
    expect(calls[0]!.headers.Authorization).toBeUndefined()
  })

  it('sends JSON bodies with a content type', async () => {
    const { calls } = mockApi(() => ok({ id: 3 }))
    await request('/groups', { method: 'POST', body: { name: 'x' } })
    expect(calls[0]!.headers['Content-Type']).toBe('application/json')
    expect(calls[0]!.body).toEqual({ name: 'x' })
  })

  it('maps the failure envelope to an ApiError, reports it and throws it', async () => {
    const { onError } = mockApi(() =>
      json(400, {
        code: 'VALIDATION_FAILED',
        message: 'name: must match ^[a-z0-9_-]{1,100}$',
        errors: [{ field: 'name', message: 'must match ^[a-z0-9_-]{1,100}$' }],
      }),
    )
    const err = await request('/groups', { method: 'POST', body: {} }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ApiError)
    const e = err as ApiError
    expect(e.status).toBe(400)
    expect(e.code).toBe('VALIDATION_FAILED')
    expect(e.message).toContain('name')
    expect(e.field).toBe('name')
    expect(e.errors).toEqual([{ field: 'name', message: 'must match ^[a-z0-9_-]{1,100}$' }])
    expect(onError).toHaveBeenCalledWith(e)
  })

  it("takes the invalid fields from the envelope's list, not from the message", async () => {
    mockApi(() =>
      json(400, {
        code: 'VALIDATION_FAILED',
        // The message is for people: a field's problem may itself contain `; ` and `x: y`.
        message: 'app_url: is required; failover_status_codes: bad entry; x: y',
        errors: [
          { field: 'app_url', message: 'is required' },
          { field: 'failover_status_codes', message: 'bad entry; x: y' },
          { field: 'failover_status_codes', message: 'empty' },
          { field: 3, message: 'not a field' },
          'junk',
        ],
      }),
    )
    const e = (await request('/settings', { method: 'PUT', body: {} }).catch((x: unknown) => x)) as ApiError
    expect(e.errors).toEqual([
      { field: 'app_url', message: 'is required' },
      { field: 'failover_status_codes', message: 'bad entry; x: y' },
      { field: 'failover_status_codes', message: 'empty' },
    ])
    expect(e.fieldErrors).toEqual({
      app_url: 'is required',
      failover_status_codes: 'bad entry; x: y; empty',
    })
    expect(e.field).toBe('app_url')
  })

  it('has no field errors without a list', async () => {
    mockApi(() => json(400, { code: 'VALIDATION_FAILED', message: 'name: is required' }))
    const e = (await request('/groups', { method: 'POST', body: {} }).catch((x: unknown) => x)) as ApiError
    expect(e.errors).toEqual([])
    expect(e.fieldErrors).toEqual({})
    expect(e.field).toBeUndefined()
    expect(new ApiError(404, 'NOT_FOUND', 'group: not found').fieldErrors).toEqual({})
  })

  it('does not report quiet errors but still throws them', async () => {
    const { onError } = mockApi(() => json(409, { code: 'TASK_IN_PROGRESS', message: 'busy' }))
    await expect(request('/keys/add-async', { method: 'POST', quiet: true })).rejects.toMatchObject({
      status: 409,
      code: 'TASK_IN_PROGRESS',
    })
    expect(onError).not.toHaveBeenCalled()
  })

  it('maps an envelope with a non-zero code on HTTP 200 to an error', async () => {
    mockApi(() => json(200, { code: 'BAD_REQUEST', message: 'nope' }))
    await expect(request('/x')).rejects.toMatchObject({ code: 'BAD_REQUEST', message: 'nope' })
  })

  it('maps non-envelope answers (plain 404, HTML, empty) to errors', async () => {
    let answer: Response = json(404, { error: 'Not Found' })
    mockApi(() => answer)
    await expect(request('/nope')).rejects.toMatchObject({ status: 404, message: 'Not Found' })
    answer = new Response('<html>bad gateway</html>', { status: 502 })
    await expect(request('/nope')).rejects.toMatchObject({ status: 502, code: 'HTTP_502' })
    answer = new Response('', { status: 200 })
    await expect(request('/nope')).rejects.toMatchObject({ code: 'INVALID_RESPONSE' })
  })

  it('turns network failures into ApiError status 0', async () => {
    const { onError } = mockApi(() => {
      throw new TypeError('Failed to fetch')
    })
    const e = (await request('/groups').catch((x: unknown) => x)) as ApiError
    expect(e).toBeInstanceOf(ApiError)
    expect(e.status).toBe(0)
    expect(e.code).toBe('NETWORK_ERROR')
    expect(e.message).toContain('Failed to fetch')
    expect(onError).toHaveBeenCalledOnce()
  })

  it('times out', async () => {
    mockApi(
      (call) =>
        new Promise<Response>((_, reject) => {
          void call
          setTimeout(() => reject(new DOMException('aborted', 'AbortError')), 50)
        }),
    )
    configureClient({ timeoutMs: 10 })
    await expect(request('/slow')).rejects.toMatchObject({ code: 'TIMEOUT', status: 0 })
  })

  it('logs out on 401', async () => {
    const { onUnauthorized, onError } = mockApi(() =>
      json(401, { code: 'UNAUTHORIZED', message: 'Authentication failed' }),
    )
    await expect(request('/groups')).rejects.toMatchObject({ status: 401 })
    expect(onUnauthorized).toHaveBeenCalledOnce()
    expect(onError).toHaveBeenCalledOnce()
  })

  it('reports the server message of successful changes, not of reads', async () => {
    const { onSuccess } = mockApi(() => ok({ id: 1 }, 'Group created'))
    await request('/groups')
    expect(onSuccess).not.toHaveBeenCalled()
    await request('/groups', { method: 'POST', body: {} })
    expect(onSuccess).toHaveBeenCalledWith('Group created')
    await request('/keys/test-multiple', { method: 'POST', body: {}, notify: false })
    expect(onSuccess).toHaveBeenCalledTimes(1)
  })

  it('uploads a key file as multipart group_id + file', async () => {
    const { calls } = mockApi(() => ok({ is_running: true }))
    const file = new File(['sk-a\nsk-b\n'], 'keys.txt', { type: 'text/plain' })
    await keysApi.addAsyncFile(7, file, 'keys.txt')
    const call = calls[0]!
    expect(call.url).toBe('/api/keys/add-async')
    expect(call.method).toBe('POST')
    expect(call.headers['Content-Type']).toBeUndefined() // the browser sets the boundary
    expect(call.body).toBeInstanceOf(FormData)
    const form = call.body as FormData
    expect(form.get('group_id')).toBe('7')
    const sent = form.get('file') as File
    expect(sent.name).toBe('keys.txt')
    expect(await sent.text()).toBe('sk-a\nsk-b\n')
  })

  it('builds queries without empty values', () => {
    expect(buildQuery({ a: 1, b: '', c: undefined, d: null, e: false, f: 'x y' })).toBe(
      '?a=1&e=false&f=x+y',
    )
    expect(buildQuery({})).toBe('')
  })

  it('puts the admin key in download URLs', () => {
    configureClient({ getToken: () => 'sk-admin' })
    expect(downloadUrl('/keys/export', { group_id: 2, status: 'all' })).toBe(
      '/api/keys/export?group_id=2&status=all&key=sk-admin',
    )
    expect(keysApi.exportUrl(3, 'invalid')).toBe(
      '/api/keys/export?group_id=3&status=invalid&key=sk-admin',
    )
    expect(logsApi.exportUrl({ group_name: 'g', is_success: false })).toBe(
      '/api/logs/export?group_name=g&is_success=false&key=sk-admin',
    )
  })

  it('sends the key list filters, dropping status=all', async () => {
    const { calls } = mockApi(() => ok({ items: [], pagination: {} }))
    await keysApi.list({ group_id: 1, status: 'all', page: 2, page_size: 24 })
    expect(calls[0]!.url).toBe('/api/keys?group_id=1&page=2&page_size=24')
    await keysApi.list({ group_id: 1, status: 'disabled', key_value: 'sk-x' })
    expect(calls[1]!.url).toBe('/api/keys?group_id=1&status=disabled&key_value=sk-x')
  })

  it('maps accept-language', () => {
    expect(acceptLanguage('en')).toBe('en')
    expect(acceptLanguage('zh')).toBe('zh-CN,zh;q=0.9')
  })

  describe('login', () => {
    it('accepts {success: true}', async () => {
      const { calls } = mockApi(() => json(200, { success: true, message: 'Login successful' }))
      await expect(login('sk-admin')).resolves.toBe('Login successful')
      expect(calls[0]!.body).toEqual({ auth_key: 'sk-admin' })
      expect(calls[0]!.headers.Authorization).toBeUndefined()
    })

    it('rejects a wrong key without ending a session', async () => {
      const { onUnauthorized } = mockApi(() =>
        json(401, { success: false, message: 'Authentication failed' }),
      )
      const e = (await login('bad').catch((x: unknown) => x)) as ApiError
      expect(e).toBeInstanceOf(ApiError)
      expect(e.status).toBe(401)
      expect(e.code).toBe('UNAUTHORIZED')
      expect(e.message).toBe('Authentication failed')
      expect(onUnauthorized).not.toHaveBeenCalled()
    })

    it('reports throttling and network failures', async () => {
      let fail = false
      mockApi(() => {
        if (fail) throw new TypeError('offline')
        return json(429, { code: 'TOO_MANY_REQUESTS', message: 'Too many attempts' })
      })
      await expect(login('x')).rejects.toMatchObject({ status: 429, code: 'TOO_MANY_REQUESTS' })
      fail = true
      await expect(login('x')).rejects.toMatchObject({ status: 0, code: 'NETWORK_ERROR' })
    })
  })

  it('cancels without reporting when the caller aborts', async () => {
    const { onError } = mockApi(
      (call) =>
        new Promise<Response>((_, reject) => {
          void call
          setTimeout(() => reject(new DOMException('aborted', 'AbortError')), 20)
        }),
    )
    const ctrl = new AbortController()
    const p = request('/x', { signal: ctrl.signal })
    ctrl.abort()
    await expect(p).rejects.toMatchObject({ code: 'ABORTED' })
    expect(onError).not.toHaveBeenCalled()
    vi.useRealTimers()
  })
})
