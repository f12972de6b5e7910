// Issue 16 point 1, last sentence: a client that offers its camera with
// three encodings itself works too (contract, Adaptive media: simulcast
// "in either direction of negotiation ... or in its own offer").
//
// The Chromium publisher answers the server's offer with its microphone
// only (the server's recvonly video section, which asks for q/h/f, stays
// unused) and adds its 1280x720 fake camera itself:
// addTransceiver(track, {direction: 'sendonly', sendEncodings: lo/mid/hi
// at 1/4, 1/2, full size}) and its own `offer` over the WebSocket, as a
// third-party client following the contract may (rids other than the
// server's: "any rids").
//
// Asserted: three outbound encodings lo/mid/hi about 320/640/1280 wide; the
// admin overview lists the three layers of that track; a Chromium
// subscriber decodes one continuous track in the publisher's stream, named
// as a camera (not `screen...`: the web client would show a screen share
// apart, on the big tile); layout 320x180 / 1280x720 / 640x360 -> frames of
// that width, same track and SSRC, no freeze beyond the steady gap plus two
// frame intervals; hidden -> no packets, and after the server's wait the
// publisher is told (by the mid of its own section) that only lo is
// watched, and stops mid and hi; shown again -> a frame within 1 s and the
// 640-wide encoding back.
//
// Pages: web/minimal.html?test=switch&publish=offer&rids=lo,mid,hi
// (web/camera_offer.js). Run: node --test tests/browser/client_simulcast.test.mjs
// (needs target/debug/noom).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { launchPerson, pageState, randomRoom, startServer, waitFor } from './lib.mjs';
import { framesAfter, outbound, publisherPause, sendLayout, steadyFrames, switchLayer, view, viewAfter, uplink } from './simulcast_view.mjs';

const TOKEN = 'client-simulcast-admin-t0ken';
const RIDS = ['lo', 'mid', 'hi'];
const RID_OF_WIDTH = { 320: 'lo', 640: 'mid', 1280: 'hi' };

// One participant's entry in the admin overview.
async function adminEntry(server, participant) {
  const res = await fetch(`${server.url}/api/overview`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200, 'admin overview');
  const overview = await res.json();
  for (const room of overview.rooms) {
    for (const p of room.participants) if (p.id === participant && p.media) return p.media;
  }
  return null;
}

// The publisher's video transceivers that send: their mid, direction and
// encodings' rids and active flags.
const sendingVideo = (page) =>
  page.evaluate(() =>
    window.noom.pc
      .getTransceivers()
      .filter((t) => t.sender.track && t.sender.track.kind === 'video')
      .map((t) => ({
        mid: t.mid,
        direction: t.currentDirection,
        encodings: t.sender.getParameters().encodings.map((e) => ({ rid: e.rid, active: e.active })),
      })),
  );

// The msid track id the server gave the subscriber's video from `pid`.
const msidTrackIds = (page, pid) =>
  page.evaluate(
    (id) => [...window.noom.pc.remoteDescription.sdp.matchAll(/^a=msid:(\S+) (\S+)/gm)].filter((m) => m[1] === id).map((m) => m[2]),
    pid,
  );

