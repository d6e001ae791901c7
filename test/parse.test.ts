// Parser: golden frames (built with src/dataplane/frames.ts and captured from Linux), every drop reason, and
// property tests (totality on random and mutated bytes; round trip of random frame specs).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { addrWords, buildArp, buildFrame, fillBatch, type FrameSpec, type Ipv6Ext } from '../src/dataplane/frames.js';
import { ABSENT, BATCH, Batch, ENCAP_MPLS, ENCAP_NSH, FRAG_FIRST, FRAG_LATER, SLOT } from '../src/packet/batch.js';
import { Counters, Ctr, Drop, DROP_REASONS } from '../src/packet/counters.js';
import { parseBatch } from '../src/dataplane/parse.js';

const batch = new Batch();

interface Parsed {
  drop: string;
  l3Off: number;
  l4Off: number;
  etherType: number;
  vlan: number;
  vlanCount: number;
  ipVer: number;
  src: number[];
  dst: number[];
  proto: number;
  sport: number;
  dport: number;
  frag: number;
  ipId: number;
  encap: number;
  label: number;
}

function slot(b: Batch, i: number): Parsed {
  return {
    drop: DROP_REASONS[b.drop[i]],
    l3Off: b.l3Off[i],
    l4Off: b.l4Off[i],
    etherType: b.etherType[i],
    vlan: b.vlan[i],
    vlanCount: b.vlanCount[i],
    ipVer: b.ipVer[i],
    src: [...b.src.subarray(i * 4, i * 4 + 4)],
    dst: [...b.dst.subarray(i * 4, i * 4 + 4)],
    proto: b.proto[i],
    sport: b.sport[i],
    dport: b.dport[i],
    frag: b.frag[i],
    ipId: b.ipId[i],
    encap: b.encap[i],
    label: b.label[i],
  };
}

function parseAll(frames: Uint8Array[]): Counters {
  const c = new Counters();
  expect(fillBatch(batch, frames)).toBe(frames.length);
  parseBatch(batch, c);
  return c;
}

function one(frame: Uint8Array): Parsed {
  parseAll([frame]);
  return slot(batch, 0);
}

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));
const cut = (f: Uint8Array, n: number): Uint8Array => f.slice(0, n);
function patch(f: Uint8Array, at: number, ...bytes: number[]): Uint8Array {
  const g = f.slice();
  g.set(bytes, at);
  return g;
}

const IP4 = { ver: 4 as const, src: '10.1.2.3', dst: '192.168.9.8' };
const IP6 = { ver: 6 as const, src: '2001:db8::1', dst: 'fd00:1:2::3:4' };
const W4S = addrWords(IP4.src);
const W4D = addrWords(IP4.dst);
const W6S = addrWords(IP6.src);
const W6D = addrWords(IP6.dst);
const udp4 = (extra: Partial<FrameSpec> = {}): Uint8Array =>
  buildFrame({ ip: IP4, l4: { proto: 'udp', sport: 1111, dport: 53 }, payload: 12, ...extra });

