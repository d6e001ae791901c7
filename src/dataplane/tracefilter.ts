/*
 * Trace filter: which live frames `sfc trace --match` follows, and the key that recognises the
 * same packet again when an SF sends it back (a journey is several passes through the engine).
 *
 * A small dissector walks a frame as the data path sees it — Ethernet, VLAN tags, an MPLS label
 * stack or an NSH header (the chain's encapsulation on an SF-aware hop) — to the IP packet inside,
 * and a tcpdump-like expression is matched against that packet:
 *   primitive := tcp | udp | sctp | icmp | icmp6 | ip | ip6 | [src|dst] host ADDR | [src|dst] port N
 *   expr      := [not] primitive { [and] [not] primitive }
 * The key is the IP addresses, protocol, ports and IPv4 id, plus the first 32 bytes of the L4
 * payload: what survives an SF that rewrites MACs, routes, or encapsulates.
 * Runs only while a trace is on (per traced frame, off the untraced path).
 */
import { ethertypeAt } from './encap.js';
import { parseAddress } from '../classifier/rule.js';

export interface Dissected {
  ver: 4 | 6;
  proto: number;
  src: string;
  dst: string;
  /** The addresses as they are in the frame (4 or 16 bytes; views of it). */
  srcBytes: Uint8Array;
  dstBytes: Uint8Array;
  sport: number;
  dport: number;
  key: string;
}

const PROTO_NUMBERS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, sctp: 132, icmp6: 58 };
const WITH_PORTS = new Set([6, 17, 132]);
/** L4 payload bytes in the key: enough to tell apart packets of one flow whose IP id does not change (DF). */
const KEY_PAYLOAD = 32;

function ipv4Text(f: Uint8Array, at: number): string {
  return `${f[at]}.${f[at + 1]}.${f[at + 2]}.${f[at + 3]}`;
}

function ipv6Text(f: Uint8Array, at: number): string {
  const words: string[] = [];
  for (let k = 0; k < 16; k += 2) words.push(((f[at + k] << 8) | f[at + k + 1]).toString(16));
  return words.join(':');
}

/** The IP packet inside a frame (through VLAN, MPLS and NSH), or null when there is none. */
export function dissect(f: Uint8Array): Dissected | null {
  const u16 = (at: number) => (f[at] << 8) | f[at + 1];
  if (f.length < 14) return null;
  let at = ethertypeAt(f);
  if (at + 2 > f.length) return null;
  const type = u16(at);
  at += 2;
  let ver = 0;
  if (type === 0x8847) {
    while (at + 4 <= f.length && (f[at + 2] & 1) === 0) at += 4; // to the bottom of the stack
    at += 4;
    ver = f[at] >> 4;
  } else if (type === 0x894f) {
    if (at + 8 > f.length) return null;
    const next = f[at + 3];
    at += (f[at + 1] & 0x3f) * 4;
    if (next === 3) return dissect(f.subarray(at)); // an Ethernet frame inside
    ver = next === 1 ? 4 : next === 2 ? 6 : 0;
  } else {
    ver = type === 0x0800 ? 4 : type === 0x86dd ? 6 : 0;
  }
  let proto: number;
  let l4: number;
  let src: string;
  let dst: string;
  let first: number;
  let id = '';
  if (ver === 4 && at + 20 <= f.length) {
    proto = f[at + 9];
    first = at + 12;
    src = ipv4Text(f, at + 12);
    dst = ipv4Text(f, at + 16);
    id = String(u16(at + 4));
    const later = (u16(at + 6) & 0x1fff) !== 0; // a non-first fragment has no L4 header
    l4 = later ? -1 : at + (f[at] & 0xf) * 4;
  } else if (ver === 6 && at + 40 <= f.length) {
    proto = f[at + 6];
    first = at + 8;
    src = ipv6Text(f, at + 8);
    dst = ipv6Text(f, at + 24);
    l4 = at + 40;
  } else {
    return null;
  }
  const ports = l4 >= 0 && WITH_PORTS.has(proto) && l4 + 4 <= f.length;
  const sport = ports ? u16(l4) : 0;
  const dport = ports ? u16(l4 + 2) : 0;
  const payload = l4 < 0 ? l4 : l4 + (proto === 6 ? ((f[l4 + 12] ?? 0x50) >> 4) * 4 : proto === 17 ? 8 : 4);
  let head = '';
  for (let k = payload; k >= 0 && k < Math.min(payload + KEY_PAYLOAD, f.length); k++) head += f[k].toString(16).padStart(2, '0');
  const len = ver === 4 ? 4 : 16;
  const srcBytes = f.subarray(first, first + len);
  const dstBytes = f.subarray(first + len, first + 2 * len);
  return { ver: ver as 4 | 6, proto, src, dst, srcBytes, dstBytes, sport, dport, key: `${proto} ${src} ${sport} ${dst} ${dport} ${id} ${head}` };
}

export type FrameMatch = (d: Dissected) => boolean;

/** Compile a filter expression; throws Error naming the word it could not read. */
export function compileMatch(expr: string): FrameMatch {
  const words = expr.trim().split(/\s+/).filter((w) => w !== '');
  const terms: FrameMatch[] = [];
  let k = 0;
  const fail = (why: string): never => {
    throw new Error(`bad match '${expr}': ${why} (expected e.g. 'udp dst port 53', 'tcp and host 10.0.0.2', 'not icmp')`);
  };
  while (k < words.length) {
    if (terms.length > 0 && words[k] === 'and') k++; // as in tcpdump, 'udp dst port 53' needs none
    let negate = false;
    if (words[k] === 'not') {
      negate = true;
      k++;
    }
    let dir: 'src' | 'dst' | null = null;
    if (words[k] === 'src' || words[k] === 'dst') dir = words[k++] as 'src' | 'dst';
    const word = words[k++];
    let term: FrameMatch;
    if (word === undefined) term = fail('it ends too early');
    else if (dir === null && word in PROTO_NUMBERS) term = (d) => d.proto === PROTO_NUMBERS[word];
    else if (dir === null && (word === 'ip' || word === 'ip6')) term = (d) => d.ver === (word === 'ip' ? 4 : 6);
    else if (word === 'host') {
      const a = parseAddress(words[k] ?? '');
      if (a === null) fail(`'${words[k] ?? ''}' is not an IP address`);
      const bytes = new Uint8Array(16);
      a!.words.forEach((w, n) => new DataView(bytes.buffer).setUint32(n * 4, w));
      const want = a!.ver === 4 ? ipv4Text(bytes, 0) : ipv6Text(bytes, 0);
      k++;
      term = (d) => (dir !== 'dst' && d.src === want) || (dir !== 'src' && d.dst === want);
    } else if (word === 'port') {
      const p = Number(words[k]);
      if (!(Number.isInteger(p) && p >= 0 && p <= 65535)) fail(`'${words[k] ?? ''}' is not a port`);
      k++;
      term = (d) => WITH_PORTS.has(d.proto) && ((dir !== 'dst' && d.sport === p) || (dir !== 'src' && d.dport === p));
    } else term = fail(`unknown word '${word}'`);
    terms.push(negate ? (d) => !term(d) : term);
  }
  return (d) => terms.every((t) => t(d));
}
