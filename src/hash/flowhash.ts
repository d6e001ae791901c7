/*
 * Flow hash: one 32-bit value per packet, computed from the fields a port pair group's `lb_fields`
 * name, used to pick an instance from the group's Maglev table (maglev.ts) by `hash & (size-1)`.
 *
 * The fields of slot i are first gathered into one fixed 14-word key (a module-level scratch, no
 * per-packet allocation), laid out by ROLE rather than by header position:
 *   [0..1] eth "src"  [2..3] eth "dst"  [4..7] ip "src"  [8..11] ip "dst"  [12] proto
 *   [13]   L4 "src" port << 16 | L4 "dst" port
 * A field the mask does not select contributes 0. `swap=true` fills each "src" role from the
 * packet's destination field and vice versa (Ethernet, IP and ports alike), so the reverse path of a
 * symmetric chain, hashing with swap=true, gets exactly the forward direction's value:
 *   hash(fwd, mask, false) === hash(rev, mask, true).
 *
 * Two hash functions consume the same key with the same semantics: `hashFlow`, int32 mixing in plain
 * JS (two xxh32-style Math.imul/rotate lanes, then murmur3's fmix32 finaliser), and
 * `createXxhFlowHasher`, xxh32 from xxhash-wasm over the key's bytes. They return different
 * numbers: never mix them for one table.
 *
 * DEFAULT_HASH = 'js-int32'. bench/hash.ts (node 20, 256 prepared slots, default 5-tuple, the 2-core
 * lab VM) measured js-int32 ≈ 75 ns/hash against xxhash-wasm ≈ 310 ns/hash on an idle machine, and
 * 270 vs 530 / 500 vs 1000 ns with both cores saturated: the JS hash is 2-4x faster, because a 56-byte
 * key is too short for xxh32's throughput to pay for the call into wasm and the copy of the key
 * into wasm memory.
 *
 * Field rules:
 *  - eth_src/eth_dst are read from `macs` (destination MAC at macAt, source at macAt+6): the frame
 *    bytes, or, on the data path, the endpoint MACs of the flow's path (select.ts), which both
 *    directions and every hop agree on.
 *  - ip_src/ip_dst use the 4 words of b.src/b.dst (IPv4: word 0, the rest zero).
 *  - tcp_* count only when proto is 6, udp_* only when 17; otherwise they contribute 0.
 *  - the default 5-tuple (empty lb_fields) is ip_src, ip_dst, proto and the L4 ports of any protocol
 *    that HAS ports (TCP, UDP, SCTP, DCCP, UDP-Lite). ICMP's type/code, which parse stores in
 *    sport/dport, are left out: an echo request (8) and its reply (0) would otherwise hash apart and
 *    break symmetric chains.
 *  - non-first fragments (b.frag === FRAG_LATER) carry no ports (sport = dport = 0), so hashing them
 *    with port bits gives a different value than their first fragment. This module does not decide:
 *    the caller either reuses the first fragment's decision or hashes every fragment of the flow with
 *    `mask & ~LB_PORT_BITS` (L3 fields only).
 */
import type { Batch } from '../packet/batch.js';
import xxhash from 'xxhash-wasm';

/** networking-sfc's lb_fields values (the API model re-exports them); bit i of a mask is LB_FIELDS[i]. */
export const LB_FIELDS = ['eth_src', 'eth_dst', 'ip_src', 'ip_dst', 'tcp_src', 'tcp_dst', 'udp_src', 'udp_dst'] as const;
export type LbField = (typeof LB_FIELDS)[number];

