// Frame builder and checksums: address parsers, checksums checked against real kernel frames, an
// independent whole-header sum, tcpdump as an outside oracle, CRC32c vectors, flow generator.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  addrWords,
  buildArp,
  buildFrame,
  flowFrames,
  flowSpecs,
  ipv4Bytes,
  ipv6Bytes,
  macBytes,
  mulberry32,
  type FrameSpec,
} from '../src/dataplane/frames.js';
import { crc32c, fixL4Checksum, ipv4HeaderChecksum, l4Checksum } from '../src/packet/checksum.js';
import { prerequisites } from './support/prereq.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));

// Captured on a veth pair between two namespaces with tx checksum offload off on the client side.
const REAL_SYN = hex(
  'be6c5feb2c7f16e6f86324ec08004500003ce801400040063df20a6300010a630002d20a1f901c21fb9000000000a002faf095590000020405b40402080a76c222db000000000103030a',
);
// The server's SYN-ACK on the same pair, left CHECKSUM_PARTIAL (the field holds the pseudo-header
// sum 0x14f7); tcpdump reports the correct value as 0xa036.
const PARTIAL_SYN_ACK = hex(
  '16e6f86324ecbe6c5feb2c7f08004500003c00004000400625f40a6300020a6300011f90d20a67c0cc421c21fb91a012fe8814f70000020405b40402080abeacfec976c222db0103030a',
);
// A real MLDv2 report: IPv6 with a hop-by-hop header (router alert) then ICMPv6.
const REAL_MLD = hex(
  '33330000001616e6f86324ec86dd6000000000380001fe8000000000000014e6f8fffe6324ecff0200000000000000000000000000163a000502000001008f0018690000000204000000ff0200000000000000000001ff00000104000000ff0200000000000000000001ff6324ec',
);

const u16 = (f: Uint8Array, at: number): number => (f[at] << 8) | f[at + 1];

/** Naive check: the one's-complement sum of everything, stored checksum included, is 0xffff. */
function sumsToAllOnes(words: number[]): boolean {
  let s = 0;
  for (const w of words) {
    s += w;
    s = (s & 0xffff) + (s >>> 16);
  }
  return s === 0xffff;
}
function wordsOf(f: Uint8Array, from: number, to: number): number[] {
  const out: number[] = [];
  for (let k = from; k < to; k += 2) out.push((f[k] << 8) | (k + 1 < to ? f[k + 1] : 0));
  return out;
}

