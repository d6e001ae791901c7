/*
 * Exact-match flow tables in front of the classifier (OVS's EMC / dfc, VPP's sticky tables).
 *
 * A table maps a fixed-width integer key, read straight from a parsed batch slot, to an entry
 * index. It never allocates after construction.
 *
 * Layout: `capacity` entries (a power of two) in buckets of WAYS consecutive entries. One 32-bit
 * hash of the key picks two candidate buckets (low bits, and the low bits xor a non-zero value
 * taken from the high bits, so the two always differ). Lookup compares the stored hash, then the
 * full key, in the 2 × WAYS candidates. Insert takes a free candidate, else evicts the candidate
 * least recently used (`now` is a coarse clock the engine sets once per batch). No chains, no
 * tombstones: an entry only ever lives in one of its two buckets.
 *
 * Memory is laid out for the number of cache lines a packet touches:
 *  - `meta`: one 64-byte line per bucket holding its WAYS hashes (int32, bytes 0-15) and last-used
 *    times (float64, bytes 16-47, -Infinity = free). A lookup reads one line per bucket it probes
 *    and refreshes the time in that same line; choosing a victim on insert reads no key at all.
 *  - `records`: one record per entry, `stride` int32 words (a multiple of 16, so records are
 *    line-aligned): the key (KEY_WORDS words, word 0 = 0 when free) followed by the caller's payload
 *    (FLOW_PAYLOAD.. ; the caller asks for `payloadWords` and reads and writes them itself). So a
 *    hit touches the bucket's meta line and its entry's record, and the caller's per-flow state
 *    sits in the same record as the key it was found by: one lookup, no second table.
 * The key is never copied out of the batch for a lookup: the hash and the comparison read the
 * slot's fields directly. Callers that look up and later insert the same slot keep the hash
 * (`hashOf`) and pass it to `findHashed` / `insertHashed`, so a miss is hashed once.
 *
 * Two key shapes share that machinery (KeyedTable, held by composition so its hot methods only
 * ever see one class; a small base class adds the clock and housekeeping):
 *  - FlowCache: ipVer, proto, src[4], dst[4], sport, dport, scope. `canonical` orders the two
 *    (address, port) endpoints so both directions of a flow find the same entry (symmetric chains).
 *  - FragmentTable: ipVer, proto, src[4], dst[4], IP id, scope: lets non-first fragments, which
 *    carry no ports, follow the decision made for their first fragment.
 * `scope` is the caller's integer (VLAN, logical in-port...).
 */
import type { Batch } from '../dataplane/batch.js';

const WAYS = 4;
/** Key words: [tag | ipVer | proto << 8 | canonical << 16], src[4], dst[4], ports or IP id, scope. */
const KEY_WORDS = 11;
/** Word of a record where the caller's payload starts. */
export const FLOW_PAYLOAD = KEY_WORDS;
/** Set in word 0 of every stored key, so a zero word 0 means "empty". */
const TAG = 1 << 24;
const CANONICAL = 1 << 16;
/** meta: int32 words per bucket (one cache line); the times are float64 slots TIME.. of it. */
const META_WORDS = 16;
const TIME = 2;
const FREE = -Infinity;

/** Words per record for a payload of `payloadWords`: key + payload, rounded up to whole lines. */
export function flowRecordWords(payloadWords: number): number {
  return (KEY_WORDS + payloadWords + 15) & ~15;
}

