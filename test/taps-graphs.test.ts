/*
 * The rest of networking-sfc's dataplane (spec B.1, B.7-B.9) in the userspace engine, through
 * replay sessions: tap groups (copies, SI renumbering, what a tap sends is dropped), n-tuple mapping
 * (re-classification after a NAT-like SF, forward and reverse), service graphs (branch, join, no
 * match, deleting the graph). Tap copies' encapsulations are read by tshark.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import type { State } from '../src/control/model.js';
import { buildPlan } from '../src/control/plan.js';
import { buildFrame } from '../src/dataplane/frames.js';
import { PcapWriter } from '../src/dataplane/io/pcapio.js';
import { ReplaySession } from '../src/dataplane/replay.js';
import { formatMac } from '../src/dataplane/tables.js';
import { Ctr } from '../src/packet/counters.js';
import { prerequisites } from './support/prereq.js';
import { CLIENT_MAC, SERVER_MAC, StateBuilder } from './support/sfc-state.js';
import { encapsulationOf } from './support/tshark.js';

const owner = { description: '', tenant_id: 'sfc', project_id: 'sfc' };

/** Ports client/server and, per named hop, one port pair `pp<name>` on interfaces <name>i / <name>e. */
function builder(hops: { name: string; mac: number; correlation?: 'mpls' | 'nsh' | null; tap?: boolean }[]): StateBuilder {
  const s = new StateBuilder();
  s.port('client', 'cli0', CLIENT_MAC);
  s.port('server', 'srv0', SERVER_MAC);
  for (const h of hops) {
    const hex = h.mac.toString(16).padStart(2, '0');
    s.port(`${h.name}-in`, `${h.name}i`, `02:00:00:00:${hex}:01`);
    s.port(`${h.name}-out`, `${h.name}e`, `02:00:00:00:${hex}:02`);
    s.pair(`pp-${h.name}`, `${h.name}-in`, `${h.name}-out`, 1, h.correlation ?? null);
    s.group(h.name, [`pp-${h.name}`], { tap: h.tap });
  }
  return s;
}

function udp(from: 'client' | 'server', dport: number, opts: { src?: string; dst?: string; ethSrc?: string } = {}): Uint8Array {
  const c = from === 'client';
  return buildFrame({
    ethSrc: opts.ethSrc ?? (c ? CLIENT_MAC : SERVER_MAC),
    ethDst: c ? SERVER_MAC : CLIENT_MAC,
    ip: { ver: 4, src: opts.src ?? (c ? '10.0.0.1' : '10.0.0.2'), dst: opts.dst ?? (c ? '10.0.0.2' : '10.0.0.1') },
    l4: { proto: 'udp', sport: c ? 40000 : dport, dport: c ? dport : 40000 },
    payload: 16,
  });
}

/** A session that records every transmitted frame per interface. */
function session(state: State, sfLoopback = true) {
  const sent = new Map<string, Uint8Array[]>();
  const ses = new ReplaySession(compileTables(state), {
    sfLoopback,
    onTransmit: (iface, frame) => sent.set(iface, [...(sent.get(iface) ?? []), frame]),
  });
  return { ses, sent, at: (iface: string) => sent.get(iface) ?? [] };
}