describe('address parsers', () => {
  it('parses MACs, IPv4 and IPv6 (compressed, embedded IPv4)', () => {
    expect([...macBytes('aa:BB:0c:d:ee:ff')]).toEqual([0xaa, 0xbb, 0x0c, 0x0d, 0xee, 0xff]);
    expect([...ipv4Bytes('192.168.1.254')]).toEqual([192, 168, 1, 254]);
    expect([...ipv6Bytes('2001:db8::1')]).toEqual([0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1]);
    expect([...ipv6Bytes('::')]).toEqual(new Array(16).fill(0));
    expect([...ipv6Bytes('::ffff:10.1.2.3')].slice(10)).toEqual([0xff, 0xff, 10, 1, 2, 3]);
    expect([...ipv6Bytes('1:2:3:4:5:6:7:8')].filter((_, k) => k % 2 === 1)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(addrWords('10.0.0.1')).toEqual([0x0a000001, 0, 0, 0]);
    expect(addrWords('fd00::2:1')).toEqual([0xfd000000, 0, 0, 0x00020001]);
  });

  it('rejects malformed addresses', () => {
    for (const s of ['aa:bb:cc:dd:ee', 'aa:bb:cc:dd:ee:fg', 'aa:bb:cc:dd:ee:ff:00']) expect(() => macBytes(s)).toThrow();
    for (const s of ['1.2.3', '1.2.3.256', '1.2.3.4.5', 'a.b.c.d']) expect(() => ipv4Bytes(s)).toThrow();
    for (const s of ['1::2::3', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1:2:3:4::5:6:7:8', 'g::1']) {
      expect(() => ipv6Bytes(s)).toThrow();
    }
  });
});

describe('checksums against real kernel frames', () => {
  it('IPv4 header and TCP checksums of a real SYN match the stored ones', () => {
    expect(ipv4HeaderChecksum(REAL_SYN, 14, 20)).toBe(u16(REAL_SYN, 24));
    expect(l4Checksum(REAL_SYN, 14, 34, 40, 4, 6)).toBe(0x9559);
  });

  it('completes a CHECKSUM_PARTIAL SYN-ACK to the value tcpdump expects', () => {
    const f = PARTIAL_SYN_ACK.slice();
    expect(u16(f, 50)).toBe(0x14f7);
    expect(fixL4Checksum(f, 14, 34, 40, 4, 6)).toBe(true);
    expect(u16(f, 50)).toBe(0xa036);
    f[50] = f[51] = 0x55; // whatever the field held, the result is the same
    fixL4Checksum(f, 14, 34, 40, 4, 6);
    expect(u16(f, 50)).toBe(0xa036);
  });

  it('ICMPv6 checksum (IPv6 pseudo header) of a real MLD report matches', () => {
    const l4 = 14 + 40 + 8;
    expect(l4Checksum(REAL_MLD, 14, l4, REAL_MLD.length - l4, 6, 58)).toBe(u16(REAL_MLD, l4 + 2));
  });

  it('refuses unknown protocols and too-short L4', () => {
    expect(l4Checksum(REAL_SYN, 14, 34, 40, 4, 47)).toBe(-1);
    expect(l4Checksum(REAL_SYN, 14, 34, 17, 4, 6)).toBe(-1);
    expect(fixL4Checksum(REAL_SYN.slice(), 14, 34, 40, 4, 47)).toBe(false);
  });

  it('CRC32c matches the published test vectors', () => {
    expect(crc32c(new TextEncoder().encode('123456789'), 0, 9)).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32), 0, 32)).toBe(0x8a9136aa); // RFC 3720 B.4: 32 zero bytes
    expect(crc32c(new Uint8Array(32).fill(0xff), 0, 32)).toBe(0x62a8ab43); // 32 bytes of 0xff
    const ascending = Uint8Array.from({ length: 32 }, (_, k) => k);
    expect(crc32c(ascending, 0, 32)).toBe(0x46dd794e);
  });
});

const L4_NAMES = ['tcp', 'udp', 'sctp', 'icmp', 'icmpv6'] as const;
const specArb: fc.Arbitrary<FrameSpec> = fc
  .record({
    ver: fc.constantFrom(4 as const, 6 as const),
    l4: fc.constantFrom(...L4_NAMES),
    vlans: fc.array(fc.integer({ min: 1, max: 4094 }), { maxLength: 2 }),
    opts: fc.integer({ min: 0, max: 10 }),
    ext: fc.array(fc.constantFrom(0, 43, 60, 51), { maxLength: 3 }),
    payload: fc.integer({ min: 0, max: 120 }),
    a: fc.integer({ min: 1, max: 0xfffffffe }),
    b: fc.integer({ min: 1, max: 0xfffffffe }),
  })
  .map(({ ver, l4, vlans, opts, ext, payload, a, b }) => {
    const v4 = (x: number): string => [x >>> 24, (x >>> 16) & 255, (x >>> 8) & 255, x & 255].join('.');
    const v6 = (x: number): string => `2001:db8::${(x >>> 16).toString(16)}:${(x & 0xffff).toString(16)}`;
    return {
      vlans,
      ip: ver === 4 ? { ver, src: v4(a), dst: v4(b), options: new Uint8Array(opts * 4).fill(1) } : { ver, src: v6(a), dst: v6(b), ext },
      l4: { proto: l4, sport: a & 0xffff, dport: b & 0xffff },
      payload,
    };
  });

