import { describe, expect, it } from 'vitest';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import { buildPlan } from '../src/control/plan.js';
import { NeutronError } from '../src/control/errors.js';
import { UserspaceDriver } from '../src/control/drivers/userspace/driver.js';
import type { State } from '../src/control/model.js';
import { formatMac, INST_MAC_STRIDE, MAX_HOPS, type Tables } from '../src/dataplane/tables.js';
import { StateBuilder, twoHop } from './support/sfc-state.js';

/** Path p's hops as readable rows (group members from the plan of the same state). */
function hopsOf(t: Tables, p: number, state: State) {
  const plan = buildPlan(state);
  const rows = [];
  for (let h = 0; h < t.pathHopCount[p]; h++) {
    const x = t.pathHopBase[p] + h;
    const g = t.hopGroup[x];
    const group = plan.groups.find((x) => x.id === t.groupIds[g])!;
    rows.push({ group: group.name, si: t.hopSi[x], chainHop: t.hopChainHop[x], instances: group.members.map((k) => t.instanceNames[k].portPair) });
  }
  return rows;
}

/** (path, hop) pairs a named port returns from. */
function returnsOf(t: Tables, portName: string) {
  const L = t.portNames.indexOf(portName);
  const out = [];
  for (let k = t.portSfBase[L]; k < t.portSfBase[L] + t.portSfCount[L]; k++) out.push([t.sfPath[k], t.sfHop[k]]);
  return out;
}

function compileError(state: State): NeutronError {
  try {
    compileTables(state);
  } catch (e) {
    if (e instanceof NeutronError) return e;
    throw e;
  }
  throw new Error('compiled without error');
}

