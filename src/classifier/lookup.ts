/*
 * Classifier lookup: first matching rule (lowest index = highest priority) for a parsed packet,
 * without scanning the rules.
 *
 * Design (Lakshman–Stiliadis bit vectors, with Baboescu–Varghese aggregation):
 *  - Rules are split into partitions by (ipVer, inPort). Rules bound to one logical port go into
 *    that port's partition; rules with inPort -1 go into one shared "any port" partition per IP
 *    version. A lookup searches the packet's port partition and the shared one and keeps the lower
 *    rule index. (Copying wildcard-port rules into every port's partition would save that second
 *    search but multiply the quadratic bitset memory by the number of ports.)
 *  - Within a partition every dimension (src address, dst address, sport, dport, proto) is cut
 *    into elementary intervals: the sorted distinct start points {0} ∪ {lo} ∪ {hi + 1} of the
 *    rules' ranges (a prefix is the range [addr, addr | ~mask]). Each interval has a row: the
 *    bitset of the partition's rules whose range covers it.
 *  - Finding the packet's interval: proto through a 256-entry map; the other dimensions through a
 *    small first-level index (Click-style: precompute so the packet path only indexes). The start
 *    points after 0 share some leading bits; a key outside that prefix is below or above them all
 *    (row 0 or the last row); inside, the next B bits (2^B ≈ number of start points) pick a block
 *    whose few start points a binary search finishes. Skipping the shared prefix keeps clustered
 *    rule sets (all in 10.0.0.0/8, or 2001:db8::/32) spread over the blocks. Ports live in the top
 *    16 bits of a word so they use the IPv4 code; IPv6 compares four words.
 *  - A row is [S summary words][W bitset words]: summary bit w is set when bitset word w is not
 *    zero. The lookup ANDs the five rows' summaries first, and only visits bitset words whose
 *    summary bit survived; the first non-zero AND's lowest bit is the answer (bit j = j-th rule of
 *    the partition, kept in input order, so the lowest bit is the lowest input index). A miss
 *    usually costs the five interval look-ups plus one AND of S words (S = 1 up to 1,024 rules).
 *  - Port dimensions carry one extra row with every rule set: `ignorePorts` (non-first fragments)
 *    selects it instead of searching, so the AND loop has no branch for it.
 * Memory is O(rules^2 / 32) words per partition (about 1 MB for 1,000 rules on one port);
 * compiling 1,000 rules takes tens of milliseconds (BigInt arithmetic, control thread only).
 *
 * The table is a plain object of typed arrays and numbers (structured-clone safe, so it can be
 * posted to worker threads); all partitions share the same flat arrays, addressed through `meta`
 * and `dims`. Start points are stored biased (xor 0x80000000) so int32 comparison gives unsigned
 * order.
 */
import type { Batch } from '../packet/batch.js';
import { inSharedMemory } from '../util/shared-arrays.js';
import { formatAddress, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, type Rule } from './rule.js';

export interface ClassifierTable {
  /** Number of input rules (results are indices below this). */
  nRules: number;
  /** Port index -> partition id of that port's rules (-1 = none), per IP version. */
  part4: Int32Array;
  part6: Int32Array;
  /** Partition id of the rules with inPort -1 (-1 = none), per IP version. */
  any4: number;
  any6: number;
  /** META_STRIDE ints per partition (M_* fields). */
  meta: Int32Array;
  /** DIM_STRIDE ints per dimension (D_* fields); partition p's src, dst, sport, dport at p * 4 + 0..3. */
  dims: Int32Array;
  /** Local bit -> input rule index, per partition (ascending). */
  ruleIds: Int32Array;
  /** Interval start points, biased: one word each for IPv4 and ports (port << 16), four for IPv6. */
  starts: Int32Array;
  /** First-level index of each dimension: block -> number of start points (after the first) before it. */
  blocks: Int32Array;
  /** 256 entries per partition: IP protocol -> proto row. */
  protoMap: Int32Array;
  /** Rows of [S summary words][W bitset words]. */
  bits: Int32Array;
}

const M_VER = 0;
const M_W = 1; // bitset words per row
const M_S = 2; // summary words per row
const M_RULES = 3; // offset into ruleIds
const M_PROTO = 4; // offset into protoMap
const M_BPROTO = 5; // offset of the proto dimension's row 0 in bits
const META_STRIDE = 6;

