/*
 * frames: synthetic frames for tests, benchmarks and sfc explain (not hot path; clarity over speed).
 *
 * buildFrame(spec) assembles Ethernet -> VLAN tags -> MPLS labels | NSH (MD type 1, optional inner
 * Ethernet) -> IPv4 (options, fragment fields) | IPv6 (extension headers) -> TCP/UDP/SCTP/ICMP/
 * ICMPv6 or raw payload, with correct IPv4 header and L4 checksums (checksum.ts), then pads to
 * frameLen. buildArp builds an ARP frame. flowFrames gives n 64-byte frames with distinct 5-tuples
 * for benches; mulberry32 is the deterministic PRNG shared by tests and benches.
 * A malformed spec (bad address string, options too long) throws: builders run at set-up time.
 */
import type { Batch } from '../packet/batch.js';
import { fixL4Checksum, ipv4HeaderChecksum } from '../packet/checksum.js';

export type L4Name = 'tcp' | 'udp' | 'sctp' | 'icmp' | 'icmpv6';
/** An IPv6 extension header: its next-header number (minimal size), or a type with a size in bytes. */
export type Ipv6Ext = number | { type: number; bytes: number };

export interface IpSpec {
  ver: 4 | 6;
  src: string;
  dst: string;
  ttl?: number;
  /** IPv4 identification (16 bits) or IPv6 fragment identification (32 bits). */
  id?: number;
  /** Fragment offset in 8-byte units, as in the header field. */
  fragOffset?: number;
  moreFragments?: boolean;
  /** IPv4 "don't fragment" flag. */
  dontFragment?: boolean;
  /** IPv4 options (padded with zeros to a multiple of 4, at most 40 bytes). */
  options?: Uint8Array;
  /** IPv6 extension headers in order; a fragment header (44) is appended when fragment fields are set. */
  ext?: Ipv6Ext[];
}

export interface L4Spec {
  /** A name builds that header; a number only sets the IP protocol and carries the payload raw. */
  proto: L4Name | number;
  sport?: number;
  dport?: number;
  /** ICMP/ICMPv6 type and code. */
  type?: number;
  code?: number;
  /** TCP flags byte (default ACK). */
  flags?: number;
}

export interface NshSpec {
  spi: number;
  si: number;
  /** Carry an inner Ethernet header (next protocol 3) instead of bare IP. */
  ethernet?: boolean;
}

export interface FrameSpec {
  ethSrc?: string;
  ethDst?: string;
  /** 802.1Q VLAN ids, outer first. */
  vlans?: number[];
  /** Use 802.1ad (0x88a8) for the outer tag. */
  qinq?: boolean;
  /** MPLS labels, outer (top) first. */
  mpls?: number[];
  nsh?: NshSpec;
  ip: IpSpec;
  l4: L4Spec;
  /** Payload bytes, or a length filled with a byte pattern. */
  payload?: Uint8Array | number;
  /** Pad with zeros up to this total size (e.g. 60 or 64); never truncates. */
  frameLen?: number;
}

export interface ArpSpec {
  ethSrc: string;
  ethDst?: string;
  vlans?: number[];
  qinq?: boolean;
  /** 1 request (default), 2 reply. */
  op?: number;
  senderMac?: string;
  senderIp: string;
  targetMac?: string;
  targetIp: string;
  frameLen?: number;
}

export const DEFAULT_ETH_SRC = '02:00:00:00:00:01';
export const DEFAULT_ETH_DST = '02:00:00:00:00:02';

const L4_PROTO: Record<L4Name, number> = { tcp: 6, udp: 17, sctp: 132, icmp: 1, icmpv6: 58 };
const ETH_IPV4 = 0x0800;
const ETH_IPV6 = 0x86dd;

/** Byte sink for header assembly. */
class Writer {
  readonly bytes: number[] = [];
  get length(): number {
    return this.bytes.length;
  }
  u8(x: number): void {
    this.bytes.push(x & 0xff);
  }
  u16(x: number): void {
    this.u8(x >>> 8);
    this.u8(x);
  }
  u32(x: number): void {
    this.u16(x >>> 16);
    this.u16(x);
  }
  put(b: ArrayLike<number>): void {
    for (let k = 0; k < b.length; k++) this.u8(b[k]);
  }
  zeros(n: number): void {
    for (let k = 0; k < n; k++) this.u8(0);
  }
  set16(at: number, x: number): void {
    this.bytes[at] = (x >>> 8) & 0xff;
    this.bytes[at + 1] = x & 0xff;
  }
}

