/*
 * Encapsulations, in place on a batch slot (spec B.2): push and pop one MPLS label, push and pop NSH
 * MD type 1 with a new outer Ethernet header. They know nothing of ports or paths, so the same code
 * marks frames for an SF-aware hop and (later) between hosts.
 *
 *  - MPLS: the label goes after the Ethernet header and its VLAN tags; the ethertype becomes 0x8847;
 *    label = (spi << 8) | si, TTL = si, bottom of stack. Popping the bottom label restores the
 *    ethertype from the inner IP version nibble.
 *  - NSH (RFC 8300): a new outer Ethernet header (destination set later by the hop's set_dst_mac,
 *    source = the inner frame's source MAC, ethertype 0x894F), then the base header (version 0,
 *    TTL 63, length 6 words, MD type 1, next protocol 3 = Ethernet), the service path header
 *    (SPI << 8 | SI) and 16 bytes of zero context. Popping removes both; an NSH packet whose next
 *    protocol is IPv4/IPv6 gets an Ethernet header back from the outer one.
 * Pushing moves b.start[i] back into the slot's headroom (Snabb's prepend), so the payload is never
 * copied; the fields parse filled (offsets, encap, label) are kept true. Each returns false, having
 * changed nothing, when the frame is not what it expects (the caller counts a drop).
 */
import { ABSENT, ENCAP_MPLS, ENCAP_NONE, ENCAP_NSH, SLOT, type Batch } from '../packet/batch.js';

export const MPLS_BYTES = 4;
export const NSH_MD1_BYTES = 24;
const ETH_BYTES = 14;
export const NSH_BYTES = ETH_BYTES + NSH_MD1_BYTES;

const ETH_IPV4 = 0x0800;
const ETH_IPV6 = 0x86dd;
const ETH_MPLS = 0x8847;
const ETH_NSH = 0x894f;
const NSH_TTL = 63;
const NSH_NEXT_IPV4 = 1;
const NSH_NEXT_IPV6 = 2;
const NSH_NEXT_ETHERNET = 3;

/** Bytes before the ethertype field: MACs and VLAN tags. */
function macsAndTags(b: Batch, i: number): number {
  return 12 + 4 * b.vlanCount[i];
}

/** Move slot i's start by `delta` bytes (negative: grow at the front), keeping header offsets true. */
export function shift(b: Batch, i: number, delta: number): void {
  b.start[i] += delta;
  b.len[i] -= delta;
  if (b.l3Off[i] !== ABSENT) b.l3Off[i] -= delta;
  if (b.l4Off[i] !== ABSENT) b.l4Off[i] -= delta;
}

/** Room in front of slot i's frame for `n` more bytes. */
export function hasRoom(b: Batch, i: number, n: number): boolean {
  return b.start[i] - n >= Math.floor(b.start[i] / SLOT) * SLOT;
}

export function pushMpls(b: Batch, i: number, label: number, ttl: number): boolean {
  if (!hasRoom(b, i, MPLS_BYTES)) return false;
  const h = macsAndTags(b, i);
  const s = b.start[i];
  b.data.copyWithin(s - MPLS_BYTES, s, s + h + 2);
  shift(b, i, -MPLS_BYTES);
  const at = b.start[i] + h;
  b.view.setUint16(at, ETH_MPLS);
  b.view.setUint32(at + 2, ((label & 0xfffff) << 12) | (1 << 8) | (ttl & 0xff));
  b.encap[i] = ENCAP_MPLS;
  b.label[i] = label & 0xfffff;
  return true;
}

export function popMpls(b: Batch, i: number): boolean {
  const h = macsAndTags(b, i);
  const s = b.start[i];
  if (b.len[i] < h + 2 + MPLS_BYTES + 1 || b.view.getUint16(s + h) !== ETH_MPLS) return false;
  const bottom = (b.data[s + h + 4] & 1) === 1;
  let type = ETH_MPLS;
  if (bottom) {
    const nibble = b.data[s + h + 2 + MPLS_BYTES] >>> 4;
    if (nibble !== 4 && nibble !== 6) return false;
    type = nibble === 4 ? ETH_IPV4 : ETH_IPV6;
  }
  b.data.copyWithin(s + MPLS_BYTES, s, s + h);
  shift(b, i, MPLS_BYTES);
  b.view.setUint16(b.start[i] + h, type);
  b.encap[i] = bottom ? ENCAP_NONE : ENCAP_MPLS;
  b.label[i] = bottom ? 0 : b.view.getUint32(b.start[i] + h + 2) >>> 12;
  return true;
}

