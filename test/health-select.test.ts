/*
 * Health as the renderer's second input, through the real Engine (QueuePorts stand in for the
 * SFs: what is sent into an instance's ingress comes back on its egress). Deterministic: which
 * flows move when an instance goes down and comes back, and the per-group policies when a hop has
 * no live instance.
 */
import { describe, expect, it } from 'vitest';
import { buildFrame } from '../src/dataplane/frames.js';
import { compileTables, renderTables } from '../src/control/drivers/userspace/render.js';
import { buildPlan } from '../src/control/plan.js';
import { healthView, type HealthPolicy } from '../src/control/health.js';
import { probeTargets } from '../src/control/health-monitor.js';
import type { State } from '../src/control/model.js';
import { Ctr, Drop } from '../src/packet/counters.js';
import { Engine } from '../src/dataplane/engine.js';
import { QueuePort } from '../src/dataplane/io/queue.js';
import type { Tables } from '../src/dataplane/tables.js';
import { buildProbe, stampProbe } from '../src/dataplane/probe.js';
import { CLIENT_MAC, SERVER_MAC, twoHop, type StateBuilder } from './support/sfc-state.js';

const SF = /^sf(\d)(\d)i$/;

/** An Engine whose SF interfaces loop back (ingress -> egress): a frame's journey is the SFs it crossed. */
class LoopRig {
  readonly engine: Engine;
  private readonly ports = new Map<string, QueuePort>();
  private trail: string[] = [];
  tables: Tables;

  constructor(private readonly state: State) {
    this.engine = new Engine((name) => {
      const q = new QueuePort(name, (frame) => {
        this.trail.push(name);
        if (SF.test(name)) this.ports.get(name.replace(/i$/, 'e'))!.enqueue(frame);
      });
      this.ports.set(name, q);
      return q;
    });
    this.tables = compileTables(state);
    this.engine.publish(this.tables);
    this.engine.breathe();
  }

  /** Re-render the same model with pairs `down` (names) and group policies. */
  health(down: string[], policies: Record<string, HealthPolicy> = {}): void {
    const ids = new Set(down.map((n) => this.state.port_pairs.find((p) => p.name === n)!.id));
    const plan = buildPlan(this.state, { members: this.tables.instanceKeys.map((id) => ({ id })) });
    this.tables = renderTables(plan, this.tables, healthView(ids, new Map(Object.entries(policies))));
    this.engine.publish(this.tables);
  }

