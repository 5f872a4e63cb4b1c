import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { tasksApi } from '@/api/endpoints'
import { isTaskStatus, type TaskProgress, type TaskStatus } from '@/api/types'

export const TASK_POLL_MS = 1000

type FinishedListener = (task: TaskStatus) => void

/**
 * The one global task of the gateway (key import, deletion, validation). While a task runs the
 * store polls `GET /api/tasks/status`; when it ends, listeners (key table, group stats) reload.
 */
export const useTaskStore = defineStore('task', () => {
  const status = ref<TaskProgress | null>(null)
  const polling = ref(false)
  let timer: ReturnType<typeof setTimeout> | null = null
  const listeners = new Set<FinishedListener>()

  const running = computed(() => !!status.value?.is_running)
  const task = computed(() => (isTaskStatus(status.value) ? status.value : null))
  const percent = computed(() => {
    const t = task.value
    if (!t || t.total <= 0) return 0
    return Math.min(100, Math.round((t.processed / t.total) * 100))
  })

  function schedule() {
    if (timer) clearTimeout(timer)
    timer = setTimeout(() => void poll(), TASK_POLL_MS)
  }

  function apply(next: TaskProgress) {
    const wasRunning = running.value
    status.value = next
    if (next.is_running) {
      polling.value = true
      schedule()
    } else {
      polling.value = false
      if (timer) clearTimeout(timer)
      timer = null
      if (wasRunning && isTaskStatus(next)) listeners.forEach((fn) => fn(next))
    }
  }

  let lastPollFailed = false
  async function poll(): Promise<void> {
    try {
      // A failing poll is shown once (or ends the session on 401), not every second.
      apply(await tasksApi.status({ quiet: lastPollFailed }))
      lastPollFailed = false
    } catch {
      lastPollFailed = true
      if (polling.value) schedule()
    }
  }

  /** Starts tracking a task the UI just started (the answer of add-async etc.). */
  function track(started: TaskProgress) {
    apply(started)
  }

  function onFinished(fn: FinishedListener): () => void {
    listeners.add(fn)
    return () => listeners.delete(fn)
  }

  function stop() {
    if (timer) clearTimeout(timer)
    timer = null
    polling.value = false
    status.value = null
  }

  return { status, task, running, percent, polling, poll, track, onFinished, stop }
})
