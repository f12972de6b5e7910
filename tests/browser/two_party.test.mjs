// Two people in headless Chromium join one room through web/minimal.html and
// must see (decode) each other's camera and receive each other's microphone.
//
// Run: node --test tests/browser/  (needs target/debug/noom, or NOOM_BIN)

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { artifactsDir, launchPerson, pageState, randomRoom, startServer, waitFor } from './lib.mjs';

const NAMES = ['alice', 'bob'];

const sdpOf = (page) =>
  page
    .evaluate(() => ({
      remote: window.noom.pc?.remoteDescription?.sdp ?? null,
      local: window.noom.pc?.localDescription?.sdp ?? null,
    }))
    .catch((e) => String(e));

test('two Chromium participants decode each other\'s video and receive audio', { timeout: 240_000 }, async (t) => {
  mkdirSync(artifactsDir, { recursive: true });
  const server = await startServer('two_party');
  const people = [];
  let failed = true;
  try {
    const room = randomRoom('two-party');
    for (const name of NAMES) people.push(await launchPerson(name));
    await Promise.all(
      people.map((p) =>
        p.page.goto(`${server.url}/minimal.html?room=${encodeURIComponent(room)}&name=${p.label}&ice=none`),
      ),
    );

    const describeAll = async () => {
      const states = {};
      for (const p of people) states[p.label] = await pageState(p.page).catch((e) => String(e));
      return (
        `${JSON.stringify(states, null, 2)}\n--- server WARN/ERROR digest ---\n${server.logSummary()}` +
        `\n--- server log tail (full log: ${server.logPath}) ---\n${server.logTail(30)}`
      );
    };

    // 1. Both joined.
    for (const p of people) {
      await waitFor(() => p.page.evaluate(() => window.noom && window.noom.state === 'joined'), {
        timeout: 30_000,
        what: `${p.label} to join`,
        describe: describeAll,
      });
    }

    // 2. Each sees exactly one other participant, with the other's name, and
    //    both a video and an audio inbound stream mapped to that participant.
    for (const [i, p] of people.entries()) {
      const other = NAMES[1 - i];
      await waitFor(
        async () => {
          const s = await pageState(p.page);
          const entries = Object.entries(s.participants);
          if (entries.length !== 1 || entries[0][1] !== other) return false;
          const [otherId] = entries[0];
          const kinds = new Set(s.stats.filter((r) => r.participant === otherId).map((r) => r.kind));
          return kinds.has('video') && kinds.has('audio');
        },
        { timeout: 60_000, what: `${p.label} to receive audio+video of ${other}`, describe: describeAll },
      );
      const s = await pageState(p.page);
      const entries = Object.entries(s.participants);
      assert.equal(entries.length, 1, `${p.label} sees exactly one remote participant`);
      assert.equal(entries[0][1], other, `${p.label}'s remote participant is ${other}`);
      assert.deepEqual(Object.keys(s.remoteStreams), [entries[0][0]], `${p.label} has one remote stream, the other's`);
    }

    // 3. Video keeps decoding and audio packets keep arriving: sample, then
    //    poll until each counter has grown (a deadline, not a fixed sleep).
    const counters = async (page) => {
      const s = await pageState(page);
      const [otherId] = Object.keys(s.participants);
      const mine = s.stats.filter((r) => r.participant === otherId);
      const sum = (kind, key) => mine.filter((r) => r.kind === kind).reduce((a, r) => a + (r[key] || 0), 0);
      return { frames: sum('video', 'framesDecoded'), audioPackets: sum('audio', 'packetsReceived') };
    };
    for (const p of people) {
      const first = await waitFor(
        async () => {
          const c = await counters(p.page);
          return c.frames > 0 && c.audioPackets > 0 ? c : false;
        },
        { timeout: 60_000, what: `${p.label}: first decoded frame and audio packets`, describe: describeAll },
      );
      const last = await waitFor(
        async () => {
          const c = await counters(p.page);
          return c.frames >= first.frames + 30 && c.audioPackets >= first.audioPackets + 50 ? c : false;
        },
        { timeout: 60_000, what: `${p.label}: decoded frames to grow by 30 and audio packets by 50 (from ${JSON.stringify(first)})`, describe: describeAll },
      );
      t.diagnostic(`${p.label}: frames ${first.frames} -> ${last.frames}, audio packets ${first.audioPackets} -> ${last.audioPackets}`);
    }

    // The page saw no errors.
    for (const p of people) {
      const s = await pageState(p.page);
      assert.deepEqual(s.errors, [], `${p.label}'s page reported errors`);
    }
    failed = false;
  } finally {
    // Record every page before closing any (a close is a leave for the others).
    for (const p of people) {
      await p.page
        .screenshot({ path: path.join(artifactsDir, `two_party-${p.label}.png`) })
        .catch((e) => t.diagnostic(`screenshot of ${p.label} failed: ${e.message}`));
      try {
        const s = await pageState(p.page);
        writeFileSync(
          path.join(artifactsDir, `two_party-${p.label}.json`),
          JSON.stringify({ ...s, console: p.consoleLines, sdp: await sdpOf(p.page) }, null, 2),
        );
      } catch (e) {
        t.diagnostic(`state of ${p.label} unavailable: ${e.message}`);
      }
    }
    for (const p of people) await p.close().catch(() => {});
    const exit = await server.stop();
    if (failed) {
      t.diagnostic(`server exit: ${JSON.stringify(exit)}; full log: ${server.logPath}`);
    }
  }
});
