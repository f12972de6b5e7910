// An operator moves a room into another (POST /api/rooms/{room}/move)
// while three people are in a call through the web client: two in "a", one
// in "b". The movers' pages take the server's `joined` for "b" and answer
// its new offer with a new RTCPeerConnection, without reloading; then all
// three decode each other's video on the right tiles.
//
// Run: node --test tests/browser/room_move.test.mjs  (needs target/debug/noom)

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { launchPerson, randomRoom, startServer, waitFor } from './lib.mjs';
import { clientState, expectDecoding, joinViaForm, markDocument, stillSameDocument } from './web_call.mjs';

const TOKEN = 'move-test-t0ken';

test('moving a room brings its people into the destination call', { timeout: 300_000 }, async () => {
  const server = await startServer('room_move', { NOOM_ADMIN_TOKEN: TOKEN });
  const people = [];
  try {
    const [roomA, roomB] = [randomRoom('a'), randomRoom('b')];
    for (const name of ['ann', 'abe', 'bea']) people.push(await launchPerson(name));
    const [ann, abe, bea] = people;
    const describe = async () => `server log tail:\n${server.logTail(30)}\n` +
      (await Promise.all(people.map(async (p) => `${p.label}: ${JSON.stringify(await clientState(p.page))} ${await p.page.locator('#call-status').textContent()} console: ${p.consoleLines.slice(-5).join(' | ')}`))).join('\n');

    await joinViaForm(ann, server.url, roomA, describe);
    await joinViaForm(abe, server.url, roomA, describe);
    await joinViaForm(bea, server.url, roomB, describe);
    await expectDecoding(ann, ['abe'], describe);
    await expectDecoding(abe, ['ann'], describe);
    await expectDecoding(bea, [], describe);
    for (const p of people) await markDocument(p.page);

    const res = await fetch(`${server.url}/api/rooms/${encodeURIComponent(roomA)}/move`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ to: roomB }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    assert.deepEqual(await res.json(), { moved: 2, from: roomA, to: roomB });

    for (const p of [ann, abe]) {
      await waitFor(async () => (await clientState(p.page)).title === `Room ${roomB}`, { what: `${p.label} shows room ${roomB}`, describe });
    }
    await expectDecoding(ann, ['abe', 'bea'], describe);
    await expectDecoding(abe, ['ann', 'bea'], describe);
    await expectDecoding(bea, ['abe', 'ann'], describe);
    for (const p of people) {
      assert.ok(await stillSameDocument(p.page), `${p.label}'s page was reloaded`);
      const state = await clientState(p.page);
      assert.equal(state.room, roomB, `${p.label}: ${JSON.stringify(state)}`);
      assert.equal(state.connection, 'connected', `${p.label}: ${JSON.stringify(state)}`);
    }
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
  }
});
