/*
 * IP prefixes as the flow classifier API accepts them (neutron-lib type:subnet_or_none) and the
 * overlap test the classifier conflict rules need.
 *
 * Accepted: "<address>/<length>" only. IPv4 must be in canonical dotted-decimal form (no leading
 * zeros, four octets: "10.0.0.0.0/8", "256.0.0.0/8", "010.0.0.0/8" are refused), length 0..32;
 * IPv6 in any RFC 4291 text form (with "::" and an optional dotted IPv4 tail), length 0..128.
 * Host bits may be set ("10.0.0.1/8" is valid and kept as written). The parsed form is
 * {ver, words, len} with the address as big-endian 32-bit words (1 for IPv4, 4 for IPv6).
 */

export interface ParsedPrefix {
  ver: 4 | 6;
  words: number[];
  len: number;
}

const LEN_RE = /^(0|[1-9]\d{0,2})$/;
const OCTET_RE = /^(0|[1-9]\d{0,2})$/;
const HEXTET_RE = /^[0-9a-f]{1,4}$/i;

export function parsePrefix(text: string): ParsedPrefix | undefined {
  const slash = text.indexOf('/');
  if (slash < 0 || slash !== text.lastIndexOf('/')) return undefined;
  const addr = text.slice(0, slash);
  const lenText = text.slice(slash + 1);
  if (!LEN_RE.test(lenText)) return undefined;
  const len = Number(lenText);
  if (addr.includes(':')) {
    const words = parseIPv6(addr);
    return words && len <= 128 ? { ver: 6, words, len } : undefined;
  }
  const word = parseIPv4(addr);
  return word !== undefined && len <= 32 ? { ver: 4, words: [word], len } : undefined;
}

function parseIPv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let word = 0;
  for (const p of parts) {
    if (!OCTET_RE.test(p)) return undefined;
    const octet = Number(p);
    if (octet > 255) return undefined;
    word = ((word << 8) | octet) >>> 0;
  }
  return word;
}

/** Groups of one side of "::" as 16-bit values; a dotted IPv4 tail counts as two groups. */
function hextets(side: string, last: boolean): number[] | undefined {
  if (side === '') return [];
  const parts = side.split(':');
  const out: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (last && i === parts.length - 1 && p.includes('.')) {
      const v4 = parseIPv4(p);
      if (v4 === undefined) return undefined;
      out.push(v4 >>> 16, v4 & 0xffff);
    } else if (HEXTET_RE.test(p)) {
      out.push(Number.parseInt(p, 16));
    } else {
      return undefined;
    }
  }
  return out;
}

function parseIPv6(text: string): number[] | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const head = hextets(halves[0]!, false);
    const tail = hextets(halves[1]!, true);
    if (!head || !tail || head.length + tail.length > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = hextets(text, true);
    if (!all || all.length !== 8) return undefined;
    groups = all;
  }
  const words: number[] = [];
  for (let i = 0; i < 8; i += 2) words.push(((groups[i]! << 16) | groups[i + 1]!) >>> 0);
  return words;
}

/** True when one prefix contains the other (they share their first min(len) bits). */
export function prefixesOverlap(a: ParsedPrefix, b: ParsedPrefix): boolean {
  if (a.ver !== b.ver) return false;
  let bits = Math.min(a.len, b.len);
  for (let i = 0; bits > 0; i++, bits -= 32) {
    const mask = bits >= 32 ? 0xffffffff : ~(0xffffffff >>> bits) >>> 0;
    if (((a.words[i]! ^ b.words[i]!) & mask) >>> 0 !== 0) return false;
  }
  return true;
}
