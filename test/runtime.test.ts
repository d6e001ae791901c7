/*
 * The live runtime (worker threads, fanout, readiness, shared-memory stats) on veth pairs and
 * TAPs inside a throwaway network namespace (root). The dataplane's interfaces are d<k>; the test
 * plays the hosts behind them through AF_PACKET ports on the peers h<k>. With no chains the engine
 * is a learning L2 switch, so a broadcast frame from h1 must come out of every other h<k> once.
 *
 * Worker threads run the compiled JavaScript (dist/): the suite builds it first when it is stale.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFrame } from '../src/dataplane/frames.js';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import { Ctr } from '../src/packet/counters.js';
import { openAfPacket } from '../src/dataplane/io/afpacket.js';
import { loadCap } from '../src/dataplane/io/cap.js';
import { enterNetns, nativeAvailable } from '../src/dataplane/io/native.js';
import type { PortIO } from '../src/dataplane/io/portio.js';
import { Dataplane } from '../src/dataplane/runtime.js';
import type { Tables } from '../src/dataplane/tables.js';
import { StateBuilder } from './support/sfc-state.js';
import { prerequisites } from './support/prereq.js';
import { receive, sleep, transmit } from './support/portio.js';

const NS = 'sfct-rt';
const ROOT = join(import.meta.dirname, '..');

const run = prerequisites('runtime', {
  root: true,
  commands: ['ip'],
  check: () => (nativeAvailable() ? null : 'the native addon is not built (npm run build:native)'),
});

const sh = (cmd: string): string => execFileSync('sh', ['-c', cmd], { encoding: 'utf8' });

/** Newest modification time under a directory (recursive), for the dist staleness check. */
function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

function buildDistIfStale(): void {
  const worker = join(ROOT, 'dist', 'src', 'dataplane', 'worker.js');
  if (existsSync(worker) && statSync(worker).mtimeMs >= newest(join(ROOT, 'src'))) return;
  try {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], { stdio: 'ignore' });
  } catch {
    // Type errors elsewhere in the tree still emit JavaScript; a missing worker.js fails below.
  }
}

let generation = 0;
function tables(ifaces: string[]): Tables {
  const s = new StateBuilder();
  ifaces.forEach((name, k) => s.port(`p-${name}`, name, `02:00:00:00:10:${(k + 1).toString(16).padStart(2, '0')}`));
  const t = compileTables(s.state);
  t.generation = ++generation;
  return t;
}

/** A broadcast UDP frame whose payload carries its id; 16 flows (by source port). */
function broadcast(id: number): Uint8Array {
  const payload = new Uint8Array(32);
  payload[0] = id >> 8;
  payload[1] = id & 0xff;
  return buildFrame({
    ethSrc: '02:00:00:00:20:01',
    ethDst: 'ff:ff:ff:ff:ff:ff',
    ip: { ver: 4, src: '10.4.0.1', dst: '10.4.255.255' },
    l4: { proto: 'udp', sport: 3000 + (id % 16), dport: 9 },
    payload,
  });
}

const idOf = (f: Uint8Array): number => (f[42] << 8) | f[43];



/** Every id exactly once, and each flow's frames in the order sent. */
function expectEachOnceInFlowOrder(frames: Uint8Array[], n: number): void {
  const ids = frames.map(idOf);
  expect([...ids].sort((x, y) => x - y)).toEqual(Array.from({ length: n }, (_, i) => i));
  for (let flow = 0; flow < 16; flow++) {
    const seq = ids.filter((id) => id % 16 === flow);
    expect(seq).toEqual([...seq].sort((x, y) => x - y));
  }
}

function veth(dp: string, host: string): void {
  sh(`ip -n ${NS} link add ${dp} type veth peer name ${host} && ip -n ${NS} link set ${dp} up && ip -n ${NS} link set ${host} up`);
}

