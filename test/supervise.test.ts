/*
 * The supervised dataplane (root, a throwaway namespace): a worker thread killed while frames flow
 * through the real runtime (AF_PACKET, 2 workers, veths) is restarted with the tables in force
 * within 1 s; meanwhile the real API server's /healthz answers 503 naming the dataplane; after it,
 * every flow is forwarded again (the new worker's sockets are in the interfaces' fanout groups).
 * A publish one worker does not take within the bound (it is kept busy: Dataplane.stallWorker)
 * fails the API write through the real store and userspace driver, cleanly: the write answers
 * 500, the store keeps its previous state and revision, every worker runs the previous generation
 * (the hung one restarted with it), frames are forwarded, and the next write goes through.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApiServer, type ApiServer } from '../src/control/api.js';
import { DriverManager } from '../src/control/driver.js';
import { UserspaceDriver } from '../src/control/drivers/userspace/driver.js';
import { PUBLISH_TIMEOUT_MS } from '../src/dataplane/runtime.js';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import { healthReport } from '../src/control/health-monitor.js';
import { Store } from '../src/control/store.js';
import { buildFrame } from '../src/dataplane/frames.js';
import { openAfPacket } from '../src/dataplane/io/afpacket.js';
import { enterNetns, nativeAvailable } from '../src/dataplane/io/native.js';
import type { PortIO } from '../src/dataplane/io/portio.js';
import { Dataplane } from '../src/dataplane/runtime.js';
import { StateBuilder } from './support/sfc-state.js';
import { prerequisites } from './support/prereq.js';
import { receive, sleep, transmit } from './support/portio.js';

const NS = `sfct-sv${process.pid}`;
const run = prerequisites('supervision', { root: true, commands: ['ip'], check: () => (nativeAvailable() ? null : 'the native addon is not built (npm run build:native)') });
const sh = (cmd: string): string => execFileSync('sh', ['-c', cmd], { encoding: 'utf8' });
const D2_MAC = '02:00:00:00:10:02';

/** Unicast UDP to the port on d2, flow by source port, id in the payload. */
function frame(id: number): Uint8Array {
  const payload = new Uint8Array(32);
  payload[0] = id >> 8;
  payload[1] = id & 0xff;
  return buildFrame({ ethSrc: '02:00:00:00:20:01', ethDst: D2_MAC, ip: { ver: 4, src: '10.4.0.1', dst: '10.4.0.2' }, l4: { proto: 'udp', sport: 3000 + (id % 32), dport: 9 }, payload });
}

