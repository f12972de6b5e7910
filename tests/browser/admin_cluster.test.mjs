// The admin page on a node of a cluster (two noom processes sharing a real
// redis-server): signed in on node-b, the operator sees both nodes in the
// Nodes table, alice's room titled with the node that hosts it and her
// media statistics from that node, and "Kick alice" on node-b's page
// removes her from the room on its node.
//
// Run: node --test tests/browser/admin_cluster.test.mjs  (needs target/debug/noom
// and /usr/bin/redis-server; skipped without the latter)

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { artifactsDir, freePort, launchPerson, pageState, randomRoom, startServer, waitFor } from './lib.mjs';

const TOKEN = 'admin-cluster-t0ken';
const REDIS_SERVER = '/usr/bin/redis-server';

async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'noom-redis-'));
  const proc = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: 'ignore',
  });
  const kill = () => proc.kill('SIGKILL');
  process.on('exit', kill);
  return {
    url: `redis://127.0.0.1:${port}/`,
    stop() {
      process.off('exit', kill);
      kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// The Nodes table as [{id, state, answered}].
const nodeRows = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll('#nodes tbody tr')].map((tr) => ({
      id: tr.cells[0].textContent,
      state: tr.cells[1].textContent,
      answered: tr.cells[7].textContent,
    })),
  );

const roomView = (page, room) =>
  page.evaluate((room) => {
    const div = document.querySelector(`.room[data-room="${CSS.escape(room)}"]`);
    if (!div) return null;
    return {
      node: div.dataset.node,
      title: div.querySelector('h3 > span').textContent,
      rows: [...div.querySelectorAll('tbody tr')].map((tr) => ({
        name: tr.cells[0].textContent,
        state: tr.cells[2].textContent,
        published: tr.cells[5].textContent,
      })),
    };
  }, room);

test('the admin page of any node shows the cluster and acts on it', { timeout: 300_000, skip: !existsSync(REDIS_SERVER) && `${REDIS_SERVER} missing` }, async () => {
  mkdirSync(artifactsDir, { recursive: true });
  const redis = await startRedis();
  const servers = [];
  const people = [];
  const room = randomRoom('cluster');
  try {
    // Started one after the other, so node-a's first heartbeat is in Redis
    // before node-b reads the registry.
    for (const id of ['node-a', 'node-b']) {
      servers.push(
        await startServer(`admin-cluster-${id}`, {
          NOOM_ADMIN_TOKEN: TOKEN,
          NOOM_CLUSTER_REDIS_URL: redis.url,
          NOOM_NODE_ID: id,
        }),
      );
    }
    const [a, b] = servers;
    const describe = async () =>
      `${JSON.stringify(await Promise.all(people.map((p) => (p.label === 'operator' ? p.page.evaluate(() => document.getElementById('dashboard').innerText) : pageState(p.page)).catch(String))), null, 2)}\n--- node-a ---\n${a.logTail(20)}\n--- node-b ---\n${b.logTail(20)}`;

    const alice = await launchPerson('alice');
    people.push(alice);
    await alice.page.goto(`${a.url}/minimal.html?room=${encodeURIComponent(room)}&name=alice&ice=none`);
    await waitFor(() => alice.page.evaluate(() => window.noom.connectionState === 'connected'), {
      timeout: 60_000,
      what: "alice's peer connection to connect",
      describe,
    });

    const operator = await launchPerson('operator');
    people.push(operator);
    const admin = operator.page;
    await admin.setViewportSize({ width: 1400, height: 900 });
    await admin.goto(`${b.url}/admin`);
    await admin.getByLabel('Admin token').fill(TOKEN);
    await admin.getByRole('button', { name: 'Sign in' }).click();

    const nodes = await waitFor(
      async () => {
        const rows = await nodeRows(admin);
        return rows.length === 2 && rows.every((r) => r.state === 'serving' && r.answered === 'yes') && rows;
      },
      { timeout: 30_000, what: 'the Nodes table to list both nodes, serving and answering', describe },
    );
    assert.deepEqual(nodes.map((n) => n.id), ['node-a', 'node-b']);

    const view = await waitFor(
      async () => {
        const v = await roomView(admin, room);
        return v && v.rows.length === 1 && v.rows[0].state === 'connected' && /video\/\w+ · [1-9]\d* pkts/.test(v.rows[0].published) && v;
      },
      { timeout: 30_000, what: "alice's room with her media statistics, on node-b's page", describe },
    );
    assert.ok(['node-a', 'node-b'].includes(view.node), `the room's node: ${view.node}`);
    assert.match(view.title, new RegExp(`· node ${view.node} ·`), `title names the node: ${view.title}`);

    await admin.getByRole('button', { name: 'Kick alice' }).click();
    await waitFor(async () => (await admin.locator('#result').textContent()).startsWith('Done: {"kicked"'), {
      timeout: 20_000,
      what: 'the kick to succeed',
      describe,
    });
    await waitFor(async () => (await roomView(admin, room)) === null, {
      timeout: 20_000,
      what: 'the room to disappear from the page',
      describe,
    });
  } finally {
    for (const p of people) await p.close().catch(() => {});
    for (const s of servers) await s.stop().catch(() => {});
    redis.stop();
  }
});
