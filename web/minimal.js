// Noom minimal client: a small, framework-free client of the signaling
// contract (shared/contract/signaling.md, version 1). It exists for the
// end-to-end tests and for debugging; the real web client is index.html.
//
// URL parameters: room (default "test"), name (default "guest-xxxx"),
// ice=none (use no ICE servers, for offline / loopback-only runs),
// relay=1 (iceTransportPolicy "relay": media only through the TURN server
// that `joined` names, as a client behind a strict firewall would; the TURN
// tests use it),
// publish=none (receive only: no camera or microphone),
// publish=offer (the microphone in the server's offer as usual, the camera
// through an offer of our own as simulcast encodings, one per rid of
// rids=a,b,c, default q,h,f: camera_offer.js; not with restartMedia),
// camera=WxH (ask getUserMedia for that size, e.g. 1280x720: three simulcast
// encodings need at least 960x540),
// codec=h264|vp8 (send the camera in that codec: setParameters with
// encodings[].codec after the answer; default: the server's order, VP8 first),
// recv=vp8|h264 (accept only that video codec for the tracks the server
// forwards, as a browser without the other decoder would; the codec tests
// use both, tests/browser/h264.test.mjs),
// test=switch (the switching test hooks below; off by default).
//
// Everything the tests need is on window.noom (see the object below);
// noom.sendCodec(name) switches the camera's send codec mid-call.
//
// With test=switch, window.noom also has the hooks of the switching test and
// benchmark (tests/browser/switching.test.mjs, benches/browser/switch_and_join.mjs):
//
//   noom.switchCamera(labelPart)  replaceTrack to the camera whose label
//                                 contains labelPart (e.g. 'fake_device_2')
//   noom.setResolution(w, h)      applyConstraints on the sent video track
//   noom.screenShare()            getDisplayMedia, else a canvas captureStream
//                                 track (noom.share says which); the #share
//                                 button runs it with a user gesture
//   noom.restartMedia()           restart_media: a new RTCPeerConnection,
//                                 same local tracks
//   noom.frames[participant]      [epoch ms, presentedFrames, width, height,
//                                 receive epoch ms, rtpTimestamp] per remote
//                                 video frame (requestVideoFrameCallback)
//   noom.joinSentAt, noom.firstFrameAt[participant], noom.ontracks, noom.timeline
//
// Their times are epoch milliseconds with sub-millisecond precision
// (performance.timeOrigin + performance.now()), comparable across pages.
// They are behind a flag because watching every frame and keeping a
// timeline costs work a debugging session does not need.

import { setEncodingsActive, sizeSimulcastLayers } from './simulcast.js';
import { recvonlySections } from './sections.js';
import { createCameraOffer } from './camera_offer.js';

const params = new URLSearchParams(location.search);
const room = params.get('room') || 'test';
const name = params.get('name') || `guest-${Math.random().toString(36).slice(2, 6)}`;
const noIce = params.get('ice') === 'none';
const relayOnly = params.get('relay') === '1';
const publish = params.get('publish') !== 'none';
const cameraByOffer = params.get('publish') === 'offer';
const offerRids = (params.get('rids') || 'q,h,f').split(',');
const cameraSize = (params.get('camera') || '').match(/^(\d+)x(\d+)$/);
const hooks = params.get('test') === 'switch';
// Changed by noom.sendCodec (a codec switch mid-call).
let publishCodec = (params.get('codec') || '').toLowerCase();
const receiveCodec = (params.get('recv') || '').toLowerCase();

const $status = document.getElementById('status');
const $errors = document.getElementById('errors');
const $videos = document.getElementById('videos');
const $unmute = document.getElementById('unmute');
const $share = document.getElementById('share');

const clock = () => performance.timeOrigin + performance.now();
const MAX_FRAMES = 100_000;

