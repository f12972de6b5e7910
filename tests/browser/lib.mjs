// Helpers for the Chromium end-to-end tests: start the noom server binary,
// launch headless Chromium (Debian's package) with playwright-core, poll.

import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const artifactsDir = process.env.NOOM_ARTIFACTS_DIR || path.join(repoRoot, 'target', 'test-artifacts');
export const noomBin = process.env.NOOM_BIN || path.join(repoRoot, 'target', 'debug', 'noom');
export const chromiumBin = process.env.CHROMIUM_BIN || '/usr/lib/chromium/chromium';

// Servers started by this process; killed if the test runner is terminated
// (scripts/test.sh wraps suites in `timeout`). coturn.mjs and netns.mjs add
// theirs.
export const liveServers = new Set();
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.once(sig, () => {
    for (const proc of liveServers) proc.kill('SIGKILL');
    process.exit(128 + (sig === 'SIGTERM' ? 15 : 2));
  });
}

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
];

export function randomRoom(prefix = 'room') {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Polls `fn` (sync or async) until it returns a truthy value and returns that
// value; throws with `describe()` (the last observed state) on timeout.
export async function waitFor(fn, { timeout = 60_000, interval = 250, what = 'condition', describe } = {}) {
  const deadline = Date.now() + timeout;
  let lastError;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      let detail = '';
      if (describe) {
        try {
          detail = `\nlast state: ${await describe()}`;
        } catch (err) {
          detail = `\n(describe failed: ${err.message})`;
        }
      }
      if (lastError) detail += `\nlast error: ${lastError.stack || lastError}`;
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${detail}`);
    }
    await sleep(interval);
  }
}

// A digest of a noisy server log: WARN/ERROR lines grouped by message
// (numbers and ids masked), most frequent first.
function digestLine(digest, line) {
  const m = line.match(/\b(WARN|ERROR)\b\s+(.*)$/);
  if (!m) return;
  const key = `${m[1]} ${m[2].replace(/[0-9a-f]{8,}|\d+/gi, 'N').slice(0, 200)}`;
  digest.set(key, (digest.get(key) || 0) + 1);
}

function formatDigest(digest, top = 15) {
  return [...digest.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, n]) => `${String(n).padStart(7)}x ${k}`)
    .join('\n');
}

// Starts the server on a free loopback port. Returns { url, port, logs(),
// logTail(n), stop() }. Its output goes to <artifacts>/<label>-server.log too.
// `options.args`: extra command-line arguments (e.g. ['--config', file]);
// `options.port`: listen on this port (a restart on the same address).
export async function startServer(label, extraEnv = {}, options = {}) {
  mkdirSync(artifactsDir, { recursive: true });
  const port = options.port || (await freePort());
  const logPath = path.join(artifactsDir, `${label}-server.log`);
  const logFile = createWriteStream(logPath);
  const lines = [];
  const digest = new Map();
  const env = {
    ...process.env,
    NOOM_HTTP_LISTEN: `127.0.0.1:${port}`,
    NOOM_MEDIA_BIND_IPS: '127.0.0.1',
    NOOM_MEDIA_PORT: '0',
    NO_COLOR: '1',
    NOOM_LOG_LEVEL: process.env.NOOM_LOG_LEVEL || 'info',
    ...extraEnv,
  };
  const proc = spawn(options.bin || noomBin, options.args || [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  proc.on('error', (err) => {
    exited = exited || { error: err };
    lines.push(`[spawn error] ${err.message}`);
  });
  const collect = (stream) => {
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      logFile.write(chunk);
      buf += chunk;
      const parts = buf.split('\n');
      buf = parts.pop();
      for (const line of parts) digestLine(digest, line);
      lines.push(...parts);
      if (lines.length > 5000) lines.splice(0, lines.length - 5000);
    });
  };
  collect(proc.stdout);
  collect(proc.stderr);
  const killOnExit = () => proc.kill('SIGKILL');
  process.on('exit', killOnExit);
  liveServers.add(proc);

  const url = `http://127.0.0.1:${port}`;
  let logClosed = null;
  const closeLog = () => {
    logClosed = logClosed || new Promise((resolve) => logFile.end(resolve));
    return logClosed;
  };
  const server = {
    url,
    port,
    logPath,
    proc,
    logs: () => lines.slice(),
    logTail: (n = 80) => lines.slice(-n).join('\n'),
    logSummary: () => formatDigest(digest),
    // SIGKILL: the process dies at once, as in a crash (no `shutdown`
    // message, connections cut by the kernel).
    async kill() {
      process.off('exit', killOnExit);
      liveServers.delete(proc);
      if (!exited) {
        proc.kill('SIGKILL');
        await exitPromise;
      }
      await closeLog();
      return exited;
    },
    async stop() {
      process.off('exit', killOnExit);
      liveServers.delete(proc);
      if (!exited) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exitPromise;
        clearTimeout(timer);
      }
      await closeLog();
      return exited;
    },
  };
  try {
    await waitFor(
      async () => {
        if (exited) throw new Error(`server exited early: ${JSON.stringify(exited)}`);
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
        return res.status === 200;
      },
      { timeout: 30_000, interval: 100, what: `${noomBin} to answer GET /healthz on ${url}` },
    );
  } catch (err) {
    await server.stop();
    throw new Error(`${err.message}\n--- server log (${logPath}) ---\n${server.logTail()}`);
  }
  return server;
}

