// H.264 as a second video codec (issue #17 point 6), in Chromium.
//
// Alice and Bob publish their cameras in H.264 (web/minimal.html?codec=h264:
// setParameters with encodings[].codec once answered) and decode each
// other's video as H.264. Carol then joins accepting VP8 only for what she
// receives (?recv=vp8, as a browser without an H.264 decoder would answer):
// she is told that Alice's and Bob's video is a codec she did not accept
// (`track_unsupported`), the server forwards her none of its packets (the
// admin API's per-subscriber counters, while her audio from them flows and
// Bob keeps decoding Alice), and her own camera, VP8, reaches Alice: one
// room, a codec per track. Alice then switches her camera to VP8 mid-call
// and back (setParameters on the same stream): Carol decodes her while she
// sends VP8 and is told again when she goes back to H.264.
//
// Run: node --test tests/browser/h264.test.mjs (needs target/debug/noom or
// NOOM_BIN; scripts/test.sh runs it in a loopback-only namespace).

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { test } from 'node:test';
import { artifactsDir, launchPerson, pageState, randomRoom, startServer, waitFor } from './lib.mjs';

const TOKEN = 'h264-test-t0ken';

// What `page` receives of `publisher`'s `kind` (sums over its inbound
// streams; codecs as "video/H264/102").
const received = (page, publisher, kind) =>
  page.evaluate(
    async ([pid, k]) => {
      const mine = (await window.noom.stats()).filter((s) => s.participant === pid && s.kind === k);
      return {
        framesDecoded: mine.reduce((a, s) => a + s.framesDecoded, 0),
        packetsReceived: mine.reduce((a, s) => a + s.packetsReceived, 0),
        codecs: mine.map((s) => s.codec),
      };
    },
    [publisher, kind],
  );

// The codec of the page's outbound camera stream.
const sentVideoCodec = (page) =>
  page.evaluate(async () => {
    const report = await window.noom.pc.getStats();
    let codec = null;
    report.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video' && s.codecId && (s.packetsSent ?? 0) > 0) {
        codec = report.get(s.codecId)?.mimeType ?? codec;
      }
    });
    return codec;
  });

// Every video codec the page's inbound streams ever used (codec stats named
// by an inbound-rtp entry), whoever published them.
const inboundVideoCodecs = (page) =>
  page.evaluate(async () => {
    const report = await window.noom.pc.getStats();
    const codecs = new Set();
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video' && s.codecId) codecs.add(report.get(s.codecId)?.mimeType);
    });
    return [...codecs];
  });

// The admin API's view of one participant's media.
async function mediaOf(server, participant) {
  const res = await fetch(`${server.url}/api/overview`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200, 'admin overview');
  for (const room of (await res.json()).rooms) {
    const p = room.participants.find((x) => x.id === participant);
    if (p) return p.media;
  }
  return null;
}