describe('golden frames', () => {
  it('IPv4 UDP and TCP', () => {
    expect(one(udp4())).toMatchObject({
      drop: 'none', etherType: 0x0800, vlanCount: 0, vlan: 0, ipVer: 4, l3Off: 14, l4Off: 34,
      src: W4S, dst: W4D, proto: 17, sport: 1111, dport: 53, frag: 0, encap: 0, label: 0,
    });
    const tcp = buildFrame({ ip: { ...IP4, id: 0x4242 }, l4: { proto: 'tcp', sport: 40000, dport: 443 } });
    expect(one(tcp)).toMatchObject({ drop: 'none', proto: 6, sport: 40000, dport: 443, l4Off: 34, ipId: 0x4242 });
  });

  it('a real Linux TCP SYN with options', () => {
    const syn = hex(
      'be6c5feb2c7f16e6f86324ec08004500003ce801400040063df20a6300010a630002d20a1f901c21fb9000000000a002faf095590000020405b40402080a76c222db000000000103030a',
    );
    expect(one(syn)).toMatchObject({
      drop: 'none', ipVer: 4, l3Off: 14, l4Off: 34, src: addrWords('10.99.0.1'), dst: addrWords('10.99.0.2'),
      proto: 6, sport: 53770, dport: 8080, ipId: 0xe801, frag: 0, // DF alone is not a fragment
    });
  });

  it('a real IPv6 MLD report behind a hop-by-hop header', () => {
    const mld = hex(
      '33330000001616e6f86324ec86dd6000000000380001fe8000000000000014e6f8fffe6324ecff0200000000000000000000000000163a000502000001008f0018690000000204000000ff0200000000000000000001ff00000104000000ff0200000000000000000001ff6324ec',
    );
    expect(one(mld)).toMatchObject({
      drop: 'none', ipVer: 6, etherType: 0x86dd, l3Off: 14, l4Off: 62, src: addrWords('fe80::14e6:f8ff:fe63:24ec'),
      dst: addrWords('ff02::16'), proto: 58, sport: 143, dport: 0,
    });
  });

  it('IPv6 TCP/UDP, SCTP, ICMP, ICMPv6', () => {
    expect(one(buildFrame({ ip: IP6, l4: { proto: 'tcp', sport: 5, dport: 6 } }))).toMatchObject({
      drop: 'none', ipVer: 6, l3Off: 14, l4Off: 54, src: W6S, dst: W6D, proto: 6, sport: 5, dport: 6,
    });
    expect(one(buildFrame({ ip: IP6, l4: { proto: 'udp', sport: 7, dport: 8 } }))).toMatchObject({ proto: 17, sport: 7, dport: 8 });
    expect(one(buildFrame({ ip: IP4, l4: { proto: 'sctp', sport: 2905, dport: 3868 }, payload: 16 }))).toMatchObject({
      drop: 'none', proto: 132, sport: 2905, dport: 3868, l4Off: 34,
    });
    expect(one(buildFrame({ ip: IP4, l4: { proto: 'icmp', type: 3, code: 13 } }))).toMatchObject({
      drop: 'none', proto: 1, sport: 3, dport: 13, l4Off: 34,
    });
    expect(one(buildFrame({ ip: IP6, l4: { proto: 'icmpv6', type: 135, code: 0 } }))).toMatchObject({
      drop: 'none', proto: 58, sport: 135, dport: 0,
    });
  });

  it('VLAN, QinQ (0x88a8 and 0x9100 outer), PCP bits ignored', () => {
    expect(one(udp4({ vlans: [100] }))).toMatchObject({ drop: 'none', vlan: 100, vlanCount: 1, etherType: 0x0800, l3Off: 18, l4Off: 38, sport: 1111 });
    const qinq = udp4({ vlans: [10, 20], qinq: true });
    expect(one(qinq)).toMatchObject({ drop: 'none', vlan: 10, vlanCount: 2, etherType: 0x0800, l3Off: 22, l4Off: 42, dport: 53 });
    expect(one(patch(qinq, 12, 0x91, 0x00))).toMatchObject({ drop: 'none', vlan: 10, vlanCount: 2, l3Off: 22 });
    expect(one(patch(udp4({ vlans: [100] }), 14, 0xe0 | 0x10, 100))).toMatchObject({ vlan: 100 }); // PCP 7, DEI 1
  });

  it('IPv4 options are skipped', () => {
    const f = udp4({ ip: { ...IP4, options: Uint8Array.of(0x94, 0x04, 0, 0, 1, 1, 1, 0) } });
    expect(one(f)).toMatchObject({ drop: 'none', l3Off: 14, l4Off: 14 + 28, sport: 1111, dport: 53 });
  });

  it('IPv4 fragments: first has ports, later ones have no L4', () => {
    const first = udp4({ ip: { ...IP4, id: 777, moreFragments: true } });
    expect(one(first)).toMatchObject({ drop: 'none', frag: FRAG_FIRST, ipId: 777, l4Off: 34, sport: 1111, proto: 17 });
    // The payload of a later fragment looks like ports: the parser must not take it for L4.
    const later = buildFrame({ ip: { ...IP4, id: 777, fragOffset: 185 }, l4: { proto: 'udp' }, payload: Uint8Array.of(1, 2, 3, 4, 0, 9, 0, 0) });
    expect(one(later)).toMatchObject({ drop: 'none', frag: FRAG_LATER, ipId: 777, l4Off: ABSENT, sport: 0, dport: 0, proto: 17, src: W4S });
    const last = buildFrame({ ip: { ...IP4, id: 9, fragOffset: 1 }, l4: { proto: 'tcp' }, payload: 3 });
    expect(one(last)).toMatchObject({ frag: FRAG_LATER, l4Off: ABSENT });
  });

  it('IPv6 fragment header: 32-bit id, first vs later, atomic fragment', () => {
    const first = buildFrame({ ip: { ...IP6, id: 0xdeadbeef, moreFragments: true }, l4: { proto: 'tcp', sport: 80, dport: 81 } });
    expect(one(first)).toMatchObject({ drop: 'none', frag: FRAG_FIRST, ipId: 0xdeadbeef, proto: 6, l4Off: 62, sport: 80, dport: 81 });
    const later = buildFrame({ ip: { ...IP6, id: 0xfeedf00d, fragOffset: 100 }, l4: { proto: 'udp' }, payload: 16 });
    expect(one(later)).toMatchObject({ drop: 'none', frag: FRAG_LATER, ipId: 0xfeedf00d, proto: 17, l4Off: ABSENT, sport: 0 });
    const atomic = buildFrame({ ip: { ...IP6, id: 5, ext: [44] }, l4: { proto: 'udp', sport: 9, dport: 10 } });
    expect(one(atomic)).toMatchObject({ drop: 'none', frag: 0, ipId: 5, sport: 9, dport: 10 });
  });

  it('IPv6 extension headers: hop-by-hop, destination, routing, AH (4-byte units), longer headers', () => {
    const ext: Ipv6Ext[] = [0, 60, 43, 51, { type: 60, bytes: 24 }, { type: 51, bytes: 24 }];
    const f = buildFrame({ ip: { ...IP6, ext }, l4: { proto: 'tcp', sport: 1, dport: 2 } });
    expect(one(f)).toMatchObject({ drop: 'none', proto: 6, l4Off: 54 + 8 + 8 + 8 + 12 + 24 + 24, sport: 1, dport: 2 });
    const eight = buildFrame({ ip: { ...IP6, ext: [0, 60, 60, 60, 60, 60, 60, 43] }, l4: { proto: 'udp', sport: 3 } });
    expect(one(eight)).toMatchObject({ drop: 'none', proto: 17, sport: 3, l4Off: 54 + 64 });
  });

  it('ESP, no-next-header and unknown protocols: no ports', () => {
    expect(one(buildFrame({ ip: { ...IP6, ext: [0] }, l4: { proto: 50 }, payload: 20 }))).toMatchObject({ drop: 'none', proto: 50, l4Off: ABSENT, sport: 0 });
    expect(one(buildFrame({ ip: IP6, l4: { proto: 59 }, payload: 4 }))).toMatchObject({ drop: 'none', proto: 59, l4Off: ABSENT });
    expect(one(buildFrame({ ip: IP4, l4: { proto: 47 }, payload: 8 }))).toMatchObject({ drop: 'none', proto: 47, l4Off: 34, sport: 0, dport: 0 });
    expect(one(buildFrame({ ip: IP4, l4: { proto: 47 } }))).toMatchObject({ drop: 'none', proto: 47, l4Off: ABSENT });
  });

  it('ARP and other ethertypes are live frames without IP', () => {
    const arp = buildArp({ ethSrc: '02:00:00:00:00:01', senderIp: '10.0.0.1', targetIp: '10.0.0.2', vlans: [3] });
    expect(one(arp)).toMatchObject({ drop: 'none', etherType: 0x0806, vlan: 3, ipVer: 0, l3Off: ABSENT, l4Off: ABSENT, src: [0, 0, 0, 0] });
    expect(one(patch(udp4(), 12, 0x88, 0xcc))).toMatchObject({ drop: 'none', etherType: 0x88cc, ipVer: 0, l3Off: ABSENT });
  });

  it('Ethernet padding after the IP packet is ignored', () => {
    expect(one(udp4({ payload: 0, frameLen: 64 }))).toMatchObject({ drop: 'none', sport: 1111, l4Off: 34 });
    expect(one(buildFrame({ ip: IP6, l4: { proto: 'udp', sport: 4 }, frameLen: 100 }))).toMatchObject({ drop: 'none', sport: 4 });
  });

  it('MPLS: one and two labels, inner IPv4/IPv6, non-IP payload', () => {
    expect(one(udp4({ mpls: [1000] }))).toMatchObject({
      drop: 'none', etherType: 0x8847, encap: ENCAP_MPLS, label: 1000, ipVer: 4, l3Off: 18, l4Off: 38, src: W4S, sport: 1111, dport: 53,
    });
    expect(one(udp4({ mpls: [0xfffff, 16], vlans: [5] }))).toMatchObject({
      drop: 'none', encap: ENCAP_MPLS, label: 0xfffff, l3Off: 26, vlan: 5, sport: 1111,
    });
    expect(one(buildFrame({ mpls: [77], ip: IP6, l4: { proto: 'tcp', sport: 22 } }))).toMatchObject({
      drop: 'none', encap: ENCAP_MPLS, label: 77, ipVer: 6, l3Off: 18, src: W6S, sport: 22,
    });
    // A pseudowire control word (first nibble 0) after the stack: not IP, not a drop.
    expect(one(patch(udp4({ mpls: [88] }), 18, 0x00))).toMatchObject({ drop: 'none', encap: ENCAP_MPLS, label: 88, ipVer: 0, l3Off: ABSENT });
  });

  it('NSH MD type 1 with inner IPv4, IPv6 and Ethernet; MD type 2', () => {
    expect(one(udp4({ nsh: { spi: 0xabcdef, si: 254 } }))).toMatchObject({
      drop: 'none', etherType: 0x894f, encap: ENCAP_NSH, label: (0xabcdef << 8 | 254) >>> 0, ipVer: 4, l3Off: 38, l4Off: 58, sport: 1111,
    });
    expect(one(buildFrame({ nsh: { spi: 3, si: 255 }, ip: IP6, l4: { proto: 'udp', dport: 4789 } }))).toMatchObject({
      drop: 'none', encap: ENCAP_NSH, label: 0x3ff, ipVer: 6, l3Off: 38, dport: 4789,
    });
    expect(one(udp4({ nsh: { spi: 1, si: 200, ethernet: true } }))).toMatchObject({
      drop: 'none', encap: ENCAP_NSH, label: 0x1c8, ipVer: 4, l3Off: 52, l4Off: 72, sport: 1111, dst: W4D,
    });
    // MD type 2, no metadata (length 2 words), next protocol IPv4: hand-built around an IPv4 packet.
    const ip = udp4().subarray(14);
    const md2 = Uint8Array.from([...udp4().subarray(0, 12), 0x89, 0x4f, 0x0f, 0xc2, 0x02, 0x01, 0, 0, 5, 9, ...ip]);
    expect(one(md2)).toMatchObject({ drop: 'none', encap: ENCAP_NSH, label: 0x509, l3Off: 22, sport: 1111 });
    // Next protocol 5 (MPLS) is not looked into.
    expect(one(patch(md2, 17, 5))).toMatchObject({ drop: 'none', encap: ENCAP_NSH, ipVer: 0, l3Off: ABSENT });
  });
});