const noom = {
  // starting | media | connecting | joining | joined | left | closed | error
  state: 'starting',
  room,
  name,
  you: null,
  participants: {}, // participant id -> name (the others in the room)
  participantInfo: {}, // participant id -> P object as last sent by the server
  remoteStreams: {}, // participant id -> MediaStream
  rooms: [], // last lobby list
  connectionState: 'new', // RTCPeerConnection.connectionState
  iceConnectionState: 'new',
  signalingState: 'stable',
  offers: 0, // offers received from the server
  answers: 0, // answers sent
  errors: [], // strings
  // icecandidateerror events ({url, errorCode, errorText}): an unreachable
  // STUN server or a TURN server refusing the credentials (401). Kept apart
  // from errors: an unreachable STUN server is routine.
  iceErrors: [],
  // `track_unsupported` messages: tracks whose codec this client did not
  // accept (see recv=), so the server forwards none of their packets.
  unsupported: [],
  encodings: [], // the server's `encodings` messages (+ `at`, epoch ms): which of our simulcast encodings are watched
  left: null, // the server's `left` message ({reason, message}), if it removed us
  log: [], // recent signaling traffic, newest last
  chats: [],
  pc: null,
  ws: null,
  localStream: null,
  audioTrack: null, // the microphone track sent (null when receive-only)
  videoTrack: null, // the track the video sender currently sends
  stats,
  send,
  mute,
  sendCodec,
};
if (hooks) {
  Object.assign(noom, {
    videoSender: null,
    switches: [], // {what, at, settings}
    share: null, // {source, error?, settings} after screenShare()
    restarts: [], // {at, ok, offerAt, connectedAt}
    joinSentAt: null,
    joinedAt: null,
    connectedAt: null, // first `connected` of the current peer connection
    ontracks: [], // {at, kind, trackId, streamId}
    frames: {}, // participant id -> [[epochMs, presentedFrames, width, height, receivedMs, rtpTimestamp], ...]
    firstFrameAt: {}, // participant id -> epoch ms
    replies: {}, // req -> reply message
    timeline: [], // [epoch ms, event] for the current and earlier connections
    switchCamera,
    setResolution,
    screenShare,
    restartMedia,
  });
}
window.noom = noom;

let nextReq = 1;
let joinReq = null;
let iceServersInUse = []; // kept for a media restart's new peer connection
const attachedKinds = new Set(); // kinds whose local track is attached to a transceiver
const cameraOffer = cameraByOffer ? createCameraOffer({ send, nextReq: () => nextReq++ }) : null;
let queue = Promise.resolve(); // serialises everything that touches the peer connection

function logEvent(dir, msg) {
  const entry = `${new Date().toISOString().slice(11, 23)} ${dir} ${msg.type}`;
  noom.log.push(entry);
  if (noom.log.length > 300) noom.log.shift();
}

function fail(err, where = '') {
  const text = `${where ? `${where}: ` : ''}${err && err.message ? err.message : String(err)}`;
  noom.errors.push(text);
  console.error('[noom]', text, err);
  render();
}

function setState(state) {
  noom.state = state;
  render();
}

function render() {
  const others = Object.entries(noom.participants)
    .map(([id, n]) => `${n} (${id})`)
    .join(', ');
  $status.textContent = [
    `room: ${room}   name: ${name}   you: ${noom.you ?? '-'}${publish ? '' : '   receive only'}`,
    `state: ${noom.state}   pc: ${noom.connectionState}   ice: ${noom.iceConnectionState}${relayOnly ? ' (relay only)' : ''}   signaling: ${noom.signalingState}`,
    `offers received: ${noom.offers}   answers sent: ${noom.answers}${hooks ? `   restarts: ${noom.restarts.length}` : ''}`,
    `participants: ${others || '(none)'}`,
  ].join('\n');
  $errors.textContent = [
    ...noom.errors,
    ...noom.iceErrors.map((e) => `ICE server ${e.url}: ${e.errorCode} ${e.errorText}`),
  ].join('\n');
  document.title = `Noom: ${name} in ${room} (${noom.state})`;
}

function send(msg) {
  const ws = noom.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    fail(new Error(`cannot send ${msg.type}: WebSocket not open`));
    return;
  }
  logEvent('>', msg);
  ws.send(JSON.stringify(msg));
}

// Runs fn after everything queued before it. A failure is reported and does
// not stop the queue. The result settles like fn, for callers that want it
// (the test hooks); ignoring it does not leave an unhandled rejection.
function enqueue(what, fn) {
  const done = queue.then(fn);
  queue = done.catch((err) => fail(err, what));
  done.catch(() => {});
  return done;
}

// ---------------------------------------------------------------- video tiles

