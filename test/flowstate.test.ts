/*
 * The flow table as the data path uses it: hashed lookups and inserts (hashSlot / findHashed / insertHashed),
 * the caller's payload stored in the table's own records, and the engine's stage clock.
 */
import { describe, expect, it } from 'vitest';
import { buildFrame } from '../src/dataplane/frames.js';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import { Batch } from '../src/packet/batch.js';
import { endpointsReversed, FLOW_COLD, FLOW_HOT, FLOW_RECORD_WORDS, FlowCache } from '../src/classifier/flowcache.js';
import { Engine, STAGES } from '../src/dataplane/engine.js';
import { QueuePort } from '../src/dataplane/io/queue.js';
import { CLIENT_MAC, SERVER_MAC, twoHop } from './support/sfc-state.js';

/** Slot i: flow number n (IPv4 when odd, IPv6 when even), its endpoints reversed when `rev`. */
function put(b: Batch, i: number, n: number, rev = false): void {
  const v4 = n % 2 === 1;
  const a = v4 ? [0x0a000000 + n, 0, 0, 0] : [0x20010db8, 0, n, 1];
  const z = v4 ? [0xc0a80000 + (n >>> 4), 0, 0, 0] : [0x20010db8, 0, n, 2];
  const [src, dst] = rev ? [z, a] : [a, z];
  b.ipVer[i] = v4 ? 4 : 6;
  b.proto[i] = v4 ? 17 : 6;
  b.sport[i] = rev ? 443 : 1024 + (n & 0x3fff);
  b.dport[i] = rev ? 1024 + (n & 0x3fff) : 443;
  for (let k = 0; k < 4; k++) {
    b.src[i * 4 + k] = src[k];
    b.dst[i * 4 + k] = dst[k];
  }
}

describe('FlowCache hashed API', () => {
  it('findHashed misses with the hash that insertHashed takes; both agree with lookup / insert', () => {
    const c = new FlowCache(1 << 10);
    const b = new Batch();
    const entries: number[] = [];
    for (let n = 0; n < 300; n++) {
      put(b, 0, n);
      const swap = endpointsReversed(b, 0);
      const h = c.hashSlot(b, 0, 3, true, swap);
      expect(c.findHashed(h, b, 0, 3, true, swap)).toBe(-1);
      const e = c.insertHashed(h, b, 0, 3, true, swap);
      entries.push(e);
      expect(c.lookup(b, 0, 3, true)).toBe(e);
      put(b, 1, n, true); // the other direction finds the same canonical entry
      expect(c.lookup(b, 1, 3, true)).toBe(e);
      expect(c.insert(b, 1, 3, true)).toBe(e);
    }
    expect(new Set(entries).size).toBe(300);
    expect(c.size()).toBe(300);
    // Another scope, or the non-canonical form of a reversed key, is another key.
    put(b, 0, 7, true);
    expect(c.lookup(b, 0, 4, true)).toBe(-1);
    expect(c.lookup(b, 0, 3, false)).toBe(-1);
  });

  it('keeps the caller payload per entry, beside keys it never overwrites', () => {
    const c = new FlowCache(1 << 8);
    const b = new Batch();
    const rec = c.records;
    expect(rec.length).toBe(c.capacity * FLOW_RECORD_WORDS);
    const mark = (e: number, n: number) => {
      for (let w = 0; w < 11; w++) rec[e * FLOW_RECORD_WORDS + FLOW_HOT + w] = -1 - n;
      for (let w = 0; w < 10; w++) rec[e * FLOW_RECORD_WORDS + FLOW_COLD + w] = ~n;
    };
    const at: number[] = [];
    for (let n = 0; n < 120; n++) {
      put(b, 0, n);
      const e = c.insert(b, 0, 0, true);
      mark(e, n);
      at.push(e);
    }
    for (let n = 0; n < 120; n++) {
      put(b, 2, n);
      const e = c.lookup(b, 2, 0, true);
      expect(e).toBe(at[n]);
      const base = e * FLOW_RECORD_WORDS;
      expect(Array.from(rec.subarray(base + FLOW_HOT, base + FLOW_HOT + 11))).toEqual(new Array(11).fill(-1 - n));
      expect(Array.from(rec.subarray(base + FLOW_COLD, base + FLOW_COLD + 10))).toEqual(new Array(10).fill(~n));
    }
  });

  it('tells apart IPv6 keys that differ only in an upper address word', () => {
    const c = new FlowCache(1 << 8);
    const b = new Batch();
    put(b, 0, 10);
    const e = c.insert(b, 0, 0, false);
    for (const w of [1, 2, 3]) {
      put(b, 1, 10);
      b.src[4 + w] ^= 0x100;
      expect(c.lookup(b, 1, 0, false)).toBe(-1);
      put(b, 1, 10);
      b.dst[4 + w] ^= 0x100;
      expect(c.lookup(b, 1, 0, false)).toBe(-1);
    }
    put(b, 1, 10);
    expect(c.lookup(b, 1, 0, false)).toBe(e);
  });
});

describe('Engine stage clock', () => {
  it('adds the time of every stage while attached, nothing once detached', () => {
    const ports = new Map<string, QueuePort>();
    const engine = new Engine((name) => {
      const q = new QueuePort(name, () => {});
      ports.set(name, q);
      return q;
    });
    engine.publish(compileTables(twoHop().state));
    engine.breathe();
    const spent = new Float64Array(STAGES.length);
    engine.setStageClock(spent);
    const frame = buildFrame({ ethSrc: CLIENT_MAC, ethDst: SERVER_MAC, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' }, l4: { proto: 'tcp', sport: 5, dport: 80 } });
    for (let k = 0; k < 200; k++) ports.get('cli0')!.enqueue(frame);
    while (engine.breathe() > 0);
    expect(spent.every((ms) => ms >= 0)).toBe(true);
    expect(spent[STAGES.indexOf('steer')]).toBeGreaterThan(0);
    expect(spent[STAGES.indexOf('tx')]).toBeGreaterThan(0);
    const before = spent.slice();
    engine.setStageClock(null);
    ports.get('cli0')!.enqueue(frame);
    while (engine.breathe() > 0);
    expect(spent).toEqual(before);
    engine.close();
  });
});
