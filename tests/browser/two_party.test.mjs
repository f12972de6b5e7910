// Two people in headless Chromium join one room through web/minimal.html and
// must see (decode) each other's camera and receive each other's microphone.
//
// Run: node --test tests/browser/  (needs target/debug/noom, or NOOM_BIN)

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { artifactsDir, launchPerson, pageState, randomRoom, startRedis, startServer, waitFor } from './lib.mjs';

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
  try {
    await twoParty(t, 'two_party', [server, server]);
  } finally {
    await server.stop();
  }
});

// The same call with the two people on two nodes of a cluster (one real
// redis-server): the room lives on one node, the other person's WebSocket
// is relayed to it and its media goes straight there.
test('two Chromium participants on two nodes of a cluster decode each other\'s video', { timeout: 240_000 }, async (t) => {
  mkdirSync(artifactsDir, { recursive: true });
  const redis = await startRedis('two_nodes');
  const nodes = [];
  try {
    for (const id of ['node-1', 'node-2']) {
      nodes.push(
        await startServer(`two_nodes-${id}`, { NOOM_CLUSTER_REDIS_URL: redis.url, NOOM_NODE_ID: id }),
      );
    }
    await twoParty(t, 'two_nodes', nodes);
  } finally {
    for (const node of nodes) await node.stop();
    await redis.stop();
  }
});

// Alice's page on servers[0], Bob's on servers[1].
async function twoParty(t, label, servers) {
  const people = [];
  let failed = true;
  try {
    const room = randomRoom('two-party');
    for (const name of NAMES) people.push(await launchPerson(name));
    await Promise.all(
      people.map((p, i) =>
        p.page.goto(`${servers[i].url}/minimal.html?room=${encodeURIComponent(room)}&name=${p.label}&ice=none`),
      ),
    );

    const describeAll = async () => {
      const states = {};
      for (const p of people) states[p.label] = await pageState(p.page).catch((e) => String(e));
      return (
        `${JSON.stringify(states, null, 2)}` +
        servers
          .map(
            (s) =>
              `\n--- server WARN/ERROR digest ---\n${s.logSummary()}` +
              `\n--- server log tail (full log: ${s.logPath}) ---\n${s.logTail(30)}`,
          )
          .join('')
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
        .screenshot({ path: path.join(artifactsDir, `${label}-${p.label}.png`) })
        .catch((e) => t.diagnostic(`screenshot of ${p.label} failed: ${e.message}`));
      try {
        const s = await pageState(p.page);
        writeFileSync(
          path.join(artifactsDir, `${label}-${p.label}.json`),
          JSON.stringify({ ...s, console: p.consoleLines, sdp: await sdpOf(p.page) }, null, 2),
        );
      } catch (e) {
        t.diagnostic(`state of ${p.label} unavailable: ${e.message}`);
      }
    }
    for (const p of people) await p.close().catch(() => {});
    if (failed) {
      t.diagnostic(`server logs: ${servers.map((s) => s.logPath).join(', ')}`);
    }
  }
}
