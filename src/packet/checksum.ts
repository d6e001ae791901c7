/*
 * checksum: the Internet checksum (RFC 1071) for IPv4 headers and TCP/UDP/ICMP/ICMPv6, and SCTP's
 * CRC32c (RFC 4960 app. B). Used by the synthetic frame builder and by the I/O layer to complete
 * frames that veth hands over with CHECKSUM_PARTIAL (the sender left the L4 checksum to "hardware").
 *
 * Every function computes the value the checksum field must hold, treating that field as zero, so
 * a caller never has to clear it first; verifying a received header is comparing that value with
 * the stored one. Offsets are absolute indices into `data` (a batch arena or a lone frame).
 * Integer-only arithmetic, no allocation; callers bound-check offsets (parse guarantees that the
 * headers it reports are inside the frame).
 */

const IPPROTO_ICMP = 1;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_ICMPV6 = 58;
const IPPROTO_SCTP = 132;

/** One's-complement sum of big-endian 16-bit words of data[off, off+len), unfolded, added to acc. */
export function sum16(data: Uint8Array, off: number, len: number, acc: number): number {
  const end = off + (len & ~1);
  for (let k = off; k < end; k += 2) acc += (data[k] << 8) | data[k + 1];
  if ((len & 1) !== 0) acc += data[end] << 8;
  return acc;
}

/** Fold a sum16 accumulator (< 2^32, true for any frame) to 16 bits and complement it. */
export function foldComplement(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return ~acc & 0xffff;
}

/** IPv4 header checksum over ihlBytes at off, bytes 10..11 (the checksum field) skipped. */
export function ipv4HeaderChecksum(data: Uint8Array, off: number, ihlBytes: number): number {
  return foldComplement(sum16(data, off + 12, ihlBytes - 12, sum16(data, off, 10, 0)));
}

/** Where the checksum field sits inside the L4 header, or -1 for a protocol without one we know. */
export function l4ChecksumOffset(proto: number): number {
  switch (proto) {
    case IPPROTO_TCP:
      return 16;
    case IPPROTO_UDP:
      return 6;
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6:
      return 2;
    case IPPROTO_SCTP:
      return 8;
    default:
      return -1;
  }
}

/**
 * The value the L4 checksum field must hold for the l4Len bytes at l4Off (its own field skipped).
 * TCP, UDP and ICMPv6 include the IPv4/IPv6 pseudo header read from the IP header at l3Off; ICMP
 * has none; UDP maps a computed 0 to 0xffff (0 means "no checksum"); SCTP gets its CRC32c as the
 * u32 whose bytes go on the wire little-end first (as Linux stores it). Returns -1 when the
 * protocol has no known checksum or l4Len cannot hold the field.
 */
export function l4Checksum(
  data: Uint8Array,
  l3Off: number,
  l4Off: number,
  l4Len: number,
  ipVer: number,
  proto: number,
): number {
  const field = l4ChecksumOffset(proto);
  if (field < 0 || l4Len < field + (proto === IPPROTO_SCTP ? 4 : 2)) return -1;
  if (proto === IPPROTO_SCTP) return crc32c(data, l4Off, l4Len, l4Off + field, 4);
  let acc = 0;
  if (proto !== IPPROTO_ICMP) {
    if (ipVer === 4) acc = sum16(data, l3Off + 12, 8, proto + l4Len);
    else acc = sum16(data, l3Off + 8, 32, proto + (l4Len >>> 16) + (l4Len & 0xffff));
  }
  acc = sum16(data, l4Off, field, acc);
  acc = sum16(data, l4Off + field + 2, l4Len - field - 2, acc);
  const sum = foldComplement(acc);
  return proto === IPPROTO_UDP && sum === 0 ? 0xffff : sum;
}

/** Compute the L4 checksum (see l4Checksum) and write it in place; false when not possible. */
export function fixL4Checksum(
  data: Uint8Array,
  l3Off: number,
  l4Off: number,
  l4Len: number,
  ipVer: number,
  proto: number,
): boolean {
  const sum = l4Checksum(data, l3Off, l4Off, l4Len, ipVer, proto);
  if (sum < 0) return false;
  const at = l4Off + l4ChecksumOffset(proto);
  if (proto === IPPROTO_SCTP) {
    data[at] = sum & 0xff;
    data[at + 1] = (sum >>> 8) & 0xff;
    data[at + 2] = (sum >>> 16) & 0xff;
    data[at + 3] = sum >>> 24;
  } else {
    data[at] = sum >>> 8;
    data[at + 1] = sum & 0xff;
  }
  return true;
}

/** CRC32c (Castagnoli, reflected 0x82F63B78) table, built once. */
const CRC32C = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = (c & 1) !== 0 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  CRC32C[n] = c >>> 0;
}

/** CRC32c of data[off, off+len) with `skip` bytes at skipAt read as zero. */
export function crc32c(data: Uint8Array, off: number, len: number, skipAt = -1, skip = 0): number {
  let crc = 0xffffffff;
  const end = off + len;
  for (let k = off; k < end; k++) {
    const byte = k >= skipAt && k < skipAt + skip ? 0 : data[k];
    crc = CRC32C[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}
