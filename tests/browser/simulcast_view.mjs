// What simulcast tests read from the minimal client (web/minimal.js,
// ?test=...): a publisher's outbound encodings, a subscriber's view of one
// publisher's video, its presented frames, and the longest gap in them;
// and the layer switch they all check the same way (`switchLayer`).

import assert from 'node:assert/strict';
import { waitFor } from './lib.mjs';

// The publisher's outbound video encodings: [{rid, width, framesSent}].
export const outbound = (page) =>
  page.evaluate(async () => {
    const out = [];
    (await window.noom.pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out.push({ rid: s.rid ?? null, width: s.frameWidth ?? 0, framesSent: s.framesSent ?? 0 });
      }
    });
    return out.sort((a, b) => a.width - b.width);
  });

// Why a publisher may hold an encoding back (for failure reports): its
// bandwidth estimate (the selected candidate pair's
// availableOutgoingBitrate) and each encoding's qualityLimitationReason.
export const uplink = (page) =>
  page.evaluate(async () => {
    const report = await window.noom.pc.getStats();
    const out = { availableOutgoingBitrate: null, limits: {} };
    report.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate) out.availableOutgoingBitrate = s.availableOutgoingBitrate;
      if (s.type === 'outbound-rtp' && s.kind === 'video') out.limits[s.rid ?? '-'] = s.qualityLimitationReason;
    });
    return out;
  });

// What the subscriber knows of the publisher's video.
export const view = (page, pid) =>
  page.evaluate(async (id) => {
    const n = window.noom;
    const stats = (await n.stats()).filter((s) => s.participant === id && s.kind === 'video');
    const stream = n.remoteStreams[id];
    const frames = n.frames[id] || [];
    const last = frames[frames.length - 1];
    return {
      inbound: stats.length,
      ssrcs: stats.map((s) => s.ssrc),
      framesDecoded: stats.reduce((a, s) => a + s.framesDecoded, 0),
      packetsReceived: stats.reduce((a, s) => a + s.packetsReceived, 0),
      statsAt: stats.reduce((a, s) => Math.max(a, s.timestamp ?? 0), 0),
      frameWidth: stats[0] ? stats[0].frameWidth : 0,
      trackIds: stream ? stream.getVideoTracks().map((t) => t.id) : [],
      videoOntracks: n.ontracks.filter((e) => e.kind === 'video' && e.streamId === id).length,
      frames: frames.length,
      lastWidth: last ? last[2] : 0,
      lastAt: last ? last[0] : 0,
    };
  }, pid);

// The subscriber's view taken after `at` (epoch ms): getStats may answer
// with a report cached before it (Chromium keeps one for 50 ms), which
// misses packets that were on their way then.
export const viewAfter = (page, pid, at, describe) =>
  waitFor(async () => {
    const v = await view(page, pid);
    return v.statsAt > at ? v : false;
  }, { timeout: 5_000, interval: 20, what: 'inbound stats taken after the server stopped the video', describe });

// The subscriber's receive-side counters for `pid`'s video (for reports):
// what it asked to be resent or refreshed, lost, dropped and froze on.
export const inboundCounters = (page, pid) =>
  page.evaluate(async (id) => {
    const n = window.noom;
    const ssrcs = new Set((await n.stats()).filter((s) => s.participant === id && s.kind === 'video').map((s) => s.ssrc));
    const out = {};
    (await n.pc.getStats()).forEach((s) => {
      if (s.type !== 'inbound-rtp' || !ssrcs.has(s.ssrc)) return;
      for (const k of ['framesReceived', 'framesDecoded', 'packetsReceived', 'packetsLost', 'nackCount', 'pliCount', 'firCount', 'framesDropped', 'freezeCount', 'keyFramesDecoded', 'jitterBufferDelay', 'jitterBufferEmittedCount']) out[k] = s[k];
    });
    return out;
  }, pid);