// Records every frame a remote <video> presents (requestVideoFrameCallback).
function watchFrames(id, video) {
  if (video.dataset.watched) return;
  video.dataset.watched = '1';
  const onFrame = (now, meta) => {
    const at = performance.timeOrigin + now;
    const list = (noom.frames[id] ||= []);
    // receiveTime: when the frame's last packet arrived (WebRTC sources),
    // which tells a late frame from a late presentation.
    const received = meta.receiveTime === undefined ? null : performance.timeOrigin + meta.receiveTime;
    if (list.length < MAX_FRAMES) list.push([at, meta.presentedFrames, meta.width, meta.height, received, meta.rtpTimestamp ?? null]);
    if (noom.firstFrameAt[id] === undefined) noom.firstFrameAt[id] = at;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

function tile(id, label, stream, { local = false } = {}) {
  let fig = $videos.querySelector(`figure[data-participant="${CSS.escape(id)}"]`);
  if (!fig) {
    fig = document.createElement('figure');
    fig.dataset.participant = id;
    if (local) fig.classList.add('local');
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = local;
    const cap = document.createElement('figcaption');
    fig.append(video, cap);
    $videos.append(fig);
  }
  const video = fig.querySelector('video');
  fig.querySelector('figcaption').textContent = label;
  if (stream && video.srcObject !== stream) {
    video.srcObject = stream;
    if (hooks && !local) watchFrames(id, video);
    video.play().catch((err) => {
      if (err.name !== 'NotAllowedError') return; // e.g. AbortError: the tile went away
      // Autoplay with sound was refused: play muted, offer a button.
      video.muted = true;
      $unmute.style.display = 'inline-block';
      video.play().catch((e) => {
        if (e.name !== 'AbortError') fail(e, 'video.play');
      });
    });
  }
  return fig;
}

function removeTile(id) {
  const fig = $videos.querySelector(`figure[data-participant="${CSS.escape(id)}"]`);
  if (fig) {
    const video = fig.querySelector('video');
    if (video) video.srcObject = null;
    fig.remove();
  }
}

$unmute.addEventListener('click', () => {
  for (const fig of $videos.querySelectorAll('figure:not(.local)')) {
    const video = fig.querySelector('video');
    video.muted = false;
    video.play().catch((err) => fail(err, 'unmute'));
  }
  $unmute.style.display = 'none';
});

// ---------------------------------------------------------------- participants

function setParticipant(p) {
  if (!p || typeof p.id !== 'string') return;
  if (p.id === noom.you) return; // our own participant_updated
  noom.participants[p.id] = p.name;
  noom.participantInfo[p.id] = p;
  if (noom.remoteStreams[p.id]) tile(p.id, labelFor(p.id));
}

function labelFor(id) {
  const p = noom.participantInfo[id];
  const n = noom.participants[id] ?? `(unknown ${id})`;
  const muted = [];
  if (p && p.audio_muted) muted.push('mic off');
  if (p && p.video_muted) muted.push('camera off');
  return muted.length ? `${n} [${muted.join(', ')}]` : n;
}

function removeParticipant(id) {
  delete noom.participants[id];
  delete noom.participantInfo[id];
  delete noom.remoteStreams[id];
  removeTile(id);
}

// ---------------------------------------------------------------- media

async function attachLocalTracks(offerSdp) {
  for (const { kind, mid } of recvonlySections(offerSdp)) {
    if (attachedKinds.has(kind)) continue;
    const track = kind === 'video' ? (cameraOffer ? null : noom.videoTrack) : kind === 'audio' ? noom.audioTrack : null;
    if (!track) continue;
    const transceiver = noom.pc.getTransceivers().find((t) => t.mid === mid);
    if (!transceiver) {
      fail(new Error(`no transceiver for the server's recvonly ${kind} m-section mid=${mid}`));
      continue;
    }
    await transceiver.sender.replaceTrack(track);
    transceiver.direction = 'sendonly';
    attachedKinds.add(kind);
    if (hooks && kind === 'video') noom.videoSender = transceiver.sender;
  }
}

async function handleOffer(sdp) {
  const pc = noom.pc;
  if (!pc) throw new Error('offer before joined');
  noom.offers += 1;
  if (hooks) {
    const last = noom.restarts[noom.restarts.length - 1];
    if (last && last.offerAt === null) last.offerAt = clock();
    mark(`offer ${noom.offers}`);
  }
  await pc.setRemoteDescription({ type: 'offer', sdp });
  if (hooks) watchTransport(pc);
  await attachLocalTracks(sdp);
  if (receiveCodec) {
    for (const t of pc.getTransceivers()) {
      if (t.receiver.track.kind === 'video' && t.direction === 'recvonly') {
        t.setCodecPreferences(receiveCodecs(receiveCodec));
      }
    }
  }
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  send({ type: 'answer', sdp: pc.localDescription.sdp });
  mark(`answer ${noom.offers}`);
  noom.answers += 1;
  // As the web client does: size the simulcast encodings once negotiated.
  for (const t of pc.getTransceivers()) {
    if (t.sender.track?.kind === 'video') await sizeSimulcastLayers(t.sender);
    if (t.sender.track?.kind === 'video' && publishCodec) await sendWithCodec(t.sender, publishCodec);
  }
  // publish=offer: our own offer follows every server offer until one of
  // ours is answered (the server refuses ours while its own is outstanding).
  if (cameraOffer && noom.videoTrack && !cameraOffer.answered) enqueue('camera offer', offerCamera);
  render();
}

async function offerCamera() {
  if (!noom.pc || cameraOffer.answered || noom.pc.signalingState !== 'stable') return;
  await cameraOffer.offer(noom.pc, noom.videoTrack, offerRids);
  if (hooks) noom.videoSender = cameraOffer.sender;
}

// The browser's video codecs of one name that it can receive (vp8, h264:
// packetization mode 1 only, the mode the server offers).
function receiveCodecs(name) {
  const codecs = RTCRtpReceiver.getCapabilities('video').codecs.filter(
    (c) => c.mimeType.toLowerCase() === `video/${name}` && (name !== 'h264' || /packetization-mode=1/.test(c.sdpFmtpLine || '')),
  );
  if (!codecs.length) throw new Error(`this browser has no ${name} codec`);
  return codecs;
}

// Chromium, answering, sends the first codec of the server's offer (VP8),
// even when setCodecPreferences made its answer list another one only: the
// send codec is chosen per encoding with setParameters. The answer keeps
// every codec, as the server's connection only ever knows the video codecs
// of the first video section answered (docs/protocol.md, Video codecs).
async function sendWithCodec(sender, name) {
  const p = sender.getParameters();
  const codec = p.codecs.find((c) => c.mimeType.toLowerCase() === `video/${name}`);
  if (!codec) throw new Error(`the negotiation left no ${name} to send`);
  if (p.encodings.every((e) => e.codec?.payloadType === codec.payloadType)) return;
  for (const e of p.encodings) e.codec = codec;
  await sender.setParameters(p);
}

// Switches the camera's send codec mid-call (vp8, h264), on the same
// stream, as a page may at any time: the server's subscribers follow it.
async function sendCodec(name) {
  publishCodec = name.toLowerCase();
  const sender = noom.pc?.getSenders().find((s) => s.track?.kind === 'video');
  if (!sender) throw new Error('no camera being sent');
  await sendWithCodec(sender, publishCodec);
}

// A timestamped event for the test hooks' timeline (nothing without them).
function mark(event) {
  if (!hooks) return;
  noom.timeline.push([clock(), event]);
  if (noom.timeline.length > 2000) noom.timeline.shift();
}

// DTLS transport state changes (the transport exists once an offer is applied).
function watchTransport(pc) {
  for (const tr of pc.getTransceivers()) {
    const transport = tr.sender.transport;
    if (!transport || transport.watched) continue;
    transport.watched = true;
    mark(`dtls ${transport.state}`);
    transport.addEventListener('statechange', () => mark(`dtls ${transport.state}`));
    const ice = transport.iceTransport;
    if (ice) ice.addEventListener('selectedcandidatepairchange', () => mark('ice selected pair'));
  }
}

function createPeerConnection(iceServers) {
  const pc = new RTCPeerConnection({
    iceServers,
    bundlePolicy: 'max-bundle',
    iceTransportPolicy: relayOnly ? 'relay' : 'all',
  });
  noom.pc = pc;
  mark('pc created');
  if (hooks) pc.onicegatheringstatechange = () => mark(`gathering ${pc.iceGatheringState}`);
  noom.connectionState = pc.connectionState;
  if (hooks) noom.connectedAt = null;
  let gathered = 0;
  pc.onicecandidate = (ev) => {
    if (noom.pc !== pc) return;
    const c = ev.candidate;
    mark(c ? `local candidate ${c.address}:${c.port} ${c.protocol}` : 'local candidates end');
    if (c) gathered += 1;
    // Without a single local candidate the connection can never start, and
    // Chromium then stays `new` rather than `failed`: say so now (relay only
    // with a TURN server that refuses the credentials is the usual cause).
    if (!c && gathered === 0) {
      const why = noom.iceErrors.map((e) => `${e.url}: ${e.errorCode} ${e.errorText}`).join('; ');
      fail(new Error(`no ICE candidate could be gathered${relayOnly ? ' (relay only)' : ''}${why ? `: ${why}` : ''}`), 'media');
    }
    send({
      type: 'candidate',
      candidate: c ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null,
    });
  };
  pc.onicecandidateerror = (ev) => {
    if (noom.pc !== pc) return;
    noom.iceErrors.push({ url: ev.url, errorCode: ev.errorCode, errorText: ev.errorText });
    if (noom.iceErrors.length > 50) noom.iceErrors.shift();
    render();
  };
  pc.onconnectionstatechange = () => {
    if (noom.pc !== pc) return;
    noom.connectionState = pc.connectionState;
    mark(`connection ${pc.connectionState}`);
    if (hooks && pc.connectionState === 'connected' && noom.connectedAt === null) {
      noom.connectedAt = clock();
      const last = noom.restarts[noom.restarts.length - 1];
      if (last && last.connectedAt === null) last.connectedAt = noom.connectedAt;
    }
    render();
  };
  pc.oniceconnectionstatechange = () => {
    if (noom.pc !== pc) return;
    noom.iceConnectionState = pc.iceConnectionState;
    mark(`ice ${pc.iceConnectionState}`);
    render();
  };
  pc.onsignalingstatechange = () => {
    if (noom.pc !== pc) return;
    noom.signalingState = pc.signalingState;
    render();
  };
  pc.ontrack = (ev) => {
    if (noom.pc !== pc) return;
    const stream = ev.streams[0];
    if (hooks) noom.ontracks.push({ at: clock(), kind: ev.track.kind, trackId: ev.track.id, streamId: stream ? stream.id : null });
    if (!stream) {
      fail(new Error(`remote ${ev.track.kind} track ${ev.track.id} has no stream (msid missing)`));
      return;
    }
    const id = stream.id;
    noom.remoteStreams[id] = stream;
    stream.onremovetrack = () => {
      if (stream.getTracks().length === 0 && noom.remoteStreams[id] === stream) {
        delete noom.remoteStreams[id];
        removeTile(id);
      }
    };
    tile(id, labelFor(id), stream);
    render();
  };
  return pc;
}

// ---------------------------------------------------------------- test hooks (test=switch)

async function replaceVideo(track, what) {
  if (!noom.videoSender) throw new Error('no video sender yet (not negotiated)');
  const old = noom.videoTrack;
  const at = clock();
  await noom.videoSender.replaceTrack(track);
  noom.videoTrack = track;
  if (old && old !== track) old.stop();
  const settings = track.getSettings();
  const entry = { what, at, done: clock(), settings: { width: settings.width, height: settings.height, frameRate: settings.frameRate, deviceId: settings.deviceId } };
  noom.switches.push(entry);
  // As the web client does: the encodings follow the new source's size.
  await enqueue('sizing encodings', () => sizeSimulcastLayers(noom.videoSender));
  return entry;
}

async function switchCamera(labelPart) {
  const devices = await navigator.mediaDevices.enumerateDevices();
  const dev = devices.find((d) => d.kind === 'videoinput' && d.label.includes(labelPart));
  if (!dev) throw new Error(`no camera labelled *${labelPart}*: ${devices.filter((d) => d.kind === 'videoinput').map((d) => d.label).join(', ')}`);
  const size = cameraSize ? { width: Number(cameraSize[1]), height: Number(cameraSize[2]) } : {};
  const stream = await navigator.mediaDevices.getUserMedia({ video: { ...size, deviceId: { exact: dev.deviceId } } });
  return replaceVideo(stream.getVideoTracks()[0], `camera ${dev.label}`);
}

async function setResolution(width, height) {
  const track = noom.videoTrack;
  if (!track) throw new Error('no video track');
  const at = clock();
  await track.applyConstraints({ width, height });
  const s = track.getSettings();
  const entry = { what: `resolution ${width}x${height}`, at, done: clock(), settings: { width: s.width, height: s.height, frameRate: s.frameRate } };
  noom.switches.push(entry);
  await enqueue('sizing encodings', () => sizeSimulcastLayers(noom.videoSender));
  return entry;
}

// A moving picture on a canvas, as a stand-in for a screen share.
function canvasTrack(width, height) {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  let n = 0;
  const draw = () => {
    n += 1;
    ctx.fillStyle = '#224';
    ctx.fillRect(0, 0, width, height);
    ctx.fillStyle = '#eee';
    ctx.font = '48px sans-serif';
    ctx.fillText(`screen share ${n}`, 40, 80 + (n % 60) * 8);
    ctx.fillStyle = `hsl(${(n * 7) % 360} 70% 50%)`;
    ctx.fillRect((n * 13) % (width - 100), height - 150, 100, 100);
  };
  draw();
  const timer = setInterval(draw, 33);
  const track = canvas.captureStream(30).getVideoTracks()[0];
  track.addEventListener('ended', () => clearInterval(timer));
  const stop = track.stop.bind(track);
  track.stop = () => {
    clearInterval(timer);
    stop();
  };
  return track;
}

async function screenShare({ allowDisplay = true } = {}) {
  let track = null;
  let source = 'canvas';
  let error = null;
  if (allowDisplay && navigator.mediaDevices.getDisplayMedia) {
    try {
      const stream = await Promise.race([
        navigator.mediaDevices.getDisplayMedia({ video: true, audio: false }),
        new Promise((_, reject) => setTimeout(() => reject(new Error('getDisplayMedia: no answer within 10 s')), 10_000)),
      ]);
      track = stream.getVideoTracks()[0];
      source = 'getDisplayMedia';
    } catch (err) {
      error = `${err.name || 'Error'}: ${err.message}`;
    }
  }
  if (!track) track = canvasTrack(1280, 720);
  const entry = await replaceVideo(track, `screen share (${source})`);
  noom.share = { source, error, settings: entry.settings, at: entry.at };
  return noom.share;
}

if (hooks) {
  $share.hidden = false;
  $share.addEventListener('click', () => {
    screenShare().catch((err) => fail(err, 'screen share'));
  });
}

// restart_media: the old connection is gone; a new one takes over the same
// local tracks once the server's fresh offer arrives.
function restartMedia() {
  return enqueue('restart_media', async () => {
    if (!noom.pc) throw new Error('restart before joined');
    const old = noom.pc;
    attachedKinds.clear();
    noom.videoSender = null;
    const entry = { at: clock(), ok: null, offerAt: null, connectedAt: null, req: nextReq++ };
    noom.restarts.push(entry);
    createPeerConnection(iceServersInUse);
    old.close();
    send({ type: 'restart_media', req: entry.req });
    return entry;
  });
}

// ---------------------------------------------------------------- stats

// [{participant, name, kind, framesDecoded, packetsReceived, bytesReceived, ...}]
// for every inbound RTP stream whose receiver track belongs to a current
// remote stream; participant is the stream id (the publisher's id).
async function stats() {
  const pc = noom.pc;
  if (!pc) return [];
  const trackToParticipant = new Map();
  for (const [id, stream] of Object.entries(noom.remoteStreams)) {
    for (const t of stream.getTracks()) trackToParticipant.set(t.id, id);
  }
  const out = [];
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    const id = trackToParticipant.get(s.trackIdentifier);
    if (!id) return;
    const codec = s.codecId ? report.get(s.codecId) : undefined;
    out.push({
      participant: id,
      name: noom.participants[id] ?? null,
      kind: s.kind,
      trackId: s.trackIdentifier,
      mid: s.mid ?? null,
      ssrc: s.ssrc,
      codec: codec ? `${codec.mimeType}/${codec.payloadType}` : null,
      // When the browser took these counters (epoch ms; Chromium serves a
      // cached report for 50 ms).
      timestamp: s.timestamp,
      framesDecoded: s.framesDecoded ?? 0,
      framesReceived: s.framesReceived ?? 0,
      keyFramesDecoded: s.keyFramesDecoded ?? 0,
      packetsReceived: s.packetsReceived ?? 0,
      bytesReceived: s.bytesReceived ?? 0,
      packetsLost: s.packetsLost ?? 0,
      nackCount: s.nackCount ?? 0,
      pliCount: s.pliCount ?? 0,
      firCount: s.firCount ?? 0,
      frameWidth: s.frameWidth ?? 0,
      frameHeight: s.frameHeight ?? 0,
      freezeCount: s.freezeCount ?? 0,
      totalFreezesDuration: s.totalFreezesDuration ?? 0,
    });
  });
  return out;
}

