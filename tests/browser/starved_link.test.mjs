// Issue 16, points 2 and 3: a subscriber whose link is cut below the
// lowest simulcast encoding.
//
// A publisher sends its 1280x720 fake camera as three simulcast encodings
// (server config simulcast = true; Chromium's VP8 simulcast is L1T3: three
// temporal layers in each encoding) plus its microphone. One subscriber's
// Chromium runs in a network namespace of its own (netns.mjs), its
// downlink limited by a `tc tbf` on the test's end of its veth, in steps,
// then lifted:
//
// - FIRST_KBIT: the lowest whole encoding fits (as in
//   shaped_link.test.mjs, which checks that switch): the subscriber shows it.
// - MIDDLE_KBIT: less than the lowest encoding with audio, more than its
//   base temporal layers with audio. The server forwards part of the
//   lowest encoding's temporal layers (admin overview: max_temporal_layer
//   set), so the subscriber keeps a moving picture at a reduced frame rate
//   with no gap over MAX_VIDEO_GAP_MS from the cut on (a temporal step down
//   needs no keyframe), and audio keeps playing.
// - LOW_KBIT: not even the base temporal layer fits next to audio. The
//   server pauses the video (admin overview: paused), audio keeps arriving
//   with no gap over MAX_AUDIO_GAP_MS and little concealment.
// - Lifted: padding probes raise the estimate and the video comes back,
//   decoding, within MAX_RESUME_MS.
//
// Run: node --test tests/browser/starved_link.test.mjs  (needs
// target/debug/noom, root, tc, nft and nsenter, as scripts/test.sh runs
// it; NOOM_TEST_PROGRESS=1 prints each step's time as it happens).
//
// Measured (2026-12-01, 10 runs as committed on the loaded 2-core VM; see
// benches/RESULTS.md): the lowest encoding (320x180) at 121-178 kbit/s on
// the wire, its TL0 at 38-71, TL0 + TL1 at 67-110, audio at 42-53 kbit/s;
// 20-21.5 fps before the cut. At 160 kbit/s the temporal cap came
// 0.72-1.71 s after the cut; the longest video gap from the cut on was
// 133-900 ms (two runs over 700: a keyframe or a probe into the full queue
// loses packets), at 2-10.2 fps; audio's longest gap 0-113 ms, 0-7.7 %
// concealed. At 70 kbit/s the video was paused 0.66-1.36 s after the cut;
// audio's longest gap 0-202 ms, 2.9-8.4 % concealed while paused (on a link
// this narrow audio waits behind the probes for the way back). Lifted,
// video was back after 2.0-5.9 s (the next probe waits out the back-off of
// those that failed on the limited link, at most 6 s, then ramps; then a
// keyframe; 0.7-7.9 s over 20 earlier runs). Bounds: video gap 1.5 s
// (the 1 s is for a 500 kbit/s link, which shaped_link.test.mjs
// holds; here one 8-10 kB keyframe of the lowest encoding alone takes
// 0.4-0.5 s to cross the link, and 1 s left the worst run 100 ms of
// margin), audio gap 0.5 s, 15 % concealed, paused within 3 s, video back
// within 10 s. A cut straight from the top encoding to 160 kbit/s froze
// the picture for 0.45-3.2 s (the server stops the old encoding and the
// lowest one's keyframe waits behind what it queued, or is lost to the
// full queue), hence the step through FIRST_KBIT. Before the allocator and
// prober fixes that came with this test (commit 27d8976), 1 of 3 runs
// paused the video at 160 kbit/s for 4 s and another froze it for 1.8 s (a
// probe overran the link).
//
// NOOM_STARVE_MIDDLE_KBIT and NOOM_STARVE_LOW_KBIT set other rates (for
// measuring; the bounds are for the defaults).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort, launchPerson, pageState, randomRoom, startServer, waitFor } from './lib.mjs';
import { browserNamespace, udpBlockedNamespaceUnavailable } from './netns.mjs';
import { simulcastConfig, subscriberView as viewOf, tcUnavailable } from './shaped_view.mjs';

const TOKEN = 'starved-link-admin-t0ken';
const subscriberView = (server, subscriber, publisher) => viewOf(server, TOKEN, subscriber, publisher);
// The lowest whole encoding fits, the next does not.
const FIRST_KBIT = 400;
const MIDDLE_KBIT = Number(process.env.NOOM_STARVE_MIDDLE_KBIT || 160);
const LOW_KBIT = Number(process.env.NOOM_STARVE_LOW_KBIT || 70);
// How long each limited phase is watched once the server has settled.
const HOLD_MS = 5000;
const MAX_VIDEO_GAP_MS = 1500;
const MAX_AUDIO_GAP_MS = 500;
const MAX_CONCEALED = 0.15;
const MAX_PAUSE_MS = 3000;
const MAX_RESUME_MS = 10_000;

