// Brings the media connection back after a network change, without a new
// join: when nothing arrives on the connection's path for a while (1.5 s if
// packets were flowing), when it stays `disconnected` for a moment, or when
// it is `failed`, the client asks the server for a fresh connection
// (`restart_media`, see docs/protocol.md) and keeps asking, with backoff,
// until one connects or the server gives up on it (grace period).
//
// Why not wait: a browser whose address changed (Wi-Fi to another Wi-Fi,
// a VPN coming up) does not gather candidates on its new address by itself,
// so the old connection never comes back. Why so soon: Chromium learns of a
// new address only about 2 s after it appeared (it re-reads its network
// list then; no event tells the page), and a connection made before that
// picks the address up as soon as it does, so a restart 1.5 s into the
// silence costs a moved client little. A path lost for only a second
// or two would have come back on the old connection through ICE consent;
// the restart costs it a new connection (about 0.3 s once the path works,
// and a keyframe).

// How long `disconnected` may last before a restart: longer than a brief
// loss of consent responses, short enough that a moved client is back in
// about 3 s.
export const RESTART_AFTER_DISCONNECTED_MS = 1500;
// Silence on the selected candidate pair after which the path counts as
// broken, when little was arriving before: the server sends something at
// least every 2 s (ICE keepalives, and sender reports every second while it
// forwards media), and the browser itself declares `disconnected` only after
// about 7 s (measured in tests/browser/network_change.test.mjs).
export const STALE_PATH_MS = 3000;
// The same when packets were flowing: at least FLOWING_PACKETS_PER_S over
// the FLOWING_WINDOW_MS before the silence. A client that publishes gets the
// server's transport-cc feedback every 100 ms (13 packets/s when alone in a
// room, muted or not), and another publisher's audio alone is 50 packets/s;
// on a healthy call the longest silence measured was 154 ms (two Chromium
// on a loaded 2-core machine, polled every 50 ms), but a debug build of the
// server on that machine (load average 24) once went 1.16 s without
// sending while its media thread did another peer's DTLS handshake, and a
// restart then makes one more handshake. So 1.5 s of nothing, while the
// browser kept sending (see checkPath), means the path broke; a moved
// client loses nothing by the wait, as Chromium learns of its new address
// only about 2 s after it appeared anyway. The only healthy case left that
// trips it is a client that publishes nothing whose last remote publisher
// leaves; its restart costs nobody anything.
export const STALE_FLOWING_PATH_MS = 1500;
export const FLOWING_PACKETS_PER_S = 8;
export const FLOWING_WINDOW_MS = 2000;
// How often the selected pair is looked at (one getStats, about 2 ms in a
// two-party call): a broken path is noticed at most this much late.
export const POLL_MS = 250;
// Restarts that do not connect are retried after this, doubling up to the max.
// (A new connection takes well under a second on a working path, up to
// about 3 s on a loaded machine.)
export const RETRY_AFTER_MS = 5000;
export const MAX_RETRY_AFTER_MS = 20000;

export class MediaRecovery {
  // `restart()` replaces the peer connection (a new one is passed to
  // `watch`); `log(event)` records what happened, for tests and the console.
  constructor({ restart, log = () => {} }) {
    this.restart = restart;
    this.log = log;
    this.pc = null;
    this.restartTimer = null; // a restart about to happen
    this.retryTimer = null; // checks that the last restart connected
    this.retryAfter = RETRY_AFTER_MS;
    this.stalePoll = null;
    this.path = new PathHistory();
  }

  // Follows `pc`, the current connection (the one a restart made, too).
  watch(pc) {
    this.pc = pc;
    this.restartTimer = clear(this.restartTimer);
    clearInterval(this.stalePoll);
    this.path = new PathHistory();
    this.stalePoll = setInterval(() => this.checkPath(pc), POLL_MS);
    pc.addEventListener('connectionstatechange', () => {
      if (this.pc !== pc) return;
      const state = pc.connectionState;
      this.log({ what: `connection ${state}` });
      if (state === 'connected') {
        this.restartTimer = clear(this.restartTimer);
        this.retryTimer = clear(this.retryTimer);
        this.retryAfter = RETRY_AFTER_MS;
      } else if (state === 'disconnected') {
        this.schedule(RESTART_AFTER_DISCONNECTED_MS, 'disconnected');
      } else if (state === 'failed') {
        this.schedule(0, 'failed');
      }
    });
  }

