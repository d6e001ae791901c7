/*
 * SF-aware hops (issue "all of networking-sfc in the userspace dataplane"): MPLS and NSH pushed and
 * popped by the four SFC-proxy rules of spec B.4, replayed through the real engine with simulated
 * aware SFs (replay --sf-loopback decrements the index), and the encapsulations on the wire read by
 * an independent dissector: Debian's tshark. Plus the encap primitives on batch slots, and the drops
 * for a wrong index, an unknown path and a missing encapsulation.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import type { State } from '../src/control/model.js';
import { encapsulationOf, icmpTooBig } from './support/tshark.js';
import { buildFrame } from '../src/dataplane/frames.js';
import { findEncap, popMpls, popNsh, pushMpls, pushNsh } from '../src/dataplane/encap.js';
import { PcapWriter } from '../src/dataplane/io/pcapio.js';
import { parseBatch } from '../src/dataplane/parse.js';
import { ReplaySession, replayFiles } from '../src/dataplane/replay.js';
import { Batch } from '../src/packet/batch.js';
import { Counters, Ctr } from '../src/packet/counters.js';
import { prerequisites } from './support/prereq.js';
import { CLIENT_MAC, SERVER_MAC, sfMac, StateBuilder } from './support/sfc-state.js';

const SPI = 7;
type Hop = 'aware' | 'unaware';

/** client -> hops (one instance each) -> server; chain_id SPI, correlation `encap`. */
function chainOf(hops: Hop[], encap: 'mpls' | 'nsh', symmetric = false): State {
  const s = new StateBuilder();
  s.port('client', 'cli0', CLIENT_MAC);
  s.port('server', 'srv0', SERVER_MAC);
  hops.forEach((kind, k) => {
    const h = k + 1;
    s.port(`sf${h}1-in`, `sf${h}1i`, sfMac(h, 1, 'in'));
    s.port(`sf${h}1-out`, `sf${h}1e`, sfMac(h, 1, 'out'));
    s.pair(`pp${h}1`, `sf${h}1-in`, `sf${h}1-out`, 1, kind === 'aware' ? encap : null);
    s.group(`ppg${h}`, [`pp${h}1`]);
  });
  s.classifier('fc', { protocol: 'tcp', source_ip_prefix: '10.0.0.1/32', destination_ip_prefix: '10.0.0.2/32', src: 'client', dst: 'server' });
  s.chain('pc', hops.map((_, k) => `ppg${k + 1}`), ['fc'], { chainId: SPI, correlation: encap, symmetric });
  return s.state;
}

const tcp = (from: 'client' | 'server', seq: number) =>
  buildFrame({
    ethSrc: from === 'client' ? CLIENT_MAC : SERVER_MAC,
    ethDst: from === 'client' ? SERVER_MAC : CLIENT_MAC,
    ip: { ver: 4, src: from === 'client' ? '10.0.0.1' : '10.0.0.2', dst: from === 'client' ? '10.0.0.2' : '10.0.0.1', id: seq },
    l4: { proto: 'tcp', sport: from === 'client' ? 40000 : 80, dport: from === 'client' ? 80 : 40000 },
    payload: 32,
  });

const run = prerequisites('encapsulations (tshark)', { commands: ['tshark'] });