export function macBytes(s: string): Uint8Array {
  const parts = s.split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) throw new Error(`bad MAC address '${s}'`);
  return Uint8Array.from(parts, (p) => parseInt(p, 16));
}

export function ipv4Bytes(s: string): Uint8Array {
  const parts = s.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new Error(`bad IPv4 address '${s}'`);
  }
  return Uint8Array.from(parts, Number);
}

export function ipv6Bytes(s: string): Uint8Array {
  const bad = (): never => {
    throw new Error(`bad IPv6 address '${s}'`);
  };
  const halves = s.split('::');
  if (halves.length > 2) bad();
  const groups = (h: string): number[] => {
    if (h === '') return [];
    const out: number[] = [];
    const parts = h.split(':');
    parts.forEach((p, k) => {
      if (k === parts.length - 1 && p.includes('.')) {
        const v4 = ipv4Bytes(p);
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) out.push(parseInt(p, 16));
      else bad();
    });
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) bad();
  const all = [...head, ...new Array<number>(fill).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, k) => {
    out[2 * k] = g >>> 8;
    out[2 * k + 1] = g & 0xff;
  });
  return out;
}

/** An address as the parser's 4 big-endian u32 words (IPv4 in word 0, words 1..3 zero). */
export function addrWords(s: string): [number, number, number, number] {
  const bytes = s.includes(':') ? ipv6Bytes(s) : ipv4Bytes(s);
  const v = new DataView(bytes.buffer);
  const w = (k: number): number => (k * 4 < bytes.length ? v.getUint32(k * 4) : 0);
  return [w(0), w(1), w(2), w(3)];
}

/** Deterministic PRNG (mulberry32): a function returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function writeEthernet(w: Writer, src: string, dst: string, vlans: number[], qinq: boolean, etherType: number): void {
  w.put(macBytes(dst));
  w.put(macBytes(src));
  vlans.forEach((id, k) => {
    w.u16(k === 0 && qinq ? 0x88a8 : 0x8100);
    w.u16(id & 0x0fff);
  });
  w.u16(etherType);
}

function payloadBytes(p: Uint8Array | number | undefined): Uint8Array {
  if (p instanceof Uint8Array) return p;
  return Uint8Array.from({ length: p ?? 0 }, (_, k) => k & 0xff);
}

function extHeader(e: Ipv6Ext): { type: number; bytes: number } {
  if (typeof e !== 'number') return e;
  return { type: e, bytes: e === 51 ? 12 : 8 };
}

/** MPLS label stack or NSH (MD type 1) between the Ethernet header and the IP packet. */
function writeEncap(w: Writer, spec: FrameSpec, ethSrc: string, ethDst: string, ipType: number): void {
  const labels = spec.mpls ?? [];
  labels.forEach((label, k) => w.u32(((label & 0xfffff) << 12) | (k === labels.length - 1 ? 0x100 : 0) | 64));
  if (!spec.nsh) return;
  const next = spec.nsh.ethernet ? 3 : ipType === ETH_IPV4 ? 1 : 2;
  w.u32((63 << 22) | (6 << 16) | (1 << 8) | next); // version 0, TTL 63, length 6 words, MD type 1
  w.u32(((spec.nsh.spi & 0xffffff) << 8) | (spec.nsh.si & 0xff));
  w.zeros(16); // MD type 1 fixed context
  if (spec.nsh.ethernet) writeEthernet(w, ethSrc, ethDst, [], false, ipType);
}