// Frames of `pid` a subscriber presented in (from, to] (epoch ms): [[at, width], ...].
const framesBetween = (page, pid, from, to = Infinity) =>
  page.evaluate(([id, a, b]) => (window.noom.frames[id] || []).filter((f) => f[0] > a && f[0] <= b).map((f) => [f[0], f[2]]), [pid, from, to]);

const lastFrameAt = (page, pid) =>
  page.evaluate((id) => {
    const list = window.noom.frames[id] || [];
    return list.length ? list[list.length - 1][0] : 0;
  }, pid);

const maxGap = (times) => {
  let gap = 0;
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i] - times[i - 1]);
  return Math.round(gap);
};

// Where the longest gap in `times` starts, in ms after `from`.
const gapStart = (times, from) => {
  let [gap, at] = [0, 0];
  for (let i = 1; i < times.length; i++) if (times[i] - times[i - 1] > gap) [gap, at] = [times[i] - times[i - 1], times[i - 1]];
  return Math.round(at - from);
};

// Frames per second over [from, to].
const fps = (frames, from, to) => Math.round((frames.filter((f) => f[0] > from && f[0] <= to).length * 10_000) / (to - from)) / 10;

// Samples the subscriber's inbound audio in the page, every 100 ms (one
// getStats at a time): [epoch ms, packetsReceived, concealedSamples,
// totalSamplesReceived] in window.audioSamples.
const sampleAudio = (page) =>
  page.evaluate(() => {
    const samples = (window.audioSamples = []);
    const tick = async () => {
      const report = await window.noom.pc.getStats();
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          samples.push([performance.timeOrigin + performance.now(), s.packetsReceived ?? 0, s.concealedSamples ?? 0, s.totalSamplesReceived ?? 0]);
        }
      });
      setTimeout(tick, 100);
    };
    tick();
  });

// Audio over (from, to]: packets received, the longest time no packet came
// (to the sampler's 100 ms), and the share of played samples concealed.
async function audioBetween(page, from, to) {
  const all = await page.evaluate(() => window.audioSamples);
  const s = all.filter((x) => x[0] >= from && x[0] <= to);
  if (s.length < 2) return { packets: 0, gapMs: to - from, concealed: 1 };
  let gap = 0;
  let since = s[0][0];
  for (let i = 1; i < s.length; i++) {
    if (s[i][1] > s[i - 1][1]) since = s[i][0];
    gap = Math.max(gap, s[i][0] - since);
  }
  const [first, last] = [s[0], s[s.length - 1]];
  const played = last[3] - first[3];
  return {
    packets: last[1] - first[1],
    gapMs: Math.round(gap),
    concealed: played > 0 ? Math.round(((last[2] - first[2]) / played) * 1000) / 1000 : 1,
  };
}

