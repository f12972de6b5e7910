// Issue 16, point 8: a subscriber whose link is limited to 500 kbit/s.
//
// A publisher sends its 1280x720 fake camera as three simulcast encodings
// (q/h/f, about 320/640/1280 wide; server config simulcast = true). Two
// subscribers receive it: one on the host, unlimited, and one whose
// Chromium runs in a network namespace of its own (netns.mjs), its downlink
// limited by a `tc tbf` on the test's end of its veth. Once both show the
// 1280-wide picture, the limit goes on: the limited subscriber must show
// the 320-wide encoding within 5 s (the server's bandwidth estimate drops,
// its allocator caps the video at the lowest encoding), keep showing frames
// with no gap over 1 s while limited, and show 1280-wide frames again within
// 20 s of the limit being lifted (padding probes raise the estimate). The
// unlimited subscriber stays on the 1280-wide encoding throughout, with no
// encoding switch at the server.
//
// Run: node --test tests/browser/shaped_link.test.mjs  (needs target/debug/noom,
// root, tc, nft and nsenter, as scripts/test.sh runs it; NOOM_TEST_PROGRESS=1
// prints each step's time as it happens).
//
// Known flake (2026-11-30, 11 runs on the loaded 2-core VM): in 6 runs the
// publisher's Chromium did not keep its third (1280-wide) encoding, its own
// uplink estimate stuck near 1.1 Mbit/s ("bandwidth" limited): the test
// then fails waiting for three encodings or for the top one. That is the
// publisher's ramp (server -> publisher feedback), not this allocation.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort, launchPerson, pageState, randomRoom, startServer, waitFor } from './lib.mjs';
import { browserNamespace, udpBlockedNamespaceUnavailable } from './netns.mjs';
import { simulcastConfig, subscriberView as viewOf, tcUnavailable } from './shaped_view.mjs';
import { framesAfter, maxGap, outbound, uplink } from './simulcast_view.mjs';

const TOKEN = 'shaped-link-admin-t0ken';
const subscriberView = (server, subscriber, publisher) => viewOf(server, TOKEN, subscriber, publisher);
// The "about 500 kbit/s". Chromium's fake camera sends its 640x360
// encoding at 350-450 kbit/s (measured here), which with audio a 500 kbit/s
// link still carries (the allocator rightly kept it there); 400 kbit/s
// leaves room for the lowest encoding only.
const LIMIT_KBIT = 400;

const lastFrame = (page, pid) =>
  page.evaluate((id) => {
    const list = window.noom.frames[id] || [];
    const last = list[list.length - 1];
    return last ? { at: last[0], width: last[2], count: list.length } : { at: 0, width: 0, count: 0 };
  }, pid);