const D_START = 0; // offset of start point 0 in starts
const D_N = 1; // number of start points after start 0 (the value 0)
const D_PLEN = 2; // bits shared by all those start points
const D_B = 3; // first-level index bits, taken right after the shared prefix
const D_IDX = 4; // offset of the first-level index in blocks (2^B + 1 entries)
const D_ROWS = 5; // offset of row 0 in bits
const D_PFX = 6; // 4 words: the shared prefix, biased (bits past D_PLEN clear before biasing)
const DIM_STRIDE = 10;
const SRC = 0;
const DST = 1;
const SPORT = 2;
const DPORT = 3;

const BIAS = 0x80000000 | 0;

// ---------------------------------------------------------------------------------------------
// Compile (control path)

/** One dimension of a partition: sorted start points and its rows. */
interface Dimension {
  starts: bigint[];
  rows: Int32Array;
}

/** Inclusive ranges (one per local rule) -> elementary intervals and their rows of bits. */
function buildDimension(ranges: [bigint, bigint][], max: bigint, W: number, S: number, wildcardRow: boolean): Dimension {
  const set = new Set<bigint>([0n]);
  for (const [lo, hi] of ranges) {
    set.add(lo);
    if (hi < max) set.add(hi + 1n);
  }
  const starts = [...set].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const index = new Map(starts.map((v, k) => [v, k]));
  const nRows = starts.length + (wildcardRow ? 1 : 0);
  const stride = S + W;
  const rows = new Int32Array(nRows * stride);
  const setBit = (row: number, j: number) => {
    const o = row * stride;
    rows[o + S + (j >>> 5)] |= 1 << (j & 31);
    rows[o + (j >>> 10)] |= 1 << ((j >>> 5) & 31);
  };
  ranges.forEach(([lo, hi], j) => {
    const first = index.get(lo)!;
    const last = hi < max ? index.get(hi + 1n)! - 1 : starts.length - 1;
    for (let r = first; r <= last; r++) setBit(r, j);
    if (wildcardRow) setBit(starts.length, j);
  });
  return { starts, rows };
}

function addrRange(words: number[], len: number, ver: 4 | 6): [bigint, bigint] {
  const width = ver === 4 ? 32 : 128;
  let v = 0n;
  for (let k = 0; k < width / 32; k++) v = (v << 32n) | BigInt(words[k] >>> 0);
  const host = (1n << BigInt(width - len)) - 1n;
  const lo = v & ~host;
  return [lo, lo | host];
}

const bitLength = (v: bigint) => (v === 0n ? 0 : v.toString(2).length);

/**
 * One compiled partition, self-contained: offsets in `dims` (D_START, D_IDX, D_ROWS) and `bproto`
 * are relative to its own arrays, so a partition compiled for one generation can be placed at other
 * offsets in the next (compileClassifier's `reuse`). Its bit j is the j-th rule given to it, so
 * the same rules in the same order give the same piece whatever their input indices.
 */
export interface Partition {
  ver: 4 | 6;
  W: number;
  S: number;
  dims: Int32Array;
  starts: Int32Array;
  blocks: Int32Array;
  protoMap: Int32Array;
  bits: Int32Array;
  /** Offset of the proto dimension's row 0 in `bits`. */
  bproto: number;
}

/** Partition builder: appends the dimensions of one partition to its own arrays. */
class PartitionBuilder {
  dims: number[] = [];
  starts: number[] = [];
  blocks: number[] = [];
  bitChunks: Int32Array[] = [];
  bitsLen = 0;

  pushRows(rows: Int32Array): number {
    const off = this.bitsLen;
    this.bitChunks.push(rows);
    this.bitsLen += rows.length;
    return off;
  }

