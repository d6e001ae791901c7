/*
 * Rule: a flow classifier reduced to numbers, the input of the classifier compiler (lookup.ts).
 *
 * networking-sfc classifiers are strings and nulls (model.ts); the data path wants integers. This
 * module does that conversion once, on the control thread:
 *  - ethertype -> ipVer, protocol -> IP protocol number (icmp is 1 for IPv4, 58 for IPv6);
 *  - prefixes -> 4 u32 words (IPv4 in word 0) plus a length, host bits masked off (the API accepts
 *    and echoes `10.0.0.1/8`, but it matches as `10.0.0.0/8`); a null prefix is length 0 (any);
 *  - port ranges -> inclusive [min, max]; a single bound is an open range (min 0 / max 65535);
 *  - logical_source_port -> the caller's port index (-1 = any).
 * The reverse path of a symmetric chain (spec B.6) classifies at logical_destination_port with the
 * source and destination prefixes and port ranges swapped.
 *
 * The address parsers are written here (not node:net) because the API must be strict about form:
 * IPv4 only in canonical dotted decimal, IPv6 with at most one `::` and an optional trailing
 * embedded IPv4. They return null on bad input so the control validator can reuse them.
 */
/**
 * The fields of a flow classifier this module reads (networking-sfc's names; the control model's
 * FlowClassifier is one). Declared here so the classifier does not depend on the API model.
 */
export interface ClassifierFields {
  id: string;
  ethertype: 'IPv4' | 'IPv6';
  protocol: 'tcp' | 'udp' | 'icmp' | null;
  source_ip_prefix: string | null;
  destination_ip_prefix: string | null;
  source_port_range_min: number | null;
  source_port_range_max: number | null;
  destination_port_range_min: number | null;
  destination_port_range_max: number | null;
  logical_source_port: string | null;
  logical_destination_port: string | null;
}

export interface Rule {
  ipVer: 4 | 6;
  /** IP protocol number, -1 = any. */
  proto: number;
  /** 4 u32 words (IPv4 in word 0), host bits clear; srcLen 0 = any. */
  src: number[];
  srcLen: number;
  dst: number[];
  dstLen: number;
  /** Inclusive L4 port ranges; 0..65535 = any. */
  sportMin: number;
  sportMax: number;
  dportMin: number;
  dportMax: number;
  /** Logical port index the rule applies at, -1 = any. */
  inPort: number;
}

export interface Address {
  ver: 4 | 6;
  words: number[];
}

export interface Prefix extends Address {
  len: number;
}

export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_ICMPV6 = 58;

const PORT_MAX = 65535;

/** Parse IPv4 dotted decimal (no leading zeros) into a u32, or -1. */
function parseIPv4(text: string): number {
  const parts = text.split('.');
  if (parts.length !== 4) return -1;
  let v = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return -1;
    const n = Number(p);
    if (n > 255) return -1;
    v = v * 256 + n;
  }
  return v;
}

/** Parse IPv6 text into 8 16-bit groups, or null. */
function parseIPv6Groups(text: string): number[] | null {
  const halves = text.toLowerCase().split('::');
  if (halves.length > 2) return null;
  const sides: number[][] = [];
  for (let h = 0; h < halves.length; h++) {
    const groups: number[] = [];
    const fields = halves[h] === '' ? [] : halves[h].split(':');
    for (let f = 0; f < fields.length; f++) {
      const field = fields[f];
      const last = h === halves.length - 1 && f === fields.length - 1;
      if (last && field.includes('.')) {
        const v4 = parseIPv4(field);
        if (v4 < 0) return null;
        groups.push(v4 >>> 16, v4 & 0xffff);
      } else if (/^[0-9a-f]{1,4}$/.test(field)) {
        groups.push(parseInt(field, 16));
      } else {
        return null;
      }
    }
    sides.push(groups);
  }
  if (sides.length === 1) return sides[0].length === 8 ? sides[0] : null;
  const used = sides[0].length + sides[1].length;
  if (used > 7) return null;
  return [...sides[0], ...new Array<number>(8 - used).fill(0), ...sides[1]];
}

/** Parse an IPv4 or IPv6 address (no prefix length); null when malformed. */
export function parseAddress(text: string): Address | null {
  if (text.includes(':')) {
    const g = parseIPv6Groups(text);
    if (!g) return null;
    const words = [0, 1, 2, 3].map((k) => ((g[2 * k] << 16) | g[2 * k + 1]) >>> 0);
    return { ver: 6, words };
  }
  const v4 = parseIPv4(text);
  return v4 < 0 ? null : { ver: 4, words: [v4, 0, 0, 0] };
}

