import { computed, onBeforeUnmount, onMounted, ref } from 'vue'

export const MOBILE_MAX = 768

/** `isMobile` is true below 768 px (phones; tablets in portrait). */
export function useBreakpoint() {
  const width = ref(typeof window !== 'undefined' ? window.innerWidth : 1280)
  const update = () => {
    width.value = window.innerWidth
  }
  onMounted(() => window.addEventListener('resize', update))
  onBeforeUnmount(() => window.removeEventListener('resize', update))
  return { width, isMobile: computed(() => width.value < MOBILE_MAX) }
}
