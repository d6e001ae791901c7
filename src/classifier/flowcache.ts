/*
 * Exact-match flow tables in front of the classifier (OVS's EMC / dfc, VPP's sticky tables).
 *
 * A table maps a fixed-width integer key to an entry index; the caller keeps its payload (path,
 * hop, chosen instances, original MACs, the table generation in `gen`) in its own typed arrays at
 * that index, so the cache itself never allocates after construction.
 *
 * Layout: `capacity` entries (a power of two) in buckets of WAYS consecutive entries. One 32-bit
 * hash of the key picks two candidate buckets (low bits, and the low bits xor a non-zero value
 * taken from the high bits, so the two always differ). Lookup compares the stored hash, then the
 * full key, in the 2 × WAYS candidates. Insert takes a free candidate, else evicts the candidate
 * least recently used (`now` is a coarse clock the engine sets once per batch). No chains, no
 * tombstones: an entry only ever lives in one of its two buckets.
 *
 * Two key shapes share that machinery (KeyedTable, held by composition so its hot methods only
 * ever see one class; a small base class adds the clock and housekeeping):
 *  - FlowCache: ipVer, proto, src[4], dst[4], sport, dport, scope. `canonical` orders the two
 *    (address, port) endpoints so both directions of a flow find the same entry (symmetric chains).
 *  - FragmentTable: ipVer, proto, src[4], dst[4], IP id, scope: lets non-first fragments, which
 *    carry no ports, follow the decision made for their first fragment.
 * `scope` is the caller's integer (logical in-port, path id...).
 */
import type { Batch } from '../dataplane/batch.js';

const WAYS = 4;
/** Key words: [tag | ipVer | proto << 8 | canonical << 16], src[4], dst[4], ports or IP id, scope. */
const KEY_WORDS = 11;
/** Set in word 0 of every stored key, so a zero word 0 means "empty". */
const TAG = 1 << 24;
const CANONICAL = 1 << 16;

function mixWord(h: number, w: number): number {
  const x = Math.imul(h ^ w, 0x9e3779b1);
  return x ^ (x >>> 15);
}

/** Generic exact-match table over KEY_WORDS-int keys; the key to look up is written into `key`. */
class KeyedTable {
  readonly capacity: number;
  readonly key = new Int32Array(KEY_WORDS);
  readonly keys: Int32Array;
  readonly hashes: Int32Array;
  readonly lastUsed: Float64Array;
  readonly gen: Uint32Array;
  now = 0;
  count = 0;
  private readonly bucketMask: number;
  private hash = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 2 * WAYS || (capacity & (capacity - 1)) !== 0) {
      throw new RangeError(`flow table capacity must be a power of two >= ${2 * WAYS}, got ${capacity}`);
    }
    this.capacity = capacity;
    this.keys = new Int32Array(capacity * KEY_WORDS);
    this.hashes = new Int32Array(capacity);
    this.lastUsed = new Float64Array(capacity);
    this.gen = new Uint32Array(capacity);
    this.bucketMask = capacity / WAYS - 1;
  }

  /**
   * Hash of the key: one multiply-xorshift round per word, then murmur3's finaliser. IPv4 keys
   * skip the address words that are always zero (words 2..4 and 6..8).
   */
  private hashKey(): number {
    const k = this.key;
    let h = 0x9747b28c;
    if ((k[0] & 0xff) === 4) {
      h = mixWord(h, k[0]);
      h = mixWord(h, k[1]);
      h = mixWord(h, k[5]);
      h = mixWord(h, k[9]);
      h = mixWord(h, k[10]);
    } else {
      for (let w = 0; w < KEY_WORDS; w++) h = mixWord(h, k[w]);
    }
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    return h ^ (h >>> 16);
  }

  private bucket1(h: number): number {
    return (h & this.bucketMask) * WAYS;
  }

  private bucket2(h: number): number {
    return ((h & this.bucketMask) ^ (((h >>> 16) & this.bucketMask) | 1)) * WAYS;
  }

  /** Entry in the WAYS entries from `first` holding `key` with hash h, or -1. */
  private findIn(first: number, h: number): number {
    const keys = this.keys;
    const k = this.key;
    for (let e = first; e < first + WAYS; e++) {
      if (this.hashes[e] !== h) continue;
      const o = e * KEY_WORDS;
      let w = 0;
      while (w < KEY_WORDS && keys[o + w] === k[w]) w++;
      if (w === KEY_WORDS) return e;
    }
    return -1;
  }

  /** Entry holding `key`, or -1. Leaves the hash for a following `place`. */
  find(): number {
    const h = this.hashKey();
    this.hash = h;
    let e = this.findIn(this.bucket1(h), h);
    if (e < 0) e = this.findIn(this.bucket2(h), h);
    if (e >= 0) this.lastUsed[e] = this.now;
    return e;
  }

  /** Entry for `key`: the existing one, else a free or least recently used candidate, overwritten. */
  place(): number {
    const found = this.find();
    if (found >= 0) return found;
    const h = this.hash;
    const b1 = this.bucket1(h);
    const b2 = this.bucket2(h);
    let victim = -1;
    let oldest = Infinity;
    for (let n = 0; n < 2 * WAYS; n++) {
      const e = n < WAYS ? b1 + n : b2 + n - WAYS;
      if (this.keys[e * KEY_WORDS] === 0) {
        victim = e;
        this.count++;
        break;
      }
      if (this.lastUsed[e] < oldest) {
        oldest = this.lastUsed[e];
        victim = e;
      }
    }
    this.keys.set(this.key, victim * KEY_WORDS);
    this.hashes[victim] = h;
    this.lastUsed[victim] = this.now;
    return victim;
  }

  clear(): void {
    this.keys.fill(0);
    this.hashes.fill(0);
    this.lastUsed.fill(0);
    this.gen.fill(0);
    this.count = 0;
  }

  /** Free entries idle for more than idleMs (by `now`); returns how many. */
  expire(idleMs: number): number {
    let freed = 0;
    for (let e = 0; e < this.capacity; e++) {
      if (this.keys[e * KEY_WORDS] !== 0 && this.now - this.lastUsed[e] > idleMs) {
        this.keys[e * KEY_WORDS] = 0;
        this.hashes[e] = 0;
        freed++;
      }
    }
    this.count -= freed;
    return freed;
  }
}

