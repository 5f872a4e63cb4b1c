export function formatNumber(n: number, lang: 'en' | 'zh' = 'en'): string {
  return new Intl.NumberFormat(lang === 'zh' ? 'zh-CN' : 'en-US', {
    maximumFractionDigits: 2,
  }).format(n)
}

export function formatPercent(ratio: number): string {
  return `${(ratio * 100).toFixed(ratio === 0 ? 0 : 2)}%`
}

/**
 * Parses a server timestamp. The gateway sends some (keys, groups) without a zone; they are UTC,
 * so they get a `Z` rather than being read as local time.
 */
export function parseServerTime(iso: string): Date {
  const hasZone = /(?:[zZ]|[+-]\d{2}:?\d{2})$/.test(iso)
  return new Date(hasZone || !iso.includes('T') ? iso : `${iso}Z`)
}

export function formatDateTime(iso: string | null | undefined, lang: 'en' | 'zh' = 'en'): string {
  if (!iso) return '—'
  const d = parseServerTime(iso)
  if (Number.isNaN(d.getTime())) return iso
  return d.toLocaleString(lang === 'zh' ? 'zh-CN' : 'en-GB', { hour12: false })
}

export function relativeTime(
  iso: string | null | undefined,
  lang: 'en' | 'zh' = 'en',
  now = Date.now(),
): string {
  if (!iso) return lang === 'zh' ? '从未' : 'never'
  const t = parseServerTime(iso).getTime()
  if (Number.isNaN(t)) return iso
  const diff = Math.round((t - now) / 1000)
  const rtf = new Intl.RelativeTimeFormat(lang === 'zh' ? 'zh-CN' : 'en', { numeric: 'auto' })
  const abs = Math.abs(diff)
  if (abs < 60) return rtf.format(diff, 'second')
  if (abs < 3600) return rtf.format(Math.round(diff / 60), 'minute')
  if (abs < 86400) return rtf.format(Math.round(diff / 3600), 'hour')
  return rtf.format(Math.round(diff / 86400), 'day')
}

export async function copyText(text: string): Promise<boolean> {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text)
      return true
    }
  } catch {
    // fall through to the textarea fallback (plain-HTTP origins)
  }
  const ta = document.createElement('textarea')
  ta.value = text
  ta.setAttribute('readonly', '')
  ta.style.position = 'fixed'
  ta.style.opacity = '0'
  document.body.appendChild(ta)
  ta.select()
  try {
    return document.execCommand('copy')
  } catch {
    return false
  } finally {
    document.body.removeChild(ta)
  }
}

/** Starts a browser download of a same-origin URL. */
export function startDownload(url: string): void {
  const a = document.createElement('a')
  a.href = url
  a.rel = 'noopener'
  a.download = ''
  document.body.appendChild(a)
  a.click()
  document.body.removeChild(a)
}
