import { describe, expect, it } from 'vitest';
import { buildArp, buildFrame, macBytes, type FrameSpec } from '../src/dataplane/frames.js';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import type { State } from '../src/control/model.js';
import { Ctr, Drop } from '../src/packet/counters.js';
import { Engine, RX_BATCH } from '../src/dataplane/engine.js';
import { MacTable } from '../src/dataplane/l2.js';
import { QueuePort } from '../src/dataplane/io/queue.js';
import { formatMac, type Tables } from '../src/dataplane/tables.js';
import { CLIENT_MAC, SERVER_MAC, sfMac, twoHop } from './support/sfc-state.js';

/** An Engine over QueuePorts: send frames on named interfaces, collect what each transmits. */
class Rig {
  readonly engine = new Engine((name) => {
    const q = new QueuePort(name, (frame) => this.sent(name).push(frame));
    this.ports.set(name, q);
    return q;
  });
  readonly ports = new Map<string, QueuePort>();
  private readonly out = new Map<string, Uint8Array[]>();
  tables: Tables;

  constructor(state: State) {
    this.tables = compileTables(state);
    this.engine.publish(this.tables);
    this.engine.breathe();
  }

  update(state: State): void {
    this.tables = compileTables(state, this.tables);
    this.engine.publish(this.tables);
  }

  sent(name: string): Uint8Array[] {
    let l = this.out.get(name);
    if (!l) this.out.set(name, (l = []));
    return l;
  }

  /** Enqueue frames on `iface`, breathe until idle, return { iface: frames } transmitted meanwhile. */
  send(iface: string, ...frames: Uint8Array[]): Record<string, Uint8Array[]> {
    this.out.clear();
    for (const f of frames) this.ports.get(iface)!.enqueue(f);
    while (this.engine.breathe() > 0);
    return Object.fromEntries([...this.out].filter(([, l]) => l.length > 0));
  }

  /** Send one frame and expect exactly one copy out; returns [interface, frame]. */
  one(iface: string, frame: Uint8Array): [string, Uint8Array] {
    const out = Object.entries(this.send(iface, frame));
    expect(out.map(([n, l]) => [n, l.length])).toHaveLength(1);
    expect(out[0][1]).toHaveLength(1);
    return [out[0][0], out[0][1][0]];
  }

  get events() {
    return this.engine.counters.events;
  }
  get drops() {
    return this.engine.counters.drops;
  }
}

const dstMac = (f: Uint8Array) => formatMac(f, 0);
const srcMac = (f: Uint8Array) => formatMac(f, 6);

