// Brings the media connection back after a network change, without a new
// join: when the peer connection stays `disconnected` for a moment, or
// `failed`, the client asks the server for a fresh connection
// (`restart_media`, see docs/protocol.md) and keeps asking, with backoff,
// until one connects or the server gives up on it (grace period).
//
// Why not wait: a browser whose address changed (Wi-Fi to another Wi-Fi,
// a VPN coming up) does not gather candidates on its new address by itself,
// so the old connection never comes back; one that only lost its path for a
// few seconds recovers on its own through ICE consent, which is why a short
// `disconnected` is given time first.

// How long `disconnected` may last before a restart: longer than a brief
// loss of consent responses, short enough that a moved client is back in
// about 3 s.
export const RESTART_AFTER_DISCONNECTED_MS = 1500;
// Silence on the selected candidate pair after which the path counts as
// broken. The server sends something at least every 2 s (ICE keepalives,
// and sender reports every second while it forwards media), and the browser
// itself declares `disconnected` only after about 7 s (measured in
// tests/browser/network_change.test.mjs), so this saves seconds.
export const STALE_PATH_MS = 3000;
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
  }

  // Follows `pc`, the current connection (the one a restart made, too).
  watch(pc) {
    this.pc = pc;
    this.restartTimer = clear(this.restartTimer);
    clearInterval(this.stalePoll);
    this.stalePoll = setInterval(() => this.checkPath(pc), 1000);
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
  // whatever the browser says yet.
  async checkPath(pc) {
    if (this.pc !== pc || pc.connectionState !== 'connected') return;
    let silent = null;
    try {
      const report = await pc.getStats();
      report.forEach((s) => {
        const pair = s.type === 'transport' && s.selectedCandidatePairId ? report.get(s.selectedCandidatePairId) : null;
        if (pair?.lastPacketReceivedTimestamp) silent = pair.timestamp - pair.lastPacketReceivedTimestamp;
      });
    } catch {
      return; // closed meanwhile
    }
    if (this.pc !== pc || silent === null) return;
    if (silent >= STALE_PATH_MS) this.schedule(0, `nothing received for ${Math.round(silent)} ms`, { evenIfConnected: true });
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

function clear(timer) {
  if (timer !== null) clearTimeout(timer);
  return null;
}
