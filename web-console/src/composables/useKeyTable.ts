import { computed, ref, watch, type Ref } from 'vue'
import { keysApi, type KeyListQuery } from '@/api/endpoints'
import type { KeyPage, KeyResponse, KeyStateFilter, KeyStatusFilter } from '@/api/types'

export const KEY_PAGE_SIZES = [12, 24, 60, 120] as const

type Fetcher = (q: KeyListQuery) => Promise<KeyPage>

/**
 * The key table's state: status and lifecycle-state filters, exact search, pagination. Changing a filter goes back to
 * page 1; answers to superseded requests are dropped.
 */
export function useKeyTable(groupId: Ref<number | null>, fetcher: Fetcher = (q) => keysApi.list(q)) {
  const status = ref<KeyStatusFilter>('all')
  const state = ref<KeyStateFilter>('all')
  const search = ref('')
  const appliedSearch = ref('')
  const page = ref(1)
  const pageSize = ref<number>(KEY_PAGE_SIZES[0])
  const items = ref<KeyResponse[]>([])
  const totalItems = ref(0)
  const totalPages = ref(0)
  const loading = ref(false)
  let seq = 0

  const query = computed<KeyListQuery | null>(() =>
    groupId.value === null
      ? null
      : {
          group_id: groupId.value,
          status: status.value,
          state: state.value,
          key_value: appliedSearch.value || undefined,
          page: page.value,
          page_size: pageSize.value,
        },
  )

  async function load(): Promise<void> {
    const q = query.value
    if (!q) {
      items.value = []
      totalItems.value = 0
      totalPages.value = 0
      return
    }
    const mine = ++seq
    loading.value = true
    try {
      const res = await fetcher(q)
      if (mine !== seq) return
      items.value = res.items
      totalItems.value = res.pagination.total_items
      totalPages.value = res.pagination.total_pages
      // A deletion can leave the current page past the end.
      if (page.value > 1 && res.items.length === 0 && res.pagination.total_pages < page.value) {
        page.value = Math.max(1, res.pagination.total_pages)
        return load()
      }
    } catch {
      if (mine === seq) items.value = []
    } finally {
      if (mine === seq) loading.value = false
    }
  }

  function setStatus(s: KeyStatusFilter) {
    status.value = s
    page.value = 1
    return load()
  }
  function setState(s: KeyStateFilter) {
    state.value = s
    page.value = 1
    return load()
  }
  function applySearch() {
    appliedSearch.value = search.value.trim()
    page.value = 1
    return load()
  }
  function clearSearch() {
    search.value = ''
    return applySearch()
  }
  function setPage(p: number) {
    page.value = Math.max(1, p)
    return load()
  }
  function setPageSize(n: number) {
    pageSize.value = n
    page.value = 1
    return load()
  }

  watch(groupId, () => {
    status.value = 'all'
    state.value = 'all'
    search.value = ''
    appliedSearch.value = ''
    page.value = 1
    void load()
  })

  return {
    status,
    state,
    search,
    appliedSearch,
    page,
    pageSize,
    items,
    totalItems,
    totalPages,
    loading,
    query,
    load,
    setStatus,
    setState,
    applySearch,
    clearSearch,
    setPage,
    setPageSize,
  }
}
