// The processes behind the browser tests: the mock upstream and the real gateway (SQLite in a
// temporary directory, the console embedded), and Debian's chromium driven by playwright-core.
// Everything listens on and talks to 127.0.0.1 only; every process started here is stopped by
// `stop()` and, should the test runner die first, by the exit and signal handlers.

import { spawn } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { chromium } from 'playwright-core'

/** The flags of the project's browser tests (shared/ARCHITECTURE.md, tests section). */
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

const children = new Set()
const tempDirs = new Set()

function killAll(signal = 'SIGTERM') {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
  }
}
process.on('exit', () => {
  killAll('SIGKILL')
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true })
})
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    killAll('SIGKILL')
    process.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 }[signal] ?? 0))
  })
}

/** Where cargo puts the debug binaries: GATEWAY_BIN / MOCK_BIN, else $CARGO_TARGET_DIR/debug. */
export function binaries(repoRoot) {
  const targetDir = process.env.CARGO_TARGET_DIR
    ? resolve(repoRoot, process.env.CARGO_TARGET_DIR)
    : join(repoRoot, 'target')
  const gateway = process.env.GATEWAY_BIN ?? join(targetDir, 'debug', 'gpt-load-gateway')
  const mock = process.env.MOCK_BIN ?? join(targetDir, 'debug', 'mock-upstream')
  for (const [name, path] of [
    ['gateway', gateway],
    ['mock upstream', mock],
  ]) {
    if (!existsSync(path)) {
      throw new Error(`the ${name} binary is missing at ${path} (run scripts/console-e2e.sh, or set GATEWAY_BIN / MOCK_BIN)`)
    }
  }
  return { gateway, mock }
}

/** A port nobody listens on right now (127.0.0.1). */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolvePort(port))
    })
  })
}

/** Starts a process whose stdout and stderr are kept (last 400 lines) for failure reports. */
function start(name, command, args, options) {
  const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  const lines = []
  const keep = (chunk) => {
    // eslint-disable-next-line no-control-regex
    for (const line of chunk.toString().replace(/\x1b\[[0-9;]*m/g, '').split('\n')) {
      if (line) lines.push(line)
    }
    if (lines.length > 400) lines.splice(0, lines.length - 400)
  }
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  const exited = new Promise((resolveExit) => child.once('exit', (code, signal) => resolveExit({ code, signal })))
  child.once('error', (e) => lines.push(`${name}: ${e.message}`))
  return { name, child, lines, exited }
}

async function stopProcess(p) {
  if (p.child.exitCode !== null || p.child.signalCode !== null) {
    children.delete(p.child)
    return
  }
  p.child.kill('SIGTERM')
  const done = await Promise.race([p.exited, sleep(10_000).then(() => null)])
  if (!done) {
    p.child.kill('SIGKILL')
    await p.exited
  }
  children.delete(p.child)
}

async function waitFor(what, check, timeoutMs, proc) {
  const deadline = Date.now() + timeoutMs
  let last = ''
  while (Date.now() < deadline) {
    if (proc && (proc.child.exitCode !== null || proc.child.signalCode !== null)) {
      throw new Error(`${proc.name} exited before ${what}:\n${proc.lines.slice(-30).join('\n')}`)
    }
    try {
      const v = await check()
      if (v) return v
    } catch (e) {
      last = e.message
    }
    await sleep(100)
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (${last})` : ''}`)
}

/**
 * The mock upstream on a port of its choosing and the gateway on a free port, with SQLite in a
 * new temporary directory (also the gateway's working directory, so no `.env` is read).
 */
export async function startStack({ repoRoot, adminKey }) {
  const bins = binaries(repoRoot)
  const dir = await mkdtemp(join(tmpdir(), 'gpt-load-console-e2e-'))
  tempDirs.add(dir)
  const procs = []
  const stack = {
    dir,
    adminKey,
    base: '',
    mockUrl: '',
    procs,
    /** The last lines each process printed. */
    logs(n = 40) {
      return procs.map((p) => `--- ${p.name} (last ${n} lines)\n${p.lines.slice(-n).join('\n')}`).join('\n')
    },
    async stop() {
      for (const p of procs.slice().reverse()) await stopProcess(p)
      await rm(dir, { recursive: true, force: true })
      tempDirs.delete(dir)
    },
  }
  try {
    const mock = start('mock-upstream', bins.mock, ['--host', '127.0.0.1', '--port', '0'], { cwd: dir })
    procs.push(mock)
    stack.mockUrl = await waitFor(
      'the mock upstream to listen',
      () => {
        const line = mock.lines.find((l) => l.includes('listening on '))
        return line ? line.slice(line.indexOf('listening on ') + 'listening on '.length).trim() : null
      },
      30_000,
      mock,
    )

    const port = await freePort()
    // A clean environment: no DATABASE_DSN, REDIS_DSN, ENCRYPTION_KEY or proxy of the caller's.
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? dir,
      HOST: '127.0.0.1',
      PORT: String(port),
      AUTH_KEY: adminKey,
      DATA_DIR: join(dir, 'data'),
      LOG_LEVEL: 'info',
      NO_PROXY: '*',
    }
    const gateway = start('gpt-load-gateway', bins.gateway, [], { cwd: dir, env })
    procs.push(gateway)
    stack.base = `http://127.0.0.1:${port}`
    await waitFor(
      'the gateway to answer /health',
      async () => (await fetch(`${stack.base}/health`)).ok,
      60_000,
      gateway,
    )
    return stack
  } catch (e) {
    await stack.stop()
    throw e
  }
}

/** Debian's chromium (CHROMIUM_PATH overrides /usr/bin/chromium), headless. */
export async function launchBrowser() {
  const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
  if (!existsSync(executablePath)) {
    throw new Error(`no chromium at ${executablePath} (apt-get install -y chromium, or set CHROMIUM_PATH)`)
  }
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_FLAGS, timeout: 60_000 })
}
