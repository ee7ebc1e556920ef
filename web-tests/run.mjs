// Tidemark's browser scenarios that wasm-bindgen-test cannot run: they reload pages, restart
// the browser, open two pages, shrink the quota, delete data under a running store and start
// the native reference server. Run by scripts/web-tests.sh, which builds what this needs:
//
//   node --experimental-websocket web-tests/run.mjs --pkg DIR --server BIN [--only a,b] [--port N]
//
// It serves DIR (the `wasm-bindgen --target web` output of this crate) with www/ from one
// fixed origin (http://127.0.0.1:PORT, a secure context, so OPFS and Web Locks work), drives
// the system's Chromium (/usr/bin/chromium; never a downloaded browser) through
// playwright-core on a persistent profile, and calls the wasm's exports (src/lib.rs) in
// dedicated workers. Every scenario prints `PASS <name>` or `FAIL <name>: why`; the exit
// status is non-zero if any failed. What each one proves, per file layer (opfs, idb):
//
// - reload-<layer>: everything whose `apply` returned is there after `page.reload()`, also when
//   the reload lands in the middle of an ingest: the stored rows are exactly seqs 1..=k of what
//   was written (checksum), k at least the last acknowledged seq, whole batches only, and the
//   conversation's held range committed with them.
// - restart-<layer>: the same after closing the browser and launching it on the same profile.
// - quota-<layer>: with the origin's quota cut to 4 MiB (CDP Storage.overrideQuotaForOrigin,
//   set in a fresh browser: Chromium reads it once per run for IndexedDB) an ingest fails
//   with code `Full` after thousands of messages; the store still reads; after a restart
//   with the quota back it holds exactly what was acknowledged (the failed batch left
//   nothing) and takes writes again.
// - eviction-<layer>: the site's data cleared under a running store (CDP
//   Storage.clearDataForOrigin; for idb also another page's indexedDB.deleteDatabase): the
//   next write fails with `Gone` within seconds (no hang, no silent success), and reopening
//   gives an empty store, not invented or stale rows (on OPFS in the next browser session:
//   the worker whose pool lost its directory answers `Gone`, and Chromium keeps the deleted
//   files' handles until the session ends).
// - two-contexts-<layer>: a second page opening a database another page owns gets `InUse` at
//   once; asked to wait, it gets the database when the owner closes it, and when the owner's
//   page is closed without closing it (the browser releases the Web Lock).
// - server-<layer>: the engine in the browser (tidemark::Client over WebStorage,
//   BrowserWsTransport, BrowserRuntime) syncs thousands of messages from `tidemark-server
//   serve`; a reload in the middle of the sync; after reopening it syncs to the end; the
//   stored messages equal the server's (seq, sender, content), no duplicates, no holes.
// - rtt: 8,192 sequential request round trips (ping) to `tidemark-server serve` from a
//   dedicated worker through the browser transport, beside the same from Node's WebSocket;
//   prints the means and the ratio.
// - bench: 100k messages through `apply` in batches of 1,000 on each layer, Strict and
//   Relaxed durability, then the same rows into sql.js 1.17.0 in the same page (in memory,
//   in transactions of 1,000, plus the export that persisting takes), with the ratio; prints
//   ms and messages/s (not a pass/fail check beyond completing and the row counts).

import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, option, sleep } from './common.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));


const PKG = resolve(option('pkg', join(here, 'pkg')));
const SERVER_BIN = option('server', null);
const PORT = Number(option('port', process.env.TIDEMARK_WEB_TESTS_PORT || 8765));
const ONLY = option('only', null)?.split(',');
const ORIGIN = `http://127.0.0.1:${PORT}`;
const ALL_LAYERS = ['opfs', 'idb'];
/** The layers this build of storage-web has (probed at start: `open` answers NoLayer). */
let LAYERS = ALL_LAYERS;

// ----- the one origin -----

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };

