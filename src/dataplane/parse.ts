/*
 * parse: the first pipeline stage. One pass over each frame of a batch fills the header fields of
 * the Batch (offsets, ethertype, VLAN, addresses, protocol, ports, fragment state, encapsulation)
 * as batch.ts's header comment defines them, the way OVS's miniflow_extract does for one packet.
 *
 * Layers recognised, outermost first:
 *   Ethernet II -> up to 2 VLAN tags (0x8100, 0x88a8, 0x9100)
 *     -> IPv4 (options skipped; fragments: only the first one carries L4)
 *     -> IPv6 (extension headers 0, 43, 44, 60, 51 walked, at most 8; ESP 50 and 59 end the walk)
 *     -> MPLS 0x8847 (label stack to bottom-of-stack; inner IPv4/IPv6 guessed by its first nibble)
 *     -> NSH 0x894F (RFC 8300 base + service path header; inner IPv4, IPv6 or Ethernet + IP)
 *   L4: TCP, UDP, SCTP (ports), ICMP/ICMPv6 (type -> sport, code -> dport).
 * Any other ethertype (ARP...) is a live frame with ipVer 0.
 *
 * Totality: every read is bounds-checked against this frame's length (never against the arena, so
 * bytes of an earlier, longer packet left in the slot are never seen). L4 is bounded by the IP
 * length, so Ethernet padding is never taken for L4 bytes. A frame that fails a check gets a Drop
 * reason in drop[i] and is counted; nothing throws. When parse accepts a frame, every header it
 * reports is fully inside the frame: l4Off + the protocol's fixed header (TCP 20, UDP 8, SCTP 12,
 * ICMP 4) fits, so later stages (execute, checksum completion) may write there without checks.
 *
 * Hot path (ARCHITECTURE.md §8): plain functions in a fixed order, big-endian reads through the
 * batch's one DataView, separate code for IPv4 and IPv6, no allocation.
 */
import { ABSENT, ENCAP_MPLS, ENCAP_NONE, ENCAP_NSH, FRAG_FIRST, FRAG_LATER, FRAG_NONE, type Batch } from '../packet/batch.js';
import { Ctr, Drop, type Counters } from '../packet/counters.js';

const ETH_HLEN = 14;
const ETH_IPV4 = 0x0800;
const ETH_IPV6 = 0x86dd;
const ETH_VLAN = 0x8100;
const ETH_QINQ = 0x88a8;
const ETH_QINQ_OLD = 0x9100;
const ETH_MPLS = 0x8847;
const ETH_NSH = 0x894f;

const MAX_VLAN_TAGS = 2;
const MAX_IPV6_EXT = 8;

const NSH_NEXT_IPV4 = 1;
const NSH_NEXT_IPV6 = 2;
const NSH_NEXT_ETHERNET = 3;
const NSH_MD1_WORDS = 6;

const IPPROTO_ICMP = 1;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_SCTP = 132;
const IPPROTO_ICMPV6 = 58;
const IPV6_HOPOPTS = 0;
const IPV6_ROUTING = 43;
const IPV6_FRAGMENT = 44;
const IPV6_ESP = 50;
const IPV6_AH = 51;
const IPV6_NONXT = 59;
const IPV6_DSTOPTS = 60;

/** Fixed L4 header bytes by IP protocol (0: no ports known); ICMP and ICMPv6 share ICMP_FIXED. */
const ICMP_FIXED = 4;
const L4_FIXED_HEADER = new Uint8Array(256);
L4_FIXED_HEADER[IPPROTO_TCP] = 20;
L4_FIXED_HEADER[IPPROTO_UDP] = 8;
L4_FIXED_HEADER[IPPROTO_SCTP] = 12;
L4_FIXED_HEADER[IPPROTO_ICMP] = ICMP_FIXED;
L4_FIXED_HEADER[IPPROTO_ICMPV6] = ICMP_FIXED;