function mixWord(h: number, w: number): number {
  const x = Math.imul(h ^ w, 0x9e3779b1);
  return x ^ (x >>> 15);
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

/**
 * Generic exact-match table. A key is given as (word 0, source and destination address arrays with
 * the slot's word offset, word 9, scope): the addresses are read in place from the batch.
 */
class KeyedTable {
  readonly capacity: number;
  readonly stride: number;
  readonly records: Int32Array;
  readonly meta: Int32Array;
  readonly times: Float64Array;
  now = 0;
  count = 0;
  private readonly bucketMask: number;

  constructor(capacity: number, payloadWords: number) {
    if (!Number.isInteger(capacity) || capacity < 2 * WAYS || (capacity & (capacity - 1)) !== 0) {
      throw new RangeError(`flow table capacity must be a power of two >= ${2 * WAYS}, got ${capacity}`);
    }
    this.capacity = capacity;
    this.stride = flowRecordWords(payloadWords);
    this.records = new Int32Array(capacity * this.stride);
    const buckets = capacity / WAYS;
    const meta = new ArrayBuffer(buckets * META_WORDS * 4);
    this.meta = new Int32Array(meta);
    this.times = new Float64Array(meta).fill(FREE);
    this.bucketMask = buckets - 1;
  }

  /**
   * Hash of a key: one multiply-xorshift round per word, then murmur3's finaliser. IPv4 keys skip
   * the address words that are always zero.
   */
  hash(w0: number, s: Uint32Array, d: Uint32Array, o: number, w9: number, scope: number): number {
    let h = mixWord(0x9747b28c, w0);
    h = mixWord(h, s[o]);
    if ((w0 & 0xff) !== 4) {
      h = mixWord(h, s[o + 1]);
      h = mixWord(h, s[o + 2]);
      h = mixWord(h, s[o + 3]);
    }
    h = mixWord(h, d[o]);
    if ((w0 & 0xff) !== 4) {
      h = mixWord(h, d[o + 1]);
      h = mixWord(h, d[o + 2]);
      h = mixWord(h, d[o + 3]);
    }
    h = mixWord(h, w9);
    h = mixWord(h, scope);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    return h ^ (h >>> 16);
  }

  private bucket2(b1: number, h: number): number {
    return b1 ^ (((h >>> 16) & this.bucketMask) | 1);
  }

  /** Entry of bucket `bucket` holding the key with hash h, or -1. */
  private findIn(bucket: number, h: number, w0: number, s: Uint32Array, d: Uint32Array, o: number, w9: number, scope: number): number {
    const meta = this.meta;
    const m = bucket * META_WORDS;
    for (let w = 0; w < WAYS; w++) {
      if (meta[m + w] !== h) continue;
      const e = bucket * WAYS + w;
      const k = this.records;
      const r = e * this.stride;
      if (
        k[r] === w0 &&
        k[r + 1] === (s[o] | 0) &&
        k[r + 5] === (d[o] | 0) &&
        k[r + 9] === w9 &&
        k[r + 10] === scope &&
        k[r + 2] === (s[o + 1] | 0) &&
        k[r + 3] === (s[o + 2] | 0) &&
        k[r + 4] === (s[o + 3] | 0) &&
        k[r + 6] === (d[o + 1] | 0) &&
        k[r + 7] === (d[o + 2] | 0) &&
        k[r + 8] === (d[o + 3] | 0)
      ) {
        this.times[(m >> 1) + TIME + w] = this.now;
        return e;
      }
    }
    return -1;
  }

  /** Entry holding the key (hash h), or -1; refreshes its last-used time. */
  find(h: number, w0: number, s: Uint32Array, d: Uint32Array, o: number, w9: number, scope: number): number {
    const b1 = h & this.bucketMask;
    const e = this.findIn(b1, h, w0, s, d, o, w9, scope);
    return e >= 0 ? e : this.findIn(this.bucket2(b1, h), h, w0, s, d, o, w9, scope);
  }

  /** Entry for the key (hash h): the existing one, else a free or least recently used candidate, overwritten. */
  place(h: number, w0: number, s: Uint32Array, d: Uint32Array, o: number, w9: number, scope: number): number {
    const found = this.find(h, w0, s, d, o, w9, scope);
    if (found >= 0) return found;
    const times = this.times;
    const b1 = h & this.bucketMask;
    const b2 = this.bucket2(b1, h);
    let victim = -1;
    let oldest = Infinity;
    for (let n = 0; n < 2 * WAYS; n++) {
      const bucket = n < WAYS ? b1 : b2;
      const t = times[bucket * (META_WORDS >> 1) + TIME + (n & (WAYS - 1))];
      if (t < oldest) {
        oldest = t;
        victim = bucket * WAYS + (n & (WAYS - 1));
        if (t === FREE) break;
      }
    }
    if (oldest === FREE) this.count++;
    const m = (victim >> 2) * META_WORDS + (victim & (WAYS - 1));
    this.meta[m] = h;
    times[((victim >> 2) * META_WORDS >> 1) + TIME + (victim & (WAYS - 1))] = this.now;
    const k = this.records;
    const r = victim * this.stride;
    k[r] = w0;
    k[r + 1] = s[o];
    k[r + 2] = s[o + 1];
    k[r + 3] = s[o + 2];
    k[r + 4] = s[o + 3];
    k[r + 5] = d[o];
    k[r + 6] = d[o + 1];
    k[r + 7] = d[o + 2];
    k[r + 8] = d[o + 3];
    k[r + 9] = w9;
    k[r + 10] = scope;
    return victim;
  }

  /** Free entry e (its key word 0 and hash cleared, time FREE). */
  private free(e: number): void {
    const m = (e >> 2) * META_WORDS;
    this.meta[m + (e & (WAYS - 1))] = 0;
    this.times[(m >> 1) + TIME + (e & (WAYS - 1))] = FREE;
    this.records[e * this.stride] = 0;
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
      const t = this.times[((e >> 2) * META_WORDS >> 1) + TIME + (e & (WAYS - 1))];
      if (t !== FREE && this.now - t > idleMs) {
        this.free(e);
        freed++;
      }
    }
    this.count -= freed;
    return freed;
  }
}

export const DEFAULT_FLOW_CAPACITY = 1 << 16;
export const DEFAULT_FRAGMENT_CAPACITY = 1 << 10;

