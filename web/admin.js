// Noom admin page: live view of rooms, participants and shards from
// /api/events (server-sent events, read with fetch so the bearer token can
// go in a header), and the operator's actions (kick, close room, announce).

const $ = (id) => document.getElementById(id);
const status = (text) => { $('status').textContent = text; };
let token = sessionStorage.getItem('noom-admin-token') || '';
let abort = null;

function api(path, options = {}) {
  return fetch(path, {
    ...options,
    headers: { 'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json', ...(options.headers || {}) },
  });
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

const fmt = {
  rate: (x) => (x ?? 0).toFixed(0),
  kbps: (bps) => `${((bps ?? 0) / 1000).toFixed(0)} kbit/s`,
  pct: (x) => x == null ? '–' : `${(x * 100).toFixed(1)} %`,
  ms: (x) => x == null ? '–' : `${x.toFixed(1)} ms`,
};

// A node of a cluster lists every node's shards as `node · shard`.
function renderShards(overview) {
  const shards = overview.nodes
    ? overview.nodes.flatMap((n) => (n.shards || []).map((s) => ({ ...s, label: `${n.id} · ${s.shard}` })))
    : overview.shards.map((s) => ({ ...s, label: s.shard }));
  const body = $('shards').tBodies[0];
  body.replaceChildren();
  for (const s of shards) {
    const row = body.insertRow();
    cell(row, s.label, 'num');
    cell(row, s.rooms, 'num');
    cell(row, s.participants, 'num');
    cell(row, s.tracks, 'num');
    cell(row, fmt.rate(s.packets_in_per_second), 'num');
    cell(row, fmt.rate(s.packets_out_per_second), 'num');
    cell(row, fmt.pct(s.busy_ratio), 'num');
    cell(row, s.dropped_datagrams, 'num');
  }
}

// The nodes of a cluster (hidden on a single node): heartbeat, load, and
// whether each answered this refresh (a silent node's rooms show no media).
function renderNodes(nodes) {
  $('nodes-section').hidden = !nodes;
  if (!nodes) return;
  const body = $('nodes').tBodies[0];
  body.replaceChildren();
  for (const n of nodes) {
    const row = body.insertRow();
    cell(row, n.id);
    cell(row, n.alive ? n.state : 'dead', n.alive ? (n.state === 'serving' ? 'state-connected' : 'state-connecting') : 'state-failed');
    cell(row, n.heartbeat_age_ms == null ? '–' : `${(n.heartbeat_age_ms / 1000).toFixed(1)} s`, 'num');
    cell(row, n.rooms, 'num');
    cell(row, n.participants, 'num');
    cell(row, fmt.pct(n.busy_ratio), 'num');
    cell(row, n.websocket_connections ?? '–', 'num');
    cell(row, n.answered ? 'yes' : `no: ${n.error}`, n.answered ? '' : 'state-failed');
  }
}

function trackList(items, describe) {
  const ul = document.createElement('ul');
  ul.className = 'tracks';
  for (const item of items) {
    const li = document.createElement('li');
    li.textContent = describe(item);
    ul.append(li);
  }
  return ul;
}

function setText(el, text) {
  const s = String(text);
  if (el.textContent !== s) el.textContent = s;
}

// Replaces a cell's track list only when its text changed.
function setList(td, items, describe) {
  const lines = items.map(describe);
  const ul = td.firstElementChild;
  if (ul && [...ul.children].map((li) => li.textContent).join('\n') === lines.join('\n')) return;
  td.replaceChildren(trackList(lines, (line) => line));
}

// Places `child` at position `index` of `parent` without moving it when it
// is already there (moving a node would take the keyboard focus off it).
function placeAt(parent, child, index) {
  const current = parent.children[index] || null;
  if (current !== child) parent.insertBefore(child, current);
}

const ROOM_COLUMNS = ['Name', 'Remote address', 'State', 'RTT', 'Loss to client', 'Published', 'Forwarded to them', 'Estimate to client', 'Action'];
const byKind = (a, b) => String(a.kind).localeCompare(String(b.kind));

// Rooms are keyed by node and name: while a room moves it is briefly on two.
const roomKey = (node, name) => `${node ?? ''}\n${name}`;

function newRoomDiv(name, node) {
  const div = document.createElement('div');
  div.className = 'room';
  div.dataset.room = name;
  if (node != null) div.dataset.node = node;
  const h = document.createElement('h3');
  const title = document.createElement('span');
  const close = document.createElement('button');
  close.className = 'danger';
  close.textContent = `Close room ${name}`;
  close.addEventListener('click', () => act(`/api/rooms/${encodeURIComponent(name)}/close`, { reason: 'The operator closed this room.' }));
  h.append(title, close);
  const table = document.createElement('table');
  const headRow = table.createTHead().insertRow();
  for (const column of ROOM_COLUMNS) {
    const th = document.createElement('th');
    th.scope = 'col';
    th.textContent = column;
    if (column === 'RTT' || column === 'Loss to client') th.className = 'num';
    headRow.append(th);
  }
  table.createTBody();
  div.append(h, table);
  return div;
}

function newParticipantRow(room, p) {
  const row = document.createElement('tr');
  row.dataset.participant = p.id;
  for (let i = 0; i < ROOM_COLUMNS.length; i++) row.insertCell();
  const kick = document.createElement('button');
  kick.className = 'danger';
  kick.textContent = `Kick ${p.name}`;
  kick.addEventListener('click', () => act(`/api/rooms/${encodeURIComponent(room)}/participants/${encodeURIComponent(p.id)}/kick`, { reason: 'The operator removed you from the call.' }));
  row.cells[ROOM_COLUMNS.indexOf('Action')].append(kick);
  return row;
}

// Updates the rooms in place (rows and buttons are kept from one update to
// the next, so a focused or half-clicked button survives the refresh).
function renderRooms(rooms) {
  $('room-count').textContent = `(${rooms.length})`;
  const select = $('announce-room');
  const roomNames = [...new Set(rooms.map((r) => r.name))];
  const options = ['', ...roomNames];
  if ([...select.options].map((o) => o.value).join('\n') !== options.join('\n')) {
    const chosen = select.value;
    select.replaceChildren(new Option('everyone connected', ''));
    for (const name of roomNames) select.append(new Option(`room ${name}`, name));
    select.value = rooms.some((r) => r.name === chosen) ? chosen : '';
  }

  const container = $('rooms');
  const existing = new Map([...container.querySelectorAll(':scope > .room')].map((d) => [roomKey(d.dataset.node, d.dataset.room), d]));
  let empty = container.querySelector(':scope > .empty');
  if (rooms.length === 0) {
    if (!empty) {
      empty = document.createElement('p');
      empty.className = 'empty';
      empty.textContent = 'No rooms right now.';
    }
    container.replaceChildren(empty);
    return;
  }
  if (empty) empty.remove();
  const names = new Map();
  for (const room of rooms) for (const p of room.participants || []) names.set(p.id, p.name);
  rooms.forEach((room, index) => {
    const key = roomKey(room.node, room.name);
    const div = existing.get(key) || newRoomDiv(room.name, room.node);
    existing.delete(key);
    placeAt(container, div, index);
    const where = room.node == null ? '' : ` · node ${room.node}`;
    const title = room.unanswered_by
      ? `${room.name}${where} · ${room.participant_count} participant(s) · node ${room.unanswered_by} did not answer: no details`
      : `${room.name}${where} · shard ${room.shard} · ${room.participants.length} participant(s)`;
    setText(div.querySelector('h3 > span'), title);
    const tbody = div.querySelector('tbody');
    const rows = new Map([...tbody.rows].map((r) => [r.dataset.participant, r]));
    (room.participants || []).forEach((p, i) => {
      const m = p.media || {};
      const row = rows.get(p.id) || newParticipantRow(room.name, p);
      rows.delete(p.id);
      placeAt(tbody, row, i);
      const c = row.cells;
      setText(c[0], `${p.name}${p.audio_muted ? ' (mic off)' : ''}${p.video_muted ? ' (camera off)' : ''}`);
      setText(c[1], m.remote_addr || '–');
      setText(c[2], m.state || 'no media');
      c[2].className = `state-${m.state || 'connecting'}`;
      setText(c[3], fmt.ms(m.rtt_ms));
      c[3].className = 'num';
      setText(c[4], fmt.pct(m.loss_to_client));
      c[4].className = 'num';
      setList(c[5], [...(m.published || [])].sort(byKind), (t) =>
        `${t.kind} ${t.codec} · ${t.packets} pkts · ${fmt.rate(t.packets_per_second)} pkt/s · ${fmt.kbps(t.bits_per_second)}`);
      setList(c[6], [...(m.forwarded || [])].sort(byKind), (f) =>
        `${f.kind} from ${names.get(f.publisher) || f.publisher} · ${f.packets} pkts`);
      const bw = m.bandwidth;
      setText(c[7], bw && bw.feedbacks > 0
        ? `${fmt.kbps(bw.estimate_bps)} (delivered ${bw.acknowledged_bps == null ? '–' : fmt.kbps(bw.acknowledged_bps)})`
        : '–');
      c[7].className = 'num';
    });
    for (const gone of rows.values()) gone.remove();
  });
  for (const gone of existing.values()) gone.remove();
}

async function act(path, body) {
  let response;
  try {
    response = await api(path, { method: 'POST', body: JSON.stringify(body) });
  } catch (e) {
    $('result').textContent = `Failed: ${e.message}`;
    return;
  }
  const result = await response.json().catch(() => ({}));
  $('result').textContent = response.ok ? `Done: ${JSON.stringify(result)}` : `Failed: ${result.error || response.status}`;
  if (response.status === 401) signedOut();
}

function signedOut() {
  if (abort) abort.abort();
  status('Wrong token.');
  sessionStorage.removeItem('noom-admin-token');
  $('login').hidden = false;
  $('dashboard').hidden = true;
}

async function live() {
  if (abort) abort.abort();
  abort = new AbortController();
  status('Connecting…');
  let response;
  try {
    response = await fetch('/api/events', { headers: { 'Authorization': `Bearer ${token}` }, signal: abort.signal });
  } catch (e) {
    status(`Connection failed: ${e.message}; retrying`);
    setTimeout(live, 2000);
    return;
  }
  if (response.status === 401) {
    signedOut();
    return;
  }
  if (!response.ok) {
    status(`Server answered ${response.status}; retrying`);
    setTimeout(live, 2000);
    return;
  }
  $('login').hidden = true;
  $('dashboard').hidden = false;
  status('Live');
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const chunk = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = chunk.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
        if (!data) continue;
        const overview = JSON.parse(data);
        renderNodes(overview.nodes);
        renderShards(overview);
        renderRooms(overview.rooms);
        status(`Live · ${overview.websocket_connections} WebSocket connection(s) · updated ${new Date().toLocaleTimeString()}`);
      }
    }
  } catch (e) {
    if (e.name === 'AbortError') return;
  }
  status('Disconnected; retrying');
  setTimeout(live, 2000);
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value;
  sessionStorage.setItem('noom-admin-token', token);
  live();
});

$('announce').addEventListener('submit', (e) => {
  e.preventDefault();
  const room = $('announce-room').value;
  act('/api/announce', { text: $('announce-text').value, ...(room ? { room } : {}) });
});

const state = await (await fetch('/api/status')).json();
if (!state.admin_enabled) {
  $('disabled').hidden = false;
  status('Disabled');
} else if (token) {
  live();
} else {
  $('login').hidden = false;
  status('Sign in');
}
