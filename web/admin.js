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

function renderShards(shards) {
  const body = $('shards').tBodies[0];
  body.replaceChildren();
  for (const s of shards) {
    const row = body.insertRow();
    cell(row, s.shard, 'num');
    cell(row, s.rooms, 'num');
    cell(row, s.participants, 'num');
    cell(row, s.tracks, 'num');
    cell(row, fmt.rate(s.packets_in_per_second), 'num');
    cell(row, fmt.rate(s.packets_out_per_second), 'num');
    cell(row, fmt.pct(s.busy_ratio), 'num');
    cell(row, s.dropped_datagrams, 'num');
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

function renderRooms(rooms) {
  $('room-count').textContent = `(${rooms.length})`;
  const select = $('announce-room');
  const chosen = select.value;
  select.replaceChildren(new Option('everyone connected', ''));
  for (const room of rooms) select.append(new Option(`room ${room.name}`, room.name));
  select.value = rooms.some((r) => r.name === chosen) ? chosen : '';

  const container = $('rooms');
  container.replaceChildren();
  if (rooms.length === 0) {
    container.textContent = 'No rooms right now.';
    return;
  }
  const names = new Map();
  for (const room of rooms) for (const p of room.participants) names.set(p.id, p.name);
  for (const room of rooms) {
    const div = document.createElement('div');
    div.className = 'room';
    div.dataset.room = room.name;
    const h = document.createElement('h3');
    h.textContent = `${room.name} · shard ${room.shard} · ${room.participants.length} participant(s)`;
    const close = document.createElement('button');
    close.className = 'danger';
    close.textContent = `Close room ${room.name}`;
    close.addEventListener('click', () => act(`/api/rooms/${encodeURIComponent(room.name)}/close`, { reason: 'The operator closed this room.' }));
    h.append(close);
    div.append(h);
    const table = document.createElement('table');
    table.innerHTML = '<thead><tr><th scope="col">Name</th><th scope="col">Remote address</th><th scope="col">State</th><th scope="col">RTT</th><th scope="col">Loss to client</th><th scope="col">Published</th><th scope="col">Forwarded to them</th><th scope="col">Action</th></tr></thead><tbody></tbody>';
    for (const p of room.participants) {
      const m = p.media || {};
      const row = table.tBodies[0].insertRow();
      row.dataset.participant = p.id;
      cell(row, `${p.name}${p.audio_muted ? ' (mic off)' : ''}${p.video_muted ? ' (camera off)' : ''}`);
      cell(row, m.remote_addr || '–');
      cell(row, m.state || 'no media', `state-${m.state || 'connecting'}`);
      cell(row, fmt.ms(m.rtt_ms), 'num');
      cell(row, fmt.pct(m.loss_to_client), 'num');
      row.insertCell().append(trackList(m.published || [], (t) =>
        `${t.kind} ${t.codec} · ${t.packets} pkts · ${fmt.rate(t.packets_per_second)} pkt/s · ${fmt.kbps(t.bits_per_second)}`));
      row.insertCell().append(trackList(m.forwarded || [], (f) =>
        `${f.kind} from ${names.get(f.publisher) || f.publisher} · ${f.packets} pkts`));
      const kick = document.createElement('button');
      kick.className = 'danger';
      kick.textContent = `Kick ${p.name}`;
      kick.addEventListener('click', () => act(`/api/rooms/${encodeURIComponent(room.name)}/participants/${encodeURIComponent(p.id)}/kick`, { reason: 'The operator removed you from the call.' }));
      row.insertCell().append(kick);
    }
    div.append(table);
    container.append(div);
  }
}

async function act(path, body) {
  const response = await api(path, { method: 'POST', body: JSON.stringify(body) });
  const result = await response.json().catch(() => ({}));
  status(response.ok ? `Done: ${JSON.stringify(result)}` : `Failed: ${result.error || response.status}`);
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
    status('Wrong token.');
    sessionStorage.removeItem('noom-admin-token');
    $('login').hidden = false;
    $('dashboard').hidden = true;
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
        renderShards(overview.shards);
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
