import type { InputHTMLAttributes } from 'vue'

/**
 * `data-testid` for the native `<input>`/`<textarea>` inside a Naive UI input (through its
 * `input-props`), so end-to-end tests can `fill()` it directly.
 */
export function inputTid(id: string, extra: Record<string, string> = {}): InputHTMLAttributes {
  return { 'data-testid': id, ...extra } as InputHTMLAttributes
}

/** The same for a `type="textarea"` Naive UI input (its `input-props` are typed as an input's). */
export function textareaTid(id: string): InputHTMLAttributes {
  return { 'data-testid': id } as InputHTMLAttributes
}
