// Network changes in the middle of a call (issue #17, point 4): the web
// client's media comes back without a new join when
//   a. its path to the media breaks for 5 s (everything to and from the
//      media address dropped, UDP and ICE-TCP alike; the WebSocket, to
//      another address, stays up) and then works again;
//   b. it gets a new link (the new default route) and its old address stops
//      reaching the media (as a laptop leaving one Wi-Fi for another).
// Alice's Chromium runs in a network namespace of her own (netns.mjs); Bob
// is on the host. The test measures the time from the path working again
// (a) or the move (b) to both decoding each other's video again, and checks
// that Alice stayed the same participant (no leave, no rejoin) on the same
// page.
//
// Run: node --test tests/browser/network_change.test.mjs  (needs
// target/debug/noom, root, nft and nsenter, as scripts/test.sh runs it)

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { artifactsDir, freePort, launchPerson, randomRoom, sleep, startServer, waitFor } from './lib.mjs';
import { browserNamespace, udpBlockedNamespaceUnavailable } from './netns.mjs';
import { clientState, expectDecoding, joinViaForm, markDocument, stillSameDocument } from './web_call.mjs';

// How long the path stays broken in (a): the issue's "drop its packets for 5 s".
const OUTAGE_MS = 5000;
// How soon both decode each other again, from the path working again (a)
// or the move (b): the issue's aim, under 3 s. Measured on a loaded 2-core
// machine (web/media_recovery.js restarts after 1.5 s of silence after
// packets were flowing): (a) 0.4-1.5 s: the restart made during the outage
// connects over ICE-TCP once the path works (the server stops checking the
// new connection's UDP pairs 1.4 s after it began: ICE_MAX_BINDING_REQUESTS,
// sfu/src/engine.rs). (b) 2.0-2.6 s: Chromium gathers candidates on the new
// address only once it has re-read its network list, about 2 s after the
// address appeared (no event tells the page); the restart, 1.6-1.8 s after
// the move, picks it up then; ICE and DTLS take about 0.1 s, and the
// subscriber decodes the publisher's first keyframe 0.1-0.5 s after that.
// (With a 1 s threshold, (b) took 1.5-2.8 s, and 3.3 s and 6.2 s in two of
// 15 runs at a load average of 15-27.)
const RECOVERY_MS = 3000;

// Video frames decoded per remote name, from the web client's own stats.
const framesByName = async (page) => {
  const stats = await page.evaluate(() => window.noomApp.stats());
  const out = {};
  for (const s of stats) if (s.kind === 'video') out[s.name] = (out[s.name] || 0) + s.framesDecoded;
  return out;
};

// Resolves once `person` decodes a new frame from `name`, and returns
// Date.now() then. A restarted peer connection counts from 0 again: a drop in
// the counter is a new frame too.
async function framesResume(person, name, describe) {
  let last = (await framesByName(person.page))[name] || 0;
  await waitFor(async () => {
    const now = (await framesByName(person.page))[name] || 0;
    const resumed = now > last || (now > 0 && now < last);
    last = now;
    return resumed;
  }, { timeout: 30_000, interval: 50, what: `${person.label} decoding new frames from ${name}`, describe });
  return Date.now();
}

// Resolves once `person`'s decoded frames from `name` stop growing for
// 500 ms (the path is really broken, not just slowed: 15 frame intervals at
// 30 fps). Not longer: the client restarts 1.5 s after a break, so a
// longer stall could be over before it is seen.
async function framesStall(person, name, describe) {
  let last = -1;
  let since = Date.now();
  await waitFor(async () => {
    const now = (await framesByName(person.page))[name] || 0;
    if (now !== last) {
      last = now;
      since = Date.now();
      return false;
    }
    return Date.now() - since >= 500;
  }, { timeout: 20_000, interval: 50, what: `${person.label}'s frames from ${name} to stall`, describe });
}

// The local end of the page's selected candidate pair: {address, protocol}.
const selectedLocal = (page) => page.evaluate(async () => {
  const report = await window.noomApp.pc.getStats();
  let local = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      const c = report.get(report.get(s.selectedCandidatePairId).localCandidateId);
      local = { address: c.address, protocol: c.protocol };
    }
  });
  return local;
});