describe('every drop reason', () => {
  const v6 = buildFrame({ ip: IP6, l4: { proto: 'udp' } });
  const tcp4 = buildFrame({ ip: IP4, l4: { proto: 'tcp' } });
  const cases: [string, Uint8Array][] = [
    ['runt', new Uint8Array(0)],
    ['runt', cut(udp4(), 13)],
    ['truncated_vlan', cut(udp4({ vlans: [1] }), 16)],
    ['truncated_vlan', cut(udp4({ vlans: [1, 2] }), 20)],
    ['too_many_vlan_tags', udp4({ vlans: [1, 2, 3] })],
    ['truncated_mpls', cut(udp4({ mpls: [1] }), 17)],
    ['truncated_mpls', cut(udp4({ mpls: [1, 2] }), 18)], // stack ends before bottom of stack
    ['truncated_nsh', cut(udp4({ nsh: { spi: 1, si: 1 } }), 21)],
    ['truncated_nsh', cut(udp4({ nsh: { spi: 1, si: 1 } }), 37)], // base+SPH present, metadata cut
    ['truncated_nsh', cut(udp4({ nsh: { spi: 1, si: 1, ethernet: true } }), 50)], // inner Ethernet cut
    ['bad_nsh', patch(udp4({ nsh: { spi: 1, si: 1 } }), 15, 5)], // MD type 1 with length 5
    ['bad_nsh', patch(udp4({ nsh: { spi: 1, si: 1 } }), 15, 1)], // shorter than base + SPH
    ['bad_nsh', patch(udp4({ nsh: { spi: 1, si: 1 } }), 14, 0x4f)], // version 1
    ['bad_nsh', patch(udp4({ nsh: { spi: 1, si: 1 } }), 16, 0)], // MD type 0
    ['truncated_ipv4', cut(udp4(), 33)],
    ['truncated_ipv4', patch(cut(udp4(), 14 + 28), 14, 0x4f)], // IHL 60 bytes, 28 present
    ['bad_ipv4_header', patch(udp4(), 14, 0x55)], // version 5
    ['bad_ipv4_header', patch(udp4(), 14, 0x44)], // IHL 16 bytes
    ['bad_ipv4_length', patch(udp4(), 16, 0, 19)], // total length below the header
    ['bad_ipv4_length', cut(udp4(), 50)], // total length beyond the frame
    ['truncated_ipv6', cut(v6, 53)],
    ['bad_ipv6_header', patch(v6, 14, 0x40)],
    ['bad_ipv6_length', cut(v6, v6.length - 1)],
    ['truncated_ipv6_ext', buildFrame({ ip: { ...IP6, ext: [0, 60, 60, 60, 60, 60, 60, 60, 43] }, l4: { proto: 'udp' } })],
    ['truncated_ipv6_ext', patch(buildFrame({ ip: { ...IP6, ext: [60] }, l4: { proto: 'udp' } }), 55, 2)], // 24 bytes claimed, 16 left
    ['truncated_ipv6_ext', patch(buildFrame({ ip: { ...IP6, ext: [51] }, l4: { proto: 'udp' } }), 55, 5)], // AH: 28 bytes claimed
    ['truncated_ipv6_ext', patch(buildFrame({ ip: IP6, l4: { proto: 'udp' } }), 18, 0, 4, 44)], // fragment header cut
    ['truncated_l4', patch(cut(buildFrame({ ip: IP6, l4: { proto: 'tcp' } }), 54 + 19), 18, 0, 19)],
    ['truncated_l4', patch(tcp4, 16, 0, 20 + 19)], // frame long enough; IP length says the TCP header is cut
    ['truncated_l4', patch(udp4({ payload: 0, frameLen: 64 }), 16, 0, 27)], // padding is not UDP header
    ['truncated_l4', patch(cut(buildFrame({ ip: IP4, l4: { proto: 'sctp' } }), 14 + 20 + 11), 16, 0, 20 + 11)],
    ['truncated_l4', patch(buildFrame({ ip: IP6, l4: { proto: 'icmpv6' } }), 18, 0, 3)],
    ['truncated_l4', patch(buildFrame({ ip: IP6, l4: { proto: 'tcp' }, frameLen: 100 }), 18, 0, 0)], // payload length 0
    ['bad_tcp_header', patch(tcp4, 46, 0x40)], // data offset 4
    ['bad_tcp_header', patch(tcp4, 46, 0xf0)], // data offset 15 in a 20-byte segment
  ];

  it.each(cases.map(([r, f], k) => [k, r, f] as const))('case %i: %s', (_, reason, frame) => {
    const c = parseAll([frame]);
    expect(DROP_REASONS[batch.drop[0]]).toBe(reason);
    expect(c.drops[Drop[reason as keyof typeof Drop]]).toBe(1);
    expect(c.events[Ctr.dropped]).toBe(1);
  });

  it('covers every drop reason parse can give', () => {
    const parseReasons = [
      'runt', 'truncated_vlan', 'too_many_vlan_tags', 'truncated_mpls', 'truncated_nsh', 'bad_nsh', 'truncated_ipv4',
      'bad_ipv4_header', 'bad_ipv4_length', 'truncated_ipv6', 'bad_ipv6_header', 'bad_ipv6_length', 'truncated_ipv6_ext',
      'truncated_l4', 'bad_tcp_header',
    ];
    expect(parseReasons.every((r) => (DROP_REASONS as readonly string[]).includes(r))).toBe(true);
    expect(new Set(cases.map(([r]) => r))).toEqual(new Set(parseReasons));
  });
});

