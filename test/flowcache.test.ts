import { describe, expect, it } from 'vitest';
import { Batch } from '../src/packet/batch.js';
import { FlowCache, FragmentTable } from '../src/classifier/flowcache.js';

interface Flow {
  ipVer: number;
  proto: number;
  src: number[];
  dst: number[];
  sport: number;
  dport: number;
  ipId?: number;
}

function put(b: Batch, i: number, f: Flow): void {
  b.ipVer[i] = f.ipVer;
  b.proto[i] = f.proto;
  b.sport[i] = f.sport;
  b.dport[i] = f.dport;
  b.ipId[i] = f.ipId ?? 0;
  for (let k = 0; k < 4; k++) {
    b.src[i * 4 + k] = f.src[k] ?? 0;
    b.dst[i * 4 + k] = f.dst[k] ?? 0;
  }
}

const reverse = (f: Flow): Flow => ({ ...f, src: f.dst, dst: f.src, sport: f.dport, dport: f.sport });

/** Distinct flow number n (v4 and v6 alternate). */
function flow(n: number): Flow {
  return n % 2
    ? { ipVer: 4, proto: 6, src: [0x0a000000 + n], dst: [0x14000000 + (n >>> 3)], sport: 1024 + (n & 0x3fff), dport: 80 }
    : { ipVer: 6, proto: 17, src: [0x20010db8, 0, n, 1], dst: [0x20010db8, 0, n, 2], sport: 5000, dport: n & 0xffff };
}

describe('FlowCache', () => {
  it('rejects a capacity that is not a power of two', () => {
    expect(() => new FlowCache(1000)).toThrow(RangeError);
    expect(() => new FlowCache(4)).toThrow(RangeError);
    expect(new FlowCache(1024).capacity).toBe(1024);
  });

  it('insert then lookup finds the same entry; other flows miss', () => {
    const c = new FlowCache(1 << 10);
    const b = new Batch();
    const entries = new Set<number>();
    for (let n = 0; n < 200; n++) {
      put(b, n & 7, flow(n));
      expect(c.lookup(b, n & 7, 1, false)).toBe(-1);
      const e = c.insert(b, n & 7, 1, false);
      expect(e).toBeGreaterThanOrEqual(0);
      expect(e).toBeLessThan(1024);
      entries.add(e);
    }
    expect(entries.size).toBe(200);
    expect(c.size()).toBe(200);
    for (let n = 0; n < 200; n++) {
      put(b, 3, flow(n));
      const e = c.lookup(b, 3, 1, false);
      expect(e).toBeGreaterThanOrEqual(0);
      expect(c.insert(b, 3, 1, false)).toBe(e); // an existing key keeps its entry
    }
    expect(c.size()).toBe(200);
    // Every key field matters.
    const f = flow(11);
    for (const changed of [
      { ...f, proto: 17 },
      { ...f, ipVer: 6 },
      { ...f, sport: f.sport + 1 },
      { ...f, dport: 81 },
      { ...f, src: [f.src[0], 0, 0, 1] },
      { ...f, dst: [f.dst[0] + 1] },
      reverse(f),
    ]) {
      put(b, 0, changed);
      expect(c.lookup(b, 0, 1, false)).toBe(-1);
    }
  });

  it('canonical keys find both directions; non-canonical ones do not', () => {
    const c = new FlowCache(1 << 8);
    const b = new Batch();
    for (let n = 0; n < 40; n++) {
      const f = flow(n);
      put(b, 0, f);
      const e = c.insert(b, 0, 7, true);
      put(b, 1, reverse(f));
      expect(c.lookup(b, 1, 7, true)).toBe(e);
      expect(c.lookup(b, 1, 7, false)).toBe(-1);
    }
    // Same addresses, ports differ: the port decides the order, and both directions still meet.
    const same: Flow = { ipVer: 4, proto: 17, src: [0x0a000001], dst: [0x0a000001], sport: 9, dport: 3 };
    put(b, 2, same);
    const e = c.insert(b, 2, 7, true);
    put(b, 2, reverse(same));
    expect(c.lookup(b, 2, 7, true)).toBe(e);
  });

  it('scope separates otherwise equal keys', () => {
    const c = new FlowCache(1 << 8);
    const b = new Batch();
    put(b, 0, flow(5));
    const a = c.insert(b, 0, 1, false);
    expect(c.lookup(b, 0, 2, false)).toBe(-1);
    const d = c.insert(b, 0, 2, false);
    expect(d).not.toBe(a);
    expect(c.lookup(b, 0, 1, false)).toBe(a);
    expect(c.lookup(b, 0, 2, false)).toBe(d);
    expect(c.size()).toBe(2);
  });

  it('keeps working under 10x capacity of distinct flows, evicting least recently used', () => {
    const cap = 1 << 10;
    const c = new FlowCache(cap);
    const b = new Batch();
    const owner = new Int32Array(cap).fill(-1); // caller payload: which flow owns each entry
    const hot = flow(1_000_001);
    let clock = 0;
    for (let n = 0; n < 10 * cap; n++) {
      c.now = ++clock;
      put(b, 0, flow(n));
      const e = c.insert(b, 0, 0, false);
      owner[e] = n;
      expect(c.size()).toBeLessThanOrEqual(cap);
      // A flow used on every step is never the least recently used candidate: it must survive.
      put(b, 1, hot);
      const h = c.lookup(b, 1, 0, false);
      if (n === 0) expect(h).toBe(-1);
      owner[h >= 0 ? h : c.insert(b, 1, 0, false)] = -2;
    }
    put(b, 1, hot);
    expect(owner[c.lookup(b, 1, 0, false)]).toBe(-2);
    // Most of the most recent flows are still there, each at the entry recorded for it.
    let found = 0;
    for (let n = 10 * cap - cap / 2; n < 10 * cap; n++) {
      put(b, 0, flow(n));
      const e = c.lookup(b, 0, 0, false);
      if (e >= 0) {
        expect(owner[e]).toBe(n);
        found++;
      }
    }
    expect(found).toBeGreaterThan(cap / 4);
    // Old flows were evicted, and never answered with another flow's entry.
    let oldFound = 0;
    for (let n = 0; n < cap; n++) {
      put(b, 0, flow(n));
      const e = c.lookup(b, 0, 0, false);
      if (e >= 0) {
        expect(owner[e]).toBe(n);
        oldFound++;
      }
    }
    expect(oldFound).toBeLessThan(cap / 10);
    expect(c.size()).toBeGreaterThan(cap * 0.9); // two-choice buckets fill the table
  });

  it('clear empties the table; expire frees idle entries', () => {
    const c = new FlowCache(1 << 8);
    const b = new Batch();
    c.now = 100;
    for (let n = 0; n < 50; n++) {
      put(b, 0, flow(n));
      c.insert(b, 0, 0, false);
    }
    c.now = 200;
    for (let n = 0; n < 10; n++) {
      put(b, 0, flow(n));
      expect(c.lookup(b, 0, 0, false)).toBeGreaterThanOrEqual(0); // refreshes
    }
    c.now = 250;
    expect(c.expire(200)).toBe(0);
    expect(c.expire(100)).toBe(40); // idle 150 ms; the 10 refreshed ones idle 50 ms
    expect(c.expire(100)).toBe(0);
    expect(c.size()).toBe(10);
    put(b, 0, flow(30));
    expect(c.lookup(b, 0, 0, false)).toBe(-1);
    put(b, 0, flow(3));
    expect(c.lookup(b, 0, 0, false)).toBeGreaterThanOrEqual(0);
    c.clear();
    expect(c.size()).toBe(0);
    expect(c.lookup(b, 0, 0, false)).toBe(-1);
    expect(c.insert(b, 0, 0, false)).toBeGreaterThanOrEqual(0);
    expect(c.size()).toBe(1);
  });
});

