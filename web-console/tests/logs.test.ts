import { afterEach, describe, expect, it } from 'vitest'
import LogsView from '@/views/LogsView.vue'
import { flush, mockApi, mountWithProviders, ok } from './helpers'

afterEach(() => {
  document.body.innerHTML = ''
  localStorage.clear()
})

const page = (total_items: number, total_capped?: boolean) => ({
  items: [],
  pagination: {
    page: 1,
    page_size: 15,
    total_items,
    total_pages: Math.ceil(total_items / 15),
    ...(total_capped === undefined ? {} : { total_capped }),
  },
})

describe('LogsView pager', () => {
  it('says "more than" when the gateway stopped counting, and the total otherwise', async () => {
    let answer = page(10015, true)
    mockApi((c) => (c.url.startsWith('/api/logs') ? ok(answer) : ok([])))
    const w = mountWithProviders(LogsView)
    await flush(10)
    expect(document.body.textContent).toContain('More than 10015')
    expect(document.body.textContent).not.toContain('in total')
    w.unmount()

    answer = page(42)
    const again = mountWithProviders(LogsView)
    await flush(10)
    expect(document.body.textContent).toContain('42 in total')
    expect(document.body.textContent).not.toContain('More than')
    again.unmount()
  })
})
