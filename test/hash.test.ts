// Flow hash semantics: which packet fields each lb_fields mask reads, the swap rule, fragments,
// and the spread of the low bits that Maglev indexes with. Every case runs for both hashers.
import { describe, expect, it } from 'vitest';
import { Batch } from '../src/packet/batch.js';
import { LB_FIELDS } from '../src/control/model.js';
import {
  createXxhFlowHasher,
  DEFAULT_LB_MASK,
  hashFlow,
  LB_ALL_BITS,
  LB_ETH_DST,
  LB_ETH_SRC,
  LB_IP_DST,
  LB_IP_SRC,
  LB_PORT_BITS,
  LB_PROTO,
  LB_TCP_DST,
  LB_TCP_SRC,
  LB_UDP_DST,
  LB_UDP_SRC,
  lbFieldMask,
  type FlowHasher,
} from '../src/hash/flowhash.js';

/** The packet fields a hash may read. */
type Field = 'eth_src' | 'eth_dst' | 'ip_src' | 'ip_dst' | 'ip_src_low_word' | 'proto' | 'sport' | 'dport';
const FIELDS: Field[] = ['eth_src', 'eth_dst', 'ip_src', 'ip_dst', 'ip_src_low_word', 'proto', 'sport', 'dport'];

let seed = 0x9e3779b9;
function rand32(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return seed >>> 0;
}

/** A slot holding a random IPv6 flow of the given protocol (all four address words set). */
function randomSlot(b: Batch, proto: number): number {
  const frame = new Uint8Array(64);
  for (let k = 0; k < 12; k++) frame[k] = rand32() & 0xff;
  const i = b.push(frame, 0);
  b.ipVer[i] = 6;
  for (let w = 0; w < 4; w++) {
    b.src[i * 4 + w] = rand32();
    b.dst[i * 4 + w] = rand32();
  }
  b.proto[i] = proto;
  b.sport[i] = rand32() & 0xffff;
  b.dport[i] = rand32() & 0xffff;
  return i;
}

/** Change one field of slot i to a different value (proto becomes `protoTo`). */
function mutate(b: Batch, i: number, f: Field, protoTo: number): void {
  const s = b.start[i];
  switch (f) {
    case 'eth_src':
      b.data[s + 6 + (rand32() % 6)] ^= 0x5a;
      break;
    case 'eth_dst':
      b.data[s + (rand32() % 6)] ^= 0x5a;
      break;
    case 'ip_src':
      b.src[i * 4] ^= 0x01000000;
      break;
    case 'ip_dst':
      b.dst[i * 4 + 2] ^= 0x80;
      break;
    case 'ip_src_low_word':
      b.src[i * 4 + 3] ^= 1;
      break;
    case 'proto':
      b.proto[i] = protoTo;
      break;
    case 'sport':
      b.sport[i] ^= 0x0101;
      break;
    case 'dport':
      b.dport[i] ^= 0x8000;
      break;
  }
}

interface Case {
  name: string;
  mask: number;
  proto: number;
  /** Protocol for the 'proto' mutation; omitted where changing it would also change which ports count. */
  protoTo?: number;
  reads: Field[];
}
const CASES: Case[] = [
  { name: 'eth_src', mask: LB_ETH_SRC, proto: 6, reads: ['eth_src'] },
  { name: 'eth_dst', mask: LB_ETH_DST, proto: 6, reads: ['eth_dst'] },
  { name: 'ip_src (all IPv6 words)', mask: LB_IP_SRC, proto: 6, reads: ['ip_src', 'ip_src_low_word'] },
  { name: 'ip_dst', mask: LB_IP_DST, proto: 17, reads: ['ip_dst'] },
  { name: 'tcp_src on TCP', mask: LB_TCP_SRC, proto: 6, reads: ['sport'] },
  { name: 'tcp_dst on TCP', mask: LB_TCP_DST, proto: 6, reads: ['dport'] },
  { name: 'tcp_src/dst on UDP', mask: LB_TCP_SRC | LB_TCP_DST, proto: 17, reads: [] },
  { name: 'udp_src on UDP', mask: LB_UDP_SRC, proto: 17, reads: ['sport'] },
  { name: 'udp_dst on UDP', mask: LB_UDP_DST, proto: 17, reads: ['dport'] },
  { name: 'udp_src/dst on TCP', mask: LB_UDP_SRC | LB_UDP_DST, proto: 6, reads: [] },
  {
    name: 'default 5-tuple on SCTP',
    mask: DEFAULT_LB_MASK,
    proto: 132,
    protoTo: 33, // SCTP -> DCCP: both have ports, so only the proto value differs
    reads: ['ip_src', 'ip_src_low_word', 'ip_dst', 'proto', 'sport', 'dport'],
  },
  {
    name: 'default 5-tuple on ICMP (type/code ignored)',
    mask: DEFAULT_LB_MASK,
    proto: 1,
    protoTo: 58,
    reads: ['ip_src', 'ip_src_low_word', 'ip_dst', 'proto'],
  },
  {
    name: 'L3 only (ports stripped)',
    mask: DEFAULT_LB_MASK & ~LB_PORT_BITS,
    proto: 6,
    protoTo: 17,
    reads: ['ip_src', 'ip_src_low_word', 'ip_dst', 'proto'],
  },
  { name: 'eth_src ignores proto', mask: LB_ETH_SRC, proto: 6, protoTo: 17, reads: ['eth_src'] },
];

