// A camera published through the client's own offer: the contract
// (Adaptive media) lets a client publish its camera as up to three
// simulcast encodings "in its own offer" instead of answering the server's
// simulcast offer, as a third-party client may. The minimal client does
// this with `publish=offer` (tests/browser/client_simulcast.test.mjs); the
// web client answers the server's offer instead.

// One encoding per rid, lowest first: a quarter, half and full size, with
// the bitrate caps the web client gives the server-offered ones
// (simulcast.js). Fewer rids take the largest sizes.
const SIZES = [
  { scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { scaleResolutionDownBy: 1, maxBitrate: 2_000_000 },
];

export function sendEncodings(rids) {
  if (rids.length < 1 || rids.length > SIZES.length) throw new Error(`1 to ${SIZES.length} rids, not ${rids.length}`);
  return rids.map((rid, i) => ({ rid, ...SIZES[SIZES.length - rids.length + i] }));
}

// `send(msg)` sends a signaling message, `nextReq()` gives a fresh `req`.
export function createCameraOffer({ send, nextReq }) {
  let pending = null; // { req, resolve }: our offer, waiting for its reply
  let transceiver = null;
  let answered = false;

  return {
    get sender() {
      return transceiver ? transceiver.sender : null;
    },
    // True once the server answered an offer that carries the camera.
    get answered() {
      return answered;
    },

    // Offers the camera (added as a sendonly section of its own on the
    // first call) and applies the server's answer. False when the server
    // refused: its own offer was outstanding (glare; the server's offer
    // wins, we roll back and offer again once it is answered).
    async offer(pc, track, rids) {
      if (!transceiver) transceiver = pc.addTransceiver(track, { direction: 'sendonly', sendEncodings: sendEncodings(rids) });
      await pc.setLocalDescription(await pc.createOffer());
      const req = nextReq();
      const reply = new Promise((resolve) => {
        pending = { req, resolve };
      });
      send({ type: 'offer', sdp: pc.localDescription.sdp, req });
      const msg = await reply;
      if (msg.type !== 'answer') {
        await pc.setLocalDescription({ type: 'rollback' });
        return false;
      }
      await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      answered = true;
      return true;
    },

    // A server message: true when it was the reply to our offer.
    onReply(msg) {
      if (!pending || msg.req !== pending.req) return false;
      pending.resolve(msg);
      pending = null;
      return true;
    },
  };
}
