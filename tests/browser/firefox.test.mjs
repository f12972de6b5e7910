// Firefox ESR and Chromium in one call through the web client (web/index.html):
// each decodes the other's camera on the right tile and hears the other's
// microphone, they chat and send each other a file over the data channel,
// Firefox switches camera (replaceTrack) while Chromium keeps its one
// track, and mutes show on both sides. One Firefox and one Chromium for the
// whole file.
//
// Firefox runs under puppeteer-core over WebDriver BiDi (firefox.mjs), with
// its shipped ICE settings: its host candidates are mDNS names the server
// cannot resolve, so the server learns Firefox's address from its
// connectivity checks (peer-reflexive). Firefox needs a default route to
// gather candidates at all, so this file re-runs itself in a namespace that
// has one (inFirefoxNetwork).
//
// Run: node --test tests/browser/firefox.test.mjs  (needs target/debug/noom
// or NOOM_BIN, and /usr/bin/firefox-esr or FIREFOX_BIN)

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { firefoxUnavailable, inFirefoxNetwork, launchFirefoxAndChromium } from './firefox.mjs';
import { artifactsDir, randomRoom, startServer, waitFor } from './lib.mjs';
import { expectDecoding, joinViaForm, remoteTiles, tileBadges } from './web_call.mjs';

const where = await inFirefoxNetwork(import.meta.url);
if (where.exitCode !== undefined) process.exit(where.exitCode);

const badges = tileBadges;
const ADMIN_TOKEN = 'firefox-admin-t0ken';

