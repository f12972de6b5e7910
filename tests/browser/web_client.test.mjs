// The web client (web/index.html) as people use it: three people join
// through the lobby UI, see and hear each other, chat, mute, switch camera
// and leave, while a fourth page watches the lobby. Real Chromium with fake
// devices (three cameras), loopback only.
//
// Run: node --test tests/browser/web_client.test.mjs  (needs target/debug/noom or NOOM_BIN)

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { artifactsDir, launchPerson, randomRoom, startServer, waitFor } from './lib.mjs';
import { tileBadges } from './web_call.mjs';

const NAMES = ['alice', 'bob', 'carol'];
const DEVICES = ['--use-fake-device-for-media-stream=device-count=3'];

const tiles = tileBadges;

const framesFrom = async (page, name) => {
  const stats = await page.evaluate(() => window.noomApp.stats());
  const s = stats.find((x) => x.name === name && x.kind === 'video');
  return s ? s.framesDecoded : 0;
};

const chatTexts = (page) =>
  page.$$eval('#chat-log li:not(.notice)', (els) =>
    els.map((el) => ({ text: el.querySelector('.text')?.textContent, mine: el.classList.contains('mine'), state: el.dataset.state, direct: el.classList.contains('direct') })),
  );

const lobbyCount = (page, room) =>
  page.evaluate((room) => {
    const b = document.querySelector(`#room-list button[data-room="${CSS.escape(room)}"]`);
    return b ? Number(b.querySelector('.count').textContent.split(' ')[0]) : 0;
  }, room);