// Drop reasons and counter indices copied into module constants once.
const DROPPED = Ctr.dropped;
const RUNT = Drop.runt;
const TRUNCATED_VLAN = Drop.truncated_vlan;
const TOO_MANY_VLAN_TAGS = Drop.too_many_vlan_tags;
const TRUNCATED_MPLS = Drop.truncated_mpls;
const TRUNCATED_NSH = Drop.truncated_nsh;
const BAD_NSH = Drop.bad_nsh;
const TRUNCATED_IPV4 = Drop.truncated_ipv4;
const BAD_IPV4_HEADER = Drop.bad_ipv4_header;
const BAD_IPV4_LENGTH = Drop.bad_ipv4_length;
const TRUNCATED_IPV6 = Drop.truncated_ipv6;
const BAD_IPV6_HEADER = Drop.bad_ipv6_header;
const BAD_IPV6_LENGTH = Drop.bad_ipv6_length;
const TRUNCATED_IPV6_EXT = Drop.truncated_ipv6_ext;
const TRUNCATED_L4 = Drop.truncated_l4;
const BAD_TCP_HEADER = Drop.bad_tcp_header;

/*
 * Cost notes. Stores are most of this stage's cost (a typed-array store is ~10 instructions in
 * V8), so no field is written twice for a common frame: parseBatch fills the defaults of fields
 * most frames leave alone for the whole batch; per frame, parseFrame writes etherType (and VLAN,
 * encapsulation fields when present), parseIPv4/parseIPv6 the remaining L3 fields, parseL4 (or
 * noL4) every L4 field. Frames that end before L3 (non-IP payloads) and dropped frames get
 * clearLayers, so a dropped slot keeps its Ethernet fields (and encap/label when the drop is inside
 * the encapsulated packet) and has every L3/L4 field at its default.
 * The common path parseFrame -> parseIPv4 -> parseL4 is kept small enough (bytecode) for V8 to
 * inline all of it into parseBatch (its cumulative inlining budget is 920 bytes); rarer layers
 * (VLAN tags, MPLS, NSH, IPv6) live in their own functions.
 */

/** Parse slots 0..b.count-1: fill the parse fields, drop[i] (0 or a reason), path/hop/flow = -1. */
export function parseBatch(b: Batch, c: Counters): void {
  const n = b.count;
  // Defaults of the fields most frames leave alone, at memset speed.
  b.drop.fill(0, 0, n);
  b.vlan.fill(0, 0, n);
  b.vlanCount.fill(0, 0, n);
  b.encap.fill(ENCAP_NONE, 0, n);
  b.label.fill(0, 0, n);
  b.src.fill(0, 0, n << 2);
  b.dst.fill(0, 0, n << 2);
  b.frag.fill(FRAG_NONE, 0, n);
  b.ipId.fill(0, 0, n);
  b.path.fill(-1, 0, n);
  b.hop.fill(-1, 0, n);
  b.flow.fill(-1, 0, n);
  for (let i = 0; i < n; i++) {
    const reason = parseFrame(b, i);
    if (reason !== 0) {
      b.drop[i] = reason;
      clearLayers(b, i);
      c.drops[reason]++;
      c.events[DROPPED]++;
    }
  }
}

/**
 * Parse slot i again after its start moved past outer headers (a tunnel's, vxlan.ts): every parse
 * field of the slot from scratch. Returns 0 or the drop reason, which the caller counts.
 */
export function reparseSlot(b: Batch, i: number): number {
  b.vlan[i] = 0;
  b.vlanCount[i] = 0;
  b.encap[i] = ENCAP_NONE;
  b.label[i] = 0;
  b.frag[i] = FRAG_NONE;
  b.ipId[i] = 0;
  const reason = parseFrame(b, i);
  if (reason !== 0) clearLayers(b, i);
  return reason;
}

function clearLayers(b: Batch, i: number): void {
  b.l3Off[i] = ABSENT;
  b.ipVer[i] = 0;
  const w = i << 2;
  b.src[w] = 0;
  b.src[w + 1] = 0;
  b.src[w + 2] = 0;
  b.src[w + 3] = 0;
  b.dst[w] = 0;
  b.dst[w + 1] = 0;
  b.dst[w + 2] = 0;
  b.dst[w + 3] = 0;
  b.proto[i] = 0;
  b.frag[i] = FRAG_NONE;
  b.ipId[i] = 0;
  b.l4Off[i] = ABSENT;
  b.sport[i] = 0;
  b.dport[i] = 0;
}

