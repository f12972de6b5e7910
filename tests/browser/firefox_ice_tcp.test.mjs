// Firefox ESR over ICE-TCP (issue #17 point 3): with every UDP datagram to
// the media address dropped and no STUN or TURN server, Firefox and
// Chromium reach Noom through its passive TCP candidate only, see each
// other's video on the right tiles, and Firefox's selected candidate pair
// is TCP. (tests/browser/ice_tcp.test.mjs covers Chromium on its own.)
//
// Firefox needs a default route to gather candidates, so this file re-runs
// itself in the namespace of firefox.mjs (inFirefoxNetwork); the UDP block
// is an nftables table in that namespace, which dies with it.
//
// Run: node --test tests/browser/firefox_ice_tcp.test.mjs

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { firefoxUnavailable, inFirefoxNetwork, launchFirefoxAndChromium } from './firefox.mjs';
import { artifactsDir, randomRoom, startServer } from './lib.mjs';
import { expectDecoding, joinViaForm } from './web_call.mjs';

const where = await inFirefoxNetwork(import.meta.url);
if (where.exitCode !== undefined) process.exit(where.exitCode);

// The selected candidate pair of a page's media connection: both ends'
// protocol and type. Chromium names it in its transport stats
// (selectedCandidatePairId); Firefox has no transport stats but marks the
// pair `selected`. A pair's `state` is no guide: Chromium flips the selected
// pair to "in-progress" while each keepalive ping is in flight.
const selectedPair = (page) =>
  page.evaluate(async () => {
    const report = await window.noomApp.pc.getStats();
    const stats = [...report.values()];
    const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair = transport ? report.get(transport.selectedCandidatePairId) : stats.find((s) => s.type === 'candidate-pair' && s.selected);
    if (!pair) return null;
    const local = stats.find((s) => s.id === pair.localCandidateId);
    const remote = stats.find((s) => s.id === pair.remoteCandidateId);
    return { local: `${local?.protocol} ${local?.candidateType}`, remote: `${remote?.protocol} ${remote?.candidateType} ${remote?.port}` };
  });

// What a page receives of video: enough to tell packets that stopped
// arriving from packets that arrive and are not decoded.
const inboundVideo = (page) =>
  page.evaluate(async () => {
    const report = await window.noomApp.pc.getStats();
    const keys = ['packetsReceived', 'packetsLost', 'framesReceived', 'framesDecoded', 'keyFramesDecoded', 'framesDropped', 'nackCount', 'pliCount', 'firCount', 'jitterBufferDelay', 'jitterBufferEmittedCount'];
    return [...report.values()]
      .filter((s) => s.type === 'inbound-rtp' && s.kind === 'video')
      .map((s) => Object.fromEntries(['ssrc', ...keys].map((k) => [k, s[k]])));
  });

test('Firefox ESR and Chromium call over ICE-TCP when UDP is blocked', {
  timeout: 120_000,
  skip: where.unavailable || firefoxUnavailable() || false,
}, async (t) => {
  execFileSync('nft', ['-f', '-'], {
    input: `table inet noom_no_udp {\n  chain out {\n    type filter hook output priority 0;\n    ip daddr ${where.mediaIp} meta l4proto udp drop\n  }\n}\n`,
  });
  const server = await startServer('firefox_ice_tcp', { NOOM_MEDIA_BIND_IPS: where.mediaIp });
  const people = [];
  let failed = true;
  try {
    const [fx, cr] = await launchFirefoxAndChromium('firefox', 'chromium', people);
    const describe = async () => {
      const pairs = await Promise.all(people.map((p) => selectedPair(p.page).catch((e) => String(e))));
      const inbound = await Promise.all(people.map((p) => inboundVideo(p.page).catch((e) => String(e))));
      return `selected pairs: ${JSON.stringify(pairs)}\ninbound video: ${JSON.stringify(inbound)}\n--- server WARN/ERROR digest ---\n${server.logSummary()}\n--- server log tail ---\n${server.logTail(20)}`;
    };
    const room = randomRoom('fxtcp');
    await Promise.all([joinViaForm(fx, server.url, room, describe), joinViaForm(cr, server.url, room, describe)]);
    await Promise.all([expectDecoding(fx, ['chromium'], describe), expectDecoding(cr, ['firefox'], describe)]);

    for (const p of people) {
      const pair = await selectedPair(p.page);
      t.diagnostic(`${p.label}: ${pair?.local} -> ${pair?.remote}`);
      assert.match(pair?.local || '', /^tcp /, `${p.label}'s selected pair leaves over TCP: ${JSON.stringify(pair)}`);
      assert.match(pair?.remote || '', /^tcp host /, `${p.label}'s selected pair ends at Noom's passive TCP host candidate: ${JSON.stringify(pair)}`);
    }
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const open = [...metrics.matchAll(/^noom_ice_tcp_connections\{[^}]*\} (\d+)/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
    assert.ok(open >= 2, `the server counts both ICE-TCP connections (noom_ice_tcp_connections = ${open})`);
    failed = false;
  } finally {
    if (failed) {
      for (const p of people) await p.page.screenshot({ path: path.join(artifactsDir, `firefox_ice_tcp-${p.label}.png`) }).catch(() => {});
    }
    await Promise.all(people.map((p) => p.close().catch((e) => t.diagnostic(`closing ${p.label}: ${e.message}`))));
    await server.stop();
  }
});
