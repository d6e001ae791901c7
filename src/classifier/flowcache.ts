/*
 * Exact-match flow tables in front of the classifier (OVS's EMC / dfc, VPP's sticky tables).
 *
 * A table maps a fixed-width integer key, read straight from a parsed batch slot, to an entry
 * index. It never allocates after construction.
 *
 * Buckets: `capacity` entries (a power of two) in buckets of WAYS consecutive entries. One 32-bit
 * hash of the key picks two candidate buckets (low bits, and the low bits xor a non-zero value
 * taken from the high bits, so the two always differ). Lookup compares the stored hash, then the
 * full key, in the 2 × WAYS candidates. Insert takes a free candidate, else evicts the candidate
 * least recently used (`now` is a coarse clock the engine sets once per batch). No chains, no
 * tombstones: an entry only ever lives in one of its two buckets.
 *
 * Memory is laid out for the number of cache lines a packet touches:
 *  - `meta`: one 64-byte line per bucket holding its WAYS hashes (int32, bytes 0-15) and last-used
 *    times (float64, bytes 16-47, -Infinity = free). A lookup reads one line per bucket it probes
 *    and refreshes the time in that same line; choosing a victim on insert reads no record.
 *  - `records`: one record of FLOW_RECORD_WORDS int32 words (two cache lines) per entry, holding
 *    the key and the caller's per-entry payload, so that a hit needs no second table:
 *        line 1: words 0-4 key: [tag | ipVer | proto << 8 | flags], src[0], dst[0], ports or IP
 *                id, scope; words FLOW_HOT.. (11 words) caller payload
 *        line 2: words 16-21 key: src[1..3], dst[1..3]; words FLOW_COLD.. (10 words) caller payload
 *    Word 0 carries UPPER when an address word past the first is non-zero (IPv6); without it those
 *    words are zero, so the lookup of an IPv4 flow compares line 1 only. Word 0 = 0: free entry.
 *    Callers put the fields every packet needs in the hot words and the rest in the cold ones.
 * The key is never copied out of the batch for a lookup: the hash and the comparison read the
 * slot's fields directly. The data path hashes a whole batch first (hashSlot), warms the lines
 * those lookups will read (warm), then looks up (findHashed) and inserts after a miss
 * (insertHashed) with the hash it has.
 *
 * Two key shapes share that machinery (KeyedTable, held by composition so its hot methods only
 * ever see one class; a small base class adds the clock and housekeeping):
 *  - FlowCache: ipVer, proto, src[4], dst[4], sport, dport, scope. `canonical` orders the two
 *    (address, port) endpoints so both directions of a flow find the same entry (symmetric chains).
 *  - FragmentTable: ipVer, proto, src[4], dst[4], IP id, scope: lets non-first fragments, which
 *    carry no ports, follow the decision made for their first fragment.
 * `scope` is the caller's integer (VLAN, logical in-port...).
 */
import type { Batch } from '../packet/batch.js';

const WAY_BITS = 2;
const WAYS = 1 << WAY_BITS;
/** Int32 words per entry record (two cache lines, see the layout above). */
export const FLOW_RECORD_WORDS = 32;
/** First of the 11 payload words on a record's first line (the key's line). */
export const FLOW_HOT = 5;
/** First of the 10 payload words on a record's second line. */
export const FLOW_COLD = 22;
/** Record words of src[1..3] and dst[1..3]. */
const K_UPPER = 16;
/** Set in word 0 of every stored key, so a zero word 0 means "empty". */
const TAG = 1 << 24;
const CANONICAL = 1 << 16;
/** Some address word past the first is non-zero (stored at K_UPPER..). */
const UPPER = 1 << 17;
/** meta: int32 words per bucket (one cache line); the times are float64 slots TIME.. of it. */
const META_WORDS = 16;
const TIME = 2;
const FREE = -Infinity;

const MIX = 0x9e3779b1;

/**
 * Hash of a key: xor each key word in and multiply (FNV-1a over words; the upper address words only
 * under UPPER), then murmur3's finaliser, which carries the high bits the multiplications produced
 * down into the low bits that pick the buckets. Kept short in bytecode so that V8 inlines it into
 * the lookup loop.
 */
