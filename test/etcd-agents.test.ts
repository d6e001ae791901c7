/*
 * What agents use of the shared store, on a real 3-member etcd cluster: a reader's model
 * (openModel) follows every write with the writer's revision numbers; agents' leased records
 * appear, change, vanish at once when an agent stops, and expire when an agent dies (its lease
 * is no longer kept alive).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { publishAgent, watchAgents, type AgentInfo } from '../src/control/etcd/agents.js';
import { connectEtcd } from '../src/control/etcd/client.js';
import { EtcdModel, openModel } from '../src/control/etcd/model.js';
import type { State } from '../src/control/model.js';
import { Store } from '../src/control/store.js';
import { etcdAvailable, startTestCluster, type TestCluster } from './support/etcd.js';

const BASE_PORT = 32579;
const run = etcdAvailable('etcd agents');

const AGENTS_JS = resolve(import.meta.dirname, '../dist/src/control/etcd/agents.js');
const CLIENT_JS = resolve(import.meta.dirname, '../dist/src/control/etcd/client.js');

/** A separate process publishing one agent record (built modules), once it has published. */
async function agentProcess(endpoints: string[], host: string, info: AgentInfo, ttl: number): Promise<ChildProcess> {
  const script = `
    const { publishAgent } = await import(${JSON.stringify(AGENTS_JS)});
    const { connectEtcd } = await import(${JSON.stringify(CLIENT_JS)});
    const client = await connectEtcd(${JSON.stringify(endpoints)});
    await publishAgent(client, ${JSON.stringify(host)}, ${JSON.stringify(info)}, ${ttl});
    console.log('published');`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((ok, fail) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('published') && ok());
    child.once('exit', (code) => fail(new Error(`agent process exited (${code}) before publishing`)));
  });
  return child;
}

/** The next callback value satisfying ok. */
function next<T>(subscribe: (cb: (v: T) => void) => () => void, ok: (v: T) => boolean): Promise<T> {
  return new Promise((resolve) => {
    const off = subscribe((v) => {
      if (ok(v)) {
        off();
        resolve(v);
      }
    });
  });
}

describe.skipIf(!run)('the shared store as agents see it', () => {
  let tc: TestCluster;
  let client: Etcd3;

  beforeAll(async () => {
    tc = await startTestCluster(BASE_PORT);
    client = await connectEtcd(tc.cluster.endpoints);
  }, 60_000);

  afterAll(async () => {
    client?.close();
    await tc?.cleanup();
  });

  it("a reader's model follows each write, with the writer's revision", async () => {
    const writer = await EtcdModel.open(client, tc.cluster.endpoints);
    const store = new Store({ linkUp: () => false, committer: writer });
    await store.adopt(() => writer.state());
    const reader = await openModel(tc.cluster.endpoints);
    try {
      expect(reader.revision()).toBe(writer.revision());
      const seen: [State, number][] = [];
      const off = reader.onChange((s, r) => seen.push([s, r]));
      const arrived = next<[State, number]>((cb) => reader.onChange((s, r) => cb([s, r])), ([s]) => s.ports.length === 2);
      const p1 = await store.create('ports', { name: 'h2-port', 'binding:profile': { interface: 'x1' }, 'binding:host_id': 'h2' });
      const r1 = writer.revision();
      const p2 = await store.create('ports', { name: 'h3-port', 'binding:profile': { interface: 'x2' }, 'binding:host_id': 'h3' });
      const [state, revision] = await arrived;
      off();
      expect(revision).toBe(writer.revision());
      expect(seen.map(([, r]) => r)).toEqual([r1, revision]);
      expect(state.ports.map((p) => [p.id, p['binding:host_id']])).toEqual([
        [p1.id, 'h2'],
        [p2.id, 'h3'],
      ]);
    } finally {
      await reader.close();
      await writer.close();
    }
  });

  it('records appear and change; stop removes one at once; a dead agent expires with its lease', async () => {
    let notify: (agents: ReadonlyMap<string, AgentInfo>) => void = () => undefined;
    const watch = await watchAgents(client, (agents) => notify(agents));
    let dying: ChildProcess | undefined;
    const when = (ok: (agents: ReadonlyMap<string, AgentInfo>) => boolean) =>
      next<ReadonlyMap<string, AgentInfo>>((cb) => {
        notify = cb;
        return () => (notify = () => undefined);
      }, ok);
    try {
      const up = when((a) => a.has('h2') && a.has('h3'));
      const h2 = await publishAgent(client, 'h2', { underlay: '10.99.0.2', mac: '02:00:00:00:99:02' }, 2);
      dying = await agentProcess(tc.cluster.endpoints, 'h3', { underlay: '10.99.0.3' }, 2);
      expect((await up).get('h2')).toEqual({ underlay: '10.99.0.2', mac: '02:00:00:00:99:02' });

      const updated = when((a) => a.get('h2')?.health === 'ok');
      await h2.update({ underlay: '10.99.0.2', health: 'ok' });
      expect((await updated).get('h2')).toEqual({ underlay: '10.99.0.2', health: 'ok' });

      const stopped = when((a) => !a.has('h2'));
      await h2.close();
      expect((await stopped).has('h3')).toBe(true);

      const expired = when((a) => !a.has('h3'));
      dying.kill('SIGKILL'); // keep-alives stop: the lease runs out
      expect((await expired).size).toBe(0);
      expect(watch.agents().size).toBe(0);
    } finally {
      dying?.kill('SIGKILL');
      await watch.close();
    }
  }, 20_000);

  // Last: it stops the whole cluster.
  it('an agent whose etcd goes away logs it once, publishes again once etcd is back, and logs that once', async () => {
    const logs: string[] = [];
    const publication = await publishAgent(client, 'h4', { underlay: '10.99.0.4' }, 1, (m) => logs.push(m));
    let notify: (agents: ReadonlyMap<string, AgentInfo>) => void = () => undefined;
    try {
      await Promise.all([0, 1, 2].map((i) => tc.cluster.kill(i)));
      for (const end = Date.now() + 10_000; !logs.some((m) => /lease lost/.test(m)) && Date.now() < end; await sleep(50));
      // Several of the 1 s retries fail while etcd is away (a negative can only be shown over time).
      await sleep(4500);
      expect(logs.filter((m) => /lease lost/.test(m))).toHaveLength(1);
      const back = next<ReadonlyMap<string, AgentInfo>>((cb) => {
        notify = cb;
        return () => (notify = () => undefined);
      }, (a) => a.has('h4'));
      await Promise.all([0, 1, 2].map((i) => tc.cluster.restart(i)));
      // (A fresh client: the shared one's circuit breaker stays open a while after the outage; the
      // publication's own retries wait it out.)
      const fresh = await connectEtcd(tc.cluster.endpoints);
      const watch = await watchAgents(fresh, (agents) => notify(agents));
      try {
        expect((await back).get('h4')).toEqual({ underlay: '10.99.0.4' });
      } finally {
        await watch.close();
        fresh.close();
      }
      for (const end = Date.now() + 20_000; !logs.some((m) => /published again/.test(m)) && Date.now() < end; await sleep(50));
      expect(logs.filter((m) => /published again/.test(m))).toHaveLength(1);
      expect(logs.filter((m) => /lease lost/.test(m))).toHaveLength(1);
    } finally {
      await publication.close().catch(() => undefined);
    }
  }, 60_000);

  it('refuses a host name that cannot be a key', async () => {
    await expect(publishAgent(client, 'a/b', { underlay: '10.0.0.1' }, 2)).rejects.toThrow(/not a host name/);
  });
});