describe('buildFrame checksums', () => {
  it('every IPv4 header and TCP/UDP/ICMP/ICMPv6 checksum sums to 0xffff (naive whole-sum check)', () => {
    fc.assert(
      fc.property(specArb, (spec) => {
        const f = buildFrame(spec);
        const l3 = 14 + 4 * (spec.vlans?.length ?? 0);
        let l4: number;
        let pseudo: number[];
        if (spec.ip.ver === 4) {
          const ihl = (f[l3] & 15) * 4;
          expect(sumsToAllOnes(wordsOf(f, l3, l3 + ihl))).toBe(true);
          l4 = l3 + ihl;
          pseudo = [...wordsOf(f, l3 + 12, l3 + 20), f[l3 + 9], u16(f, l3 + 2) - ihl];
        } else {
          let nh = f[l3 + 6];
          l4 = l3 + 40;
          while (nh === 0 || nh === 43 || nh === 60 || nh === 51) {
            const len = nh === 51 ? (f[l4 + 1] + 2) * 4 : (f[l4 + 1] + 1) * 8;
            nh = f[l4];
            l4 += len;
          }
          pseudo = [...wordsOf(f, l3 + 8, l3 + 40), nh, l3 + 40 + u16(f, l3 + 4) - l4];
        }
        const proto = spec.l4.proto;
        if (proto === 'sctp') {
          const crc = crc32c(Uint8Array.from([...f.subarray(l4, l4 + 8), 0, 0, 0, 0, ...f.subarray(l4 + 12)]), 0, f.length - l4);
          expect(new DataView(f.buffer).getUint32(l4 + 8, true)).toBe(crc);
        } else {
          const words = wordsOf(f, l4, f.length);
          expect(sumsToAllOnes(proto === 'icmp' ? words : [...pseudo, ...words])).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
  });
});

function writePcap(path: string, frames: Uint8Array[]): void {
  const head = Buffer.alloc(24);
  head.writeUInt32LE(0xa1b2c3d4, 0);
  head.writeUInt16LE(2, 4);
  head.writeUInt16LE(4, 6);
  head.writeUInt32LE(65535, 16);
  head.writeUInt32LE(1, 20); // Ethernet
  const parts = [head];
  for (const f of frames) {
    const rec = Buffer.alloc(16);
    rec.writeUInt32LE(f.length, 8);
    rec.writeUInt32LE(f.length, 12);
    parts.push(rec, Buffer.from(f));
  }
  writeFileSync(path, Buffer.concat(parts));
}

describe.skipIf(!prerequisites('gen: tcpdump as checksum oracle', { commands: ['tcpdump'] }))('tcpdump oracle', () => {
  it('tcpdump -vv finds every builder checksum correct, and flags a corrupted one', () => {
    const ip4 = { ver: 4 as const, src: '10.1.2.3', dst: '10.4.5.6' };
    const ip6 = { ver: 6 as const, src: 'fd00::1', dst: 'fd00::2' };
    const good = [
      buildFrame({ ip: { ...ip4, options: Uint8Array.of(0x94, 4, 0, 0) }, l4: { proto: 'tcp' }, payload: 11 }),
      buildFrame({ vlans: [7], ip: ip4, l4: { proto: 'udp' }, payload: 5, frameLen: 64 }),
      buildFrame({ ip: ip4, l4: { proto: 'icmp' }, payload: 9 }),
      buildFrame({ ip: { ...ip6, ext: [0, 60, 43] }, l4: { proto: 'udp' }, payload: 3 }),
      buildFrame({ ip: ip6, l4: { proto: 'tcp' }, payload: 7 }),
      buildFrame({ ip: ip6, l4: { proto: 'icmpv6' }, payload: 7 }),
      buildFrame({ mpls: [100, 200], ip: ip4, l4: { proto: 'udp' }, payload: 3 }),
      buildFrame({ nsh: { spi: 42, si: 254 }, ip: ip6, l4: { proto: 'tcp' }, payload: 1 }),
    ];
    const okMarkers = 7; // 3 TCP "(correct)", 3 "[udp sum ok]", 1 "[icmp6 sum ok]"; IPv4/ICMP only print when bad
    const corrupt = buildFrame({ ip: ip4, l4: { proto: 'udp' }, payload: 5 });
    corrupt[24] ^= 0x10; // IPv4 header checksum
    const dir = mkdtempSync(join(tmpdir(), 'sfct-gen-'));
    try {
      const file = join(dir, 'frames.pcap');
      writePcap(file, [...good, corrupt]);
      const out = execFileSync('tcpdump', ['-r', file, '-nn', '-vv'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      expect(out.match(/\(correct\)|udp sum ok|icmp6 sum ok/g)?.length).toBe(okMarkers + 1);
      expect(out.match(/bad|incorrect|wrong/g)).toEqual(['bad']);
      expect(out).toContain('service-path-id 0x00002a, service-index 0xfe');
      expect(out).toContain('(label 200, tc 0, [S], ttl 64)');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('frame layout', () => {
  it('puts VLAN, QinQ, MPLS and NSH headers where the wire format says', () => {
    const ip = { ver: 4 as const, src: '10.0.0.1', dst: '10.0.0.2' };
    const q = buildFrame({ vlans: [10, 20], qinq: true, ip, l4: { proto: 'udp' } });
    expect([u16(q, 12), u16(q, 14), u16(q, 16), u16(q, 18), u16(q, 20)]).toEqual([0x88a8, 10, 0x8100, 20, 0x0800]);
    const m = buildFrame({ mpls: [0xabcde, 17], ip, l4: { proto: 'udp' } });
    const dv = new DataView(m.buffer);
    expect(u16(m, 12)).toBe(0x8847);
    expect(dv.getUint32(14)).toBe(((0xabcde << 12) | 64) >>> 0);
    expect(dv.getUint32(18)).toBe((17 << 12) | 0x100 | 64);
    const n = buildFrame({ nsh: { spi: 0x123456, si: 9, ethernet: true }, ip, l4: { proto: 'udp' } });
    const nv = new DataView(n.buffer);
    expect(u16(n, 12)).toBe(0x894f);
    expect((nv.getUint32(14) >>> 16) & 0x3f).toBe(6); // length in words
    expect(n[17]).toBe(3); // next protocol: Ethernet
    expect(nv.getUint32(18)).toBe(0x12345609);
    expect(u16(n, 38 + 12)).toBe(0x0800);
  });

  it('pads to frameLen without changing the IP length, and builds fragments', () => {
    const f = buildFrame({ ip: { ver: 4, src: '1.1.1.1', dst: '2.2.2.2' }, l4: { proto: 'udp' }, frameLen: 64 });
    expect(f.length).toBe(64);
    expect(u16(f, 16)).toBe(28);
    const later = buildFrame({ ip: { ver: 4, src: '1.1.1.1', dst: '2.2.2.2', fragOffset: 3, id: 77 }, l4: { proto: 'udp' }, payload: 8 });
    expect(later.length).toBe(14 + 20 + 8); // no UDP header in a non-first fragment
    expect([u16(later, 18), u16(later, 20)]).toEqual([77, 3]);
    const v6 = buildFrame({ ip: { ver: 6, src: '::1', dst: '::2', moreFragments: true, id: 0xdeadbeef }, l4: { proto: 'tcp' } });
    expect(v6[20]).toBe(44);
    expect(v6[54]).toBe(6);
    expect(u16(v6, 56)).toBe(1);
    expect(new DataView(v6.buffer).getUint32(58)).toBe(0xdeadbeef);
  });

  it('builds ARP requests', () => {
    const a = buildArp({ ethSrc: '02:00:00:00:00:01', senderIp: '10.0.0.1', targetIp: '10.0.0.9', frameLen: 60 });
    expect(a.length).toBe(60);
    expect([...a.subarray(0, 6)]).toEqual([255, 255, 255, 255, 255, 255]);
    expect([u16(a, 12), u16(a, 14), u16(a, 16), u16(a, 20)]).toEqual([0x0806, 1, 0x0800, 1]);
    expect([...a.subarray(38, 42)]).toEqual([10, 0, 0, 9]);
  });
});

describe('flow generator and PRNG', () => {
  it('mulberry32 is deterministic per seed and spreads over [0, 1)', () => {
    const a = mulberry32(7);
    const b = mulberry32(7);
    const xs = Array.from({ length: 1000 }, () => a());
    expect(Array.from({ length: 1000 }, () => b())).toEqual(xs);
    expect(mulberry32(8)()).not.toBe(xs[0]);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(xs.filter((x) => x < 0.5).length).toBeGreaterThan(400);
    expect(xs.filter((x) => x < 0.5).length).toBeLessThan(600);
  });

  it('flowFrames gives n distinct 5-tuples in 64-byte frames', () => {
    for (const ver of [4, 6] as const) {
      const specs = flowSpecs(2000, { ver, proto: 'mix', seed: 3 });
      const keys = new Set(specs.map((s) => `${s.ip.src} ${s.ip.dst} ${s.l4.proto} ${s.l4.sport} ${s.l4.dport}`));
      expect(keys.size).toBe(2000);
    }
    const frames = flowFrames(100, { seed: 3 });
    expect(frames.every((f) => f.length === 64)).toBe(true);
    expect(flowFrames(100, { seed: 3 })).toEqual(frames);
    expect(flowFrames(100, { seed: 4 })).not.toEqual(frames);
  });
});
