// A network namespace for one browser whose UDP the test drops: all of its
// outgoing UDP, as on a network that lets only TCP out (corporate proxies,
// some hotel Wi-Fi), or for a while, or only from an address it left.
//
// The namespace is held by an `unshare -n` process and joined to the
// test's namespace by a veth pair: the test's end is 10.77.N.1, the
// browser's 10.77.N.2 (default route through .1). nftables rules in the
// browser's namespace drop and count the UDP packets. Chromium
// runs in it through a wrapper script (`nsenter --net=...`), so playwright
// still drives it over its pipe. Killing the holder removes the namespace
// and the veth pair with it.
//
// Needs root, `ip`, `nft`, `unshare` and `nsenter` (scripts/test.sh runs
// the browser suite as root in a namespace of its own).

import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromiumBin, liveServers, waitFor } from './lib.mjs';

// Why this machine cannot build the namespace, or null.
export function udpBlockedNamespaceUnavailable() {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, veth, nftables)';
  for (const tool of ['ip', 'nft', 'unshare', 'nsenter']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `needs \`${tool}\``;
    }
  }
  return null;
}

const run = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

// Returns { hostIp, browserIp, executablePath, droppedUdpPackets(), close() }.
export async function udpBlockedNamespace(label) {
  const ns = await browserNamespace(label);
  ns.blockUdp();
  return ns;
}

