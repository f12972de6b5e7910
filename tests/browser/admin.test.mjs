// The operator's admin page (/admin) during a real call between two Chromium
// participants (web/minimal.html, fake camera and microphone): a wrong token
// is refused; signed in, the page lists the room, both participants by name,
// their published tracks and packet counts that move; "Kick bob" removes bob
// (his client is told, with the reason) and the page drops him; an
// announcement sent from the form reaches alice; an action refused with 401
// signs the page out.
//
// Run: node --test tests/browser/admin.test.mjs  (needs target/debug/noom)

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { artifactsDir, launchPerson, pageState, randomRoom, startServer, waitFor } from './lib.mjs';

const TOKEN = 'admin-test-t0ken';

// Records every server message of the page's WebSockets in
// window.serverMessages (minimal.js keeps only the message types, in
// window.noom.log).
function recordServerMessages() {
  window.serverMessages = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => {
        try {
          window.serverMessages.push(JSON.parse(ev.data));
        } catch {
          window.serverMessages.push({ unparsed: String(ev.data) });
        }
      });
    }
  };
}

const serverMessages = (page, type) =>
  page.evaluate((type) => window.serverMessages.filter((m) => m.type === type), type);

// The participants' rows of one room on the admin page.
const roomRows = (page, room) =>
  page.evaluate((room) => {
    const div = document.querySelector(`.room[data-room="${CSS.escape(room)}"]`);
    if (!div) return [];
    const headers = [...div.querySelectorAll('thead th')].map((th) => th.textContent.trim());
    const col = (name) => headers.indexOf(name);
    return [...div.querySelectorAll('tbody tr')].map((tr) => {
      const published = [...tr.cells[col('Published')].querySelectorAll('li')].map((li) => li.textContent);
      return {
        id: tr.dataset.participant,
        name: tr.cells[col('Name')].textContent,
        remote: tr.cells[col('Remote address')].textContent,
        state: tr.cells[col('State')].textContent,
        published,
        // track kind -> packets, from "video video/VP8 · 1234 pkts · ..."
        packets: Object.fromEntries(
          published.map((t) => [t.split(' ')[0], Number((t.match(/· (\d+) pkts/) || [])[1] ?? NaN)]),
        ),
        buttons: [...tr.querySelectorAll('button')].map((b) => b.textContent),
      };
    });
  }, room);

