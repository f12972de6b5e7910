// TURN through a real coturn (Debian's `turnserver`, started per test on a
// free port): Noom hands every participant time-limited credentials
// (`[turn]`, coturn's use-auth-secret scheme) in `joined`, and
//   a. a Chromium forced to relay-only (`?relay=1`, iceTransportPolicy
//      "relay") and a normal one decode each other's video; the relay-only
//      one's selected candidate pair is a relay candidate (TURN/UDP) and
//      coturn logged the allocation;
//   b. a Chromium in its own network namespace whose outgoing UDP is dropped
//      (nftables) connects through TURN over TCP and decodes video both ways;
//   c. with credentials coturn refuses (Noom's secret differs from coturn's),
//      a relay-only Chromium fails clearly (its page reports the TURN
//      server's 401 and that no candidate could be gathered; later the server
//      removes it with `left`, media_failed) while the two others in the
//      room keep decoding throughout.
//
// Run: node --test tests/browser/turn.test.mjs  (needs target/debug/noom;
// b needs root, nft and nsenter, as scripts/test.sh runs it)

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { startCoturn } from './coturn.mjs';
import { artifactsDir, freePort, launchPerson, pageState, randomRoom, startServer, waitFor } from './lib.mjs';
import { udpBlockedNamespace, udpBlockedNamespaceUnavailable } from './netns.mjs';

const SECRET = `turn-test-${Math.random().toString(36).slice(2, 10)}`;

// A Noom on a free port whose `[turn]` names `urls`; the secret comes from
// NOOM_TURN_SECRET (the way operators are told to pass it). No STUN: the
// namespace has no internet.
async function startNoomWithTurn(label, urls, secret, { httpListen } = {}) {
  mkdirSync(artifactsDir, { recursive: true });
  const file = path.join(artifactsDir, `${label}-noom.toml`);
  writeFileSync(file, `[ice]\nservers = []\n\n[turn]\nurls = ${JSON.stringify(urls)}\nttl_s = 600\n`);
  const env = { NOOM_TURN_SECRET: secret };
  const options = { args: ['--config', file] };
  if (httpListen) {
    options.port = await freePort();
    env.NOOM_HTTP_LISTEN = `${httpListen}:${options.port}`;
  }
  return startServer(label, env, options);
}

const pageUrl = (base, room, name, { relay = false, hooks = false } = {}) =>
  `${base}/minimal.html?room=${encodeURIComponent(room)}&name=${name}${relay ? '&relay=1' : ''}${hooks ? '&test=switch' : ''}`;

// Decoded video frames per remote participant name.
async function framesByName(page) {
  const s = await pageState(page);
  const out = {};
  for (const r of s.stats) if (r.kind === 'video') out[r.name] = (out[r.name] || 0) + r.framesDecoded;
  return out;
}

// Waits until `person` decodes video from every name in `from`, then until
// each count has grown by 30 frames (a picture that keeps moving).
async function expectDecoding(person, from, describe) {
  const first = await waitFor(
    async () => {
      const f = await framesByName(person.page);
      return from.every((n) => f[n] > 0) ? f : false;
    },
    { timeout: 60_000, what: `${person.label} to decode video from ${from.join(', ')}`, describe },
  );
  return waitFor(
    async () => {
      const f = await framesByName(person.page);
      return from.every((n) => f[n] >= first[n] + 30) ? f : false;
    },
    { timeout: 60_000, what: `${person.label}'s decoded frames from ${from.join(', ')} to grow by 30 (from ${JSON.stringify(first)})`, describe },
  );
}

// The candidate pair the page's peer connection uses, from getStats.
async function selectedPair(page) {
  return page.evaluate(async () => {
    const report = await window.noom.pc.getStats();
    let pair;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    const cand = (id) => {
      const c = report.get(id);
      return c && { type: c.candidateType, protocol: c.protocol, relayProtocol: c.relayProtocol ?? null, address: c.address, port: c.port };
    };
    return { state: pair.state, local: cand(pair.localCandidateId), remote: cand(pair.remoteCandidateId) };
  });
}

