// A throwaway coturn (Debian's `turnserver`) for the TURN tests: the REST
// credential scheme (use-auth-secret) Noom mints credentials for, on a free
// port, its log in the artifacts directory. Started per test, killed after.

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { artifactsDir, freePort, supervise, waitFor } from './lib.mjs';

export const turnserverBin = process.env.TURNSERVER_BIN || '/usr/bin/turnserver';
export const TURN_REALM = 'noom.test';

// Starts coturn listening on `listenIps` (UDP and TCP, one port), relaying
// from 127.0.0.1 (where Noom's media sockets are: loopback peers are
// allowed, which production must never do). Resolves once every listener
// is open, read from its log rather than slept for. Returns { port, secret,
// logPath, log(), allocatedFor(user), refused(user), waitForLog(re), stop() }.
export async function startCoturn(label, { secret, listenIps = ['127.0.0.1'] } = {}) {
  mkdirSync(artifactsDir, { recursive: true });
  const port = await freePort();
  // Relay ports below Linux's ephemeral range (32768-60999), where Noom's
  // media sockets (port 0) and the browsers' land.
  const minPort = 20000 + Math.floor(Math.random() * 100) * 100;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'noom-coturn-'));
  const logPath = path.join(artifactsDir, `${label}-coturn.log`);
  rmSync(logPath, { force: true });
  const args = [
    '-n', // no configuration file
    ...listenIps.map((ip) => `--listening-ip=${ip}`),
    '--relay-ip=127.0.0.1',
    `--listening-port=${port}`,
    '--use-auth-secret',
    `--static-auth-secret=${secret}`,
    `--realm=${TURN_REALM}`,
    '--no-tls',
    '--no-dtls',
    // No NAT behavior discovery (RFC 5780): with two listening addresses
    // coturn would also bind listening-port + 1, a port nobody checked
    // free. In the ephemeral range, a browser's or the server's socket may
    // hold it: coturn then retries that bind for ever and never opens its
    // TCP listener on the second address (CI, turn.test.mjs: errno 98 on
    // 127.0.0.1:33894 with the listening port 33893).
    '--no-rfc5780',
    '--allow-loopback-peers',
    '--no-cli',
    `--min-port=${minPort}`,
    `--max-port=${minPort + 99}`,
    `--pidfile=${path.join(dir, 'turnserver.pid')}`,
    `--db=${path.join(dir, 'turndb')}`,
    `--log-file=${logPath}`,
    '--simple-log',
    '-v',
  ];
  const proc = spawn(turnserverBin, args, { stdio: 'ignore' });
  const { exited, stop } = supervise(proc, dir);

  const log = () => {
    try {
      return readFileSync(logPath, 'utf8');
    } catch {
      return '';
    }
  };
  const waitForLog = (re, what, timeout = 15_000) =>
    waitFor(
      () => {
        if (exited()) throw new Error(`turnserver exited: ${JSON.stringify(exited())}`);
        return re.test(log());
      },
      { timeout, interval: 100, what: `coturn to log ${what}`, describe: () => log().split('\n').slice(-20).join('\n') },
    );
  try {
    for (const ip of listenIps) {
      await waitForLog(new RegExp(`UDP listener opened on: ${ip.replace(/\./g, '\\.')}:${port}\\b`), `its UDP listener on ${ip}`);
      await waitForLog(new RegExp(`TCP listener opened on : ${ip.replace(/\./g, '\\.')}:${port}\\b`), `its TCP listener on ${ip}`);
    }
  } catch (err) {
    await stop();
    throw new Error(`${err.message}\n(turnserver ${args.join(' ')}; log ${logPath})`);
  }
  return {
    port,
    secret,
    logPath,
    log,
    waitForLog,
    // coturn (-v) logged a successful allocation for this TURN username.
    allocatedFor: (username) => log().includes(`user <${username}>: incoming packet ALLOCATE processed, success`),
    // ... or refused one with 401 (bad or expired credentials).
    refused: (username) => log().includes(`user <${username}>: incoming packet message processed, error 401`),
    stop,
  };
}
