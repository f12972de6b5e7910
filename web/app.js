// Noom web client: lobby, call, devices, chat and file transfer.
//
// Speaks the protocol in docs/protocol.md: WebSocket signaling on /ws (the
// server offers, we answer), one RTCPeerConnection for everything, and the
// server's `noom` data channel for files. Plain ES module, no framework.

import { FrameKind, parseServerFrame } from './frames.js';
import { HIGH_WATER, createFileTransfer } from './file_transfer.js';
import { MAX_RECONNECT_ATTEMPTS, reconnectDelay } from './reconnect.js';
import { MediaRecovery } from './media_recovery.js';
import { createGrid } from './grid.js';
import { startLayoutReports } from './layout_report.js';
import { createScreenShare } from './screen_share.js';
import { CAMERA, setEncodingsActive, sizeSimulcastLayers } from './simulcast.js';
import { recvonlySections } from './sections.js';
import { listDevices as listDeviceOptions, openDevice } from './devices.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const NO_ICE = params.get('ice') === 'none'; // offline test runs: no STUN servers

const app = {
  ws: null,
  pc: null,
  dc: null,
  you: null,
  room: null,
  name: null,
  wantRoom: null, // {room, name} while we should be in a call (rejoins after a drop)
  participants: new Map(), // id -> P (the others)
  streams: new Map(), // participant id -> MediaStream
  localStream: null,
  senders: {}, // kind -> RTCRtpSender we publish on
  audioMuted: false,
  videoMuted: false,
  nextReq: 1,
  pendingChats: new Map(), // req -> list item
  joinReq: null,
  reconnectAttempt: 0,
  reconnectTimer: null,
  // 'connecting' | 'connected' | 'reconnecting' (a drop; we come back by
  // ourselves) | 'stopped' (kicked, or gave up: no more attempts).
  connection: 'connecting',
  queue: Promise.resolve(),
  errors: [],
  iceServers: [], // from `joined`, kept for the peer connections of a media restart
  recoveries: [], // what MediaRecovery did: {at, what, why}
};
window.noomApp = app;
app.recovery = new MediaRecovery({
  restart: () => restartMedia(),
  log: (event) => app.recoveries.push({ at: performance.now(), ...event }),
});

const grid = createGrid($('tiles'), { you: () => app.you });
const layoutReports = startLayoutReports($('tiles'), { send, nextReq: () => app.nextReq++ });
const screenShare = createScreenShare({
  app, send, enqueue, status, tilesEl: $('tiles'),
  nameOf: (id) => (app.participants.get(id) || {}).name || id,
});
const files = createFileTransfer({
  app, status, listEl: $('transfers'), targetEl: $('chat-to'), inputEl: $('file-input'), zoneEl: $('file-zone'),
  nameOf: (id) => (app.participants.get(id) || {}).name || id,
});
app.grid = grid;

// ------------------------------------------------------------------ status

function status(text, { error = false } = {}) {
  const el = app.room ? $('call-status') : $('lobby-status');
  el.textContent = text;
  el.classList.toggle('error', error);
  if (error) app.errors.push(text);
}

function showView(inCall) {
  $('lobby').hidden = inCall;
  $('call').hidden = !inCall;
}

function announce(text) {
  $('announcement-text').textContent = text;
  $('announcement').hidden = false;
}
$('announcement-close').addEventListener('click', () => { $('announcement').hidden = true; });

// ------------------------------------------------------------------ signaling

function send(msg) {
  if (app.ws && app.ws.readyState === WebSocket.OPEN) {
    app.ws.send(JSON.stringify(msg));
    return true;
  }
  return false;
}

// The "reconnecting" banner, from a drop until we are back where we were
// (in the room again, or connected in the lobby).
function setConnection(state) {
  app.connection = state;
  $('reconnecting').hidden = state !== 'reconnecting';
  document.body.dataset.connection = state;
}

