/*
 * The model in etcd with two API servers (two Stores, each with its own client, mirror and watch)
 * on a real 3-member cluster: concurrent writes never interleave (no allocation handed out twice,
 * a classifier claimed by exactly one of two racing chains), one server's write reaches the other,
 * the cluster survives one member and refuses writes (503, nothing changed) without a quorum, a
 * new server reads the whole model back in order, and a model wiped outside the API is followed.
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectEtcd } from '../src/control/etcd/client.js';
import { EtcdModel, MODEL_PREFIX, followModel } from '../src/control/etcd/model.js';
import { NeutronError } from '../src/control/errors.js';
import { emptyState } from '../src/control/model.js';
import { DriverManager, type Driver } from '../src/control/driver.js';
import type { Plan } from '../src/control/plan.js';
import { Store } from '../src/control/store.js';
import { etcdAvailable, startTestCluster, type TestCluster } from './support/etcd.js';
import { chain, classifier, group, pair, port } from './store-fixture.js';

const BASE_PORT = 32379;
/** etcd's own default: the servers' batches must fit a cluster nobody tuned. */
const ETCD_DEFAULT_MAX_TXN_OPS = 128;
const run = etcdAvailable('etcd shared store');

interface Server {
  client: Etcd3;
  model: EtcdModel;
  store: Store;
  /** Port ids of each plan the server's driver was given to apply (postcommit), in order. */
  applied: string[][];
  close(): Promise<void>;
}

/** A driver that accepts every plan and records what it is told to apply. */
function recordingDriver(applied: string[][]): Driver {
  return {
    name: 'recording',
    precommit: () => [],
    async postcommit(next: Plan) {
      applied.push(next.ports.map((p) => p.id));
    },
  };
}

