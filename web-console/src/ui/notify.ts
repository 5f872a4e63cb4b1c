/**
 * Toasts from anywhere (the API client, stores): `NotifyBridge` plugs Naive UI's message API in
 * once the providers are mounted; until then (and in unit tests) messages go to the console.
 */
export interface Notifier {
  error: (text: string) => void
  success: (text: string) => void
  info: (text: string) => void
  warning: (text: string) => void
}

const fallback: Notifier = {
  error: (t) => console.error(t),
  success: (t) => console.info(t),
  info: (t) => console.info(t),
  warning: (t) => console.warn(t),
}

let impl: Notifier = fallback

export function setNotifier(n: Notifier | null): void {
  impl = n ?? fallback
}

export const notify: Notifier = {
  error: (t) => impl.error(t),
  success: (t) => impl.success(t),
  info: (t) => impl.info(t),
  warning: (t) => impl.warning(t),
}
