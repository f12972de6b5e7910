#!/usr/bin/env node
// Benchmark for issue 5 (switching and first frame), in headless Chromium.
//
//   1. join -> first decoded remote frame: a receive-only subscriber page
//      joins a room where a publisher sends its (fake) camera, N times
//      (default 10, after one warm-up join); for each, the time from the
//      `join` send, and from navigation start, to the first frame the
//      subscriber's <video> presents (requestVideoFrameCallback).
//   2. the longest gap between presented frames at the subscriber across a
//      camera switch (replaceTrack fake_device_0 <-> fake_device_2);
//   3. the same across a publisher media restart (restart_media, new
//      RTCPeerConnection, new SSRCs).
//
// With --cache both (default) the whole run is done twice: with the
// server's keyframe cache (default config) and with `keyframes.cache = false`
// (the "before" figure).
//
// Run it in a loopback-only namespace (needs root for unshare):
//   unshare -n sh -c 'ip link set lo up && exec node benches/browser/switch_and_join.mjs'
// Options: --joins N, --switches N, --restarts N, --cache on|off|both,
//   --bystanders N (more publishing browsers in the room, default 0),
//   --json FILE. Environment: NOOM_BIN (default target/release/noom, else
//   target/debug/noom; the binary must embed web/minimal.html with its test=switch hooks),
//   CHROMIUM_BIN.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { launchPerson, randomRoom, repoRoot, startServer, waitFor } from '../../tests/browser/lib.mjs';

const { values: opts } = parseArgs({
  options: {
    joins: { type: 'string', default: '10' },
    switches: { type: 'string', default: '4' },
    restarts: { type: 'string', default: '3' },
    cache: { type: 'string', default: 'both' },
    bystanders: { type: 'string', default: '0' },
    json: { type: 'string' },
  },
});
const JOINS = Number(opts.joins);
const SWITCHES = Number(opts.switches);
const RESTARTS = Number(opts.restarts);
// Extra publishing Chromiums in the room during the joins (a third and more
// browser on the machine, and more for each joiner to receive).
const BYSTANDERS = Number(opts.bystanders);
const VARIANTS = { both: [true, false], on: [true], off: [false] }[opts.cache];
if (!VARIANTS) throw new Error('--cache on|off|both');

const bin =
  process.env.NOOM_BIN ||
  [path.join(repoRoot, 'target', 'release', 'noom'), path.join(repoRoot, 'target', 'debug', 'noom')].find((p) => existsSync(p));

const PUBLISHER_ARGS = ['--use-fake-device-for-media-stream=device-count=3'];
// How long after a switch (ms) the subscriber's frames are examined.
const AFTER_MS = 3000;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const r1 = (x) => Math.round(x * 10) / 10;
// The largest, or null when nothing was measured (--switches 0).
const worst = (xs) => (xs.length ? Math.max(...xs) : null);
// Nearest-rank percentile (p in 0..100).
const percentile = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)];
};
const log = (...a) => console.error('[bench]', ...a);

// Frames the subscriber presented from `pid`, [epochMs, presentedFrames, w, h].
const framesOf = (page, pid, from = 0) =>
  page.evaluate(([p, f]) => (window.noom.frames[p] || []).filter((x) => x[0] >= f), [pid, from]);

function maxGap(frames, from, to) {
  const f = frames.filter((x) => x[0] >= from && x[0] <= to);
  let gap = 0;
  let at = null;
  for (let i = 1; i < f.length; i++) {
    const g = f[i][0] - f[i - 1][0];
    if (g > gap) {
      gap = g;
      at = f[i - 1][0];
    }
  }
  return { gap, at, frames: f.length };
}

async function subscriberTrack(page, pid) {
  return page.evaluate((p) => {
    const s = window.noom.remoteStreams[p];
    return {
      trackIds: s ? s.getVideoTracks().map((t) => t.id) : [],
      ontracks: window.noom.ontracks.filter((e) => e.kind === 'video' && e.streamId === p).length,
      errors: window.noom.errors,
    };
  }, pid);
}