describe('slot hygiene', () => {
  it('never reads stale arena bytes of an earlier, longer frame', () => {
    const full = udp4({ payload: 100 });
    fillBatch(batch, [full]);
    parseBatch(batch, new Counters());
    expect(slot(batch, 0).drop).toBe('none');
    // Same slot, now only the first 40 bytes: the rest of the old frame is still in the arena.
    expect(one(cut(full, 40))).toMatchObject({ drop: 'bad_ipv4_length', l4Off: ABSENT, sport: 0 });
    expect(one(cut(full, 20))).toMatchObject({ drop: 'truncated_ipv4' });
  });

  it('resets every parse field per slot and sets path/hop/flow to -1, leaving out alone', () => {
    fillBatch(batch, [udp4({ mpls: [9], vlans: [9] }), udp4()]);
    parseBatch(batch, new Counters());
    const arp = buildArp({ ethSrc: '02:00:00:00:00:01', senderIp: '1.1.1.1', targetIp: '1.1.1.2' });
    fillBatch(batch, [arp, cut(arp, 5)]);
    batch.out[0] = 7;
    batch.path[0] = batch.hop[0] = batch.flow[0] = 3;
    batch.drop[0] = Drop.hairpin;
    parseBatch(batch, new Counters());
    expect(slot(batch, 0)).toEqual({
      drop: 'none', l3Off: ABSENT, l4Off: ABSENT, etherType: 0x0806, vlan: 0, vlanCount: 0, ipVer: 0, src: [0, 0, 0, 0],
      dst: [0, 0, 0, 0], proto: 0, sport: 0, dport: 0, frag: 0, ipId: 0, encap: 0, label: 0,
    });
    expect(slot(batch, 1)).toMatchObject({ drop: 'runt', etherType: 0, l3Off: ABSENT, sport: 0 });
    expect([batch.out[0], batch.path[0], batch.hop[0], batch.flow[0], batch.path[1]]).toEqual([7, -1, -1, -1, -1]);
  });

  it('parses a mixed batch slot by slot and counts each drop once', () => {
    const frames = [udp4(), cut(udp4(), 10), udp4({ vlans: [1, 2, 3] }), buildFrame({ ip: IP6, l4: { proto: 'tcp', sport: 9 } }), cut(udp4(), 10)];
    const c = parseAll(frames);
    expect(frames.map((_, i) => DROP_REASONS[batch.drop[i]])).toEqual(['none', 'runt', 'too_many_vlan_tags', 'none', 'runt']);
    expect([c.drops[Drop.runt], c.drops[Drop.too_many_vlan_tags], c.events[Ctr.dropped]]).toEqual([2, 1, 3]);
    expect(batch.sport[3]).toBe(9);
  });
});