function serveFiles() {
  const server = createServer((req, res) => {
    const path = new URL(req.url, ORIGIN).pathname;
    const [root, rel] = path.startsWith('/pkg/')
      ? [PKG, path.slice('/pkg/'.length)]
      : path.startsWith('/sqljs/')
        ? [join(here, 'node_modules', 'sql.js', 'dist'), path.slice('/sqljs/'.length)]
        : [join(here, 'www'), path === '/' ? 'index.html' : path.slice(1)];
    const file = normalize(join(root, rel));
    if (!file.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = readFileSync(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(PORT, '127.0.0.1', () => ok(server));
  });
}

// ----- the browser, pages and workers -----

const profile = mkdtempSync(join(tmpdir(), 'tidemark-web-profile-'));
let context;

async function launch() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  return context;
}

/** Progress values reported by workers, by page and worker ("page:worker"), and who waits. */
const progress = new Map();
const progressWaiters = new Map();
const pageIds = new WeakMap();
let nextPageId = 1;
const progressKey = (page, worker) => `${pageIds.get(page)}:${worker}`;

async function newPage() {
  const page = await context.newPage();
  pageIds.set(page, nextPageId++);
  if (process.env.TIDEMARK_WEB_TESTS_CONSOLE) {
    // For debugging a scenario: what the page and its workers log, and their uncaught errors.
    page.on('console', (m) => console.log(`  [page ${pageIds.get(page)} ${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => console.log(`  [page ${pageIds.get(page)} error] ${e.message}`));
  }
  await page.exposeFunction('reportProgress', (worker, value) => {
    const key = progressKey(page, worker);
    progress.set(key, value);
    const waiter = progressWaiters.get(key);
    if (waiter && value >= waiter.at) {
      progressWaiters.delete(key);
      waiter.ok(value);
    }
  });
  await page.goto(`${ORIGIN}/`);
  await page.waitForFunction(() => window.harness);
  return page;
}

function progressOf(page, worker) {
  return progress.get(progressKey(page, worker));
}

/** Resolves once the worker reported progress >= `at`. */
function progressReaches(page, worker, at) {
  const key = progressKey(page, worker);
  if ((progress.get(key) ?? -1) >= at) return Promise.resolve(progress.get(key));
  return new Promise((ok) => progressWaiters.set(key, { at, ok }));
}

async function reload(page) {
  await page.reload();
  await page.waitForFunction(() => window.harness);
}

class HarnessError extends Error {
  constructor(fn, error) {
    super(`${fn}: ${error.code}: ${error.message}`);
    this.code = error.code;
  }
}

const spawnWorker = (page) => page.evaluate(() => window.harness.spawn());

/** Calls export `fn` in worker `worker` of `page`; throws HarnessError with the wasm's code. */
async function call(page, worker, fn, ...args) {
  const reply = await page.evaluate(([w, f, a]) => window.harness.call(w, f, a), [worker, fn, args]);
  if (!reply.ok) throw new HarnessError(fn, reply.error);
  return reply.value;
}

/** The same, with a progress callback as the export's last argument. */
async function callWithProgress(page, worker, fn, ...args) {
  progress.delete(progressKey(page, worker));
  const reply = await page.evaluate(([w, f, a]) => window.harness.call(w, f, a, true), [worker, fn, args]);
  if (!reply.ok) throw new HarnessError(fn, reply.error);
  return reply.value;
}

/** A page with one worker that opened `name` on `layer`. */
async function opened(name, layer, { wait = true, relaxed = false, page } = {}) {
  page ??= await newPage();
  const worker = await spawnWorker(page);
  await call(page, worker, 'open', name, layer, wait, relaxed);
  return { page, worker };
}

/** Deletes `name` on `layer` from a fresh worker, then opens it empty in a new page. */
async function freshlyOpened(name, layer) {
  await fresh(name, layer);
  return opened(name, layer);
}

/** Deletes `name` on `layer` from a fresh worker (so a scenario starts clean). */
async function fresh(name, layer) {
  const page = await newPage();
  const worker = await spawnWorker(page);
  await call(page, worker, 'delete_database', name, layer);
  await page.close();
}

function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, fail) => { timer = setTimeout(() => fail(new Error(`${what}: no answer within ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}


function check(condition, why) {
  if (!condition) throw new Error(why);
}

/** Checks that the store holds exactly seqs 1..=last of what `ingest` writes to `conv`. */
async function expectExactly(page, worker, conv, last, what) {
  const stats = await call(page, worker, 'stats', conv);
  const want = await call(page, worker, 'expected', conv, last);
  check(stats.messages === last && stats.last_seq === last,
    `${what}: ${stats.messages} messages up to seq ${stats.last_seq}, want 1..=${last}`);
  check(stats.holes === 0 && stats.duplicates === 0, `${what}: ${stats.holes} holes, ${stats.duplicates} duplicates`);
  check(stats.checksum === want, `${what}: checksum ${stats.checksum}, want ${want}: rows differ from what was written`);
  const held = last === 0 ? null : JSON.stringify([[1, last]]);
  check(last === 0 ? stats.held === null : JSON.stringify(stats.held) === held,
    `${what}: held ${JSON.stringify(stats.held)}, want ${held}`);
  return stats;
}

// ----- scenarios -----

const scenarios = [];
/** A scenario; `layer` names the one file layer it needs (skipped when the build lacks it). */
const scenario = (name, run, timeoutMs = 120_000) =>
  scenarios.push({ name, run, timeoutMs, layer: ALL_LAYERS.find((l) => name.endsWith(`-${l}`) || name.includes(`-${l}-`)) });

for (const layer of ALL_LAYERS) {
  scenario(`reload-${layer}`, async () => {
    const name = `reload-${layer}`;
    const conv = 'chat';
    let { page, worker } = await freshlyOpened(name, layer);
    const first = await call(page, worker, 'ingest', conv, 1, 2000, 200);
    check(first.error === null && first.committed === 2000, `ingest: ${JSON.stringify(first)}`);
    await reload(page);
    worker = await spawnWorker(page);
    await call(page, worker, 'open', name, layer, true, false);
    await expectExactly(page, worker, conv, 2000, 'after a reload');

    // A reload while batches are being applied: nothing acknowledged may be lost. The last
    // seq the old worker reported before the page died is the bar (reports still in flight
    // when it died only make the bar lower).
    const perBatch = 200;
    const planned = 1_000_000;
    const running = callWithProgress(page, worker, 'ingest', conv, 2001, planned, perBatch).catch(() => null);
    await within(30_000, 'ingest progress', progressReaches(page, worker, 2000 + 10 * perBatch));
    const ackedBefore = progressOf(page, worker);
    await reload(page);
    await running;
    const acked = progressOf(page, worker);
    worker = await spawnWorker(page);
    await call(page, worker, 'open', name, layer, true, false);
    const stats = await call(page, worker, 'stats', conv);
    check(stats.last_seq >= acked, `acknowledged up to seq ${acked}, stored only up to ${stats.last_seq}`);
    check(stats.last_seq < 2000 + planned, 'the ingest finished before the reload: not a reload mid-ingest');
    check(stats.last_seq % perBatch === 0, `stored up to seq ${stats.last_seq}: part of a batch`);
    await expectExactly(page, worker, conv, stats.last_seq, 'after a reload mid-ingest');
    await call(page, worker, 'close');
    await call(page, worker, 'delete_database', name, layer);
    await page.close();
    return `reload asked at seq ${ackedBefore}, last acknowledged ${acked}, stored ${stats.last_seq}`;
  });
}

// Both layers' data written before one restart, checked after it.
scenario('restart', async () => {
  const written = [];
  for (const layer of LAYERS) {
    const name = `restart-${layer}`;
    const { page, worker } = await freshlyOpened(name, layer);
    const result = await call(page, worker, 'ingest', 'chat', 1, 3000, 300);
    check(result.error === null, `ingest on ${layer}: ${JSON.stringify(result.error)}`);
    // Closed by the browser going away, not by the store.
    written.push(layer);
  }
  await context.close();
  await launch();
  for (const layer of LAYERS) {
    const name = `restart-${layer}`;
    const { page, worker } = await opened(name, layer);
    await expectExactly(page, worker, 'chat', 3000, `${layer} after a browser restart`);
    await call(page, worker, 'close');
    await call(page, worker, 'delete_database', name, layer);
    await page.close();
  }
  return `${written.join(' and ')} kept 3000 messages`;
});

for (const layer of ALL_LAYERS) {
  scenario(`quota-${layer}`, async () => {
    const name = `quota-${layer}`;
    const conv = 'chat';
    await fresh(name, layer);
    // Chromium reads an origin's quota for IndexedDB once, when the origin first uses it in a
    // browser run (checked here: with the override set after that, and even across a reopen
    // of the database, IndexedDB kept writing 60 MiB past a 3 MiB quota). So the quota is set
    // in a fresh browser before any page of the origin runs, and the check after it is done
    // in another fresh browser. A disk or a real quota running out needs none of this.
    await context.close();
    await launch();
    const blank = await context.newPage();
    const cdp = await context.newCDPSession(blank);
    const { usage } = await cdp.send('Storage.getUsageAndQuota', { origin: ORIGIN });
    const quota = Math.ceil(usage) + 4 * 1024 * 1024;
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: ORIGIN, quotaSize: quota });
    let full;
    let usageAfter;
    try {
      const { page, worker } = await opened(name, layer);
      full = await within(60_000, 'ingest into a full store', call(page, worker, 'ingest', conv, 1, 500_000, 500));
      usageAfter = (await cdp.send('Storage.getUsageAndQuota', { origin: ORIGIN })).usage;
      check(full.error !== null,
        `ingested ${full.committed} messages past a quota of ${quota} bytes without an error (usage before ${usage}, after ${usageAfter})`);
      check(full.error.code === 'Full', `the error is ${full.error.code} (${full.error.message}), want Full`);
      check(full.committed > 0, 'nothing was stored before the quota ran out: the quota is too small to test anything');
      // The store still serves reads at once, from what it committed.
      await expectExactly(page, worker, conv, full.last_seq, 'read right after Full');
      await call(page, worker, 'close');
    } finally {
      await cdp.send('Storage.overrideQuotaForOrigin', { origin: ORIGIN });
    }
    const acked = full.last_seq;
    await context.close();
    await launch();
    const { page, worker } = await opened(name, layer);
    await expectExactly(page, worker, conv, acked, 'after reopening');
    const again = await call(page, worker, 'ingest', conv, acked + 1, 500, 500);
    check(again.error === null, `a write with the quota back failed: ${JSON.stringify(again.error)}`);
    await call(page, worker, 'close');
    await call(page, worker, 'delete_database', name, layer);
    await page.close();
    return `Full after ${acked} messages (quota ${(quota / 1048576).toFixed(1)} MiB, usage before ${(usage / 1048576).toFixed(1)} MiB, at the error ${(usageAfter / 1048576).toFixed(1)} MiB)`;
  });
}

/** Ingests, runs `evict`, and expects the next write to fail with Gone and a reopen to be empty. */
async function evictionCase(name, layer, evict) {
  const conv = 'chat';
  const { page, worker } = await freshlyOpened(name, layer);
  const before = await call(page, worker, 'ingest', conv, 1, 1000, 250);
  check(before.error === null, `ingest: ${JSON.stringify(before.error)}`);
  await evict(page);
  // The next write: a typed failure within seconds, not a hang and not a success.
  const after = await within(15_000, 'the write after the eviction', call(page, worker, 'ingest', conv, 1001, 250, 250));
  const problems = [];
  if (after.error === null) problems.push('a write after the eviction succeeded (silently)');
  else if (after.error.code !== 'Gone') problems.push(`the write after the eviction failed with ${after.error.code} (${after.error.message}), want Gone`);
  const closed = await within(15_000, 'close after the eviction', call(page, worker, 'close')).then(() => null, (e) => e.message);
  if (closed !== null) {
    problems.push(`${closed} (the worker no longer answers)`);
    throw new Error(problems.join('; '));
  }
  // Reopening: an empty store (the engine resyncs it), never the old rows or the new one.
  // On OPFS the worker whose pool lost its directory refuses (Gone: its handles point at
  // deleted files). Chromium releases those handles only with the browser session: a reload
  // was not enough (a new worker's pool then fails with NoModificationAllowedError), so the
  // reopen happens after a browser restart.
  let reopened = { page, worker };
  if (layer === 'opfs') {
    const again = await call(page, worker, 'open', name, layer, true, false).then(() => null, (e) => e);
    if (again === null) problems.push('the worker that lost the OPFS directory opened it again');
    else if (again.code !== 'Gone') problems.push(`reopening in the same worker failed with ${again.code}, want Gone`);
    await context.close();
    await launch();
    reopened = await opened(name, layer);
  } else {
    await call(page, worker, 'open', name, layer, true, false);
  }
  const stats = await call(reopened.page, reopened.worker, 'stats', conv);
  const list = await call(reopened.page, reopened.worker, 'conversations');
  await call(reopened.page, reopened.worker, 'close');
  await call(reopened.page, reopened.worker, 'delete_database', name, layer);
  await reopened.page.close();
  if (stats.messages !== 0 || list.length !== 0) {
    problems.push(`the reopened store holds ${stats.messages} messages and ${list.length} conversations, want an empty store`);
  }
  check(problems.length === 0, problems.join('; '));
  return `Gone: ${after.error.message}`;
}

const clearData = (storageTypes) => async (page) => {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Storage.clearDataForOrigin', { origin: ORIGIN, storageTypes });
  await cdp.detach();
};

scenario('eviction-idb', () => evictionCase('evict-idb', 'idb', clearData('indexeddb')));
scenario('eviction-idb-deleteDatabase', () => evictionCase('evict-idb-del', 'idb', async () => {
  // Another page of the site deletes every IndexedDB database (as a "clear data" script would).
  const other = await newPage();
  const deleted = await within(15_000, 'indexedDB.deleteDatabase', other.evaluate(async () => {
    const names = (await indexedDB.databases()).map((d) => d.name);
    await Promise.all(names.map((n) => new Promise((ok, fail) => {
      const request = indexedDB.deleteDatabase(n);
      request.onsuccess = ok;
      request.onerror = () => fail(request.error);
    })));
    return names;
  }));
  check(deleted.length > 0, 'no IndexedDB database to delete');
  await other.close();
}));
scenario('eviction-opfs', () => evictionCase('evict-opfs', 'opfs', clearData('file_systems')));

for (const layer of ALL_LAYERS) {
  scenario(`two-contexts-${layer}`, async () => {
    const name = `two-${layer}`;
    const a = await freshlyOpened(name, layer);
    await call(a.page, a.worker, 'ingest', 'chat', 1, 100, 100);
    const pageB = await newPage();
    const b = await spawnWorker(pageB);
    const started = Date.now();
    const refused = await call(pageB, b, 'open', name, layer, false, false).then(() => null, (e) => e);
    const took = Date.now() - started;
    check(refused !== null, 'a second page opened a database another page owns');
    check(refused.code === 'InUse', `the second opener got ${refused.message}, want InUse`);
    check(took < 2000, `InUse took ${took} ms, want at once`);

    // Waiting: B gets the database when A closes it.
    let gotIt = false;
    const waiting = call(pageB, b, 'open', name, layer, true, false).then(() => { gotIt = true; });
    await sleep(500);
    check(!gotIt, 'a waiting opener got the database while its owner held it');
    await call(a.page, a.worker, 'close');
    await within(10_000, 'the waiting opener after the owner closed', waiting);
    await expectExactly(pageB, b, 'chat', 100, 'the waiter reads the owner\'s data');
    await call(pageB, b, 'close');

    // The owner's page closes without closing the store: the browser releases the lock.
    const c = await opened(name, layer, { page: a.page.isClosed() ? undefined : a.page });
    const b2 = await spawnWorker(pageB);
    gotIt = false;
    const waiting2 = call(pageB, b2, 'open', name, layer, true, false).then(() => { gotIt = true; });
    await sleep(500);
    check(!gotIt, 'a waiting opener got the database while its owner\'s page was open');
    await c.page.close();
    await within(10_000, 'the waiting opener after the owner\'s page closed', waiting2);
    await call(pageB, b2, 'ingest', 'chat', 101, 100, 100).then((r) => check(r.error === null, `write by the new owner: ${JSON.stringify(r.error)}`));
    await call(pageB, b2, 'close');
    await call(pageB, b2, 'delete_database', name, layer);
    await pageB.close();
    return `InUse in ${took} ms`;
  });
}

// ----- the reference server -----

function run(bin, args) {
  return new Promise((ok, fail) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('error', fail);
    child.on('exit', (code) => (code === 0 ? ok(out.trim()) : fail(new Error(`${bin} ${args.join(' ')}: exit ${code}: ${err}`))));
  });
}

/** `tidemark-server serve` on a free port; resolves with {url, stop}. */
function serveInbox(db) {
  return new Promise((ok, fail) => {
    const child = spawn(SERVER_BIN, ['serve', '--db', db, '--listen', '127.0.0.1:0', '--rate', '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: 'warn' },
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const found = /listening on (ws:\/\/\S+)/.exec(out);
      if (found) {
        ok({
          url: found[1],
          stop: () => new Promise((done) => { child.once('exit', done); child.kill('SIGINT'); }),
        });
      }
    });
    child.stderr.on('data', (d) => process.stderr.write(d));
    child.on('error', fail);
    child.on('exit', (code) => fail(new Error(`server exited with ${code}`)));
  });
}

/** A protocol v1 session from Node (docs/protocol.md): hello, then pipelined requests. */
async function session(url, user, device, token) {
  const ws = new WebSocket(url);
  const waiting = new Map();
  let welcome;
  const welcomed = new Promise((ok, fail) => { welcome = { ok, fail }; });
  ws.onmessage = ({ data }) => {
    const frame = JSON.parse(data);
    if (frame.type === 'welcome') welcome.ok();
    else if (frame.type === 'response') {
      waiting.get(frame.id)?.(frame.response);
      waiting.delete(frame.id);
    } else if (frame.type === 'error') welcome.fail(new Error(`${frame.code}: ${frame.message}`));
  };
  ws.onerror = () => welcome.fail(new Error(`cannot connect to ${url}`));
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onclose = () => fail(new Error('closed')); });
  ws.send(JSON.stringify({ type: 'hello', version: 1, user, device, token }));
  await welcomed;
  let nextId = 1;
  return {
    request(request) {
      const id = nextId++;
      return new Promise((ok) => {
        waiting.set(id, ok);
        ws.send(JSON.stringify({ type: 'request', id, request }));
      });
    },
    close() { ws.close(); },
  };
}