export function pushNsh(b: Batch, i: number, spi: number, si: number): boolean {
  if (!hasRoom(b, i, NSH_BYTES)) return false;
  const inner = b.start[i];
  shift(b, i, -NSH_BYTES);
  const s = b.start[i];
  const v = b.view;
  b.data.copyWithin(s + 6, inner + 6, inner + 12); // outer source = inner source; destination set by the hop
  v.setUint16(s + 12, ETH_NSH);
  const n = s + ETH_BYTES;
  v.setUint32(n, (NSH_TTL << 22) | ((NSH_MD1_BYTES / 4) << 16) | (1 << 8) | NSH_NEXT_ETHERNET);
  v.setUint32(n + 4, ((spi & 0xffffff) << 8) | (si & 0xff));
  b.data.fill(0, n + 8, n + NSH_MD1_BYTES);
  b.encap[i] = ENCAP_NSH;
  b.label[i] = (((spi & 0xffffff) << 8) | (si & 0xff)) >>> 0;
  return true;
}

/**
 * Where the Ethernet header inside slot i's NSH packet starts (absolute offset in b.data), or -1
 * when the frame is not NSH or carries no whole Ethernet header (next protocol IPv4/IPv6).
 */
export function nshInnerEthernet(b: Batch, i: number): number {
  const s = b.start[i];
  const h = macsAndTags(b, i);
  if (b.len[i] < h + 2 + 8 || b.view.getUint16(s + h) !== ETH_NSH) return -1;
  const n = s + h + 2;
  const inner = n + (b.data[n + 1] & 0x3f) * 4;
  return b.data[n + 3] === NSH_NEXT_ETHERNET && inner + ETH_BYTES <= s + b.len[i] ? inner : -1;
}

export function popNsh(b: Batch, i: number): boolean {
  const s = b.start[i];
  const v = b.view;
  const h = macsAndTags(b, i);
  if (b.len[i] < h + 2 + 8 || v.getUint16(s + h) !== ETH_NSH) return false;
  const n = s + h + 2;
  const nshLen = ((v.getUint32(n) >>> 16) & 0x3f) * 4;
  const next = v.getUint32(n) & 0xff;
  const inner = n + nshLen;
  if (nshLen < 8 || inner - s >= b.len[i]) return false;
  if (next === NSH_NEXT_ETHERNET) {
    if (nshInnerEthernet(b, i) < 0) return false;
    shift(b, i, inner - s);
    b.vlanCount[i] = 0; // (the inner header's tags: parse is not re-run; only macsAndTags reads this)
  } else if (next === NSH_NEXT_IPV4 || next === NSH_NEXT_IPV6) {
    // Bare IP inside: the outer MACs become the header in front of it.
    b.data.copyWithin(inner - ETH_BYTES, s, s + 12);
    v.setUint16(inner - 2, next === NSH_NEXT_IPV4 ? ETH_IPV4 : ETH_IPV6);
    shift(b, i, inner - ETH_BYTES - s);
    b.vlanCount[i] = 0;
  } else {
    return false;
  }
  b.encap[i] = ENCAP_NONE;
  b.label[i] = 0;
  return true;
}

/** Offset of a frame's ethertype after its VLAN tags (802.1Q, 802.1ad, 0x9100), for reading frames off the data path. */
export function ethertypeAt(frame: Uint8Array): number {
  let at = 12;
  while (at + 4 <= frame.length && [0x8100, 0x88a8, 0x9100].includes((frame[at] << 8) | frame[at + 1])) at += 4;
  return at;
}

/** Where a frame's (first) MPLS or NSH header sits after its VLAN tags, for reading frames off the data path. */
export function findEncap(frame: Uint8Array): { kind: 'mpls' | 'nsh'; at: number } | null {
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const at = ethertypeAt(frame);
  if (at + 2 > frame.length) return null;
  const type = v.getUint16(at);
  if (type === ETH_MPLS && at + 6 <= frame.length) return { kind: 'mpls', at: at + 2 };
  if (type === ETH_NSH && at + 10 <= frame.length) return { kind: 'nsh', at: at + 2 };
  return null;
}

/** A frame's MPLS or NSH header in words ('' when it carries none), as explain and trace print it. */
export function describeEncap(frame: Uint8Array): string {
  const e = findEncap(frame);
  if (e === null) return '';
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (e.kind === 'mpls') {
    const w = v.getUint32(e.at);
    const label = w >>> 12;
    return `MPLS label ${label} (SPI ${label >>> 8}, SI ${label & 0xff}) TTL ${w & 0xff}`;
  }
  const sp = v.getUint32(e.at + 4);
  return `NSH SPI ${sp >>> 8} SI ${sp & 0xff}`;
}
