// Weighted Maglev properties (fast-check, fixed seeds): weight proportionality of real flows,
// minimal disruption on removal and addition, order independence, drain, and flow-hash symmetry
// (both directions of a flow pick the same instance).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Batch, BATCH } from '../src/packet/batch.js';
import { createXxhFlowHasher, DEFAULT_LB_MASK, hashFlow, LB_ALL_BITS } from '../src/hash/flowhash.js';
import { buildMaglev, maglevSize, type MaglevInstance } from '../src/hash/maglev.js';
import { mulberry32 } from '../src/dataplane/frames.js';

const SEED = 20240611;

/** 2..8 instances with unique port-pair-like keys and weights 1..10. */
const instancesArb = fc.uniqueArray(fc.record({ key: fc.uuid(), weight: fc.integer({ min: 1, max: 10 }) }), {
  selector: (r) => r.key,
  minLength: 2,
  maxLength: 8,
});

/** Instance key per table slot, so tables over differently ordered lists can be compared. */
function keysOf(table: Int32Array, instances: readonly MaglevInstance[]): string[] {
  return Array.from(table, (i) => (i < 0 ? '' : instances[i].key));
}

/** How many random IPv4/IPv6 TCP/UDP flows land on each instance, hashed by hashFlow. */
function flowCounts(table: Int32Array, n: number, flows: number, seed: number): Float64Array {
  const random = mulberry32(seed);
  const next = () => (random() * 0x100000000) >>> 0;
  const b = new Batch();
  const frame = new Uint8Array(64);
  for (let i = 0; i < BATCH; i++) b.push(frame, 0);
  const counts = new Float64Array(n);
  const mask = table.length - 1;
  for (let done = 0; done < flows; done += BATCH) {
    for (let i = 0; i < BATCH; i++) {
      const words = next() & 3 ? 1 : 4;
      b.src.fill(0, i * 4, i * 4 + 4);
      b.dst.fill(0, i * 4, i * 4 + 4);
      for (let w = 0; w < words; w++) {
        b.src[i * 4 + w] = next();
        b.dst[i * 4 + w] = next();
      }
      b.proto[i] = next() & 1 ? 6 : 17;
      b.sport[i] = next() & 0xffff;
      b.dport[i] = next() & 0xffff;
    }
    const m = Math.min(BATCH, flows - done);
    for (let i = 0; i < m; i++) counts[table[hashFlow(b, i, DEFAULT_LB_MASK, false, b.data, b.start[i]) & mask]]++;
  }
  return counts;
}

describe('maglevSize', () => {
  it('is a power of two, at least 4096 and at least 100 slots per instance', () => {
    for (const n of [0, 1, 8, 40, 41, 100, 1000]) {
      const s = maglevSize(n);
      expect(s & (s - 1)).toBe(0);
      expect(s).toBeGreaterThanOrEqual(Math.max(4096, 100 * n));
      expect(s / 2).toBeLessThan(Math.max(4096, 100 * n)); // the smallest such size
    }
  });
});

describe('buildMaglev', () => {
  it('fills every slot with a usable instance, -1 everywhere when none is usable', () => {
    const t = buildMaglev([{ key: 'a', weight: 1 }, { key: 'b', weight: 3 }], 1024);
    expect(t.length).toBe(1024);
    expect(t.every((i) => i === 0 || i === 1)).toBe(true);
    expect(buildMaglev([], 64).every((i) => i === -1)).toBe(true);
    expect(buildMaglev([{ key: 'a', weight: 0 }], 64).every((i) => i === -1)).toBe(true);
  });

  it('rejects bad sizes, duplicate keys and bad weights', () => {
    expect(() => buildMaglev([{ key: 'a', weight: 1 }], 1000)).toThrow(/power of two/);
    expect(() => buildMaglev([{ key: 'a', weight: 1 }, { key: 'a', weight: 2 }], 64)).toThrow(/duplicate/);
    expect(() => buildMaglev([{ key: 'a', weight: -1 }], 64)).toThrow(/weight/);
    expect(() => buildMaglev([{ key: 'a', weight: NaN }], 64)).toThrow(/weight/);
  });

  it('gives 100k real flows to each instance within ±5% (relative) of its weight share', () => {
    let worst = 0;
    fc.assert(
      fc.property(instancesArb, fc.integer(), (instances, flowSeed) => {
        const total = instances.reduce((s, x) => s + x.weight, 0);
        const table = buildMaglev(instances, maglevSize(instances.length));
        const flows = 100_000;
        const counts = flowCounts(table, instances.length, flows, flowSeed);
        instances.forEach((inst, k) => {
          const share = inst.weight / total;
          const err = Math.abs(counts[k] / flows - share) / share;
          worst = Math.max(worst, err);
          expect(err, `${inst.key} weight ${inst.weight}/${total}`).toBeLessThanOrEqual(0.05);
        });
      }),
      { seed: SEED, numRuns: 30 },
    );
    console.log(`maglev weight proportionality: worst relative error ${(worst * 100).toFixed(2)}%`);
  });

  it('removing an instance moves its slots and only a small fraction of the others', () => {
    let worst = 0;
    fc.assert(
      fc.property(instancesArb, fc.nat(), (instances, pick) => {
        const gone = pick % instances.length;
        const size = maglevSize(instances.length);
        const before = buildMaglev(instances, size);
        const rest = instances.filter((_, k) => k !== gone);
        const after = keysOf(buildMaglev(rest, size), rest);
        let collateral = 0;
        let stillGone = 0;
        for (let s = 0; s < size; s++) {
          if (before[s] === gone) stillGone += after[s] === instances[gone].key ? 1 : 0;
          else if (after[s] !== instances[before[s]].key) collateral++;
        }
        expect(stillGone).toBe(0);
        worst = Math.max(worst, collateral / size);
        expect(collateral / size).toBeLessThanOrEqual(0.06);
      }),
      { seed: SEED, numRuns: 200 },
    );
    console.log(`maglev removal: worst collateral fraction ${(worst * 100).toFixed(2)}% of slots`);
  });

  it('adding an instance moves at most its weight share plus a small epsilon', () => {
    let worst = 0;
    fc.assert(
      fc.property(instancesArb, fc.integer({ min: 1, max: 10 }), (instances, weight) => {
        const total = instances.reduce((s, x) => s + x.weight, 0);
        const size = maglevSize(instances.length + 1);
        const before = keysOf(buildMaglev(instances, size), instances);
        const grown = [...instances, { key: 'new-instance', weight }];
        const after = keysOf(buildMaglev(grown, size), grown);
        let moved = 0;
        for (let s = 0; s < size; s++) if (after[s] !== before[s]) moved++;
        const excess = moved / size - weight / (total + weight);
        worst = Math.max(worst, excess);
        expect(excess).toBeLessThanOrEqual(0.08);
      }),
      { seed: SEED, numRuns: 200 },
    );
    console.log(`maglev addition: worst moved fraction beyond the new weight share ${(worst * 100).toFixed(2)}%`);
  });

  it('is deterministic and independent of the order of the instance list', () => {
    fc.assert(
      fc.property(
        instancesArb.chain((inst) =>
          fc.tuple(fc.constant(inst), fc.shuffledSubarray(inst, { minLength: inst.length, maxLength: inst.length })),
        ),
        ([instances, shuffled]) => {
          const size = maglevSize(instances.length);
          const a = keysOf(buildMaglev(instances, size), instances);
          expect(keysOf(buildMaglev(shuffled, size), shuffled)).toEqual(a);
          expect(keysOf(buildMaglev(instances, size), instances)).toEqual(a);
        },
      ),
      { seed: SEED, numRuns: 50 },
    );
  });

  it('never chooses a weight-0 instance, and draining equals removing', () => {
    fc.assert(
      fc.property(instancesArb, fc.nat(), (instances, pick) => {
        const drained = pick % instances.length;
        const withZero = instances.map((x, k) => (k === drained ? { ...x, weight: 0 } : x));
        const size = maglevSize(instances.length);
        const table = buildMaglev(withZero, size);
        expect(table.includes(drained)).toBe(false);
        const rest = instances.filter((_, k) => k !== drained);
        expect(keysOf(table, withZero)).toEqual(keysOf(buildMaglev(rest, size), rest));
      }),
      { seed: SEED, numRuns: 100 },
    );
  });
});