/** Sends `count` text messages to `conversation`, `window` in flight at once. */
async function sendMany(s, conversation, prefix, count, window = 200) {
  let next = 0;
  async function lane() {
    while (next < count) {
      const i = next++;
      const content = Buffer.from(`${prefix} says ${i}: ${'lorem ipsum '.repeat(i % 9)}`).toString('base64');
      const reply = await s.request({ Send: { conversation, client_msg_id: `${prefix}:${conversation}:${i}`, kind: 'Text', content, created_at: Date.now() } });
      check(reply.SendAck, `send refused: ${JSON.stringify(reply)}`);
    }
  }
  await Promise.all(Array.from({ length: window }, lane));
}

/** Every message of `conversation` as the server holds it, for `s`'s user. */
async function serverMessages(s, conversation) {
  const rows = [];
  let from = 1;
  for (;;) {
    const reply = await s.request({ Pull: { ranges: [{ conversation, from, to: 1e15 }] } });
    const range = reply.Pulled.ranges[0];
    if (!range) return rows;
    for (const m of range.messages) {
      rows.push({ seq: m.seq, sender: m.sender, content: Buffer.from(m.content, 'base64').toString('utf8') });
    }
    if (range.to >= range.max_seq) return rows;
    from = range.to + 1;
  }
}

