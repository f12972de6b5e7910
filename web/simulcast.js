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