describe.skipIf(!run)('SF-aware hops through the replay engine, checked by tshark', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sfc-encap-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Replay one client frame (and, symmetric, one server frame); what each interface received. */
  async function replayChain(hops: Hop[], encap: 'mpls' | 'nsh', symmetric = false) {
    const name = `${encap}-${hops.join('-')}-${symmetric ? 'sym' : 'fwd'}`;
    const inputs = [{ iface: 'cli0', file: join(dir, `${name}-cli0.pcap`), frame: tcp('client', 1) }];
    if (symmetric) inputs.push({ iface: 'srv0', file: join(dir, `${name}-srv0.pcap`), frame: tcp('server', 2) });
    for (const input of inputs) {
      const w = new PcapWriter(input.file);
      w.write(input.frame, 1e15);
      await w.close();
    }
    const out = join(dir, name);
    const { verdicts } = await replayFiles(compileTables(chainOf(hops, encap, symmetric)), inputs, out, true);
    return { verdicts, at: (iface: string) => encapsulationOf(join(out, `${iface}.pcap`)) };
  }

  const cases: Hop[][] = [
    ['aware', 'aware'],
    ['aware', 'unaware'],
    ['unaware', 'aware'],
    ['unaware', 'unaware'],
    ['unaware', 'aware', 'aware', 'unaware', 'aware'],
  ];
  for (const encap of ['mpls', 'nsh'] as const) {
    it.each(cases.map((c) => [c.join(' -> '), c] as const))(`${encap}: %s`, async (_, hops) => {
      const { verdicts, at } = await replayChain(hops, encap);
      expect(verdicts.map((v) => [v.verdict, v.out])).toEqual([['chain', ['srv0']]]);
      hops.forEach((kind, k) => {
        const [f] = at(`sf${k + 1}1i`);
        expect(f.ethDst, `hop ${k}`).toBe(sfMac(k + 1, 1, 'in'));
        // An aware hop receives the previous node's index (B.2): 255 - k; an unaware one a plain frame.
        if (kind === 'unaware') expect(f.encap, `hop ${k}`).toEqual({ kind: 'none' });
        else if (encap === 'mpls') expect(f.encap, `hop ${k}`).toEqual({ kind: 'mpls', label: (SPI << 8) | (255 - k), ttl: 255 - k, bottom: 1 });
        else expect(f.encap, `hop ${k}`).toEqual({ kind: 'nsh', version: 0, mdType: 1, length: 6, nextProto: 3, spi: SPI, si: 255 - k });
        expect(f.innerIp, `hop ${k}`).toEqual({ src: '10.0.0.1', dst: '10.0.0.2', ttl: 64, tcpDst: 80 });
      });
      // The last hop's encapsulation is removed before delivery.
      const [d] = at('srv0');
      expect(d).toEqual({ ethDst: SERVER_MAC, ethSrc: CLIENT_MAC, encap: { kind: 'none' }, innerIp: { src: '10.0.0.1', dst: '10.0.0.2', ttl: 64, tcpDst: 80 } });
    });
  }

  it('symmetric: the reverse path enters aware SFs at their egress port with the same numbering', async () => {
    const { verdicts, at } = await replayChain(['aware', 'unaware', 'aware'], 'nsh', true);
    expect(verdicts.map((v) => [v.in, v.verdict, v.out])).toEqual([
      ['cli0', 'chain', ['srv0']],
      ['srv0', 'chain', ['cli0']],
    ]);
    // Reverse path: hop 0 is group 3 (aware, SI 254: receives 255), hop 2 is group 1 (aware, receives 253).
    expect(at('sf31e')[0].encap).toMatchObject({ kind: 'nsh', spi: SPI, si: 255 });
    expect(at('sf21e')[0].encap).toEqual({ kind: 'none' });
    expect(at('sf11e')[0].encap).toMatchObject({ kind: 'nsh', spi: SPI, si: 253 });
    expect(at('cli0')[0]).toMatchObject({ ethDst: CLIENT_MAC, ethSrc: SERVER_MAC, encap: { kind: 'none' } });
  });
});