function connect() {
  clearTimeout(app.reconnectTimer);
  app.reconnectTimer = null;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  app.ws = ws;
  ws.onopen = () => {
    app.reconnectAttempt = 0;
    if (app.wantRoom) {
      // The banner stays until `joined`.
      status(`Reconnected; rejoining ${app.wantRoom.room}…`);
      join(app.wantRoom.room, app.wantRoom.name);
    } else {
      setConnection('connected');
      status('Connected. Pick a name and a room.');
    }
  };
  ws.onmessage = (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    try {
      onMessage(msg);
    } catch (err) {
      status(`Client error handling ${msg.type}: ${err.message}`, { error: true });
    }
  };
  ws.onclose = (ev) => {
    if (app.ws !== ws) return;
    app.recovery.stop();
    closePeer();
    const wasInCall = Boolean(app.wantRoom);
    if (ev.code === 4001 || app.kicked) {
      // Kicked: stay out (the contract: no reconnect after `kicked`).
      setConnection('stopped');
      return;
    }
    if (app.reconnectAttempt >= MAX_RECONNECT_ATTEMPTS) {
      setConnection('stopped');
      status('Lost the connection to the server. Reload the page to try again.', { error: true });
      return;
    }
    const delay = reconnectDelay(app.reconnectAttempt);
    app.reconnectAttempt += 1;
    setConnection('reconnecting');
    status(`${wasInCall ? 'Connection lost' : 'Not connected'}; reconnecting in ${(delay / 1000).toFixed(1)} s…`, { error: true });
    app.reconnectTimer = setTimeout(connect, delay);
  };
}

function onMessage(msg) {
  switch (msg.type) {
    case 'rooms':
      renderRooms(msg.rooms || []);
      break;
    case 'joined':
      onJoined(msg);
      break;
    case 'participant_joined':
      upsertParticipant(msg.participant);
      notice(`${msg.participant.name} joined`);
      break;
    case 'participant_updated':
      if (msg.participant.id === app.you) break;
      upsertParticipant(msg.participant);
      break;
    case 'participant_left': {
      const p = app.participants.get(msg.id);
      removeParticipant(msg.id);
      if (p) notice(`${p.name} left`);
      break;
    }
    case 'offer':
      enqueue('answering the server', () => onOffer(msg.sdp));
      break;
    case 'candidate':
      enqueue('adding a server candidate', async () => {
        if (app.pc && msg.candidate) await app.pc.addIceCandidate(msg.candidate);
      });
      break;
    case 'chat':
      addChat({ from: msg.from, name: msg.name, text: msg.text, direct: Boolean(msg.to) });
      break;
    case 'speakers':
      grid.setSpeakers(Array.isArray(msg.participants) ? msg.participants : []);
      break;
    case 'answer':
      screenShare.onReply(msg);
      break;
    case 'encodings':
      enqueue('starting or stopping encodings', () => setEncodingsActive(app.pc, msg));
      break;
    case 'ok': {
      if (screenShare.onReply(msg) || layoutReports.owns(msg.req)) break;
      const li = app.pendingChats.get(msg.req);
      if (li) {
        li.classList.remove('pending');
        li.dataset.state = 'sent';
        app.pendingChats.delete(msg.req);
      }
      break;
    }
    case 'error':
      onError(msg);
      break;
    case 'announcement':
      announce(msg.text);
      notice(`Announcement: ${msg.text}`);
      break;
    case 'kicked':
      app.kicked = true;
      leaveCall();
      status(`You were removed from the call: ${msg.reason}`, { error: true });
      announce(`You were removed from the call: ${msg.reason}`);
      break;
    case 'left':
      leaveCall();
      status(`You left the room: ${msg.message || msg.reason}`, { error: true });
      break;
    case 'shutdown':
      status(`The server is shutting down: ${msg.message}`, { error: true });
      break;
    case 'track_unsupported': {
      // This browser cannot decode that participant's video codec: say so on
      // the tile rather than leave it black (docs/protocol.md, Video codecs).
      const badge = tileFor(msg.participant)?.querySelector('.badge.conn');
      if (badge) Object.assign(badge, { textContent: `${msg.codec} ${msg.kind} not supported here`, hidden: false });
      notice(`This browser cannot play ${app.participants.get(msg.participant)?.name ?? 'a participant'}'s ${msg.codec} ${msg.kind}`);
      break;
    }
    default:
      break; // newer server messages
  }
}