let inbox;
async function theInbox() {
  if (inbox) return inbox;
  check(SERVER_BIN, 'no --server binary given');
  const dir = mkdtempSync(join(tmpdir(), 'tidemark-web-server-'));
  const db = join(dir, 'inbox.db');
  const alice = await run(SERVER_BIN, ['create-user', '--db', db, 'alice']);
  const bob = await run(SERVER_BIN, ['create-user', '--db', db, 'bob']);
  await run(SERVER_BIN, ['create-conversation', '--db', db, 'ab', '--kind', 'direct', 'alice', 'bob']);
  await run(SERVER_BIN, ['create-conversation', '--db', db, 'team', '--kind', 'group', 'alice', 'bob']);
  const server = await serveInbox(db);
  const started = Date.now();
  const asBob = await session(server.url, 'bob', 'node', bob);
  const asAlice = await session(server.url, 'alice', 'node', alice);
  await Promise.all([
    sendMany(asBob, 'ab', 'bob', 3000),
    sendMany(asAlice, 'ab', 'alice', 500),
    sendMany(asBob, 'team', 'bob', 1000),
    sendMany(asAlice, 'team', 'alice', 500),
  ]);
  asBob.close();
  const expected = { ab: await serverMessages(asAlice, 'ab'), team: await serverMessages(asAlice, 'team') };
  asAlice.close();
  check(expected.ab.length === 3500 && expected.team.length === 1500,
    `the server holds ${expected.ab.length} and ${expected.team.length} messages`);
  inbox = { ...server, dir, tokens: { alice, bob }, expected, seedMs: Date.now() - started };
  return inbox;
}