test(`a subscriber cut to ${MIDDLE_KBIT} kbit/s keeps fewer frames moving, at ${LOW_KBIT} kbit/s only audio, and gets video back after the limit`, { timeout: 90_000 }, async (t) => {
  const unavailable = udpBlockedNamespaceUnavailable() || tcUnavailable();
  if (unavailable) return t.skip(unavailable);
  const t0 = Date.now();
  const step = (m) => process.env.NOOM_TEST_PROGRESS && console.error(`[${Date.now() - t0} ms] ${m}`);
  const ns = await browserNamespace('starved');
  const config = simulcastConfig();
  const people = [];
  let server;
  try {
    // HTTP on every address, media on the test's end of the veth: the
    // publisher reaches it locally, the limited subscriber through its veth.
    const port = await freePort();
    server = await startServer(
      'starved-link',
      { NOOM_HTTP_LISTEN: `0.0.0.0:${port}`, NOOM_MEDIA_BIND_IPS: ns.hostIp, NOOM_ADMIN_TOKEN: TOKEN, NOOM_MEDIA_BANDWIDTH_ALLOCATION: 'true' },
      { port, args: config.args },
    );
    const origin = `http://${ns.hostIp}:${port}`;
    // getUserMedia needs a secure context; an http:// origin other than
    // localhost is one only by this flag.
    const secure = [`--unsafely-treat-insecure-origin-as-secure=${origin}`];
    const pub = await launchPerson('st-publisher', { extraArgs: secure });
    people.push(pub);
    const sub = await launchPerson('st-limited', { executablePath: ns.executablePath, extraArgs: secure });
    people.push(sub);
    step('browsers up');
    const room = randomRoom('starved');
    const base = `${origin}/minimal.html?test=switch&room=${encodeURIComponent(room)}&ice=none`;
    await pub.page.goto(`${base}&name=publisher&camera=1280x720`);
    await sub.page.goto(`${base}&name=limited&publish=none`);
    let ids = {};
    const describe = async () => {
      const states = {};
      for (const p of people) states[p.label] = await pageState(p.page).catch((e) => String(e));
      states['server view'] = ids.sub ? await subscriberView(server, ids.sub, ids.pub).catch(String) : null;
      return `${JSON.stringify(states, null, 2)}\n--- server log tail (${server.logPath}) ---\n${server.logTail(30)}`;
    };
    const [pubId, subId] = await Promise.all(
      [pub, sub].map((p) =>
        waitFor(() => p.page.evaluate(() => window.noom.state === 'joined' && window.noom.you), { timeout: 15_000, what: `${p.label} to join`, describe }),
      ),
    );
    ids = { pub: pubId, sub: subId };
    step('joined');

    // Video and audio flowing: three seconds of frames, audio packets.
    const firstFrame = await waitFor(async () => (await framesBetween(sub.page, pubId, 0))[0] || false, { timeout: 20_000, interval: 100, what: 'a first frame', describe });
    await waitFor(async () => (await lastFrameAt(sub.page, pubId)) > firstFrame[0] + 3000, { timeout: 15_000, interval: 100, what: 'three seconds of frames', describe });
    await sampleAudio(sub.page);
    await waitFor(async () => (await audioBetween(sub.page, 0, Infinity)).packets > 0, { timeout: 5000, interval: 100, what: 'audio packets', describe });
    step('flowing');
    const before = await subscriberView(server, subId, pubId);

    // First the lowest whole encoding (as shaped_link.test.mjs): the cut
    // below it then starts from it, and what it tests is the step below.
    const firstAt = Date.now();
    ns.limitRate(FIRST_KBIT);
    const lowest = await waitFor(async () => (await framesBetween(sub.page, pubId, firstAt)).find((f) => f[1] === 320) || false, {
      timeout: 10_000,
      interval: 100,
      what: `a 320-wide frame at ${FIRST_KBIT} kbit/s`,
      describe,
    });
    await waitFor(async () => (await lastFrameAt(sub.page, pubId)) > lowest[0] + 2000, { timeout: 10_000, interval: 100, what: `two seconds of frames at ${FIRST_KBIT} kbit/s`, describe });
    step(`lowest encoding after ${Math.round(lowest[0] - firstAt)} ms`);

    // The middle rate.
    const cutAt = Date.now();
    ns.limitRate(MIDDLE_KBIT);
    const baseline = await framesBetween(sub.page, pubId, cutAt - 2000, cutAt);
    const fullFps = fps(baseline, cutAt - 2000, cutAt);
    const reduced = await waitFor(
      async () => {
        const v = await subscriberView(server, subId, pubId);
        return v?.video?.max_temporal_layer != null && v.video.max_temporal_layer < 2 && !v.video.paused ? v : false;
      },
      { timeout: 10_000, interval: 100, what: `the server to forward fewer temporal layers at ${MIDDLE_KBIT} kbit/s`, describe },
    );
    const reducedAt = Date.now();
    step(`temporal layers capped after ${reducedAt - cutAt} ms: ${JSON.stringify(reduced)}`);
    await waitFor(async () => (await lastFrameAt(sub.page, pubId)) > reducedAt + HOLD_MS, { timeout: HOLD_MS + 5000, interval: 100, what: `${HOLD_MS} ms of frames at ${MIDDLE_KBIT} kbit/s`, describe });
    const middleEnd = reducedAt + HOLD_MS;
    const middleView = await subscriberView(server, subId, pubId);
    const middleFrames = await framesBetween(sub.page, pubId, cutAt - 1000, middleEnd);
    const middleGap = maxGap(middleFrames.map((f) => f[0]));
    const middleFps = fps(middleFrames, reducedAt, middleEnd);
    const wider = middleFrames.filter((f) => f[1] !== 320).length;
    const middleAudio = await audioBetween(sub.page, cutAt, middleEnd);
    const baseAudio = await audioBetween(sub.page, 0, cutAt);
    t.diagnostic(
      `${MIDDLE_KBIT} kbit/s: temporal cap after ${reducedAt - cutAt} ms; ${fullFps} fps before, ${middleFps} fps after; longest video gap from the cut ${middleGap} ms (${gapStart(middleFrames.map((f) => f[0]), cutAt)} ms after it); ` +
        `audio before: concealed ${baseAudio.concealed}, gap ${baseAudio.gapMs} ms; ` +
        `audio ${middleAudio.packets} packets, longest gap ${middleAudio.gapMs} ms, concealed ${middleAudio.concealed}; server ${JSON.stringify(middleView)}; before ${JSON.stringify(before?.video)}`,
    );

    // The low rate.
    const lowAt = Date.now();
    ns.limitRate(LOW_KBIT);
    await waitFor(
      async () => (await subscriberView(server, subId, pubId))?.video?.paused,
      { timeout: 15_000, interval: 100, what: `the server to pause the video at ${LOW_KBIT} kbit/s`, describe },
    );
    const pausedAt = Date.now();
    step(`paused after ${pausedAt - lowAt} ms`);
    await waitFor(async () => (await audioBetween(sub.page, pausedAt, Infinity)).packets > 0 && (await sub.page.evaluate(() => window.audioSamples.at(-1)[0])) > pausedAt + HOLD_MS, {
      timeout: HOLD_MS + 5000,
      interval: 100,
      what: `${HOLD_MS} ms of audio samples with the video paused`,
      describe,
    });
    const lowEnd = pausedAt + HOLD_MS;
    const lowView = await subscriberView(server, subId, pubId);
    const lowAudio = await audioBetween(sub.page, lowAt, lowEnd);
    const pausedAudio = await audioBetween(sub.page, pausedAt, lowEnd);
    const framesWhilePaused = (await framesBetween(sub.page, pubId, pausedAt + 1000, lowEnd)).length;
    t.diagnostic(
      `${LOW_KBIT} kbit/s: paused after ${pausedAt - lowAt} ms; audio from the cut ${lowAudio.packets} packets, longest gap ${lowAudio.gapMs} ms, concealed ${lowAudio.concealed}; ` +
        `while paused ${pausedAudio.packets} packets, gap ${pausedAudio.gapMs} ms, concealed ${pausedAudio.concealed}; ${framesWhilePaused} frames; server ${JSON.stringify(lowView)}`,
    );

    // Lifted.
    ns.unlimitRate();
    const liftAt = Date.now();
    const back = await waitFor(async () => (await framesBetween(sub.page, pubId, liftAt))[0] || false, {
      timeout: MAX_RESUME_MS + 10_000,
      interval: 100,
      what: 'a video frame after the lift',
      describe,
    });
    const resumeMs = Math.round(back[0] - liftAt);
    step(`video back after ${resumeMs} ms`);
    await waitFor(async () => (await lastFrameAt(sub.page, pubId)) > back[0] + 1000, { timeout: 10_000, interval: 100, what: 'a second of frames after the lift', describe });
    const afterFps = fps(await framesBetween(sub.page, pubId, back[0], back[0] + 1000), back[0], back[0] + 1000);
    const liftedView = await subscriberView(server, subId, pubId);
    t.diagnostic(`lifted: video back after ${resumeMs} ms, ${afterFps} fps in its first second; server ${JSON.stringify(liftedView)}`);

    // The middle rate: a moving picture, fewer frames, audio.
    assert.ok(middleGap <= MAX_VIDEO_GAP_MS, `at ${MIDDLE_KBIT} kbit/s the video kept moving (longest gap from the cut ${middleGap} ms)`);
    assert.equal(wider, 0, `only the lowest encoding at ${MIDDLE_KBIT} kbit/s (${wider} frames were not 320 wide)`);
    assert.ok(middleFps < 0.75 * fullFps, `at ${MIDDLE_KBIT} kbit/s fewer frames per second (${middleFps} vs ${fullFps} before)`);
    assert.ok(middleAudio.gapMs <= MAX_AUDIO_GAP_MS, `at ${MIDDLE_KBIT} kbit/s audio kept coming (longest gap ${middleAudio.gapMs} ms)`);
    assert.ok(middleAudio.concealed <= MAX_CONCEALED, `at ${MIDDLE_KBIT} kbit/s audio played (${middleAudio.concealed} of it concealed)`);
    // The low rate: audio only.
    assert.ok(pausedAt - lowAt <= MAX_PAUSE_MS, `video paused within ${MAX_PAUSE_MS} ms of the cut to ${LOW_KBIT} kbit/s (took ${pausedAt - lowAt} ms)`);
    assert.ok(lowAudio.gapMs <= MAX_AUDIO_GAP_MS, `at ${LOW_KBIT} kbit/s audio kept coming (longest gap ${lowAudio.gapMs} ms)`);
    assert.ok(pausedAudio.concealed <= MAX_CONCEALED, `audio played while the video was paused (${pausedAudio.concealed} of it concealed)`);
    assert.equal(lowView.video.paused, true, `the video stays paused at ${LOW_KBIT} kbit/s (admin)`);
    // Lifted: video again.
    assert.ok(resumeMs <= MAX_RESUME_MS, `video back within ${MAX_RESUME_MS} ms of the lift (took ${resumeMs} ms)`);
    assert.equal(liftedView.video.paused, false, 'not paused after the lift (admin)');
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server?.stop();
    ns.close();
    config.cleanup();
  }
});
