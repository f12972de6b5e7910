// Noom minimal client: a small, framework-free client of the signaling
// contract (shared/contract/signaling.md, version 1). It exists for the
// end-to-end tests and for debugging; the real web client is index.html.
//
// URL parameters: room (default "test"), name (default "guest-xxxx"),
// ice=none (use no ICE servers, for offline / loopback-only runs).
//
// Everything the tests need is on window.noom (see the object below).

const params = new URLSearchParams(location.search);
const room = params.get('room') || 'test';
const name = params.get('name') || `guest-${Math.random().toString(36).slice(2, 6)}`;
const noIce = params.get('ice') === 'none';

const $status = document.getElementById('status');
const $errors = document.getElementById('errors');
const $videos = document.getElementById('videos');
const $unmute = document.getElementById('unmute');

const noom = {
  // starting | media | connecting | joining | joined | closed | error
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
  log: [], // recent signaling traffic, newest last
  chats: [],
  pc: null,
  ws: null,
  localStream: null,
  stats,
  send,
  mute,
};
window.noom = noom;

let nextReq = 1;
let joinReq = null;
const attachedKinds = new Set(); // kinds whose local track is attached to a transceiver
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
    `room: ${room}   name: ${name}   you: ${noom.you ?? '-'}`,
    `state: ${noom.state}   pc: ${noom.connectionState}   ice: ${noom.iceConnectionState}   signaling: ${noom.signalingState}`,
    `offers received: ${noom.offers}   answers sent: ${noom.answers}`,
    `participants: ${others || '(none)'}`,
  ].join('\n');
  $errors.textContent = noom.errors.join('\n');
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

function enqueue(what, fn) {
  queue = queue.then(fn).catch((err) => fail(err, what));
  return queue;
}

// ---------------------------------------------------------------- video tiles

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

// The m-sections the server offers `recvonly`: [{kind, mid}] in SDP order.
// Those are where this client publishes its microphone and camera.
function recvonlySections(sdp) {
  const out = [];
  for (const section of sdp.split(/\r?\n(?=m=)/).slice(1)) {
    const m = section.match(/^m=(\S+) (\d+)/);
    const mid = section.match(/^a=mid:(\S+)/m);
    if (!m || !mid || m[2] === '0') continue;
    if (/^a=recvonly\s*$/m.test(section)) out.push({ kind: m[1], mid: mid[1] });
  }
  return out;
}

async function attachLocalTracks(offerSdp) {
  const stream = noom.localStream;
  if (!stream) return;
  for (const { kind, mid } of recvonlySections(offerSdp)) {
    if (attachedKinds.has(kind)) continue;
    const track = stream.getTracks().find((t) => t.kind === kind);
    if (!track) continue;
    const transceiver = noom.pc.getTransceivers().find((t) => t.mid === mid);
    if (!transceiver) {
      fail(new Error(`no transceiver for the server's recvonly ${kind} m-section mid=${mid}`));
      continue;
    }
    await transceiver.sender.replaceTrack(track);
    transceiver.direction = 'sendonly';
    attachedKinds.add(kind);
  }
}

async function handleOffer(sdp) {
  const pc = noom.pc;
  if (!pc) throw new Error('offer before joined');
  noom.offers += 1;
  await pc.setRemoteDescription({ type: 'offer', sdp });
  await attachLocalTracks(sdp);
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  send({ type: 'answer', sdp: pc.localDescription.sdp });
  noom.answers += 1;
  render();
}

function createPeerConnection(iceServers) {
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
  noom.pc = pc;
  pc.onicecandidate = (ev) => {
    const c = ev.candidate;
    send({
      type: 'candidate',
      candidate: c ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null,
    });
  };
  pc.onconnectionstatechange = () => {
    noom.connectionState = pc.connectionState;
    render();
  };
  pc.oniceconnectionstatechange = () => {
    noom.iceConnectionState = pc.iceConnectionState;
    render();
  };
  pc.onsignalingstatechange = () => {
    noom.signalingState = pc.signalingState;
    render();
  };
  pc.ontrack = (ev) => {
    const stream = ev.streams[0];
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
      framesDecoded: s.framesDecoded ?? 0,
      framesReceived: s.framesReceived ?? 0,
      keyFramesDecoded: s.keyFramesDecoded ?? 0,
      packetsReceived: s.packetsReceived ?? 0,
      bytesReceived: s.bytesReceived ?? 0,
      packetsLost: s.packetsLost ?? 0,
      nackCount: s.nackCount ?? 0,
      pliCount: s.pliCount ?? 0,
      firCount: s.firCount ?? 0,
    });
  });
  return out;
}

// ---------------------------------------------------------------- controls

function mute(kind, muted) {
  for (const t of noom.localStream ? noom.localStream.getTracks() : []) {
    if (t.kind === kind) t.enabled = !muted;
  }
  send({ type: 'mute', kind, muted, req: nextReq++ });
}

// ---------------------------------------------------------------- signaling

function onMessage(msg) {
  logEvent('<', msg);
  switch (msg.type) {
    case 'rooms':
      noom.rooms = msg.rooms || [];
      break;
    case 'joined': {
      noom.you = msg.you;
      for (const p of msg.participants || []) setParticipant(p);
      const iceServers = noIce ? [] : msg.ice_servers || [];
      createPeerConnection(iceServers);
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
    case 'offer':
      enqueue('offer', () => handleOffer(msg.sdp));
      break;
    case 'candidate':
      enqueue('remote candidate', async () => {
        if (!noom.pc) throw new Error('candidate before joined');
        if (msg.candidate) await noom.pc.addIceCandidate(msg.candidate);
        else await noom.pc.addIceCandidate();
      });
      break;
    case 'chat':
      noom.chats.push(msg);
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
  try {
    noom.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  } catch (err) {
    fail(err, 'getUserMedia');
    setState('error');
    return;
  }
  tile('local', `${name} (you)`, noom.localStream, { local: true });
  setState('media');

  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  noom.ws = ws;
  setState('connecting');
  ws.onopen = () => {
    setState('joining');
    joinReq = nextReq++;
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