// What the page's MediaRecovery did since `since`, with times relative to `zero`.
async function recoverySteps(person, since, zero) {
  const steps = await person.page.evaluate(() => window.noomApp.recoveries.map((r) => ({ ...r, at: Math.round(performance.timeOrigin + r.at) })));
  return steps.filter((r) => r.at >= since).map((r) => `${r.what}${r.why ? ` (${r.why})` : ''} at ${r.at - zero} ms`);
}

async function setUp(label) {
  const ns = await browserNamespace(label);
  const mediaIp = `10.99.${1 + Math.floor(Math.random() * 250)}.1`;
  execFileSync('ip', ['addr', 'add', `${mediaIp}/32`, 'dev', 'lo']);
  const dropMediaIp = () => execFileSync('ip', ['addr', 'del', `${mediaIp}/32`, 'dev', 'lo']);
  let server;
  const people = [];
  try {
    // HTTP on every address: Alice reaches it on her first link's subnet,
    // so her WebSocket stays on that link. Media on an address of its own
    // that Alice reaches through her default route, which a move changes.
    const port = await freePort();
    server = await startServer(label, { NOOM_HTTP_LISTEN: `0.0.0.0:${port}`, NOOM_MEDIA_BIND_IPS: mediaIp }, { port });
    const origin = `http://${ns.hostIp}:${server.port}`;
    // Camera and microphone need a secure context; an http:// origin other
    // than localhost is one only by this flag.
    const secure = [`--unsafely-treat-insecure-origin-as-secure=${origin}`];
    const bob = await launchPerson('bob', { extraArgs: secure });
    people.push(bob);
    const alice = await launchPerson('alice', { executablePath: ns.executablePath, extraArgs: secure });
    people.push(alice);
    const describe = async () => {
      const states = await Promise.all(people.map(async (p) => `${p.label}: ${JSON.stringify(await clientState(p.page).catch(String))} ` +
        `pc ${await p.page.evaluate(() => window.noomApp.pc?.connectionState).catch(String)} console: ${p.consoleLines.slice(-8).join(' | ')}`));
      const recoveries = await Promise.all(people.map((p) => p.page.evaluate(() => JSON.stringify(window.noomApp.recoveries)).catch(String)));
      return `${states.join('\n')}\nrecoveries: ${recoveries.join(' / ')}\n--- noom log tail (${server.logPath}) ---\n${server.logTail(30)}`;
    };
    const room = randomRoom(label);
    await joinViaForm(bob, origin, room, describe);
    await joinViaForm(alice, origin, room, describe);
    await expectDecoding(alice, ['bob'], describe);
    await expectDecoding(bob, ['alice'], describe);
    for (const p of people) await markDocument(p.page);
    return { ns, server, people, alice, bob, describe, dropMediaIp, mediaIp };
  } catch (err) {
    for (const p of people) await p.close().catch(() => {});
    await server?.stop();
    ns.close();
    dropMediaIp();
    throw err;
  }
}

async function tearDown(t, label, { ns, server, people, dropMediaIp }) {
  mkdirSync(artifactsDir, { recursive: true });
  for (const p of people) {
    await p.page.screenshot({ path: path.join(artifactsDir, `${label}-${p.label}.png`) }).catch(() => {});
    writeFileSync(path.join(artifactsDir, `${label}-${p.label}.log`), p.consoleLines.join('\n'));
  }
  for (const p of people) await p.close().catch((e) => t.diagnostic(`closing ${p.label}: ${e.message}`));
  await server.stop();
  ns.close();
  dropMediaIp();
}

// Both pages are still the same participants in the same room on the same document.
async function assertSameCall(setup, idsBefore) {
  for (const [i, p] of setup.people.entries()) {
    assert.ok(await stillSameDocument(p.page), `${p.label}'s page was reloaded`);
    const s = await clientState(p.page);
    assert.equal(s.you, idsBefore[i], `${p.label} is still the same participant (no rejoin)`);
    assert.equal(s.connection, 'connected', `${p.label}'s WebSocket stayed up`);
  }
}

