// File transfer over the server's `noom` data channel (docs/protocol.md,
// "Data channel"): a file goes as an offer frame, 16 KiB chunks and an end
// frame, to the room or to the participant chosen in the chat's target
// list; sending waits while the channel's buffer is above HIGH_WATER, so a
// large file never piles up in memory. Incoming files are assembled per
// (sender, transfer id) and offered as a download link.

import { FrameKind, clientFrame, fileOfferBody, parseFileOffer, transferId } from './frames.js';

const CHUNK = 16 * 1024;
/** Bytes buffered in the data channel above which sending waits. */
export const HIGH_WATER = 1 << 20;

export function formatSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function waitForRoom(dc) {
  if (dc.bufferedAmount < HIGH_WATER) return Promise.resolve();
  return new Promise((resolve) => {
    dc.addEventListener('bufferedamountlow', resolve, { once: true });
  });
}

export function createFileTransfer({ app, status, listEl, targetEl, inputEl, zoneEl, nameOf }) {
  const incoming = new Map(); // `${from}/${id}` -> incoming transfer
  let nextTransfer = 1;

  function transferItem(label) {
    const li = document.createElement('li');
    const text = document.createElement('div');
    text.textContent = label;
    const bar = document.createElement('progress');
    bar.max = 1;
    bar.value = 0;
    li.append(text, bar);
    listEl.prepend(li);
    return { li, text, bar };
  }

  async function sendFile(file) {
    const dc = app.dc;
    if (!dc || dc.readyState !== 'open') {
      status('File transfer is not available yet (data channel not open).', { error: true });
      return;
    }
    const to = targetEl.value || null;
    const id = nextTransfer++;
    const ui = transferItem(`Sending ${file.name} (${formatSize(file.size)})${to ? ` to ${nameOf(to)}` : ''}`);
    ui.li.dataset.transfer = `out/${id}`;
    dc.send(clientFrame(FrameKind.FILE_OFFER, to, fileOfferBody(id, file.size, file.name, file.type || 'application/octet-stream')));
    let sent = 0;
    try {
      while (sent < file.size) {
        await waitForRoom(dc);
        if (dc.readyState !== 'open') throw new Error('the connection closed');
        const chunk = new Uint8Array(await file.slice(sent, sent + CHUNK).arrayBuffer());
        const body = new Uint8Array(4 + chunk.length);
        new DataView(body.buffer).setUint32(0, id);
        body.set(chunk, 4);
        dc.send(clientFrame(FrameKind.FILE_CHUNK, to, body));
        sent += chunk.length;
        ui.bar.value = sent / Math.max(1, file.size);
      }
      const end = new Uint8Array(4);
      new DataView(end.buffer).setUint32(0, id);
      dc.send(clientFrame(FrameKind.FILE_END, to, end));
      ui.bar.value = 1;
      ui.text.textContent = `Sent ${file.name} (${formatSize(file.size)})`;
      ui.li.dataset.state = 'sent';
    } catch (err) {
      ui.text.textContent = `Sending ${file.name} failed: ${err.message}`;
      ui.li.dataset.state = 'failed';
    }
  }

  function fail(t, reason) {
    t.ui.text.textContent = `${t.name} from ${t.fromName}: failed (${reason})`;
    t.ui.li.dataset.state = 'failed';
    t.chunks = [];
  }

  // A file frame from the data channel; false for any other kind.
  function onFrame(frame, fromName) {
    switch (frame.kind) {
      case FrameKind.FILE_OFFER: {
        const offer = parseFileOffer(frame.body);
        if (!offer) return true;
        const ui = transferItem(`${offer.name} (${formatSize(offer.size)}) from ${fromName}`);
        const key = `${frame.from}/${offer.transfer}`;
        ui.li.dataset.transfer = key;
        incoming.set(key, { ...offer, fromName, ui, chunks: [], received: 0 });
        return true;
      }
      case FrameKind.FILE_CHUNK: {
        const t = incoming.get(`${frame.from}/${transferId(frame.body)}`);
        if (!t) return true;
        t.chunks.push(frame.body.slice(4));
        t.received += frame.body.length - 4;
        t.ui.bar.value = t.received / Math.max(1, t.size);
        return true;
      }
      case FrameKind.FILE_END: {
        const key = `${frame.from}/${transferId(frame.body)}`;
        const t = incoming.get(key);
        if (!t) return true;
        incoming.delete(key);
        const blob = new Blob(t.chunks, { type: t.type });
        const a = document.createElement('a');
        a.href = URL.createObjectURL(blob);
        a.download = t.name;
        a.textContent = `Download ${t.name}`;
        t.ui.text.textContent = `${t.name} from ${t.fromName} (${formatSize(t.size)}): `;
        t.ui.text.append(a);
        t.ui.bar.value = 1;
        t.ui.li.dataset.state = 'done';
        return true;
      }
      case FrameKind.FILE_ABORT: {
        const key = `${frame.from}/${transferId(frame.body)}`;
        const t = incoming.get(key);
        if (!t) return true;
        incoming.delete(key);
        fail(t, new TextDecoder().decode(frame.body.slice(4)) || 'aborted');
        return true;
      }
      default:
        return false;
    }
  }

  // Every incoming transfer fails (the peer connection closed).
  function failAll(reason) {
    for (const t of incoming.values()) fail(t, reason);
    incoming.clear();
  }

  inputEl.addEventListener('change', (e) => {
    for (const file of e.target.files) sendFile(file);
    e.target.value = '';
  });
  zoneEl.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      inputEl.click();
    }
  });
  zoneEl.addEventListener('dragover', (e) => {
    e.preventDefault();
    zoneEl.classList.add('drag');
  });
  zoneEl.addEventListener('dragleave', () => zoneEl.classList.remove('drag'));
  zoneEl.addEventListener('drop', (e) => {
    e.preventDefault();
    zoneEl.classList.remove('drag');
    for (const file of e.dataTransfer.files) sendFile(file);
  });

  return { sendFile, onFrame, failAll };
}
