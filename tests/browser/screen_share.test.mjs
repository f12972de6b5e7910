// Screen share (issue #16 point 6) through the web client: ann shares her
// screen (Chromium's fake capture, picked without a dialog); ben and cal see
// it on a big tile named after her, with the camera tiles in a strip, and
// decode it; when she stops, the share disappears everywhere and the grid
// comes back. Her camera keeps reaching them on its own tile throughout.
//
// Run: node --test tests/browser/screen_share.test.mjs  (needs target/debug/noom)

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { launchPerson, randomRoom, startServer, waitFor } from './lib.mjs';
import { joinViaForm } from './web_call.mjs';

const SHARE_ARGS = ['--auto-select-desktop-capture-source=Entire screen'];

// What a page shows of screen shares: [{of, name, stage, decoded}].
const screenTiles = (page) =>
  page.$$eval('#tiles .tile.screen', (els) =>
    els.map((el) => {
      const video = el.querySelector('video');
      return {
        of: el.dataset.screenOf,
        name: el.querySelector('.name').textContent,
        stage: el.classList.contains('stage'),
        decoded: video.getVideoPlaybackQuality().totalVideoFrames,
        area: el.offsetWidth * el.offsetHeight,
      };
    }),
  );

// The camera tile of `id` at `page`: its stream's video tracks and frames.
const cameraTile = (page, id) =>
  page.evaluate((id) => {
    const el = document.querySelector(`#tiles .tile[data-participant="${CSS.escape(id)}"]`);
    if (!el) return null;
    const video = el.querySelector('video');
    return {
      stream: video.srcObject?.id ?? null,
      videoTracks: video.srcObject ? video.srcObject.getVideoTracks().length : 0,
      decoded: video.getVideoPlaybackQuality().totalVideoFrames,
      area: el.offsetWidth * el.offsetHeight,
    };
  }, id);

test('a screen share appears large at the others with its name and goes when stopped', { timeout: 120_000 }, async () => {
  const server = await startServer('screen_share');
  const people = [];
  try {
    const room = randomRoom('share');
    for (const name of ['ann', 'ben', 'cal']) people.push(await launchPerson(name, { extraArgs: SHARE_ARGS }));
    const [ann, ben, cal] = people;
    const watchers = [ben, cal];
    const describe = async () => `server log tail:\n${server.logTail(20)}\n` +
      (await Promise.all(people.map(async (p) => `${p.label}: screens ${JSON.stringify(await screenTiles(p.page))} status ${await p.page.locator('#call-status').textContent()} console: ${p.consoleLines.slice(-5).join(' | ')}`))).join('\n');

    for (const p of people) await joinViaForm(p, server.url, room, describe);
    const annId = await waitFor(() => ann.page.evaluate(() => window.noomApp.you), { what: 'ann has an id', describe });
    for (const p of watchers) {
      await waitFor(async () => ((await cameraTile(p.page, annId)) || {}).decoded > 0, { timeout: 30_000, what: `${p.label} decodes ann's camera`, describe });
    }

    // Ann shares.
    await ann.page.click('#share-button');
    await waitFor(async () => (await ann.page.getAttribute('#share-button', 'aria-pressed')) === 'true', { what: 'ann is sharing', describe });
    for (const p of watchers) {
      const [share] = await waitFor(async () => {
        const tiles = await screenTiles(p.page);
        return tiles.length === 1 && tiles[0].decoded > 5 && tiles;
      }, { timeout: 20_000, what: `${p.label} decodes ann's screen`, describe });
      assert.equal(share.of, annId);
      assert.equal(share.name, "ann's screen");
      assert.ok(share.stage, `${p.label}: the share is not the big tile`);
      const camera = await cameraTile(p.page, annId);
      assert.equal(camera.stream, annId, `${p.label}: ann's camera tile lost her stream`);
      assert.equal(camera.videoTracks, 1, `${p.label}: ann's camera tile holds the share too`);
      assert.ok(share.area > 4 * camera.area, `${p.label}: share ${share.area} px² not much larger than the camera tile ${camera.area} px²`);
      // The camera keeps coming alongside the share.
      await waitFor(async () => (await cameraTile(p.page, annId)).decoded > camera.decoded + 5, { what: `${p.label}: ann's camera keeps playing`, describe });
    }
    assert.deepEqual(await screenTiles(ann.page), [], 'ann sees no remote share of her own');

    // Ann stops: the share goes everywhere, the grid comes back.
    await ann.page.click('#share-button');
    for (const p of watchers) {
      await waitFor(async () => (await screenTiles(p.page)).length === 0, { what: `${p.label}: ann's screen gone`, describe });
      await waitFor(async () => (await p.page.getAttribute('#tiles', 'data-layout')) === 'grid', { what: `${p.label}: grid again`, describe });
      const camera = await cameraTile(p.page, annId);
      await waitFor(async () => (await cameraTile(p.page, annId)).decoded > camera.decoded + 5, { what: `${p.label}: ann's camera still plays`, describe });
    }
    assert.ok(server.logs().some((l) => l.includes('track stopped by the client')), 'the server did not end the track');
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
  }
});
