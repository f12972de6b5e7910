// The binary framing of the `noom` data channel (docs/protocol.md, "Data
// channel"). Client frames: kind | to_len | to | body. Server frames:
// kind | from_len | from | flags | body. Numbers are big-endian.

export const FrameKind = Object.freeze({
  CHAT: 0x01,
  FILE_OFFER: 0x10,
  FILE_CHUNK: 0x11,
  FILE_END: 0x12,
  FILE_ABORT: 0x13,
  ERROR: 0x7f,
});

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function clientFrame(kind, to, body) {
  const addr = encoder.encode(to || '');
  const payload = body instanceof Uint8Array ? body : encoder.encode(body);
  const out = new Uint8Array(2 + addr.length + payload.length);
  out[0] = kind;
  out[1] = addr.length;
  out.set(addr, 2);
  out.set(payload, 2 + addr.length);
  return out;
}

export function parseServerFrame(bytes) {
  if (bytes.length < 3) return null;
  const fromLen = bytes[1];
  if (bytes.length < 3 + fromLen) return null;
  return {
    kind: bytes[0],
    from: decoder.decode(bytes.subarray(2, 2 + fromLen)),
    direct: (bytes[2 + fromLen] & 1) === 1,
    body: bytes.subarray(3 + fromLen),
  };
}

export function fileOfferBody(transfer, size, name, type) {
  const n = encoder.encode(name);
  const t = encoder.encode(type);
  const out = new Uint8Array(4 + 8 + 2 + n.length + 2 + t.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, transfer);
  view.setBigUint64(4, BigInt(size));
  view.setUint16(12, n.length);
  out.set(n, 14);
  view.setUint16(14 + n.length, t.length);
  out.set(t, 16 + n.length);
  return out;
}

export function transferId(body) {
  if (body.length < 4) return -1;
  return new DataView(body.buffer, body.byteOffset, body.byteLength).getUint32(0);
}

export function parseFileOffer(body) {
  if (body.length < 16) return null;
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const transfer = view.getUint32(0);
  const size = Number(view.getBigUint64(4));
  const nameLen = view.getUint16(12);
  if (body.length < 16 + nameLen) return null;
  const name = decoder.decode(body.subarray(14, 14 + nameLen));
  const typeLen = view.getUint16(14 + nameLen);
  const type = decoder.decode(body.subarray(16 + nameLen, 16 + nameLen + typeLen));
  return { transfer, size, name, type };
}