function tcp(sport: number, dport = 80, extra: Partial<FrameSpec> = {}): Uint8Array {
  return buildFrame({ ethSrc: CLIENT_MAC, ethDst: SERVER_MAC, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' }, l4: { proto: 'tcp', sport, dport }, frameLen: 64, ...extra });
}

function reply(sport: number, dport = 80): Uint8Array {
  return buildFrame({ ethSrc: SERVER_MAC, ethDst: CLIENT_MAC, ip: { ver: 4, src: '10.0.0.2', dst: '10.0.0.1' }, l4: { proto: 'tcp', sport: dport, dport: sport }, frameLen: 64 });
}

/** Instance k of hop h that the frame was sent to, from its output interface name. */
const hopIface = /^sf(\d)(\d)([ie])$/;

describe('steering through the Engine', () => {
  it('walks a two-hop chain: entry -> hop 1 -> hop 2 -> server with the original MACs', () => {
    const rig = new Rig(twoHop().state);
    const original = tcp(1234);
    const [if1, f1] = rig.one('cli0', original);
    const m1 = hopIface.exec(if1)!;
    expect(m1[1]).toBe('1');
    expect(m1[3]).toBe('i');
    expect(dstMac(f1)).toBe(sfMac(1, Number(m1[2]), 'in'));
    expect(srcMac(f1)).toBe(CLIENT_MAC);
    expect(f1.subarray(6)).toEqual(original.subarray(6));

    // The SF (SF-unaware, forwarding at L2 here) returns it on its egress port.
    const [if2, f2] = rig.one(`sf1${m1[2]}e`, f1);
    const m2 = hopIface.exec(if2)!;
    expect([m2[1], m2[3]]).toEqual(['2', 'i']);
    expect(dstMac(f2)).toBe(sfMac(2, Number(m2[2]), 'in'));

    const [if3, f3] = rig.one(`sf2${m2[2]}e`, f2);
    expect(if3).toBe('srv0');
    expect(f3).toEqual(original);
    expect(rig.events[Ctr.classified]).toBe(1);
    expect(rig.events[Ctr.dropped]).toBe(0);
  });

  it('restores the MACs even when the SF routed the frame (rewrote both MACs)', () => {
    const rig = new Rig(twoHop({ hops: 1 }).state);
    const original = tcp(999);
    const [if1, f1] = rig.one('cli0', original);
    const k = hopIface.exec(if1)![2];
    const routed = f1.slice();
    routed.set(macBytes('02:00:00:00:77:77'), 0);
    routed.set(macBytes(sfMac(1, Number(k), 'out')), 6);
    const [if2, f2] = rig.one(`sf1${k}e`, routed);
    expect(if2).toBe('srv0');
    expect(f2).toEqual(original);
  });

  it('floods ARP, learns MACs, forwards learned unicast, switches unmatched IP by L2', () => {
    const rig = new Rig(twoHop().state);
    const req = buildArp({ ethSrc: CLIENT_MAC, senderIp: '10.0.0.1', targetIp: '10.0.0.2' });
    const flood = rig.send('cli0', req);
    expect(Object.keys(flood).sort()).toEqual(rig.tables.interfaces.filter((n) => n !== 'cli0').sort());
    const rep = buildArp({ ethSrc: SERVER_MAC, ethDst: CLIENT_MAC, op: 2, senderIp: '10.0.0.2', targetIp: '10.0.0.1', targetMac: CLIENT_MAC });
    expect(rig.one('srv0', rep)).toEqual(['cli0', rep]);
    // ICMP is not classified: switched to the learned server port, unchanged.
    const ping = buildFrame({ ethSrc: CLIENT_MAC, ethDst: SERVER_MAC, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' }, l4: { proto: 'icmp' } });
    expect(rig.one('cli0', ping)).toEqual(['srv0', ping]);
    // Replies of a non-symmetric chain are switched too.
    expect(rig.one('srv0', reply(1234))).toEqual(['cli0', reply(1234)]);
    expect(rig.events[Ctr.flooded]).toBe(1);
    expect(rig.events[Ctr.unclassified]).toBe(4);
    // A destination learned on the input interface is a hairpin drop, counted.
    const hair = buildFrame({ ethSrc: '02:00:00:00:00:33', ethDst: CLIENT_MAC, ip: { ver: 4, src: '10.0.0.3', dst: '10.0.0.1' }, l4: { proto: 'icmp' } });
    expect(rig.send('cli0', hair)).toEqual({});
    expect(rig.drops[Drop.hairpin]).toBe(1);
  });

  it('delivers by L2 learning at chain end when the classifier has no destination port', () => {
    const s = twoHop({ hops: 1 });
    for (const fc of s.state.flow_classifiers) fc.logical_destination_port = null;
    const rig = new Rig(s.state);
    const original = tcp(5000);
    const [if1, f1] = rig.one('cli0', original);
    // Server MAC unknown yet: the chain end floods (except the SF's interface it came from).
    const out = rig.send(if1.replace(/i$/, 'e'), f1);
    expect(Object.keys(out)).toContain('srv0');
    expect(Object.keys(out)).not.toContain(if1.replace(/i$/, 'e'));
    expect(out.srv0[0]).toEqual(original);
    // Once the server is learned, only srv0.
    rig.send('srv0', buildArp({ ethSrc: SERVER_MAC, senderIp: '10.0.0.2', targetIp: '10.0.0.9' }));
    const [, g1] = rig.one('cli0', original);
    expect(rig.one(if1.replace(/i$/, 'e'), g1)).toEqual(['srv0', original]);
  });

  it('non-first fragments follow their first fragment; an early one is steered by L3 alone', () => {
    const rig = new Rig(twoHop({ dport: 80 }).state);
    const frag = (sport: number, id: number, first: boolean) =>
      buildFrame({
        ethSrc: CLIENT_MAC,
        ethDst: SERVER_MAC,
        ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2', id, moreFragments: first, fragOffset: first ? 0 : 3 },
        l4: first ? { proto: 'udp', sport, dport: 80 } : { proto: 17 },
        payload: first ? 16 : 24,
      });
    const chosen = new Set<string>();
    for (let n = 0; n < 24; n++) {
      const [a] = rig.one('cli0', frag(2000 + n, 100 + n, true));
      const [b] = rig.one('cli0', frag(2000 + n, 100 + n, false));
      expect(b).toBe(a);
      chosen.add(a);
    }
    expect(chosen.size).toBe(2); // both instances used: following is not a coincidence of the hash
    expect(rig.events[Ctr.fragments_followed]).toBe(24);

    // Later fragments seen before their first: classified without ports, hashed on L3 only, so
    // every datagram between the same hosts takes one instance, still inside the chain.
    const early = new Set<string>();
    for (let n = 0; n < 8; n++) early.add(rig.one('cli0', frag(0, 900 + n, false))[0]);
    expect(early.size).toBe(1);
    expect([...early][0]).toMatch(/^sf1\di$/);
    expect(rig.events[Ctr.fragments_l3_only]).toBe(8);
  });

  it('symmetric chains carry replies back through the same instances in reverse order', () => {
    const rig = new Rig(twoHop({ symmetric: true }).state);
    for (let n = 0; n < 16; n++) {
      const sport = 3000 + n;
      const [a1, f1] = rig.one('cli0', tcp(sport));
      const [a2, f2] = rig.one(a1.replace(/i$/, 'e'), f1);
      const [a3] = rig.one(a2.replace(/i$/, 'e'), f2);
      expect(a3).toBe('srv0');
      const back = reply(sport);
      const [b1, g1] = rig.one('srv0', back);
      expect(b1).toBe(a2.replace(/i$/, 'e')); // hop 2 instance, entered by its egress port
      expect(dstMac(g1)).toBe(sfMac(2, Number(hopIface.exec(a2)![2]), 'out'));
      const [b2, g2] = rig.one(b1.replace(/e$/, 'i'), g1);
      expect(b2).toBe(a1.replace(/i$/, 'e'));
      expect(dstMac(g2)).toBe(sfMac(1, Number(hopIface.exec(a1)![2]), 'out'));
      const [b3, g3] = rig.one(b2.replace(/e$/, 'i'), g2);
      expect(b3).toBe('cli0');
      expect(g3).toEqual(back);
    }
  });

  it('a reply seen first (no forward state) still picks the forward instances (symmetric hash)', () => {
    const a = new Rig(twoHop({ symmetric: true, hops: 1, perHop: 4 }).state);
    const b = new Rig(twoHop({ symmetric: true, hops: 1, perHop: 4 }).state);
    const seen = new Set<string>();
    for (let n = 0; n < 32; n++) {
      const [fwd] = a.one('cli0', tcp(7000 + n));
      const [rev] = b.one('srv0', reply(7000 + n));
      expect(rev).toBe(fwd.replace(/i$/, 'e'));
      seen.add(fwd);
    }
    expect(seen.size).toBeGreaterThan(2);
  });

  describe('flow affinity across publish()', () => {
    const N = 200;
    const flows = Array.from({ length: N }, (_, n) => tcp(10000 + n));
    const place = (rig: Rig) => flows.map((f) => rig.one('cli0', f)[0]);
    const fresh = (rig: Rig) => Array.from({ length: N }, (_, n) => rig.one('cli0', tcp(30000 + n))[0]);

    it('adding an instance moves no existing flow; new flows use it', () => {
      const s = twoHop({ hops: 1 });
      const rig = new Rig(s.state);
      const before = place(rig);
      s.port('sf13-in', 'sf13i', sfMac(1, 3, 'in'));
      s.port('sf13-out', 'sf13e', sfMac(1, 3, 'out'));
      s.pair('pp13', 'sf13-in', 'sf13-out');
      s.byName('port_pair_groups', 'ppg1').port_pairs.push(s.byName('port_pairs', 'pp13').id);
      rig.update(s.state);
      expect(place(rig)).toEqual(before);
      const newer = fresh(rig);
      expect(newer.filter((x) => x === 'sf13i').length).toBeGreaterThan(N / 6);
    });

    it('removing an instance moves only its flows', () => {
      const s = twoHop({ hops: 1, perHop: 3 });
      const rig = new Rig(s.state);
      const before = place(rig);
      expect(new Set(before).size).toBe(3);
      const g = s.byName('port_pair_groups', 'ppg1');
      g.port_pairs = g.port_pairs.filter((id) => id !== s.byName('port_pairs', 'pp12').id);
      rig.update(s.state);
      const after = place(rig);
      after.forEach((x, n) => {
        if (before[n] !== 'sf12i') expect(x).toBe(before[n]);
        else expect(x).not.toBe('sf12i');
      });
      expect(rig.events[Ctr.dropped]).toBe(0);
    });

    it('weight 0 drains: existing flows stay, new flows avoid it', () => {
      const s = twoHop({ hops: 1 });
      const rig = new Rig(s.state);
      const before = place(rig);
      expect(before).toContain('sf11i');
      s.byName('port_pairs', 'pp11').service_function_parameters.weight = 0;
      rig.update(s.state);
      expect(place(rig)).toEqual(before);
      expect(fresh(rig)).not.toContain('sf11i');
    });

    it('a chain update that inserts a hop keeps each flow on its instances', () => {
      const s = twoHop({ hops: 1 });
      const rig = new Rig(s.state);
      const before = place(rig);
      s.port('sf01-in', 'sf01i', sfMac(0, 1, 'in'));
      s.port('sf01-out', 'sf01e', sfMac(0, 1, 'out'));
      s.pair('pp01', 'sf01-in', 'sf01-out');
      s.group('ppg0', ['pp01']);
      s.state.port_chains[0].port_pair_groups.unshift(s.byName('port_pair_groups', 'ppg0').id);
      // Also grow ppg1, so that re-hashing (instead of remembering) would move flows.
      s.port('sf13-in', 'sf13i', sfMac(1, 3, 'in'));
      s.port('sf13-out', 'sf13e', sfMac(1, 3, 'out'));
      s.pair('pp13', 'sf13-in', 'sf13-out');
      s.byName('port_pair_groups', 'ppg1').port_pairs.push(s.byName('port_pairs', 'pp13').id);
      rig.update(s.state);
      const after = flows.map((f) => {
        const [a, g] = rig.one('cli0', f);
        expect(a).toBe('sf01i');
        return rig.one('sf01e', g)[0];
      });
      expect(after).toEqual(before);
    });

    it('an instance index re-used by another port pair does not inherit old flows', () => {
      const s = twoHop({ hops: 1 });
      const rig = new Rig(s.state);
      const before = place(rig);
      // Replace pp11 by pp13 in one update: pp13 takes pp11's index.
      s.port('sf13-in', 'sf13i', sfMac(1, 3, 'in'));
      s.port('sf13-out', 'sf13e', sfMac(1, 3, 'out'));
      s.pair('pp13', 'sf13-in', 'sf13-out', 0);
      const g = s.byName('port_pair_groups', 'ppg1');
      g.port_pairs = [s.byName('port_pairs', 'pp12').id, s.byName('port_pairs', 'pp13').id];
      rig.update(s.state);
      // pp13 has weight 0: the flows of pp11 must move to pp12, not stick to the recycled index.
      expect(place(rig)).toEqual(before.map(() => 'sf12i'));
    });
  });

  it('empty groups and all-zero weights drop as no_instance, counted', () => {
    const s = twoHop({ hops: 2, weights: [[1, 1], [0, 0]] });
    const rig = new Rig(s.state);
    const [if1, f1] = rig.one('cli0', tcp(1));
    expect(rig.send(if1.replace(/i$/, 'e'), f1)).toEqual({});
    expect(rig.drops[Drop.no_instance]).toBe(1);
    s.byName('port_pair_groups', 'ppg1').port_pairs = [];
    rig.update(s.state);
    expect(rig.send('cli0', tcp(2))).toEqual({});
    expect(rig.drops[Drop.no_instance]).toBe(2);
  });

  it('malformed frames are counted drops, never thrown, and do not disturb their batch', () => {
    const rig = new Rig(twoHop().state);
    const good = tcp(4444);
    const runt = new Uint8Array(10);
    const truncated = good.slice(0, 20);
    const badIhl = good.slice();
    badIhl[14] = 0x43;
    const out = rig.send('cli0', runt, good, truncated, badIhl);
    expect(Object.values(out).flat()).toHaveLength(1);
    expect(rig.drops[Drop.runt]).toBe(1);
    expect(rig.events[Ctr.dropped]).toBe(3);
    const st = rig.engine.stats();
    expect(st.interfaces.find((x) => x.name === 'cli0')).toMatchObject({ rxPackets: 4, drops: 3 });
  });

  it('a table swap between batches drops nothing', () => {
    const s = twoHop({ hops: 1 });
    const rig = new Rig(s.state);
    const frames = Array.from({ length: 1000 }, (_, n) => tcp(20000 + n));
    for (const f of frames) rig.ports.get('cli0')!.enqueue(f);
    let delivered = 0;
    const count = () => {
      for (const name of ['sf11i', 'sf12i']) {
        delivered += rig.sent(name).length;
        rig.sent(name).length = 0;
      }
    };
    expect(rig.engine.breathe()).toBe(RX_BATCH);
    count();
    s.byName('port_pairs', 'pp12').service_function_parameters.weight = 5;
    rig.update(s.state);
    const genBefore = rig.events[Ctr.table_generations];
    while (rig.engine.breathe() > 0) count();
    expect(rig.events[Ctr.table_generations]).toBe(genBefore + 1);
    expect(delivered).toBe(1000);
    expect(rig.events[Ctr.dropped]).toBe(0);
    expect(rig.engine.stats().instancePackets.reduce((a, b) => a + b, 0)).toBe(1000);
  });

  it('steers IPv6 and VLAN-tagged flows; the flow key includes the VLAN', () => {
    const s = twoHop({ hops: 1 });
    s.classifier('fc6', { ethertype: 'IPv6', protocol: 'udp', src: 'client', dst: 'server' });
    s.state.port_chains[0].flow_classifiers.push(s.byName('flow_classifiers', 'fc6').id);
    const rig = new Rig(s.state);
    const v6 = buildFrame({ ethSrc: CLIENT_MAC, ethDst: SERVER_MAC, ip: { ver: 6, src: 'fd00::1', dst: 'fd00::2' }, l4: { proto: 'udp', sport: 1, dport: 2 } });
    const [a, f] = rig.one('cli0', v6);
    expect(a).toMatch(/^sf1\di$/);
    expect(rig.one(a.replace(/i$/, 'e'), f)).toEqual(['srv0', v6]);
    const tagged = tcp(77, 80, { vlans: [10] });
    const [b, g] = rig.one('cli0', tagged);
    expect(b).toMatch(/^sf1\di$/);
    expect(rig.one(b.replace(/i$/, 'e'), g)).toEqual(['srv0', tagged]);
  });
});

describe('Engine interfaces', () => {
  it('retries a failed open on the next publish, drops frames to it as port_down, closes dropped interfaces', () => {
    let failSrv = true;
    const ports = new Map<string, QueuePort>();
    const sent: [string, Uint8Array][] = [];
    const engine = new Engine((name) => {
      if (name === 'srv0' && failSrv) throw new Error('no such device');
      const q = new QueuePort(name, (frame) => sent.push([name, frame]));
      ports.set(name, q);
      return q;
    });
    const s = twoHop({ hops: 1 });
    let t = compileTables(s.state);
    engine.publish(t);
    engine.breathe();
    expect(engine.stats().interfaces.find((x) => x.name === 'srv0')?.up).toBe(false);
    // The chain ends at srv0, which could not be opened: a counted drop, not an exception.
    ports.get('cli0')!.enqueue(tcp(1));
    engine.breathe();
    const [hop, frame] = sent.pop()!;
    ports.get(hop.replace(/i$/, 'e'))!.enqueue(frame);
    engine.breathe();
    expect(sent).toEqual([]);
    expect(engine.counters.drops[Drop.port_down]).toBe(1);
    failSrv = false;
    t = compileTables(s.state, t);
    engine.publish(t);
    engine.breathe();
    expect(engine.stats().interfaces.find((x) => x.name === 'srv0')?.up).toBe(true);
    // Remove the server port: its interface is closed and its index freed ('').
    s.state.ports = s.state.ports.filter((p) => p.name !== 'server');
    for (const fc of s.state.flow_classifiers) fc.logical_destination_port = null;
    t = compileTables(s.state, t);
    engine.publish(t);
    engine.breathe();
    expect(ports.get('srv0')!.isUp()).toBe(false);
    expect(engine.stats().interfaces.map((x) => x.name)).toContain('');
    engine.close();
  });
});

describe('MacTable (learning switch)', () => {
  it('learns per VLAN, ages entries out, survives far more MACs than slots', () => {
    const t = new MacTable(64, 1000);
    t.now = 0;
    t.learn(0, 0x0200, 0x00000001, 3);
    t.learn(10, 0x0200, 0x00000001, 4);
    expect(t.lookup(0, 0x0200, 0x00000001)).toBe(3);
    expect(t.lookup(10, 0x0200, 0x00000001)).toBe(4);
    expect(t.lookup(0, 0x0200, 0x00000002)).toBe(-1);
    // A move to another interface is learned even within the same clock reading.
    t.learn(0, 0x0200, 0x00000001, 5);
    expect(t.lookup(0, 0x0200, 0x00000001)).toBe(5);
    t.now = 1001;
    expect(t.lookup(0, 0x0200, 0x00000001)).toBe(-1);
    // 10x more MACs than slots: never throws, the most recent ones are found.
    for (let m = 0; m < 640; m++) {
      t.now = 2000 + m;
      t.learn(0, 0x0200, 0x1000 + m, m & 7);
    }
    expect(t.lookup(0, 0x0200, 0x1000 + 639)).toBe(639 & 7);
    expect(t.size()).toBeLessThanOrEqual(64);
    t.clear();
    expect(t.lookup(0, 0x0200, 0x1000 + 639)).toBe(-1);
  });
});