/** Parse `address/len` (the slash is required); host bits are kept as written. Null when malformed. */
export function parsePrefix(text: string): Prefix | null {
  const slash = text.indexOf('/');
  if (slash < 0) return null;
  const addr = parseAddress(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (!addr || !/^[0-9]{1,3}$/.test(lenText)) return null;
  const len = Number(lenText);
  if (len > (addr.ver === 4 ? 32 : 128)) return null;
  return { ver: addr.ver, words: addr.words, len };
}

/** The words with every bit past the first `len` cleared (len counts from word 0's top bit). */
export function maskWords(words: readonly number[], len: number): number[] {
  return [0, 1, 2, 3].map((k) => {
    const bits = Math.max(0, Math.min(32, len - 32 * k));
    return bits === 0 ? 0 : (words[k] & (-1 << (32 - bits))) >>> 0;
  });
}

/** Text form: IPv4 dotted, IPv6 lower-case with the first longest zero run (>= 2 groups) as `::`. */
export function formatAddress(ver: 4 | 6, words: readonly number[]): string {
  if (ver === 4) return [24, 16, 8, 0].map((s) => (words[0] >>> s) & 0xff).join('.');
  const g: number[] = [];
  for (let k = 0; k < 4; k++) g.push(words[k] >>> 16, words[k] & 0xffff);
  let bestAt = -1;
  let bestLen = 1;
  for (let at = 0; at < 8; ) {
    let end = at;
    while (end < 8 && g[end] === 0) end++;
    if (end - at > bestLen) [bestAt, bestLen] = [at, end - at];
    at = end === at ? at + 1 : end;
  }
  const hex = (from: number, to: number) => g.slice(from, to).map((x) => x.toString(16)).join(':');
  return bestAt < 0 ? hex(0, 8) : `${hex(0, bestAt)}::${hex(bestAt + bestLen, 8)}`;
}

function protoNumber(protocol: ClassifierFields['protocol'], ipVer: 4 | 6): number {
  switch (protocol) {
    case 'tcp':
      return PROTO_TCP;
    case 'udp':
      return PROTO_UDP;
    case 'icmp':
      return ipVer === 4 ? PROTO_ICMP : PROTO_ICMPV6;
    default:
      return -1;
  }
}

function prefixOf(text: string | null, ipVer: 4 | 6, what: string): { words: number[]; len: number } {
  if (text === null) return { words: [0, 0, 0, 0], len: 0 };
  const p = parsePrefix(text);
  if (!p || p.ver !== ipVer) throw new Error(`flow classifier ${what} '${text}' is not an IPv${ipVer} prefix`);
  return { words: maskWords(p.words, p.len), len: p.len };
}

/**
 * Numeric rule for a (validated) classifier. `portIndex` maps a logical port id to the caller's
 * index; a null logical port (or `anyPort`) gives inPort -1. `reverse` builds the reverse path's
 * rule: at logical_destination_port, with source and destination fields swapped.
 * Throws on a prefix of the wrong family or an unknown port (control path only).
 */
export function ruleFromClassifier(
  fc: ClassifierFields,
  portIndex: (portId: string) => number,
  opts: { reverse?: boolean; anyPort?: boolean } = {},
): Rule {
  const ipVer = fc.ethertype === 'IPv6' ? 6 : 4;
  const s = prefixOf(fc.source_ip_prefix, ipVer, 'source_ip_prefix');
  const d = prefixOf(fc.destination_ip_prefix, ipVer, 'destination_ip_prefix');
  const sMin = fc.source_port_range_min ?? 0;
  const sMax = fc.source_port_range_max ?? PORT_MAX;
  const dMin = fc.destination_port_range_min ?? 0;
  const dMax = fc.destination_port_range_max ?? PORT_MAX;
  const portId = opts.reverse ? fc.logical_destination_port : fc.logical_source_port;
  let inPort = -1;
  if (!opts.anyPort && portId !== null) {
    inPort = portIndex(portId);
    if (inPort < 0) throw new Error(`flow classifier ${fc.id}: unknown logical port ${portId}`);
  }
  const proto = protoNumber(fc.protocol, ipVer);
  if (opts.reverse) {
    return {
      ipVer, proto,
      src: d.words, srcLen: d.len, dst: s.words, dstLen: s.len,
      sportMin: dMin, sportMax: dMax, dportMin: sMin, dportMax: sMax,
      inPort,
    };
  }
  return {
    ipVer, proto,
    src: s.words, srcLen: s.len, dst: d.words, dstLen: d.len,
    sportMin: sMin, sportMax: sMax, dportMin: dMin, dportMax: dMax,
    inPort,
  };
}