async function runVariant(cache) {
  const label = `bench-switch-${cache ? 'cache' : 'nocache'}`;
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'noom-bench-'));
  const configFile = path.join(tmp, 'config.toml');
  writeFileSync(configFile, `[keyframes]\ncache = ${cache}\n`);
  const server = await startServer(label, { NOOM_LOG_LEVEL: 'warn' }, { bin, args: ['--config', configFile] });
  const people = [];
  const result = { keyframeCache: cache, joins: [], warmup: null, switches: [], restarts: [] };
  try {
    const room = randomRoom('bench');
    const base = `${server.url}/minimal.html?test=switch&room=${encodeURIComponent(room)}&ice=none`;
    const pub = await launchPerson('bench-publisher', { extraArgs: PUBLISHER_ARGS });
    people.push(pub);
    await pub.page.goto(`${base}&name=publisher`);
    const pubId = await waitFor(() => pub.page.evaluate(() => window.noom.state === 'joined' && window.noom.you), {
      timeout: 60_000,
      what: 'the publisher to join',
    });
    await waitFor(() => pub.page.evaluate(() => window.noom.connectedAt !== null && window.noom.videoSender !== null), {
      timeout: 60_000,
      what: 'the publisher to connect and send',
    });
    for (let k = 0; k < BYSTANDERS; k++) {
      const other = await launchPerson(`bench-bystander${k}`, { extraArgs: PUBLISHER_ARGS });
      people.push(other);
      await other.page.goto(`${base}&name=bystander${k}`);
      await waitFor(() => other.page.evaluate(() => window.noom.connectedAt !== null && window.noom.videoSender !== null), {
        timeout: 60_000,
        what: `bystander ${k} to connect and send`,
      });
    }
    const sub = await launchPerson('bench-subscriber');
    people.push(sub);

    // ---- 1. joins
    const othersGone = () =>
      waitFor(() => pub.page.evaluate((n) => Object.keys(window.noom.participants).length === n, BYSTANDERS), {
        timeout: 30_000,
        what: 'the previous subscriber to leave',
      });
    for (let i = -1; i < JOINS; i++) {
      await othersGone();
      await sub.page.goto(`${base}&name=sub${i + 1}&publish=none`);
      const m = await waitFor(
        () =>
          sub.page.evaluate((p) => {
            const n = window.noom;
            const first = n.firstFrameAt[p];
            if (first === undefined) return false;
            const ontrack = n.ontracks.find((e) => e.kind === 'video' && e.streamId === p);
            return {
              joinToFirstFrame: first - n.joinSentAt,
              navToFirstFrame: first - performance.timeOrigin,
              joinToJoined: n.joinedAt - n.joinSentAt,
              joinToConnected: n.connectedAt === null ? null : n.connectedAt - n.joinSentAt,
              joinToVideoTrack: ontrack ? ontrack.at - n.joinSentAt : null,
              // Where the join's time goes: the first time each step of the
              // page's timeline happened, in ms after the join was sent.
              phases: Object.fromEntries(
                ['pc created', 'offer 1', 'answer 1', 'ice checking', 'ice connected', 'connection connected']
                  .map((e) => [e, n.timeline.find(([t, what]) => t >= n.joinSentAt && what === e)])
                  .filter(([, hit]) => hit)
                  .map(([e, [t]]) => [e, t - n.joinSentAt]),
              ),
            };
          }, pubId),
        { timeout: 30_000, interval: 50, what: `subscriber join ${i + 1}: first frame` },
      );
      const round = (v) => (v === null ? null : typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, r1(x)])) : r1(v));
      const rounded = Object.fromEntries(Object.entries(m).map(([k, v]) => [k, round(v)]));
      if (i < 0) result.warmup = rounded;
      else result.joins.push(rounded);
      log(`${cache ? 'cache' : 'no cache'} join ${i < 0 ? 'warm-up' : i + 1}: ${JSON.stringify(rounded)}`);
      if (i < JOINS - 1) await sub.page.goto('about:blank');
    }
    const track0 = await subscriberTrack(sub.page, pubId);

    // Steady state before measuring gaps: 2 s of frames.
    const steady = async () => {
      const t0 = await sub.page.evaluate(() => performance.timeOrigin + performance.now());
      await waitFor(async () => (await framesOf(sub.page, pubId, t0 + 2000)).length > 0, {
        timeout: 30_000,
        interval: 100,
        what: '2 s of steady frames',
      });
    };
    const gapAround = async (at) => {
      await waitFor(async () => (await framesOf(sub.page, pubId, at + AFTER_MS)).length > 0, {
        timeout: 60_000,
        interval: 100,
        what: `frames ${AFTER_MS} ms after the switch`,
      });
      const frames = await framesOf(sub.page, pubId, at - 2500);
      const before = maxGap(frames, at - 2000, at);
      const across = maxGap(frames, at - 1000, at + AFTER_MS);
      return { gapMs: r1(across.gap), gapStartsMsAfterSwitch: across.at === null ? null : r1(across.at - at), baselineGapMs: r1(before.gap), frames: across.frames };
    };

    // ---- 2. camera switches
    const cams = ['fake_device_2', 'fake_device_0'];
    for (let i = 0; i < SWITCHES; i++) {
      await steady();
      const sw = await pub.page.evaluate((c) => window.noom.switchCamera(c), cams[i % 2]);
      const g = await gapAround(sw.at);
      result.switches.push({ to: cams[i % 2], ...g });
      log(`${cache ? 'cache' : 'no cache'} camera switch ${i + 1} -> ${cams[i % 2]}: ${JSON.stringify(g)}`);
    }

    // ---- 3. publisher media restarts
    for (let i = 0; i < RESTARTS; i++) {
      await steady();
      const entry = await pub.page.evaluate(() => window.noom.restartMedia());
      const g = await gapAround(entry.at);
      const timing = await pub.page.evaluate((req) => window.noom.restarts.find((e) => e.req === req), entry.req);
      const rel = (x) => (typeof x === 'number' ? r1(x - timing.at) : x);
      const r = { ...g, okMs: rel(timing.ok), offerMs: rel(timing.offerAt), connectedMs: rel(timing.connectedAt) };
      result.restarts.push(r);
      log(`${cache ? 'cache' : 'no cache'} restart ${i + 1}: ${JSON.stringify(r)}`);
    }
    const track1 = await subscriberTrack(sub.page, pubId);
    result.sameTrackThroughout = JSON.stringify(track0.trackIds) === JSON.stringify(track1.trackIds) && track1.ontracks === 1;
    result.subscriberErrors = track1.errors;
    result.publisherErrors = await pub.page.evaluate(() => window.noom.errors);
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
  const j = result.joins.map((x) => x.joinToFirstFrame);
  const n = result.joins.map((x) => x.navToFirstFrame);
  // What the keyframe cache can change: connected -> first frame.
  const c = result.joins.filter((x) => x.joinToConnected !== null).map((x) => x.joinToFirstFrame - x.joinToConnected);
  const k = result.joins.filter((x) => x.joinToConnected !== null).map((x) => x.joinToConnected);
  result.summary = {
    joinToFirstFrameMs: { median: r1(median(j)), p90: r1(percentile(j, 90)), worst: r1(Math.max(...j)) },
    navigationToFirstFrameMs: { median: r1(median(n)), worst: r1(Math.max(...n)) },
    joinToConnectedMs: { median: r1(median(k)), worst: r1(Math.max(...k)) },
    connectedToFirstFrameMs: { median: r1(median(c)), worst: r1(Math.max(...c)) },
    cameraSwitchMaxGapMs: { worst: worst(result.switches.map((s) => s.gapMs)), each: result.switches.map((s) => s.gapMs), steadyBaselineWorst: worst(result.switches.map((s) => s.baselineGapMs)) },
    restartMaxGapMs: { worst: worst(result.restarts.map((s) => s.gapMs)), each: result.restarts.map((s) => s.gapMs) },
  };
  return result;
}

