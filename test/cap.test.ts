/*
 * The libpcap backend (`cap`) on a veth pair inside a throwaway network namespace (root).
 *
 * Not tested here: an attached interface going down or being deleted. cap 0.2.1 asserts on poll
 * errors (src/binding.cc cb_packets: `assert(status == 0)`), which aborts the process; see cap.ts.
 * libpcap drops the first frame a fresh handle receives (see cap.ts), so the ports are opened once
 * and primed with one throwaway frame.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFrame, mulberry32 } from '../src/dataplane/frames.js';
import { BATCH } from '../src/packet/batch.js';
import { loadCap, type CapPort } from '../src/dataplane/io/cap.js';
import { enterNetns, nativeAvailable } from '../src/dataplane/io/native.js';
import { backendNamed } from '../src/dataplane/io/registry.js';
import { prerequisites } from './support/prereq.js';
import { receive, sleep, transmit } from './support/portio.js';

const NS = 'sfct-cap';

const run = prerequisites('cap', {
  root: true,
  commands: ['ip'],
  check: () => {
    try {
      loadCap();
    } catch (e) {
      return (e as Error).message;
    }
    // The test enters the namespace with the addon (libpcap itself opens in the thread's namespace).
    return nativeAvailable() ? null : 'the native addon is not built (npm run build:native)';
  },
});

const sh = (cmd: string): string => execFileSync('sh', ['-c', cmd], { encoding: 'utf8' });

function udp(i: number, bytes: number): Uint8Array {
  const payload = new Uint8Array(bytes).fill(i & 0xff);
  payload[0] = i >> 8;
  return buildFrame({ ip: { ver: 4, src: '10.3.0.1', dst: '10.3.0.2' }, l4: { proto: 'udp', sport: 2000 + (i % 40), dport: 7 }, payload });
}



describe.skipIf(!run)('cap (libpcap) ports', () => {
  let leave: () => void = () => {};
  let a: CapPort;
  let b: CapPort;

  beforeAll(async () => {
    sh(`ip netns del ${NS} 2>/dev/null; ip netns add ${NS}`);
    sh(`ip netns exec ${NS} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1`);
    sh(`ip -n ${NS} link add va type veth peer name vb && ip -n ${NS} link set va up && ip -n ${NS} link set vb up`);
    leave = enterNetns(NS);
    a = backendNamed('cap').open('va') as CapPort;
    b = backendNamed('cap').open('vb') as CapPort;
    transmit(b, [udp(9999, 10)]);
    transmit(a, [udp(9999, 10)]);
    await sleep(50);
    await receive(a, 1, 50);
    await receive(b, 1, 50);
  });

  afterAll(() => {
    a?.close();
    b?.close();
    leave();
    sh(`ip netns del ${NS} 2>/dev/null || true`);
  });

  it('moves 1,000 frames of various sizes a -> b in order, byte for byte, with no echo on a', async () => {
    const rnd = mulberry32(3);
    const frames = Array.from({ length: 1000 }, (_, i) => udp(i, 18 + Math.floor(rnd() * 1454)));
    const got: Uint8Array[] = [];
    for (let at = 0; at < frames.length; at += BATCH) {
      const burst = frames.slice(at, at + BATCH);
      expect(transmit(a, burst)).toBe(burst.length);
      got.push(...(await receive(b, burst.length)));
    }
    expect(got.length).toBe(frames.length);
    expect(frames.flatMap((f, i) => (Buffer.compare(f, got[i]) === 0 ? [] : [i]))).toEqual([]);
    expect(await receive(a, 1, 100)).toEqual([]);
    expect(b.rxOverflow + b.rxTooBig).toBe(0);
  });

  it('fires the readiness callback once per arm, reports the link up', async () => {
    expect(b.isUp()).toBe(true);
    let calls = 0;
    b.onReadable(() => calls++);
    await sleep(30);
    expect(calls).toBe(0);
    transmit(a, [udp(1, 64), udp(2, 64)]);
    await sleep(50);
    expect(calls).toBe(1);
    transmit(a, [udp(3, 64)]);
    await sleep(50);
    expect(calls).toBe(1);
    expect((await receive(b, 3)).length).toBe(3);
  });

  it('counts a frame larger than the MTU as a failed send', async () => {
    expect(transmit(a, [udp(1, 1600), udp(2, 100)])).toBe(1);
    expect(a.txFailed).toBe(1);
    expect((await receive(b, 2, 200)).length).toBe(1);
  });
});