test('after the media path breaks for 5 s, media resumes both ways without a new join', { timeout: 240_000 }, async (t) => {
  const unavailable = udpBlockedNamespaceUnavailable();
  if (unavailable) return t.skip(unavailable);
  const label = 'netchange_outage';
  const setup = await setUp(label);
  const { ns, alice, bob, describe } = setup;
  try {
    const idsBefore = await Promise.all(setup.people.map(async (p) => (await clientState(p.page)).you));
    const brokenAt = Date.now();
    ns.blockPath(setup.mediaIp);
    await Promise.all([framesStall(bob, 'alice', describe), framesStall(alice, 'bob', describe)]);
    // The outage itself is the scenario: the path stays broken for 5 s.
    await sleep(Math.max(0, brokenAt + OUTAGE_MS - Date.now()));
    const dropped = ns.droppedUdpPackets();
    ns.unblockUdp();
    const restoredAt = Date.now();
    const [aliceBack, bobBack] = await Promise.all([
      framesResume(alice, 'bob', describe),
      framesResume(bob, 'alice', describe),
    ]);
    const recovery = {
      aliceDecodesBobMs: aliceBack - restoredAt,
      bobDecodesAliceMs: bobBack - restoredAt,
      dropped: dropped,
      aliceSteps: await recoverySteps(alice, brokenAt, restoredAt),
      aliceLocal: await selectedLocal(alice.page),
    };
    t.diagnostic(`path restored -> decoding again: ${JSON.stringify(recovery)}`);
    writeFileSync(path.join(artifactsDir, `${label}-timing.json`), JSON.stringify(recovery));
    assert.ok(dropped > 0, 'the outage dropped some of her packets');
    const slowest = Math.max(recovery.aliceDecodesBobMs, recovery.bobDecodesAliceMs);
    assert.ok(slowest <= RECOVERY_MS, `both decode again within ${RECOVERY_MS} ms of the path working again: ${JSON.stringify(recovery)}`);
    await assertSameCall(setup, idsBefore);
    await expectDecoding(alice, ['bob'], describe);
    await expectDecoding(bob, ['alice'], describe);
  } finally {
    await tearDown(t, label, setup);
  }
});

test('after moving to a new address, media resumes both ways without a new join', { timeout: 240_000 }, async (t) => {
  const unavailable = udpBlockedNamespaceUnavailable();
  if (unavailable) return t.skip(unavailable);
  const label = 'netchange_move';
  const setup = await setUp(label);
  const { ns, alice, bob, describe } = setup;
  try {
    const idsBefore = await Promise.all(setup.people.map(async (p) => (await clientState(p.page)).you));
    const newIp = ns.addBrowserLink();
    ns.blockPath(setup.mediaIp, { from: ns.browserIp });
    const movedAt = Date.now();
    await Promise.all([framesStall(bob, 'alice', describe), framesStall(alice, 'bob', describe)]);
    const [aliceBack, bobBack] = await Promise.all([
      framesResume(alice, 'bob', describe),
      framesResume(bob, 'alice', describe),
    ]);
    const recovery = {
      aliceDecodesBobMs: aliceBack - movedAt,
      bobDecodesAliceMs: bobBack - movedAt,
      dropped: ns.droppedUdpPackets(),
      aliceSteps: await recoverySteps(alice, movedAt, movedAt),
      aliceLocal: await selectedLocal(alice.page),
    };
    t.diagnostic(`moved -> decoding again: ${JSON.stringify(recovery)}`);
    writeFileSync(path.join(artifactsDir, `${label}-timing.json`), JSON.stringify(recovery));
    assert.ok(recovery.aliceSteps.some((step) => step.startsWith('restart ')), `alice restarted her media connection: ${recovery.aliceSteps}`);
    const slowest = Math.max(recovery.aliceDecodesBobMs, recovery.bobDecodesAliceMs);
    assert.ok(slowest <= RECOVERY_MS, `both decode again within ${RECOVERY_MS} ms of the move: ${JSON.stringify(recovery)}`);
    assert.equal(recovery.aliceLocal?.address, newIp, 'her media now leaves from her new address');
    await assertSameCall(setup, idsBefore);
    await expectDecoding(alice, ['bob'], describe);
    await expectDecoding(bob, ['alice'], describe);
  } finally {
    await tearDown(t, label, setup);
  }
});