/** Returns 0 or a Drop reason. Offsets below are relative to the frame start s; len bounds them. */
function parseFrame(b: Batch, i: number): number {
  const len = b.len[i];
  if (len < ETH_HLEN) {
    b.etherType[i] = 0;
    return RUNT;
  }
  const v = b.view;
  const s = b.start[i];
  let off = ETH_HLEN;
  let et = v.getUint16(s + 12);
  if (et === ETH_VLAN || et === ETH_QINQ || et === ETH_QINQ_OLD) {
    off = parseVlanTags(b, i, s, len);
    if (off < 0) return -off;
    et = v.getUint16(s + off - 2);
  }
  b.etherType[i] = et;
  if (et === ETH_IPV4) return parseIPv4(b, i, s, off, len);
  if (et === ETH_IPV6) return parseIPv6(b, i, s, off, len);
  if (et === ETH_MPLS) return parseMpls(b, i, s, off, len);
  if (et === ETH_NSH) return parseNsh(b, i, s, off, len);
  clearLayers(b, i);
  return 0;
}

/** Walk the VLAN tags of a tagged frame: the offset after them, or -reason (etherType then set). */
function parseVlanTags(b: Batch, i: number, s: number, len: number): number {
  const v = b.view;
  let off = ETH_HLEN;
  let tags = 0;
  let et = v.getUint16(s + 12);
  while (et === ETH_VLAN || et === ETH_QINQ || et === ETH_QINQ_OLD) {
    if (tags === MAX_VLAN_TAGS || off + 4 > len) {
      b.etherType[i] = et;
      return tags === MAX_VLAN_TAGS ? -TOO_MANY_VLAN_TAGS : -TRUNCATED_VLAN;
    }
    if (tags === 0) b.vlan[i] = v.getUint16(s + off) & 0x0fff;
    b.vlanCount[i] = ++tags;
    et = v.getUint16(s + off + 2);
    off += 4;
  }
  return off;
}

function parseMpls(b: Batch, i: number, s: number, off: number, len: number): number {
  const v = b.view;
  if (off + 4 > len) return TRUNCATED_MPLS;
  b.encap[i] = ENCAP_MPLS;
  b.label[i] = v.getUint32(s + off) >>> 12;
  let entry = 0;
  do {
    if (off + 4 > len) return TRUNCATED_MPLS;
    entry = v.getUint32(s + off);
    off += 4;
  } while ((entry & 0x100) === 0);
  const nibble = off < len ? b.data[s + off] >>> 4 : 0;
  if (nibble === 4) return parseIPv4(b, i, s, off, len);
  if (nibble === 6) return parseIPv6(b, i, s, off, len);
  clearLayers(b, i);
  return 0;
}

function parseNsh(b: Batch, i: number, s: number, off: number, len: number): number {
  const v = b.view;
  if (off + 8 > len) return TRUNCATED_NSH;
  // Base header: Ver(2) O(1) U(1) TTL(6) Length(6) | U(4) MD type(4) | Next protocol(8).
  const base = v.getUint32(s + off);
  const version = base >>> 30;
  const words = (base >>> 16) & 0x3f;
  const mdType = (base >>> 8) & 0x0f;
  const next = base & 0xff;
  if (version !== 0 || mdType === 0 || words < 2 || (mdType === 1 && words !== NSH_MD1_WORDS)) return BAD_NSH;
  const hlen = words << 2;
  if (off + hlen > len) return TRUNCATED_NSH;
  b.encap[i] = ENCAP_NSH;
  b.label[i] = v.getUint32(s + off + 4); // SPI(24) SI(8) == SPI << 8 | SI
  off += hlen;
  if (next === NSH_NEXT_IPV4) return parseIPv4(b, i, s, off, len);
  if (next === NSH_NEXT_IPV6) return parseIPv6(b, i, s, off, len);
  if (next === NSH_NEXT_ETHERNET) {
    if (off + ETH_HLEN > len) return TRUNCATED_NSH;
    const et = v.getUint16(s + off + 12);
    off += ETH_HLEN;
    if (et === ETH_IPV4) return parseIPv4(b, i, s, off, len);
    if (et === ETH_IPV6) return parseIPv6(b, i, s, off, len);
  }
  clearLayers(b, i);
  return 0;
}

function parseIPv4(b: Batch, i: number, s: number, off: number, len: number): number {
  const v = b.view;
  const avail = len - off;
  if (avail < 20) return TRUNCATED_IPV4;
  const p = s + off;
  const verIhl = b.data[p];
  const ihl = (verIhl & 0x0f) << 2;
  if (verIhl >>> 4 !== 4 || ihl < 20) return BAD_IPV4_HEADER;
  if (ihl > avail) return TRUNCATED_IPV4;
  const total = v.getUint16(p + 2);
  if (total < ihl || total > avail) return BAD_IPV4_LENGTH;
  const proto = b.data[p + 9];
  const fragField = v.getUint16(p + 6);
  const w = i << 2;
  b.l3Off[i] = off;
  b.ipVer[i] = 4;
  b.proto[i] = proto;
  b.ipId[i] = v.getUint16(p + 4);
  b.src[w] = v.getUint32(p + 12);
  b.dst[w] = v.getUint32(p + 16);
  if ((fragField & 0x1fff) !== 0) {
    b.frag[i] = FRAG_LATER;
    return noL4(b, i);
  }
  if ((fragField & 0x2000) !== 0) b.frag[i] = FRAG_FIRST;
  return parseL4(b, i, s, off + ihl, off + total, proto);
}

