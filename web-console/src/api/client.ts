/**
 * A thin fetch-based client for the gateway's admin API (`/api`, same origin).
 *
 * - sends `Authorization: Bearer <admin key>` and `Accept-Language` (`en` or `zh-CN`);
 * - unwraps gpt-load's success envelope `{code: 0, message, data}` and returns `data`;
 * - turns the failure envelope `{code: "ERR", message, errors?}`, any other non-2xx answer,
 *   network failures and time-outs into an {@link ApiError} that is reported through `onError`
 *   (a toast) unless the caller shows it itself (`quiet`), and then thrown — never swallowed;
 * - a 401 calls `onUnauthorized` (log out, go to /login);
 * - the server's message of a successful non-GET request is reported through `onSuccess`.
 *
 * The envelopes are the generated types of the gateway's OpenAPI document (`Ack`, `Failure`).
 */
import type { Ack, InvalidField } from './types'

export type Language = 'en' | 'zh'

export type QueryValue = string | number | boolean | null | undefined
export type Query = Record<string, QueryValue>

/** An API failure as the UI shows it. `status` is 0 when no HTTP answer arrived. */
export class ApiError extends Error {
  readonly status: number
  readonly code: string
  /** For `VALIDATION_FAILED`: every invalid field, as the failure envelope lists them. */
  readonly errors: readonly InvalidField[]
  constructor(status: number, code: string, message: string, errors: readonly InvalidField[] = []) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.errors = errors
  }

  /** Each invalid field with its problem (a field listed twice has both, `; `-separated). */
  get fieldErrors(): Record<string, string> {
    const out: Record<string, string> = {}
    for (const { field, message } of this.errors) {
      out[field] = field in out ? `${out[field]}; ${message}` : message
    }
    return out
  }

  /** The first invalid field, if any. */
  get field(): string | undefined {
    return this.errors[0]?.field
  }
}

export interface ClientConfig {
  /** Where the API lives; `/api` on the console's own origin. */
  baseUrl: string
  getToken: () => string | null
  getLanguage: () => Language
  onUnauthorized: (error: ApiError) => void
  onError: (error: ApiError) => void
  onSuccess: (message: string) => void
  timeoutMs: number
  fetch: typeof fetch
}

const defaults: ClientConfig = {
  baseUrl: '/api',
  getToken: () => null,
  getLanguage: () => 'en',
  onUnauthorized: () => {},
  onError: () => {},
  onSuccess: () => {},
  timeoutMs: 60_000,
  fetch: (...args) => globalThis.fetch(...args),
}

let config: ClientConfig = { ...defaults }

/** Wires the client to the stores and the toast (main.ts) or to mocks (tests). */
export function configureClient(partial: Partial<ClientConfig>): void {
  config = { ...config, ...partial }
}

export function resetClient(): void {
  config = { ...defaults }
}

export interface RequestOptions {
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE'
  query?: Query
  /** A JSON body. */
  body?: unknown
  /** A multipart body (the browser sets the boundary). */
  form?: FormData
  /** The caller shows the error itself (inline); it is still thrown. */
  quiet?: boolean
  /** Toast the server's message on success; default: for every method but GET. */
  notify?: boolean
  /** Do not treat a 401 as a lost session (the login request). */
  noAuthRedirect?: boolean
  signal?: AbortSignal
}

/** What {@link requestEnvelope} returns: the success envelope's message and its `data`. */
export type Envelope<T> = Pick<Ack, 'message'> & { data: T }

export function acceptLanguage(lang: Language): string {
  return lang === 'zh' ? 'zh-CN,zh;q=0.9' : 'en'
}

export function buildQuery(query: Query | undefined): string {
  if (!query) return ''
  const params = new URLSearchParams()
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === '') continue
    params.append(k, String(v))
  }
  const s = params.toString()
  return s ? `?${s}` : ''
}