// The server's bandwidth view of the participant called `name` (admin API):
// its estimate, the loss its transport-wide feedback shows, and how many
// feedback reports that was.
async function bandwidthOf(server, name) {
  const res = await fetch(`${server.url}/api/overview`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(res.status, 200, 'admin overview');
  const people = (await res.json()).rooms.flatMap((r) => r.participants);
  return people.find((p) => p.name === name)?.media?.bandwidth ?? null;
}

// What `page` receives from the participant called `name`: its remote
// tracks, and the inbound RTP streams of those tracks (packets, frames,
// audio level and energy, SSRC).
const receivedFrom = (page, name) =>
  page.evaluate(async (name) => {
    const app = window.noomApp;
    const id = [...app.participants.values()].find((p) => p.name === name)?.id;
    const stream = id && app.streams.get(id);
    if (!stream || !app.pc) return null;
    const tracks = stream.getTracks().map((t) => ({ id: t.id, kind: t.kind, state: t.readyState }));
    const trackIds = new Set(tracks.map((t) => t.id));
    const inbound = [];
    (await app.pc.getStats()).forEach((s) => {
      if (s.type !== 'inbound-rtp' || !trackIds.has(s.trackIdentifier)) return;
      inbound.push({
        kind: s.kind,
        ssrc: s.ssrc,
        packets: s.packetsReceived ?? 0,
        frames: s.framesDecoded ?? 0,
        audioLevel: s.audioLevel ?? null,
        energy: s.totalAudioEnergy ?? null,
      });
    });
    const one = (kind) => inbound.filter((s) => s.kind === kind);
    return { id, tracks, video: one('video'), audio: one('audio') };
  }, name);

const chatLines = (page) =>
  page.$$eval('#chat-log li:not(.notice)', (els) =>
    els.map((el) => ({ who: el.querySelector('.who')?.textContent, text: el.querySelector('.text')?.textContent, mine: el.classList.contains('mine'), state: el.dataset.state })),
  );

// The SHA-256 and size of the file offered for download as `name`.
const downloaded = (page, name) =>
  page.evaluate(async (name) => {
    const a = [...document.querySelectorAll('#transfers a[download]')].find((x) => x.download === name);
    if (!a) return null;
    const buf = await (await fetch(a.href)).arrayBuffer();
    const hash = await crypto.subtle.digest('SHA-256', buf);
    return { size: buf.byteLength, sha256: [...new Uint8Array(hash)].map((x) => x.toString(16).padStart(2, '0')).join('') };
  }, name);

test('Firefox ESR and Chromium see and hear each other, chat, exchange files, switch camera and mute', {
  timeout: 180_000,
  skip: where.unavailable || firefoxUnavailable() || false,
}, async (t) => {
  mkdirSync(artifactsDir, { recursive: true });
  const started = Date.now();
  const since = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
  // Media on the namespace's own address, not loopback: Firefox (as
  // shipped) does not complete ICE with 127.0.0.1 candidates.
  const server = await startServer('firefox', { NOOM_MEDIA_BIND_IPS: where.mediaIp, NOOM_ADMIN_TOKEN: ADMIN_TOKEN });
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'noom-firefox-test-'));
  const people = [];
  let failed = true;
  try {
    const [fx, cr] = await launchFirefoxAndChromium('firefox', 'chromium', people);
    t.diagnostic(`browsers up at ${since()}`);
    const describe = async () => {
      const states = await Promise.all(
        people.map(async (p) => {
          const s = await p.page
            .evaluate(() => {
              const a = window.noomApp;
              return { status: document.getElementById('call-status').textContent, pc: a.pc?.connectionState, errors: a.errors, participants: [...a.participants.values()] };
            })
            .catch((e) => String(e));
          const got = await Promise.all(people.filter((o) => o !== p).map((o) => receivedFrom(p.page, o.label).catch((e) => String(e))));
          return `${p.label}: ${JSON.stringify(s)}\n  receives: ${JSON.stringify(got)}\n  console: ${p.consoleLines.slice(-8).join(' | ')}`;
        }),
      );
      return `${states.join('\n')}\n--- server WARN/ERROR digest ---\n${server.logSummary()}\n--- server log tail (${server.logPath}) ---\n${server.logTail(20)}`;
    };

    const room = randomRoom('firefox');
    await Promise.all([joinViaForm(fx, server.url, room, describe), joinViaForm(cr, server.url, room, describe)]);

    // 1. Video both ways, each on the tile of the right person.
    await Promise.all([expectDecoding(fx, ['chromium'], describe), expectDecoding(cr, ['firefox'], describe)]);
    t.diagnostic(`video decoded both ways at ${since()}`);

    // 1b. The server's estimate toward Firefox rests on feedback that
    //     accounts for what arrived: nothing is lost on this link. Firefox
    //     answers transport-wide congestion control on its video sections
    //     only; numbering its audio packets too (once the case) had every
    //     one of them reported missing, 65-99 % "loss", and the estimate
    //     sank to its floor and paused the video it receives.
    const fed = await waitFor(async () => {
      const b = await bandwidthOf(server, 'firefox');
      return b && b.feedbacks >= 20 && b.loss !== null ? b : false;
    }, { timeout: 20_000, what: "20 transport-wide feedback reports from Firefox", describe });
    t.diagnostic(`server's view of firefox: ${JSON.stringify(fed)}`);
    assert.ok(fed.loss < 0.1, `Firefox's feedback shows the packets it got (loss ${fed.loss})`);

    // 2. Audio both ways: packets arrive and carry sound (the fake devices'
    //    tones: Firefox's is continuous, Chromium's beeps).
    const hears = async (p, other) => {
      const first = await waitFor(async () => (await receivedFrom(p.page, other))?.audio[0], { what: `${p.label}: an inbound audio stream from ${other}`, describe });
      const later = await waitFor(
        async () => {
          const a = (await receivedFrom(p.page, other))?.audio[0];
          return a && a.packets >= first.packets + 50 && a.energy > (first.energy ?? 0) ? a : false;
        },
        { timeout: 30_000, what: `${p.label}: audio packets from ${other} growing by 50 with sound in them (from ${JSON.stringify(first)})`, describe },
      );
      t.diagnostic(`${p.label} hears ${other}: packets ${first.packets} -> ${later.packets}, energy ${first.energy} -> ${later.energy}`);
    };
    await Promise.all([hears(fx, 'chromium'), hears(cr, 'firefox')]);

    // 3. Chat both ways: shown at the other side under the sender's name,
    //    acknowledged at the sender's.
    const chat = async (from, to) => {
      const text = `hello from ${from.label}`;
      await from.page.locator('#chat-text').fill(text);
      await from.page.click('#chat-form button[type=submit]');
      await waitFor(async () => (await chatLines(to.page)).some((m) => m.text === text && m.who === from.label && !m.mine), { what: `${to.label} shows ${from.label}'s message`, describe });
      await waitFor(async () => (await chatLines(from.page)).some((m) => m.text === text && m.mine && m.state === 'sent'), { what: `${from.label} sees the message acknowledged`, describe });
    };
    await Promise.all([chat(fx, cr), chat(cr, fx)]);
    t.diagnostic(`chat both ways at ${since()}`);

    // 4. A file each way over the data channel, byte-identical.
    const files = {};
    for (const p of people) {
      const content = randomBytes(100 * 1024 + 17);
      const name = `from-${p.label}.bin`;
      writeFileSync(path.join(tmp, name), content);
      files[p.label] = { name, size: content.length, sha256: createHash('sha256').update(content).digest('hex') };
    }
    await cr.page.setInputFiles('#file-input', path.join(tmp, files.chromium.name));
    await (await fx.page.$('#file-input')).uploadFile(path.join(tmp, files.firefox.name));
    for (const [from, to] of [[fx, cr], [cr, fx]]) {
      const want = files[from.label];
      const got = await waitFor(() => downloaded(to.page, want.name), { timeout: 30_000, what: `${to.label} gets ${want.name} to download`, describe });
      assert.deepEqual(got, { size: want.size, sha256: want.sha256 }, `${want.name} arrives intact at ${to.label}`);
      t.diagnostic(`${want.name} at ${to.label} at ${since()}`);
    }
    

    // 5. Firefox switches camera: a fresh capture track on the same sender
    //    (replaceTrack, no renegotiation). Firefox's fake device is a single
    //    camera, so the select offers that one (disabled for a person); the
    //    change event drives the client's switch all the same.
    const before = await receivedFrom(cr.page, 'firefox');
    const oldTrack = await fx.page.evaluate(() => window.noomApp.senders.video.track.id);
    await fx.page.evaluate(() => {
      const select = document.getElementById('camera-select');
      select.value = select.options[0].value;
      select.dispatchEvent(new Event('change'));
    });
    await waitFor(() => fx.page.evaluate(() => document.getElementById('call-status').textContent.startsWith('Switched camera')), { what: 'Firefox switched camera', describe });
    const newTrack = await fx.page.evaluate(() => ({ id: window.noomApp.senders.video.track.id, state: window.noomApp.senders.video.track.readyState }));
    assert.notEqual(newTrack.id, oldTrack, 'Firefox sends from a new camera track');
    assert.equal(newTrack.state, 'live');
    const after = await waitFor(
      async () => {
        const r = await receivedFrom(cr.page, 'firefox');
        return r && r.video.length === 1 && r.video[0].frames >= before.video[0].frames + 30 ? r : false;
      },
      { timeout: 30_000, what: `Chromium decoding 30 more frames from Firefox after the switch (from ${JSON.stringify(before.video)})`, describe },
    );
    assert.deepEqual(after.tracks, before.tracks, "Chromium keeps the same remote tracks for Firefox");
    assert.equal(after.video[0].ssrc, before.video[0].ssrc, 'the same inbound video SSRC');
    t.diagnostic(`camera switch: Chromium frames from Firefox ${before.video[0].frames} -> ${after.video[0].frames} at ${since()}`);

    // 6. Mutes show on both sides. Firefox's mic off: Chromium shows the
    //    badge and hears silence; Chromium's camera off: Firefox shows it.
    await waitFor(async () => (await receivedFrom(cr.page, 'firefox'))?.audio[0]?.audioLevel > 0.05, { what: "Chromium hears Firefox's tone before the mute", describe });
    await fx.page.click('#mic-button');
    await waitFor(async () => (await badges(cr.page)).find((b) => b.name === 'firefox')?.micOff, { what: "Chromium shows Firefox's mic off", describe });
    await waitFor(() => fx.page.$eval('.tile.local .mic-badge', (el) => !el.hidden), { what: 'Firefox shows its own mic off', describe });
    await waitFor(async () => (await receivedFrom(cr.page, 'firefox'))?.audio[0]?.audioLevel < 0.01, { what: 'Chromium hears silence from Firefox', describe });
    await cr.page.click('#cam-button');
    await waitFor(async () => (await badges(fx.page)).find((b) => b.name === 'chromium')?.camOff, { what: "Firefox shows Chromium's camera off", describe });
    await waitFor(() => cr.page.$eval('.tile.local .cam-badge', (el) => !el.hidden), { what: 'Chromium shows its own camera off', describe });

    for (const p of people) {
      const errors = await p.page.evaluate(() => window.noomApp.errors);
      assert.deepEqual(errors, [], `${p.label}'s page reported errors`);
      assert.deepEqual((await remoteTiles(p.page)).length, 1, `${p.label} shows one remote tile`);
    }
    t.diagnostic(`done at ${since()}`);
    failed = false;
  } finally {
    if (failed) {
      for (const p of people) {
        await p.page.screenshot({ path: path.join(artifactsDir, `firefox-${p.label}.png`) }).catch((e) => t.diagnostic(`screenshot of ${p.label} failed: ${e.message}`));
      }
    }
    await Promise.all(people.map((p) => p.close().catch((e) => t.diagnostic(`closing ${p.label}: ${e.message}`))));
    rmSync(tmp, { recursive: true, force: true });
    await server.stop();
    if (failed) t.diagnostic(`server log: ${server.logPath}`);
  }
});