function onError(msg) {
  // Our own offer refused (glare): handled there. A `layout` the server
  // does not support (yet): nothing to tell anyone.
  if (screenShare.onReply(msg) || layoutReports.owns(msg.req)) return;
  const li = app.pendingChats.get(msg.req);
  if (li) {
    li.classList.add('failed');
    li.textContent += ` — not sent: ${msg.message}`;
    app.pendingChats.delete(msg.req);
  }
  if (msg.req !== undefined && msg.req === app.joinReq) {
    app.wantRoom = null;
    app.room = null;
    showView(false);
  }
  status(`Server: ${msg.message} (${msg.code})`, { error: true });
}

function enqueue(what, fn) {
  app.queue = app.queue.then(fn).catch((err) => status(`Problem ${what}: ${err.message}`, { error: true }));
  return app.queue;
}

// ------------------------------------------------------------------ lobby

function renderRooms(rooms) {
  const list = $('room-list');
  list.replaceChildren();
  $('no-rooms').hidden = rooms.length > 0;
  const names = $('room-names');
  names.replaceChildren();
  for (const r of rooms) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.room = r.name;
    b.setAttribute('aria-label', `Join room ${r.name}, ${r.participants} ${r.participants === 1 ? 'person' : 'people'} inside`);
    const n = document.createElement('span');
    n.textContent = r.name;
    const c = document.createElement('span');
    c.className = 'count';
    c.textContent = `${r.participants} ${r.participants === 1 ? 'person' : 'people'}`;
    b.append(n, c);
    b.addEventListener('click', () => {
      $('room').value = r.name;
      $('join-form').requestSubmit();
    });
    li.append(b);
    list.append(li);
    names.append(new Option(r.name));
  }
}

$('name').value = localStorage.getItem('noom-name') || '';
$('room').value = params.get('room') || '';
$('join-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = $('name').value.trim();
  const room = $('room').value.trim();
  if (!name || !room) return;
  localStorage.setItem('noom-name', name);
  app.kicked = false;
  if (!(await ensureMedia())) return;
  app.wantRoom = { room, name };
  join(room, name);
});

async function ensureMedia() {
  if (app.localStream) return true;
  status('Asking for your camera and microphone…');
  try {
    app.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: CAMERA });
  } catch (err) {
    status(`Camera or microphone unavailable (${err.name}): joining without them.`, { error: true });
    app.localStream = new MediaStream();
  }
  await listDevices();
  return true;
}

function join(room, name) {
  app.joinReq = app.nextReq++;
  if (!send({ type: 'join', room, name, req: app.joinReq })) {
    status('Not connected to the server yet; will join when connected.', { error: true });
  }
}

// ------------------------------------------------------------------ call

// The reply to our join, or (without `req`, while in a room) the server
// moved us: an operator moved the room, or the room's node was lost. Either
// way we start afresh from it: new id, the participants it lists, and a new
// RTCPeerConnection for the offer that follows.
function onJoined(msg) {
  app.you = msg.you;
  app.room = msg.room;
  // A reconnect goes back to where we are now.
  if (app.wantRoom) app.wantRoom.room = msg.room;
  app.name = app.wantRoom ? app.wantRoom.name : msg.you;
  setConnection('connected');
  $('call-title').textContent = `Room ${msg.room}`;
  showView(true);
  for (const id of [...app.participants.keys()]) removeParticipant(id);
  localTile();
  for (const p of msg.participants || []) upsertParticipant(p);
  const iceServers = NO_ICE ? [] : msg.ice_servers || [];
  // Closed now, so that nothing queued for the old connection (an offer,
  // candidates) reaches it or the new one; the new one is made in the queue,
  // before the offer that follows this message.
  app.recovery.stop();
  closePeer();
  app.streams.clear();
  app.iceServers = iceServers;
  enqueue('starting media', () => createPeer(iceServers));
  status(`Joined ${msg.room} as ${app.name}. Connecting media…`);
  // Restore mute state after a rejoin.
  if (app.audioMuted) send({ type: 'mute', kind: 'audio', muted: true });
  if (app.videoMuted) send({ type: 'mute', kind: 'video', muted: true });
  renderChatTargets();
}