function describer(server, coturn, people) {
  return async () => {
    const states = {};
    for (const p of people) {
      states[p.label] = await pageState(p.page).catch((e) => String(e));
      if (states[p.label].stats) states[p.label].stats = states[p.label].stats.map((r) => `${r.name} ${r.kind} frames ${r.framesDecoded} packets ${r.packetsReceived}`);
      states[p.label].console = p.consoleLines.slice(-5);
    }
    return `${JSON.stringify(states, null, 2)}\n--- noom log tail (${server.logPath}) ---\n${server.logTail(20)}` +
      `\n--- coturn log tail (${coturn.logPath}) ---\n${coturn.log().split('\n').slice(-15).join('\n')}`;
  };
}

async function closeAll(t, label, people) {
  for (const p of people) {
    await p.page.screenshot({ path: path.join(artifactsDir, `${label}-${p.label}.png`) }).catch(() => {});
    const s = await pageState(p.page).catch((e) => ({ error: String(e) }));
    writeFileSync(path.join(artifactsDir, `${label}-${p.label}.json`), JSON.stringify({ ...s, console: p.consoleLines }, null, 2));
  }
  for (const p of people) await p.close().catch((e) => t.diagnostic(`closing ${p.label}: ${e.message}`));
}

test('a relay-only Chromium and a normal one decode each other through TURN/UDP', { timeout: 240_000 }, async (t) => {
  const coturn = await startCoturn('turn_udp', { secret: SECRET });
  const server = await startNoomWithTurn('turn_udp', [`turn:127.0.0.1:${coturn.port}?transport=udp`], SECRET);
  const people = [];
  try {
    const room = randomRoom('turn-udp');
    const [bob, alice] = [await launchPerson('bob'), await launchPerson('alice')];
    people.push(bob, alice);
    const describe = describer(server, coturn, people);
    // Bob (direct) first, so Alice's join -> first frame is a newcomer's.
    await bob.page.goto(pageUrl(server.url, room, 'bob'));
    await waitFor(() => bob.page.evaluate(() => window.noom.state === 'joined'), { timeout: 30_000, what: 'bob to join', describe });
    await alice.page.goto(pageUrl(server.url, room, 'alice', { relay: true, hooks: true }));

    const aliceGot = await expectDecoding(alice, ['bob'], describe);
    const bobGot = await expectDecoding(bob, ['alice'], describe);
    t.diagnostic(`frames decoded: alice from bob ${aliceGot.bob}, bob from alice ${bobGot.alice}`);

    // The joined message carried the TURN entry with REST credentials.
    const iceServers = await alice.page.evaluate(() => window.noom.pc.getConfiguration().iceServers);
    const turnEntry = iceServers.find((s) => s.urls.some((u) => u.startsWith('turn:')));
    assert.ok(turnEntry, `alice's peer connection has a TURN server: ${JSON.stringify(iceServers)}`);
    const you = await alice.page.evaluate(() => window.noom.you);
    assert.match(turnEntry.username, new RegExp(`^\\d+:${you}$`), 'username is <expiry>:<participant id>');

    const pair = await selectedPair(alice.page);
    assert.equal(pair?.local?.type, 'relay', `alice's selected pair uses a relay candidate: ${JSON.stringify(pair)}`);
    assert.equal(pair.local.relayProtocol, 'udp', `alice reaches coturn over UDP: ${JSON.stringify(pair)}`);
    assert.ok(coturn.allocatedFor(turnEntry.username), `coturn logged an allocation for ${turnEntry.username}`);

    // Relay-only join -> first decoded frame (the closing note).
    const timing = await alice.page.evaluate(() => {
      const n = window.noom;
      const bobId = Object.keys(n.participants)[0];
      return { joinSentAt: n.joinSentAt, connectedAt: n.connectedAt, firstFrameAt: n.firstFrameAt[bobId] };
    });
    const ms = Math.round(timing.firstFrameAt - timing.joinSentAt);
    t.diagnostic(`relay-only join -> first frame: ${ms} ms (join -> connected ${Math.round(timing.connectedAt - timing.joinSentAt)} ms)`);
    writeFileSync(path.join(artifactsDir, 'turn_udp-timing.json'), JSON.stringify({ joinToFirstFrameMs: ms, ...timing }));
    assert.deepEqual((await pageState(alice.page)).errors, [], "alice's page reported errors");
  } finally {
    await closeAll(t, 'turn_udp', people);
    await server.stop();
    await coturn.stop();
  }
});

