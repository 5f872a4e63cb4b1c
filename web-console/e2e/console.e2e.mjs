// The web console end to end: Debian's chromium (playwright-core) against the real gateway
// binary, with the console embedded, in front of the mock upstream. One admin session, step by
// step, asserting on what the pages show and cross-checking with the admin API.
//
//   npm run e2e            (after scripts/console-e2e.sh has built everything once)
//
// Environment: GATEWAY_BIN, MOCK_BIN (default $CARGO_TARGET_DIR/debug or ../target/debug),
// CHROMIUM_PATH (default /usr/bin/chromium).
// A full-page screenshot of every page goes to e2e/screenshots/<page>.png; a failing step
// leaves failure-<step>.png there and prints the step, the error and the processes' last lines.
// Timeouts are generous waits for a state, never assertions on how long something took.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, rm } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { launchBrowser, startStack } from './harness.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const repoRoot = resolve(here, '..', '..')
const SHOTS = join(here, 'screenshots')

// A fresh random admin key per run (a guessable one makes the gateway warn).
const ADMIN_KEY = `sk-e2e-${randomBytes(18).toString('base64url')}`
const GROUP = 'e2e-console'
const DISPLAY_NAME = 'E2E console group'
const PROXY_KEY = 'sk-e2e-proxy-key-0123456789'
const BAD_KEY = 'mock-401-e2e-always-fails'
const TEXT_KEYS = ['sk-e2e-text-key-0001', 'sk-e2e-text-key-0002', BAD_KEY]
const FILE_KEYS = ['sk-e2e-file-key-0003', 'sk-e2e-file-key-0004']
const ALL_KEYS = [...TEXT_KEYS, ...FILE_KEYS]
const REQUESTS = 10
const POLICY = 'e2e out of credit'
/** The rule the Policies page builds: a 400 whose body says insufficient_quota blacklists the key. */
const POLICY_RULE = {
  conditions: [
    { type: 'status_code', operator: 'in', values: [400] },
    { type: 'body', operator: 'regex', value: 'insufficient_quota' },
  ],
  action: 'invalidate',
}
const DESKTOP = { width: 1366, height: 900 }

/** Longest wait for one state (a flushed log, a persisted key status); never asserted. */
const WAIT_MS = 90_000
/** Longest time one step may take before it is reported as failed (with a screenshot). */
const STEP_MS = 240_000

let stack
let browser
let page
let failedStep = null
const pageErrors = []
const foreignRequests = []
const consoleLines = []
const state = { groupId: 0 }

const tid = (id) => `[data-testid="${id}"]`

async function shot(name, { keepToasts = false } = {}) {
  const path = join(SHOTS, `${name}.png`)
  if (!keepToasts) {
    // Toasts of earlier actions would cover the page; close them (best effort).
    await page.locator('.n-message .n-message__close').evaluateAll((els) => els.forEach((e) => e.click()))
    await page.locator('.n-message').first().waitFor({ state: 'detached', timeout: 5_000 }).catch(() => {})
  }
  await page.screenshot({ path, fullPage: true, animations: 'disabled' })
  return path
}

/** Polls `check` until it returns something truthy; `what` names the state in the failure. */
async function waitUntil(what, check, { timeout = WAIT_MS, interval = 500 } = {}) {
  const deadline = Date.now() + timeout
  let last
  for (;;) {
    try {
      const v = await check()
      if (v) return v
      last = v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last)
      throw new Error(`gave up waiting for ${what} (last: ${detail})`)
    }
    await sleep(interval)
  }
}

/** The admin API, as a script would call it: the envelope's `data`, or a thrown error. */
async function api(path, init = {}) {
  const res = await fetch(stack.base + path, {
    ...init,
    headers: { Authorization: `Bearer ${ADMIN_KEY}`, 'Content-Type': 'application/json', ...init.headers },
  })
  const body = await res.json()
  if (!res.ok || body.code !== 0) throw new Error(`${path}: HTTP ${res.status} ${JSON.stringify(body)}`)
  return body.data
}

async function setting(key) {
  for (const c of await api('/api/settings')) {
    for (const s of c.settings) if (s.key === key) return s.value
  }
  throw new Error(`no setting ${key}`)
}

/** The number a stat card shows (`1,234`, `12.5%` → 1234, 12.5). */
async function cardNumber(card, part = 'stat-value') {
  const text = await page.locator(`${tid(card)} ${tid(part)}`).innerText()
  const m = /-?\d[\d,]*(\.\d+)?/.exec(text)
  if (!m) return NaN
  return Number(m[0].replace(/,/g, ''))
}

