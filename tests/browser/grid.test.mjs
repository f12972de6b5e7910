// The call grid (issue #16 points 4 and 7) in the web client: for 1 to 25
// people the tiles fill #tiles without overlapping, in a landscape and a
// portrait window, each with its name; #tiles takes most of the window.
// Pinning a tile gives it the stage with the others in a strip; tiles that
// do not fit the strip are not shown, and the client's `layout` messages
// say so (0x0) while the staged video is reported at its new size.
// Everyone but the page under test joins over a bare WebSocket from a
// second page (real participants of the real server, without media).
//
// Run: node --test tests/browser/grid.test.mjs  (needs target/debug/noom)

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { launchPerson, randomRoom, startServer, waitFor } from './lib.mjs';
import { joinViaForm } from './web_call.mjs';

const VIEWPORTS = { landscape: { width: 1280, height: 720 }, portrait: { width: 720, height: 1280 } };
const COUNTS = [1, 2, 3, 5, 9, 16, 25];
// Share of #tiles the tiles must cover (the layout reaches 71 % or more
// for every count in both windows; a fixed 16:9 grid stays near 50 %).
const MIN_COVERAGE = 0.65;
// Share of the window #tiles must take (the rest: call bar, chat).
const MIN_TILES_SHARE = 0.45;

// The tiles as placed: rectangles relative to #tiles, names, layout mode.
const gridState = (page) =>
  page.evaluate(() => {
    const container = document.getElementById('tiles');
    const box = container.getBoundingClientRect();
    const tiles = [...container.querySelectorAll(':scope > .tile')].map((t) => {
      const r = t.getBoundingClientRect();
      return {
        id: t.classList.contains('local') ? 'local' : t.dataset.participant,
        name: t.querySelector('.name').textContent,
        shown: !t.classList.contains('offstage'),
        stage: t.classList.contains('stage'),
        x: r.left - box.left, y: r.top - box.top, w: r.width, h: r.height,
        video: { w: t.querySelector('video').clientWidth, h: t.querySelector('video').clientHeight },
      };
    });
    return { box: { w: box.width, h: box.height }, window: { w: innerWidth, h: innerHeight }, layout: container.dataset.layout, tiles, dpr: devicePixelRatio };
  });

const overlap = (a, b) => Math.max(0, Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x)) * Math.max(0, Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y));

// What is wrong with an even grid of `n` tiles, or null.
function gridProblem(s, n) {
  if (s.tiles.length !== n) return `${s.tiles.length} tiles, want ${n}`;
  if (s.layout !== 'grid') return `layout ${s.layout}`;
  const shown = s.tiles.filter((t) => t.shown);
  if (shown.length !== n) return `${n - shown.length} tiles not shown`;
  for (const t of shown) {
    if (!t.name.trim()) return `tile ${t.id} has no name`;
    if (t.w < 1 || t.h < 1 || t.x < -1 || t.y < -1 || t.x + t.w > s.box.w + 1 || t.y + t.h > s.box.h + 1) return `tile ${t.id} outside #tiles: ${JSON.stringify(t)}`;
  }
  for (let i = 0; i < shown.length; i++) {
    for (let j = i + 1; j < shown.length; j++) {
      if (overlap(shown[i], shown[j]) > 1) return `tiles ${shown[i].id} and ${shown[j].id} overlap`;
    }
  }
  const coverage = shown.reduce((sum, t) => sum + t.w * t.h, 0) / (s.box.w * s.box.h);
  if (coverage < MIN_COVERAGE) return `tiles cover ${(coverage * 100).toFixed(0)} % of #tiles`;
  const share = (s.box.w * s.box.h) / (s.window.w * s.window.h);
  if (share < MIN_TILES_SHARE) return `#tiles is ${(share * 100).toFixed(0)} % of the window`;
  return null;
}

// The last size the page reported per participant in `layout` messages.
const reportedSizes = (page) =>
  page.evaluate(() => {
    const last = {};
    for (const m of window.sentMessages) if (m.type === 'layout') for (const v of m.videos) last[v.participant] = [v.width, v.height];
    return last;
  });

