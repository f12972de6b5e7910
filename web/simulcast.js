// Simulcast on the publishing side: the camera size the server's offer
// asks for, and each encoding's scale and bitrate cap once negotiated.

// The camera as the server's simulcast offer asks for it (three encodings
// need at least 960x540 input; 720p gives 320x180, 640x360 and 1280x720).
// `?camera=WxH` asks for another size, `?camera=any` for the device's own
// (tests on small machines: three 720p encoders do not fit two cores).
const asked = new URLSearchParams(location.search).get('camera');
const size = asked?.match(/^(\d+)x(\d+)$/);
export const CAMERA = asked === 'any'
  ? {}
  : size
    ? { width: { ideal: Number(size[1]) }, height: { ideal: Number(size[2]) } }
    : { width: { ideal: 1280 }, height: { ideal: 720 } };

// Encodings cannot be sized in SDP: after answering an offer with
// simulcast rids (lowest first, as the server lists them: q, h, f), each
// gets its scale and bitrate cap here, from the camera's size. Chromium
// sends fewer encodings of a smaller picture whatever their scales (its
// simulcast table: three from 960x540, two from 480x270, one below) and
// drops the top ones: with fixed scales of 4, 2 and 1 a 640x480 camera
// reached subscribers at 320x240 at best and a 320x240 one at 80x60
// (measured, Chromium 148). So the encodings that are sent are sized down
// from the camera's own size (the top one full size, each lower one half
// the one above), and those it would not send stay off, in Firefox too,
// which would otherwise send a copy of a lower one. Run again whenever the
// camera's size may change (a camera switch, new constraints). Nothing to
// do without simulcast (one encoding, no rid) or once done.
const SIMULCAST_RIDS = ['q', 'h', 'f'];

// How many encodings Chromium sends of a camera `width` x `height`.
function encodingsForSize(width, height) {
  if (!width || !height) return SIMULCAST_RIDS.length;
  const pixels = width * height;
  if (pixels >= 960 * 540) return 3;
  if (pixels >= 480 * 270) return 2;
  return 1;
}

// The bitrate cap of an encoding `width` wide: what the fixed scales gave a
// 1280x720 camera's 320-, 640- and 1280-wide encodings.
const maxBitrateFor = (width) => (width >= 960 ? 2_000_000 : width >= 480 ? 500_000 : 150_000);

// rid -> { scaleResolutionDownBy, maxBitrate } for the encodings sent, and
// the rids left off, for a camera of this size.
function simulcastLayers(width, height) {
  const count = encodingsForSize(width, height);
  const layers = {};
  const off = new Set();
  SIMULCAST_RIDS.forEach((rid, i) => {
    if (i >= count) {
      off.add(rid);
      return;
    }
    const scale = 2 ** (count - 1 - i);
    layers[rid] = { scaleResolutionDownBy: scale, maxBitrate: maxBitrateFor((width || 1280) / scale) };
  });
  return { layers, off };
}

const cameraSize = (sender) => {
  const { width, height } = sender.track?.getSettings?.() ?? {};
  return simulcastLayers(width, height);
};

// Per sender, the rids turned off here for the camera's size: they come
// back on when it grows (the server's `encodings` turns off what nobody
// watches again; it never asks for an encoding it has not seen).
const offForSize = new WeakMap();

export async function sizeSimulcastLayers(sender) {
  const params = sender.getParameters();
  const encodings = params.encodings || [];
  if (!encodings.some((e) => SIMULCAST_RIDS.includes(e.rid))) return;
  const { layers, off } = cameraSize(sender);
  const wasOff = offForSize.get(sender) ?? new Set();
  let changed = false;
  for (const encoding of encodings) {
    const want = off.has(encoding.rid)
      ? { active: false }
      : wasOff.has(encoding.rid)
        ? { ...layers[encoding.rid], active: true }
        : layers[encoding.rid];
    if (!want) continue;
    for (const [key, value] of Object.entries(want)) {
      if (encoding[key] !== value) {
        encoding[key] = value;
        changed = true;
      }
    }
  }
  try {
    if (changed) await sender.setParameters(params);
    // Only once applied: a failed call is retried whole next time.
    offForSize.set(sender, off);
  } catch (err) {
    console.warn('simulcast encodings not sized', err);
  }
}

// The server's `encodings` message (docs/protocol.md, Adaptive media): which
// encodings of one of our tracks anybody watches, by rid. The others stop
// (`active: false`: the browser neither encodes nor sends them, the saving
// in upload and CPU) until the server asks for them again. The sender is
// found by its m-section (`mid`), else by its track's id; unknown rids and
// tracks are ignored. Run it in the queue that serialises negotiation, as
// two interleaved setParameters calls fail.
export async function setEncodingsActive(pc, msg) {
  if (!pc || !msg.active || typeof msg.active !== 'object') return;
  const transceiver = pc.getTransceivers().find((t) => msg.mid != null && t.mid === msg.mid);
  const sender = transceiver?.sender ?? pc.getSenders().find((s) => s.track && s.track.id === msg.track);
  if (!sender) return;
  const params = sender.getParameters();
  // An encoding too big for the camera stays off (sizeSimulcastLayers).
  const { off } = cameraSize(sender);
  let changed = false;
  for (const encoding of params.encodings || []) {
    const active = msg.active[encoding.rid];
    if (typeof active !== 'boolean' || encoding.active === active || (active && off.has(encoding.rid))) continue;
    encoding.active = active;
    changed = true;
  }
  if (changed) await sender.setParameters(params);
}