test('a Chromium whose outgoing UDP is dropped connects through TURN/TCP and decodes video both ways', { timeout: 240_000 }, async (t) => {
  const unavailable = udpBlockedNamespaceUnavailable();
  if (unavailable) {
    t.skip(unavailable);
    return;
  }
  const ns = await udpBlockedNamespace('turn_tcp');
  let coturn;
  let server;
  const people = [];
  try {
    // coturn also listens on the veth address the blocked browser reaches;
    // Noom's media stays on 127.0.0.1, which that browser cannot reach at
    // all: only coturn (relaying from 127.0.0.1) can carry its media.
    coturn = await startCoturn('turn_tcp', { secret: SECRET, listenIps: ['127.0.0.1', ns.hostIp] });
    const urls = [`turn:${ns.hostIp}:${coturn.port}?transport=udp`, `turn:${ns.hostIp}:${coturn.port}?transport=tcp`];
    server = await startNoomWithTurn('turn_tcp', urls, SECRET, { httpListen: '0.0.0.0' });
    const blockedOrigin = `http://${ns.hostIp}:${server.port}`;
    const room = randomRoom('turn-tcp');
    const bob = await launchPerson('bob');
    people.push(bob);
    // Camera and microphone need a secure context; an http:// origin other
    // than localhost is one only by this flag.
    const carol = await launchPerson('carol', {
      executablePath: ns.executablePath,
      extraArgs: [`--unsafely-treat-insecure-origin-as-secure=${blockedOrigin}`],
    });
    people.push(carol);
    const describe = describer(server, coturn, people);
    await bob.page.goto(pageUrl(server.url, room, 'bob'));
    // Carol is not forced to relay: she has the UDP and the TCP TURN URL, like
    // any client, and only her network decides.
    await carol.page.goto(pageUrl(blockedOrigin, room, 'carol'));

    const carolGot = await expectDecoding(carol, ['bob'], describe);
    const bobGot = await expectDecoding(bob, ['carol'], describe);
    t.diagnostic(`frames decoded: carol from bob ${carolGot.bob}, bob from carol ${bobGot.carol}`);

    const pair = await selectedPair(carol.page);
    assert.equal(pair?.local?.type, 'relay', `carol's selected pair uses a relay candidate: ${JSON.stringify(pair)}`);
    assert.equal(pair.local.relayProtocol, 'tcp', `carol reaches coturn over TCP: ${JSON.stringify(pair)}`);
    const username = await carol.page.evaluate(() => window.noom.pc.getConfiguration().iceServers.find((s) => s.username).username);
    assert.ok(coturn.allocatedFor(username), `coturn logged an allocation for ${username}`);
    // The block is real: her UDP (to coturn's UDP URL, her host candidate's
    // checks) was sent and dropped.
    const dropped = ns.droppedUdpPackets();
    assert.ok(dropped > 0, 'the namespace dropped some of her UDP packets');
    t.diagnostic(`UDP packets dropped in carol's namespace: ${dropped}`);
    assert.deepEqual((await pageState(carol.page)).errors, [], "carol's page reported errors");
  } finally {
    await closeAll(t, 'turn_tcp', people);
    await server?.stop();
    await coturn?.stop();
    ns.close();
  }
});