// A namespace for one browser whose network the test can break and change:
// { hostIp, browserIp, executablePath, blockUdp(from?), blockUdpIn(to?),
//   blockPath(server, {from}), unblockUdp() (lifts every block),
//   limitRate(kbit), unlimitRate(), addBrowserLink() -> ip,
//   droppedUdpPackets(), close() }.
// `blockUdp()` drops all outgoing UDP (a path that broke; TCP, and so the
// WebSocket, stays up); `blockUdp(ip)` only UDP sent from that address (the
// browser's old address after it moved to a new one).
export async function browserNamespace(label) {
  const n = 1 + Math.floor(Math.random() * 250);
  const hostIp = `10.77.${n}.1`;
  const browserIp = `10.77.${n}.2`;
  const suffix = Math.random().toString(36).slice(2, 8);
  const [hostEnd, browserEnd] = [`nbh${suffix}`, `nbb${suffix}`];
  // The holder only keeps the namespace alive; it is killed in close().
  const holder = spawn('unshare', ['-n', 'sleep', 'infinity'], { stdio: 'ignore' });
  liveServers.add(holder);
  const killOnExit = () => holder.kill('SIGKILL');
  process.on('exit', killOnExit);
  const dir = mkdtempSync(path.join(os.tmpdir(), `noom-netns-${label}-`));
  const netns = `/proc/${holder.pid}/ns/net`;
  const inNs = (cmd, args) => run('nsenter', [`--net=${netns}`, cmd, ...args]);
  const close = () => {
    process.off('exit', killOnExit);
    liveServers.delete(holder);
    holder.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    // unshare has made the namespace once the holder's differs from ours.
    const ours = run('readlink', ['/proc/self/ns/net']).trim();
    await waitFor(() => run('readlink', [netns]).trim() !== ours, { timeout: 5000, interval: 10, what: 'unshare -n to create a namespace' });
    run('ip', ['link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', browserEnd, 'netns', String(holder.pid)]);
    // IPv4 only on both ends: an IPv6 link-local address appears 1-2 s
    // after the link is up (duplicate address detection), and a Chromium on
    // the host then loading a page fails it with ERR_NETWORK_CHANGED (seen
    // in CI, 2026-12-02: network_change's bob never joined).
    run('ip', ['link', 'set', 'dev', hostEnd, 'addrgenmode', 'none']);
    run('ip', ['addr', 'add', `${hostIp}/24`, 'dev', hostEnd]);
    run('ip', ['link', 'set', hostEnd, 'up']);
    inNs('ip', ['link', 'set', 'lo', 'up']);
    inNs('ip', ['link', 'set', 'dev', browserEnd, 'addrgenmode', 'none']);
    inNs('ip', ['addr', 'add', `${browserIp}/24`, 'dev', browserEnd]);
    inNs('ip', ['link', 'set', browserEnd, 'up']);
    inNs('ip', ['route', 'add', 'default', 'via', hostIp]);
    inNs('nft', ['add', 'table', 'inet', 'noom_block']);
    inNs('nft', ['add', 'chain', 'inet', 'noom_block', 'out', '{ type filter hook output priority 0; policy accept; }']);
    inNs('nft', ['add', 'chain', 'inet', 'noom_block', 'in', '{ type filter hook input priority 0; policy accept; }']);
  } catch (err) {
    close();
    throw new Error(`building the browser's namespace failed: ${err.message}${err.stderr ? `\n${err.stderr}` : ''}`);
  }
  const executablePath = path.join(dir, 'chromium-in-netns');
  writeFileSync(executablePath, `#!/bin/sh\nexec nsenter --net=${netns} ${chromiumBin} "$@"\n`);
  chmodSync(executablePath, 0o755);
  return {
    hostIp,
    browserIp,
    executablePath,
    blockUdp(from) {
      const match = from ? ['ip', 'saddr', from, 'meta', 'l4proto', 'udp'] : ['meta', 'l4proto', 'udp'];
      inNs('nft', ['add', 'rule', 'inet', 'noom_block', 'out', ...match, 'counter', 'drop']);
    },
    // Also drops UDP arriving (at `to`, or at any address): a path broken both ways.
    blockUdpIn(to) {
      const match = to ? ['ip', 'daddr', to, 'meta', 'l4proto', 'udp'] : ['meta', 'l4proto', 'udp'];
      inNs('nft', ['add', 'rule', 'inet', 'noom_block', 'in', ...match, 'counter', 'drop']);
    },
    // Drops everything between the browser and `server` (UDP and TCP), both
    // ways, or only what the browser sends from its address `from`: a media
    // path that broke while the WebSocket (to another address) stays up.
    blockPath(server, { from } = {}) {
      const src = from ? ['ip', 'saddr', from] : [];
      const dst = from ? ['ip', 'daddr', from] : [];
      inNs('nft', ['add', 'rule', 'inet', 'noom_block', 'out', ...src, 'ip', 'daddr', server, 'counter', 'drop']);
      inNs('nft', ['add', 'rule', 'inet', 'noom_block', 'in', 'ip', 'saddr', server, ...dst, 'counter', 'drop']);
    },
    // Limits what reaches the browser to `kbit` kbit/s: a token bucket on
    // the test's end of the veth (its egress is the browser's downlink),
    // with a queue of 100 ms as a home router's. The bucket holds three
    // full packets: a larger one (16 KB) lets half a second of traffic
    // through at 250 kbit/s above the rate after a lull, which a bandwidth
    // probe then takes for headroom. `unlimitRate()` lifts it.
    limitRate(kbit) {
      run('tc', ['qdisc', 'replace', 'dev', hostEnd, 'root', 'tbf', 'rate', `${kbit}kbit`, 'burst', '4500', 'latency', '100ms']);
    },
    unlimitRate() {
      run('tc', ['qdisc', 'del', 'dev', hostEnd, 'root']);
    },
    unblockUdp() {
      inNs('nft', ['flush', 'chain', 'inet', 'noom_block', 'out']);
      inNs('nft', ['flush', 'chain', 'inet', 'noom_block', 'in']);
    },
    // A second link into the namespace (as a laptop that moves from one
    // network to another), made the default route: the browser's traffic to
    // anything but the first link's own subnet leaves through it from
    // 10.78.N.2. Returns that address.
    addBrowserLink() {
      const [hostEnd2, browserEnd2] = [`nch${suffix}`, `ncb${suffix}`];
      run('ip', ['link', 'add', hostEnd2, 'type', 'veth', 'peer', 'name', browserEnd2, 'netns', String(holder.pid)]);
      run('ip', ['addr', 'add', `10.78.${n}.1/24`, 'dev', hostEnd2]);
      run('ip', ['link', 'set', hostEnd2, 'up']);
      // IPv4 only, as a laptop whose Wi-Fi hands it a new address: no IPv6
      // link-local address 1-2 s later (after duplicate address detection),
      // which would restart Chromium's 2 s wait before it re-reads its
      // network list (see network_change.test.mjs) at random.
      inNs('ip', ['link', 'set', 'dev', browserEnd2, 'addrgenmode', 'none']);
      inNs('ip', ['addr', 'add', `10.78.${n}.2/24`, 'dev', browserEnd2]);
      inNs('ip', ['link', 'set', browserEnd2, 'up']);
      inNs('ip', ['route', 'replace', 'default', 'via', `10.78.${n}.1`]);
      return `10.78.${n}.2`;
    },
    // Outgoing packets the rules have dropped so far.
    droppedUdpPackets() {
      const out = inNs('nft', ['list', 'chain', 'inet', 'noom_block', 'out']);
      return [...out.matchAll(/counter packets (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
    },
    close,
  };
}