  /**
   * Append a dimension whose values are `width`-bit numbers (32 or 128) stored in width / 32 words.
   * The first-level index takes B bits right after the prefix that all start points but the first
   * (the value 0) share, so that clustered values (10.0.0.0/8, 2001:db8::/32) still spread over it.
   */
  pushDimension(dim: Dimension, width: 32 | 128): void {
    const words = width / 32;
    const rest = dim.starts.slice(1);
    let plen = 0;
    if (rest.length > 0) {
      plen = Math.min(width - 1, width - bitLength(rest[0] ^ rest[rest.length - 1]));
    }
    const shift = BigInt(width - plen);
    const prefix = rest.length > 0 ? (rest[0] >> shift) << shift : 0n;
    const B = Math.max(1, Math.min(16, 32 - (plen & 31), Math.ceil(Math.log2(rest.length + 1))));
    const d: number[] = new Array<number>(DIM_STRIDE).fill(0);
    d[D_START] = this.starts.length;
    d[D_N] = rest.length;
    d[D_PLEN] = plen;
    d[D_B] = B;
    d[D_IDX] = this.blocks.length;
    d[D_ROWS] = this.pushRows(dim.rows);
    for (let k = 0; k < 4; k++) {
      const w = k < words ? Number((prefix >> BigInt(width - 32 * (k + 1))) & 0xffffffffn) : 0;
      d[D_PFX + k] = w ^ BIAS;
    }
    for (const s of dim.starts) {
      for (let k = words - 1; k >= 0; k--) this.starts.push(Number((s >> BigInt(32 * k)) & 0xffffffffn) ^ BIAS);
    }
    // blocks[b] = how many of `rest` fall in a block below b (they are sorted, so blocks ascend).
    const blockShift = BigInt(width - plen - B);
    const mask = (1n << BigInt(B)) - 1n;
    let k = 0;
    for (let b = 0; b <= 1 << B; b++) {
      while (k < rest.length && Number((rest[k] >> blockShift) & mask) < b) k++;
      this.blocks.push(k);
    }
    this.dims.push(...d);
  }
}

/** Compile one partition: `rs` in priority order, all of IP version `ver`. */
function buildPartition(rs: readonly Rule[], ver: 4 | 6): Partition {
  const pb = new PartitionBuilder();
  const n = rs.length;
  const W = Math.ceil(n / 32);
  const S = Math.ceil(W / 32);
  const width = ver === 4 ? 32 : 128;
  const amax = (1n << BigInt(width)) - 1n;
  // Ports are placed in the top 16 bits of a word so they share the IPv4 search; the hi + 1 start
  // point then sits at (hi << 16) + 1, between port hi and port hi + 1 as it must.
  const portRange = (lo: number, hi: number): [bigint, bigint] => [BigInt(lo) << 16n, BigInt(hi) << 16n];
  pb.pushDimension(buildDimension(rs.map((r) => addrRange(r.src, r.srcLen, ver)), amax, W, S, false), width);
  pb.pushDimension(buildDimension(rs.map((r) => addrRange(r.dst, r.dstLen, ver)), amax, W, S, false), width);
  const portMax = 65535n << 16n;
  pb.pushDimension(buildDimension(rs.map((r) => portRange(r.sportMin, r.sportMax)), portMax, W, S, true), 32);
  pb.pushDimension(buildDimension(rs.map((r) => portRange(r.dportMin, r.dportMax)), portMax, W, S, true), 32);
  const pr = buildDimension(
    rs.map((r) => (r.proto < 0 ? [0n, 255n] : [BigInt(r.proto), BigInt(r.proto)])),
    255n, W, S, false,
  );
  const protoMap: number[] = [];
  for (let v = 0, k = 0; v < 256; v++) {
    while (k + 1 < pr.starts.length && pr.starts[k + 1] <= BigInt(v)) k++;
    protoMap.push(k);
  }
  const bproto = pb.pushRows(pr.rows);
  const bits = new Int32Array(pb.bitsLen);
  let o = 0;
  for (const c of pb.bitChunks) {
    bits.set(c, o);
    o += c.length;
  }
  return {
    ver, W, S, bits, bproto,
    dims: Int32Array.from(pb.dims),
    starts: Int32Array.from(pb.starts),
    blocks: Int32Array.from(pb.blocks),
    protoMap: Int32Array.from(protoMap),
  };
}

/** Everything buildPartition reads from a partition's rules (not their logical port). */
function partitionKey(rs: readonly Rule[], ver: 4 | 6): string {
  return JSON.stringify([ver, rs.map((r) => [r.proto, r.src, r.srcLen, r.dst, r.dstLen, r.sportMin, r.sportMax, r.dportMin, r.dportMax])]);
}

/**
 * Partitions by key: `before` from the previous compile (looked up), `now` filled with what this
 * compile used (so it holds exactly one generation's partitions).
 */