describe('compileTables', () => {
  it('renders a chain as one forward path: SPI = chain_id, SI 254 - i, groups in order', () => {
    const s = twoHop();
    s.state.port_chains[0].chain_id = 42;
    const t = compileTables(s.state);
    expect(t.pathCount).toBe(1);
    expect(t.pathSpi[0]).toBe(42);
    expect(t.pathReverse[0]).toBe(0);
    expect(hopsOf(t, 0, s.state)).toEqual([
      { group: 'ppg1', si: 254, chainHop: 0, instances: ['pp11', 'pp12'] },
      { group: 'ppg2', si: 253, chainHop: 1, instances: ['pp21', 'pp22'] },
    ]);
    // Entry at the classifier's logical source port; SF egress ports return from their hop.
    expect(t.portEntry[t.portNames.indexOf('client')]).toBe(1);
    expect(t.portEntry[t.portNames.indexOf('server')]).toBe(0);
    expect(returnsOf(t, 'sf12-out')).toEqual([[0, 0]]);
    expect(returnsOf(t, 'sf21-out')).toEqual([[0, 1]]);
    expect(returnsOf(t, 'sf21-in')).toEqual([]);
    // Two rules (tcp, udp), both delivering to the server port.
    expect(t.rules.map((r) => [r.classifier, r.reverse])).toEqual([
      ['fc-tcp', false],
      ['fc-udp', false],
    ]);
    expect(Array.from(t.ruleDstPort)).toEqual([1, 1]);
    expect(formatMac(t.ruleEnds, 0)).toBe('02:00:00:00:00:02'); // far end = server
    expect(formatMac(t.ruleEnds, 6)).toBe('02:00:00:00:00:01'); // entry = client
  });

  it('a symmetric chain gets a reverse path: reverse hop order, egress MAC, ingress as return port', () => {
    const sym = twoHop({ symmetric: true }).state;
    const t = compileTables(sym);
    expect(t.pathCount).toBe(2);
    expect(t.pathReverse[1]).toBe(1);
    expect(t.pathSpi[1]).toBe(t.pathSpi[0]);
    expect(hopsOf(t, 1, sym)).toEqual([
      { group: 'ppg2', si: 254, chainHop: 1, instances: ['pp21', 'pp22'] },
      { group: 'ppg1', si: 253, chainHop: 0, instances: ['pp11', 'pp12'] },
    ]);
    // Reverse rules sit at the server port and deliver to the client port.
    const rev = t.rules.map((r, k) => ({ ...r, k })).filter((r) => r.reverse);
    expect(rev.map((r) => r.classifier)).toEqual(['fc-tcp', 'fc-udp']);
    for (const r of rev) {
      expect(t.rulePath[r.k]).toBe(1);
      expect(t.portNames[t.ruleDstPort[r.k]]).toBe('client');
    }
    expect(t.portEntry[t.portNames.indexOf('server')]).toBe(1);
    // On the reverse path an SF is left by its ingress port...
    expect(returnsOf(t, 'sf21-in')).toEqual([[1, 0]]);
    expect(returnsOf(t, 'sf11-in')).toEqual([[1, 1]]);
    // ...and entered at its egress interface / MAC (instMac's second half).
    const k = t.instanceKeys.indexOf(twoHop().byName('port_pairs', 'pp21').id);
    expect(t.interfaces[t.instIfOut[k]]).toBe('sf21e');
    expect(formatMac(t.instMac, k * INST_MAC_STRIDE + 6)).toBe('02:00:00:00:21:02');
    expect(formatMac(t.instMac, k * INST_MAC_STRIDE)).toBe('02:00:00:00:21:01');
  });

  it('keeps instance and interface indices stable across recompiles, reusing holes', () => {
    const a = twoHop();
    const t1 = compileTables(a.state);
    const idx = (t: Tables, name: string) => t.instanceKeys.indexOf(a.byName('port_pairs', name).id);
    // Remove pp11, add pp13 (new port pair on new interfaces) to ppg1.
    const b = twoHop();
    b.port('sf13-in', 'sf13i', '02:00:00:00:13:01');
    b.port('sf13-out', 'sf13e', '02:00:00:00:13:02');
    const pp13 = b.pair('pp13', 'sf13-in', 'sf13-out');
    const g1 = b.byName('port_pair_groups', 'ppg1');
    g1.port_pairs = [b.byName('port_pairs', 'pp12').id, pp13.id];
    const t2 = compileTables(b.state, t1);
    expect(t2.generation).toBe(t1.generation + 1);
    for (const name of ['pp12', 'pp21', 'pp22']) {
      expect(idx(t2, name)).toBe(idx(t1, name));
      expect(t2.instBorn[idx(t2, name)]).toBe(t1.generation);
    }
    // pp13 took pp11's freed index and was born in the new generation.
    expect(idx(t2, 'pp11')).toBe(-1);
    const k13 = t2.instanceKeys.indexOf(pp13.id);
    expect(k13).toBe(idx(t1, 'pp11'));
    expect(t2.instBorn[k13]).toBe(t2.generation);
    expect(t2.instanceNames[k13]).toEqual({ chain: 'pc1', hop: 1, portPair: 'pp13', ingress: 'sf13-in', egress: 'sf13-out' });
    // Interfaces keep their index; new ones are appended.
    t1.interfaces.forEach((name, f) => expect(t2.interfaces[f]).toBe(name));
    expect(t2.interfaces.slice(t1.interfaces.length)).toEqual(['sf13i', 'sf13e']);
    // Maglev of ppg1 only names ppg1's live instances.
    const g = t2.groupIds.indexOf(b.byName('port_pair_groups', 'ppg1').id);
    const table = new Set(t2.maglev.subarray(t2.groupMaglevBase[g], t2.groupMaglevBase[g] + t2.groupMaglevMask[g] + 1));
    expect([...table].sort()).toEqual([idx(t2, 'pp12'), k13].sort());
  });

  it('honours weights in the Maglev table and drains weight 0', () => {
    const t = compileTables(twoHop({ weights: [[3, 1], [0, 0]] }).state);
    const share = (g: number) => {
      const m = t.maglev.subarray(t.groupMaglevBase[g], t.groupMaglevBase[g] + t.groupMaglevMask[g] + 1);
      const counts = new Map<number, number>();
      for (const k of m) counts.set(k, (counts.get(k) ?? 0) + 1);
      return { counts, size: m.length };
    };
    const g1 = share(0);
    const [a, b] = [...g1.counts.entries()].sort((x, y) => y[1] - x[1]);
    expect(t.instanceNames[a[0]].portPair).toBe('pp11');
    expect(a[1] / g1.size).toBeCloseTo(0.75, 2);
    expect(b[1] / g1.size).toBeCloseTo(0.25, 2);
    expect([...share(1).counts.keys()]).toEqual([-1]);
  });

  it('skips empty tap groups (SIs count only real hops) and renders a tap group with a member as a copy', () => {
    const s = twoHop();
    s.group('tapg', [], { tap: true });
    const c = s.state.port_chains[0];
    c.port_pair_groups = [c.port_pair_groups[0], s.byName('port_pair_groups', 'tapg').id, c.port_pair_groups[1]];
    const t = compileTables(s.state);
    expect(hopsOf(t, 0, s.state).map((h) => [h.group, h.si])).toEqual([
      ['ppg1', 254],
      ['ppg2', 253],
    ]);
    s.port('tap-p', 'tap0', '02:00:00:00:99:01');
    s.pair('pptap', 'tap-p', 'tap-p');
    s.byName('port_pair_groups', 'tapg').port_pairs.push(s.byName('port_pairs', 'pptap').id);
    const tapped = compileTables(s.state);
    expect(hopsOf(tapped, 0, s.state).map((h) => [h.group, h.si])).toEqual([
      ['ppg1', 254],
      ['ppg2', 253],
    ]);
    expect(tapped.tapInst.length).toBe(1);
    expect(tapped.instanceNames[tapped.tapInst[0]].portPair).toBe('pptap');
  });

  it('produces a structured-clone-able plain object', () => {
    const t = compileTables(twoHop({ symmetric: true }).state);
    expect(structuredClone(t)).toEqual(t);
  });

  it('refuses what the data path cannot render with 400 SfcBadRequest', () => {
    const sym = twoHop({ symmetric: true });
    sym.state.flow_classifiers[0].logical_destination_port = null;
    const dangling = twoHop();
    dangling.state.port_chains[0].port_pair_groups.push('00000000-0000-4000-8000-999999999999');
    const long = new StateBuilder();
    long.port('c', 'c0', '02:00:00:00:00:01');
    long.port('x', 'x0', '02:00:00:00:00:09');
    long.pair('pp', 'x', 'x');
    long.group('g0', ['pp']);
    for (let h = 1; h <= MAX_HOPS; h++) long.group(`g${h}`, []);
    long.classifier('fc', { src: 'c' });
    long.chain('long', Array.from({ length: MAX_HOPS + 1 }, (_, h) => `g${h}`), ['fc']);
    const noIface = twoHop();
    noIface.state.ports[0]['binding:profile'] = { interface: '' };
    const badMac = twoHop();
    badMac.state.ports[0].mac_address = 'zz';

    for (const [state, text] of [
      [sym.state, /symmetric chain needs a logical_destination_port/],
      [dangling.state, /unknown port pair group/],
      [long.state, new RegExp(`at most ${MAX_HOPS} hops`)],
      [badMac.state, /bad mac_address/],
      [noIface.state, /port client: binding:profile.interface is required/],
    ] as const) {
      const e = compileError(state);
      expect(e.status).toBe(400);
      expect(e.type).toBe('SfcBadRequest');
      expect(e.message).toMatch(text);
    }
  });
});