for (const layer of ALL_LAYERS) {
  scenario(`server-${layer}`, async () => {
    const server = await theInbox();
    const name = `sync-${layer}`;
    const device = `browser-${layer}`;
    let { page, worker } = await freshlyOpened(name, layer);
    const total = server.expected.ab.length + server.expected.team.length;
    const first = callWithProgress(page, worker, 'sync_from_server', server.url, 'alice', device, server.tokens.alice, 100)
      .then((r) => ({ finished: r }), (e) => ({ failed: e }));
    const seen = await within(60_000, 'sync progress', Promise.race([progressReaches(page, worker, 1500), first]));
    check(typeof seen === 'number', `the sync ended before the reload: ${JSON.stringify(seen)}`);
    await reload(page);
    await first;
    worker = await spawnWorker(page);
    await call(page, worker, 'open', name, layer, true, false);
    const partial = { ab: await call(page, worker, 'stats', 'ab'), team: await call(page, worker, 'stats', 'team') };
    const heldBefore = partial.ab.messages + partial.team.messages;
    check(heldBefore >= seen && heldBefore < total, `after the reload ${heldBefore} messages are stored (progress was ${seen}, total ${total})`);
    const rest = await within(120_000, 'the sync after the reload',
      callWithProgress(page, worker, 'sync_from_server', server.url, 'alice', device, server.tokens.alice, 100));
    for (const conv of ['ab', 'team']) {
      const stored = await call(page, worker, 'dump', conv);
      const want = server.expected[conv];
      check(stored.length === want.length, `${conv}: ${stored.length} messages stored, the server has ${want.length}`);
      for (let i = 0; i < want.length; i++) {
        const [s, w] = [stored[i], want[i]];
        check(s.seq === w.seq && s.sender === w.sender && s.content === w.content,
          `${conv}: stored ${JSON.stringify(s)} where the server has ${JSON.stringify(w)}`);
      }
      const stats = await call(page, worker, 'stats', conv);
      check(stats.holes === 0 && stats.duplicates === 0, `${conv}: ${stats.holes} holes, ${stats.duplicates} duplicates`);
      check(JSON.stringify(stats.held) === JSON.stringify([[1, want.length]]), `${conv}: held ${JSON.stringify(stats.held)}`);
    }
    await call(page, worker, 'close');
    await call(page, worker, 'delete_database', name, layer);
    await page.close();
    return `reloaded at ${seen} received (${heldBefore} stored), then ${rest.received} more in ${Math.round(rest.ms)} ms; ${total} equal the server's`;
  }, 240_000);
}

