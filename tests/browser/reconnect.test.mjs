// The web client comes back by itself: when the server process dies and a
// new one starts on the same port, both pages show "reconnecting", rejoin
// the same room with the same names and decode each other again, without a
// reload. A kicked client does not come back.
//
// Run: node --test tests/browser/reconnect.test.mjs  (needs target/debug/noom)

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { launchPerson, randomRoom, startServer, waitFor } from './lib.mjs';
import { clientState, expectDecoding, joinViaForm, markDocument, remoteTiles, stillSameDocument } from './web_call.mjs';

const TOKEN = 'reconnect-test-t0ken';

const describeWith = (getServer, people) => async () => `server log tail:\n${getServer().logTail(30)}\n` +
  (await Promise.all(people.map(async (p) => `${p.label}: ${JSON.stringify(await clientState(p.page))} ${await p.page.locator('#call-status, #lobby-status').allTextContents()} console: ${p.consoleLines.slice(-5).join(' | ')}`))).join('\n');

test('after the server restarts, both pages rejoin the same room by themselves', { timeout: 300_000 }, async () => {
  let server = await startServer('reconnect');
  const people = [];
  try {
    const room = randomRoom('restart');
    for (const name of ['ann', 'abe']) people.push(await launchPerson(name));
    const [ann, abe] = people;
    const describe = describeWith(() => server, people);
    await joinViaForm(ann, server.url, room, describe);
    await joinViaForm(abe, server.url, room, describe);
    await expectDecoding(ann, ['abe'], describe);
    await expectDecoding(abe, ['ann'], describe);
    const idsBefore = await Promise.all(people.map(async (p) => (await clientState(p.page)).you));
    for (const p of people) await markDocument(p.page);

    const { port } = server;
    await server.kill();
    for (const p of people) {
      await waitFor(async () => {
        const s = await clientState(p.page);
        return s.connection === 'reconnecting' && s.banner && (await p.page.isVisible('#reconnecting'));
      }, { what: `${p.label} shows "reconnecting"`, describe });
    }

    server = await startServer('reconnect-again', {}, { port });
    for (const p of people) {
      await waitFor(async () => {
        const s = await clientState(p.page);
        return s.connection === 'connected' && !s.banner && s.room === room;
      }, { what: `${p.label} back in ${room}`, describe });
    }
    await expectDecoding(ann, ['abe'], describe);
    await expectDecoding(abe, ['ann'], describe);
    for (const [i, p] of people.entries()) {
      assert.ok(await stillSameDocument(p.page), `${p.label}'s page was reloaded`);
      const s = await clientState(p.page);
      assert.notEqual(s.you, idsBefore[i], `${p.label} should be a new participant on the new server`);
      assert.equal(s.title, `Room ${room}`);
    }
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
  }
});

test('a kicked page does not reconnect', { timeout: 180_000 }, async () => {
  const server = await startServer('reconnect-kick', { NOOM_ADMIN_TOKEN: TOKEN });
  const people = [];
  try {
    const room = randomRoom('kick');
    for (const name of ['ann', 'abe']) people.push(await launchPerson(name));
    const [ann, abe] = people;
    const describe = describeWith(() => server, people);
    await joinViaForm(ann, server.url, room, describe);
    await joinViaForm(abe, server.url, room, describe);
    await expectDecoding(ann, ['abe'], describe);
    const abeId = (await remoteTiles(ann.page)).find((t) => t.name === 'abe').id;

    const res = await fetch(`${server.url}/api/rooms/${encodeURIComponent(room)}/participants/${abeId}/kick`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'test over' }),
    });
    assert.equal(res.status, 200, await res.clone().text());

    // Its socket closed and the client settled: no attempt scheduled, no
    // banner, back in the lobby with the reason shown.
    await waitFor(async () => (await clientState(abe.page)).connection === 'stopped', { what: 'abe\'s client to stop', describe });
    const s = await clientState(abe.page);
    assert.equal(s.socket, 3, `socket closed: ${JSON.stringify(s)}`);
    assert.equal(s.reconnectScheduled, false, `no reconnect scheduled: ${JSON.stringify(s)}`);
    assert.equal(s.banner, false, `no "reconnecting" banner: ${JSON.stringify(s)}`);
    assert.ok(await abe.page.isVisible('#lobby'), 'abe is back in the lobby view');
    assert.match(await abe.page.locator('#lobby-status').textContent(), /removed from the call: test over/);
    // The server agrees: one WebSocket left (ann's), and ann lost abe's tile.
    await waitFor(async () => {
      const o = await (await fetch(`${server.url}/api/overview`, { headers: { authorization: `Bearer ${TOKEN}` } })).json();
      return o.websocket_connections === 1;
    }, { what: 'the server to count one WebSocket', describe });
    await waitFor(async () => (await remoteTiles(ann.page)).length === 0, { what: 'ann to drop abe\'s tile', describe });
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
  }
});
