// The official E2B JavaScript SDK (npm `e2b`, unmodified) against a real
// `hearth serve` started here on 127.0.0.1 with its own state dir and token
// file, pointed at with exactly the variables a user sets: E2B_API_URL,
// E2B_SANDBOX_URL, E2B_API_KEY. Run through run.sh.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, openSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

const HEARTH = process.env.HEARTH_BIN
assert.ok(HEARTH, 'HEARTH_BIN must name the hearth binary')
const stateDir = mkdtempSync(join(tmpdir(), 'hearth-e2b-js-'))
const env = { ...process.env, HEARTH_STATE_DIR: stateDir }
const tokenFile = join(stateDir, 'tokens')
const logPath = join(stateDir, 'serve.log')
let server
const made = []

before(async () => {
  const tok = spawnSync(HEARTH, ['serve', 'token', 'create', '--token-file', tokenFile], { env, encoding: 'utf8' })
  assert.equal(tok.status, 0, tok.stderr)
  server = spawn(HEARTH, ['serve', '--listen', '127.0.0.1:0', '--token-file', tokenFile], {
    env,
    stdio: ['ignore', 'pipe', openSync(logPath, 'a')],
  })
  const first = await new Promise((resolve, reject) => {
    const rl = createInterface({ input: server.stdout })
    rl.once('line', resolve)
    server.once('exit', (c) => reject(new Error(`hearth serve exited (${c}): ${readFileSync(logPath, 'utf8').slice(-4000)}`)))
  })
  assert.match(first, /^listening on http:\/\/127\.0\.0\.1:\d+$/)
  const url = first.split(' ').pop()
  process.env.E2B_API_URL = url
  process.env.E2B_SANDBOX_URL = url
  process.env.E2B_API_KEY = tok.stdout.trim()
})

after(async () => {
  const { Sandbox } = await import('e2b')
  for (const id of made) {
    try {
      await Sandbox.kill(id)
    } catch {}
  }
  if (server) {
    server.kill('SIGTERM')
    await new Promise((r) => server.once('exit', r))
  }
  spawnSync(HEARTH, ['vm', 'clean', '--all'], { env })
})

test('create, getInfo, list, setTimeout, kill', async () => {
  const { Sandbox, SandboxNotFoundError } = await import('e2b')
  const tag = `js-${process.pid}-${Date.now()}`
  const sbx = await Sandbox.create({ timeoutMs: 120_000, metadata: { tag } })
  made.push(sbx.sandboxId)

  const info = await sbx.getInfo()
  assert.equal(info.sandboxId, sbx.sandboxId)
  assert.equal(info.templateId, 'base')
  assert.deepEqual(info.metadata, { tag })
  assert.equal(info.state, 'running')
  const life = (info.endAt - info.startedAt) / 1000
  assert.ok(life >= 119 && life <= 122, `lifetime ${life}`)

  const pages = Sandbox.list({ query: { metadata: { tag } } })
  const listed = []
  while (pages.hasNext) listed.push(...(await pages.nextItems()))
  assert.deepEqual(listed.map((s) => s.sandboxId), [sbx.sandboxId])

  await sbx.setTimeout(600_000)
  const moved = await sbx.getInfo()
  assert.ok(moved.endAt > info.endAt, `${moved.endAt} > ${info.endAt}`)

  assert.equal(await sbx.kill(), true)
  assert.equal(await Sandbox.kill(sbx.sandboxId), false)
  await assert.rejects(Sandbox.getInfo(sbx.sandboxId), SandboxNotFoundError)
})

test('a bad API key is an AuthenticationError', async () => {
  const { Sandbox, AuthenticationError } = await import('e2b')
  await assert.rejects(Sandbox.getInfo('whatever', { apiKey: 'not-the-token' }), AuthenticationError)
})

// Needs the envd gateway (process and filesystem services).
test('commands.run and files.write/read', async () => {
  const { Sandbox } = await import('e2b')
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  made.push(sbx.sandboxId)
  const r = await sbx.commands.run('echo hi')
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'hi\n')
  await sbx.files.write('/home/user/hello.txt', 'hello from js\n')
  assert.equal(await sbx.files.read('/home/user/hello.txt'), 'hello from js\n')
  assert.equal(await sbx.kill(), true)
})