export interface PartitionMemo {
  before?: Map<string, Partition>;
  now: Map<string, Partition>;
}

/** A table being assembled from partitions: each is placed (its offsets rebased) at the end. */
class TableBuilder {
  private readonly placed: { p: Partition; ids: number[] }[] = [];

  constructor(private readonly memo?: PartitionMemo) {}

  /** Add a partition of the given rules (input indices ascending); returns its id. */
  addPartition(rules: readonly Rule[], ids: number[], ver: 4 | 6): number {
    const rs = ids.map((id) => rules[id]);
    let p: Partition | undefined;
    let key = '';
    if (this.memo) {
      key = partitionKey(rs, ver);
      p = this.memo.before?.get(key);
    }
    p ??= buildPartition(rs, ver);
    this.memo?.now.set(key, p);
    return this.placed.push({ p, ids }) - 1;
  }

  /**
   * The flat arrays, in one SharedArrayBuffer (a table crosses to the workers uncopied): every
   * partition's, concatenated, with offsets rebased, and the port -> partition maps (all -1).
   */
  arrays(ports4: number, ports6: number): Omit<ClassifierTable, 'nRules' | 'any4' | 'any6'> {
    const sum = (f: (x: { p: Partition; ids: number[] }) => number) => this.placed.reduce((n, x) => n + f(x), 0);
    const t = inSharedMemory((a) => ({
      part4: a.i32(ports4).fill(-1),
      part6: a.i32(ports6).fill(-1),
      meta: a.i32(this.placed.length * META_STRIDE),
      dims: a.i32(sum((x) => x.p.dims.length)),
      ruleIds: a.i32(sum((x) => x.ids.length)),
      starts: a.i32(sum((x) => x.p.starts.length)),
      blocks: a.i32(sum((x) => x.p.blocks.length)),
      protoMap: a.i32(sum((x) => x.p.protoMap.length)),
      bits: a.i32(sum((x) => x.p.bits.length)),
    }));
    const { meta, dims, ruleIds, starts, blocks, protoMap, bits } = t;
    let [d, r, st, bl, pm, bi] = [0, 0, 0, 0, 0, 0];
    this.placed.forEach(({ p, ids }, k) => {
      dims.set(p.dims, d);
      for (let o = d; o < d + p.dims.length; o += DIM_STRIDE) {
        dims[o + D_START] += st;
        dims[o + D_IDX] += bl;
        dims[o + D_ROWS] += bi;
      }
      const m = k * META_STRIDE;
      meta[m + M_VER] = p.ver;
      meta[m + M_W] = p.W;
      meta[m + M_S] = p.S;
      meta[m + M_RULES] = r;
      meta[m + M_PROTO] = pm;
      meta[m + M_BPROTO] = bi + p.bproto;
      ruleIds.set(ids, r);
      starts.set(p.starts, st);
      blocks.set(p.blocks, bl);
      protoMap.set(p.protoMap, pm);
      bits.set(p.bits, bi);
      d += p.dims.length;
      r += ids.length;
      st += p.starts.length;
      bl += p.blocks.length;
      pm += p.protoMap.length;
      bi += p.bits.length;
    });
    return t;
  }
}

/**
 * Compile rules (priority = position, first wins) into a lookup table. With `memo`, partitions
 * whose rules are unchanged since the previous compile are reused instead of rebuilt (a change to
 * one logical port's classifiers rebuilds that port's partition only).
 */
export function compileClassifier(rules: readonly Rule[], memo?: PartitionMemo): ClassifierTable {
  const tb = new TableBuilder(memo);
  const versions = [4, 6] as const;
  const parts: { byPort: Map<number, number>; any: number }[] = [];
  for (const ver of versions) {
    const anyIds: number[] = [];
    const portIds = new Map<number, number[]>();
    rules.forEach((r, id) => {
      if (r.ipVer !== ver) return;
      if (r.inPort < 0) anyIds.push(id);
      else {
        let l = portIds.get(r.inPort);
        if (!l) portIds.set(r.inPort, (l = []));
        l.push(id);
      }
    });
    const byPort = new Map<number, number>();
    for (const [port, ids] of [...portIds].sort((a, b) => a[0] - b[0])) byPort.set(port, tb.addPartition(rules, ids, ver));
    parts.push({ byPort, any: anyIds.length ? tb.addPartition(rules, anyIds, ver) : -1 });
  }
  const [v4, v6] = parts;
  const t = tb.arrays(portArrayLength(v4.byPort), portArrayLength(v6.byPort));
  for (const [port, id] of v4.byPort) t.part4[port] = id;
  for (const [port, id] of v6.byPort) t.part6[port] = id;
  return { nRules: rules.length, any4: v4.any, any6: v6.any, ...t };
}

