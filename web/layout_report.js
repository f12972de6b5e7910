// Tells the server the size at which each remote camera is shown
// (`layout`, docs/protocol.md "Adaptive media"), so it sends no more pixels
// than a tile shows, and no video at all for a tile nobody sees (off
// screen, not placed in the strip, or the tab hidden: width and height 0).
// Sent whenever a size changes, lightly debounced; only what changed since
// the last message is sent. Every message carries a `req`: a server that
// does not know `layout` answers an error, which the client ignores.

const DEBOUNCE_MS = 150;

export function startLayoutReports(container, { send, nextReq }) {
  const visible = new Map(); // video element -> intersects the viewport
  const lastSent = new Map(); // participant id -> "WxH"
  const ownReqs = new Set();
  let timer = null;

  const sizeOf = (video) => {
    const tile = video.closest('.tile');
    if (document.hidden || !tile || tile.classList.contains('offstage') || visible.get(video) === false) {
      return { width: 0, height: 0 };
    }
    const dpr = window.devicePixelRatio || 1;
    return { width: Math.round(video.clientWidth * dpr), height: Math.round(video.clientHeight * dpr) };
  };

  function report() {
    timer = null;
    const videos = [];
    const present = new Set();
    for (const tile of container.querySelectorAll(':scope > .tile:not(.local):not(.screen)')) {
      const id = tile.dataset.participant;
      const video = tile.querySelector('video');
      if (!id || !video) continue;
      present.add(id);
      const size = sizeOf(video);
      const key = `${size.width}x${size.height}`;
      if (lastSent.get(id) === key) continue;
      lastSent.set(id, key);
      videos.push({ participant: id, ...size });
    }
    for (const id of [...lastSent.keys()]) if (!present.has(id)) lastSent.delete(id);
    if (!videos.length) return;
    const req = nextReq();
    ownReqs.add(req);
    if (ownReqs.size > 64) ownReqs.delete(ownReqs.values().next().value);
    send({ type: 'layout', videos, req });
  }

  const schedule = () => {
    if (!timer) timer = setTimeout(report, DEBOUNCE_MS);
  };

  const resizes = new ResizeObserver(schedule);
  const intersections = new IntersectionObserver((entries) => {
    for (const e of entries) visible.set(e.target, e.isIntersecting);
    schedule();
  });
  const watch = () => {
    for (const video of container.querySelectorAll(':scope > .tile:not(.local):not(.screen) video')) {
      if (visible.has(video)) continue;
      visible.set(video, true);
      resizes.observe(video);
      intersections.observe(video);
    }
    for (const video of [...visible.keys()]) {
      if (!video.isConnected) {
        visible.delete(video);
        resizes.unobserve(video);
        intersections.unobserve(video);
      }
    }
    schedule();
  };
  new MutationObserver(watch).observe(container, { childList: true, subtree: true, attributes: true, attributeFilter: ['class'] });
  document.addEventListener('visibilitychange', schedule);

  return {
    // Whether the server's reply `req` answers one of our `layout`s (an
    // error there means the server does not support it yet: ignored).
    owns(req) {
      return ownReqs.delete(req);
    },
    // A new peer connection: the server knows nothing of our sizes yet.
    reset() {
      lastSent.clear();
      schedule();
    },
  };
}