test('H.264 publishers decode each other; a VP8-only subscriber gets none of their video, is told so, and its VP8 reaches them', { timeout: 120_000 }, async (t) => {
  mkdirSync(artifactsDir, { recursive: true });
  const server = await startServer('h264', { NOOM_ADMIN_TOKEN: TOKEN });
  const people = [];
  try {
    const room = randomRoom('h264');
    const base = `${server.url}/minimal.html?room=${encodeURIComponent(room)}&ice=none`;
    const describe = async () => {
      const states = {};
      for (const p of people) states[p.label] = await pageState(p.page).catch((e) => String(e));
      return `${JSON.stringify(states, null, 2)}\n--- server WARN/ERROR digest ---\n${server.logSummary()}\n--- server log tail ---\n${server.logTail(30)}`;
    };
    const join = async (name, query) => {
      const person = await launchPerson(name);
      people.push(person);
      await person.page.goto(`${base}&name=${name}&${query}`);
      const id = await waitFor(() => person.page.evaluate(() => window.noom.state === 'joined' && window.noom.you), {
        timeout: 30_000,
        what: `${name} to join`,
        describe,
      });
      return { ...person, id };
    };

    const alice = await join('alice', 'codec=h264');
    const bob = await join('bob', 'codec=h264');

    // Both ways, H.264 decoded.
    const decodesH264 = (viewer, publisher) =>
      waitFor(
        async () => {
          const r = await received(viewer.page, publisher.id, 'video');
          return r.framesDecoded >= 30 ? r : false;
        },
        { timeout: 30_000, what: `${viewer.label} to decode 30 frames of ${publisher.label}'s video`, describe },
      );
    const [bobSeesAlice, aliceSeesBob] = await Promise.all([decodesH264(bob, alice), decodesH264(alice, bob)]);
    for (const [who, r] of [['bob (from alice)', bobSeesAlice], ['alice (from bob)', aliceSeesBob]]) {
      assert.ok(r.codecs.length > 0 && r.codecs.every((c) => /^video\/H264\//i.test(c)), `${who} decodes H.264: ${JSON.stringify(r)}`);
    }
    assert.equal(await sentVideoCodec(alice.page), 'video/H264', 'alice sends H.264');
    assert.equal(await sentVideoCodec(bob.page), 'video/H264', 'bob sends H.264');
    t.diagnostic(`H.264 both ways: bob ${JSON.stringify(bobSeesAlice)}, alice ${JSON.stringify(aliceSeesBob)}`);

    // Carol accepts VP8 only for what she receives, and publishes VP8.
    const carol = await join('carol', 'recv=vp8');
    const told = await waitFor(
      async () => {
        const u = await carol.page.evaluate(() => window.noom.unsupported);
        const about = new Set(u.map((m) => m.participant));
        return about.has(alice.id) && about.has(bob.id) ? u : false;
      },
      { timeout: 30_000, what: 'carol to be told that alice\'s and bob\'s video use a codec she did not accept', describe },
    );
    for (const m of told) {
      assert.equal(m.kind, 'video', `track_unsupported names the kind: ${JSON.stringify(m)}`);
      assert.match(m.codec, /^h264$/i, `track_unsupported names the codec: ${JSON.stringify(m)}`);
      assert.match(m.track, /^t\d+$/, `track_unsupported names the track: ${JSON.stringify(m)}`);
    }
    assert.equal(told.length, 2, `told once per track: ${JSON.stringify(told)}`);

    // Carol's VP8 reaches Alice (a second codec in the same room), Carol
    // hears Alice, and Alice's H.264 keeps reaching Bob meanwhile.
    const bobBefore = (await received(bob.page, alice.id, 'video')).framesDecoded;
    const aliceSeesCarol = await waitFor(
      async () => {
        const [v, heard, bobNow] = await Promise.all([
          received(alice.page, carol.id, 'video'),
          received(carol.page, alice.id, 'audio'),
          received(bob.page, alice.id, 'video'),
        ]);
        return v.framesDecoded >= 30 && heard.packetsReceived >= 100 && bobNow.framesDecoded >= bobBefore + 30 ? v : false;
      },
      { timeout: 30_000, what: 'alice to decode carol\'s VP8, carol to hear alice, bob to keep decoding alice', describe },
    );
    assert.ok(aliceSeesCarol.codecs.every((c) => /^video\/VP8\//i.test(c)), `alice decodes carol's VP8: ${JSON.stringify(aliceSeesCarol)}`);

    // Never a packet of H.264 video to Carol: the server's own counters,
    // and Carol's decoder's view.
    const carolMedia = await mediaOf(server, carol.id);
    assert.ok(carolMedia, 'the admin API knows carol');
    for (const publisher of [alice, bob]) {
      const video = carolMedia.forwarded.find((f) => f.publisher === publisher.id && f.kind === 'video');
      const audio = carolMedia.forwarded.find((f) => f.publisher === publisher.id && f.kind === 'audio');
      assert.ok(video, `carol has ${publisher.label}'s video section: ${JSON.stringify(carolMedia.forwarded)}`);
      assert.equal(video.packets, 0, `no packet of ${publisher.label}'s H.264 video forwarded to carol`);
      assert.ok(audio && audio.packets > 0, `${publisher.label}'s audio is forwarded to carol: ${JSON.stringify(audio)}`);
    }
    const aliceMedia = await mediaOf(server, alice.id);
    assert.deepEqual(
      aliceMedia.published.filter((p) => p.kind === 'video').map((p) => p.codec ?? p.mime_type),
      ['video/H264'],
      'alice publishes H.264',
    );
    const bobMedia = await mediaOf(server, bob.id);
    const bobFromAlice = bobMedia.forwarded.find((f) => f.publisher === alice.id && f.kind === 'video');
    assert.ok(bobFromAlice.packets > 0, `alice's H.264 is forwarded to bob: ${JSON.stringify(bobFromAlice)}`);
    for (const publisher of [alice, bob]) {
      const r = await received(carol.page, publisher.id, 'video');
      assert.equal(r.packetsReceived, 0, `carol received no video packet of ${publisher.label}: ${JSON.stringify(r)}`);
    }
    assert.deepEqual(await inboundVideoCodecs(carol.page), [], 'carol has no inbound video stream at all');
    assert.equal(await sentVideoCodec(carol.page), 'video/VP8', 'carol sends VP8');

    // Alice switches her camera to VP8 mid-call, on the same stream (a page
    // may call setParameters at any time): the server follows the packets'
    // payload type, so Carol, who refused H.264, now decodes her, and Bob
    // keeps decoding her, in VP8 now.
    const decodesAliceIn = (viewer, codec, from) =>
      waitFor(
        async () => {
          const r = await received(viewer.page, alice.id, 'video');
          return r.framesDecoded >= from + 30 && r.codecs.length > 0 && r.codecs.every((c) => c.startsWith(`${codec}/`)) ? r : false;
        },
        { timeout: 30_000, what: `${viewer.label} to decode 30 frames of alice's video in ${codec}`, describe },
      );
    const bobFrames = (await received(bob.page, alice.id, 'video')).framesDecoded;
    await alice.page.evaluate(() => window.noom.sendCodec('vp8'));
    await Promise.all([decodesAliceIn(carol, 'video/VP8', 0), decodesAliceIn(bob, 'video/VP8', bobFrames)]);
    assert.equal(await sentVideoCodec(alice.page), 'video/VP8', 'alice sends VP8');

    // And back to H.264: Carol is told again, and gets no packet of it
    // (the server's counter stands still while Bob decodes 30 frames more).
    const toldAboutAlice = async () => (await carol.page.evaluate(() => window.noom.unsupported)).filter((m) => m.participant === alice.id);
    assert.equal((await toldAboutAlice()).length, 1, 'carol was told about alice once so far');
    const bobFramesVp8 = (await received(bob.page, alice.id, 'video')).framesDecoded;
    await alice.page.evaluate(() => window.noom.sendCodec('h264'));
    await waitFor(async () => (await toldAboutAlice()).length === 2, { timeout: 30_000, what: 'carol to be told again that alice\'s video is H.264', describe });
    const forwardedToCarol = async () => (await mediaOf(server, carol.id)).forwarded.find((f) => f.publisher === alice.id && f.kind === 'video').packets;
    const carolPackets = await forwardedToCarol();
    await decodesAliceIn(bob, 'video/H264', bobFramesVp8);
    assert.equal(await forwardedToCarol(), carolPackets, 'no packet of alice\'s H.264 forwarded to carol after the switch back');
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
  }
});