/** A URL the browser can download directly: the admin key goes in `?key=`. */
export function downloadUrl(path: string, query?: Query): string {
  return config.baseUrl + path + buildQuery({ ...query, key: config.getToken() ?? '' })
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

async function readBody(res: Response): Promise<unknown> {
  const text = await res.text()
  if (!text) return undefined
  try {
    return JSON.parse(text) as unknown
  } catch {
    return text
  }
}

/** The failure envelope's `errors`, keeping only well-formed entries. */
function invalidFields(list: unknown): InvalidField[] {
  if (!Array.isArray(list)) return []
  return list.flatMap((e: unknown) =>
    isRecord(e) && typeof e.field === 'string' && typeof e.message === 'string'
      ? [{ field: e.field, message: e.message }]
      : [],
  )
}

function errorFromResponse(status: number, body: unknown): ApiError {
  if (isRecord(body)) {
    const message = typeof body.message === 'string' ? body.message : undefined
    if (typeof body.code === 'string' && message !== undefined) {
      return new ApiError(status, body.code, message, invalidFields(body.errors))
    }
    if (message !== undefined) {
      return new ApiError(status, status === 401 ? 'UNAUTHORIZED' : `HTTP_${status}`, message)
    }
    if (typeof body.error === 'string') return new ApiError(status, `HTTP_${status}`, body.error)
  }
  const text = typeof body === 'string' && body.length < 300 ? body.trim() : ''
  return new ApiError(status, `HTTP_${status}`, text || `HTTP ${status}`)
}

/** Sends one request and returns the envelope's `data` and `message`. */
export async function requestEnvelope<T>(
  path: string,
  opts: RequestOptions = {},
): Promise<Envelope<T>> {
  const method = opts.method ?? 'GET'
  const headers: Record<string, string> = {
    Accept: 'application/json',
    'Accept-Language': acceptLanguage(config.getLanguage()),
  }
  const token = config.getToken()
  if (token) headers.Authorization = `Bearer ${token}`
  let body: BodyInit | undefined
  if (opts.form) {
    body = opts.form
  } else if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json'
    body = JSON.stringify(opts.body)
  }

  const timeout = new AbortController()
  const timer = setTimeout(() => timeout.abort(), config.timeoutMs)
  const onAbort = () => timeout.abort()
  opts.signal?.addEventListener('abort', onAbort)

  const fail = (error: ApiError): never => {
    if (error.status === 401 && !opts.noAuthRedirect) config.onUnauthorized(error)
    if (!opts.quiet) config.onError(error)
    throw error
  }

  let res: Response
  try {
    res = await config.fetch(config.baseUrl + path + buildQuery(opts.query), {
      method,
      headers,
      body,
      signal: timeout.signal,
    })
  } catch (e) {
    if (opts.signal?.aborted) throw new ApiError(0, 'ABORTED', 'Request cancelled')
    if (timeout.signal.aborted) return fail(new ApiError(0, 'TIMEOUT', 'Request timed out'))
    const detail = e instanceof Error ? e.message : String(e)
    return fail(new ApiError(0, 'NETWORK_ERROR', `Network error: ${detail}`))
  } finally {
    clearTimeout(timer)
    opts.signal?.removeEventListener('abort', onAbort)
  }

  let parsed: unknown
  try {
    parsed = await readBody(res)
  } catch (e) {
    const detail = e instanceof Error ? e.message : String(e)
    return fail(new ApiError(res.status, 'NETWORK_ERROR', `Network error: ${detail}`))
  }
  if (!res.ok) return fail(errorFromResponse(res.status, parsed))
  if (!isRecord(parsed) || !('code' in parsed)) {
    return fail(new ApiError(res.status, 'INVALID_RESPONSE', 'Unexpected response from the server'))
  }
  if (parsed.code !== 0) return fail(errorFromResponse(res.status, parsed))

  const message = typeof parsed.message === 'string' ? parsed.message : ''
  if ((opts.notify ?? method !== 'GET') && message) config.onSuccess(message)
  return { data: parsed.data as T, message }
}

/** Sends one request and returns the envelope's `data`. */
export async function request<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  return (await requestEnvelope<T>(path, opts)).data
}

/**
 * `POST /api/auth/login` answers `{success, message}` rather than the envelope (as gpt-load
 * does); a wrong key is a 401 that must not count as a lost session.
 */
export async function login(authKey: string): Promise<string> {
  let res: Response
  try {
    res = await config.fetch(`${config.baseUrl}/auth/login`, {
      method: 'POST',
      headers: {
        Accept: 'application/json',
        'Content-Type': 'application/json',
        'Accept-Language': acceptLanguage(config.getLanguage()),
      },
      body: JSON.stringify({ auth_key: authKey }),
    })
  } catch (e) {
    const detail = e instanceof Error ? e.message : String(e)
    throw new ApiError(0, 'NETWORK_ERROR', `Network error: ${detail}`)
  }
  const body = await readBody(res).catch(() => undefined)
  if (res.ok && isRecord(body) && body.success === true) {
    return typeof body.message === 'string' ? body.message : ''
  }
  throw errorFromResponse(res.status, body)
}