// ---- property tests ------------------------------------------------------------------------

/** Fixed header size parse promises to be inside the frame when it reports l4Off. */
const FIXED_L4: Record<number, number> = { 6: 20, 17: 8, 132: 12, 1: 4, 58: 4 };

function checkInvariants(frames: Uint8Array[], c: Counters): void {
  let dropped = 0;
  for (let i = 0; i < frames.length; i++) {
    const len = frames[i].length;
    const d = batch.drop[i];
    expect(d).toBeGreaterThanOrEqual(0);
    expect(d).toBeLessThan(DROP_REASONS.length);
    if (d !== 0) dropped++;
    for (const off of [batch.l3Off[i], batch.l4Off[i]]) expect(off === ABSENT || off < len).toBe(true);
    if (d === 0 && batch.l4Off[i] !== ABSENT && FIXED_L4[batch.proto[i]]) {
      expect(batch.l4Off[i] + FIXED_L4[batch.proto[i]]).toBeLessThanOrEqual(len);
    }
  }
  const counted = c.drops.reduce((a, x) => a + x, 0);
  expect(counted).toBe(dropped);
  expect(c.events[Ctr.dropped]).toBe(dropped);
  expect(c.drops[0]).toBe(0);
}

const ETHERTYPES = [0x0800, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x8847, 0x894f, 0x0806];
const randomFrame = fc
  .tuple(fc.uint8Array({ minLength: 0, maxLength: 200 }), fc.option(fc.constantFrom(...ETHERTYPES)), fc.option(fc.constantFrom(0x45, 0x46, 0x60)))
  .map(([bytes, et, first]) => {
    const f = bytes.slice();
    if (et !== null && f.length >= 14) f.set([et >>> 8, et & 0xff], 12);
    if (first !== null && f.length >= 15) f[14] = first;
    return f;
  });