/** IPv4 header with zero total length and checksum (set once the packet is complete). */
function writeIpv4Header(w: Writer, ip: IpSpec, proto: number): void {
  const opts = ip.options ?? new Uint8Array(0);
  const optLen = (opts.length + 3) & ~3;
  if (optLen > 40) throw new Error('IPv4 options exceed 40 bytes');
  w.u8(0x40 | ((20 + optLen) >>> 2));
  w.u8(0); // DSCP/ECN
  w.u16(0); // total length
  w.u16(ip.id ?? 0);
  w.u16((ip.dontFragment ? 0x4000 : 0) | (ip.moreFragments ? 0x2000 : 0) | ((ip.fragOffset ?? 0) & 0x1fff));
  w.u8(ip.ttl ?? 64);
  w.u8(proto);
  w.u16(0); // header checksum
  w.put(ipv4Bytes(ip.src));
  w.put(ipv4Bytes(ip.dst));
  w.put(opts);
  w.zeros(optLen - opts.length);
}

/** IPv6 header (zero payload length, set later) and its extension headers. */
function writeIpv6Headers(w: Writer, ip: IpSpec, proto: number): void {
  const exts = (ip.ext ?? []).map(extHeader);
  const fragmented = (ip.fragOffset ?? 0) !== 0 || (ip.moreFragments ?? false);
  if (fragmented && !exts.some((e) => e.type === 44)) exts.push({ type: 44, bytes: 8 });
  w.u32(0x60000000);
  w.u16(0); // payload length
  w.u8(exts.length ? exts[0].type : proto);
  w.u8(ip.ttl ?? 64);
  w.put(ipv6Bytes(ip.src));
  w.put(ipv6Bytes(ip.dst));
  exts.forEach((e, k) => {
    w.u8(k + 1 < exts.length ? exts[k + 1].type : proto);
    if (e.type === 44) {
      w.u8(0);
      w.u16((((ip.fragOffset ?? 0) & 0x1fff) << 3) | (ip.moreFragments ? 1 : 0));
      w.u32(ip.id ?? 0);
    } else {
      w.u8(e.type === 51 ? (e.bytes >>> 2) - 2 : (e.bytes >>> 3) - 1); // AH counts 4-byte units
      w.zeros(e.bytes - 2);
    }
  });
}

export function buildFrame(spec: FrameSpec): Uint8Array {
  const { ip, l4 } = spec;
  const mpls = (spec.mpls?.length ?? 0) > 0;
  if (mpls && spec.nsh) throw new Error('a frame carries MPLS or NSH, not both');
  const ipType = ip.ver === 4 ? ETH_IPV4 : ETH_IPV6;
  const ethSrc = spec.ethSrc ?? DEFAULT_ETH_SRC;
  const ethDst = spec.ethDst ?? DEFAULT_ETH_DST;
  const w = new Writer();
  writeEthernet(w, ethSrc, ethDst, spec.vlans ?? [], spec.qinq ?? false, mpls ? 0x8847 : spec.nsh ? 0x894f : ipType);
  writeEncap(w, spec, ethSrc, ethDst, ipType);

  const proto = typeof l4.proto === 'number' ? l4.proto : L4_PROTO[l4.proto];
  const l3 = w.length;
  if (ip.ver === 4) writeIpv4Header(w, ip, proto);
  else writeIpv6Headers(w, ip, proto);
  const l4Start = w.length;

  // A non-first fragment carries no L4 header; a numeric protocol carries the payload raw.
  const payload = payloadBytes(spec.payload);
  const withL4 = typeof l4.proto !== 'number' && (ip.fragOffset ?? 0) === 0;
  if (withL4) writeL4(w, proto, l4, ip.ver, payload.length);
  w.put(payload);
  const ipEnd = w.length;
  if (ip.ver === 4) w.set16(l3 + 2, ipEnd - l3);
  else w.set16(l3 + 4, ipEnd - l3 - 40);
  if (spec.frameLen !== undefined && spec.frameLen > w.length) w.zeros(spec.frameLen - w.length);

  const frame = Uint8Array.from(w.bytes);
  if (ip.ver === 4) {
    const sum = ipv4HeaderChecksum(frame, l3, l4Start - l3);
    frame[l3 + 10] = sum >>> 8;
    frame[l3 + 11] = sum & 0xff;
  }
  if (withL4) fixL4Checksum(frame, l3, l4Start, ipEnd - l4Start, ip.ver, proto);
  return frame;
}