const portArrayLength = (byPort: Map<number, number>) => (byPort.size === 0 ? 0 : Math.max(...byPort.keys()) + 1);

// ---------------------------------------------------------------------------------------------
// Lookup (data path)

/**
 * Row of a one-word dimension (IPv4 address, or port << 16) for `key`: the number of start points
 * after the first that are <= key. Outside the shared prefix the answer is 0 or all of them;
 * inside, the first-level block bounds a short window that a binary search finishes.
 */
function findRow1(t: ClassifierTable, d: number, key: number): number {
  const dims = t.dims;
  const n = dims[d + D_N];
  if (n === 0) return 0;
  const plen = dims[d + D_PLEN];
  if (plen !== 0) {
    const kp = (key & (-1 << (32 - plen))) ^ BIAS;
    const pp = dims[d + D_PFX];
    if (kp !== pp) return kp < pp ? 0 : n;
  }
  const io = dims[d + D_IDX] + ((key << plen) >>> (32 - dims[d + D_B]));
  const blocks = t.blocks;
  let lo = blocks[io];
  let len = blocks[io + 1] - lo;
  const starts = t.starts;
  const so = dims[d + D_START] + 1;
  const k = key ^ BIAS;
  while (len > 0) {
    const half = len >>> 1;
    if (starts[so + lo + half] <= k) {
      lo += half + 1;
      len -= half + 1;
    } else {
      len = half;
    }
  }
  return lo;
}

/** The same for an IPv6 dimension; the key is words w[o..o+3]. */
function findRow4(t: ClassifierTable, d: number, w: Uint32Array, o: number): number {
  const dims = t.dims;
  const n = dims[d + D_N];
  if (n === 0) return 0;
  const plen = dims[d + D_PLEN];
  const wi = plen >>> 5;
  const sh = plen & 31;
  for (let k = 0; k <= wi; k++) {
    const m = k < wi ? -1 : sh === 0 ? 0 : -1 << (32 - sh);
    const kp = (w[o + k] & m) ^ BIAS;
    const pp = dims[d + D_PFX + k];
    if (kp !== pp) return kp < pp ? 0 : n;
  }
  const io = dims[d + D_IDX] + ((w[o + wi] << sh) >>> (32 - dims[d + D_B]));
  const blocks = t.blocks;
  let lo = blocks[io];
  let len = blocks[io + 1] - lo;
  const starts = t.starts;
  const so = dims[d + D_START] + 4;
  const k0 = w[o] ^ BIAS;
  const k1 = w[o + 1] ^ BIAS;
  const k2 = w[o + 2] ^ BIAS;
  const k3 = w[o + 3] ^ BIAS;
  while (len > 0) {
    const half = len >>> 1;
    const p = so + ((lo + half) << 2);
    const a0 = starts[p];
    let le: boolean;
    if (a0 !== k0) le = a0 < k0;
    else if (starts[p + 1] !== k1) le = starts[p + 1] < k1;
    else if (starts[p + 2] !== k2) le = starts[p + 2] < k2;
    else le = starts[p + 3] <= k3;
    if (le) {
      lo += half + 1;
      len -= half + 1;
    } else {
      len = half;
    }
  }
  return lo;
}

