// Driving the web client (web/index.html, web/app.js) in a test: join
// through the lobby form, read the remote tiles, and check that a page
// decodes the right people's video on the right tiles. Shared by the
// tests of moves and reconnects.

import { waitFor } from './lib.mjs';

// Opens the web client and joins `room` as the person's label through the
// form. Works with a playwright (Chromium) or a puppeteer (Firefox) page:
// only calls both have.
export async function joinViaForm(person, serverUrl, room, describe) {
  const { page, label } = person;
  // The camera's own size (640x480), not the client's 1280x720 default:
  // three 720p encoders do not fit two cores (camera-switch gaps of 900 ms).
  await page.goto(`${serverUrl}/?ice=none&camera=any`);
  await page.locator('#name').fill(label);
  await page.locator('#room').fill(room);
  await page.click('#join-button');
  await waitFor(() => page.evaluate(() => !document.getElementById('call').hidden), { what: `${label} in the call view`, describe });
}

// Remote tiles: [{id, name, stream}] where `stream` is the id of the
// MediaStream shown in the tile's <video> (the publisher's id, per the
// contract's msid rule).
export const remoteTiles = (page) =>
  page.$$eval('#tiles .tile:not(.local)', (els) =>
    els.map((el) => ({
      id: el.dataset.participant,
      name: el.querySelector('.name').textContent,
      stream: el.querySelector('video').srcObject?.id ?? null,
    })),
  );

// Remote tiles with their mute badges: [{id, name, micOff, camOff}].
export const tileBadges = (page) =>
  page.$$eval('#tiles .tile:not(.local)', (els) =>
    els.map((el) => ({
      id: el.dataset.participant,
      name: el.querySelector('.name').textContent,
      micOff: !el.querySelector('.mic-badge').hidden,
      camOff: !el.querySelector('.cam-badge').hidden,
    })),
  );

// The client's own view of where it is.
export const clientState = (page) =>
  page.evaluate(() => {
    const app = window.noomApp;
    return {
      connection: app.connection,
      room: app.room,
      you: app.you,
      reconnectScheduled: app.reconnectTimer !== null,
      socket: app.ws ? app.ws.readyState : null,
      banner: !document.getElementById('reconnecting').hidden,
      title: document.getElementById('call-title').textContent,
    };
  });

// Video frames decoded from the tile named `name`, counted only when the
// tile, its <video> and the inbound stream agree on who it is.
async function framesOnTile(page, name) {
  const tile = (await remoteTiles(page)).find((t) => t.name === name);
  if (!tile || tile.stream !== tile.id) return 0;
  const stats = await page.evaluate(() => window.noomApp.stats());
  const s = stats.find((x) => x.participant === tile.id && x.kind === 'video');
  return s && s.name === name ? s.framesDecoded : 0;
}

// Waits until `person` shows exactly `others` (by name) and decodes a
// growing number of video frames from each of them on their own tiles.
export async function expectDecoding(person, others, describe) {
  const { page, label } = person;
  const want = JSON.stringify([...others].sort());
  await waitFor(
    async () => {
      const tiles = await remoteTiles(page);
      return JSON.stringify(tiles.map((t) => t.name).sort()) === want;
    },
    { timeout: 60_000, what: `${label} to show tiles for ${want}`, describe },
  );
  for (const other of others) {
    const before = await waitFor(async () => (await framesOnTile(page, other)) || false, {
      timeout: 60_000, what: `${label} decoding ${other} on ${other}'s tile`, describe,
    });
    await waitFor(async () => (await framesOnTile(page, other)) > before + 10, {
      timeout: 30_000, what: `${label}: frames from ${other} keep coming`, describe,
    });
  }
}

// Marks the page's document, to tell later that it was not reloaded.
export const markDocument = (page) => page.evaluate(() => { window.sameDocumentMark = true; });
export const stillSameDocument = (page) => page.evaluate(() => window.sameDocumentMark === true);