// ---------------------------------------------------------------- controls

function mute(kind, muted) {
  for (const t of [noom.audioTrack, noom.videoTrack]) {
    if (t && t.kind === kind) t.enabled = !muted;
  }
  send({ type: 'mute', kind, muted, req: nextReq++ });
}

// ---------------------------------------------------------------- signaling

function onMessage(msg) {
  logEvent('<', msg);
  if (hooks && msg.req !== undefined) {
    noom.replies[msg.req] = msg;
    const r = noom.restarts.find((e) => e.req === msg.req);
    if (r) r.ok = msg.type === 'ok' ? clock() : msg;
  }
  if (cameraOffer && cameraOffer.onReply(msg)) return;
  switch (msg.type) {
    case 'rooms':
      noom.rooms = msg.rooms || [];
      break;
    case 'joined': {
      noom.you = msg.you;
      if (hooks) noom.joinedAt = clock();
      for (const p of msg.participants || []) setParticipant(p);
      iceServersInUse = noIce ? [] : msg.ice_servers || [];
      createPeerConnection(iceServersInUse);
      setState('joined');
      break;
    }
    case 'participant_joined':
    case 'participant_updated':
      setParticipant(msg.participant);
      break;
    case 'participant_left':
      removeParticipant(msg.id);
      break;
    case 'left':
      // The server removed us (back in the lobby); a media failure is an error.
      noom.left = { reason: msg.reason, message: msg.message ?? null };
      if (msg.reason === 'media_failed') fail(new Error(`removed from the room: ${msg.message || msg.reason}`));
      setState('left');
      break;
    case 'offer':
      enqueue('offer', () => handleOffer(msg.sdp));
      break;
    case 'candidate':
      mark(`remote candidate ${msg.candidate ? msg.candidate.candidate : 'end'}`);
      enqueue('remote candidate', async () => {
        if (!noom.pc) throw new Error('candidate before joined');
        if (msg.candidate) await noom.pc.addIceCandidate(msg.candidate);
        else await noom.pc.addIceCandidate();
      });
      break;
    case 'chat':
      noom.chats.push(msg);
      break;
    case 'track_unsupported':
      noom.unsupported.push(msg);
      break;
    case 'encodings':
      noom.encodings.push({ ...msg, at: clock() });
      enqueue('encodings', () => setEncodingsActive(noom.pc, msg));
      break;
    case 'error': {
      const text = `server error ${msg.code}${msg.req !== undefined ? ` (req ${msg.req})` : ''}: ${msg.message}`;
      fail(new Error(text));
      if (joinReq !== null && msg.req === joinReq) setState('error');
      break;
    }
    case 'ok':
      break;
    default:
      // The server may add message types; ignore what we do not know.
      break;
  }
  render();
}

