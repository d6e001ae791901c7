// Time inside each SF (sf-latency.ts), on an Engine over in-memory ports with a hand-driven clock:
// a test "SF" that routes (MACs rewritten, TTL decremented) sends each frame back after a delay
// of its own; the engine's histogram of that instance holds exactly those delays.
import { describe, expect, it } from 'vitest';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import { Engine } from '../src/dataplane/engine.js';
import { buildFrame, macBytes } from '../src/dataplane/frames.js';
import { QueuePort } from '../src/dataplane/io/queue.js';
import { bucketOf, bucketUpperUs, HIST_BUCKETS, HIST_LOST, HIST_STRIDE, HIST_SUM, quantileUs, SAMPLE_TIMEOUT_MS } from '../src/dataplane/sf-latency.js';
import { CLIENT_MAC, SERVER_MAC, sfMac, twoHop } from './support/sfc-state.js';

/** What a routing SF does to a frame: its egress MAC as source, the server's as destination, TTL - 1 (checksum fixed). */
function routed(frame: Uint8Array, egressMac: string): Uint8Array {
  const f = frame.slice();
  f.set(macBytes(SERVER_MAC), 0);
  f.set(macBytes(egressMac), 6);
  f[14 + 8]--;
  f[14 + 10] = f[14 + 11] = 0;
  let sum = 0;
  for (let i = 14; i < 34; i += 2) sum += (f[i] << 8) | f[i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  f[24] = (~sum >> 8) & 0xff;
  f[25] = ~sum & 0xff;
  return f;
}

function setup(every: number) {
  const tables = compileTables(twoHop({ hops: 1, perHop: 2 }).state);
  const ports = new Map<string, QueuePort>();
  const sent = new Map<string, Uint8Array[]>();
  let now = 1000;
  const engine = new Engine(
    (name) => {
      const q = new QueuePort(name, (frame) => (sent.get(name) ?? sent.set(name, []).get(name)!).push(frame));
      ports.set(name, q);
      return q;
    },
    undefined,
    { sfLatencyEvery: every, sfLatencyClock: () => now },
  );
  engine.publish(tables);
  engine.breathe();
  const hist = (k: number) => engine.stats().sfLatency.subarray(k * HIST_STRIDE, (k + 1) * HIST_STRIDE);
  const send = (n: number, ipId = 1) =>
    ports.get('cli0')!.enqueue(
      buildFrame({ ethSrc: CLIENT_MAC, ethDst: SERVER_MAC, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2', id: ipId }, l4: { proto: 'udp', sport: 20000 + n, dport: 5001 }, payload: new Uint8Array(32).fill(n) }),
    );
  /** Each instance sends back what it was sent, `delayMs(k)` after now (in one batch per instance). */
  const bounce = (delayMs: (k: number) => number) => {
    while (engine.breathe() > 0);
    const base = now;
    const order = Array.from({ length: tables.instanceCount }, (_, k) => k).sort((a, b) => delayMs(a) - delayMs(b));
    for (const k of order) {
      const got = sent.get(tables.interfaces[tables.instIfIn[k]]) ?? [];
      sent.delete(tables.interfaces[tables.instIfIn[k]]);
      if (got.length === 0) continue;
      now = base + delayMs(k);
      const out = tables.interfaces[tables.instIfOut[k]];
      for (const f of got) ports.get(out)!.enqueue(routed(f, sfMac(1, k + 1, 'out')));
      while (engine.breathe() > 0);
    }
  };
  return { tables, engine, hist, send, bounce, advance: (ms: number) => (now += ms), sent };
}

describe('SF latency sampler', () => {
  it('buckets: 8 per octave, quantiles interpolate within one', () => {
    expect(bucketOf(0)).toBe(0);
    expect(bucketOf(7.9)).toBe(0);
    expect(bucketOf(8)).toBe(1);
    for (const us of [10, 100, 2000, 123456]) {
      const k = bucketOf(us);
      expect(bucketUpperUs(k - 1)).toBeLessThanOrEqual(us);
      expect(bucketUpperUs(k)).toBeGreaterThan(us);
      expect(bucketUpperUs(k) / bucketUpperUs(k - 1)).toBeCloseTo(2 ** (1 / 8), 6);
    }
    expect(bucketOf(5e9)).toBe(HIST_BUCKETS - 1);
    const c = new Float64Array(HIST_BUCKETS);
    c[bucketOf(2000)] = 10;
    const p50 = quantileUs(c, 0.5)!;
    expect(p50).toBeGreaterThan(bucketUpperUs(bucketOf(2000) - 1));
    expect(p50).toBeLessThan(bucketUpperUs(bucketOf(2000)));
    expect(quantileUs(new Float64Array(HIST_BUCKETS), 0.5)).toBeNull();
  });

  it('times each instance separately, matching frames a routing SF changed', () => {
    const { tables, hist, send, bounce } = setup(1);
    for (let round = 0; round < 20; round++) {
      for (let n = 0; n < 8; n++) send(n, round * 8 + n);
      bounce((k) => (k === 0 ? 2 : 0.05));
    }
    expect(tables.instanceCount).toBe(2);
    const slow = hist(0);
    const fast = hist(1);
    const count = (h: Float64Array) => h.subarray(0, HIST_BUCKETS).reduce((a, b) => a + b, 0);
    // One sample out per instance at a time: one per round each.
    expect(count(slow)).toBe(20);
    expect(count(fast)).toBe(20);
    expect(slow[bucketOf(2000)]).toBe(20);
    expect(fast[bucketOf(50)]).toBe(20);
    expect(slow[HIST_SUM]).toBeCloseTo(20 * 2000, 3);
    expect(slow[HIST_LOST] + fast[HIST_LOST]).toBe(0);
  });

  it('samples one frame in N and none of a frame that comes back changed (counted lost after the timeout)', () => {
    const { tables, hist, send, bounce, advance, sent, engine } = setup(64);
    const count = (k: number) => hist(k).subarray(0, HIST_BUCKETS).reduce((a, b) => a + b, 0);
    // 63 frames: no sampling point reached (what the SFs were sent is forgotten).
    for (let n = 0; n < 63; n++) send(n % 8, n);
    while (engine.breathe() > 0);
    expect(engine.latency.out).toBe(0);
    sent.clear();
    // The 64th is sampled; it comes back with another IP id: no match, lost once its instance is sampled again after the timeout.
    send(3, 999);
    while (engine.breathe() > 0);
    expect(engine.latency.out).toBe(1);
    const k = tables.instIfIn.findIndex((f) => (sent.get(tables.interfaces[f]) ?? []).length === 1);
    expect(k).toBeGreaterThanOrEqual(0);
    const f = sent.get(tables.interfaces[tables.instIfIn[k]])![0];
    f[14 + 5] ^= 1; // IP id changed
    f[14 + 11] ^= 1; // (checksum kept consistent enough for parse: it does not verify)
    bounce(() => 1);
    expect(count(k)).toBe(0);
    expect(engine.latency.out).toBe(1);
    advance(SAMPLE_TIMEOUT_MS + 1);
    for (let n = 0; n < 64; n++) send(3, 2000 + n);
    while (engine.breathe() > 0);
    expect(hist(k)[HIST_LOST]).toBe(1);
  });
});