function createPeer(iceServers) {
  closePeer();
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
  app.pc = pc;
  app.senders = {};
  app.recovery.watch(pc);
  pc.onicecandidate = (ev) => {
    if (app.pc !== pc) return;
    const c = ev.candidate;
    send({ type: 'candidate', candidate: c ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null });
  };
  pc.onconnectionstatechange = () => {
    const s = pc.connectionState;
    if (s === 'connected') status(`In ${app.room} as ${app.name}. Media connected.`);
    else if (s === 'disconnected') status('Media connection interrupted; trying to recover…', { error: true });
    else if (s === 'failed') status('Media connection failed. The server will remove you unless it recovers.', { error: true });
    for (const tile of document.querySelectorAll('.tile')) tile.dataset.pc = s;
  };
  pc.ontrack = (ev) => {
    const stream = ev.streams[0];
    if (!stream) return;
    const id = stream.id;
    if (screenShare.onTrack(ev, id)) return;
    app.streams.set(id, stream);
    attachStream(id, stream);
    stream.onremovetrack = () => {
      if (stream.getTracks().length === 0 && app.streams.get(id) === stream) app.streams.delete(id);
    };
  };
  pc.ondatachannel = (ev) => {
    if (ev.channel.label !== 'noom') return;
    const dc = ev.channel;
    dc.binaryType = 'arraybuffer';
    dc.bufferedAmountLowThreshold = HIGH_WATER / 4;
    dc.onopen = () => { app.dc = dc; };
    dc.onclose = () => { if (app.dc === dc) app.dc = null; };
    dc.onmessage = (m) => onDataFrame(m.data);
    if (dc.readyState === 'open') app.dc = dc;
  };
}

// A network change broke the media path for good: a new peer connection
// takes over from the old one (`restart_media`); the server's fresh offer
// follows and is answered by onOffer like any other. What we publish reaches
// the others again on the same tracks.
function restartMedia() {
  enqueue('restarting media', async () => {
    app.recoveries.push({ at: performance.now(), what: 'restart_media sent' });
    if (!app.room || !app.pc) return;
    createPeer(app.iceServers);
    send({ type: 'restart_media', req: app.nextReq++ });
  });
}

function closePeer() {
  screenShare.reset();
  layoutReports.reset();
  if (app.pc) app.pc.close();
  app.pc = null;
  app.dc = null;
  files.failAll('the connection closed');
}

async function onOffer(sdp) {
  const pc = app.pc;
  if (!pc) return;
  // The polite peer: our own offer (a screen share) gives way.
  if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' });
  await pc.setRemoteDescription({ type: 'offer', sdp });
  for (const { kind, mid } of recvonlySections(sdp)) {
    if (app.senders[kind]) continue;
    const transceiver = pc.getTransceivers().find((t) => t.mid === mid);
    const track = app.localStream.getTracks().find((t) => t.kind === kind);
    if (!transceiver || !track) continue;
    await transceiver.sender.replaceTrack(track);
    transceiver.direction = 'sendonly';
    app.senders[kind] = transceiver.sender;
  }
  await pc.setLocalDescription(await pc.createAnswer());
  // Replaced meanwhile (a move): this answer is for nobody.
  if (app.pc !== pc) return;
  send({ type: 'answer', sdp: pc.localDescription.sdp });
  screenShare.afterServerOffer(pc);
  if (app.senders.video) await sizeSimulcastLayers(app.senders.video);
}

function leaveCall() {
  if (app.room) send({ type: 'leave', req: app.nextReq++ });
  app.wantRoom = null;
  app.room = null;
  app.you = null;
  app.recovery.stop();
  closePeer();
  for (const id of [...app.participants.keys()]) removeParticipant(id);
  $('tiles').replaceChildren();
  showView(false);
}

$('leave-button').addEventListener('click', () => {
  leaveCall();
  status('You left the call.');
});

// ------------------------------------------------------------------ tiles

function tileFor(id) {
  return $('tiles').querySelector(`.tile[data-participant="${CSS.escape(id)}"]`);
}

