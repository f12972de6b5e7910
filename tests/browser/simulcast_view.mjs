// What simulcast tests read from the minimal client (web/minimal.js,
// ?test=...): a publisher's outbound encodings, a subscriber's view of one
// publisher's video, its presented frames, and the longest gap in them.

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
      frameWidth: stats[0] ? stats[0].frameWidth : 0,
      trackIds: stream ? stream.getVideoTracks().map((t) => t.id) : [],
      videoOntracks: n.ontracks.filter((e) => e.kind === 'video' && e.streamId === id).length,
      frames: frames.length,
      lastWidth: last ? last[2] : 0,
      lastAt: last ? last[0] : 0,
    };
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
// frames from the last one before the switch was asked for (`sentAt`) to
// a second after the first frame of the new encoding (`firstAt`). Frames
// before the request cannot show its effect; a hiccup there (a loaded
// machine) is not the switch's. Returns { gap, end: [at, width] | null }.
export async function switchGap(page, pid, sentAt, firstAt) {
  const frames = await framesAfter(page, pid, sentAt - 1000);
  const before = frames.filter((f) => f[0] <= sentAt).length;
  const window = frames.slice(Math.max(0, before - 1)).filter((f) => f[0] <= firstAt + 1000);
  const gap = maxGap(window);
  const end = window.find((f, i) => i > 0 && Math.round(f[0] - window[i - 1][0]) === gap) ?? null;
  return { gap, end };
}
