import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { TASK_POLL_MS, useTaskStore } from '@/stores/task'
import { json, mockApi, ok } from './helpers'

const running = (processed: number) => ({
  task_type: 'KEY_IMPORT',
  is_running: true,
  group_name: 'g',
  processed,
  total: 10,
  started_at: '2026-01-01T00:00:00Z',
})
const finished = {
  ...running(10),
  is_running: false,
  result: { added_count: 10, ignored_count: 0 },
  finished_at: '2026-01-01T00:00:05Z',
}

describe('task store', () => {
  beforeEach(() => {
    setActivePinia(createPinia())
    vi.useFakeTimers()
  })
  afterEach(() => vi.useRealTimers())

  it('polls while a task runs and tells listeners once when it ends', async () => {
    const answers = [ok(running(5)), ok(finished), ok(finished)]
    const { calls } = mockApi(() => answers.shift() ?? ok({ is_running: false }))
    const task = useTaskStore()
    const done = vi.fn()
    task.onFinished(done)

    task.track(running(0))
    expect(task.running).toBe(true)
    expect(task.percent).toBe(0)
    expect(calls).toHaveLength(0)

    await vi.advanceTimersByTimeAsync(TASK_POLL_MS)
    expect(calls).toHaveLength(1)
    expect(calls[0]!.url).toBe('/api/tasks/status')
    expect(task.percent).toBe(50)

    await vi.advanceTimersByTimeAsync(TASK_POLL_MS)
    expect(calls).toHaveLength(2)
    expect(task.running).toBe(false)
    expect(done).toHaveBeenCalledOnce()
    expect(done.mock.calls[0]![0]).toMatchObject({ result: { added_count: 10 } })

    await vi.advanceTimersByTimeAsync(TASK_POLL_MS * 5)
    expect(calls).toHaveLength(2) // stopped polling
  })

  it('does not poll when nothing runs', async () => {
    const { calls } = mockApi(() => ok({ is_running: false }))
    const task = useTaskStore()
    await task.poll()
    expect(calls).toHaveLength(1)
    expect(task.running).toBe(false)
    expect(task.task).toBeNull()
    await vi.advanceTimersByTimeAsync(TASK_POLL_MS * 3)
    expect(calls).toHaveLength(1)
  })

  it('picks up a task started elsewhere on the first poll', async () => {
    const answers = [ok(running(1)), ok(finished)]
    mockApi(() => answers.shift() ?? ok(finished))
    const task = useTaskStore()
    const done = vi.fn()
    task.onFinished(done)
    await task.poll()
    expect(task.running).toBe(true)
    await vi.advanceTimersByTimeAsync(TASK_POLL_MS)
    expect(done).toHaveBeenCalledOnce()
  })

  it('reports a failing poll once and keeps polling', async () => {
    const answers = [json(500, { code: 'INTERNAL_SERVER_ERROR', message: 'boom' }), json(500, { code: 'INTERNAL_SERVER_ERROR', message: 'boom' }), ok(finished)]
    const { onError, calls } = mockApi(() => answers.shift() ?? ok(finished))
    const task = useTaskStore()
    task.track(running(0))
    await vi.advanceTimersByTimeAsync(TASK_POLL_MS)
    await vi.advanceTimersByTimeAsync(TASK_POLL_MS)
    await vi.advanceTimersByTimeAsync(TASK_POLL_MS)
    expect(calls).toHaveLength(3)
    expect(onError).toHaveBeenCalledOnce()
    expect(task.running).toBe(false)
  })

  it('stops on logout', async () => {
    const { calls } = mockApi(() => ok(running(1)))
    const task = useTaskStore()
    task.track(running(0))
    task.stop()
    await vi.advanceTimersByTimeAsync(TASK_POLL_MS * 3)
    expect(calls).toHaveLength(0)
    expect(task.status).toBeNull()
  })
})