test('credentials coturn refuses fail clearly on a relay-only page while the others keep decoding', { timeout: 240_000 }, async (t) => {
  const coturn = await startCoturn('turn_refused', { secret: SECRET });
  // Noom signs with another secret: every credential it mints is wrong for
  // this coturn, as after a secret rotated on one side only.
  const urls = [`turn:127.0.0.1:${coturn.port}?transport=udp`, `turn:127.0.0.1:${coturn.port}?transport=tcp`];
  const server = await startNoomWithTurn('turn_refused', urls, `not-${SECRET}`);
  const people = [];
  try {
    const room = randomRoom('turn-refused');
    for (const name of ['ann', 'abe', 'eve']) people.push(await launchPerson(name));
    const [ann, abe, eve] = people;
    const describe = describer(server, coturn, people);
    await ann.page.goto(pageUrl(server.url, room, 'ann'));
    await abe.page.goto(pageUrl(server.url, room, 'abe'));
    await expectDecoding(ann, ['abe'], describe);
    await expectDecoding(abe, ['ann'], describe);

    await eve.page.goto(pageUrl(server.url, room, 'eve', { relay: true }));
    // At once: the TURN server answers 401, so no candidate is gathered and
    // the page says why (Chromium's connection itself just stays `new`).
    const refusal = await waitFor(
      async () => {
        const s = await pageState(eve.page);
        return s.errors.some((e) => /no ICE candidate could be gathered \(relay only\).*401/.test(e)) ? s : false;
      },
      { timeout: 30_000, what: "eve's page to report that TURN refused her (401) and nothing was gathered", describe },
    );
    t.diagnostic(`eve: ${refusal.errors.join(' | ')} (connection ${refusal.connectionState})`);
    assert.notEqual(refusal.connectionState, 'connected');
    assert.match(await eve.page.locator('#errors').textContent(), /401/, 'the page shows the 401');
    const username = await eve.page.evaluate(() => window.noom.pc.getConfiguration().iceServers.find((s) => s.username).username);
    assert.ok(coturn.refused(username), `coturn logged a 401 for ${username}`);
    assert.ok(!coturn.allocatedFor(username), 'coturn allocated nothing for eve');

    // The others keep decoding each other while eve sits in the room...
    const others = await Promise.all([ann, abe].map((p) => expectDecoding(p, [p === ann ? 'abe' : 'ann'], describe)));
    for (const p of [ann, abe]) {
      assert.ok(Object.values((await pageState(p.page)).participants).includes('eve'), `${p.label} sees eve in the room`);
    }
    // ... and after the server gives up on her media (ICE failure plus the
    // grace period) and removes her, which her page shows.
    const removed = await waitFor(
      async () => {
        const s = await pageState(eve.page);
        return s.left?.reason === 'media_failed' ? s : false;
      },
      { timeout: 90_000, what: 'the server to remove eve (left, media_failed)', describe },
    );
    assert.equal(removed.state, 'left');
    const eveFrames = await framesByName(eve.page);
    assert.ok(Object.values(eveFrames).every((n) => n === 0), `eve decoded nothing: ${JSON.stringify(eveFrames)}`);
    for (const p of [ann, abe]) {
      await waitFor(async () => !Object.values((await pageState(p.page)).participants).includes('eve'), {
        timeout: 10_000,
        what: `${p.label} to see eve leave`,
        describe,
      });
    }
    const after = await Promise.all([ann, abe].map((p) => expectDecoding(p, [p === ann ? 'abe' : 'ann'], describe)));
    t.diagnostic(`ann from abe: ${others[0].abe} -> ${after[0].abe} frames; abe from ann: ${others[1].ann} -> ${after[1].ann}`);
    for (const p of [ann, abe]) assert.deepEqual((await pageState(p.page)).errors, [], `${p.label}'s page reported errors`);
  } finally {
    await closeAll(t, 'turn_refused', people);
    await server.stop();
    await coturn.stop();
  }
});