function parseIPv6(b: Batch, i: number, s: number, off: number, len: number): number {
  const v = b.view;
  const d = b.data;
  if (len - off < 40) return TRUNCATED_IPV6;
  const p = s + off;
  if (d[p] >>> 4 !== 6) return BAD_IPV6_HEADER;
  const end = off + 40 + v.getUint16(p + 4);
  if (end > len) return BAD_IPV6_LENGTH;
  const w = i << 2;
  b.src[w] = v.getUint32(p + 8);
  b.src[w + 1] = v.getUint32(p + 12);
  b.src[w + 2] = v.getUint32(p + 16);
  b.src[w + 3] = v.getUint32(p + 20);
  b.dst[w] = v.getUint32(p + 24);
  b.dst[w + 1] = v.getUint32(p + 28);
  b.dst[w + 2] = v.getUint32(p + 32);
  b.dst[w + 3] = v.getUint32(p + 36);
  b.l3Off[i] = off;
  b.ipVer[i] = 6;
  let nh = d[p + 6];
  let q = off + 40;
  for (let walked = 0; ; walked++) {
    if (nh !== IPV6_HOPOPTS && nh !== IPV6_ROUTING && nh !== IPV6_DSTOPTS && nh !== IPV6_AH && nh !== IPV6_FRAGMENT) break;
    if (walked === MAX_IPV6_EXT) return TRUNCATED_IPV6_EXT;
    const h = s + q;
    if (nh === IPV6_FRAGMENT) {
      if (q + 8 > end) return TRUNCATED_IPV6_EXT;
      const offsetM = v.getUint16(h + 2); // offset(13) res(2) M(1)
      b.ipId[i] = v.getUint32(h + 4);
      nh = d[h];
      q += 8;
      if ((offsetM & 0xfff8) !== 0) {
        b.frag[i] = FRAG_LATER;
        b.proto[i] = nh;
        return noL4(b, i);
      }
      if ((offsetM & 1) !== 0) b.frag[i] = FRAG_FIRST;
      continue;
    }
    if (q + 2 > end) return TRUNCATED_IPV6_EXT;
    const hlen = nh === IPV6_AH ? (d[h + 1] + 2) << 2 : (d[h + 1] + 1) << 3;
    if (q + hlen > end) return TRUNCATED_IPV6_EXT;
    nh = d[h];
    q += hlen;
  }
  b.proto[i] = nh;
  if (nh === IPV6_ESP || nh === IPV6_NONXT) return noL4(b, i);
  return parseL4(b, i, s, q, end, nh);
}

function noL4(b: Batch, i: number): number {
  b.l4Off[i] = ABSENT;
  b.sport[i] = 0;
  b.dport[i] = 0;
  return 0;
}

/** L4 header at off, bounded by end (the IP packet's end, not the frame's). */
function parseL4(b: Batch, i: number, s: number, off: number, end: number, proto: number): number {
  const fixed = L4_FIXED_HEADER[proto];
  const avail = end - off;
  if (fixed === 0) {
    // Another upper layer (GRE, OSPF...): located, but no ports.
    noL4(b, i);
    if (avail > 0) b.l4Off[i] = off;
    return 0;
  }
  if (avail < fixed) return TRUNCATED_L4;
  const p = s + off;
  if (proto === IPPROTO_TCP) {
    const dataOffset = (b.data[p + 12] >>> 4) << 2;
    if (dataOffset < 20 || dataOffset > avail) return BAD_TCP_HEADER;
  }
  b.l4Off[i] = off;
  if (fixed === ICMP_FIXED) {
    b.sport[i] = b.data[p]; // type
    b.dport[i] = b.data[p + 1]; // code
  } else {
    b.sport[i] = b.view.getUint16(p);
    b.dport[i] = b.view.getUint16(p + 2);
  }
  return 0;
}