/** Lowest input rule index of partition `part` matching slot i, or -1. */
function searchPartition(t: ClassifierTable, part: number, b: Batch, i: number, ignorePorts: boolean): number {
  const meta = t.meta;
  const dims = t.dims;
  const m = part * META_STRIDE;
  const W = meta[m + M_W];
  const S = meta[m + M_S];
  const stride = S + W;
  const o = i << 2;
  const ds = (part << 2) * DIM_STRIDE;
  const dd = ds + DST * DIM_STRIDE;
  const dsp = ds + SPORT * DIM_STRIDE;
  const ddp = ds + DPORT * DIM_STRIDE;
  let rs: number;
  let rd: number;
  if (meta[m + M_VER] === 4) {
    rs = findRow1(t, ds + SRC * DIM_STRIDE, b.src[o] | 0);
    rd = findRow1(t, dd, b.dst[o] | 0);
  } else {
    rs = findRow4(t, ds + SRC * DIM_STRIDE, b.src, o);
    rd = findRow4(t, dd, b.dst, o);
  }
  // The extra row after the last interval holds every rule: ports as wildcards.
  const rsp = ignorePorts ? dims[dsp + D_N] + 1 : findRow1(t, dsp, b.sport[i] << 16);
  const rdp = ignorePorts ? dims[ddp + D_N] + 1 : findRow1(t, ddp, b.dport[i] << 16);
  const rp = t.protoMap[meta[m + M_PROTO] + b.proto[i]];
  const bits = t.bits;
  const a = dims[ds + D_ROWS] + rs * stride;
  const c = dims[dd + D_ROWS] + rd * stride;
  const e = dims[dsp + D_ROWS] + rsp * stride;
  const f = dims[ddp + D_ROWS] + rdp * stride;
  const g = meta[m + M_BPROTO] + rp * stride;
  for (let s = 0; s < S; s++) {
    let agg = bits[a + s] & bits[c + s] & bits[e + s] & bits[f + s] & bits[g + s];
    while (agg !== 0) {
      const w = (s << 5) + (31 - Math.clz32(agg & -agg));
      const x = bits[a + S + w] & bits[c + S + w] & bits[e + S + w] & bits[f + S + w] & bits[g + S + w];
      if (x !== 0) return t.ruleIds[meta[m + M_RULES] + (w << 5) + (31 - Math.clz32(x & -x))];
      agg &= agg - 1;
    }
  }
  return -1;
}

/**
 * Index (in the compiled `rules`) of the first rule matching slot i arriving at logical port
 * `inPort`, or -1. `ignorePorts` treats L4 port ranges as wildcards. Non-IP slots match nothing.
 */
export function classify(t: ClassifierTable, b: Batch, i: number, inPort: number, ignorePorts: boolean): number {
  const ver = b.ipVer[i];
  let part = -1;
  let any: number;
  if (ver === 4) {
    if (inPort >= 0 && inPort < t.part4.length) part = t.part4[inPort];
    any = t.any4;
  } else if (ver === 6) {
    if (inPort >= 0 && inPort < t.part6.length) part = t.part6[inPort];
    any = t.any6;
  } else {
    return -1;
  }
  const best = part >= 0 ? searchPartition(t, part, b, i, ignorePorts) : -1;
  if (any < 0) return best;
  const other = searchPartition(t, any, b, i, ignorePorts);
  return other >= 0 && (best < 0 || other < best) ? other : best;
}

// ---------------------------------------------------------------------------------------------
// Explain

const PROTO_NAMES: Record<number, string> = { [PROTO_TCP]: 'tcp', [PROTO_UDP]: 'udp' };

function protoName(r: Rule): string {
  if (r.proto < 0) return 'any protocol';
  if (r.proto === PROTO_ICMP && r.ipVer === 4) return 'icmp';
  if (r.proto === PROTO_ICMPV6 && r.ipVer === 6) return 'icmpv6';
  return PROTO_NAMES[r.proto] ?? `protocol ${r.proto}`;
}

function endpoint(r: Rule, words: number[], len: number, min: number, max: number): string {
  const addr = len === 0 ? 'any' : `${formatAddress(r.ipVer, words)}/${len}`;
  if (min === 0 && max === 65535) return addr;
  return `${addr} port ${min === max ? `${min}` : `${min}-${max}`}`;
}

/**
 * One line of text for `sfc explain`, e.g. "IPv4 tcp from 10.0.0.0/8 port 1000-2000 to any at
 * port 3". `portName` turns the logical port index back into a name when the caller has one.
 */
export function describeRule(r: Rule, portName: (index: number) => string = String): string {
  const where = r.inPort < 0 ? 'at any port' : `at port ${portName(r.inPort)}`;
  const from = endpoint(r, r.src, r.srcLen, r.sportMin, r.sportMax);
  const to = endpoint(r, r.dst, r.dstLen, r.dportMin, r.dportMax);
  return `IPv${r.ipVer} ${protoName(r)} from ${from} to ${to} ${where}`;
}
