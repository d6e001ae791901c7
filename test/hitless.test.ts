// Hitless updates through the real control path: API-shaped writes into a Store whose userspace
// driver publishes each generation into a running Engine, interleaved with traffic (in-memory ports,
// SFs simulated by routing loopbacks). Updates land between batches while frames are still inside SFs.
// Every frame is counted at the server: nothing of an untouched chain is lost, duplicated or
// re-routed, and flows of an updated chain follow the new definition from the next batch on.
import { describe, expect, it } from 'vitest';
import { buildArp, buildFrame, macBytes } from '../src/dataplane/frames.js';
import { DriverManager } from '../src/control/driver.js';
import type { Port, PortChain, PortPair, PortPairGroup } from '../src/control/model.js';
import { Store } from '../src/control/store.js';
import { UserspaceDriver } from '../src/control/drivers/userspace/driver.js';
import { Engine } from '../src/dataplane/engine.js';
import { QueuePort } from '../src/dataplane/io/queue.js';
import { formatMac } from '../src/dataplane/tables.js';

const CLIENT_MAC = '02:00:00:00:00:01';
const SERVER_MAC = '02:00:00:00:00:02';
const SERVER = macBytes(SERVER_MAC);
const SFS = ['sf11', 'sf12', 'sf21', 'sf22', 'sf31', 'sf41', 'sf51'];

/** A flow: protocol, client source port, server port. */
interface Flow {
  proto: 'tcp' | 'udp';
  sport: number;
  dport: number;
}
const key = (proto: string, sport: number, dport: number) => `${proto}/${sport}/${dport}`;
const sfMac = (n: number, side: 'in' | 'out') => `02:00:00:00:${n + 10}:0${side === 'in' ? 1 : 2}`;

class Lab {
  readonly ports = new Map<string, QueuePort>();
  /**
   * SF ingress interface -> [its MAC, its egress interface, its egress MAC]. The SF routes like the
   * lab's SF namespaces: it takes frames addressed to its ingress MAC and sends them out of its
   * egress port from its egress MAC to the next hop (the server).
   */
  private readonly loop = new Map<string, [string, string, Uint8Array]>();
  /** Frames sent anywhere but to the server or to the SF they were addressed to. */
  readonly strays: string[] = [];
  /** Per flow: SFs it crossed, in order, for each sequence number. */
  readonly seen = new Map<string, Map<number, string[]>>();
  /** Frames delivered to the server, per flow and sequence number. */
  readonly delivered = new Map<string, Map<number, number>>();
  readonly engine = new Engine((name) => this.open(name));
  readonly store = new Store({
    drivers: new DriverManager([new UserspaceDriver((t) => this.engine.publish(t))]),
    linkUp: () => true,
  });

  constructor() {
    SFS.forEach((sf, n) => this.loop.set(`${sf}i`, [sfMac(n, 'in'), `${sf}e`, macBytes(sfMac(n, 'out'))]));
  }

  private open(name: string): QueuePort {
    const q = new QueuePort(name, (frame) => {
      if (frame[12] !== 0x08 || frame[13] !== 0x00) return; // the server's ARP announcement, flooded
      const { k, seq } = flowOf(frame);
      if (name === 'srv0') {
        const m = this.delivered.get(k) ?? new Map<number, number>();
        this.delivered.set(k, m.set(seq, (m.get(seq) ?? 0) + 1));
        return;
      }
      const sf = this.loop.get(name);
      // A real SF only takes frames addressed to it (a flooded copy is not).
      if (sf === undefined || formatMac(frame, 0) !== sf[0]) {
        this.strays.push(`${k} #${seq} on ${name}`);
        return;
      }
      const [, back, egressMac] = sf;
      frame.set(SERVER, 0);
      frame.set(egressMac, 6);
      const m = this.seen.get(k) ?? new Map<number, string[]>();
      this.seen.set(k, m.set(seq, [...(m.get(seq) ?? []), name.slice(0, -1)]));
      this.ports.get(back)!.enqueue(frame);
    });
    this.ports.set(name, q);
    return q;
  }