const started = new Date();
const out = { date: started.toISOString(), host: os.hostname(), cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, noomBin: bin, runs: [] };
log(`noom binary: ${bin}`);
for (const cache of VARIANTS) out.runs.push(await runVariant(cache));
if (opts.json) writeFileSync(opts.json, JSON.stringify(out, null, 2));
console.log(JSON.stringify(out, null, 2));
console.log('\nsummary:');
for (const r of out.runs) {
  const s = r.summary;
  console.log(
    `keyframe cache ${r.keyframeCache ? 'on ' : 'off'}: join->first frame median ${s.joinToFirstFrameMs.median} ms, p90 ${s.joinToFirstFrameMs.p90} ms, worst ${s.joinToFirstFrameMs.worst} ms ` +
      `(navigation->first frame median ${s.navigationToFirstFrameMs.median}, worst ${s.navigationToFirstFrameMs.worst}; ` +
      `join->connected median ${s.joinToConnectedMs.median}, worst ${s.joinToConnectedMs.worst}; connected->first frame median ${s.connectedToFirstFrameMs.median}, worst ${s.connectedToFirstFrameMs.worst}); ` +
      `camera switch longest gap ${s.cameraSwitchMaxGapMs.worst} ms (each ${s.cameraSwitchMaxGapMs.each.join(', ')}; steady baseline ${s.cameraSwitchMaxGapMs.steadyBaselineWorst}); ` +
      `restart longest gap ${s.restartMaxGapMs.worst} ms (each ${s.restartMaxGapMs.each.join(', ')}); same track throughout: ${r.sameTrackThroughout}`,
  );
}
process.exit(0);
