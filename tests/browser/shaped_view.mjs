// What the shaped-link tests (shaped_link, starved_link) share: the server
// started with simulcast on, `tc` on hand, and the server's view of one
// subscriber from the admin overview.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// The server's view of one subscriber: its bandwidth and the video it is
// forwarded from `publisher` (admin API, bearer `token`).
export async function subscriberView(server, token, subscriber, publisher) {
  const res = await fetch(`${server.url}/api/overview`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200, 'admin overview');
  for (const room of (await res.json()).rooms) {
    for (const p of room.participants) {
      if (p.id !== subscriber || !p.media) continue;
      const video = p.media.forwarded.find((f) => f.publisher === publisher && f.kind === 'video') || null;
      return { bandwidth: p.media.bandwidth, probe_bps: p.media.probe_bps, video };
    }
  }
  return null;
}

// A config file with simulcast on, whatever the shipped default becomes.
export function simulcastConfig() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'noom-shaped-'));
  const file = path.join(dir, 'config.toml');
  writeFileSync(file, '[media]\nsimulcast = true\n');
  return { args: ['--config', file], cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

// Why the link cannot be shaped here, or null.
export function tcUnavailable() {
  try {
    execFileSync('sh', ['-c', 'command -v tc'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'needs `tc` (iproute2)';
  }
}