function writeL4(w: Writer, proto: number, l4: L4Spec, ver: 4 | 6, payloadLen: number): void {
  const sport = l4.sport ?? 1234;
  const dport = l4.dport ?? 5678;
  if (proto === 6) {
    w.u16(sport);
    w.u16(dport);
    w.u32(1); // seq
    w.u32(0); // ack
    w.u8(5 << 4);
    w.u8(l4.flags ?? 0x10);
    w.u16(65535); // window
    w.u32(0); // checksum, urgent pointer
  } else if (proto === 17) {
    w.u16(sport);
    w.u16(dport);
    w.u16(8 + payloadLen);
    w.u16(0);
  } else if (proto === 132) {
    w.u16(sport);
    w.u16(dport);
    w.u32(1); // verification tag
    w.u32(0); // CRC32c
  } else {
    w.u8(l4.type ?? (ver === 4 ? 8 : 128)); // echo request
    w.u8(l4.code ?? 0);
    w.u16(0); // checksum
    w.u32(0); // identifier, sequence
  }
}

export function buildArp(spec: ArpSpec): Uint8Array {
  const w = new Writer();
  writeEthernet(w, spec.ethSrc, spec.ethDst ?? 'ff:ff:ff:ff:ff:ff', spec.vlans ?? [], spec.qinq ?? false, 0x0806);
  w.u16(1); // Ethernet
  w.u16(ETH_IPV4);
  w.u8(6);
  w.u8(4);
  w.u16(spec.op ?? 1);
  w.put(macBytes(spec.senderMac ?? spec.ethSrc));
  w.put(ipv4Bytes(spec.senderIp));
  w.put(macBytes(spec.targetMac ?? '00:00:00:00:00:00'));
  w.put(ipv4Bytes(spec.targetIp));
  if (spec.frameLen !== undefined && spec.frameLen > w.length) w.zeros(spec.frameLen - w.length);
  return Uint8Array.from(w.bytes);
}

export interface FlowOptions {
  seed?: number;
  ver?: 4 | 6;
  /** 'mix' alternates UDP and TCP. */
  proto?: 'udp' | 'tcp' | 'mix';
  /** Default 64 (frames that need more stay longer). */
  frameLen?: number;
  ethSrc?: string;
  ethDst?: string;
}

/**
 * n specs with distinct 5-tuples: the source address is a bijection of the index (so distinct for
 * n <= 2^24), destination and ports come from mulberry32(seed).
 */
export function flowSpecs(n: number, opts: FlowOptions = {}): FrameSpec[] {
  if (n > 1 << 24) throw new Error('flowSpecs: at most 2^24 distinct flows');
  const rnd = mulberry32(opts.seed ?? 1);
  const ver = opts.ver ?? 4;
  const specs: FrameSpec[] = [];
  for (let k = 0; k < n; k++) {
    let x = Math.imul(k, 0x2545f5) & 0xffffff;
    x ^= x >>> 12;
    const d = Math.floor(rnd() * 0x10000);
    const src = ver === 4 ? `10.${x >>> 16}.${(x >>> 8) & 0xff}.${x & 0xff}` : `fd00::${(x >>> 16).toString(16)}:${(x & 0xffff).toString(16)}`;
    const dst = ver === 4 ? `192.168.${d >>> 8}.${d & 0xff}` : `fd01::${d.toString(16)}`;
    const proto = opts.proto === 'mix' ? (k & 1 ? 'tcp' : 'udp') : (opts.proto ?? 'udp');
    specs.push({
      ethSrc: opts.ethSrc,
      ethDst: opts.ethDst,
      ip: { ver, src, dst },
      l4: { proto, sport: 1024 + Math.floor(rnd() * 64512), dport: 1 + Math.floor(rnd() * 65535) },
      frameLen: opts.frameLen ?? 64,
    });
  }
  return specs;
}

export function flowFrames(n: number, opts: FlowOptions = {}): Uint8Array[] {
  return flowSpecs(n, opts).map(buildFrame);
}

/** Reset b and push frames into it (all on input port `port`); returns how many fit. */
export function fillBatch(b: Batch, frames: readonly Uint8Array[], port = 0): number {
  b.reset();
  let n = 0;
  for (const f of frames) if (b.push(f, port) >= 0) n++;
  return n;
}