describe.skipIf(!run)('supervised dataplane', () => {
  let leave: () => void = () => {};
  let dp: Dataplane;
  let api: ApiServer;
  let h1: PortIO;
  let h2: PortIO;
  const logs: string[] = [];

  beforeAll(async () => {
    sh(`ip netns del ${NS} 2>/dev/null; ip netns add ${NS}`);
    sh(`ip netns exec ${NS} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1`);
    sh(`ip -n ${NS} link set lo up`); // the API listens on its loopback
    for (const k of [1, 2]) sh(`ip -n ${NS} link add d${k} type veth peer name h${k} && ip -n ${NS} link set d${k} up && ip -n ${NS} link set h${k} up`);
    leave = enterNetns(NS);
    h1 = openAfPacket('h1');
    h2 = openAfPacket('h2');
    dp = new Dataplane({ backend: 'afpacket', workers: 2, log: (m) => logs.push(m) });
    const s = new StateBuilder();
    s.port('p1', 'd1', '02:00:00:00:10:01');
    s.port('p2', 'd2', D2_MAC);
    await dp.publish(compileTables(s.state));
    api = await startApiServer({ store: new Store({ linkUp: () => false }), health: () => healthReport(dp, undefined), host: '127.0.0.1', port: 0 });
  });

  afterAll(async () => {
    await api?.close();
    await dp?.close();
    h1?.close();
    h2?.close();
    leave();
    sh(`ip netns del ${NS} 2>/dev/null || true`);
  });

  it('restarts a killed worker with the tables in force within 1 s; /healthz says 503 meanwhile; every flow forwards again', async () => {
    transmit(h1, Array.from({ length: 320 }, (_, i) => frame(i)));
    expect((await receive(h2, 320)).length).toBe(320);
    const healthz = async () => {
      const r = await fetch(`${api.url}/healthz`);
      return { status: r.status, body: (await r.json()) as { status: string; degraded?: { dataplane?: { workers_restarting: { worker: number }[] } } } };
    };
    expect((await healthz()).status).toBe(200);

    // Frames keep flowing while worker 0 dies and comes back.
    let id = 1000;
    const flow = setInterval(() => transmit(h1, [frame(id++)]), 2);
    const killed = performance.now();
    await dp.terminateWorker(0);
    const answers: { status: number; body: Awaited<ReturnType<typeof healthz>>['body'] }[] = [];
    for (const end = killed + 3000; performance.now() < end; await sleep(5)) {
      answers.push(await healthz());
      if (answers.at(-1)!.status === 200) break;
    }
    const backMs = performance.now() - killed;
    clearInterval(flow);
    const degraded = answers.filter((a) => a.status === 503);
    expect(degraded.length).toBeGreaterThan(0);
    expect(degraded[0].body.status).toBe('degraded');
    expect(degraded[0].body.degraded?.dataplane?.workers_restarting.map((w) => w.worker)).toEqual([0]);
    expect(answers.at(-1)!.status).toBe(200);
    expect(backMs).toBeLessThan(1000);
    expect(dp.health()).toMatchObject({ ok: true, restarts: 1 });
    expect(logs.some((m) => /worker 0 exited .*restarting/.test(m))).toBe(true);
    expect(logs.some((m) => /worker 0 restarted: generation 1 live/.test(m))).toBe(true);

    // Every flow (both workers' shares) is forwarded again.
    await receive(h2, 100_000, 200); // drain what the interval sent
    transmit(h1, Array.from({ length: 320 }, (_, i) => frame(i)));
    const after = await receive(h2, 320);
    expect(new Set(after.map((f) => (f[42] << 8) | f[43])).size).toBe(320);
    console.log(JSON.stringify({ workerBackMs: Math.round(backMs), answers503: degraded.length, log: logs.filter((m) => m.includes("worker 0")) }));
  }, 30_000);

  it('a publish a worker does not take within 2 s fails the API write; store and workers stay on the previous generation', async () => {
    const driver = new UserspaceDriver((t) => dp.publish(t));
    const store = new Store({ drivers: new DriverManager([driver]), linkUp: () => true });
    const s = new StateBuilder();
    s.port('p1', 'd1', '02:00:00:00:10:01');
    s.port('p2', 'd2', D2_MAC);
    await store.replace(s.state);
    const writes = await startApiServer({ store, host: '127.0.0.1', port: 0 });
    try {
      const post = (name: string, mac: string) =>
        fetch(`${writes.url}/v2.0/ports`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ port: { name, mac_address: mac, 'binding:profile': { interface: 'd2' } } }),
        });
      expect((await post('p3', '02:00:00:00:10:03')).status).toBe(201);
      const good = driver.tables!.generation;
      const until = async (what: string, ok: () => boolean) => {
        for (const end = performance.now() + 5000; !ok(); await sleep(10)) if (performance.now() > end) throw new Error(`${what}: ${dp.generations()}`);
      };
      await until('every worker on the good generation', () => dp.generations().every((g) => g === good));
      const revision = store.revision;

      dp.stallWorker(1, PUBLISH_TIMEOUT_MS + 1000);
      const t0 = performance.now();
      const failed = await post('p4', '02:00:00:00:10:04');
      const took = performance.now() - t0;
      const body = (await failed.json()) as { NeutronError: { type: string; message: string } };
      expect(failed.status).toBe(500);
      expect(body.NeutronError.type).toBe('SfcDriverError');
      expect(body.NeutronError.message).toMatch(/worker 1 did not take generation \d+ within 2000 ms/);
      expect(took).toBeGreaterThanOrEqual(PUBLISH_TIMEOUT_MS - 50);
      expect(took).toBeLessThan(PUBLISH_TIMEOUT_MS + 1500);
      // the store as before the write
      expect(store.revision).toBe(revision);
      expect(store.state.ports.map((p) => p.name).sort()).toEqual(['p1', 'p2', 'p3']);
      expect(driver.tables!.generation).toBe(good);
      // every worker back on the previous generation (the hung one terminated and restarted with it), forwarding
      await until('every worker back on the previous generation', () => dp.health().ok && dp.generations().every((g) => g === good));
      expect(logs.some((m) => /worker 1 did not take generation \d+ within 2000 ms: restarting it/.test(m))).toBe(true);
      await receive(h2, 100_000, 200);
      transmit(h1, Array.from({ length: 64 }, (_, i) => frame(i)));
      expect((await receive(h2, 64)).length).toBe(64);
      // and the next write goes through
      expect((await post('p4', '02:00:00:00:10:04')).status).toBe(201);
      await until('every worker on the next generation', () => dp.generations().every((g) => g === good + 1));
    } finally {
      await writes.close();
    }
  }, 30_000);
});
