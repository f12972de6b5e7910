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
// simulcast rids, each rid gets its scale and bitrate cap (lowest first,
// as the server lists them). Nothing to do without simulcast (one
// encoding, no rid) or once done.
const SIMULCAST_LAYERS = {
  q: { scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  h: { scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  f: { scaleResolutionDownBy: 1, maxBitrate: 2_000_000 },
};

export async function sizeSimulcastLayers(sender) {
  const params = sender.getParameters();
  const encodings = params.encodings || [];
  let changed = false;
  for (const encoding of encodings) {
    const want = SIMULCAST_LAYERS[encoding.rid];
    if (!want) continue;
    for (const [key, value] of Object.entries(want)) {
      if (encoding[key] !== value) {
        encoding[key] = value;
        changed = true;
      }
    }
  }
  if (!changed) return;
  try {
    await sender.setParameters(params);
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
  let changed = false;
  for (const encoding of params.encodings || []) {
    const active = msg.active[encoding.rid];
    if (typeof active !== 'boolean' || encoding.active === active) continue;
    encoding.active = active;
    changed = true;
  }
  if (changed) await sender.setParameters(params);
}