const HASHERS: [string, () => Promise<FlowHasher>][] = [
  ['js-int32', async () => hashFlow],
  ['xxhash-wasm', createXxhFlowHasher],
];

describe('lbFieldMask', () => {
  it('gives bit i to LB_FIELDS[i] and ORs a list', () => {
    LB_FIELDS.forEach((f, i) => expect(lbFieldMask([f])).toBe(1 << i));
    expect(lbFieldMask(['ip_src', 'tcp_dst'])).toBe(LB_IP_SRC | LB_TCP_DST);
    expect(lbFieldMask([...LB_FIELDS])).toBe((1 << LB_FIELDS.length) - 1);
  });

  it('maps an empty list to the default 5-tuple, which includes proto', () => {
    expect(lbFieldMask([])).toBe(DEFAULT_LB_MASK);
    expect(DEFAULT_LB_MASK & LB_PROTO).toBe(LB_PROTO);
    expect(DEFAULT_LB_MASK & (LB_ETH_SRC | LB_ETH_DST)).toBe(0);
  });

  it('rejects a name that is not an lb_field', () => {
    expect(() => lbFieldMask(['ip_proto' as never])).toThrow(/ip_proto/);
  });
});

describe.each(HASHERS)('%s flow hash', (_name, make) => {
  it.each(CASES)('$name reads exactly its fields', async ({ mask, proto, protoTo, reads }) => {
    const hash = await make();
    for (let round = 0; round < 20; round++) {
      for (const f of FIELDS) {
        if (f === 'proto' && protoTo === undefined) continue;
        const b = new Batch();
        const i = randomSlot(b, proto);
        const before = hash(b, i, mask, false, b.data, b.start[i]);
        mutate(b, i, f, protoTo ?? proto);
        const after = hash(b, i, mask, false, b.data, b.start[i]);
        if (reads.includes(f)) expect(after, `field ${f} should change the hash`).not.toBe(before);
        else expect(after, `field ${f} should not change the hash`).toBe(before);
      }
    }
  });

  it('is a deterministic uint32 and depends on the mask', async () => {
    const hash = await make();
    const b = new Batch();
    const i = randomSlot(b, 6);
    const h = hash(b, i, DEFAULT_LB_MASK, false, b.data, b.start[i]);
    expect(hash(b, i, DEFAULT_LB_MASK, false, b.data, b.start[i])).toBe(h);
    expect(Number.isInteger(h) && h >= 0 && h <= 0xffffffff).toBe(true);
    expect(hash(b, i, LB_ALL_BITS, false, b.data, b.start[i])).not.toBe(h);
  });

  it('swap=true reads every field in the opposite role', async () => {
    const hash = await make();
    const b = new Batch();
    const i = randomSlot(b, 17);
    // Slot j is slot i with source and destination exchanged in every layer.
    const j = b.push(b.frame(i), 0);
    const si = b.start[i];
    const sj = b.start[j];
    b.data.copyWithin(sj, si + 6, si + 12);
    b.data.copyWithin(sj + 6, si, si + 6);
    b.src.set(b.dst.subarray(i * 4, i * 4 + 4), j * 4);
    b.dst.set(b.src.subarray(i * 4, i * 4 + 4), j * 4);
    b.proto[j] = 17;
    b.sport[j] = b.dport[i];
    b.dport[j] = b.sport[i];
    for (let mask = 1; mask <= LB_ALL_BITS; mask++) {
      expect(hash(b, j, mask, true, b.data, b.start[j])).toBe(hash(b, i, mask, false, b.data, b.start[i]));
    }
    // ...and swapping matters whenever an asymmetric field is selected.
    for (const mask of [DEFAULT_LB_MASK, LB_ETH_SRC, LB_IP_DST, LB_UDP_SRC]) {
      expect(hash(b, i, mask, true, b.data, b.start[i])).not.toBe(hash(b, i, mask, false, b.data, b.start[i]));
    }
  });

  it('spreads sequential flows evenly over the low 8 bits', async () => {
    const hash = await make();
    const b = new Batch();
    const buckets = new Uint32Array(256);
    const flows = 256 * 256;
    const i = randomSlot(b, 6);
    b.src[i * 4] = 0x0a000001;
    b.dst[i * 4] = 0x0a000002;
    b.src.fill(0, i * 4 + 1, i * 4 + 4);
    b.dst.fill(0, i * 4 + 1, i * 4 + 4);
    b.dport[i] = 80;
    for (let n = 0; n < flows; n++) {
      b.sport[i] = n & 0xffff; // a port scan: only the source port moves
      buckets[hash(b, i, DEFAULT_LB_MASK, false, b.data, b.start[i]) & 255]++;
    }
    // 256 expected per bucket, sd 16: allow 5 sd, and a chi-square below its 99.99th percentile (~360).
    let chi2 = 0;
    for (const c of buckets) {
      expect(c).toBeGreaterThan(256 - 80);
      expect(c).toBeLessThan(256 + 80);
      chi2 += (c - 256) ** 2 / 256;
    }
    expect(chi2).toBeLessThan(360);
  });
});