  /** The interfaces a TCP frame of client port `sport` left by, in order (SF ingresses, then srv0). */
  walk(sport: number): string[] {
    this.trail = [];
    const f = buildFrame({ ethSrc: CLIENT_MAC, ethDst: SERVER_MAC, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' }, l4: { proto: 'tcp', sport, dport: 80 }, frameLen: 64 });
    this.ports.get('cli0')!.enqueue(f);
    while (this.engine.breathe() > 0);
    return this.trail;
  }

  get counters() {
    return this.engine.counters;
  }

  /** Inject frames out of `iface` as the health monitor does; the interfaces they left by. */
  inject(iface: string, frame: Uint8Array): string[] {
    this.trail = [];
    this.engine.inject(iface, [frame]);
    while (this.engine.breathe() > 0);
    return this.trail;
  }
}

const FLOWS = Array.from({ length: 200 }, (_, k) => 20000 + k);

function placement(rig: LoopRig): Map<number, string[]> {
  return new Map(FLOWS.map((p) => [p, rig.walk(p)]));
}

describe('health: reroute (the default)', () => {
  it("moves only a down instance's flows, to the live instance; they stay there when it returns, new flows use it", () => {
    const rig = new LoopRig(twoHop().state);
    const before = placement(rig);
    const onSf11 = FLOWS.filter((p) => before.get(p)![0] === 'sf11i');
    expect(onSf11.length).toBeGreaterThan(50);
    expect(onSf11.length).toBeLessThan(150);

    rig.health(['pp11']);
    const during = placement(rig);
    for (const p of FLOWS) {
      const was = before.get(p)!;
      const now = during.get(p)!;
      if (was[0] === 'sf11i') expect(now).toEqual(['sf12i', was[1], 'srv0']);
      else expect(now).toEqual(was); // the others never moved, at either hop
    }

    rig.health([]);
    expect(placement(rig)).toEqual(during); // moved flows stay (sticky)
    const fresh = FLOWS.map((p) => rig.walk(p + 1000)[0]);
    expect(fresh.filter((x) => x === 'sf11i').length).toBeGreaterThan(50); // new flows use it again
    expect(rig.counters.drops[Drop.no_instance]).toBe(0);
  });

  it('drops as no_instance when the whole hop is down', () => {
    const rig = new LoopRig(twoHop().state);
    rig.health(['pp21', 'pp22']);
    expect(rig.walk(1)).toEqual([expect.stringMatching(/^sf1\di$/)]);
    expect(rig.counters.drops[Drop.no_instance]).toBe(1);
  });
});

describe('health: fail-open and fail-closed with the whole hop down', () => {
  it('fail-open skips the hop (known and new flows), and the hop is used again when it returns', () => {
    const rig = new LoopRig(twoHop().state);
    const known = rig.walk(7);
    rig.health(['pp11', 'pp12'], { ppg1: 'fail-open' });
    expect(rig.walk(7)).toEqual([known[1], 'srv0']);
    expect(rig.walk(8)).toEqual([expect.stringMatching(/^sf2\di$/), 'srv0']);
    expect(rig.counters.events[Ctr.hops_skipped]).toBe(2);
    rig.health(['pp21', 'pp22'], { ppg2: 'fail-open' }); // the last hop skipped: straight to the server
    expect(rig.walk(7)).toEqual([known[0], 'srv0']);
    rig.health([], { ppg1: 'fail-open' });
    expect(rig.walk(7)).toEqual(known);
    expect(rig.counters.drops[Drop.hop_down]).toBe(0);
  });

  it('fail-closed drops, counted as hop_down; a group that still has a live instance reroutes', () => {
    const rig = new LoopRig(twoHop().state);
    rig.health(['pp11', 'pp12'], { ppg1: 'fail-closed' });
    expect(rig.walk(7)).toEqual([]);
    expect(rig.walk(8)).toEqual([]);
    expect(rig.counters.drops[Drop.hop_down]).toBe(2);
    rig.health(['pp11'], { ppg1: 'fail-closed' });
    expect(rig.walk(7)).toEqual(['sf12i', expect.stringMatching(/^sf2\di$/), 'srv0']);
  });

  it('an empty group follows its policy like a hop with every instance down', () => {
    const s: StateBuilder = twoHop();
    s.byName('port_pair_groups', 'ppg1').port_pairs = [];
    const rig = new LoopRig(s.state);
    rig.health([], { ppg1: 'fail-open' });
    expect(rig.walk(9)).toEqual([expect.stringMatching(/^sf2\di$/), 'srv0']);
    rig.health([], { ppg1: 'fail-closed' });
    expect(rig.walk(9)).toEqual([]);
    expect(rig.counters.drops[Drop.hop_down]).toBe(1);
  });
});

describe('health probes in the data path', () => {
  it('a probe sent into an instance comes back at its egress, is recorded for it and consumed; a stray one is consumed too', () => {
    const rig = new LoopRig(twoHop().state);
    const k = rig.tables.instanceNames.findIndex((n) => n.portPair === 'pp21');
    const probe = (instance: number, seq: number) =>
      buildProbe({ ethDst: '02:00:00:00:21:01', ethSrc: CLIENT_MAC, src: '10.0.0.1', dst: '10.0.0.2', instance, seq });
    expect(rig.inject('sf21i', probe(k, 7))).toEqual(['sf21i']); // out, looped back, and nowhere else
    expect(rig.engine.stats().probeSeq[k]).toBe(7);
    // A probe naming another instance (or a stale one) is consumed without being recorded.
    const other = rig.tables.instanceNames.findIndex((n) => n.portPair === 'pp11');
    expect(rig.inject('sf21i', probe(other, 8))).toEqual(['sf21i']);
    expect(rig.engine.stats().probeSeq[other]).toBe(0);
    expect(rig.counters.events[Ctr.probes_returned]).toBe(2);
    expect(rig.counters.events[Ctr.dropped]).toBe(0);
  });
});

describe('health probes for SF-aware instances', () => {
  for (const kind of ['nsh', 'mpls'] as const) {
    it(`probes an ${kind}-aware instance with its hop's encapsulation and consumes the return`, () => {
      const b = twoHop();
      for (const p of b.state.port_pairs) if (p.name.startsWith('pp1')) p.service_function_parameters.correlation = kind;
      b.state.port_chains[0].chain_parameters.correlation = kind;
      const plan = buildPlan(b.state, { members: [] });
      const targets = probeTargets(plan);
      const k = plan.members.findIndex((m) => m.name === 'pp11');
      const aware = targets.get(k)!;
      // Hop 1 receives the classifier's index: SPI = chain_id, SI 255; hop 2 is unaware (plain probe).
      expect(aware).toMatchObject({ iface: 'sf11i', spec: { ethDst: '02:00:00:00:11:01', encap: { kind, spi: 1, si: 255 } } });
      expect(targets.get(plan.members.findIndex((m) => m.name === 'pp21'))!.spec.encap).toBeUndefined();
      const rig = new LoopRig(b.state);
      const kt = rig.tables.instanceNames.findIndex((n) => n.portPair === 'pp11');
      const frame = buildProbe({ ...aware.spec, instance: kt, seq: 9 });
      expect(frame[12] << 8 | frame[13]).toBe(kind === 'nsh' ? 0x894f : 0x8847);
      expect(rig.inject('sf11i', frame)).toEqual(['sf11i']); // into the SF, back at its egress, consumed there
      expect(rig.engine.stats().probeSeq[kt]).toBe(9);
      expect(rig.counters.events[Ctr.probes_returned]).toBe(1);
      expect(rig.counters.events[Ctr.dropped]).toBe(0);
    });
  }
});

describe('stamping a probe built once', () => {
  it('gives the bytes buildProbe gives for that sequence number (UDP checksum updated), for IPv4, IPv6, MPLS and NSH', () => {
    const base = { ethDst: '02:00:00:00:21:01', ethSrc: CLIENT_MAC, instance: 5 };
    const specs = [
      { ...base, src: '10.0.0.1', dst: '10.0.0.2' },
      { ...base, src: 'fd00::1', dst: 'fd00::2' },
      { ...base, src: '10.0.0.1', dst: '10.0.0.2', encap: { kind: 'mpls' as const, spi: 3, si: 255 } },
      { ...base, src: 'fd00::1', dst: 'fd00::2', encap: { kind: 'nsh' as const, spi: 70000, si: 254 } },
    ];
    for (const spec of specs) {
      const frame = buildProbe({ ...spec, seq: 1 });
      for (const seq of [2, 3, 0xffff, 0x10000, 0x1234abcd, 0xfffffffe, 0xffffffff, 77]) {
        stampProbe(frame, seq);
        expect([...frame]).toEqual([...buildProbe({ ...spec, seq })]);
      }
    }
  });
});
