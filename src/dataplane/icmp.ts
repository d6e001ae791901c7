/*
 * ICMP errors the dataplane sends itself: "fragmentation needed" (IPv4, DF set) and "packet too big"
 * (IPv6) for a frame that an encapsulation pushed over the egress MTU (ARCHITECTURE.md §10: frames
 * pushed over the MTU are a known complaint about SFC systems). The sender then lowers its path MTU
 * by the encapsulation's overhead, which is what a router in its place would make it do.
 *
 * The error goes back to the sender at L2: Ethernet from the MAC the sender addressed to the
 * sender's MAC, IP from the original destination (we own no address; Linux accepts a path-MTU
 * message by the connection it quotes) to the original source, TTL/hop limit 64. It quotes the
 * original IP header and the first 8 payload bytes (IPv4, RFC 792) or as much of the packet as
 * fits in 1280 bytes (IPv6, RFC 4443). Built into a new array (rare: never per packet of a
 * well-sized flow).
 */
import { ipv4HeaderChecksum, l4Checksum } from '../packet/checksum.js';

const ETH = 14;
const IPV6_MIN_MTU = 1280;

/**
 * The error for the IP packet at data[ip .. ip + ipLen) (version `ver`), or null when none is due
 * (IPv4 without DF). `mtu` is the largest IP packet that now fits; macs: [dst 6][src 6] of the error.
 */
export function packetTooBig(data: Uint8Array, ip: number, ipLen: number, ver: number, mtu: number, macs: Uint8Array, macAt: number): Uint8Array | null {
  if (ver === 4) {
    if ((data[ip + 6] & 0x40) === 0) return null; // DF clear: the sender lets routers fragment
    const ihl = (data[ip] & 0x0f) * 4;
    const quote = Math.min(ipLen, ihl + 8);
    const len = 20 + 8 + quote;
    const f = new Uint8Array(ETH + len);
    const v = new DataView(f.buffer);
    f.set(macs.subarray(macAt, macAt + 12), 0);
    v.setUint16(12, 0x0800);
    const h = ETH;
    f[h] = 0x45;
    v.setUint16(h + 2, len);
    f[h + 6] = 0x40;
    f[h + 8] = 64;
    f[h + 9] = 1;
    f.set(data.subarray(ip + 16, ip + 20), h + 12); // from the original destination
    f.set(data.subarray(ip + 12, ip + 16), h + 16); // to the original source
    v.setUint16(h + 10, ipv4HeaderChecksum(f, h, 20));
    const m = h + 20;
    f[m] = 3; // destination unreachable
    f[m + 1] = 4; // fragmentation needed and DF set
    v.setUint16(m + 6, Math.max(68, mtu));
    f.set(data.subarray(ip, ip + quote), m + 8);
    v.setUint16(m + 2, l4Checksum(f, h, m, 8 + quote, 4, 1));
    return f;
  }
  const quote = Math.min(ipLen, IPV6_MIN_MTU - 40 - 8);
  const len = 40 + 8 + quote;
  const f = new Uint8Array(ETH + len);
  const v = new DataView(f.buffer);
  f.set(macs.subarray(macAt, macAt + 12), 0);
  v.setUint16(12, 0x86dd);
  const h = ETH;
  f[h] = 0x60;
  v.setUint16(h + 4, 8 + quote);
  f[h + 6] = 58;
  f[h + 7] = 64;
  f.set(data.subarray(ip + 24, ip + 40), h + 8);
  f.set(data.subarray(ip + 8, ip + 24), h + 24);
  const m = h + 40;
  f[m] = 2; // packet too big
  v.setUint32(m + 4, Math.max(IPV6_MIN_MTU, mtu));
  f.set(data.subarray(ip, ip + quote), m + 8);
  v.setUint16(m + 2, l4Checksum(f, h, m, 8 + quote, 6, 58));
  return f;
}