scenario('rtt', async () => {
  // Request round trips to the reference server: from a dedicated worker through Tidemark's
  // browser transport (wasm); as the baselines in the same run, a plain JavaScript WebSocket
  // in a worker of the same page (what the browser itself costs) and Node's own WebSocket
  // (no browser). The same protocol, one request in flight.
  const count = 8192;
  const server = await theInbox();
  const page = await newPage();
  const worker = await spawnWorker(page);
  const browser = await call(page, worker, 'ping_bench', server.url, 'alice', 'rtt-browser', server.tokens.alice, count);
  const plain = await page.evaluate(([u, t, n]) => window.harness.wsPings(u, 'alice', 'rtt-plain', t, n, 100),
    [server.url, server.tokens.alice, count]);
  if (!plain.ok) throw new HarnessError('wsPings', plain.error);
  await page.close();
  const node = await session(server.url, 'alice', 'rtt-node', server.tokens.alice);
  for (let i = 0; i < 100; i++) await node.request('Ping');
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    const response = await node.request('Ping');
    check(response?.Pong !== undefined, `node: ${JSON.stringify(response)}`);
  }
  const nodeMeanUs = ((performance.now() - started) * 1000) / count;
  node.close();
  const plainMeanUs = plain.value.mean_us;
  const lines = [
    `BENCH rtt browser worker -> server, ${count} sequential pings: mean ${Math.round(browser.mean_us)} µs, p50 ${Math.round(browser.p50_us)} µs, p99 ${Math.round(browser.p99_us)} µs (goal: mean < 200 µs)`,
    `BENCH rtt plain JavaScript WebSocket in a worker of the same page -> server, ${count} sequential pings: mean ${Math.round(plainMeanUs)} µs`,
    `BENCH rtt node WebSocket -> server, ${count} sequential pings: mean ${Math.round(nodeMeanUs)} µs`,
    `BENCH ratio rtt browser / plain worker WebSocket: ${(browser.mean_us / plainMeanUs).toFixed(2)}; browser / node: ${(browser.mean_us / nodeMeanUs).toFixed(2)}`,
  ];
  for (const line of lines) console.log(line);
  return `${browser.count} browser round trips, mean ${Math.round(browser.mean_us)} µs (plain worker WebSocket ${Math.round(plainMeanUs)} µs, node ${Math.round(nodeMeanUs)} µs)`;
}, 180_000);