describe('UserspaceDriver', () => {
  it('vetoes what cannot compile, publishes generations that keep instance indices', async () => {
    const published: Tables[] = [];
    const d = new UserspaceDriver((t) => {
      published.push(t);
    });
    const bad = twoHop();
    bad.state.ports[0]['binding:profile'] = { interface: '' };
    const veto = d.precommit(buildPlan(bad.state));
    expect(veto).toHaveLength(1);
    expect(veto[0].status).toBe(400);

    const good = buildPlan(twoHop().state);
    expect(d.precommit(good)).toEqual([]);
    await d.postcommit(good);
    const next = structuredClone(twoHop().state);
    next.port_pairs[3].service_function_parameters.weight = 0;
    await d.postcommit(buildPlan(next, good));
    expect(published.map((t) => t.generation)).toEqual([1, 2]);
    expect(published[1].instanceKeys).toEqual(published[0].instanceKeys);
    expect(d.tables).toBe(published[1]);
  });

  it('a failed publish leaves the previous generation in force', async () => {
    let fail = false;
    const d = new UserspaceDriver(() => {
      if (fail) throw new Error('workers gone');
    });
    await d.postcommit(buildPlan(twoHop().state));
    const before = d.tables;
    fail = true;
    await expect(d.postcommit(buildPlan(twoHop({ symmetric: true }).state))).rejects.toThrow('workers gone');
    expect(d.tables).toBe(before);
  });
});