async function keyRows() {
  return page.locator(`${tid('key-table')} [data-testid^="key-row-"]`).evaluateAll((rows) =>
    rows.map((r) => ({
      id: Number(r.getAttribute('data-testid').slice('key-row-'.length)),
      value: r.getAttribute('data-key-value'),
      status: r.getAttribute('data-key-status'),
    })),
  )
}

/** Reloads the key table the way a user does: the search button (an empty search). */
async function reloadKeyTable() {
  await Promise.all([
    page.waitForResponse((r) => r.url().includes('/api/keys?') && r.request().method() === 'GET'),
    page.click(tid('key-search-button')),
  ])
  await sleep(200)
}

/**
 * Chooses the option whose text contains `text` in a Naive UI select, and waits until the select
 * shows it (a click while the menu is still moving in can miss; then it tries again).
 */
async function chooseOption(selectTestId, text) {
  const select = page.locator(tid(selectTestId))
  const menu = page.locator('.n-base-select-menu:visible')
  await waitUntil(`"${text}" chosen in ${selectTestId}`, async () => {
    if ((await select.innerText()).includes(text)) return true
    if ((await menu.count()) === 0) await select.click()
    const option = menu.locator('.n-base-select-option', { hasText: text }).first()
    await option.waitFor({ timeout: 5_000 })
    await sleep(300) // the menu's enter transition
    await option.click({ timeout: 5_000 })
    await menu.first().waitFor({ state: 'hidden', timeout: 5_000 }).catch(() => {})
    return (await select.innerText()).includes(text)
  }, { timeout: 30_000 })
}

async function openGroup() {
  if (!page.url().includes('/keys')) await page.click(tid('nav-keys'))
  await page.click(tid(`group-item-${GROUP}`))
  await waitUntil('the group to be shown', async () =>
    (await page.locator(tid('group-info')).getAttribute('data-group-name')) === GROUP,
  )
  await page.locator(tid('key-table')).waitFor()
}