function hashKey(w0: number, s: Uint32Array, d: Uint32Array, o: number, w3: number, scope: number): number {
  let h = Math.imul(0x9747b28c ^ w0, MIX);
  h = Math.imul(h ^ s[o], MIX);
  h = Math.imul(h ^ d[o], MIX);
  if ((w0 & UPPER) !== 0) {
    for (let k = 1; k < 4; k++) h = Math.imul(h ^ s[o + k] ^ Math.imul(d[o + k], MIX), MIX);
  }
  h = Math.imul(h ^ w3, MIX);
  h = Math.imul(h ^ scope, MIX);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/**
 * True when (src, sport) orders after (dst, dport), comparing addresses as unsigned words: the
 * canonical key of slot i swaps its endpoints exactly then.
 */
export function endpointsReversed(b: Batch, i: number): boolean {
  const o = i << 2;
  const src = b.src;
  const dst = b.dst;
  for (let w = 0; w < 4; w++) {
    const s = src[o + w];
    const d = dst[o + w];
    if (s !== d) return s > d;
  }
  return b.sport[i] > b.dport[i];
}

/** Key word 0 of slot i: tag, IP version, protocol, the caller's flags and UPPER when it applies. */
function word0(b: Batch, i: number, flags: number): number {
  const o = i << 2;
  const s = b.src;
  const d = b.dst;
  const upper = s[o + 1] | s[o + 2] | s[o + 3] | d[o + 1] | d[o + 2] | d[o + 3];
  return TAG | flags | (upper !== 0 ? UPPER : 0) | b.ipVer[i] | (b.proto[i] << 8);
}

/**
 * Generic exact-match table. A key is given as (word 0, source and destination address arrays with
 * the slot's word offset, word 3, scope): the addresses are read in place from the batch.
 */
class KeyedTable {
  readonly capacity: number;
  readonly records: Int32Array;
  readonly meta: Int32Array;
  readonly times: Float64Array;
  now = 0;
  count = 0;
  private readonly bucketMask: number;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 2 * WAYS || (capacity & (capacity - 1)) !== 0) {
      throw new RangeError(`flow table capacity must be a power of two >= ${2 * WAYS}, got ${capacity}`);
    }
    this.capacity = capacity;
    this.records = new Int32Array(capacity * FLOW_RECORD_WORDS);
    const buckets = capacity / WAYS;
    const meta = new ArrayBuffer(buckets * META_WORDS * 4);
    this.meta = new Int32Array(meta);
    this.times = new Float64Array(meta).fill(FREE);
    this.bucketMask = buckets - 1;
  }

  private bucket2(b1: number, h: number): number {
    return b1 ^ (((h >>> 16) & this.bucketMask) | 1);
  }

  /** Whether record r holds src[1..3], dst[1..3] of the key (only consulted under UPPER). */
  private upperEqual(r: number, s: Uint32Array, d: Uint32Array, o: number): boolean {
    const k = this.records;
    return (
      k[r + K_UPPER] === (s[o + 1] | 0) &&
      k[r + K_UPPER + 1] === (s[o + 2] | 0) &&
      k[r + K_UPPER + 2] === (s[o + 3] | 0) &&
      k[r + K_UPPER + 3] === (d[o + 1] | 0) &&
      k[r + K_UPPER + 4] === (d[o + 2] | 0) &&
      k[r + K_UPPER + 5] === (d[o + 3] | 0)
    );
  }

  /** Whether entry e holds the key. */
  private matches(e: number, w0: number, s: Uint32Array, d: Uint32Array, o: number, w3: number, scope: number): boolean {
    const k = this.records;
    const r = e * FLOW_RECORD_WORDS;
    return (
      k[r] === w0 &&
      k[r + 1] === (s[o] | 0) &&
      k[r + 2] === (d[o] | 0) &&
      k[r + 3] === w3 &&
      k[r + 4] === scope &&
      ((w0 & UPPER) === 0 || this.upperEqual(r, s, d, o))
    );
  }

  /** Entry holding the key (hash h), or -1; refreshes its last-used time. */
  find(h: number, w0: number, s: Uint32Array, d: Uint32Array, o: number, w3: number, scope: number): number {
    const meta = this.meta;
    const b1 = h & this.bucketMask;
    let bucket = b1;
    for (let n = 0; n < 2 * WAYS; n++) {
      if (n === WAYS) bucket = this.bucket2(b1, h);
      const e = bucket * WAYS + (n & (WAYS - 1));
      if (meta[hashIndex(e)] !== h) continue;
      if (this.matches(e, w0, s, d, o, w3, scope)) {
        this.times[timeIndex(e)] = this.now;
        return e;
      }
    }
    return -1;
  }

  /**
   * Touch what a lookup of hash h will read: its first bucket's meta line and, when a way there
   * holds h, that entry's key line. Returns a value only so the loads are not optimised away.
   */
  warm(h: number): number {
    const base = (h & this.bucketMask) * META_WORDS;
    const meta = this.meta;
    let w = 0;
    while (w < WAYS - 1 && meta[base + w] !== h) w++;
    return this.records[((base / META_WORDS) * WAYS + w) * FLOW_RECORD_WORDS];
  }

  /** Entry for the key (hash h): the existing one, else a free or least recently used candidate, overwritten. */
  place(h: number, w0: number, s: Uint32Array, d: Uint32Array, o: number, w3: number, scope: number): number {
    const found = this.find(h, w0, s, d, o, w3, scope);
    if (found >= 0) return found;
    const times = this.times;
    const b1 = h & this.bucketMask;
    const b2 = this.bucket2(b1, h);
    let victim = -1;
    let oldest = Infinity;
    for (let n = 0; n < 2 * WAYS; n++) {
      const e = (n < WAYS ? b1 : b2) * WAYS + (n & (WAYS - 1));
      const t = times[timeIndex(e)];
      if (t < oldest) {
        oldest = t;
        victim = e;
        if (t === FREE) break;
      }
    }
    if (oldest === FREE) this.count++;
    this.meta[hashIndex(victim)] = h;
    times[timeIndex(victim)] = this.now;
    const k = this.records;
    const r = victim * FLOW_RECORD_WORDS;
    k[r] = w0;
    k[r + 1] = s[o];
    k[r + 2] = d[o];
    k[r + 3] = w3;
    k[r + 4] = scope;
    k[r + K_UPPER] = s[o + 1];
    k[r + K_UPPER + 1] = s[o + 2];
    k[r + K_UPPER + 2] = s[o + 3];
    k[r + K_UPPER + 3] = d[o + 1];
    k[r + K_UPPER + 4] = d[o + 2];
    k[r + K_UPPER + 5] = d[o + 3];
    return victim;
  }

  clear(): void {
    this.records.fill(0);
    this.meta.fill(0);
    this.times.fill(FREE);
    this.count = 0;
  }

  /** Free entries idle for more than idleMs (by `now`); returns how many. */
  expire(idleMs: number): number {
    let freed = 0;
    for (let e = 0; e < this.capacity; e++) {
      const t = this.times[timeIndex(e)];
      if (t !== FREE && this.now - t > idleMs) {
        this.meta[hashIndex(e)] = 0;
        this.times[timeIndex(e)] = FREE;
        this.records[e * FLOW_RECORD_WORDS] = 0;
        freed++;
      }
    }
    this.count -= freed;
    return freed;
  }
}