describe('tap groups', () => {
  /** client -> a (unaware) -> [tap t] -> b (aware nsh) -> server; the tap after a. */
  function tapped(tapCorrelation: 'nsh' | null): State {
    const s = builder([
      { name: 'a', mac: 0x11 },
      { name: 't', mac: 0x99, correlation: tapCorrelation, tap: true },
      { name: 'b', mac: 0x21, correlation: 'nsh' },
    ]);
    s.classifier('fc', { protocol: 'udp', src: 'client', dst: 'server' });
    s.chain('pc', ['a', 't', 'b'], ['fc'], { chainId: 5, correlation: 'nsh' });
    return s.state;
  }

  it('numbers a tap after the destination node (B.1): SF 254, SF 253, DST 252, TAP 251', () => {
    const plan = buildPlan(tapped(null));
    expect(plan.paths[0].hops.map((h) => [plan.groups[h.group].name, h.kind, h.si])).toEqual([
      ['a', 'sf', 254],
      ['b', 'sf', 253],
      ['t', 'tap', 251],
    ]);
  });

  it('copies every frame leaving the upstream node to the tap; the chain goes on as if the tap were absent', () => {
    const { ses, at } = session(tapped(null));
    try {
      const js = [1, 2, 3].map((k) => ses.run('cli0', udp('client', 5000 + k), k * 1e6));
      for (const j of js) expect([j.verdict, [...j.out].sort(), j.hops]).toEqual(['chain', ['srv0', 'ti'], ['pp-a', 'pp-b', 'pp-t']]);
      // The copies: as the frames left SF a (plain: a is unaware, the tap too), addressed to the tap.
      expect(at('ti')).toHaveLength(3);
      for (const f of at('ti')) expect([formatMac(f, 0), f.length]).toEqual(['02:00:00:00:99:01', udp('client', 5001).length]);
      expect(ses.counters.events[Ctr.tap_copies]).toBe(3);
    } finally {
      ses.close();
    }
  });

  it('drops and counts what the tap sends back', () => {
    const { ses } = session(tapped(null), false);
    try {
      expect(ses.run('te', udp('client', 5001, { ethSrc: '02:00:00:00:99:02' }), 1e6).verdict).toBe('drop:from_tap');
      expect(ses.run('ti', udp('client', 5001, { ethSrc: '02:00:00:00:99:01' }), 2e6).verdict).toBe('drop:from_tap');
    } finally {
      ses.close();
    }
  });

  const run = prerequisites('tap encapsulation (tshark)', { commands: ['tshark'] });
  describe.skipIf(!run)('an aware tap', () => {
    let dir = '';
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'sfc-tap-'));
    });
    afterAll(async () => rm(dir, { recursive: true, force: true }));

    it("receives the copy with the tap node's own NSH SPI and SI", async () => {
      const { ses, at } = session(tapped('nsh'));
      try {
        expect([...ses.run('cli0', udp('client', 5001), 1e6).out].sort()).toEqual(['srv0', 'ti']);
      } finally {
        ses.close();
      }
      const file = join(dir, 'tap.pcap');
      const w = new PcapWriter(file);
      for (const f of at('ti')) w.write(f, 1e15);
      await w.close();
      expect(encapsulationOf(file).map((d) => [d.ethDst, d.encap])).toEqual([
        ['02:00:00:00:99:01', { kind: 'nsh', version: 0, mdType: 1, length: 6, nextProto: 3, spi: 5, si: 251 }],
      ]);
    });
  });
});

describe('ppg_n_tuple_mapping (a NAT in the chain)', () => {
  /** client -> nat (source 10.0.0.1 -> 192.0.2.x) -> b -> server, symmetric. */
  function natChain(mapping: boolean): State {
    const s = builder([
      { name: 'nat', mac: 0x11 },
      { name: 'b', mac: 0x21 },
    ]);
    if (mapping) {
      s.byName('port_pair_groups', 'nat').port_pair_group_parameters.ppg_n_tuple_mapping = {
        egress_n_tuple: { source_ip_prefix: '192.0.2.0/24' },
        ingress_n_tuple: { source_ip_prefix: '10.0.0.1/32' },
      };
    }
    s.classifier('fc', { protocol: 'udp', source_ip_prefix: '10.0.0.1/32', destination_ip_prefix: '10.0.0.2/32', src: 'client', dst: 'server' });
    s.chain('pc', ['nat', 'b'], ['fc'], { symmetric: true });
    return s.state;
  }

  it('plans the matches per hop: egress mapping forward (inherited), last translation at the reverse entry, ingress mapping after the group in reverse', () => {
    const plan = buildPlan(natChain(true));
    const src = (m: { source_ip_prefix: string | null }) => m.source_ip_prefix;
    const [fwd, rev] = plan.rules;
    expect([fwd.reverse, src(fwd.match), fwd.hopMatch.map(src)]).toEqual([false, '10.0.0.1/32', ['192.0.2.0/24', '192.0.2.0/24']]);
    // Reverse path hops: b, then nat (whose ingress_n_tuple restores the original source).
    expect([rev.reverse, src(rev.match), rev.hopMatch.map(src)]).toEqual([true, '192.0.2.0/24', ['192.0.2.0/24', '10.0.0.1/32']]);
    // Untouched fields stay the classifier's.
    expect(rev.hopMatch.map((m) => m.destination_ip_prefix)).toEqual(['10.0.0.2/32', '10.0.0.2/32']);
  });

  it('re-classifies translated frames with the mapped fields, forward and reverse', () => {
    const { ses } = session(natChain(true), false);
    try {
      // Forward: into the NAT; what it emits (translated) continues to b, then to the server.
      expect(ses.run('cli0', udp('client', 53), 1e6).out).toEqual(['nati']);
      expect(ses.run('nate', udp('client', 53, { src: '192.0.2.7', ethSrc: '02:00:00:00:11:02' }), 2e6).out).toEqual(['bi']);
      expect(ses.run('be', udp('client', 53, { src: '192.0.2.7', ethSrc: '02:00:00:00:21:02' }), 3e6)).toMatchObject({ verdict: 'chain', out: ['srv0'] });
      // Reverse: the server answers the translated address; b, then the NAT (entered at its egress).
      expect(ses.run('srv0', udp('server', 53, { dst: '192.0.2.7' }), 4e6).out).toEqual(['be']);
      expect(ses.run('bi', udp('server', 53, { dst: '192.0.2.7', ethSrc: '02:00:00:00:21:01' }), 5e6).out).toEqual(['nate']);
      // The NAT translates back: the reverse path goes on with the ingress mapping, to the client.
      expect(ses.run('nati', udp('server', 53, { ethSrc: '02:00:00:00:11:01' }), 6e6)).toMatchObject({ verdict: 'chain', out: ['cli0'] });
    } finally {
      ses.close();
    }
  });

  it('without the mapping the translated frames leave the chain (what the mapping is for)', () => {
    const { ses } = session(natChain(false), false);
    try {
      ses.run('cli0', udp('client', 53), 1e6);
      expect(ses.run('nate', udp('client', 53, { src: '192.0.2.7', ethSrc: '02:00:00:00:11:02' }), 2e6).verdict).not.toBe('chain');
    } finally {
      ses.close();
    }
  });
});