/** One bit per LB_FIELDS entry (bit i ↔ LB_FIELDS[i]). */
export const LB_ETH_SRC = 1 << LB_FIELDS.indexOf('eth_src');
export const LB_ETH_DST = 1 << LB_FIELDS.indexOf('eth_dst');
export const LB_IP_SRC = 1 << LB_FIELDS.indexOf('ip_src');
export const LB_IP_DST = 1 << LB_FIELDS.indexOf('ip_dst');
export const LB_TCP_SRC = 1 << LB_FIELDS.indexOf('tcp_src');
export const LB_TCP_DST = 1 << LB_FIELDS.indexOf('tcp_dst');
export const LB_UDP_SRC = 1 << LB_FIELDS.indexOf('udp_src');
export const LB_UDP_DST = 1 << LB_FIELDS.indexOf('udp_dst');
/** Bits beyond LB_FIELDS, used by the default 5-tuple: IP protocol, and ports of any ported protocol. */
export const LB_PROTO = 1 << LB_FIELDS.length;
export const LB_L4_SRC = 1 << (LB_FIELDS.length + 1);
export const LB_L4_DST = 1 << (LB_FIELDS.length + 2);

/** Default key when a group's lb_fields is empty: the 5-tuple. */
export const DEFAULT_LB_MASK = LB_IP_SRC | LB_IP_DST | LB_PROTO | LB_L4_SRC | LB_L4_DST;
/** Every bit that selects a port; strip them to hash on L3 fields only (fragments). */
export const LB_PORT_BITS = LB_TCP_SRC | LB_TCP_DST | LB_UDP_SRC | LB_UDP_DST | LB_L4_SRC | LB_L4_DST;
/** Every defined bit. */
export const LB_ALL_BITS = (LB_L4_DST << 1) - 1;

export const FLOW_HASH_SEED = 0x5fc2c4a1;

/** Which flow hash the data path uses (see the design comment for the measurement). */
export const DEFAULT_HASH: 'js-int32' | 'xxhash-wasm' = 'js-int32';

/**
 * A flow hash of slot i: `mask` selects the fields, `swap` mirrors them (reverse paths), and the
 * Ethernet fields come from `macs` at `macAt` (12 bytes in header order: "dst" MAC, then "src" MAC):
 * the frame itself (b.data, b.start[i]), or the data path's choice of the flow's endpoint MACs.
 */
export type FlowHasher = (b: Batch, i: number, mask: number, swap: boolean, macs: Uint8Array, macAt: number) => number;

/** A group's lb_fields as a mask; an empty list means the default 5-tuple. */
export function lbFieldMask(fields: readonly LbField[]): number {
  if (fields.length === 0) return DEFAULT_LB_MASK;
  let mask = 0;
  for (const f of fields) {
    const bit = LB_FIELDS.indexOf(f);
    if (bit < 0) throw new RangeError(`unknown lb_field '${String(f)}'`);
    mask |= 1 << bit;
  }
  return mask;
}

const PROTO_TCP = 6;
const PROTO_UDP = 17;
/** Protocols whose sport/dport (as parse fills them) are real ports. */
const PORTED_PROTOCOLS = [PROTO_TCP, PROTO_UDP, 33 /* DCCP */, 132 /* SCTP */, 136 /* UDP-Lite */];

/** Per IP protocol: the mask bits that select the source (resp. destination) port. */
const SRC_PORT_BITS = new Uint16Array(256);
const DST_PORT_BITS = new Uint16Array(256);
for (const p of PORTED_PROTOCOLS) {
  SRC_PORT_BITS[p] = LB_L4_SRC;
  DST_PORT_BITS[p] = LB_L4_DST;
}
SRC_PORT_BITS[PROTO_TCP] |= LB_TCP_SRC;
DST_PORT_BITS[PROTO_TCP] |= LB_TCP_DST;
SRC_PORT_BITS[PROTO_UDP] |= LB_UDP_SRC;
DST_PORT_BITS[PROTO_UDP] |= LB_UDP_DST;

const KEY_WORDS = 14;
const key = new Uint32Array(KEY_WORDS);
const keyBytes = new Uint8Array(key.buffer);

