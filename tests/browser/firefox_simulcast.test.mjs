// Firefox ESR publishing with simulcast (issue #17 point 5): the server's
// offer asks for rids q/h/f (the shipped config); Firefox answers with
// `a=simulcast:send q;h;f`, its own ordering and `a=ssrc` lines. Measured
// here: Firefox publishes layers (no fallback to one encoding): q and h at
// once, f when Firefox starts it (within 20 s in 2 of 3 runs here),
// which the server binds as layers of one track. A Chromium subscriber gets
// one encoding at a time as one continuous track and switches between them
// by its `layout`.
//
// Runs the minimal client (web/minimal.html?test=switch) in both: Firefox
// publishes its 1280x720 fake camera, Chromium receives only. Firefox needs
// its own namespace with a default route (firefox.mjs, inFirefoxNetwork).
//
// Run: node --test tests/browser/firefox_simulcast.test.mjs (needs
// target/debug/noom or NOOM_BIN, and /usr/bin/firefox-esr or FIREFOX_BIN)

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firefoxUnavailable, inFirefoxNetwork, launchFirefoxAndChromium } from './firefox.mjs';
import { pageState, randomRoom, startServer, waitFor } from './lib.mjs';
import { framesAfter, outbound, publisherPause, steadyFrames, switchLayer, view } from './simulcast_view.mjs';

const where = await inFirefoxNetwork(import.meta.url);
if (where.exitCode !== undefined) process.exit(where.exitCode);

const TOKEN = 'firefox-simulcast-t0ken';
const RID_OF_WIDTH = { 320: 'q', 640: 'h', 1280: 'f' };

// The server's view (admin API): the publisher's media entry and its video
// track's rids, and what it forwards of it to the subscriber.
async function serverView(server, publisher, subscriber) {
  const res = await fetch(`${server.url}/api/overview`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200, 'admin overview');
  const out = { media: null, layers: null, forwarded: null };
  for (const room of (await res.json()).rooms) {
    for (const p of room.participants) {
      if (!p.media) continue;
      if (p.id === publisher) {
        out.media = p.media;
        out.layers = p.media.published.find((t) => t.kind === 'video')?.layers ?? null;
      }
      if (p.id === subscriber) out.forwarded = p.media.forwarded.find((f) => f.publisher === publisher && f.kind === 'video') ?? null;
    }
  }
  return out;
}

