/*
 * TAP ports inside a throwaway network namespace (root): frames written through the TAP fd are
 * received by the kernel on the TAP interface (seen here by an AF_PACKET port on it), and frames
 * the kernel transmits on the interface (sent by the AF_PACKET port) are read from the fd.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFrame } from '../src/dataplane/frames.js';
import { openAfPacket } from '../src/dataplane/io/afpacket.js';
import { enterNetns, loadNative, nativeAvailable, type NativePort } from '../src/dataplane/io/native.js';
import type { PortIO } from '../src/dataplane/io/portio.js';
import { backendNamed } from '../src/dataplane/io/registry.js';
import { openTap } from '../src/dataplane/io/tap.js';
import { prerequisites } from './support/prereq.js';
import { receive, sleep, transmit } from './support/portio.js';

const NS = 'sfct-tap';

const run = prerequisites('tap', {
  root: true,
  commands: ['ip'],
  check: () => (nativeAvailable() ? null : 'the native addon is not built (npm run build:native)'),
});

const sh = (cmd: string): string => execFileSync('sh', ['-c', cmd], { encoding: 'utf8' });

function frame(i: number, bytes: number): Uint8Array {
  return buildFrame({
    ethSrc: '02:00:00:00:aa:01',
    ethDst: '02:00:00:00:bb:02',
    ip: { ver: 4, src: '10.2.0.1', dst: '10.2.0.2', id: i },
    l4: { proto: 'udp', sport: 4000 + i, dport: 9 },
    payload: bytes,
  });
}



const counter = (p: NativePort, name: string): number => p.counters[loadNative().counterNames.indexOf(name)];

describe.skipIf(!run)('TAP ports', () => {
  let leave: () => void = () => {};
  const open: PortIO[] = [];

  beforeAll(() => {
    sh(`ip netns del ${NS} 2>/dev/null; ip netns add ${NS}`);
    sh(`ip netns exec ${NS} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1`);
    leave = enterNetns(NS);
  });

  afterAll(() => {
    for (const p of open) p.close();
    leave();
    sh(`ip netns del ${NS} 2>/dev/null || true`);
  });

  it('creates the TAP, and frames cross in both directions in order, byte for byte', async () => {
    const tap = openTap('tp0');
    open.push(tap);
    expect(sh(`ip -n ${NS} -o link show tp0`)).toMatch(/state UNKNOWN|state UP/);
    const raw = openAfPacket('tp0');
    open.push(raw);
    const toKernel = Array.from({ length: 300 }, (_, i) => frame(i, 20 + ((i * 37) % 1400)));
    expect(transmit(tap, toKernel)).toBe(300);
    const seen = await receive(raw, 300);
    expect(seen.length).toBe(300);
    expect(seen.flatMap((f, i) => (Buffer.compare(f, toKernel[i]) === 0 ? [] : [i]))).toEqual([]);

    const fromKernel = Array.from({ length: 300 }, (_, i) => frame(1000 + i, 30 + ((i * 53) % 1400)));
    expect(transmit(raw, fromKernel)).toBe(300);
    const read = await receive(tap, 300);
    expect(read.length).toBe(300);
    expect(read.flatMap((f, i) => (Buffer.compare(f, fromKernel[i]) === 0 ? [] : [i]))).toEqual([]);
    expect(await receive(tap, 1, 50)).toEqual([]);
  });

  it('attaches to an existing TAP, signals readiness once per arm, counts oversize transmits', async () => {
    sh(`ip -n ${NS} tuntap add dev tp1 mode tap && ip -n ${NS} link set tp1 up`);
    const tap = backendNamed('tap').open('tp1') as NativePort;
    const raw = openAfPacket('tp1');
    open.push(tap, raw);
    await sleep(50);
    expect(tap.isUp()).toBe(true);
    let calls = 0;
    tap.onReadable(() => calls++);
    transmit(raw, [frame(1, 100), frame(2, 100)]);
    await sleep(50);
    expect(calls).toBe(1);
    expect((await receive(tap, 2)).length).toBe(2);

    expect(transmit(tap, [frame(3, 1600), frame(4, 100)])).toBe(1);
    expect(counter(tap, 'tx_too_big')).toBe(1);
    expect((await receive(raw, 2, 100)).length).toBe(1);
  });

  it('reports a deleted TAP as gone, without crashing or spinning', async () => {
    const tap = openTap('tp2');
    let gone = 0;
    let wakes = 0;
    tap.onGone = () => gone++;
    tap.onReadable(() => wakes++);
    sh(`ip -n ${NS} link del tp2`);
    await sleep(100);
    expect(wakes).toBeLessThanOrEqual(1);
    await sleep(250);
    expect(tap.isUp()).toBe(false);
    expect(gone).toBe(1);
    expect(await receive(tap, 1, 20)).toEqual([]);
    expect(transmit(tap, [frame(5, 60)])).toBe(0);
    tap.close();
    tap.close();
  });

  it('gives each worker the TAP fd, one reading it: a transmit-only share sends but never takes a frame', async () => {
    const threads = backendNamed('tap').threads!;
    const fds = threads.openFds('tp3', 2, {});
    try {
      const [reader, share] = fds.workers.map((w) => threads.adopt(w.fd, 'tp3', { rx: w.rx }));
      const raw = openAfPacket('tp3');
      open.push(reader, share, raw);
      expect(fds.workers.map((w) => w.rx)).toEqual([true, false]);
      transmit(raw, [frame(1, 100), frame(2, 100)]);
      await sleep(50);
      // Were the share to read, a flow's frames would be split between two workers (reordered).
      expect(await receive(share, 1, 100)).toEqual([]);
      expect((await receive(reader, 2)).length).toBe(2);
      expect(transmit(share, [frame(3, 100)])).toBe(1);
      expect((await receive(raw, 1)).length).toBe(1);
    } finally {
      fds.close();
    }
  });
});