describe.skipIf(!run)('dataplane runtime', () => {
  let leave: () => void = () => {};
  const hosts: PortIO[] = [];
  const host = (name: string): PortIO => {
    const p = openAfPacket(name);
    hosts.push(p);
    return p;
  };

  beforeAll(() => {
    buildDistIfStale();
    sh(`ip netns del ${NS} 2>/dev/null; ip netns add ${NS}`);
    sh(`ip netns exec ${NS} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1`);
    for (const k of [1, 2, 3]) veth(`d${k}`, `h${k}`);
    leave = enterNetns(NS);
  });

  afterAll(() => {
    for (const p of hosts) p.close();
    leave();
    sh(`ip netns del ${NS} 2>/dev/null || true`);
  });

  // AF_XDP: a veth has one queue, so one worker; frames copied, or kept in the chunks they arrived in.
  it.each([
    { backend: 'afpacket', workers: 2, frames: 'copied' },
    { backend: 'afxdp', workers: 1, frames: 'copied' },
    { backend: 'afxdp', workers: 1, frames: 'in place' },
  ] as const)('$backend, $workers worker(s), frames $frames: floods from one veth to the others, counts it, and close() ends the workers', async ({ backend, workers, frames: mode }) => {
    const logs: string[] = [];
    const inPlace = mode === 'in place';
    const dp = new Dataplane({ backend, workers, log: (m) => logs.push(m), framesInPlace: inPlace });
    expect(dp.workers).toBe(workers);
    const [h1, h2, h3] = [host('h1'), host('h2'), host('h3')];
    await dp.publish(tables(['d1', 'd2', 'd3']));
    const frames = Array.from({ length: 400 }, (_, i) => broadcast(i));
    transmit(h1, frames);
    const at2 = await receive(h2, 400);
    const at3 = await receive(h3, 400);
    expectEachOnceInFlowOrder(at2, 400);
    expectEachOnceInFlowOrder(at3, 400);
    expect(await receive(h1, 1, 50)).toEqual([]); // never back out of the input interface
    await sleep(50); // workers copy their per-interface figures when they go idle
    const s = dp.stats();
    expect(s.events[Ctr.rx_packets]).toBe(400);
    expect(s.events[Ctr.tx_packets]).toBe(800);
    const byName = Object.fromEntries(s.interfaces.map((i) => [i.name, i]));
    expect(byName.d1).toMatchObject({ rxPackets: 400, txPackets: 0, up: true });
    expect(byName.d2).toMatchObject({ rxPackets: 0, txPackets: 400, up: true });
    expect(byName.d3.txPackets).toBe(400);
    expect(byName.d1.io.rx_frames).toBe(400);
    // Each frame leaves in place by one of the two interfaces and is copied for the other.
    expect(byName.d2.io.tx_in_place + byName.d3.io.tx_in_place).toBe(inPlace ? 400 : 0);
    expect(logs.filter((m) => m.startsWith('d1: attached')).length).toBe(1);
    const attached = logs.find((m) => m.startsWith('d1: attached'));
    if (backend === 'afpacket') expect(attached).toContain('AF_PACKET');
    else expect(attached).toContain(inPlace ? "frames kept in the worker's UMEM" : 'frames copied to and from the batch');
    await dp.close();
    await dp.close(); // twice is harmless
    await expect(dp.publish(tables(['d1']))).rejects.toThrow(/closed/);
  });

  it('waits for a missing interface, attaches it when it appears, and again after it is deleted and re-created', async () => {
    const logs: string[] = [];
    const dp = new Dataplane({ backend: 'afpacket', workers: 2, log: (m) => logs.push(m) });
    const h1 = host('h1');
    await dp.publish(tables(['d1', 'd4']));
    expect(dp.stats().interfaces.find((i) => i.name === 'd4')?.up).toBe(false);
    expect(logs.some((m) => m.startsWith('d4:') && m.includes('retrying every second'))).toBe(true);

    const flowsTo = async (h: PortIO): Promise<boolean> => {
      for (let k = 0; k < 40; k++) {
        transmit(h1, [broadcast(k)]);
        if ((await receive(h, 1, 100)).length > 0) return true;
      }
      return false;
    };
    veth('d4', 'h4');
    expect(await flowsTo(host('h4'))).toBe(true);
    expect(dp.stats().interfaces.find((i) => i.name === 'd4')?.up).toBe(true);

    sh(`ip -n ${NS} link del d4`);
    await sleep(300);
    expect(logs.some((m) => m.startsWith('d4: interface lost'))).toBe(true);
    expect(dp.stats().interfaces.find((i) => i.name === 'd4')?.up).toBe(false);
    veth('d4', 'h4');
    expect(await flowsTo(host('h4'))).toBe(true);
    expect(logs.filter((m) => m.startsWith('d4: interface lost')).length).toBe(1);
    await dp.close();
  });

  it('tap, 2 workers: creates the TAPs and floods between them', async () => {
    const dp = new Dataplane({ backend: 'tap', workers: 2, log: () => {} });
    await dp.publish(tables(['t1', 't2']));
    const [x, y] = [host('t1'), host('t2')]; // the kernel side of each TAP
    transmit(x, Array.from({ length: 100 }, (_, i) => broadcast(i)));
    expectEachOnceInFlowOrder(await receive(y, 100, 10_000), 100); // returns at 100: the long limit is for a loaded CI machine
    await dp.close();
    await sleep(50);
    expect(sh(`ip -n ${NS} -o link show`)).not.toMatch(/t1:/); // our TAPs went with their fds
  });

  it('cap: one in-process data path floods between veths', async () => {
    try {
      loadCap();
    } catch {
      return; // cap.test.ts reports a missing libpcap
    }
    const logs: string[] = [];
    const dp = new Dataplane({ backend: 'cap', workers: 2, log: (m) => logs.push(m) });
    expect(dp.workers).toBe(1);
    expect(logs.some((m) => m.includes('main thread'))).toBe(true);
    const [h1, h2] = [host('h1'), host('h2')];
    await dp.publish(tables(['d1', 'd2']));
    transmit(h1, [broadcast(999)]); // libpcap loses a fresh handle's first frame (cap.ts)
    await receive(h2, 1, 200);
    transmit(h1, Array.from({ length: 100 }, (_, i) => broadcast(i)));
    expectEachOnceInFlowOrder(await receive(h2, 100), 100);
    await dp.close();
  });

  it('sends health probes through a worker whether it sleeps (woken for them) or polls (takes them from its mailbox)', async () => {
    for (const busyPollUs of [0, 1_000_000]) {
      const dp = new Dataplane({ backend: 'afpacket', workers: 1, log: () => {}, busyPollUs });
      const [h1, h2] = [host('h1'), host('h2')];
      await dp.publish(tables(['d1', 'd2']));
      if (busyPollUs > 0) {
        transmit(h1, [broadcast(1)]); // traffic starts the polling
        expect(await receive(h2, 1)).toHaveLength(1);
      }
      for (let round = 0; round < 3; round++) {
        await sleep(30); // a sleeping worker has gone back to sleep by now
        expect(dp.probe([{ iface: 'd2', frame: broadcast(100 + round) }, { iface: 'd1', frame: broadcast(200 + round) }])).toBe(true);
        expect((await receive(h2, 1)).map(idOf)).toEqual([100 + round]);
        expect((await receive(h1, 1)).map(idOf)).toEqual([200 + round]);
      }
      await dp.close();
    }
  });

  it('busy polling: a worker keeps its loop busy for busyPollUs after traffic, and sleeps at once without it', async () => {
    const busyAfterOneFrame = async (busyPollUs: number): Promise<number> => {
      const dp = new Dataplane({ backend: 'afpacket', workers: 1, log: () => {}, busyPollUs });
      const [h1, h2] = [host('h1'), host('h2')];
      await dp.publish(tables(['d1', 'd2']));
      transmit(h1, [broadcast(1)]);
      expect(await receive(h2, 1)).toHaveLength(1);
      const before = dp.stats().workers[0].busySeconds;
      await sleep(300);
      const busy = dp.stats().workers[0].busySeconds - before;
      await dp.close();
      return busy;
    };
    expect(await busyAfterOneFrame(0)).toBeLessThan(0.05);
    expect(await busyAfterOneFrame(1_000_000)).toBeGreaterThan(0.2); // polling through the 300 ms
    expect(() => new Dataplane({ backend: 'cap', workers: 1, log: () => {}, busyPollUs: 10 })).toThrow(/worker threads/);
  });
});
