// Reading the server's offer: the m-sections it offers `recvonly`, where a
// client publishes its microphone and camera. Shared by the web client and
// the minimal client.

// [{kind, mid}] in SDP order; rejected sections (port 0) left out.
export function recvonlySections(sdp) {
  const out = [];
  for (const section of sdp.split(/\r?\n(?=m=)/).slice(1)) {
    const m = section.match(/^m=(\S+) (\d+)/);
    const mid = section.match(/^a=mid:(\S+)/m);
    if (!m || !mid || m[2] === '0') continue;
    if (/^a=recvonly\s*$/m.test(section)) out.push({ kind: m[1], mid: mid[1] });
  }
  return out;
}
