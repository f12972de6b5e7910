// Screen sharing (docs/protocol.md "Screen share"): the sharer adds its
// screen as an extra sendonly track through its own offer on the one
// RTCPeerConnection (the polite peer: if the server's offer crosses ours,
// ours is refused, we roll back, answer the server and offer again); to
// stop, it removes the track and offers again, so the server ends the track
// everywhere. Others receive it as a track whose msid track id starts with
// `screen`, in the sharer's MediaStream, and show it on its own tile.

export function createScreenShare({ app, send, enqueue, status, tilesEl, nameOf }) {
  const remote = new Map(); // participant id -> { tile, track, transceiver }
  let local = null; // { track, sender }
  let pendingOffer = null; // { req, resolve }
  let wanted = false; // a negotiation is owed (refused for glare)
  const button = document.getElementById('share-button');

  // ---------------------------------------------------------------- sharing

  // Offers our current tracks to the server and applies its answer. Runs in
  // the signaling queue, so it never overlaps an answer to a server offer.
  async function negotiate() {
    const pc = app.pc;
    if (!pc || pc.signalingState !== 'stable') {
      wanted = true;
      return;
    }
    wanted = false;
    await pc.setLocalDescription(await pc.createOffer());
    const req = app.nextReq++;
    const reply = new Promise((resolve) => { pendingOffer = { req, resolve }; });
    if (!send({ type: 'offer', sdp: pc.localDescription.sdp, req })) {
      pendingOffer = null;
      await pc.setLocalDescription({ type: 'rollback' });
      wanted = true;
      return;
    }
    const msg = await reply;
    if (app.pc !== pc) return;
    if (msg.type === 'answer') {
      await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    } else {
      // Glare (the server's offer wins) or refused: roll back; offered
      // again once the server's offer is answered.
      await pc.setLocalDescription({ type: 'rollback' });
      wanted = true;
    }
  }

  async function start() {
    if (local) return;
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (err) {
      status(`Screen share not started (${err.name}).`, { error: true });
      return;
    }
    const track = stream.getVideoTracks()[0];
    if (!track || !app.pc) {
      for (const t of stream.getTracks()) t.stop();
      return;
    }
    track.contentHint = 'detail';
    // A new m-section of our own (addTrack could reuse one the server
    // forwards to us).
    const { sender } = app.pc.addTransceiver(track, { direction: 'sendonly' });
    local = { track, sender, pc: app.pc };
    track.addEventListener('ended', stop); // the browser's own "Stop sharing"
    renderButton();
    enqueue('sharing the screen', negotiate);
  }

  function stop() {
    if (!local) return;
    const { track, sender, pc } = local;
    local = null;
    track.stop();
    renderButton();
    if (pc !== app.pc || pc.signalingState === 'closed') return;
    pc.removeTrack(sender);
    enqueue('stopping the screen share', negotiate);
  }

  function renderButton() {
    if (!button) return;
    button.setAttribute('aria-pressed', String(Boolean(local)));
    button.textContent = local ? 'Stop sharing' : 'Share screen';
  }
  if (button) {
    button.addEventListener('click', () => (local ? stop() : start()));
    button.hidden = !navigator.mediaDevices?.getDisplayMedia;
  }

  // ---------------------------------------------------------------- showing

  // The msid track id the server gave the track in m-section `mid`.
  function msidTrackId(pc, mid) {
    const sdp = pc.remoteDescription?.sdp || '';
    for (const section of sdp.split(/\r?\n(?=m=)/).slice(1)) {
      if (!new RegExp(`^a=mid:${mid}\\s*$`, 'm').test(section)) continue;
      const msid = section.match(/^a=msid:\S+ (\S+)/m);
      return msid ? msid[1] : null;
    }
    return null;
  }

  // From `ontrack`: true when the track is a screen share (then shown here,
  // and taken out of the participant's camera stream).
  function onTrack(ev, participant) {
    const trackId = msidTrackId(ev.target, ev.transceiver.mid) || ev.track.id;
    if (ev.track.kind !== 'video' || !trackId.startsWith('screen')) return false;
    for (const s of ev.streams) s.removeTrack(ev.track);
    removeRemote(participant);
    const tile = document.createElement('figure');
    tile.className = 'tile screen';
    tile.dataset.screenOf = participant;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true;
    video.srcObject = new MediaStream([ev.track]);
    const label = document.createElement('figcaption');
    label.className = 'label';
    const name = document.createElement('span');
    name.className = 'name';
    label.append(name);
    tile.append(video, label);
    tilesEl.append(tile);
    remote.set(participant, { tile, track: ev.track, transceiver: ev.transceiver, trackId });
    rename(participant);
    video.play().catch(() => {});
    return true;
  }

  function rename(participant) {
    const entry = remote.get(participant);
    if (!entry) return;
    const text = `${nameOf(participant)}'s screen`;
    entry.tile.querySelector('.name').textContent = text;
    entry.tile.setAttribute('aria-label', text);
  }

  function removeRemote(participant) {
    const entry = remote.get(participant);
    if (!entry) return;
    remote.delete(participant);
    entry.tile.querySelector('video').srcObject = null;
    entry.tile.remove();
  }

  // After every server offer is answered: a share whose m-section no longer
  // carries it (inactive, or reused for another track) has ended.
  function afterServerOffer(pc) {
    for (const [participant, entry] of remote) {
      const direction = entry.transceiver.currentDirection;
      const still = (direction === 'recvonly' || direction === 'sendrecv')
        && msidTrackId(pc, entry.transceiver.mid) === entry.trackId;
      if (!still) removeRemote(participant);
    }
    if (wanted) enqueue('offering again', negotiate);
  }

  return {
    onTrack,
    afterServerOffer,
    rename,
    removeRemote,
    // A server reply that may answer our offer: true when it did.
    onReply(msg) {
      if (!pendingOffer || msg.req !== pendingOffer.req) return false;
      pendingOffer.resolve(msg);
      pendingOffer = null;
      return true;
    },
    // The peer connection is gone (left, moved, restarted): shares end.
    reset() {
      if (pendingOffer) pendingOffer.resolve({ type: 'error' });
      pendingOffer = null;
      wanted = false;
      if (local) {
        local.track.stop();
        local = null;
        renderButton();
      }
      for (const id of [...remote.keys()]) removeRemote(id);
    },
    get sharing() { return Boolean(local); },
  };
}