test(`a subscriber limited to ${LIMIT_KBIT} kbit/s gets the lowest encoding and climbs back after the limit; an unlimited one keeps the top`, { timeout: 90_000 }, async (t) => {
  const unavailable = udpBlockedNamespaceUnavailable() || tcUnavailable();
  if (unavailable) return t.skip(unavailable);
  const t0 = Date.now();
  const step = (m) => process.env.NOOM_TEST_PROGRESS && console.error(`[${Date.now() - t0} ms] ${m}`);
  const ns = await browserNamespace('shaped');
  const config = simulcastConfig();
  const people = [];
  let server;
  try {
    // HTTP on every address, media on the test's end of the veth: the host
    // browsers reach it locally, the limited one through its veth.
    const port = await freePort();
    server = await startServer(
      'shaped-link',
      { NOOM_HTTP_LISTEN: `0.0.0.0:${port}`, NOOM_MEDIA_BIND_IPS: ns.hostIp, NOOM_ADMIN_TOKEN: TOKEN, NOOM_MEDIA_BANDWIDTH_ALLOCATION: 'true' },
      { port, args: config.args },
    );
    const origin = `http://${ns.hostIp}:${port}`;
    // getUserMedia needs a secure context; an http:// origin other than
    // localhost is one only by this flag.
    const secure = [`--unsafely-treat-insecure-origin-as-secure=${origin}`];
    const pub = await launchPerson('sl-publisher', { extraArgs: secure });
    people.push(pub);
    const free = await launchPerson('sl-unlimited', { extraArgs: secure });
    people.push(free);
    const limited = await launchPerson('sl-limited', { executablePath: ns.executablePath, extraArgs: secure });
    people.push(limited);
    step('browsers up');
    const room = randomRoom('shaped');
    const base = `${origin}/minimal.html?test=switch&room=${encodeURIComponent(room)}&ice=none`;
    await pub.page.goto(`${base}&name=publisher&camera=1280x720`);
    await free.page.goto(`${base}&name=unlimited&publish=none`);
    await limited.page.goto(`${base}&name=limited&publish=none`);
    let ids = {};
    const describe = async () => {
      // The publisher's side first: CI shows the start of a report.
      const states = {};
      states.outbound = await outbound(pub.page).catch((e) => String(e));
      states.uplink = await uplink(pub.page).catch((e) => String(e));
      for (const who of ['free', 'limited']) {
        states[`server view of ${who}`] = ids[who] ? await subscriberView(server, ids[who], ids.pub).catch(String) : null;
      }
      for (const p of people) states[p.label] = await pageState(p.page).catch((e) => String(e));
      return `${JSON.stringify(states, null, 2)}\n--- server log tail (${server.logPath}) ---\n${server.logTail(30)}`;
    };
    const [pubId, freeId, limitedId] = await Promise.all(
      [pub, free, limited].map((p) =>
        waitFor(() => p.page.evaluate(() => window.noom.state === 'joined' && window.noom.you), { timeout: 15_000, what: `${p.label} to join`, describe }),
      ),
    );
    ids = { pub: pubId, free: freeId, limited: limitedId };
    step('joined');

    // Three encodings flowing, and both subscribers on the top one.
    const joined = Date.now();
    const layers = await waitFor(
      async () => {
        const o = await outbound(pub.page);
        const encodings = o.filter((e) => e.rid);
        return encodings.length === 3 && encodings.every((e) => e.width > 0) ? encodings : false;
      },
      { timeout: 30_000, interval: 200, what: 'three outbound encodings with sizes', describe },
    );
    step('three encodings');
    assert.deepEqual(layers.map((e) => e.width), [320, 640, 1280], 'encodings 320, 640 and 1280 wide');
    // Steady on the top encoding: two seconds of only 1280-wide frames at
    // both (the allocation has settled; a first picture is not enough).
    const steadyOnTop = async (p) => {
      const last = await lastFrame(p.page, pubId);
      const recent = await framesAfter(p.page, pubId, last.at - 2000);
      const all = await framesAfter(p.page, pubId, 0);
      return all.length > 0 && all[0][0] < last.at - 2000 && recent.every((f) => f[1] === 1280);
    };
    for (const p of [free, limited]) {
      await waitFor(() => steadyOnTop(p), { timeout: 25_000, interval: 200, what: `${p.label} to show only the 1280-wide encoding for 2 s`, describe });
    }
    t.diagnostic(`three encodings and both subscribers on 1280 wide ${Date.now() - joined} ms after joining`);
    step('both on top');
    const start = Date.now();
    const freeBefore = await subscriberView(server, freeId, pubId);
    assert.equal(freeBefore.video.layer, 'f', 'the unlimited subscriber gets the top encoding (admin)');

    // The limit: the lowest encoding within 5 s, frames all along.
    ns.limitRate(LIMIT_KBIT);
    const cut = Date.now();
    const low = await waitFor(async () => (await framesAfter(limited.page, pubId, cut)).find((f) => f[1] === 320) || false, {
      timeout: 10_000,
      interval: 50,
      what: 'a 320-wide frame at the limited subscriber',
      describe,
    });
    const toLowMs = Math.round(low[0] - cut);
    step(`low after ${toLowMs} ms`);
    const limitedLow = await subscriberView(server, limitedId, pubId);
    t.diagnostic(`limited to ${LIMIT_KBIT} kbit/s -> first 320-wide frame after ${toLowMs} ms; server: ${JSON.stringify(limitedLow)}`);
    assert.ok(toLowMs < 5000, `lowest encoding within 5 s of the limit (took ${toLowMs} ms)`);
    assert.equal(limitedLow.video.layer, 'q', 'the server forwards the lowest encoding (admin)');
    assert.equal(limitedLow.video.max_layer, 0, "the allocator's cap is the lowest encoding (admin)");
    // Four more seconds on the limited link: it stays there, and decodes.
    await waitFor(async () => (await lastFrame(limited.page, pubId)).at > low[0] + 4000, { timeout: 10_000, interval: 100, what: 'four seconds of frames on the limited link', describe });
    const whileLimited = await framesAfter(limited.page, pubId, low[0]);
    const wider = whileLimited.filter((f) => f[1] !== 320).length;
    assert.equal(wider, 0, `only 320-wide frames while limited (${wider} of ${whileLimited.length} were not)`);
    const limitedView = await subscriberView(server, limitedId, pubId);
    t.diagnostic(`while limited: estimate ${limitedView.bandwidth?.estimate_bps} bit/s, acknowledged ${limitedView.bandwidth?.acknowledged_bps}, loss ${limitedView.bandwidth?.loss}`);

    // The limit lifted: the top encoding again within 20 s.
    ns.unlimitRate();
    const lift = Date.now();
    const top = await waitFor(async () => (await framesAfter(limited.page, pubId, lift)).find((f) => f[1] === 1280) || false, {
      timeout: 25_000,
      interval: 100,
      what: 'a 1280-wide frame at the limited subscriber after the lift',
      describe,
    });
    const toTopMs = Math.round(top[0] - lift);
    step(`top after ${toTopMs} ms`);
    await waitFor(async () => (await lastFrame(limited.page, pubId)).at > top[0] + 500, { timeout: 10_000, interval: 100, what: 'frames after the climb', describe });
    const limitedFrames = await framesAfter(limited.page, pubId, cut - 1000);
    const window = limitedFrames.filter((f) => f[0] <= top[0] + 500);
    const gap = maxGap(window);
    // Where the gap ended, so a failure says which phase froze.
    const gapEnd = window.find((f, i) => i > 0 && Math.round(f[0] - window[i - 1][0]) === gap);
    const gapAt = gapEnd ? `ending ${Math.round(gapEnd[0] - cut)} ms after the cut (${Math.round(gapEnd[0] - lift)} ms after the lift) on a ${gapEnd[1]}-wide frame` : 'none';
    t.diagnostic(`lifted -> first 1280-wide frame after ${toTopMs} ms; longest frame gap at the limited subscriber from the cut on: ${gap} ms, ${gapAt}`);
    assert.ok(toTopMs < 20_000, `top encoding within 20 s of the lift (took ${toTopMs} ms)`);
    assert.ok(gap <= 1000, `the limited subscriber's video kept going (longest gap ${gap} ms)`);

    // The unlimited subscriber: the top encoding throughout.
    const freeFrames = await framesAfter(free.page, pubId, start);
    const freeAfter = await subscriberView(server, freeId, pubId);
    const notTop = freeFrames.filter((f) => f[1] !== 1280).length;
    t.diagnostic(`unlimited: ${freeFrames.length} frames since the top was reached, longest gap ${maxGap(freeFrames)} ms, estimate ${freeAfter.bandwidth?.estimate_bps} bit/s`);
    assert.equal(notTop, 0, `the unlimited subscriber showed only 1280-wide frames (${notTop} of ${freeFrames.length} were not)`);
    assert.equal(freeAfter.video.layer_switches, freeBefore.video.layer_switches, 'no encoding switch for the unlimited subscriber (admin)');
    assert.equal(freeAfter.video.layer, 'f');
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server?.stop();
    ns.close();
    config.cleanup();
  }
});