/** Index in `meta` of entry e's hash. */
function hashIndex(e: number): number {
  return (e >> WAY_BITS) * META_WORDS + (e & (WAYS - 1));
}

/** Index in `times` of entry e's last-used time. */
function timeIndex(e: number): number {
  return (e >> WAY_BITS) * (META_WORDS >> 1) + TIME + (e & (WAYS - 1));
}

export const DEFAULT_FLOW_CAPACITY = 1 << 16;
export const DEFAULT_FRAGMENT_CAPACITY = 1 << 10;

/** What both key shapes share: the table, clock and housekeeping. */
abstract class ExactMatchTable {
  protected readonly t: KeyedTable;

  constructor(capacityPow2: number) {
    this.t = new KeyedTable(capacityPow2);
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

  /** The entry records (FLOW_RECORD_WORDS per entry; the caller owns words FLOW_HOT.. and FLOW_COLD..). */
  get records(): Int32Array {
    return this.t.records;
  }

  clear(): void {
    this.t.clear();
  }

  /** Number of occupied entries. */
  size(): number {
    return this.t.count;
  }

  /** When entry e was last used (by `now`; -Infinity: free). */
  lastUsed(e: number): number {
    return this.t.times[timeIndex(e)];
  }

  /** Free entries not used for more than idleMs; returns how many. O(capacity): call rarely. */
  expire(idleMs: number): number {
    return this.t.expire(idleMs);
  }
}

/** Key word 3 of slot i: its ports, in canonical order when `swap`. */
function ports(b: Batch, i: number, swap: boolean): number {
  return swap ? (b.dport[i] << 16) | b.sport[i] : (b.sport[i] << 16) | b.dport[i];
}

/**
 * Exact-match cache of flows (5-tuple + scope), optionally direction-free (`canonical`: the key
 * swaps its endpoints exactly when endpointsReversed(b, i), so both directions share one entry).
 * hashSlot / findHashed / insertHashed take that `swap` from the caller, which has usually computed it already.
 */
export class FlowCache extends ExactMatchTable {
  constructor(capacityPow2: number = DEFAULT_FLOW_CAPACITY) {
    super(capacityPow2);
  }