describe.skipIf(!run)('an encapsulation pushed over the MTU', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sfc-mtu-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A full-size (1500-byte IP) frame from the client, IPv4 with or without DF, or IPv6. */
  const big = (ver: 4 | 6, df: boolean) =>
    buildFrame({
      ethSrc: CLIENT_MAC,
      ethDst: '02:00:00:00:00:fe', // the sender's gateway: the error comes back from this MAC
      ip: ver === 4 ? { ver, src: '10.0.0.1', dst: '10.0.0.2', dontFragment: df } : { ver, src: 'fd00::1', dst: 'fd00::2' },
      l4: { proto: 'tcp', sport: 40000, dport: 80 },
      payload: ver === 4 ? 1500 - 20 - 20 : 1500 - 40 - 20,
    });

  function v6Chain(encap: 'mpls' | 'nsh'): State {
    const state = chainOf(['aware'], encap);
    const fc = state.flow_classifiers[0];
    Object.assign(fc, { ethertype: 'IPv6', source_ip_prefix: 'fd00::1/128', destination_ip_prefix: 'fd00::2/128' });
    return state;
  }

  it.each([
    ['mpls', 4, 1496],
    ['nsh', 4, 1462],
    ['mpls', 6, 1496],
    ['nsh', 6, 1462],
  ] as const)('%s, IPv%d: dropped as frame_too_big, the sender gets ICMP "too big" with MTU %d', async (encap, ver, mtu) => {
    const state = ver === 4 ? chainOf(['aware'], encap) : v6Chain(encap);
    const session = new ReplaySession(compileTables(state), {
      onTransmit: (iface, frame) => {
        if (iface === 'cli0') sent.push(frame);
      },
    });
    const sent: Uint8Array[] = [];
    try {
      const j = session.run('cli0', big(ver, true), 1e6);
      expect(j.verdict).toBe('drop:frame_too_big');
      expect(j.out).toEqual(['cli0']); // the ICMP error, back to the sender's interface
      expect(session.counters.events[Ctr.icmp_too_big]).toBe(1);
    } finally {
      session.close();
    }
    const file = join(dir, `${encap}-${ver}.pcap`);
    const w = new PcapWriter(file);
    for (const f of sent) w.write(f, 1e15);
    await w.close();
    expect(icmpTooBig(file)).toEqual([{ ethDst: CLIENT_MAC, ethSrc: '02:00:00:00:00:fe', type: ver === 4 ? 3 : 2, code: ver === 4 ? 4 : 0, mtu, checksumGood: true, quotedDst: ver === 4 ? '10.0.0.2' : 'fd00::2' }]);
  });

  it('IPv4 without DF: dropped, no ICMP (the sender allowed fragmentation, which an encapsulation cannot offer)', () => {
    const session = new ReplaySession(compileTables(chainOf(['aware'], 'mpls')));
    try {
      const j = session.run('cli0', big(4, false), 1e6);
      expect([j.verdict, j.out]).toEqual(['drop:frame_too_big', []]);
      expect(session.counters.events[Ctr.icmp_too_big]).toBe(0);
      // One byte less than the limit's worth passes.
      const fits = buildFrame({ ethSrc: CLIENT_MAC, ethDst: SERVER_MAC, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2', id: 2 }, l4: { proto: 'tcp', sport: 40001, dport: 80 }, payload: 1496 - 40 });
      expect(session.run('cli0', fits, 2e6).verdict).toBe('chain');
    } finally {
      session.close();
    }
  });
});

describe('an aware hop returning the wrong thing is a counted drop', () => {
  const state = chainOf(['aware', 'unaware'], 'mpls');
  const back = (spec: { mpls?: number[] }) =>
    buildFrame({ ethSrc: sfMac(1, 1, 'out'), ethDst: SERVER_MAC, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' }, l4: { proto: 'tcp', sport: 40000, dport: 80 }, ...spec });

  it('wrong SI, unknown path, missing label', () => {
    const session = new ReplaySession(compileTables(state));
    try {
      const good = session.run('sf11e', back({ mpls: [(SPI << 8) | 254] }), 1e6);
      expect([good.verdict, good.out]).toEqual(['chain', ['sf21i']]);
      expect(session.run('sf11e', back({ mpls: [(SPI << 8) | 255] }), 2e6).verdict).toBe('drop:bad_si');
      expect(session.run('sf11e', back({ mpls: [(9 << 8) | 254] }), 3e6).verdict).toBe('drop:unknown_spi');
      expect(session.run('sf11e', back({}), 4e6).verdict).toBe('drop:missing_encap');
    } finally {
      session.close();
    }
  });
});

describe('an aware SF that rewrites the flow', () => {
  const state = chainOf(['aware', 'unaware'], 'mpls');

  it("a frame the aware SF rewrote past every rule goes on as its path's first rule, to the chain's end", () => {
    const session = new ReplaySession(compileTables(state));
    try {
      const rewritten = buildFrame({
        ethSrc: sfMac(1, 1, 'out'),
        ethDst: SERVER_MAC,
        ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' },
        l4: { proto: 'udp', sport: 40000, dport: 53 },
        mpls: [(SPI << 8) | 254],
      });
      const hop2 = session.run('sf11e', rewritten, 1e6);
      expect([hop2.verdict, hop2.out]).toEqual(['chain', ['sf21i']]);
      const plain = buildFrame({ ethSrc: sfMac(2, 1, 'out'), ethDst: SERVER_MAC, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' }, l4: { proto: 'udp', sport: 40000, dport: 53 } });
      const end = session.run('sf21e', plain, 2e6);
      expect([end.verdict, end.out]).toEqual(['chain', ['srv0']]);
    } finally {
      session.close();
    }
  });
});

describe('index bookkeeping (property)', () => {
  /** The (SPI, SI) a frame carries, read from its header. */
  const index = (f: Uint8Array): [number, number] | null => {
    const e = findEncap(f);
    if (e === null) return null;
    const v = new DataView(f.buffer, f.byteOffset, f.byteLength);
    const w = e.kind === 'mpls' ? v.getUint32(e.at) >>> 12 : v.getUint32(e.at + 4);
    return [w >>> 8, w & 0xff];
  };

  it('any mix of aware and unaware hops, either encapsulation, both directions: each aware hop receives (chain, 255 - k), every frame arrives plain', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom<Hop>('aware', 'unaware'), { minLength: 1, maxLength: 6 }),
        fc.constantFrom<'mpls' | 'nsh'>('mpls', 'nsh'),
        fc.boolean(),
        (hops, encap, symmetric) => {
          const sent = new Map<string, Uint8Array[]>();
          const session = new ReplaySession(compileTables(chainOf(hops, encap, symmetric)), {
            sfLoopback: true,
            onTransmit: (iface, frame) => sent.set(iface, [...(sent.get(iface) ?? []), frame]),
          });
          try {
            const fwd = session.run('cli0', tcp('client', 1), 1e6);
            expect([fwd.verdict, fwd.out]).toEqual(['chain', ['srv0']]);
            hops.forEach((kind, k) => expect(index(sent.get(`sf${k + 1}1i`)![0])).toEqual(kind === 'aware' ? [SPI, 255 - k] : null));
            expect(index(sent.get('srv0')![0])).toBeNull();
            if (symmetric) {
              const rev = session.run('srv0', tcp('server', 2), 2e6);
              expect([rev.verdict, rev.out]).toEqual(['chain', ['cli0']]);
              // Reverse hop j is forward hop n-1-j, entered at its egress: it receives (chain, 255 - j).
              const n = hops.length;
              hops.forEach((kind, k) => expect(index(sent.get(`sf${k + 1}1e`)![0])).toEqual(kind === 'aware' ? [SPI, 255 - (n - 1 - k)] : null));
              expect(index(sent.get('cli0')![0])).toBeNull();
            }
          } finally {
            session.close();
          }
        },
      ),
      { seed: 8, numRuns: 60 },
    );
  });
});

describe('encap primitives on batch slots', () => {
  const frame = (vlans: number[]) =>
    buildFrame({ ethSrc: CLIENT_MAC, ethDst: SERVER_MAC, vlans, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' }, l4: { proto: 'udp', sport: 1, dport: 2 }, payload: 20 });

  for (const vlans of [[], [100]]) {
    it(`push then pop gives the same bytes back, and parse agrees with every step (${vlans.length} VLAN tags)`, () => {
      const b = new Batch();
      const c = new Counters();
      const original = frame(vlans);
      b.push(original, 0);
      parseBatch(b, c);
      const l3 = b.l3Off[0];
      expect(pushMpls(b, 0, (5 << 8) | 200, 200)).toBe(true);
      const pushed = b.frame(0);
      b.reset();
      b.push(pushed, 0);
      parseBatch(b, c);
      expect([b.encap[0], b.label[0], b.l3Off[0], b.drop[0]]).toEqual([1, (5 << 8) | 200, l3 + 4, 0]);
      expect(popMpls(b, 0)).toBe(true);
      expect(Buffer.from(b.frame(0)).equals(Buffer.from(original))).toBe(true);

      b.reset();
      b.push(original, 0);
      parseBatch(b, c);
      expect(pushNsh(b, 0, 0x123456, 77)).toBe(true);
      const nsh = b.frame(0);
      expect(nsh.length).toBe(original.length + 38);
      b.reset();
      b.push(nsh, 0);
      parseBatch(b, c);
      expect([b.encap[0], b.label[0] >>> 0, b.drop[0]]).toEqual([2, ((0x123456 << 8) | 77) >>> 0, 0]);
      expect(popNsh(b, 0)).toBe(true);
      expect(Buffer.from(b.frame(0)).equals(Buffer.from(original))).toBe(true);
    });
  }

  it('refuses to pop what is not there', () => {
    const b = new Batch();
    b.push(frame([]), 0);
    parseBatch(b, new Counters());
    expect(popMpls(b, 0)).toBe(false);
    expect(popNsh(b, 0)).toBe(false);
  });
});