scenario('bench', async () => {
  const lines = [];
  const strict = {};
  const total = 100_000;
  const perBatch = 1000;
  const page = await newPage();
  for (const layer of LAYERS) {
    for (const relaxed of [false, true]) {
      const name = `bench-${layer}-${relaxed ? 'relaxed' : 'strict'}`;
      const worker = await spawnWorker(page);
      await call(page, worker, 'delete_database', name, layer);
      await call(page, worker, 'open', name, layer, true, relaxed);
      const result = await call(page, worker, 'ingest', 'bench', 1, total, perBatch);
      check(result.error === null, `${name}: ${JSON.stringify(result.error)}`);
      const stats = await call(page, worker, 'stats', 'bench');
      check(stats.messages === total, `${name}: ${stats.messages} stored`);
      await call(page, worker, 'close');
      await call(page, worker, 'delete_database', name, layer);
      await page.evaluate((w) => window.harness.terminate(w), worker);
      const line = `BENCH ${layer.padEnd(4)} ${relaxed ? 'relaxed' : 'strict '} ${total} messages in batches of ${perBatch}: ${Math.round(result.ms)} ms, ${Math.round(total / (result.ms / 1000))} messages/s`;
      console.log(line);
      lines.push(line);
      if (!relaxed) strict[layer] = result.ms;
    }
  }
  // The brief's baseline, in the same page: sql.js inserting the same rows (in memory) and
  // exporting the database, which is how a sql.js app persists it.
  const worker = await spawnWorker(page);
  for (const exportEach of [false, true]) {
    const baseline = await page.evaluate(([w, n, b, e]) => window.harness.sqljs(w, 'bench', n, b, e),
      [worker, total, perBatch, exportEach]);
    check(baseline.ok, `sql.js: ${JSON.stringify(baseline.error)}`);
    const { insertMs, exportMs, bytes, count } = baseline.value;
    check(count === total, `sql.js stored ${count} rows`);
    const sqljsMs = insertMs + exportMs;
    const how = exportEach ? 'exported after every batch' : 'exported once at the end';
    const line = `BENCH sql.js 1.17.0 (in memory, ${how}) ${total} messages in batches of ${perBatch}: ${Math.round(insertMs)} ms inserts${exportEach ? ' and exports' : ''} + ${Math.round(exportMs)} ms final export (${bytes} bytes) = ${Math.round(sqljsMs)} ms, ${Math.round(total / (sqljsMs / 1000))} messages/s`;
    console.log(line);
    lines.push(line);
    for (const layer of LAYERS) {
      const ratio = `BENCH ratio sql.js (${how}) / tidemark ${layer} strict: ${(sqljsMs / strict[layer]).toFixed(2)} (goal >= 2)`;
      console.log(ratio);
      lines.push(ratio);
    }
  }
  await page.close();
  return `${lines.length} lines`;
}, 600_000);