  /** Hash of slot i's key (`swap`: canonical order reverses its endpoints). */
  hashSlot(b: Batch, i: number, scope: number, canonical: boolean, swap: boolean): number {
    return hashKey(word0(b, i, canonical ? CANONICAL : 0), swap ? b.dst : b.src, swap ? b.src : b.dst, i << 2, ports(b, i, swap), scope);
  }

  /** Entry of slot i's flow given its key's hash h (hashSlot), or -1; refreshes its last-used time. */
  findHashed(h: number, b: Batch, i: number, scope: number, canonical: boolean, swap: boolean): number {
    const w0 = word0(b, i, canonical ? CANONICAL : 0);
    return this.t.find(h, w0, swap ? b.dst : b.src, swap ? b.src : b.dst, i << 2, ports(b, i, swap), scope);
  }

  /**
   * Warm the cache lines that lookups of hashes[0..n) will read (VPP's prefetch across a batch):
   * one pass of independent loads, so a batch's cache misses overlap instead of each lookup
   * waiting for its own. Returns a value only so the loads are not optimised away.
   */
  warm(hashes: Int32Array, n: number): number {
    let x = 0;
    for (let i = 0; i < n; i++) x ^= this.t.warm(hashes[i]);
    return x;
  }

  /** Entry for slot i's flow given its hash h: existing, free, or evicted (the caller overwrites its payload). */
  insertHashed(h: number, b: Batch, i: number, scope: number, canonical: boolean, swap: boolean): number {
    const w0 = word0(b, i, canonical ? CANONICAL : 0);
    return this.t.place(h, w0, swap ? b.dst : b.src, swap ? b.src : b.dst, i << 2, ports(b, i, swap), scope);
  }

  /** Entry index of slot i's flow, or -1; refreshes its last-used time. */
  lookup(b: Batch, i: number, scope: number, canonical: boolean): number {
    const swap = canonical && endpointsReversed(b, i);
    return this.findHashed(this.hashSlot(b, i, scope, canonical, swap), b, i, scope, canonical, swap);
  }

  /** Entry index for slot i's flow (existing, free, or evicted: the caller overwrites its payload). */
  insert(b: Batch, i: number, scope: number, canonical: boolean): number {
    const swap = canonical && endpointsReversed(b, i);
    return this.insertHashed(this.hashSlot(b, i, scope, canonical, swap), b, i, scope, canonical, swap);
  }
}

/** Exact-match table of fragmented datagrams (addresses, proto, IP id + scope). */
export class FragmentTable extends ExactMatchTable {
  constructor(capacityPow2: number = DEFAULT_FRAGMENT_CAPACITY) {
    super(capacityPow2);
  }

  /** Entry index of slot i's datagram, or -1; refreshes its last-used time. */
  lookup(b: Batch, i: number, scope: number): number {
    const w0 = word0(b, i, 0);
    const id = b.ipId[i] | 0;
    return this.t.find(hashKey(w0, b.src, b.dst, i << 2, id, scope), w0, b.src, b.dst, i << 2, id, scope);
  }

  /** Entry index for slot i's datagram (existing, free, or evicted). */
  insert(b: Batch, i: number, scope: number): number {
    const w0 = word0(b, i, 0);
    const id = b.ipId[i] | 0;
    return this.t.place(hashKey(w0, b.src, b.dst, i << 2, id, scope), w0, b.src, b.dst, i << 2, id, scope);
  }
}
