// Headless Firefox ESR (Debian's `firefox-esr`) for the end-to-end tests,
// driven by puppeteer-core over WebDriver BiDi (no browser download), with
// Firefox's own fake camera and microphone. The person it returns has the
// same shape as lib.mjs's launchPerson: { label, page, consoleLines,
// close() }; `page` is a puppeteer Page, so tests stick to what both
// drivers share (goto, click, evaluate, $eval, $$eval, locator().fill()).
//
// Firefox gathers no ICE candidate at all in a network namespace without a
// default route (scripts/test.sh runs the browser suite in one with only
// loopback), and with its shipped settings it does not complete ICE with a
// server on 127.0.0.1: inFirefoxNetwork() gives a test file a namespace of
// its own with a default route and a non-loopback address for the server's
// media. See docs/browsers.md.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import puppeteer from 'puppeteer-core';
import { launchPerson } from './lib.mjs';

export const firefoxBin = process.env.FIREFOX_BIN || '/usr/bin/firefox-esr';

// Why: each pref is here because a test needs it. ICE is left as shipped
// (host candidates hidden behind mDNS names, no loopback), so the server
// meets Firefox as people run it.
export const FIREFOX_PREFS = {
  // Fake devices: a 1280x720 30 fps test pattern and a 1 kHz tone, no
  // permission prompt (headless has nobody to click it).
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.navigator.video.default_width': 1280,
  'media.navigator.video.default_height': 720,
  // Remote audio plays without a user gesture (0 = allowed), as the web
  // client's tiles expect; otherwise Firefox would block audible autoplay.
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
};

// Why Firefox cannot run here, or null.
export function firefoxUnavailable() {
  if (!existsSync(firefoxBin)) return `no Firefox at ${firefoxBin} (apt-get install firefox-esr, or set FIREFOX_BIN)`;
  return null;
}

// One person in their own headless Firefox (own temporary profile, removed
// on close). `options.prefs`: more or overriding Firefox prefs.
export async function launchFirefoxPerson(label, options = {}) {
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: firefoxBin,
    headless: true,
    extraPrefsFirefox: { ...FIREFOX_PREFS, ...(options.prefs || {}) },
    defaultViewport: { width: 1000, height: 700 },
  });
  const page = (await browser.pages())[0] || (await browser.newPage());
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (err) => consoleLines.push(`[pageerror] ${err.stack || err.message}`));
  return {
    label,
    browser,
    page,
    consoleLines,
    async close() {
      await browser.close();
    },
  };
}

// The address the namespace below gives itself; the server's media sockets
// bind to it.
const MEDIA_IP = '10.99.0.1';

// The one-time network of the namespace made below: a veth pair, both ends
// inside it, one end addressed, and a default route through the other.
// Nothing answers at the gateway; Firefox only needs the route to exist.
const FIREFOX_NAMESPACE_SETUP = [
  'set -e',
  'ip link set lo up',
  'ip link add noomfx0 type veth peer name noomfx1',
  `ip addr add ${MEDIA_IP}/24 dev noomfx0`,
  'ip link set noomfx0 up',
  'ip link set noomfx1 up',
  'ip route add default via 10.99.0.2',
  'exec "$@"',
].join('\n');

// Makes sure this test file runs where Firefox can call the server:
// - `{ mediaIp }`: go on in this process, the re-run inside the namespace
//   made for it; the server's media must bind to `mediaIp`;
// - `{ unavailable }`: why it cannot (making a namespace needs root);
// - `{ exitCode }`: this same file was re-run (same Node options and
//   environment, so node --test reads its report as usual) inside a new
//   namespace; the caller must define no tests and exit with that run's
//   status.
export async function inFirefoxNetwork(fileUrl) {
  if (process.env.NOOM_FIREFOX_NETNS === '1') return { mediaIp: MEDIA_IP };
  if (process.getuid?.() !== 0) return { unavailable: 'needs root: a network namespace with a default route for Firefox' };
  const child = spawn('unshare', ['-n', 'sh', '-c', FIREFOX_NAMESPACE_SETUP, 'sh', process.execPath, ...process.execArgv, new URL(fileUrl).pathname], {
    stdio: 'inherit',
    env: { ...process.env, NOOM_FIREFOX_NETNS: '1' },
  });
  // A timeout's SIGTERM goes on to the re-run first (lib.mjs's handler
  // exits this process), whose own handler stops its servers and browsers.
  const forward = (sig) => child.kill(sig);
  process.prependListener('SIGTERM', forward);
  process.prependListener('SIGINT', forward);
  const { code, signal } = await new Promise((resolve) => child.on('exit', (c, s) => resolve({ code: c, signal: s })));
  return { exitCode: code ?? (signal ? 128 : 1) };
}

// Launches a Firefox and a Chromium person at once. Each that started is
// added to `people` (so the caller's cleanup closes it) before the first
// failure, if any, is thrown. Returns [firefox, chromium].
export async function launchFirefoxAndChromium(firefoxLabel, chromiumLabel, people) {
  const launched = await Promise.allSettled([launchFirefoxPerson(firefoxLabel), launchPerson(chromiumLabel)]);
  for (const r of launched) if (r.status === 'fulfilled') people.push(r.value);
  for (const r of launched) if (r.status === 'rejected') throw r.reason;
  return launched.map((r) => r.value);
}