// ----- main -----

async function layersOfThisBuild() {
  const page = await newPage();
  const worker = await spawnWorker(page);
  const have = [];
  for (const layer of ALL_LAYERS) {
    const answer = await call(page, worker, 'delete_database', 'probe', layer).then(() => null, (e) => e);
    if (answer?.code !== 'NoLayer') have.push(layer);
  }
  await page.close();
  return have;
}

async function main() {
  statSync(join(PKG, 'tidemark_web_tests_bg.wasm'));
  const files = await serveFiles();
  await launch();
  LAYERS = await layersOfThisBuild();
  let failed = 0;
  let ran = 0;
  let skipped = 0;
  for (const { name, run: body, timeoutMs, layer } of scenarios) {
    if (ONLY && !ONLY.some((o) => name.startsWith(o))) continue;
    if (layer && !LAYERS.includes(layer)) {
      console.log(`SKIP ${name}: this build of storage-web has no ${layer} layer`);
      skipped++;
      continue;
    }
    ran++;
    const started = Date.now();
    try {
      const note = await within(timeoutMs, name, body());
      console.log(`PASS ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)${note ? `: ${note}` : ''}`);
    } catch (err) {
      failed++;
      console.log(`FAIL ${name}: ${err.message.split('\n')[0]}`);
      // A failed scenario may leave pages behind; the next one starts from a clean browser.
      await context.close().catch(() => {});
      await launch();
    }
  }
  await context.close().catch(() => {});
  if (inbox) {
    await inbox.stop();
    rmSync(inbox.dir, { recursive: true, force: true });
  }
  files.close();
  rmSync(profile, { recursive: true, force: true });
  console.log(`web scenarios: ${ran - failed} passed, ${failed} failed, ${skipped} skipped`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((err) => {
  console.log(`FAIL harness: ${err.stack || err}`);
  process.exit(1);
});