  // Stops following: the client left, was moved (a new join follows) or
  // lost its WebSocket (it rejoins).
  stop() {
    this.pc = null;
    clearInterval(this.stalePoll);
    this.stalePoll = null;
    this.restartTimer = clear(this.restartTimer);
    this.retryTimer = clear(this.retryTimer);
    this.retryAfter = RETRY_AFTER_MS;
  }

  // A connected path on which nothing has arrived for a while is broken,
  // whatever the browser says yet; "a while" is short when packets were
  // flowing before.
  async checkPath(pc) {
    if (this.pc !== pc || pc.connectionState !== 'connected') return;
    let pair = null;
    try {
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) ?? null;
      });
    } catch {
      return; // closed meanwhile
    }
    if (this.pc !== pc || !pair?.lastPacketReceivedTimestamp) return;
    const { silent, rate, sentSince } = this.path.add(pair);
    // Only a silence we kept sending into: a page whose own sending paused
    // (its renderer busy with a renegotiation on a loaded machine) also
    // hears nothing back for a while when it is alone in a room.
    const flowing = rate >= FLOWING_PACKETS_PER_S && sentSince >= STALE_FLOWING_PATH_MS;
    if (silent >= (flowing ? STALE_FLOWING_PATH_MS : STALE_PATH_MS)) {
      const why = `nothing received for ${Math.round(silent)} ms${flowing ? ` after ${Math.round(rate)} packets/s, while sending` : ''}`;
      this.schedule(0, why, { evenIfConnected: true });
    }
  }

  // `evenIfConnected`: the browser still calls the connection connected,
  // but it is not (a silent path).
  schedule(delay, why, { evenIfConnected = false } = {}) {
    if (this.restartTimer !== null || this.retryTimer !== null) return;
    this.log({ what: 'restart scheduled', why, delay });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (!this.pc || (this.pc.connectionState === 'connected' && !evenIfConnected)) return;
      this.log({ what: 'restart', why });
      const retry = this.retryAfter;
      this.retryAfter = Math.min(this.retryAfter * 2, MAX_RETRY_AFTER_MS);
      // If the new connection does not connect either, try again later.
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        if (this.pc && this.pc.connectionState !== 'connected') this.schedule(0, 'the restart did not connect');
      }, retry);
      this.restart();
    }, delay);
  }
}

// What arrived on the selected candidate pair lately: samples of its
// packet count, so that a silence can be judged by what came before it.
class PathHistory {
  constructor() {
    this.pairId = null;
    this.samples = []; // {at, packets}, oldest first
  }

  // Takes one candidate-pair stats entry; returns how long nothing has
  // arrived (ms), the packets per second in the FLOWING_WINDOW_MS before
  // the last one arrived (0 without enough history), and how long after
  // that the browser still sent something (ms).
  add(pair) {
    if (pair.id !== this.pairId) {
      this.pairId = pair.id;
      this.samples = [];
    }
    const at = pair.timestamp;
    const lastAt = pair.lastPacketReceivedTimestamp;
    this.samples.push({ at, packets: pair.packetsReceived ?? 0 });
    // Enough to look back over a window that ended up to STALE_PATH_MS ago.
    while (this.samples.length > 1 && this.samples[0].at < at - STALE_PATH_MS - FLOWING_WINDOW_MS - POLL_MS) this.samples.shift();
    const from = this.samples.find((s) => s.at >= lastAt - FLOWING_WINDOW_MS);
    const span = from ? lastAt - from.at : 0;
    // Half a window at least, or one burst after a quiet start would count.
    const rate = span >= FLOWING_WINDOW_MS / 2 ? ((pair.packetsReceived ?? 0) - from.packets) / (span / 1000) : 0;
    return { silent: at - lastAt, rate, sentSince: (pair.lastPacketSentTimestamp ?? 0) - lastAt };
  }
}

function clear(timer) {
  if (timer !== null) clearTimeout(timer);
  return null;
}