/** A random flow and its reverse direction in two slots of one batch. */
const flowArb = fc.record({
  ethA: fc.uint8Array({ minLength: 6, maxLength: 6 }),
  ethB: fc.uint8Array({ minLength: 6, maxLength: 6 }),
  ipA: fc.array(fc.nat({ max: 0xffffffff }), { minLength: 4, maxLength: 4 }),
  ipB: fc.array(fc.nat({ max: 0xffffffff }), { minLength: 4, maxLength: 4 }),
  v6: fc.boolean(),
  proto: fc.constantFrom(1, 6, 17, 58, 132),
  portA: fc.nat({ max: 0xffff }),
  portB: fc.nat({ max: 0xffff }),
});
type Flow = typeof flowArb extends fc.Arbitrary<infer T> ? T : never;

function pushDirection(b: Batch, f: Flow, reverse: boolean): number {
  const [srcMac, dstMac, srcIp, dstIp, sport, dport] = reverse
    ? [f.ethB, f.ethA, f.ipB, f.ipA, f.portB, f.portA]
    : [f.ethA, f.ethB, f.ipA, f.ipB, f.portA, f.portB];
  const frame = new Uint8Array(64);
  frame.set(dstMac, 0);
  frame.set(srcMac, 6);
  const i = b.push(frame, 0);
  const words = f.v6 ? 4 : 1;
  for (let w = 0; w < 4; w++) {
    b.src[i * 4 + w] = w < words ? srcIp[w] : 0;
    b.dst[i * 4 + w] = w < words ? dstIp[w] : 0;
  }
  b.ipVer[i] = f.v6 ? 6 : 4;
  b.proto[i] = f.proto;
  b.sport[i] = sport;
  b.dport[i] = dport;
  return i;
}

describe('symmetric flow hashing', () => {
  it('hash(forward, swap=false) === hash(reverse, swap=true) for every mask, both hashers', async () => {
    const xxh = await createXxhFlowHasher();
    const table = buildMaglev([{ key: 'a', weight: 1 }, { key: 'b', weight: 2 }, { key: 'c', weight: 3 }], 4096);
    fc.assert(
      fc.property(flowArb, (flow) => {
        const b = new Batch();
        const fwd = pushDirection(b, flow, false);
        const rev = pushDirection(b, flow, true);
        for (const hash of [hashFlow, xxh]) {
          for (let mask = 1; mask <= LB_ALL_BITS; mask++) {
            const h = hash(b, fwd, mask, false, b.data, b.start[fwd]);
            if (hash(b, rev, mask, true, b.data, b.start[rev]) !== h) {
              throw new Error(`mask ${mask.toString(2)}: reverse hash differs`);
            }
          }
          const pick = table[hash(b, fwd, DEFAULT_LB_MASK, false, b.data, b.start[fwd]) & 4095];
          expect(table[hash(b, rev, DEFAULT_LB_MASK, true, b.data, b.start[rev]) & 4095]).toBe(pick);
        }
      }),
      { seed: SEED, numRuns: 60 },
    );
  });
});