  /** Send one frame per flow with sequence number `seq` and run ONE batch (frames stay inside SFs). */
  inject(flows: Flow[], seq: number): void {
    for (const f of flows) {
      const payload = new Uint8Array(8);
      new DataView(payload.buffer).setUint32(0, seq);
      this.ports.get('cli0')!.enqueue(
        buildFrame({ ethSrc: CLIENT_MAC, ethDst: SERVER_MAC, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' }, l4: { proto: f.proto, sport: f.sport, dport: f.dport }, payload }),
      );
    }
    this.engine.breathe();
  }

  drain(): void {
    for (let i = 0; i < 100 && this.engine.breathe() > 0; i++);
  }

  /** The SF path a flow took for one sequence number ([] = switched directly to the server). */
  path(f: Flow, seq: number): string[] {
    return this.seen.get(key(f.proto, f.sport, f.dport))?.get(seq) ?? [];
  }
}

function flowOf(frame: Uint8Array): { k: string; seq: number } {
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const proto = frame[23] === 6 ? 'tcp' : 'udp';
  const l4 = 14 + (frame[14] & 15) * 4;
  const payload = l4 + (proto === 'tcp' ? (frame[l4 + 12] >> 4) * 4 : 8);
  return { k: key(proto, v.getUint16(l4), v.getUint16(l4 + 2)), seq: v.getUint32(payload) };
}

const flows = (proto: 'tcp' | 'udp', dport: number, n: number, base: number): Flow[] =>
  Array.from({ length: n }, (_, i) => ({ proto, sport: base + i, dport }));

describe('hitless updates (store -> userspace driver -> running engine)', () => {
  it('counts every frame across chain, member and classifier changes interleaved with traffic', async () => {
    const lab = new Lab();
    const s = lab.store;
    const port = async (name: string, iface: string, mac: string) =>
      (await s.create('ports', { name, mac_address: mac, 'binding:profile': { interface: iface } })) as Port;
    const client = await port('client', 'cli0', CLIENT_MAC);
    const server = await port('server', 'srv0', SERVER_MAC);
    const pp: Record<string, PortPair> = {};
    for (const [n, sf] of SFS.entries()) {
      const i = await port(`${sf}-in`, `${sf}i`, sfMac(n, 'in'));
      const e = await port(`${sf}-out`, `${sf}e`, sfMac(n, 'out'));
      pp[sf] = (await s.create('port_pairs', { name: sf, ingress: i.id, egress: e.id })) as PortPair;
    }
    const fc = async (name: string, protocol: string, dport: number) =>
      (
        await s.create('flow_classifiers', {
          name,
          protocol,
          source_ip_prefix: '10.0.0.1/32',
          destination_ip_prefix: '10.0.0.2/32',
          destination_port_range_min: dport,
          destination_port_range_max: dport,
          logical_source_port: client.id,
          logical_destination_port: server.id,
        })
      ).id;
    const group = async (name: string, sfs: string[]) =>
      (await s.create('port_pair_groups', { name, port_pairs: sfs.map((sf) => pp[sf].id) })) as PortPairGroup;

    // Chain A (never touched) and chain B (two hops; its first group is updated below).
    const gA = await group('gA', ['sf11', 'sf12']);
    const gB = await group('gB', ['sf21', 'sf22']);
    const gB2 = await group('gB2', ['sf51']);
    await s.create('port_chains', { name: 'A', port_pair_groups: [gA.id], flow_classifiers: [await fc('fcA', 'tcp', 80)] });
    const chainB = (await s.create('port_chains', { name: 'B', port_pair_groups: [gB.id, gB2.id], flow_classifiers: [await fc('fcB', 'udp', 53)] })) as PortChain;
    const fcB2 = await fc('fcB2', 'udp', 54);
    const fcC = await fc('fcC', 'tcp', 443);
    const gC = await group('gC', ['sf41']);

    const A = flows('tcp', 80, 48, 1000);
    const B = flows('udp', 53, 48, 2000);
    const B2 = flows('udp', 54, 16, 3000);
    const C = flows('tcp', 443, 16, 4000);
    const all = [...A, ...B, ...B2, ...C];
    lab.drain(); // the engine attaches the published interfaces at its next breath
    // The server announces itself (gratuitous ARP) so L2 knows where its MAC lives; without that,
    // unmatched flows would be flooded as unknown unicast (correct, but not what is counted here).
    lab.ports.get('srv0')!.enqueue(buildArp({ ethSrc: SERVER_MAC, op: 2, senderIp: '10.0.0.2', targetIp: '10.0.0.2' }));
    lab.drain();

    // Each step: one batch of traffic, then the update lands while those frames are inside SFs.
    let chainC: PortChain | undefined;
    const steps: [string, () => Promise<unknown>][] = [
      ['create chain C', async () => (chainC = (await s.create('port_chains', { name: 'C', port_pair_groups: [gC.id], flow_classifiers: [fcC] })) as PortChain)],
      ['add sf31 to group B', () => s.update('port_pair_groups', gB.id, { port_pairs: [pp.sf21.id, pp.sf22.id, pp.sf31.id] })],
      ['remove sf22 from group B', () => s.update('port_pair_groups', gB.id, { port_pairs: [pp.sf21.id, pp.sf31.id] })],
      ['add classifier fcB2 to chain B', () => s.update('port_chains', chainB.id, { flow_classifiers: [chainB.flow_classifiers[0], fcB2] })],
      ['delete chain C', () => s.delete('port_chains', chainC!.id)],
    ];
    const ROUNDS_PER_STEP = 3;
    let seq = 0;
    const stepOf: number[] = []; // seq -> index of the last step applied before that seq was sent
    for (let st = 0; st <= steps.length; st++) {
      for (let r = 0; r < ROUNDS_PER_STEP; r++) {
        stepOf[seq] = st;
        lab.inject(all, seq++);
      }
      if (st < steps.length) await steps[st][1](); // lands between batches, frames in flight
      lab.drain();
    }

    // 1. Every frame of every flow reached the server exactly once; no drops at all.
    for (const f of all) {
      const got = lab.delivered.get(key(f.proto, f.sport, f.dport));
      for (let q = 0; q < seq; q++) expect(got?.get(q), `${key(f.proto, f.sport, f.dport)} #${q}`).toBe(1);
    }
    const drops = lab.engine.stats().drops;
    expect(drops.reduce((a, b) => a + b, 0)).toBe(0);
    expect(lab.strays).toEqual([]);

    // 2. The untouched chain: every flow crossed one gA instance, the same one for every frame.
    const usedA = new Set<string>();
    for (const f of A) {
      const first = lab.path(f, 0);
      expect(first).toHaveLength(1);
      expect(['sf11', 'sf12']).toContain(first[0]);
      usedA.add(first[0]);
      for (let q = 1; q < seq; q++) expect(lab.path(f, q)).toEqual(first);
    }
    expect(usedA.size).toBe(2);

    // 3. Chain B: every frame crossed both hops, including those inside sf22 when it was removed
    // from its group; adding sf31 moves no flow; removing sf22 moves only sf22's flows.
    for (const f of B) for (let q = 0; q < seq; q++) expect(lab.path(f, q), `${f.sport} #${q}`).toEqual([expect.any(String), 'sf51']);
    const sent = (st: number) => stepOf.findIndex((x) => x === st);
    const before = new Map(B.map((f) => [f.sport, lab.path(f, 0)[0]]));
    expect(new Set(before.values())).toEqual(new Set(['sf21', 'sf22']));
    for (const f of B) expect(lab.path(f, sent(2))).toEqual([before.get(f.sport), 'sf51']); // after the add
    let moved = 0;
    for (const f of B) {
      const after = lab.path(f, sent(3))[0]; // after sf22's removal
      if (before.get(f.sport) === 'sf21') expect(after).toBe('sf21');
      else {
        expect(['sf21', 'sf31']).toContain(after);
        moved++;
      }
      for (let q = sent(3); q < seq; q++) expect(lab.path(f, q)).toEqual([after, 'sf51']);
    }
    expect(moved).toBeGreaterThan(0);

    // 4. Classifier added to chain B: dport-54 flows were switched directly, then enter chain B.
    for (const f of B2) {
      expect(lab.path(f, 0)).toEqual([]);
      expect(['sf21', 'sf31']).toContain(lab.path(f, sent(4))[0]);
    }

    // 5. Chain C: L2 before it exists, through sf41 while it exists, L2 again after its deletion.
    for (const f of C) {
      expect(lab.path(f, 0)).toEqual([]);
      for (let q = sent(1); q < sent(5); q++) expect(lab.path(f, q)).toEqual(['sf41']);
      expect(lab.path(f, seq - 1)).toEqual([]);
    }
    lab.engine.close();
  });
});
