// When the web client tries again after its WebSocket closed (not after
// `kicked`): see "Reconnecting" in docs/protocol.md.

// Delay before reconnect attempt `n` (0-based): exponential from 0.5 s up to
// 10 s, with "equal jitter" (half fixed, half random) so that clients
// dropped together by a server restart do not all come back at once.
export function reconnectDelay(n) {
  const ceiling = Math.min(10_000, 500 * 2 ** n);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

// After this many failed attempts in a row the client stops and asks for a
// reload.
export const MAX_RECONNECT_ATTEMPTS = 20;
