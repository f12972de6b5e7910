// ICE over TCP (issue #17, point 3): a Chromium whose network drops all its
// UDP, with no TURN server configured, reaches Noom's media through the
// passive ICE-TCP candidate each shard offers on its media port, and
// decodes video both ways with a normal Chromium.
//
// Run: node --test tests/browser/ice_tcp.test.mjs  (needs target/debug/noom,
// root, nft and nsenter, as scripts/test.sh runs it)

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort, launchPerson, randomRoom, startServer } from './lib.mjs';
import { udpBlockedNamespace, udpBlockedNamespaceUnavailable } from './netns.mjs';
import { clientState, expectDecoding, joinViaForm } from './web_call.mjs';

// The page's selected candidate pair, from getStats.
const selectedPair = (page) =>
  page.evaluate(async () => {
    const report = await window.noomApp.pc.getStats();
    let pair = null;
    report.forEach((s) => {
      if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
      const p = report.get(s.selectedCandidatePairId);
      const side = (id) => {
        const c = report.get(id);
        return { type: c.candidateType, protocol: c.protocol, tcpType: c.tcpType ?? null, address: c.address, port: c.port };
      };
      pair = { local: side(p.localCandidateId), remote: side(p.remoteCandidateId) };
    });
    return pair;
  });

test('a Chromium whose UDP is blocked reaches the media over ICE-TCP, with no TURN server', { timeout: 240_000 }, async (t) => {
  const unavailable = udpBlockedNamespaceUnavailable();
  if (unavailable) return t.skip(unavailable);
  const ns = await udpBlockedNamespace('ice_tcp');
  const port = await freePort();
  // No STUN or TURN (?ice=none below): only Noom's own candidates.
  const server = await startServer('ice_tcp', { NOOM_HTTP_LISTEN: `0.0.0.0:${port}`, NOOM_MEDIA_BIND_IPS: ns.hostIp }, { port });
  const people = [];
  try {
    const origin = `http://${ns.hostIp}:${port}`;
    // Camera and microphone need a secure context; an http:// origin other
    // than localhost is one only by this flag.
    const secure = [`--unsafely-treat-insecure-origin-as-secure=${origin}`];
    const bob = await launchPerson('bob', { extraArgs: secure });
    people.push(bob);
    const carol = await launchPerson('carol', { executablePath: ns.executablePath, extraArgs: secure });
    people.push(carol);
    const describe = async () => {
      const states = await Promise.all(people.map(async (p) => `${p.label}: ${JSON.stringify(await clientState(p.page).catch(String))} ` +
        `pc ${await p.page.evaluate(() => window.noomApp.pc?.connectionState).catch(String)} console: ${p.consoleLines.slice(-6).join(' | ')}`));
      return `${states.join('\n')}\n--- noom log tail (${server.logPath}) ---\n${server.logTail(30)}`;
    };
    const room = randomRoom('ice-tcp');
    await joinViaForm(bob, origin, room, describe);
    await joinViaForm(carol, origin, room, describe);
    await expectDecoding(carol, ['bob'], describe);
    await expectDecoding(bob, ['carol'], describe);

    const pair = await selectedPair(carol.page);
    t.diagnostic(`carol's selected pair: ${JSON.stringify(pair)}`);
    assert.equal(pair?.local?.protocol, 'tcp', `carol's media goes over TCP: ${JSON.stringify(pair)}`);
    assert.equal(pair.remote.address, ns.hostIp, "to Noom's own candidate, not a relay");
    assert.equal(pair.remote.tcpType, 'passive', `Noom's candidate is passive: ${JSON.stringify(pair)}`);
    assert.ok(ns.droppedUdpPackets() > 0, 'carol did try UDP, and it was dropped');
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const open = [...metrics.matchAll(/^noom_ice_tcp_connections\{[^}]*\} (\d+)/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
    assert.ok(open >= 1, `the server counts carol's ICE-TCP connection (noom_ice_tcp_connections = ${open})`);
    const bobPair = await selectedPair(bob.page);
    assert.equal(bobPair?.local?.protocol, 'udp', `bob, whose UDP works, stays on UDP: ${JSON.stringify(bobPair)}`);
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
    ns.close();
  }
});
