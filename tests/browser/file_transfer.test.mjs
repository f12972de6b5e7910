// A file sent through the web client's "Send a file" control travels over
// the server-relayed data channel and is downloadable, byte-identical, at
// the other participant; both sides show progress.
//
// Run: node --test tests/browser/file_transfer.test.mjs

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { artifactsDir, launchPerson, randomRoom, startServer, waitFor } from './lib.mjs';

test('a file sent in the web client arrives intact at the other participant', { timeout: 240_000 }, async () => {
  mkdirSync(artifactsDir, { recursive: true });
  const server = await startServer('file_transfer');
  const people = [];
  try {
    const room = randomRoom('files');
    for (const name of ['alice', 'bob']) people.push(await launchPerson(name));
    const [a, b] = people;
    const describe = async () => `server log tail:\n${server.logTail(20)}\nalice: ${a.consoleLines.slice(-5).join(' | ')}\nbob: ${b.consoleLines.slice(-5).join(' | ')}`;
    for (const p of people) {
      await p.page.goto(`${server.url}/?ice=none&camera=any`);
      await p.page.fill('#name', p.label);
      await p.page.fill('#room', room);
      await p.page.click('#join-button');
    }
    // The data channel opens with the media connection.
    for (const p of people) {
      await waitFor(() => p.page.evaluate(() => Boolean(window.noomApp.dc && window.noomApp.dc.readyState === 'open')), {
        timeout: 60_000, what: `${p.label}'s data channel open`, describe,
      });
    }
    await waitFor(() => a.page.evaluate(() => window.noomApp.participants.size === 1), { what: 'alice sees bob', describe });

    const content = randomBytes(700 * 1024 + 123);
    const expected = createHash('sha256').update(content).digest('hex');
    await a.page.setInputFiles('#file-input', { name: 'report.bin', mimeType: 'application/octet-stream', buffer: content });

    // Bob sees the transfer with a progress bar, then a download link.
    await waitFor(() => b.page.$eval('#transfers', (el) => el.textContent.includes('report.bin')), { what: 'bob sees the incoming file', describe });
    assert.ok(await b.page.$('#transfers progress'), 'bob sees a progress bar');
    await waitFor(() => b.page.$('#transfers a[download="report.bin"]'), { timeout: 60_000, what: 'bob gets a download link', describe });
    await waitFor(() => a.page.$eval('#transfers li', (li) => li.dataset.state === 'sent'), { what: 'alice sees the file sent', describe });
    const got = await b.page.evaluate(async () => {
      const a = document.querySelector('#transfers a[download="report.bin"]');
      const buf = await (await fetch(a.href)).arrayBuffer();
      const hash = await crypto.subtle.digest('SHA-256', buf);
      return { size: buf.byteLength, hash: [...new Uint8Array(hash)].map((x) => x.toString(16).padStart(2, '0')).join('') };
    });
    assert.equal(got.size, content.length, 'size');
    assert.equal(got.hash, expected, 'SHA-256 of the downloaded file');
    await b.page.screenshot({ path: path.join(artifactsDir, 'web-file-received.png') });
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await server.stop();
  }
});