describe.skipIf(!run)('the model in etcd, two API servers', () => {
  let tc: TestCluster;
  const open: Server[] = [];
  let a: Server;
  let b: Server;

  async function startServer(): Promise<Server> {
    const endpoints = tc.cluster.endpoints;
    const client = await connectEtcd(endpoints);
    const model = await EtcdModel.open(client, endpoints);
    const applied: string[][] = [];
    const store = new Store({ linkUp: () => false, committer: model, drivers: new DriverManager([recordingDriver(applied)]) });
    const unfollow = await followModel(model, store, (m) => console.error(m));
    const server = {
      client,
      model,
      store,
      applied,
      async close() {
        unfollow();
        await model.close();
        client.close();
        open.splice(open.indexOf(server), 1);
      },
    };
    open.push(server);
    return server;
  }

  /** Until s's store holds the model at `revision` (its watch brought it and the store adopted it). */
  async function caughtUp(s: Server, revision: number): Promise<void> {
    if (s.model.revision() < revision) {
      await new Promise<void>((resolve) => {
        const off = s.model.onChange((_, r) => {
          if (r >= revision) {
            off();
            resolve();
          }
        });
      });
    }
    await s.store.adopt(() => s.model.state()); // queued behind the follower's adoption
  }

  const latest = () => Math.max(a.model.revision(), b.model.revision());
  const bothCaughtUp = async () => {
    const r = latest();
    await Promise.all([caughtUp(a, r), caughtUp(b, r)]);
  };

  beforeAll(async () => {
    tc = await startTestCluster(BASE_PORT, { maxTxnOps: ETCD_DEFAULT_MAX_TXN_OPS });
    a = await startServer();
    b = await startServer();
  }, 60_000);

  afterAll(async () => {
    for (const s of [...open]) await s.close();
    await tc?.cleanup();
  });

  it('concurrent creates on both servers: every one committed once, no group_id handed out twice, same model on both', async () => {
    const N = 150; // more than one transaction of an untuned etcd takes: the batches are split
    const writes = [...Array(N).keys()].flatMap((i) => [
      a.store.create('port_pair_groups', { name: `a${i}` }),
      b.store.create('port_pair_groups', { name: `b${i}` }),
    ]);
    const created = await Promise.all(writes);
    await bothCaughtUp();
    const groups = a.store.list('port_pair_groups');
    expect(groups).toHaveLength(2 * N);
    expect(new Set(groups.map((g) => g.id)).size).toBe(2 * N);
    expect(new Set(groups.map((g) => g.group_id)).size).toBe(2 * N);
    expect(new Set(created.map((g) => g.group_id)).size).toBe(2 * N);
    expect(b.store.state).toEqual(a.store.state);
    const keys = await a.client.getAll().prefix(`${MODEL_PREFIX}port_pair_groups/`).keys();
    expect(keys).toHaveLength(2 * N);
  });

  it('two chains racing for one flow classifier: exactly one wins, the other gets 409', async () => {
    for (let round = 0; round < 3; round++) {
      const [ga, gb] = [await group(a.store, [await pair(a.store, `ra${round}`)]), await group(a.store, [await pair(a.store, `rb${round}`)])];
      const fc = await classifier(a.store, { protocol: 'tcp', destination_port_range_min: 1000 + round, destination_port_range_max: 1000 + round });
      await bothCaughtUp();
      const results = await Promise.allSettled([
        chain(a.store, [ga], { name: `a${round}`, flow_classifiers: [fc.id] }),
        chain(b.store, [gb], { name: `b${round}`, flow_classifiers: [fc.id] }),
      ]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(won).toHaveLength(1);
      expect(lost).toHaveLength(1);
      expect(lost[0]!.reason).toBeInstanceOf(NeutronError);
      expect(lost[0]!.reason).toMatchObject({ status: 409, type: 'FlowClassifierInUse' });
      await bothCaughtUp();
      for (const s of [a, b]) expect(s.store.list('port_chains').filter((c) => c.flow_classifiers.includes(fc.id))).toHaveLength(1);
    }
  });

  it("a write on one server reaches the other through the watch and its driver (binding:host_id included)", async () => {
    const p = await port(a.store, 'remote', { 'binding:host_id': 'host2' });
    await caughtUp(b, a.model.revision());
    expect(b.store.get('ports', p.id)).toEqual(a.store.get('ports', p.id));
    expect(b.applied.at(-1)).toEqual(a.store.list('ports').map((x) => x.id));
    expect(b.store.get('ports', p.id)?.['binding:host_id']).toBe('host2');
    const renamed = await b.store.update('ports', p.id, { name: 'renamed', 'binding:host_id': 'host3' });
    await caughtUp(a, b.model.revision());
    expect(a.store.get('ports', p.id)).toEqual(renamed);
  });

  it('one member killed: writes go on; two killed: 503 and nothing changes; restarted: writes work', async () => {
    const first = await tc.cluster.leader(); // the leader goes first: the writes wait out an election
    expect(first).toBeGreaterThanOrEqual(0);
    await tc.cluster.kill(first);
    const p1 = await port(a.store, 'one-down-a');
    const p2 = await port(b.store, 'one-down-b');
    await bothCaughtUp();
    for (const s of [a, b]) expect(s.store.get('ports', p1.id) && s.store.get('ports', p2.id)).toBeTruthy();

    // The new leader is left alone: until it notices (an election timeout) it still takes
    // proposals, which a write must not make (they could commit once the quorum is back).
    const second = await tc.cluster.leader();
    const follower = [0, 1, 2].find((i) => i !== first && i !== second)!;
    expect(second).toBeGreaterThanOrEqual(0);
    await tc.cluster.kill(follower);
    const before = structuredClone(a.store.state);
    const revisions = [a.store.revision, b.store.revision];
    const refused = await Promise.all([a, b].map((s) => port(s.store, 'no-quorum').catch((x: unknown) => x)));
    for (const e of refused) {
      expect(e).toBeInstanceOf(NeutronError);
      expect(e).toMatchObject({ status: 503, type: 'ServiceUnavailable' });
    }
    for (const s of [a, b]) expect(s.store.state).toEqual(before);
    expect([a.store.revision, b.store.revision]).toEqual(revisions);

    await Promise.all([tc.cluster.restart(first), tc.cluster.restart(follower)]);
    const p3 = await port(a.store, 'back');
    await bothCaughtUp();
    expect(b.store.get('ports', p3.id)).toEqual(p3);
    expect(b.store.list('ports').filter((p) => p.name === 'no-quorum')).toEqual([]);
  }, 60_000);

  it('a server started later (or restarted) reads the whole model back, in order', async () => {
    await a.close();
    const c = await startServer();
    await caughtUp(c, b.model.revision());
    expect(c.store.state).toEqual(b.store.state);
    a = c;
  });

  it('a model wiped outside the API (etcdctl del --prefix) is followed, and writes go on from it', async () => {
    const wiped = await a.client.delete().prefix(MODEL_PREFIX).exec();
    await Promise.all([caughtUp(a, Number(wiped.header.revision)), caughtUp(b, Number(wiped.header.revision))]);
    for (const s of [a, b]) expect(s.store.state).toEqual(emptyState());
    const p = await port(b.store, 'after-wipe');
    await caughtUp(a, b.model.revision());
    expect(a.store.list('ports')).toEqual([p]);
  });
});