// Presented frames of `pid` after `from` (epoch ms): [[at, width], ...].
export const framesAfter = (page, pid, from) =>
  page.evaluate(([id, a]) => (window.noom.frames[id] || []).filter((f) => f[0] > a).map((f) => [f[0], f[2]]), [pid, from]);

export const maxGap = (frames) => {
  let gap = 0;
  for (let i = 1; i < frames.length; i++) gap = Math.max(gap, frames[i][0] - frames[i - 1][0]);
  return Math.round(gap);
};

// The longest gap a layer switch may have caused: between the presented
// frames from the last one before the switch was asked for (`sentAt`), or
// a second before the first frame of the new encoding (`firstAt`) when that
// came later, to a second after it. Frames before the request cannot show
// its effect; nor can the old encoding's frames while an upgrade waits for
// the link to prove its rate (the allocator probes first: seconds), so a
// hiccup there (a loaded machine) is not the switch's. Returns
// { gap, end: [at, width] | null }.
export async function switchGap(page, pid, sentAt, firstAt) {
  const from = Math.max(sentAt, firstAt - 1000);
  const frames = await framesAfter(page, pid, from - 1000);
  const before = frames.filter((f) => f[0] <= from).length;
  const window = frames.slice(Math.max(0, before - 1)).filter((f) => f[0] <= firstAt + 1000);
  const gap = maxGap(window);
  const end = window.find((f, i) => i > 0 && Math.round(f[0] - window[i - 1][0]) === gap) ?? null;
  return { gap, end };
}

// The publisher's longest pause between pictures a receiver can decode
// (admin API `source_pauses` of its `media` entry, as they reached the
// server) in the encodings `widths` wide (`ridOfWidth`: width -> rid) that
// could have caused a subscriber's gap from `from` to `to` (epoch ms):
// pictures reach the screen 30-100 ms after the server, so the pauses
// starting between `from` - 250 ms and `to` (one that began earlier, an
// encoding the publisher had stopped, did not make the subscriber's gap:
// the server waits for it to flow). Chromium's encoder skips frames after
// a keyframe on a busy machine, among them the layer-sync picture later
// ones need, and every layer switch asks for a keyframe
// (sfu/src/source_pauses.rs, sfu/src/decodable_pictures.rs).
export function publisherPause(media, ridOfWidth, widths, from, to) {
  const rids = new Set(widths.map((w) => ridOfWidth[w]).filter(Boolean));
  let pause = 0;
  for (const track of media?.published.filter((t) => t.kind === 'video') || []) {
    for (const s of track.source_pauses) {
      const started = s.ended_at_ms - s.ms;
      if (rids.has(s.rid) && started > from - 250 && started < to) pause = Math.max(pause, s.ms);
    }
  }
  return pause;
}

// The subscriber's steady state before any switch: the longest gap and the
// mean interval between the frames of `pid` in the 2 s up to `lastAt`.
export async function steadyFrames(page, pid, lastAt) {
  const frames = await framesAfter(page, pid, lastAt - 2000);
  const gap = maxGap(frames);
  const interval = (frames[frames.length - 1][0] - frames[0][0]) / Math.max(1, frames.length - 1);
  return { gap, interval };
}

// Sends `layout` from `page` (the minimal client) asking for `pid`'s video
// at width x height; the request id and when it left (epoch ms).
export const sendLayout = (page, pid, width, height) =>
  page.evaluate(
    ([id, w, h]) => {
      const req = `layout-${w}x${h}-${Date.now()}`;
      window.noom.send({ type: 'layout', req, videos: [{ participant: id, width: w, height: h }] });
      return { req, at: performance.timeOrigin + performance.now() };
    },
    [pid, width, height],
  );