describe('FragmentTable', () => {
  it('keys on addresses, protocol, IP id and scope, not on ports', () => {
    const t = new FragmentTable(1 << 6);
    const b = new Batch();
    const first: Flow = { ipVer: 4, proto: 17, src: [0x0a000001], dst: [0x0a000002], sport: 53, dport: 999, ipId: 0x1234 };
    put(b, 0, first);
    const e = t.insert(b, 0, 2);
    put(b, 1, { ...first, sport: 0, dport: 0 }); // a later fragment carries no ports
    expect(t.lookup(b, 1, 2)).toBe(e);
    for (const other of [{ ...first, ipId: 0x1235 }, { ...first, proto: 6 }, { ...first, dst: [0x0a000003] }]) {
      put(b, 1, other);
      expect(t.lookup(b, 1, 2)).toBe(-1);
    }
    put(b, 1, first);
    expect(t.lookup(b, 1, 3)).toBe(-1);
    // 32-bit IPv6 fragment ids are kept whole.
    const v6: Flow = { ipVer: 6, proto: 17, src: [1, 2, 3, 4], dst: [5, 6, 7, 8], sport: 0, dport: 0, ipId: 0xfedcba98 };
    put(b, 2, v6);
    const f = t.insert(b, 2, 0);
    put(b, 2, { ...v6, ipId: 0x7edcba98 });
    expect(t.lookup(b, 2, 0)).toBe(-1);
    put(b, 2, v6);
    expect(t.lookup(b, 2, 0)).toBe(f);
    expect(t.size()).toBe(2);
  });
});