async function main() {
  render();
  if (publish) {
    try {
      const video = cameraSize ? { width: Number(cameraSize[1]), height: Number(cameraSize[2]) } : true;
      noom.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video });
    } catch (err) {
      fail(err, 'getUserMedia');
      setState('error');
      return;
    }
    noom.audioTrack = noom.localStream.getAudioTracks()[0] || null;
    noom.videoTrack = noom.localStream.getVideoTracks()[0] || null;
    // No preview with the test hooks: they replace and stop the sent video
    // track, which would leave the preview showing a stopped one.
    if (!hooks) tile('local', `${name} (you)`, noom.localStream, { local: true });
  }
  setState('media');

  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  noom.ws = ws;
  setState('connecting');
  ws.onopen = () => {
    setState('joining');
    joinReq = nextReq++;
    if (hooks) noom.joinSentAt = clock();
    mark('join sent');
    send({ type: 'join', room, name, req: joinReq });
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data !== 'string') {
      fail(new Error('binary WebSocket message from the server'));
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (err) {
      fail(err, 'bad JSON from the server');
      return;
    }
    try {
      onMessage(msg);
    } catch (err) {
      fail(err, `handling ${msg.type}`);
    }
  };
  ws.onerror = () => fail(new Error('WebSocket error'));
  ws.onclose = (ev) => {
    if (noom.state !== 'error') setState('closed');
    noom.errors.push(`WebSocket closed (code ${ev.code}${ev.reason ? `, ${ev.reason}` : ''})`);
    if (noom.pc) noom.pc.close();
    noom.connectionState = 'closed';
    render();
  };
}

main().catch((err) => {
  fail(err, 'main');
  setState('error');
});