// A layer switch as the subscriber sees it: `layout` asks for `pid`'s video
// at width x height; the server answers ok, a frame `width` wide arrives on
// the same track and SSRC (no new track), and no gap around it exceeds the
// steady one by more than two frame intervals. Returns the time from the
// request to that frame and the longest gap (ms). `bound`, when given,
// replaces that gap limit (ms), for a path known not to meet it yet.
export async function switchLayer(t, { page, pid, width, height, steady, what, describe, bound, sourcePause }) {
  const before = await view(page, pid);
  const countersBefore = await inboundCounters(page, pid);
  const sent = await sendLayout(page, pid, width, height);
  const reply = await waitFor(() => page.evaluate((r) => window.noom.replies[r], sent.req), { timeout: 10_000, what: `the reply to ${sent.req}`, describe });
  assert.equal(reply.type, 'ok', `${what}: layout answered ok`);
  const first = await waitFor(async () => (await framesAfter(page, pid, sent.at)).find((f) => f[1] === width) || false, {
    timeout: 15_000,
    interval: 100,
    what: `${what}: a ${width}-wide frame at the subscriber`,
    describe,
  });
  // A second of frames after the switch, to see the whole gap.
  await waitFor(async () => (await view(page, pid)).lastAt > first[0] + 1000, { timeout: 15_000, what: `${what}: frames after the switch`, describe });
  const { gap, end } = await switchGap(page, pid, sent.at, first[0]);
  // Around the longest gap: [presented ms, presentedFrames, width, received ms, rtp ts] relative to its end.
  let around = '';
  if (end && gap > steady.gap) {
    around = JSON.stringify(await page.evaluate(([id, e]) => (window.noom.frames[id] || []).filter((f) => Math.abs(f[0] - e) < 400).map((f) => [Math.round(f[0] - e), f[1], f[2], f[4] === null ? null : Math.round(f[4] - e), f[5]]), [pid, end[0]]));
    t.diagnostic(`${what}: frames around the gap ${around}`);
  }
  const after = await view(page, pid);
  const countersAfter = await inboundCounters(page, pid);
  const delta = Object.fromEntries(Object.entries(countersAfter).map(([k, v]) => [k, Math.round((v - (countersBefore[k] ?? 0)) * 1000) / 1000]));
  t.diagnostic(`${what}: subscriber counters over the switch ${JSON.stringify(delta)}; frames presented ${after.frames - before.frames}`);
  const ms = Math.round(first[0] - sent.at);
  const where = end ? `, ending ${Math.round(end[0] - first[0])} ms from it (${end[1]} wide)` : '';
  t.diagnostic(`${what}: layout -> first ${width}-wide frame ${ms} ms; longest frame gap ${gap} ms${where}`);
  assert.deepEqual(after.trackIds, before.trackIds, `${what}: the same remote track`);
  assert.deepEqual(after.ssrcs, before.ssrcs, `${what}: the same SSRC`);
  assert.equal(after.videoOntracks, 1, `${what}: no new track`);
  if (bound !== undefined) {
    const strict = gap <= steady.gap + 2 * steady.interval;
    t.diagnostic(`${what}: ${strict ? 'within' : 'OVER'} the steady gap + 2 frames (${Math.round(steady.gap + 2 * steady.interval)} ms)`);
    assert.ok(gap <= bound, `${what}: longest gap ${gap} ms within ${bound} ms`);
  } else {
    // `sourcePause(widths, from, to)`: the publisher's own pause across
    // the gap, which counts as steady (the server cannot forward frames
    // it never got).
    const pause = sourcePause && end ? await sourcePause([before.lastWidth, width, end[1]], end[0] - gap, end[0]) : 0;
    if (pause > steady.gap) t.diagnostic(`${what}: the publisher paused ${pause} ms across the gap`);
    const limit = Math.max(steady.gap, pause) + 2 * steady.interval;
    // The frames around the gap go in the message: CI shows a failure's
    // message whole but may cut the diagnostics after it.
    assert.ok(gap <= limit, `${what}: longest gap ${gap} ms within the steady ${steady.gap} ms (the publisher's pause ${pause} ms) + 2 frames; frames around it ${around}`);
  }
  return { ms, gap };
}
