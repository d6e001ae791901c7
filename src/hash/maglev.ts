/*
 * Weighted Maglev lookup tables (Eisenbud et al., NSDI'16; VPP's lb plugin): the instance choice for
 * a port pair group. The data path picks `table[hash & (size-1)]`, one typed-array load per packet.
 *
 * Build: every instance with weight > 0 has a permutation of the table slots, `offset + j*skip`
 * (mod size), from two hashes of its key (the port pair id). Instances take turns claiming the next
 * free slot of their own permutation until the table is full. Weighting is by credit: each round an
 * instance earns its weight and claims a slot whenever its credit reaches the largest weight, so it
 * ends up with size * weight/Σweight slots (±1). Weight 0 instances take no turn (drain): they never
 * appear, exactly as if removed.
 *
 * Why this shape:
 *  - Power-of-two sizes make the lookup a mask instead of a modulus (VPP's lb does the same). The
 *    permutation stays a full cycle because the skip is forced odd (coprime with 2^k).
 *  - Keys, not positions, drive everything, and turns go in key order: the same set of instances
 *    gives the same table whatever the order of the list, across rebuilds and processes.
 *  - Minimal disruption: removing an instance frees only its slots plus a few collateral moves;
 *    adding one takes about its weight share. A sticky flow table in front (flows keep their
 *    instance while it lives) covers the collateral moves.
 * The table holds indices into the `instances` list given to buildMaglev, -1 when nothing is usable.
 */
import { fmix32, round32 } from './flowhash.js';

export interface MaglevInstance {
  key: string;
  weight: number;
}

export const MAGLEV_DEFAULT_SIZE = 4096;

/** Table size for n instances: a power of two, at least 4096 and at least 100 slots per instance. */
export function maglevSize(n: number): number {
  let size = MAGLEV_DEFAULT_SIZE;
  while (size < 100 * n) size *= 2;
  return size;
}

const OFFSET_SEED = 0x6d61676c;
const SKIP_SEED = 0x65762131;

function hashKey(key: string, seed: number): number {
  let h = seed;
  for (let i = 0; i < key.length; i++) h = round32(h, key.charCodeAt(i));
  return fmix32(h ^ key.length);
}

/**
 * Build the lookup table. `size` must be a power of two; keys must be unique; weights finite and
 * >= 0. Throws RangeError otherwise (control-path validation, never on the data path).
 */
export function buildMaglev(instances: readonly MaglevInstance[], size = MAGLEV_DEFAULT_SIZE): Int32Array {
  if (!Number.isInteger(size) || size < 1 || (size & (size - 1)) !== 0 || size > 1 << 30) {
    throw new RangeError(`maglev table size must be a power of two, got ${size}`);
  }
  const seen = new Set<string>();
  for (const { key, weight } of instances) {
    if (seen.has(key)) throw new RangeError(`maglev: duplicate instance key '${key}'`);
    seen.add(key);
    if (!Number.isFinite(weight) || weight < 0) {
      throw new RangeError(`maglev: instance '${key}' weight must be a finite number >= 0, got ${weight}`);
    }
  }

  const table = new Int32Array(size).fill(-1);
  const order = instances
    .map((_, i) => i)
    .filter((i) => instances[i].weight > 0)
    .sort((x, y) => (instances[x].key < instances[y].key ? -1 : instances[x].key > instances[y].key ? 1 : 0));
  const n = order.length;
  if (n === 0) return table;

  const mask = size - 1;
  const pos = new Int32Array(n);
  const skip = new Int32Array(n);
  const weight = new Float64Array(n);
  const credit = new Float64Array(n);
  let maxWeight = 0;
  for (let r = 0; r < n; r++) {
    const { key, weight: w } = instances[order[r]];
    pos[r] = hashKey(key, OFFSET_SEED) & mask;
    skip[r] = (hashKey(key, SKIP_SEED) & mask) | 1;
    weight[r] = w;
    if (w > maxWeight) maxWeight = w;
  }

  // Each round the heaviest instances claim one slot and the others catch up through their credit,
  // so the loop ends after about size/Σ(weight/maxWeight) rounds.
  let filled = 0;
  for (;;) {
    for (let r = 0; r < n; r++) {
      credit[r] += weight[r];
      if (credit[r] < maxWeight) continue;
      credit[r] -= maxWeight;
      let slot = pos[r];
      while (table[slot] >= 0) slot = (slot + skip[r]) & mask;
      table[slot] = order[r];
      pos[r] = (slot + skip[r]) & mask;
      if (++filled === size) return table;
    }
  }
}