test('Firefox publishes simulcast encodings; a Chromium subscriber switches between them on one track', {
  timeout: 120_000,
  skip: where.unavailable || firefoxUnavailable() || false,
}, async (t) => {
  const server = await startServer('firefox-simulcast', { NOOM_ADMIN_TOKEN: TOKEN, NOOM_MEDIA_BIND_IPS: where.mediaIp });
  const people = [];
  try {
    const [fx, cr] = await launchFirefoxAndChromium('fx-publisher', 'cr-subscriber', people);
    const room = randomRoom('fxsimulcast');
    const base = `${server.url}/minimal.html?test=switch&room=${encodeURIComponent(room)}&ice=none`;
    await fx.page.goto(`${base}&name=firefox&camera=1280x720`);
    await cr.page.goto(`${base}&name=chromium&publish=none`);
    const describe = async () => {
      // The publisher's side first: CI shows the start of a report.
      const states = {};
      states.outbound = await outbound(fx.page).catch((e) => String(e));
      states.firefoxConsole = fx.consoleLines.slice(-10);
      for (const p of people) states[p.label] = await pageState(p.page).catch((e) => String(e));
      return `${JSON.stringify(states, null, 2)}\n--- server log tail ---\n${server.logTail(30)}`;
    };
    const [pubId, subId] = await Promise.all(
      people.map((p) => waitFor(() => p.page.evaluate(() => window.noom.state === 'joined' && window.noom.you), { what: `${p.label} to join`, describe })),
    );

    // Firefox sets up three encodings (q, h, f: 1/4, 1/2 and full width);
    // the two lower ones flow at once. Its top encoding starts when Firefox
    // decides (bandwidth estimate or CPU: Firefox reports no
    // qualityLimitationReason): within 20 s in 2 of 3 runs on the loaded
    // 2-core test machine, so it is not waited for. Until it starts,
    // Firefox's getStats may have no entry for it at all (seen in CI,
    // 2026-12-02): the three come from the sender's parameters.
    const configured = await fx.page.evaluate(() =>
      window.noom.pc.getSenders().find((s) => s.track?.kind === 'video').getParameters().encodings.map((e) => e.rid),
    );
    assert.deepEqual([...configured].sort(), ['f', 'h', 'q'], 'three encodings configured, rids q, h, f');
    const layers = await waitFor(
      async () => {
        const o = await outbound(fx.page);
        const low = o.filter((e) => e.framesSent > 0 && (e.rid === 'q' || e.rid === 'h'));
        return low.length === 2 ? o : false;
      },
      { timeout: 20_000, interval: 200, what: 'Firefox sending its two lower encodings', describe },
    );
    t.diagnostic(`Firefox encodings: configured ${JSON.stringify(configured)}, sending ${JSON.stringify(layers)}`);
    const width = (rid) => layers.find((e) => e.rid === rid).width;
    assert.deepEqual([width('q'), width('h')], [320, 640], 'q and h are 1/4 and 1/2 of 1280');
    const bound = await waitFor(
      async () => {
        const l = (await serverView(server, pubId, subId)).layers;
        return l && l.includes('q') && l.includes('h') ? l : false;
      },
      { timeout: 10_000, what: 'the server binding the flowing encodings of Firefox video as layers of one track', describe },
    );
    t.diagnostic(`server layers of Firefox video: ${JSON.stringify(bound)}`);

    // Chromium decodes the best flowing encoding by default.
    const v = () => view(cr.page, pubId);
    const start = await waitFor(
      async () => {
        const s = await v();
        const f = await framesAfter(cr.page, pubId, 0);
        return s.frames >= 20 && f[f.length - 1][1] >= 640 ? s : false;
      },
      { timeout: 30_000, what: 'Chromium decoding Firefox video at 640 wide or more', describe },
    );
    assert.equal(start.inbound, 1, 'one inbound video stream');
    assert.equal(start.videoOntracks, 1, 'one video track');
    const steady = await steadyFrames(cr.page, pubId, start.lastAt);
    t.diagnostic(`steady: longest gap ${steady.gap} ms, mean frame interval ${steady.interval.toFixed(1)} ms`);

    // A switch as in simulcast.test.mjs (switchLayer), and the server's
    // admin counter showing it made one.
    const switchTo = async (what, width, height) => {
      const forwarding = async () => (await serverView(server, pubId, subId)).forwarded || false;
      const switchesBefore = (await waitFor(forwarding, { timeout: 10_000, what: 'the server forwarding Firefox video to Chromium', describe })).layer_switches;
      // As in simulcast.test.mjs, Firefox's own pause across a gap counts as steady.
      const sourcePause = async (widths, from, to) => publisherPause((await serverView(server, pubId, subId)).media, RID_OF_WIDTH, widths, from, to);
      await switchLayer(t, { page: cr.page, pid: pubId, width, height, steady, what, describe, sourcePause });
      const switched = await waitFor(async () => {
        const f = await forwarding();
        return f && f.layer_switches > switchesBefore ? f : false;
      }, { timeout: 10_000, what: `${what}: the server counting a layer switch`, describe });
      t.diagnostic(`${what}: server layer ${switched.layer}`);
    };
    await switchTo('down to 320x180', 320, 180);
    await switchTo('up to 640x360', 640, 360);
    const top = (await outbound(fx.page)).find((e) => e.rid === 'f');
    t.diagnostic(`Firefox's top encoding now: ${JSON.stringify(top ?? 'not started')}`);
    if (top && top.framesSent > 0 && top.width === 1280) {
      await switchTo('up to 1280x720', 1280, 720);
      await switchTo('down to 320x180 again', 320, 180);
    }

    for (const p of people) assert.deepEqual((await pageState(p.page)).errors, [], `${p.label}'s page reported errors`);
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
  }
});
