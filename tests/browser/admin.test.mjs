// The operator's admin page (/admin) during a real call: it lists the room,
// both participants and their tracks with moving packet counts; kicking one
// removes them (and they are told why); an announcement reaches the other;
// a wrong token is refused.
//
// Run: node --test tests/browser/admin.test.mjs

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { artifactsDir, launchPerson, randomRoom, startServer, waitFor } from './lib.mjs';

const TOKEN = 'admin-test-token';

const roomRows = (page, room) =>
  page.evaluate((room) => {
    const div = document.querySelector(`.room[data-room="${CSS.escape(room)}"]`);
    if (!div) return [];
    return [...div.querySelectorAll('tbody tr')].map((tr) => ({
      id: tr.dataset.participant,
      name: tr.cells[0].textContent,
      state: tr.cells[2].textContent,
      published: tr.cells[5].textContent,
      packets: [...tr.cells[5].querySelectorAll('li')].map((li) => Number((li.textContent.match(/· (\d+) pkts/) || [])[1] || 0)),
    }));
  }, room);

test('admin page shows a live call and acts on it', { timeout: 300_000 }, async () => {
  mkdirSync(artifactsDir, { recursive: true });
  const server = await startServer('admin', { NOOM_ADMIN_TOKEN: TOKEN });
  const people = [];
  try {
    const room = randomRoom('ops');
    for (const name of ['alice', 'bob']) people.push(await launchPerson(name));
    const [a, b] = people;
    for (const p of people) await p.page.goto(`${server.url}/minimal.html?room=${room}&name=${p.label}&ice=none`);
    for (const p of people) {
      await waitFor(() => p.page.evaluate(() => window.noom.connectionState === 'connected'), { timeout: 60_000, what: `${p.label} connected` });
    }

    // The admin page, in a third browser context (the operator's).
    const operator = await launchPerson('operator');
    people.push(operator);
    const admin = operator.page;
    await admin.setViewportSize({ width: 1400, height: 800 });
    await admin.goto(`${server.url}/admin`);
    await admin.fill('#token', 'wrong');
    await admin.click('#login button');
    await waitFor(() => admin.locator('#status').textContent().then((t) => t.includes('Wrong token')), { what: 'wrong token refused' });

    await admin.fill('#token', TOKEN);
    await admin.click('#login button');
    await waitFor(async () => (await roomRows(admin, room)).length === 2, { timeout: 30_000, what: 'admin lists both participants' });
    const first = await roomRows(admin, room);
    assert.deepEqual(first.map((r) => r.name.split(' ')[0]).sort(), ['alice', 'bob']);
    for (const r of first) {
      assert.match(r.published, /audio/, `${r.name} publishes audio`);
      assert.match(r.published, /video/, `${r.name} publishes video`);
    }
    // Packet counts move (the page updates itself, no reload).
    await waitFor(async () => {
      const now = await roomRows(admin, room);
      return now.every((r) => {
        const before = first.find((f) => f.id === r.id);
        return r.packets.length === 2 && r.packets.every((n, i) => n > (before.packets[i] || 0));
      });
    }, { timeout: 30_000, what: 'packet counts moving on the admin page' });
    const rows = await roomRows(admin, room);
    assert.ok(rows.every((r) => r.state === 'connected'), `states: ${rows.map((r) => r.state)}`);
    await admin.screenshot({ path: path.join(artifactsDir, 'admin.png'), fullPage: true });

    // Kick bob: his client is told why, the admin view drops him.
    await admin.click('button:has-text("Kick bob")');
    await waitFor(() => b.page.evaluate(() => window.noom.log.some((l) => l.includes('< kicked'))), { what: 'bob told he was kicked' });
    await waitFor(async () => (await roomRows(admin, room)).length === 1, { what: 'admin view without bob' });
    await waitFor(() => a.page.evaluate(() => Object.keys(window.noom.participants).length === 0), { what: 'alice sees bob leave' });

    // An announcement reaches alice.
    await admin.fill('#announce-text', 'Maintenance at noon');
    await admin.click('#announce button');
    await waitFor(() => a.page.evaluate(() => window.noom.log.some((l) => l.includes('< announcement'))), { what: 'alice got the announcement' });
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
  }
});