describe('service graphs', () => {
  /** pc1 (src) -> {pc2 (udp 2002), pc3 (udp 2003)} -> pc4 (join); every hop one aware MPLS SF. */
  function graphState(withGraph: boolean): State {
    const s = builder([1, 2, 3, 4].map((k) => ({ name: `g${k}`, mac: k * 0x11, correlation: 'mpls' as const })));
    s.classifier('fc1', { protocol: 'udp', src: 'client', dst: 'server' });
    // The destination chains' logical source port is the server: ignored for handed-off traffic.
    s.classifier('fc2', { protocol: 'udp', destination_port_range_min: 2002, destination_port_range_max: 2002, src: 'server' });
    s.classifier('fc3', { protocol: 'udp', destination_port_range_min: 2003, destination_port_range_max: 2003, src: 'server' });
    s.classifier('fc4', { protocol: 'udp', source_ip_prefix: '10.0.0.1/32', src: 'server', dst: 'server' });
    for (const k of [1, 2, 3, 4]) s.chain(`pc${k}`, [`g${k}`], [`fc${k}`], { chainId: k });
    if (withGraph) {
      const id = (n: string) => s.byName('port_chains', n).id;
      s.state.service_graphs.push({
        id: '00000000-0000-4000-8000-0000000000ff',
        name: 'sg',
        ...owner,
        port_chains: { [id('pc1')]: [id('pc2'), id('pc3')], [id('pc2')]: [id('pc4')], [id('pc3')]: [id('pc4')] },
      });
    }
    return s.state;
  }

  it('branches by the destination chains\' classifiers, joins, and switches what matches none', () => {
    const { ses, at } = session(graphState(true));
    try {
      const to2 = ses.run('cli0', udp('client', 2002), 1e6);
      const to3 = ses.run('cli0', udp('client', 2003), 2e6);
      const none = ses.run('cli0', udp('client', 2009), 3e6);
      expect([to2.verdict, to2.hops, to2.out]).toEqual(['chain', ['pp-g1', 'pp-g2', 'pp-g4'], ['srv0']]);
      expect([to3.verdict, to3.hops, to3.out]).toEqual(['chain', ['pp-g1', 'pp-g3', 'pp-g4'], ['srv0']]);
      expect([none.verdict, none.hops, none.out]).toEqual(['chain', ['pp-g1'], ['srv0']]);
      expect(ses.counters.events[Ctr.handed_off]).toBe(4);
      // Each destination chain's hop got its own label: (chain << 8) | 255, TTL 255 (MPLS label word).
      const label = (f: Uint8Array) => new DataView(f.buffer, f.byteOffset).getUint32(14) >>> 12;
      expect(at('g2i').map(label)).toEqual([(2 << 8) | 255]);
      expect(at('g4i').map(label)).toEqual([(4 << 8) | 255, (4 << 8) | 255]);
      // Delivered plain.
      for (const f of at('srv0')) expect(new DataView(f.buffer, f.byteOffset).getUint16(12)).toBe(0x0800);
    } finally {
      ses.close();
    }
  });

  it('deleting the graph restores the chains: pc1 delivers, pc2 classifies at its own port again', () => {
    const { ses } = session(graphState(false));
    try {
      expect(ses.run('cli0', udp('client', 2002), 1e6)).toMatchObject({ verdict: 'chain', hops: ['pp-g1'], out: ['srv0'] });
      expect(ses.counters.events[Ctr.handed_off]).toBe(0);
      const fromServer = buildFrame({ ethSrc: SERVER_MAC, ethDst: CLIENT_MAC, ip: { ver: 4, src: '10.0.0.2', dst: '10.0.0.1' }, l4: { proto: 'udp', sport: 1, dport: 2002 } });
      expect(ses.run('srv0', fromServer, 2e6).hops).toEqual(['pp-g2']);
    } finally {
      ses.close();
    }
  });
});