// Keeps a helper process (redis-server, coturn) to the test run: killed if
// the test process exits. `exited()` is how it ended, or null while it
// runs; `stop()` kills it if needed, waits for it, and removes `dir`.
export function supervise(proc, dir) {
  let exited = null;
  const exitPromise = new Promise((resolve) => proc.on('exit', (code, signal) => resolve((exited = { code, signal }))));
  proc.on('error', (err) => (exited = exited || { error: err }));
  const killOnExit = () => proc.kill('SIGKILL');
  process.on('exit', killOnExit);
  liveServers.add(proc);
  const stop = async () => {
    process.off('exit', killOnExit);
    liveServers.delete(proc);
    if (!exited) {
      proc.kill('SIGKILL');
      await exitPromise;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  return { exited: () => exited, stop };
}

// A throwaway redis-server (Debian's) on a free loopback port, no
// persistence, for clustered servers: { url, stop() }.
export async function startRedis(label) {
  mkdirSync(artifactsDir, { recursive: true });
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'noom-redis-'));
  const logPath = path.join(artifactsDir, `${label}-redis.log`);
  const proc = spawn(
    process.env.REDIS_SERVER || '/usr/bin/redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', logPath],
    { stdio: 'ignore' },
  );
  const { exited, stop } = supervise(proc, dir);
  await waitFor(
    () =>
      new Promise((resolve, reject) => {
        if (exited()) return reject(new Error(`redis-server exited: ${JSON.stringify(exited())} (log ${logPath})`));
        const sock = net.connect(port, '127.0.0.1');
        sock.once('connect', () => sock.write('PING\r\n'));
        sock.once('data', (d) => {
          sock.destroy();
          resolve(d.toString().startsWith('+PONG'));
        });
        sock.once('error', () => resolve(false));
      }),
    { timeout: 15_000, interval: 100, what: `redis-server on port ${port}` },
  ).catch(async (err) => {
    await stop();
    throw err;
  });
  return { url: `redis://127.0.0.1:${port}/`, port, stop };
}

// Chromium arguments with `extra` appended; an extra flag replaces a default
// flag of the same name (e.g. '--use-fake-device-for-media-stream=device-count=3').
export function chromiumArgs(extra = []) {
  const flagName = (a) => a.split('=')[0];
  const overridden = new Set(extra.map(flagName));
  return [...CHROMIUM_ARGS.filter((a) => !overridden.has(flagName(a))), ...extra];
}

// A fresh persistent context (own profile dir) per simulated person, one page.
// `options.extraArgs`: more Chromium flags (see chromiumArgs);
// `options.executablePath`: what to run instead of Chromium itself (a
// wrapper that starts it in another network namespace, see netns.mjs).
export async function launchPerson(label, options = {}) {
  const userDataDir = mkdtempSync(path.join(os.tmpdir(), `noom-chromium-${label}-`));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: options.executablePath || chromiumBin,
    headless: true,
    args: chromiumArgs(options.extraArgs || []),
    viewport: { width: 1000, height: 700 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (err) => consoleLines.push(`[pageerror] ${err.stack || err.message}`));
  return {
    label,
    context,
    page,
    consoleLines,
    async close() {
      try {
        await context.close();
      } finally {
        rmSync(userDataDir, { recursive: true, force: true });
      }
    },
  };
}

// The page's window.noom state, JSON-friendly, for failure messages.
export async function pageState(page) {
  return page.evaluate(async () => {
    const n = window.noom;
    if (!n) return { error: 'window.noom missing' };
    let stats;
    try {
      stats = await n.stats();
    } catch (err) {
      stats = String(err);
    }
    return {
      state: n.state,
      you: n.you,
      participants: n.participants,
      remoteStreams: Object.fromEntries(
        Object.entries(n.remoteStreams).map(([id, s]) => [id, s.getTracks().map((t) => `${t.kind}:${t.readyState}${t.muted ? ':muted' : ''}`)]),
      ),
      connectionState: n.connectionState,
      iceConnectionState: n.iceConnectionState,
      signalingState: n.signalingState,
      offers: n.offers,
      answers: n.answers,
      errors: n.errors,
      iceErrors: n.iceErrors,
      left: n.left,
      log: n.log.slice(-40),
      stats,
    };
  });
}