/** What both key shapes share: the table, clock and housekeeping. */
abstract class ExactMatchTable {
  protected readonly t: KeyedTable;

  constructor(capacityPow2: number, payloadWords: number) {
    this.t = new KeyedTable(capacityPow2, payloadWords);
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

  /** Int32 words per entry record (key, then the caller's payload from FLOW_PAYLOAD). */
  get stride(): number {
    return this.t.stride;
  }

  /** The entry records: entry e's payload is words e * stride + FLOW_PAYLOAD .. e * stride + stride - 1. */
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

  /** Free entries not used for more than idleMs; returns how many. O(capacity): call rarely. */
  expire(idleMs: number): number {
    return this.t.expire(idleMs);
  }
}

/** Key word 0 of slot i. */
function word0(b: Batch, i: number, flags: number): number {
  return TAG | flags | b.ipVer[i] | (b.proto[i] << 8);
}

/**
 * Exact-match cache of flows (5-tuple + scope), optionally direction-free. The hashed API takes
 * `swap` (the canonical key swaps its endpoints exactly when endpointsReversed(b, i)) so a caller
 * that already knows the orientation does not compute it again, and leaves the key's hash in
 * `lastHash` so that an insert after a miss does not hash again.
 */
export class FlowCache extends ExactMatchTable {
  /** Hash of the key of the last findSlot / lookup / insert. */
  lastHash = 0;
  // The key's words 0 and 9 for the current call (the addresses are read in place).
  private w0 = 0;
  private w9 = 0;

  constructor(capacityPow2: number = DEFAULT_FLOW_CAPACITY, payloadWords = 0) {
    super(capacityPow2, payloadWords);
  }

  private load(b: Batch, i: number, canonical: boolean, swap: boolean): void {
    this.w0 = word0(b, i, canonical ? CANONICAL : 0);
    this.w9 = swap ? (b.dport[i] << 16) | b.sport[i] : (b.sport[i] << 16) | b.dport[i];
  }

  /** Entry of slot i's flow, or -1 (its hash left in lastHash); refreshes its last-used time. */
  findSlot(b: Batch, i: number, scope: number, canonical: boolean, swap: boolean): number {
    this.load(b, i, canonical, swap);
    const s = swap ? b.dst : b.src;
    const d = swap ? b.src : b.dst;
    const h = this.t.hash(this.w0, s, d, i << 2, this.w9, scope);
    this.lastHash = h;
    return this.t.find(h, this.w0, s, d, i << 2, this.w9, scope);
  }

  /** Entry for slot i's flow given its hash h: existing, free, or evicted (the caller overwrites its payload). */
  insertHashed(h: number, b: Batch, i: number, scope: number, canonical: boolean, swap: boolean): number {
    this.load(b, i, canonical, swap);
    this.lastHash = h;
    return this.t.place(h, this.w0, swap ? b.dst : b.src, swap ? b.src : b.dst, i << 2, this.w9, scope);
  }

  /** Entry index of slot i's flow, or -1; refreshes its last-used time. */
  lookup(b: Batch, i: number, scope: number, canonical: boolean): number {
    return this.findSlot(b, i, scope, canonical, canonical && endpointsReversed(b, i));
  }

  /** Entry index for slot i's flow (existing, free, or evicted: the caller overwrites its payload). */
  insert(b: Batch, i: number, scope: number, canonical: boolean): number {
    const swap = canonical && endpointsReversed(b, i);
    this.load(b, i, canonical, swap);
    const s = swap ? b.dst : b.src;
    const d = swap ? b.src : b.dst;
    return this.insertHashed(this.t.hash(this.w0, s, d, i << 2, this.w9, scope), b, i, scope, canonical, swap);
  }
}

/** Exact-match table of fragmented datagrams (addresses, proto, IP id + scope). */
export class FragmentTable extends ExactMatchTable {
  constructor(capacityPow2: number = DEFAULT_FRAGMENT_CAPACITY) {
    super(capacityPow2, 0);
  }

  /** Entry index of slot i's datagram, or -1; refreshes its last-used time. */
  lookup(b: Batch, i: number, scope: number): number {
    const w0 = word0(b, i, 0);
    const id = b.ipId[i] | 0;
    const h = this.t.hash(w0, b.src, b.dst, i << 2, id, scope);
    return this.t.find(h, w0, b.src, b.dst, i << 2, id, scope);
  }

  /** Entry index for slot i's datagram (existing, free, or evicted). */
  insert(b: Batch, i: number, scope: number): number {
    const w0 = word0(b, i, 0);
    const id = b.ipId[i] | 0;
    const h = this.t.hash(w0, b.src, b.dst, i << 2, id, scope);
    return this.t.place(h, w0, b.src, b.dst, i << 2, id, scope);
  }
}