test('three people call through the web client', { timeout: 420_000 }, async () => {
  mkdirSync(artifactsDir, { recursive: true });
  const server = await startServer('web_client');
  const people = [];
  try {
    const room = randomRoom('standup');
    for (const name of NAMES) people.push(await launchPerson(name, { extraArgs: DEVICES }));
    const [a, b, c] = people;
    const describe = async () => `server log tail:\n${server.logTail(30)}\n` +
      (await Promise.all(people.map(async (p) => `${p.label}: ${await p.page.locator('#call-status, #lobby-status').allTextContents()} console: ${p.consoleLines.slice(-5).join(' | ')}`))).join('\n');

    // A fourth page watches the lobby (in alice's browser; it never joins).
    const lobby = await a.context.newPage();
    await lobby.goto(`${server.url}/?ice=none`);
    await waitFor(() => lobby.locator('#lobby-status').textContent().then((t) => t.includes('Connected')), { what: 'lobby page connected', describe });

    // Everyone joins through the lobby form. Cameras at 640x360 (two
    // simulcast encodings): three Chromiums each encoding a 720p camera as
    // three encodings and decoding two others starve this 2-core machine,
    // which then drops frames for 400-900 ms now and then (seen in CI),
    // and the camera switch measured below would measure that.
    for (const p of people) {
      await p.page.goto(`${server.url}/?ice=none&camera=640x360`);
      await p.page.fill('#name', p.label);
      await p.page.fill('#room', room);
      await p.page.click('#join-button');
      await waitFor(() => p.page.isVisible('#call'), { what: `${p.label} in the call view`, describe });
    }
    await lobby.screenshot({ path: path.join(artifactsDir, 'web-lobby.png') });

    // Each page shows the two others by name, and decodes both of them.
    for (const p of people) {
      const others = NAMES.filter((n) => n !== p.label).sort();
      await waitFor(async () => JSON.stringify((await tiles(p.page)).map((t) => t.name).sort()) === JSON.stringify(others), {
        timeout: 60_000, what: `${p.label} to show tiles for ${others}`, describe,
      });
      for (const other of others) {
        const before = await waitFor(async () => (await framesFrom(p.page, other)) || false, { timeout: 60_000, what: `${p.label} decoding ${other}`, describe });
        await waitFor(async () => (await framesFrom(p.page, other)) > before + 10, { timeout: 30_000, what: `${p.label}: frames from ${other} keep coming`, describe });
      }
    }

    // The lobby sees the room with 3 people, live.
    await waitFor(async () => (await lobbyCount(lobby, room)) === 3, { what: 'lobby shows 3 people', describe });

    // Room chat: once at bob and carol, as "yours" (acknowledged) at alice.
    await a.page.fill('#chat-text', 'hello team');
    await a.page.press('#chat-text', 'Enter');
    await waitFor(async () => (await chatTexts(a.page)).some((m) => m.text === 'hello team' && m.mine && m.state === 'sent'), { what: 'alice sees her message acknowledged', describe });
    for (const p of [b, c]) {
      await waitFor(async () => (await chatTexts(p.page)).filter((m) => m.text === 'hello team').length === 1, { what: `${p.label} got the room message`, describe });
    }
    // Direct message alice -> bob only.
    const bobId = (await tiles(a.page)).find((t) => t.name === 'bob').id;
    await a.page.selectOption('#chat-to', bobId);
    await a.page.fill('#chat-text', 'psst bob');
    await a.page.click('#chat-form button[type=submit]');
    await waitFor(async () => (await chatTexts(b.page)).some((m) => m.text === 'psst bob' && m.direct), { what: 'bob got the direct message', describe });
    await waitFor(async () => (await chatTexts(a.page)).some((m) => m.text === 'psst bob' && m.state === 'sent'), { what: 'alice saw the direct message acknowledged', describe });
    assert.equal((await chatTexts(c.page)).filter((m) => m.text === 'psst bob').length, 0, 'carol must not see the direct message');
    for (const p of [b, c]) assert.equal((await chatTexts(p.page)).filter((m) => m.text === 'hello team').length, 1, `${p.label}: room message exactly once`);

    // Mute and camera off/on: badges at bob and carol.
    await a.page.click('#mic-button');
    for (const p of [b, c]) await waitFor(async () => (await tiles(p.page)).find((t) => t.name === 'alice')?.micOff, { what: `${p.label} shows alice's mic off`, describe });
    await a.page.click('#cam-button');
    for (const p of [b, c]) await waitFor(async () => (await tiles(p.page)).find((t) => t.name === 'alice')?.camOff, { what: `${p.label} shows alice's camera off`, describe });
    await a.page.click('#cam-button');
    for (const p of [b, c]) await waitFor(async () => (await tiles(p.page)).find((t) => t.name === 'alice')?.camOff === false, { what: `${p.label} shows alice's camera on again`, describe });

    // Screenshots of the call, desktop and phone sized.
    await a.page.setViewportSize({ width: 1280, height: 720 });
    await a.page.screenshot({ path: path.join(artifactsDir, 'web-call.png') });
    await b.page.setViewportSize({ width: 390, height: 844 });
    await b.page.screenshot({ path: path.join(artifactsDir, 'web-call-phone.png'), fullPage: true });
    // Back to the desktop size before measuring the camera switch: a phone
    // viewport moves alice's tile (the client then reports its new size, or
    // 0x0 while it is off-screen, and the server pauses or resumes her video
    // for bob), which is a layout change, not the switch being measured.
    await b.page.setViewportSize({ width: 1000, height: 700 });

    // Camera switch fake_device_0 -> fake_device_2 at alice. Bob records
    // when each of alice's frames is presented (wall clock, the same clock
    // the test reads around the switch). What a user would notice is a
    // freeze at the switch, so the longest gap across the switch is
    // compared with the longest gap of the steady picture just before it:
    // on a loaded machine the renderer alone drops frames now and then, and
    // an absolute limit measured that, not the switch.
    const aliceId = (await tiles(b.page)).find((t) => t.name === 'alice').id;
    await b.page.evaluate((id) => {
      const video = document.querySelector(`.tile[data-participant="${CSS.escape(id)}"] video`);
      window.frameTimes = [];
      const tick = () => {
        window.frameTimes.push(Date.now());
        video.requestVideoFrameCallback(tick);
      };
      video.requestVideoFrameCallback(tick);
    }, aliceId);
    // Steady first: 3 s with no gap over 400 ms (the resize above pauses
    // and resumes her video for bob, and a new layer may still be coming).
    const STEADY_MS = 3000;
    const SETTLED_GAP_MS = 400;
    const longestGap = (frames, from, to) => {
      let worst = 0;
      for (let i = 1; i < frames.length; i++) if (frames[i] > from && frames[i - 1] < to) worst = Math.max(worst, frames[i] - frames[i - 1]);
      return worst;
    };
    await waitFor(
      async () => {
        const f = await b.page.evaluate(() => window.frameTimes);
        const now = Date.now();
        return f.length > 1 && now - f[0] > STEADY_MS && now - f.at(-1) < SETTLED_GAP_MS && longestGap(f, now - STEADY_MS, now) <= SETTLED_GAP_MS;
      },
      { timeout: 60_000, what: `alice's video at bob steady for ${STEADY_MS} ms (no gap over ${SETTLED_GAP_MS} ms)`, describe },
    );
    const options = await a.page.$$eval('#camera-select option', (os) => os.map((o) => ({ value: o.value, label: o.textContent, selected: o.selected })));
    const target = options.find((o) => o.label.includes('fake_device_2')) || options[options.length - 1];
    assert.ok(options.length >= 3, `alice lists three cameras: ${JSON.stringify(options)}`);
    const switchAt = Date.now();
    await a.page.selectOption('#camera-select', target.value);
    await waitFor(() => a.page.locator('#call-status').textContent().then((t) => t.includes('Switched camera')), { what: 'alice switched camera', describe });
    // The new camera is on the air by now; a freeze it causes shows within 1 s.
    const settledAt = Date.now() + 1000;
    await waitFor(() => b.page.evaluate((t) => window.frameTimes.at(-1) > t, settledAt), { timeout: 30_000, what: 'bob keeps decoding after the switch', describe });
    const f = await b.page.evaluate(() => window.frameTimes);
    const steady = longestGap(f, switchAt - STEADY_MS, switchAt);
    const across = longestGap(f, switchAt, settledAt);
    console.log(`switchAt ${new Date(switchAt).toISOString()} gaps ${JSON.stringify(f.map((t, i) => i && t - f[i - 1] > 150 ? [new Date(f[i - 1]).toISOString().slice(14, 23), t - f[i - 1]] : null).filter(Boolean).slice(-15))}`);
    console.log(`camera switch: longest gap between alice's frames at bob ${across} ms across the switch, ${steady} ms in the ${STEADY_MS} ms before`);
    // No freeze beyond what the steady picture shows (at least the settled
    // bound) plus 100 ms, three frame intervals at 30 fps.
    assert.ok(across <= Math.max(steady, SETTLED_GAP_MS) + 100, `the camera switch froze alice's video at bob: longest gap ${across} ms across it vs ${steady} ms steady`);

    // On a working network nobody's media connection was restarted (the
    // recovery of tests/browser/network_change.test.mjs must not misfire).
    for (const p of people) {
      const restarts = await p.page.evaluate(() => window.noomApp.recoveries.filter((r) => r.what === 'restart'));
      assert.deepEqual(restarts, [], `${p.label} restarted its media connection on a working network`);
    }

    // Alice leaves: her tile goes at bob and carol, the lobby count drops.
    await a.page.click('#leave-button');
    for (const p of [b, c]) await waitFor(async () => !(await tiles(p.page)).some((t) => t.name === 'alice'), { what: `${p.label}: alice's tile removed`, describe });
    await waitFor(async () => (await lobbyCount(lobby, room)) === 2, { what: 'lobby shows 2 people', describe });
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
  }
});