test('admin page shows a live call and acts on it', { timeout: 300_000 }, async (t) => {
  mkdirSync(artifactsDir, { recursive: true });
  const server = await startServer('admin', { NOOM_ADMIN_TOKEN: TOKEN });
  const people = [];
  let admin = null;
  let failed = true;
  const room = randomRoom('ops');
  const describe = async () => {
    const states = {};
    for (const p of people) {
      states[p.label] = await (p.label === 'operator'
        ? p.page.evaluate(() => ({ status: document.getElementById('status').textContent, rooms: document.getElementById('rooms').innerText }))
        : pageState(p.page)
      ).catch((e) => String(e));
    }
    return `${JSON.stringify(states, null, 2)}\n--- server log tail (${server.logPath}) ---\n${server.logTail(30)}`;
  };
  try {
    for (const name of ['alice', 'bob']) {
      const person = await launchPerson(name);
      people.push(person);
      await person.context.addInitScript(recordServerMessages);
    }
    const [alice, bob] = people;
    await Promise.all(
      [alice, bob].map((p) => p.page.goto(`${server.url}/minimal.html?room=${encodeURIComponent(room)}&name=${p.label}&ice=none`)),
    );
    for (const p of [alice, bob]) {
      await waitFor(() => p.page.evaluate(() => window.noom.connectionState === 'connected'), {
        timeout: 60_000,
        what: `${p.label}'s peer connection to connect`,
        describe,
      });
    }

    // The operator's browser.
    const operator = await launchPerson('operator');
    people.push(operator);
    admin = operator.page;
    await admin.setViewportSize({ width: 1400, height: 900 });
    await admin.goto(`${server.url}/admin`);
    assert.match(admin.url(), /\/admin\.html$/, '/admin redirects to the page');

    // A wrong token is refused; the form stays.
    await admin.getByLabel('Admin token').fill('not-the-token');
    await admin.getByRole('button', { name: 'Sign in' }).click();
    await waitFor(async () => (await admin.locator('#status').textContent()).includes('Wrong token.'), {
      timeout: 20_000,
      what: '"Wrong token." after a wrong token',
      describe,
    });
    assert.ok(await admin.locator('#login').isVisible(), 'the sign-in form is still shown');
    assert.ok(!(await admin.locator('#dashboard').isVisible()), 'no dashboard for a wrong token');

    // The right token: the room with both participants by name, connected,
    // publishing audio and video.
    await admin.getByLabel('Admin token').fill(TOKEN);
    await admin.getByRole('button', { name: 'Sign in' }).click();
    const first = await waitFor(
      async () => {
        const rows = await roomRows(admin, room);
        const ready =
          rows.length === 2 &&
          rows.every((r) => r.state === 'connected' && r.packets.audio > 0 && r.packets.video > 0);
        return ready && rows;
      },
      { timeout: 30_000, what: 'the admin page to list both participants, connected, with audio and video', describe },
    );
    assert.ok(!(await admin.locator('#login').isVisible()), 'the sign-in form is hidden once signed in');
    assert.deepEqual(first.map((r) => r.name).sort(), ['alice', 'bob']);
    for (const r of first) {
      assert.equal(r.published.length, 2, `${r.name}: two published tracks: ${r.published}`);
      assert.match(r.published.join('\n'), /^audio audio\/opus · /im, `${r.name} publishes Opus audio`);
      assert.match(r.published.join('\n'), /^video video\/(VP8|VP9|H264|AV1) · /im, `${r.name} publishes video`);
      assert.match(r.remote, /^(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):\d+$/, `${r.name}'s remote address (ip:port)`);
      assert.deepEqual(r.buttons, [`Kick ${r.name}`]);
    }

    // Packet counts move: read again (the page updates itself) and compare.
    const second = await waitFor(
      async () => {
        const rows = await roomRows(admin, room);
        const moved = rows.length === 2 && rows.every((r) => {
          const before = first.find((f) => f.id === r.id);
          return before && r.packets.audio > before.packets.audio && r.packets.video > before.packets.video;
        });
        return moved && rows;
      },
      { timeout: 30_000, what: 'packet counts to move on the admin page', describe },
    );
    for (const r of second) {
      const before = first.find((f) => f.id === r.id);
      t.diagnostic(`${r.name}: audio ${before.packets.audio} -> ${r.packets.audio}, video ${before.packets.video} -> ${r.packets.video}`);
    }
    await admin.screenshot({ path: path.join(artifactsDir, 'admin.png'), fullPage: true });

    // The page refreshes itself every second without taking the keyboard
    // focus off the button the operator is on.
    await admin.getByRole('button', { name: 'Kick alice' }).focus();
    const stamp = await admin.locator('#status').textContent();
    await waitFor(async () => (await admin.locator('#status').textContent()) !== stamp, {
      timeout: 20_000,
      what: 'the next live update',
      describe,
    });
    assert.equal(await admin.evaluate(() => document.activeElement.textContent), 'Kick alice', 'focus kept across a refresh');
    await admin.evaluate(() => document.activeElement.blur());

    // Kick bob: his client is told (with the reason), its WebSocket closes,
    // the admin page drops him and alice sees him leave.
    const bobId = second.find((r) => r.name === 'bob').id;
    await admin.getByRole('button', { name: 'Kick bob' }).click();
    await waitFor(() => bob.page.evaluate(() => window.noom.log.some((l) => l.endsWith('< kicked'))), {
      timeout: 20_000,
      what: 'bob\'s client to log a `kicked` message',
      describe,
    });
    const [kicked] = await serverMessages(bob.page, 'kicked');
    assert.equal(kicked.reason, 'The operator removed you from the call.');
    await waitFor(() => bob.page.evaluate(() => window.noom.state === 'closed'), {
      timeout: 20_000,
      what: 'bob\'s WebSocket to close',
      describe,
    });
    await waitFor(
      async () => {
        const rows = await roomRows(admin, room);
        return rows.length === 1 && rows[0].name === 'alice';
      },
      { timeout: 20_000, what: 'the admin page to drop bob', describe },
    );
    await waitFor(() => alice.page.evaluate((id) => !(id in window.noom.participants), bobId), {
      timeout: 20_000,
      what: 'alice to see bob leave',
      describe,
    });
    assert.deepEqual(await serverMessages(alice.page, 'kicked'), [], 'alice was not kicked');
    const result = await waitFor(async () => (await admin.locator('#result').textContent()).match(/^Done: (.*)$/)?.[1], {
      timeout: 20_000,
      what: 'the page to report the kick',
      describe,
    });
    assert.deepEqual(JSON.parse(result), { kicked: bobId, room, reason: 'The operator removed you from the call.' });

    // An announcement from the form reaches alice, once.
    await admin.getByLabel('Text', { exact: true }).fill('Maintenance at noon');
    await admin.getByLabel('To', { exact: true }).selectOption({ label: `room ${room}` });
    await admin.getByRole('button', { name: 'Send announcement' }).click();
    await waitFor(async () => (await admin.locator('#result').textContent()) === 'Done: {"reached":1}', {
      timeout: 20_000,
      what: 'the page to report the announcement reached one connection',
      describe,
    });
    await waitFor(() => alice.page.evaluate(() => window.noom.log.some((l) => l.endsWith('< announcement'))), {
      timeout: 20_000,
      what: 'alice\'s client to log an `announcement`',
      describe,
    });
    const announcements = await serverMessages(alice.page, 'announcement');
    assert.equal(announcements.length, 1, JSON.stringify(announcements));
    assert.equal(announcements[0].text, 'Maintenance at noon');
    assert.equal(announcements[0].room, room);
    assert.ok(Math.abs(announcements[0].ts - Date.now()) < 60_000, `ts ${announcements[0].ts}`);
    assert.deepEqual(await pageState(alice.page).then((s) => s.errors), [], 'alice\'s page reported no errors');

    // An action refused with 401 (as when the server's token was changed
    // under the page; simulated by answering this one request with the
    // server's 401) signs the page out, saying so.
    await admin.route('**/api/announce', (route) =>
      route.fulfill({ status: 401, contentType: 'application/json', body: '{"error":"missing or wrong bearer token"}' }),
    );
    await admin.getByRole('button', { name: 'Send announcement' }).click();
    await waitFor(async () => admin.locator('#login').isVisible(), {
      timeout: 20_000,
      what: 'the sign-in form after a 401',
      describe,
    });
    assert.ok(!(await admin.locator('#dashboard').isVisible()), 'the dashboard is hidden after a 401');
    assert.equal(await admin.locator('#status').textContent(), 'Wrong token.');
    assert.equal(await admin.locator('#result').textContent(), 'Failed: missing or wrong bearer token');
    failed = false;
  } finally {
    for (const p of people) {
      await p.page.screenshot({ path: path.join(artifactsDir, `admin-${p.label}.png`) }).catch(() => {});
      if (failed) {
        const state = await (p.label === 'operator' ? p.page.content() : pageState(p.page).then((s) => JSON.stringify(s, null, 2))).catch(String);
        writeFileSync(path.join(artifactsDir, `admin-${p.label}.txt`), `${state}\n--- console ---\n${p.consoleLines.join('\n')}`);
      }
    }
    for (const p of people) await p.close().catch(() => {});
    const exit = await server.stop();
    if (failed) t.diagnostic(`server exit: ${JSON.stringify(exit)}; full log: ${server.logPath}`);
  }
});