const v4 = (x: number): string => [x >>> 24, (x >>> 16) & 255, (x >>> 8) & 255, x & 255].join('.');
const v6 = (w: number[]): string => w.map((x) => x.toString(16)).join(':');
const specArb = fc
  .record({
    ver: fc.constantFrom(4 as const, 6 as const),
    s4: fc.nat({ max: 0xffffffff }),
    d4: fc.nat({ max: 0xffffffff }),
    s6: fc.array(fc.nat({ max: 0xffff }), { minLength: 8, maxLength: 8 }),
    d6: fc.array(fc.nat({ max: 0xffff }), { minLength: 8, maxLength: 8 }),
    vlans: fc.array(fc.integer({ min: 1, max: 4094 }), { maxLength: 2 }),
    qinq: fc.boolean(),
    encap: fc.oneof(
      fc.constant(null),
      fc.record({ mpls: fc.array(fc.nat({ max: 0xfffff }), { minLength: 1, maxLength: 3 }) }),
      fc.record({ nsh: fc.record({ spi: fc.nat({ max: 0xffffff }), si: fc.nat({ max: 255 }), ethernet: fc.boolean() }) }),
    ),
    l4: fc.constantFrom<'tcp' | 'udp' | 'sctp' | 'icmp' | 'raw'>('tcp', 'udp', 'sctp', 'icmp', 'raw'),
    rawProto: fc.constantFrom(47, 89, 103),
    sport: fc.nat({ max: 0xffff }),
    dport: fc.nat({ max: 0xffff }),
    options: fc.integer({ min: 0, max: 10 }),
    ext: fc.array(fc.constantFrom(0, 43, 60, 51), { maxLength: 4 }),
    frag: fc.constantFrom('none', 'first', 'later'),
    id: fc.nat({ max: 0xffffffff }),
    payload: fc.integer({ min: 0, max: 64 }),
    frameLen: fc.option(fc.constantFrom(60, 64, 128)),
  })
  .map((r) => {
    const icmp = r.ver === 4 ? 'icmp' : 'icmpv6';
    const proto = r.l4 === 'raw' ? r.rawProto : r.l4 === 'icmp' ? icmp : r.l4;
    const spec: FrameSpec = {
      vlans: r.vlans,
      qinq: r.qinq,
      ...(r.encap ?? {}),
      ip: {
        ver: r.ver,
        src: r.ver === 4 ? v4(r.s4) : v6(r.s6),
        dst: r.ver === 4 ? v4(r.d4) : v6(r.d6),
        id: r.ver === 4 ? r.id & 0xffff : r.id,
        moreFragments: r.frag === 'first',
        fragOffset: r.frag === 'later' ? 1 + (r.id % 8000) : 0,
        ...(r.ver === 4 ? { options: new Uint8Array(r.options * 4).fill(1) } : { ext: r.ext }),
      },
      l4: { proto, sport: r.sport, dport: r.dport, type: r.sport & 0xff, code: r.dport & 0xff },
      payload: r.payload,
      ...(r.frameLen === null ? {} : { frameLen: r.frameLen }),
    };
    return spec;
  });

