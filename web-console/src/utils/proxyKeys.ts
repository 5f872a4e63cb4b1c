/** gpt-load's proxy key generator: `sk-` + 48 characters of `[A-Za-z0-9_-]`. */
export const PROXY_KEY_ALPHABET =
  'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-'
export const PROXY_KEY_PATTERN = /^sk-[A-Za-z0-9_-]{48}$/

export function generateProxyKey(random: (n: number) => Uint8Array = randomBytes): string {
  // 64 symbols: a byte's low six bits pick one without bias.
  const bytes = random(48)
  let out = 'sk-'
  for (const b of bytes) out += PROXY_KEY_ALPHABET[b & 63]
  return out
}

function randomBytes(n: number): Uint8Array {
  const a = new Uint8Array(n)
  crypto.getRandomValues(a)
  return a
}

/** Splits a comma/newline list of proxy keys into trimmed, non-empty, unique entries. */
export function splitProxyKeys(text: string): string[] {
  const seen = new Set<string>()
  for (const part of text.split(/[,\n]/)) {
    const k = part.trim()
    if (k) seen.add(k)
  }
  return [...seen]
}

/** Appends `count` fresh keys to a comma list. */
export function appendGeneratedKeys(text: string, count: number): string {
  const keys = splitProxyKeys(text)
  for (let i = 0; i < count; i++) keys.push(generateProxyKey())
  return keys.join(',')
}

/** Shows the first and last four characters. */
export function maskKey(key: string): string {
  if (key.length <= 12) return key.slice(0, 2) + '••••' + key.slice(-2)
  return `${key.slice(0, 6)}••••${key.slice(-4)}`
}