/** Fill `key` with slot i's selected fields by role (see the design comment). */
function fillFlowKey(b: Batch, i: number, mask: number, swap: boolean, d: Uint8Array, s: number): void {
  // Destination MAC at +0, source at +6; swap exchanges which one plays "src".
  const ethSrc = swap ? s : s + 6;
  const ethDst = swap ? s + 6 : s;
  if (mask & LB_ETH_SRC) {
    key[0] = ((d[ethSrc] << 24) | (d[ethSrc + 1] << 16) | (d[ethSrc + 2] << 8) | d[ethSrc + 3]) >>> 0;
    key[1] = (d[ethSrc + 4] << 8) | d[ethSrc + 5];
  } else {
    key[0] = 0;
    key[1] = 0;
  }
  if (mask & LB_ETH_DST) {
    key[2] = ((d[ethDst] << 24) | (d[ethDst + 1] << 16) | (d[ethDst + 2] << 8) | d[ethDst + 3]) >>> 0;
    key[3] = (d[ethDst + 4] << 8) | d[ethDst + 5];
  } else {
    key[2] = 0;
    key[3] = 0;
  }

  const ipSrc = swap ? b.dst : b.src;
  const ipDst = swap ? b.src : b.dst;
  const w = i * 4;
  if (mask & LB_IP_SRC) {
    key[4] = ipSrc[w];
    key[5] = ipSrc[w + 1];
    key[6] = ipSrc[w + 2];
    key[7] = ipSrc[w + 3];
  } else {
    key[4] = key[5] = key[6] = key[7] = 0;
  }
  if (mask & LB_IP_DST) {
    key[8] = ipDst[w];
    key[9] = ipDst[w + 1];
    key[10] = ipDst[w + 2];
    key[11] = ipDst[w + 3];
  } else {
    key[8] = key[9] = key[10] = key[11] = 0;
  }

  const proto = b.proto[i];
  key[12] = mask & LB_PROTO ? proto : 0;
  const srcPort = swap ? b.dport[i] : b.sport[i];
  const dstPort = swap ? b.sport[i] : b.dport[i];
  const sp = mask & SRC_PORT_BITS[proto] ? srcPort : 0;
  const dp = mask & DST_PORT_BITS[proto] ? dstPort : 0;
  key[13] = ((sp << 16) | dp) >>> 0;
}

const PRIME1 = 0x9e3779b1;
const PRIME2 = 0x85ebca77;

/** One xxh32-style accumulator round: fold word k into acc (int32 in, int32 out). */
export function round32(acc: number, k: number): number {
  acc = (acc + Math.imul(k, PRIME2)) | 0;
  acc = (acc << 13) | (acc >>> 19);
  return Math.imul(acc, PRIME1);
}

/** murmur3's fmix32 finaliser: every input bit affects every output bit. Returns a uint32. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The JS int32 flow hash of slot i over the fields in `mask` (uint32 result). Two independent
 * accumulators (even and odd key words) let the CPU overlap their multiply chains; fmix32 then
 * spreads the result so that the low bits used by `hash & (size-1)` are as good as the high ones.
 */
export function hashFlow(b: Batch, i: number, mask: number, swap: boolean, macs: Uint8Array, macAt: number): number {
  fillFlowKey(b, i, mask, swap, macs, macAt);
  let a = FLOW_HASH_SEED;
  let c = FLOW_HASH_SEED ^ PRIME1;
  for (let k = 0; k < KEY_WORDS; k += 2) {
    a = round32(a, key[k]);
    c = round32(c, key[k + 1]);
  }
  return fmix32((((a << 1) | (a >>> 31)) + ((c << 7) | (c >>> 25))) | 0);
}

/** The same flow hash semantics computed by xxh32 (xxhash-wasm) over the key bytes. */
export async function createXxhFlowHasher(): Promise<FlowHasher> {
  const { h32Raw } = await xxhash();
  return (b, i, mask, swap, macs, macAt) => {
    fillFlowKey(b, i, mask, swap, macs, macAt);
    return h32Raw(keyBytes, FLOW_HASH_SEED);
  };
}