function expectedL3Off(s: FrameSpec): number {
  let off = 14 + 4 * (s.vlans?.length ?? 0) + 4 * (s.mpls?.length ?? 0);
  if (s.nsh) off += 24 + (s.nsh.ethernet ? 14 : 0);
  return off;
}

describe('properties', () => {
  it('totality: random bytes never throw and keep the invariants', () => {
    fc.assert(
      fc.property(fc.array(randomFrame, { minLength: 1, maxLength: BATCH }), (frames) => {
        const c = parseAll(frames);
        checkInvariants(frames, c);
      }),
      { numRuns: 200 },
    );
  });

  it('totality: truncations and byte mutations of valid frames', () => {
    const mutated = fc
      .tuple(specArb, fc.nat(), fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { maxLength: 4 }))
      .map(([spec, k, flips]) => {
        const f = buildFrame(spec);
        const g = f.slice(0, k % (f.length + 1));
        for (const [at, x] of flips) if (g.length) g[at % g.length] = x;
        return g;
      });
    fc.assert(
      fc.property(fc.array(mutated, { minLength: 1, maxLength: 64 }), (frames) => {
        const c = parseAll(frames);
        checkInvariants(frames, c);
      }),
      { numRuns: 200 },
    );
  });

  it('round trip: parse(buildFrame(spec)) recovers the spec', () => {
    fc.assert(
      fc.property(specArb, (spec) => {
        const frame = buildFrame(spec);
        const p = one(frame);
        const { ip, l4 } = spec;
        const proto = typeof l4.proto === 'number' ? l4.proto : { tcp: 6, udp: 17, sctp: 132, icmp: 1, icmpv6: 58 }[l4.proto];
        const later = (ip.fragOffset ?? 0) !== 0;
        const l3 = expectedL3Off(spec);
        expect(p.drop).toBe('none');
        expect(p.vlanCount).toBe(spec.vlans?.length ?? 0);
        expect(p.vlan).toBe(spec.vlans?.[0] ?? 0);
        expect(p.encap).toBe(spec.mpls ? ENCAP_MPLS : spec.nsh ? ENCAP_NSH : 0);
        expect(p.label).toBe(spec.mpls ? spec.mpls[0] : spec.nsh ? ((spec.nsh.spi << 8) | spec.nsh.si) >>> 0 : 0);
        expect(p.ipVer).toBe(ip.ver);
        expect(p.l3Off).toBe(l3);
        expect(p.src).toEqual(addrWords(ip.src));
        expect(p.dst).toEqual(addrWords(ip.dst));
        expect(p.proto).toBe(proto);
        expect(p.frag).toBe(later ? FRAG_LATER : ip.moreFragments ? FRAG_FIRST : 0);
        const hasFragHeader = ip.ver === 4 || later || ip.moreFragments;
        expect(p.ipId).toBe(hasFragHeader ? ip.id : 0);
        const ports = !later && typeof l4.proto !== 'number';
        const icmp = proto === 1 || proto === 58;
        expect(p.sport).toBe(ports ? (icmp ? l4.type : l4.sport) : 0);
        expect(p.dport).toBe(ports ? (icmp ? l4.code : l4.dport) : 0);
        if (later || (typeof l4.proto === 'number' && spec.payload === 0)) expect(p.l4Off).toBe(ABSENT);
        else {
          const ipHeader = ip.ver === 4 ? 20 + (ip.options?.length ?? 0) : 40 + extBytes(ip.ext ?? []) + (ip.moreFragments ? 8 : 0);
          expect(p.l4Off).toBe(l3 + ipHeader);
        }
        expect(frame.length).toBeLessThanOrEqual(SLOT);
      }),
      { numRuns: 500 },
    );
  });
});

function extBytes(ext: Ipv6Ext[]): number {
  return ext.reduce<number>((a, e) => a + (typeof e === 'number' ? (e === 51 ? 12 : 8) : e.bytes), 0);
}