function makeTile(id, { local = false } = {}) {
  let tile = tileFor(id);
  if (tile) return tile;
  tile = document.createElement('figure');
  tile.className = 'tile';
  tile.dataset.participant = id;
  if (local) tile.classList.add('local');
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = local;
  const off = document.createElement('div');
  off.className = 'camera-off';
  off.setAttribute('aria-hidden', 'true');
  const label = document.createElement('figcaption');
  label.className = 'label';
  const name = document.createElement('span');
  name.className = 'name';
  const mic = document.createElement('span');
  mic.className = 'badge mic-badge';
  mic.textContent = 'mic off';
  mic.hidden = true;
  const cam = document.createElement('span');
  cam.className = 'badge cam-badge';
  cam.textContent = 'camera off';
  cam.hidden = true;
  const conn = document.createElement('span');
  conn.className = 'badge conn';
  conn.textContent = local ? '' : 'connecting';
  conn.hidden = local;
  label.append(name, mic, cam, conn);
  tile.append(video, off, label);
  video.addEventListener('playing', () => { conn.hidden = true; });
  $('tiles').append(tile);
  return tile;
}

function updateTile(id, p, { local = false } = {}) {
  const tile = makeTile(id, { local });
  tile.querySelector('.name').textContent = local ? `${p.name} (you)` : p.name;
  tile.querySelector('.mic-badge').hidden = !p.audio_muted;
  tile.querySelector('.cam-badge').hidden = !p.video_muted;
  tile.classList.toggle('video-off', Boolean(p.video_muted));
  tile.querySelector('.camera-off').textContent = (p.name || '?').slice(0, 1).toUpperCase();
  tile.setAttribute('aria-label', `${local ? 'You' : p.name}${p.audio_muted ? ', mic off' : ''}${p.video_muted ? ', camera off' : ''}`);
}

function localTile() {
  updateTile('local', { name: app.name, audio_muted: app.audioMuted, video_muted: app.videoMuted }, { local: true });
  const video = tileFor('local').querySelector('video');
  if (video.srcObject !== app.localStream) video.srcObject = app.localStream;
}

function attachStream(id, stream) {
  const tile = makeTile(id);
  const video = tile.querySelector('video');
  if (video.srcObject !== stream) {
    video.srcObject = stream;
    video.play().catch(() => {
      video.muted = true; // autoplay with sound refused: show the picture at least
      video.play().catch(() => {});
    });
  }
  const p = app.participants.get(id);
  if (p) updateTile(id, p);
}

function upsertParticipant(p) {
  if (!p || p.id === app.you) return;
  app.participants.set(p.id, p);
  updateTile(p.id, p);
  screenShare.rename(p.id);
  const stream = app.streams.get(p.id);
  if (stream) attachStream(p.id, stream);
  renderChatTargets();
}

function removeParticipant(id) {
  screenShare.removeRemote(id);
  app.participants.delete(id);
  app.streams.delete(id);
  const tile = tileFor(id);
  if (tile) {
    tile.querySelector('video').srcObject = null;
    tile.remove();
  }
  renderChatTargets();
}

// Speaking indicator: the server's `speakers` (see grid.js).

// ------------------------------------------------------------------ devices

function listDevices() {
  return listDeviceOptions(app.localStream, { camera: $('camera-select'), mic: $('mic-select') });
}

async function switchDevice(kind, deviceId) {
  const fresh = await openDevice(kind, deviceId, CAMERA);
  const old = app.localStream.getTracks().find((t) => t.kind === kind);
  fresh.enabled = kind === 'video' ? !app.videoMuted : !app.audioMuted;
  // No renegotiation: the same sender, SSRC and m-section carry the new source.
  if (app.senders[kind]) await app.senders[kind].replaceTrack(fresh);
  // Another camera may have another size: its simulcast encodings follow.
  if (kind === 'video' && app.senders.video) enqueue('sizing the camera encodings', () => sizeSimulcastLayers(app.senders.video));
  if (old) {
    app.localStream.removeTrack(old);
    old.stop();
  }
  app.localStream.addTrack(fresh);
  localTile();
  status(`Switched ${kind === 'video' ? 'camera' : 'microphone'} to ${fresh.label || deviceId}.`);
}

$('camera-select').addEventListener('change', (e) => {
  switchDevice('video', e.target.value).catch((err) => status(`Could not switch camera: ${err.message}`, { error: true }));
});
$('mic-select').addEventListener('change', (e) => {
  switchDevice('audio', e.target.value).catch((err) => status(`Could not switch microphone: ${err.message}`, { error: true }));
});