test('a camera the client offers itself as three encodings: one tile-sized continuous track out', { timeout: 120_000 }, async (t) => {
  const server = await startServer('client_simulcast', { NOOM_ADMIN_TOKEN: TOKEN });
  const people = [];
  try {
    const room = randomRoom('client-simulcast');
    const pub = await launchPerson('cs-publisher');
    people.push(pub);
    const sub = await launchPerson('cs-subscriber');
    people.push(sub);
    const base = `${server.url}/minimal.html?test=switch&room=${encodeURIComponent(room)}&ice=none`;
    await pub.page.goto(`${base}&name=publisher&camera=1280x720&publish=offer&rids=${RIDS.join(',')}`);
    await sub.page.goto(`${base}&name=subscriber&publish=none`);
    const describe = async () => {
      // The publisher's side first: CI shows the start of a report.
      const states = {};
      states.outbound = await outbound(pub.page).catch((e) => String(e));
      states.uplink = await uplink(pub.page).catch((e) => String(e));
      states.sending = await sendingVideo(pub.page).catch((e) => String(e));
      for (const p of people) states[p.label] = await pageState(p.page).catch((e) => String(e));
      return `${JSON.stringify(states, null, 2)}\n--- server log tail ---\n${server.logTail(30)}`;
    };
    const [pubId, subId] = await Promise.all(
      [pub, sub].map((p) =>
        waitFor(() => p.page.evaluate(() => window.noom.state === 'joined' && window.noom.you), { what: `${p.label} to join`, describe }),
      ),
    );

    // The camera goes out in a section of the publisher's own offer, not
    // in the server's video section (mid 1).
    await waitFor(async () => (await outbound(pub.page)).some((e) => e.framesSent > 0), { what: 'the publisher to send video', describe });
    const [camera, ...more] = await sendingVideo(pub.page);
    assert.equal(more.length, 0, 'one video sender');
    assert.notEqual(camera.mid, '1', 'the camera is not in the server-offered video section');
    assert.equal(camera.direction, 'sendonly', 'the camera section is negotiated sendonly');
    assert.deepEqual(camera.encodings.map((e) => e.rid), RIDS, 'the server accepted all three rids');

    // Three encodings about 320/640/1280 wide, within 10 s.
    const firstSent = Date.now();
    const layers = await waitFor(
      async () => {
        const o = await outbound(pub.page);
        return o.length === 3 && o.every((e) => e.width > 0) ? o : false;
      },
      { timeout: 10_000, interval: 200, what: 'three outbound encodings with sizes', describe },
    );
    t.diagnostic(`publisher encodings after ${Date.now() - firstSent} ms: ${JSON.stringify(layers)}`);
    assert.deepEqual(layers.map((e) => e.rid), RIDS, 'rids lo, mid, hi, smallest first');
    assert.deepEqual(layers.map((e) => e.width), [320, 640, 1280], 'widths 1/4, 1/2, full');

    // The server sees one video track with the three layers.
    const published = await waitFor(
      async () => {
        const media = await adminEntry(server, pubId);
        const video = media && media.published.filter((p) => p.kind === 'video');
        return video && video.length === 1 && video[0].layers.length === 3 ? video : false;
      },
      { timeout: 10_000, what: 'the admin overview to list the three layers', describe },
    );
    assert.deepEqual([...published[0].layers].sort(), [...RIDS].sort(), 'the overview lists lo, mid, hi');

    // By default the subscriber gets the top encoding, on one track in the
    // publisher's stream, named as a camera.
    const v = () => view(sub.page, pubId);
    const start = await waitFor(
      async () => {
        const s = await v();
        return s.frameWidth === 1280 && s.frames >= 20 ? s : false;
      },
      { timeout: 30_000, what: 'the subscriber to decode the 1280-wide encoding', describe },
    );
    assert.equal(start.inbound, 1, 'one inbound video stream');
    assert.equal(start.videoOntracks, 1, 'one video track');
    const names = await msidTrackIds(sub.page, pubId);
    assert.ok(names.length >= 2 && names.every((n) => !n.startsWith('screen')), `a camera, not a screen share: msid track ids ${names}`);
    const steady = await steadyFrames(sub.page, pubId, start.lastAt);
    t.diagnostic(`steady: longest gap ${steady.gap} ms, mean frame interval ${steady.interval.toFixed(1)} ms`);

    const layout = (width, height) => sendLayout(sub.page, pubId, width, height);
    const replied = (req) => waitFor(() => sub.page.evaluate((r) => window.noom.replies[r], req), { timeout: 10_000, what: `the reply to ${req}`, describe });
    // As simulcast.test.mjs (simulcast_view.mjs, switchLayer): no gap over
    // the steady one plus two frames. (The 200-217 ms gap about 400 ms
    // after an upgrade's first frame that 2 of 3 CI runs showed here was the
    // allocator's next tick capping the encoding a grown tile had just
    // climbed to; a `layout` is now allocated at once.)
    // As there, the publisher's own pause across a gap counts as steady.
    const sourcePause = async (widths, from, to) => publisherPause(await adminEntry(server, pubId), RID_OF_WIDTH, widths, from, to);
    const switchTo = (what, width, height) => switchLayer(t, { page: sub.page, pid: pubId, width, height, steady, what, describe, sourcePause });
    await switchTo('down to 320x180', 320, 180);
    await switchTo('up to 1280x720', 1280, 720);
    await switchTo('to 640x360', 640, 360);

    // Hidden: nothing forwarded while the publisher keeps sending, and the
    // publisher told, by its own section's mid, to send lo only.
    const hidden = await layout(0, 0);
    assert.equal((await replied(hidden.req)).type, 'ok');
    const paused = await waitFor(
      async () => {
        const f = ((await adminEntry(server, subId)) || { forwarded: [] }).forwarded.find((x) => x.publisher === pubId && x.kind === 'video');
        return f && f.paused ? f : false;
      },
      { timeout: 10_000, what: 'the server to mark the video hidden', describe },
    );
    // Counted once every packet sent before the server stopped the video
    // has arrived: stats taken after the server said so.
    const receivedBefore = (await viewAfter(sub.page, pubId, Date.now(), describe)).packetsReceived;
    const told = await waitFor(
      async () => {
        const list = await pub.page.evaluate((at) => window.noom.encodings.filter((e) => e.at > at), hidden.at);
        return list.find((e) => e.active && e.active.lo === true && e.active.mid === false && e.active.hi === false) || false;
      },
      { timeout: 10_000, what: 'the publisher to be told only lo is watched', describe },
    );
    t.diagnostic(`hidden -> encodings ${JSON.stringify(told.active)} after ${Math.round(told.at - hidden.at)} ms`);
    assert.equal(told.mid, camera.mid, 'the encodings message names the camera section');
    const stopped = await waitFor(
      async () => {
        const [c] = await sendingVideo(pub.page);
        return c.encodings.map((e) => e.active).join() === 'true,false,false' ? c : false;
      },
      { timeout: 5_000, what: 'the publisher to stop mid and hi', describe },
    );
    assert.equal(stopped.mid, camera.mid);
    const stillPaused = ((await adminEntry(server, subId)) || { forwarded: [] }).forwarded.find((x) => x.publisher === pubId && x.kind === 'video');
    assert.equal(stillPaused.packets, paused.packets, 'no video packet forwarded to a hidden tile');
    assert.equal(stillPaused.layer, null, 'no encoding chosen while hidden');
    assert.equal((await v()).packetsReceived, receivedBefore, 'no video packet arrived at the subscriber');

    // Shown again: a frame within 1 s (lo, the encoding still sent), then
    // the 640-wide encoding, asked for again.
    const shown = await layout(640, 360);
    const resumed = await waitFor(async () => (await framesAfter(sub.page, pubId, shown.at))[0] || false, {
      timeout: 10_000,
      interval: 50,
      what: 'video after showing the tile again',
      describe,
    });
    const resumeMs = resumed[0] - shown.at;
    const mid = await waitFor(async () => (await framesAfter(sub.page, pubId, shown.at)).find((f) => f[1] === 640) || false, {
      timeout: 10_000,
      interval: 100,
      what: 'the 640-wide encoding after showing the tile again',
      describe,
    });
    t.diagnostic(`shown again -> first frame ${Math.round(resumeMs)} ms, first 640-wide ${Math.round(mid[0] - shown.at)} ms`);
    assert.ok(resumeMs < 1000, `video resumed in ${Math.round(resumeMs)} ms (< 1 s)`);
    const end = await v();
    assert.deepEqual(end.trackIds, start.trackIds, 'the same remote track throughout');
    assert.equal(end.videoOntracks, 1, 'no new track throughout');
    assert.deepEqual(await pub.page.evaluate(() => window.noom.errors), [], 'no error at the publisher');
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
  }
});