async function proxyChat(key, content) {
  return fetch(`${stack.base}/proxy/${GROUP}/v1/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }] }),
  })
}

/** One step of the session; after a failure the remaining steps are skipped. */
function step(name, fn) {
  it(name, { timeout: STEP_MS + 30_000 }, async (t) => {
    if (failedStep) {
      t.skip(`skipped: step "${failedStep}" failed`)
      return
    }
    let timer
    try {
      await Promise.race([
        fn(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`step did not finish within ${STEP_MS / 1000} s`)), STEP_MS)
        }),
      ])
    } catch (e) {
      failedStep = name
      let where = '(no screenshot: no page)'
      if (page) {
        where = await shot(`failure-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`).catch(
          (se) => `(screenshot failed: ${se.message})`,
        )
      }
      console.error(
        [
          '',
          `STEP FAILED: ${name}`,
          `  ${e instanceof Error ? e.message : String(e)}`,
          `  page: ${page ? page.url() : '-'}`,
          `  screenshot: ${where}`,
          pageErrors.length ? `  uncaught page errors: ${pageErrors.join(' | ')}` : '',
          `--- browser console (last 20)\n${consoleLines.slice(-20).join('\n')}`,
          stack ? stack.logs(30) : '',
        ].join('\n'),
      )
      throw e
    } finally {
      clearTimeout(timer)
    }
  })
}

describe('web console against the real gateway', { concurrency: false }, () => {
  before(async () => {
    await mkdir(SHOTS, { recursive: true })
    for (const f of await readdir(SHOTS)) if (f.endsWith('.png')) await rm(join(SHOTS, f))
    stack = await startStack({ repoRoot, adminKey: ADMIN_KEY })
    console.log(`gateway ${stack.base}, mock upstream ${stack.mockUrl}, data in ${stack.dir}`)
    browser = await launchBrowser()
    const context = await browser.newContext({ viewport: DESKTOP, locale: 'en-US', colorScheme: 'light' })
    // The console must not fetch anything but its own origin; anything else is refused and
    // reported by the last step.
    const origin = new URL(stack.base).origin
    await context.route(
      (url) => url.origin !== origin && !['data:', 'blob:'].includes(url.protocol),
      (route) => {
        foreignRequests.push(route.request().url())
        return route.abort()
      },
    )
    page = await context.newPage()
    page.setDefaultTimeout(30_000)
    page.on('pageerror', (e) => pageErrors.push(e.message))
    page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`))
  })

  after(async () => {
    await browser?.close().catch(() => {})
    await stack?.stop()
  })

  step('login: a wrong key is refused, the admin key opens the dashboard', async () => {
    await page.goto(`${stack.base}/`)
    await page.waitForURL(/\/login/)
    await page.locator(tid('login-key-input')).waitFor()
    await shot('login')

    await page.fill(tid('login-key-input'), 'sk-not-the-admin-key-000000')
    await page.click(tid('login-submit'))
    const error = page.locator(tid('login-error'))
    await error.waitFor()
    assert.match(await error.innerText(), /\S/, 'the login error says something')
    assert.match(page.url(), /\/login/, 'still on the login page')
    await shot('login-error')

    await page.fill(tid('login-key-input'), ADMIN_KEY)
    await page.click(tid('login-submit'))
    await page.waitForURL((u) => u.pathname === '/')
    await page.locator(tid('stat-card-key_count')).waitFor()
    assert.equal(await error.count(), 0, 'the login error is gone')
    await waitUntil('the stat cards to load', async () =>
      Number.isFinite(await cardNumber('stat-card-request_count')),
    )
    assert.equal(await cardNumber('stat-card-request_count'), 0, 'no requests yet')

    // The nodes card: a single node, which leads, as GET /api/cluster/status says.
    const status = await api('/api/cluster/status')
    const card = page.locator(tid('cluster-card'))
    await card.waitFor()
    assert.equal(await card.getAttribute('data-mode'), 'single')
    const node = page.locator(tid(`cluster-node-${status.node_id}`))
    assert.equal(await node.getAttribute('data-role'), 'leader', 'the single node leads')
    assert.ok((await node.innerText()).includes(status.nodes[0].address), 'the node shows its address')
  })

  step('create a standard group with the group form', async () => {
    await page.click(tid('nav-keys'))
    await page.locator(tid('no-groups')).waitFor()
    await page.click(tid('create-group-button'))
    const form = page.locator(tid('group-form'))
    await form.waitFor()

    // A URL the form refuses: the error is shown under the field, nothing is saved; cancel.
    await page.fill(tid('group-form-name'), GROUP)
    await page.fill(tid('group-form-upstream-url-0'), 'not a url')
    await page.click(tid('group-form-save'))
    const urlItem = page.locator('.n-form-item', { has: page.locator(tid('group-form-upstream-url-0')) })
    await urlItem.locator('.n-form-item-feedback--error').waitFor()
    assert.equal(await form.isVisible(), true, 'the form stays open')
    await page.click(tid('group-form-cancel'))
    await form.waitFor({ state: 'hidden' })
    assert.equal((await api('/api/groups')).length, 0, 'nothing was created')

    // Opened again, the form is empty; filled in properly this time.
    await page.click(tid('create-group-button'))
    await form.waitFor()
    assert.equal(await page.locator(tid('group-form-name')).inputValue(), '', 'a fresh form')
    await page.fill(tid('group-form-name'), GROUP)
    await page.fill(tid('group-form-display-name'), DISPLAY_NAME)
    await page.fill(tid('group-form-proxy-keys'), PROXY_KEY)
    await page.fill(tid('group-form-upstream-url-0'), stack.mockUrl)
    // Blacklist a key after one failure (the group's config override).
    await page.click(`${tid('group-form-advanced')} .n-collapse-item__header`)
    await page.click(tid('group-form-config-add'))
    await chooseOption('group-form-config-key-0', '(blacklist_threshold)')
    await page.fill(tid('group-form-config-value-0'), '1')
    await page.locator(tid('group-form-config-value-0')).blur()
    // An override the gateway refuses: its error is shown under that override's input only.
    await page.click(tid('group-form-config-add'))
    // Far down the (virtual) option list: filter it first.
    await page.click(tid('group-form-config-key-1'))
    await page.keyboard.type('failover_status')
    await chooseOption('group-form-config-key-1', '(failover_status_codes)')
    await page.fill(tid('group-form-config-value-1'), 'not-a-status')
    await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/groups') && r.request().method() === 'POST'),
      page.click(tid('group-form-save')),
    ])
    const formError = page.locator(tid('group-form-error'))
    await formError.waitFor()
    assert.equal(await formError.getAttribute('data-code'), 'VALIDATION_FAILED')
    await page
      .locator(`${tid('group-form-config-item-1')} .n-form-item-feedback--error`)
      .filter({ hasText: /not-a-status/ })
      .waitFor()
    assert.equal(
      await page.locator(`${tid('group-form-config-item-0')} .n-form-item-feedback--error`).count(),
      0,
      'the valid override shows no error',
    )
    assert.equal((await api('/api/groups')).length, 0, 'the refused group was not created')
    await page.click(tid('group-form-config-remove-1'))
    // The modal scrolls inside the window: a window as tall as the form shows all of it.
    const formHeight = await form.evaluate((e) => e.scrollHeight)
    await page.setViewportSize({ width: DESKTOP.width, height: Math.max(DESKTOP.height, formHeight + 120) })
    await shot('group-form')
    await page.setViewportSize(DESKTOP)

    await page.click(tid('group-form-save'))
    await form.waitFor({ state: 'hidden' })
    await page.locator(tid(`group-item-${GROUP}`)).waitFor()
    await waitUntil('the new group to be selected', async () =>
      (await page.locator(tid('group-info')).getAttribute('data-group-name')) === GROUP,
    )
    assert.match(await page.locator(tid('group-title')).innerText(), new RegExp(DISPLAY_NAME))
    assert.match(await page.locator(tid('group-endpoint')).innerText(), new RegExp(`/proxy/${GROUP}$`))
    await page.locator(tid('key-table-empty')).waitFor()

    const group = (await api('/api/groups')).find((g) => g.name === GROUP)
    assert.ok(group, 'the API lists the group')
    assert.equal(group.group_type, 'standard')
    assert.equal(group.channel_type, 'openai')
    assert.equal(group.display_name, DISPLAY_NAME)
    assert.equal(group.proxy_keys, PROXY_KEY)
    assert.deepEqual(
      group.upstreams.map((u) => [u.url, u.weight]),
      [[stack.mockUrl, 1]],
    )
    assert.equal(group.config.blacklist_threshold, 1)
    state.groupId = group.id
  })

  step('add keys from text, then from a .txt file, and see them in the key table', async () => {
    await page.click(tid('add-keys-button'))
    await page.locator(tid('add-keys-text')).fill(TEXT_KEYS.join('\n'))
    await page.click(tid('add-keys-submit'))
    await page.locator(tid('add-keys-modal')).waitFor({ state: 'hidden' })
    await waitUntil('the import to finish', async () => !(await api('/api/tasks/status')).is_running)
    await page.locator(tid('task-progress')).waitFor({ state: 'hidden', timeout: WAIT_MS })
    await waitUntil('3 keys in the table', async () => (await keyRows()).length === 3)

    // The file tab: a file that is not .txt is refused in the form, a .txt file is imported.
    await page.click(tid('add-keys-button'))
    const modal = page.locator(tid('add-keys-modal'))
    // README: `add-keys-tab-file` is the tab; the console puts it on the tab's pane (rendered
    // only once the tab is active), so the tab itself is found by its name as a fallback.
    await page
      .locator(`${tid('add-keys-tab-file')}.n-tabs-tab, ${tid('add-keys-modal')} .n-tabs-tab[data-name="file"]`)
      .first()
      .click()
    await page.setInputFiles(tid('add-keys-file'), {
      name: 'keys.csv',
      mimeType: 'text/csv',
      buffer: Buffer.from('sk-not-imported\n'),
    })
    await page.locator(tid('add-keys-error')).waitFor()
    await page.setInputFiles(tid('add-keys-file'), {
      name: 'keys.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from(`${FILE_KEYS.join('\n')}\n${TEXT_KEYS[0]}\n`),
    })
    assert.equal(await page.locator(tid('add-keys-error')).count(), 0, 'the .txt file is accepted')
    await page.click(tid('add-keys-submit'))
    await modal.waitFor({ state: 'hidden' })
    await waitUntil('the file import to finish', async () => !(await api('/api/tasks/status')).is_running)
    await page.locator(tid('task-progress')).waitFor({ state: 'hidden', timeout: WAIT_MS })
    const rows = await waitUntil('5 keys in the table', async () => {
      const r = await keyRows()
      return r.length === ALL_KEYS.length ? r : null
    })
    assert.deepEqual(rows.map((r) => r.value).sort(), [...ALL_KEYS].sort())
    assert.ok(rows.every((r) => r.status === 'active'), 'every new key is active')
    await waitUntil('the group stats to count 5 keys', async () =>
      /\b5\b/.test(await page.locator(`${tid('group-stats-keys')} .value`).innerText()),
    )

    const status = await api('/api/tasks/status')
    assert.equal(status.task_type, 'KEY_IMPORT')
    const listed = await api(`/api/keys?group_id=${state.groupId}&page=1&page_size=50`)
    assert.equal(listed.pagination.total_items, ALL_KEYS.length)
  })

  step('proxied requests show on the dashboard', async () => {
    await page.click(tid('nav-dashboard'))
    await page.locator(tid('stat-card-request_count')).waitFor()

    const refused = await proxyChat('sk-wrong-proxy-key', 'refused')
    assert.equal(refused.status, 401, 'a wrong proxy key is refused')
    for (let i = 0; i < REQUESTS; i++) {
      const res = await proxyChat(PROXY_KEY, `hello ${i}`)
      const body = await res.json()
      assert.equal(res.status, 200, `request ${i}: ${JSON.stringify(body)}`)
      assert.ok(Array.isArray(body.choices) && body.choices.length > 0, `request ${i} has choices`)
    }

    const shown = await waitUntil(
      `the request count card to count ${REQUESTS} requests`,
      async () => {
        await page.click(tid('dashboard-refresh'))
        await sleep(800)
        const n = await cardNumber('stat-card-request_count')
        return n >= REQUESTS ? n : null
      },
      { interval: 1000 },
    )
    // The cards show what the API says (once the log writer has written everything).
    await waitUntil('the cards to match GET /api/dashboard/stats', async () => {
      const stats = await api('/api/dashboard/stats')
      await page.click(tid('dashboard-refresh'))
      await sleep(800)
      return (
        (await cardNumber('stat-card-request_count')) === stats.request_count.value &&
        (await cardNumber('stat-card-error_rate')) === stats.error_rate.value &&
        (await cardNumber('stat-card-key_count')) === stats.key_count.value
      )
    })
    assert.ok(shown >= REQUESTS)
    // Active keys, with the invalid ones (the blacklisted mock-401 key) as the card's sub-value.
    await waitUntil('the key card to show 4 active keys and 1 invalid', async () => {
      await page.click(tid('dashboard-refresh'))
      await sleep(800)
      return (
        (await cardNumber('stat-card-key_count')) === ALL_KEYS.length - 1 &&
        (await cardNumber('stat-card-key_count', 'stat-sub-value')) === 1
      )
    })

    // The chart: the page loaded the all-groups chart; choosing the group reloads it for the group.
    await page.locator(`${tid('request-chart')} canvas`).waitFor()
    const [chartRes] = await Promise.all([
      page.waitForResponse((r) => r.url().includes('/api/dashboard/chart') && r.url().includes(`groupId=${state.groupId}`)),
      chooseOption('chart-group-select', DISPLAY_NAME),
    ])
    const chart = (await chartRes.json()).data
    const total = chart.datasets.reduce((a, d) => a + d.data.reduce((x, y) => x + y, 0), 0)
    assert.ok(total >= REQUESTS, `the group's chart counts the requests (${total})`)
    const box = await page.locator(`${tid('request-chart')} canvas`).boundingBox()
    assert.ok(box && box.width > 100 && box.height > 100, 'the chart is drawn')
    await shot('dashboard')
  })

  step('the logs page lists the requests, the failed attempt and its detail', async () => {
    await page.click(tid('nav-logs'))
    await page.locator(tid('logs-table')).waitFor()
    await page.fill(tid('logs-filter-group_name'), GROUP)
    const rows = page.locator(`${tid('logs-table')} [data-testid^="log-row-"]`)
    await waitUntil(
      `${REQUESTS} log rows of the group`,
      async () => {
        await page.click(tid('logs-search'))
        await sleep(800)
        return (await rows.count()) >= REQUESTS
      },
      { interval: 1000 },
    )
    const logs = await api(`/api/logs?group_name=${GROUP}&page=1&page_size=100`)
    assert.ok(logs.pagination.total_items >= REQUESTS + 1, 'every final request and the failed attempt are logged')
    assert.equal(await rows.count(), Math.min(logs.pagination.total_items, 15), 'the first page is full')
    assert.match(await rows.first().innerText(), new RegExp(GROUP))
    await shot('logs')

    // Failed attempts only: the mock-401 key's, shown with its key once keys are revealed.
    await chooseOption('logs-filter-is_success', 'Failure')
    await page.click(tid('logs-search'))
    await waitUntil('only failed attempts listed', async () => {
      const n = await rows.count()
      if (n === 0) return false
      const texts = await rows.allInnerTexts()
      return texts.every((t) => /\b401\b/.test(t))
    })
    await page.click(tid('logs-toggle-keys'))
    await waitUntil('the failing key in the row', async () => (await rows.first().innerText()).includes(BAD_KEY))
    await rows.first().locator('[data-testid^="log-detail-"]').click()
    const detail = page.locator(tid('log-detail'))
    await detail.waitFor()
    assert.match(await detail.innerText(), new RegExp(BAD_KEY))
    assert.match(await page.locator(tid('log-detail-error')).innerText(), /\S/, 'the error is shown')
    await page.keyboard.press('Escape')
    await detail.waitFor({ state: 'hidden' })
    await page.click(tid('logs-reset'))
  })

  step('the usage page adds up the tokens of the requests, per key and per model', async () => {
    await page.click(tid('nav-usage'))
    await page.locator(tid('usage-card-requests')).waitFor()
    await chooseOption('usage-group', DISPLAY_NAME)
    // The mock reports usage on every chat answer; the page shows what GET /api/usage says.
    const usage = await waitUntil('the group\'s usage to count every request', async () => {
      const now = new Date()
      const from = new Date(now.getTime() - 24 * 3600_000)
      const query = `group_id=${state.groupId}&start_time=${from.toISOString()}&end_time=${now.toISOString()}`
      const report = await api(`/api/usage?${query}`)
      return report.totals.requests >= REQUESTS && report.totals.prompt_tokens > 0 ? report : null
    })
    await waitUntil('the cards to show the totals', async () => {
      await page.click(tid('usage-refresh'))
      await sleep(800)
      const card = page.locator(tid('usage-card-prompt'))
      return Number(await card.getAttribute('data-value')) >= usage.totals.prompt_tokens
    })
    const requests = Number(await page.locator(tid('usage-card-requests')).getAttribute('data-value'))
    assert.ok(requests >= REQUESTS, `the requests card counts the requests (${requests})`)
    const keyRows = page.locator(`${tid('usage-top-keys')} [data-testid^="usage-key-"]`)
    await keyRows.first().waitFor()
    assert.ok((await keyRows.count()) >= 2, 'the requests spread over several keys')
    assert.match(await keyRows.first().innerText(), /\*\*\*\*/, 'keys are masked')
    const peak = Number(await keyRows.first().locator(tid('usage-peak-rpm')).innerText())
    assert.ok(peak >= 1, `the busiest key's peak RPM is shown (${peak})`)
    await page.locator(tid('usage-model-gpt-4o-mini')).waitFor()
    const box = await page.locator(`${tid('usage-chart')} canvas`).boundingBox()
    assert.ok(box && box.width > 100 && box.height > 100, 'the chart is drawn')
    await shot('usage')
  })

  step('the failing key is blacklisted, shown invalid, and restored from the UI', async () => {
    await openGroup()
    await waitUntil(
      'the mock-401 key shown as invalid',
      async () => {
        await reloadKeyTable()
        const rows = await keyRows()
        return rows.find((r) => r.value === BAD_KEY)?.status === 'invalid'
      },
      { interval: 1000 },
    )
    const rows = await keyRows()
    for (const r of rows) if (r.value !== BAD_KEY) assert.equal(r.status, 'active', `${r.value} stays active`)
    const bad = rows.find((r) => r.value === BAD_KEY)

    await page.click(tid('key-status-invalid'))
    await waitUntil('the invalid filter to list only the failing key', async () => {
      const r = await keyRows()
      return r.length === 1 && r[0].value === BAD_KEY
    })
    await page.click(tid('key-status-all'))
    await waitUntil('all keys listed again', async () => (await keyRows()).length === ALL_KEYS.length)
    await page.locator(tid(`key-restore-${bad.id}`)).waitFor()
    const invalid = await api(`/api/keys?group_id=${state.groupId}&status=invalid&page=1&page_size=50`)
    assert.deepEqual(invalid.items.map((k) => k.key_value), [BAD_KEY])
    assert.ok(invalid.items[0].failure_count >= 1)
    await shot('keys')

    await page.click(tid(`key-restore-${bad.id}`))
    await waitUntil('the restored key shown as active', async () => {
      const r = (await keyRows()).find((k) => k.value === BAD_KEY)
      return r?.status === 'active'
    })
    assert.equal(await page.locator(tid(`key-restore-${bad.id}`)).count(), 0, 'no restore button any more')
    const active = await api(`/api/keys?group_id=${state.groupId}&status=active&page=1&page_size=50`)
    assert.equal(active.pagination.total_items, ALL_KEYS.length, 'the API lists every key active')
  })

  step('settings: a change is applied, a bad value is refused with its field', async () => {
    await page.click(tid('nav-settings'))
    const retention = page.locator(tid('setting-request_log_retention_days'))
    await retention.waitFor()
    assert.equal(await retention.inputValue(), String(await setting('request_log_retention_days')))
    await retention.fill('14')
    await retention.blur()
    await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/settings') && r.request().method() === 'PUT'),
      page.click(tid('settings-save')),
    ])
    await waitUntil('GET /api/settings to say 14', async () => (await setting('request_log_retention_days')) === 14)
    await page.reload()
    await retention.waitFor()
    await waitUntil('the reloaded page to show 14', async () => (await retention.inputValue()) === '14')

    // Refused by the form: an empty whole-number field.
    const retries = page.locator(tid('setting-max_retries'))
    await retries.fill('')
    await retries.blur()
    await page.click(tid('settings-save'))
    await page
      .locator(`${tid('setting-item-max_retries')} .n-form-item-feedback--error`)
      .filter({ hasText: /whole number/i })
      .waitFor()
    await page.click(tid('settings-reset'))
    await waitUntil('the reset form', async () => (await retries.inputValue()) === String(await setting('max_retries')))
    // The reset clears the field's error; it fades out before it leaves the page, and a loaded
    // machine can still show it when the next save's errors are counted.
    await page
      .locator(`${tid('setting-item-max_retries')} .n-form-item-feedback--error`)
      .waitFor({ state: 'detached' })

    // Refused by the gateway: the error names each bad field and is shown under each.
    const codes = page.locator(tid('setting-failover_status_codes'))
    const proxyUrl = page.locator(tid('setting-proxy_url'))
    const before = await setting('failover_status_codes')
    const proxyBefore = await setting('proxy_url')
    await codes.fill('not-a-status')
    await proxyUrl.fill('nonsense')
    await page.click(tid('settings-save'))
    const error = page.locator(tid('settings-error'))
    await error.waitFor()
    assert.equal(await error.getAttribute('data-code'), 'VALIDATION_FAILED')
    assert.equal(await error.getAttribute('data-field'), 'failover_status_codes')
    await page
      .locator(`${tid('setting-item-failover_status_codes')} .n-form-item-feedback--error`)
      .filter({ hasText: /not-a-status/ })
      .waitFor()
    await page
      .locator(`${tid('setting-item-proxy_url')} .n-form-item-feedback--error`)
      .filter({ hasText: /must be a URL/ })
      .waitFor()
    assert.equal(
      await page.locator(`${tid('settings-form')} .n-form-item-feedback--error`).count(),
      2,
      'no other setting shows an error',
    )
    await shot('settings-validation')
    assert.equal(await setting('failover_status_codes'), before, 'the bad value was not stored')
    assert.equal(await setting('proxy_url'), proxyBefore, 'nor the other one')

    await page.click(tid('settings-reset'))
    await error.waitFor({ state: 'hidden' })
    assert.equal(await codes.inputValue(), before)
    assert.equal(await proxyUrl.inputValue(), proxyBefore)
    await shot('settings')
  })

  step('policies: a rule is tried on a sample answer, saved and listed', async () => {
    await page.click(tid('nav-policies'))
    await page.locator(tid('policies-page')).waitFor()
    await page.locator(tid('policy-list-empty')).waitFor()
    await page.click(tid('policy-new'))
    const editor = page.locator(tid('policy-editor'))
    await editor.waitFor()
    await page.fill(tid('policy-form-name'), POLICY)
    // A new policy starts with one rule of one condition: status_code in [...]; a value is typed,
    // then Enter makes it a tag.
    await page.fill(tid('policy-cond-values-input-0-0'), '400')
    await page.press(tid('policy-cond-values-input-0-0'), 'Enter')
    await page.locator(tid('policy-cond-tag-0-0-0')).filter({ hasText: '400' }).waitFor()
    await page.click(tid('policy-cond-add-0'))
    await chooseOption('policy-cond-type-0-1', 'body')
    await chooseOption('policy-cond-op-0-1', 'regex')
    await page.fill(tid('policy-cond-value-0-1'), 'insufficient_quota')
    await chooseOption('policy-rule-action-0', 'invalidate')

    // The dry run: the sample body is OpenAI's insufficient_quota error; its status made 400.
    const sampleBody = await page.locator(tid('policy-test-body')).inputValue()
    assert.match(sampleBody, /insufficient_quota/, 'the sample is prefilled')
    await page.fill(tid('policy-test-status'), '400')
    await page.locator(tid('policy-test-status')).blur()
    const [tested] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/policies/test') && r.request().method() === 'POST'),
      page.click(tid('policy-test-run')),
    ])
    assert.equal(tested.status(), 200, `the dry run: ${await tested.text()}`)
    assert.deepEqual(JSON.parse(tested.request().postData()).config, { rules: [POLICY_RULE] }, 'the rule as built')
    const result = page.locator(tid('policy-test-result'))
    await result.waitFor()
    assert.equal(await result.getAttribute('data-matched'), 'true')
    assert.equal(await result.getAttribute('data-outcome'), 'invalidate')
    assert.match(await page.locator(tid('policy-test-verdict')).innerText(), /→ invalidate/)
    // What the built-in rules alone decide, as the API says it.
    const direct = await api('/api/policies/test', {
      method: 'POST',
      body: JSON.stringify({ config: { rules: [POLICY_RULE] }, sample: { status: 400, body: sampleBody } }),
    })
    assert.equal(direct.outcome, 'invalidate')
    assert.ok(
      (await page.locator(tid('policy-test-builtin')).innerText()).includes(direct.builtin_outcome),
      'the built-in outcome is shown',
    )
    // The modal scrolls inside the window: a window as tall as the editor shows all of it.
    const editorHeight = await editor.evaluate((e) => e.scrollHeight)
    await page.setViewportSize({ width: DESKTOP.width, height: Math.max(DESKTOP.height, editorHeight + 120) })
    await shot('policy-editor')
    await page.setViewportSize(DESKTOP)

    await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/policies') && r.request().method() === 'POST'),
      page.click(tid('policy-editor-save')),
    ])
    await editor.waitFor({ state: 'hidden' })
    const row = page.locator(`[data-policy-name="${POLICY}"]`)
    await row.waitFor()
    assert.match(await row.locator(tid('policy-rule-count')).innerText(), /^1 rule/)
    const stored = (await api('/api/policies')).find((p) => p.name === POLICY)
    assert.ok(stored, 'the API lists the policy')
    assert.deepEqual(stored.config, { rules: [POLICY_RULE] })
    assert.equal(stored.type, 'retry')
    assert.equal(stored.is_active, true)
    assert.deepEqual(stored.group_ids, [])
    await shot('policies')
  })

  step('the keys page at phone width (390 px)', async () => {
    await openGroup()
    await page.setViewportSize({ width: 390, height: 844 })
    try {
      await page.locator(tid('nav-menu-toggle')).waitFor()
      await page.locator(tid('group-list-toggle')).waitFor()
      assert.equal(await page.locator(`header ${tid('nav-keys')}`).count(), 0, 'the header nav moved into the menu')
      await waitUntil('the key cards in one column', async () => {
        const boxes = await page
          .locator(`${tid('key-table')} [data-testid^="key-row-"]`)
          .evaluateAll((rows) => rows.map((r) => r.getBoundingClientRect().left))
        return boxes.length === ALL_KEYS.length && new Set(boxes.map(Math.round)).size === 1
      })
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
      assert.ok(overflow <= 1, `the page does not scroll sideways (${overflow} px too wide)`)
      await shot('keys-mobile')

      await page.click(tid('group-list-toggle'))
      const item = page.locator(`.n-drawer ${tid(`group-item-${GROUP}`)}`)
      await item.waitFor()
      await item.click()
      await item.waitFor({ state: 'hidden' })
    } finally {
      await page.setViewportSize(DESKTOP)
    }
  })

  step('delete the group by typing its name', async () => {
    await openGroup()
    await page.click(tid('delete-group-button'))
    const confirm = page.locator(tid('delete-group-confirm'))
    await confirm.waitFor()
    assert.equal(await confirm.isDisabled(), true, 'disabled before the name is typed')
    await page.fill(tid('delete-group-input'), GROUP.slice(0, -1))
    assert.equal(await confirm.isDisabled(), true, 'disabled for a wrong name')
    await page.fill(tid('delete-group-input'), GROUP)
    await waitUntil('the delete button to be enabled', async () => !(await confirm.isDisabled()))
    await confirm.click()
    await page.locator(tid(`group-item-${GROUP}`)).waitFor({ state: 'detached' })
    await page.locator(tid('no-groups')).waitFor()
    assert.equal(await page.locator(tid('group-list-empty')).count(), 1, 'the group list is empty')
    assert.deepEqual(await api('/api/groups'), [])
    // The group no longer proxies: its key is refused, and a global proxy key learns it is gone
    // (docs/ARCHITECTURE.md: 404 only for holders of a global proxy key).
    assert.equal((await proxyChat(PROXY_KEY, 'after delete')).status, 401, "the group's key is refused")
    const globalKey = String(await setting('proxy_keys')).split(',')[0].trim()
    assert.equal((await proxyChat(globalKey, 'after delete')).status, 404, 'the group is unknown')
  })

  step('no uncaught page errors, no request outside the gateway', async () => {
    assert.deepEqual(pageErrors, [], 'uncaught errors in the page')
    assert.deepEqual(foreignRequests, [], 'requests to other origins')
  })
})