function setMuted(kind, muted) {
  if (kind === 'audio') app.audioMuted = muted;
  else app.videoMuted = muted;
  for (const t of app.localStream.getTracks()) if (t.kind === kind) t.enabled = !muted;
  send({ type: 'mute', kind, muted, req: app.nextReq++ });
  const button = kind === 'audio' ? $('mic-button') : $('cam-button');
  button.setAttribute('aria-pressed', String(muted));
  button.textContent = kind === 'audio' ? (muted ? 'Unmute mic' : 'Mute mic') : (muted ? 'Turn camera on' : 'Turn camera off');
  localTile();
}

$('mic-button').addEventListener('click', () => setMuted('audio', !app.audioMuted));
$('cam-button').addEventListener('click', () => setMuted('video', !app.videoMuted));

// ------------------------------------------------------------------ chat

function renderChatTargets() {
  const select = $('chat-to');
  const chosen = select.value;
  select.replaceChildren(new Option('Everyone', ''));
  for (const [id, p] of app.participants) select.append(new Option(`${p.name} (direct)`, id));
  select.value = app.participants.has(chosen) ? chosen : '';
}

function chatItem({ who, text, mine = false, direct = false, notice: isNotice = false }) {
  const li = document.createElement('li');
  if (mine) li.classList.add('mine');
  if (direct) li.classList.add('direct');
  if (isNotice) {
    li.classList.add('notice');
    li.textContent = text;
  } else {
    const w = document.createElement('span');
    w.className = 'who';
    w.textContent = who;
    const t = document.createElement('span');
    t.className = 'text';
    t.textContent = text;
    li.append(w, t);
  }
  $('chat-log').append(li);
  li.scrollIntoView({ block: 'nearest' });
  return li;
}

function addChat({ from, name, text, direct }) {
  const who = name || (app.participants.get(from) || {}).name || from;
  chatItem({ who, text, direct });
}

function notice(text) {
  chatItem({ text, notice: true });
}

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('chat-text').value;
  if (!text.trim()) return;
  const to = $('chat-to').value;
  const req = app.nextReq++;
  const msg = { type: 'chat', text, req };
  if (to) msg.to = to;
  if (!send(msg)) {
    status('Not connected: message not sent.', { error: true });
    return;
  }
  const target = to ? ` → ${(app.participants.get(to) || {}).name || to}` : '';
  const li = chatItem({ who: `You${target}`, text, mine: true, direct: Boolean(to) });
  li.classList.add('pending');
  li.dataset.state = 'pending';
  app.pendingChats.set(req, li);
  $('chat-text').value = '';
});

// ------------------------------------------------------------------ data channel frames

function onDataFrame(data) {
  const frame = parseServerFrame(new Uint8Array(data));
  if (!frame) return;
  const fromName = (app.participants.get(frame.from) || {}).name || frame.from;
  if (files.onFrame(frame, fromName)) return;
  switch (frame.kind) {
    case FrameKind.CHAT:
      addChat({ from: frame.from, name: fromName, text: new TextDecoder().decode(frame.body), direct: frame.direct });
      break;
    case FrameKind.ERROR: {
      const code = frame.body[4] !== undefined ? new TextDecoder().decode(frame.body.slice(5, 5 + frame.body[4])) : 'error';
      const message = new TextDecoder().decode(frame.body.slice(5 + (frame.body[4] || 0)));
      status(`File transfer refused: ${message} (${code})`, { error: true });
      break;
    }
    default:
      break;
  }
}

// ------------------------------------------------------------------ test hooks

// Inbound video/audio stats per participant, for tests and troubleshooting.
app.stats = async () => {
  if (!app.pc) return [];
  const owner = new Map();
  for (const [id, stream] of app.streams) for (const t of stream.getTracks()) owner.set(t.id, id);
  const out = [];
  (await app.pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    const id = owner.get(s.trackIdentifier);
    if (!id) return;
    out.push({ participant: id, name: (app.participants.get(id) || {}).name, kind: s.kind, framesDecoded: s.framesDecoded ?? 0, packetsReceived: s.packetsReceived ?? 0 });
  });
  return out;
};

connect();