/** Key words 0..8 (tag/ipVer/proto, src, dst) from slot i, endpoints swapped when `swap`. */
function loadAddresses(k: Int32Array, b: Batch, i: number, swap: boolean, flags: number): void {
  const o = i << 2;
  const s = swap ? b.dst : b.src;
  const d = swap ? b.src : b.dst;
  k[0] = TAG | flags | b.ipVer[i] | (b.proto[i] << 8);
  k[1] = s[o];
  k[2] = s[o + 1];
  k[3] = s[o + 2];
  k[4] = s[o + 3];
  k[5] = d[o];
  k[6] = d[o + 1];
  k[7] = d[o + 2];
  k[8] = d[o + 3];
}

/** True when (src, sport) orders after (dst, dport), comparing addresses as unsigned words. */
function endpointsReversed(b: Batch, i: number): boolean {
  const o = i << 2;
  for (let w = 0; w < 4; w++) {
    const s = b.src[o + w];
    const d = b.dst[o + w];
    if (s !== d) return s > d;
  }
  return b.sport[i] > b.dport[i];
}

export const DEFAULT_FLOW_CAPACITY = 1 << 16;
export const DEFAULT_FRAGMENT_CAPACITY = 1 << 10;

/** What both key shapes share: the table, the caller's generation stamps, clock and housekeeping. */
abstract class ExactMatchTable {
  protected readonly t: KeyedTable;
  /** Per-entry generation stamp, written by the caller. */
  readonly gen: Uint32Array;

  constructor(capacityPow2: number) {
    this.t = new KeyedTable(capacityPow2);
    this.gen = this.t.gen;
  }

  /** Coarse clock (ms) used for LRU replacement and expiry; set once per batch. */
  get now(): number {
    return this.t.now;
  }
  set now(ms: number) {
    this.t.now = ms;
  }

  get capacity(): number {
    return this.t.capacity;
  }

  clear(): void {
    this.t.clear();
  }

  /** Number of occupied entries. */
  size(): number {
    return this.t.count;
  }

  /** Free entries not used for more than idleMs; returns how many. O(capacity): call rarely. */
  expire(idleMs: number): number {
    return this.t.expire(idleMs);
  }
}

/** Exact-match cache of flows (5-tuple + scope), optionally direction-free. */
export class FlowCache extends ExactMatchTable {
  constructor(capacityPow2: number = DEFAULT_FLOW_CAPACITY) {
    super(capacityPow2);
  }

  private load(b: Batch, i: number, scope: number, canonical: boolean): void {
    const k = this.t.key;
    const swap = canonical && endpointsReversed(b, i);
    loadAddresses(k, b, i, swap, canonical ? CANONICAL : 0);
    k[9] = swap ? (b.dport[i] << 16) | b.sport[i] : (b.sport[i] << 16) | b.dport[i];
    k[10] = scope;
  }

  /** Entry index of slot i's flow, or -1; refreshes its last-used time. */
  lookup(b: Batch, i: number, scope: number, canonical: boolean): number {
    this.load(b, i, scope, canonical);
    return this.t.find();
  }

  /** Entry index for slot i's flow (existing, free, or evicted: the caller overwrites its payload). */
  insert(b: Batch, i: number, scope: number, canonical: boolean): number {
    this.load(b, i, scope, canonical);
    return this.t.place();
  }
}

/** Exact-match table of fragmented datagrams (addresses, proto, IP id + scope). */
export class FragmentTable extends ExactMatchTable {
  constructor(capacityPow2: number = DEFAULT_FRAGMENT_CAPACITY) {
    super(capacityPow2);
  }

  private load(b: Batch, i: number, scope: number): void {
    const k = this.t.key;
    loadAddresses(k, b, i, false, 0);
    k[9] = b.ipId[i];
    k[10] = scope;
  }

  /** Entry index of slot i's datagram, or -1; refreshes its last-used time. */
  lookup(b: Batch, i: number, scope: number): number {
    this.load(b, i, scope);
    return this.t.find();
  }

  /** Entry index for slot i's datagram (existing, free, or evicted). */
  insert(b: Batch, i: number, scope: number): number {
    this.load(b, i, scope);
    return this.t.place();
  }
}