test('the grid fills the window for 1 to 25 people, and a pinned tile takes the stage', { timeout: 120_000 }, async () => {
  const server = await startServer('grid');
  const people = [];
  try {
    const room = randomRoom('grid');
    const ann = await launchPerson('ann');
    people.push(ann);
    // Every message the page sends, to read its `layout` messages.
    await ann.context.addInitScript(() => {
      window.sentMessages = [];
      const send = WebSocket.prototype.send;
      WebSocket.prototype.send = function (data) {
        try { window.sentMessages.push(JSON.parse(data)); } catch { /* not JSON */ }
        return send.call(this, data);
      };
    });
    let last = null;
    let want = 1;
    const describe = async () => `problem: ${last && gridProblem(last, want)}\nlast grid: ${JSON.stringify(last)}\nconsole: ${ann.consoleLines.slice(-5).join(' | ')}`;
    await joinViaForm(ann, server.url, room, describe);

    // The others, over bare WebSockets from a second page.
    const crowd = await ann.context.newPage();
    await crowd.goto(`${server.url}/?ice=none&camera=any`);
    const addGuests = (from, to) =>
      crowd.evaluate(async ({ room, from, to }) => {
        window.guests = window.guests || [];
        const joins = [];
        for (let i = from; i < to; i++) {
          const ws = new WebSocket(`ws://${location.host}/ws`);
          window.guests.push(ws);
          joins.push(new Promise((resolve, reject) => {
            ws.onopen = () => ws.send(JSON.stringify({ type: 'join', room, name: `guest-${i}`, req: 1 }));
            ws.onmessage = (e) => {
              const m = JSON.parse(e.data);
              if (m.req === 1) (m.type === 'joined' ? resolve : reject)(m);
            };
          }));
        }
        await Promise.all(joins);
      }, { room, from, to });

    let present = 1;
    for (const n of COUNTS) {
      await addGuests(present, n);
      present = n;
      want = n;
      for (const [orientation, viewport] of Object.entries(VIEWPORTS)) {
        await ann.page.setViewportSize(viewport);
        await waitFor(async () => {
          last = await gridState(ann.page);
          return gridProblem(last, n) === null;
        }, { timeout: 10_000, what: `${n} tiles filling the ${orientation} window`, describe });
      }
    }

    // Pin a guest in the full landscape room: it takes the stage, the strip
    // shows whom it can, and the others are reported not shown.
    await ann.page.setViewportSize(VIEWPORTS.landscape);
    const pinned = (await gridState(ann.page)).tiles.find((t) => t.name === 'guest-3');
    await ann.page.click(`#tiles .tile[data-participant="${pinned.id}"]`);
    const staged = await waitFor(async () => {
      last = await gridState(ann.page);
      return last.layout === 'stage' && last.tiles.find((t) => t.stage && t.id === pinned.id) && last;
    }, { what: 'the pinned tile on the stage', describe });
    const stage = staged.tiles.find((t) => t.stage);
    assert.ok(stage.w * stage.h > 0.5 * staged.box.w * staged.box.h, `stage ${stage.w}x${stage.h} in ${staged.box.w}x${staged.box.h}`);
    const strip = staged.tiles.filter((t) => t.shown && !t.stage);
    const hidden = staged.tiles.filter((t) => !t.shown);
    assert.ok(strip.length >= 4 && hidden.length > 0, `strip ${strip.length}, not shown ${hidden.length}`);
    for (const t of strip) assert.ok(t.y >= stage.y + stage.h && t.h < stage.h / 2, `strip tile ${JSON.stringify(t)} under stage ${JSON.stringify(stage)}`);
    const sizeOf = (t) => [Math.round(t.video.w * staged.dpr), Math.round(t.video.h * staged.dpr)];
    await waitFor(async () => {
      const sizes = await reportedSizes(ann.page);
      return JSON.stringify(sizes[pinned.id]) === JSON.stringify(sizeOf(stage))
        && hidden.every((t) => t.id === 'local' || JSON.stringify(sizes[t.id]) === '[0,0]')
        && strip.every((t) => t.id === 'local' || JSON.stringify(sizes[t.id]) === JSON.stringify(sizeOf(t)));
    }, { timeout: 5_000, what: 'layout messages with the staged, strip and hidden sizes', describe: async () => JSON.stringify(await reportedSizes(ann.page)) });

    // Unpin: the grid again, everyone reported with a size.
    want = 25;
    await ann.page.click(`#tiles .tile[data-participant="${pinned.id}"]`);
    await waitFor(async () => {
      last = await gridState(ann.page);
      return gridProblem(last, 25) === null;
    }, { what: 'grid after unpinning', describe });
    await waitFor(async () => {
      const sizes = await reportedSizes(ann.page);
      return last.tiles.every((t) => t.id === 'local' || (sizes[t.id] && sizes[t.id][0] > 0));
    }, { timeout: 5_000, what: 'every tile reported shown again', describe: async () => JSON.stringify(await reportedSizes(ann.page)) });
    // A server without `layout` answers an error: the page shows nothing of it.
    const status = await ann.page.locator('#call-status').textContent();
    assert.ok(!/layout|unknown/i.test(status), `status: ${status}`);
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
  }
});
