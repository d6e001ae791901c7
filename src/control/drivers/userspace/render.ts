/*
 * The userspace renderer: one Plan (control/plan.ts) into one immutable Tables generation
 * (dataplane/tables.ts). Runs on the main thread, in the userspace driver's precommit (what it
 * cannot render vetoes the write: `unsupported`) and postcommit (the result is published to the
 * data path).
 *
 * What it renders:
 *  - per path its hops (group, SI, forward position) and each hop's action list; per rule its
 *    entry port, its far port (chain-end delivery) and its chain-end action list. The plan's
 *    `deliver`/`switch` become the rule's far port (ruleDstPort, -1 = switch) that steer outputs
 *    to; the byte-level actions become ACT_* opcodes that execute.ts runs;
 *  - the entry classifier: every rule at its logical port, in plan order (= priority order; the
 *    API refuses overlaps across chains anyway);
 *  - per SF return port the (path, hop) pairs it closes, plus a classifier over the rules of those
 *    paths with logical ports ignored, used when the flow state does not know a returning frame
 *    (OVS re-classifies at every SF egress the same way);
 *  - per group a weighted Maglev table over its members, hashed on the group's lb_fields;
 *  - health (control/health.ts), the renderer's second input: down members are left out of the
 *    Maglev tables and marked (instLiveGroup -1) so their flows' sticky choices stop holding; per
 *    hop, where a frame goes when its group has no usable instance (hopLive: skip or drop);
 *  - the static L2 entries: every port's MAC, and which ports are SF ports.
 * Instance indices are the plan's member indices; interface indices are stable too (keyed by name,
 * `prev` supplies the old assignment).
 *
 * Incremental: every change renders the whole plan, but a render against `prev` reuses what that
 * generation already built from identical inputs: each group's Maglev slice (keyed by its
 * instances' keys, weights and indices), each classifier table (keyed by its rules' fields), each
 * classifier partition (one logical port's rules: a change at one port rebuilds that partition
 * only) and each port's MAC bytes (same index, same text). The memo hangs off the Tables in a WeakMap, so
 * Tables stay plain structured-clone-able objects and a generation's memo goes away with it.
 *
 *  - SF-aware hops (port pair correlation mpls/nsh) as push/pop opcodes and per-hop `hopAware`
 *    (steer then expects the hop's own label / SPI+SI back);
 *  - tap hops as tap nodes (their member and action list) that ACT_COPY_TAP copies a frame to; the
 *    tap's ports are marked so that what a tap sends is dropped;
 *  - n-tuple mappings through the rules' per-hop matches, which the re-classification tables use;
 *  - service graphs as per source path a hand-off classifier over the destination chains' rules.
 * `unsupported` refuses only real limits: missing interfaces, index and hop counts.
 */
import { NeutronError } from '../../errors.js';
import { ALL_UP, liveHops, type HealthView } from '../../health.js';
import { assignStable, buildPlan, type Action, type Plan, type PlanRule } from '../../plan.js';
import type { State } from '../../model.js';
import type { ClassifierFields } from '../../../classifier/rule.js';
import { compileClassifier, type ClassifierTable, type Partition } from '../../../classifier/lookup.js';
import { ruleFromClassifier, type Rule } from '../../../classifier/rule.js';
import { lbFieldMask } from '../../../hash/flowhash.js';
import { buildMaglev, maglevSize } from '../../../hash/maglev.js';
import { ENCAP_MPLS, ENCAP_NSH } from '../../../packet/batch.js';
import {
  ACT_COPY_TAP,
  ACT_POP_MPLS,
  ACT_POP_NSH,
  ACT_PUSH_MPLS,
  ACT_PUSH_NSH,
  ACT_RESTORE_MACS,
  ACT_SET_DST_MAC,
  ACT_SET_END_MACS,
  ACT_TUNNEL,
  allocTables,
  INST_MAC_STRIDE,
  MAX_HOPS,
  MAX_INDEX,
  parseMac,
  RULE_ENDS_STRIDE,
  type InstanceName,
  type RuleInfo,
  type Tables,
} from '../../../dataplane/tables.js';
import { indexVnis } from '../../../dataplane/vxlan.js';

const refuse = (message: string) => new NeutronError(400, 'SfcBadRequest', message);

/** What the userspace data path cannot run yet, as the 400s a precommit returns (empty: renderable). */
export function unsupported(plan: Plan): NeutronError[] {
  const problems: NeutronError[] = [];
  for (const p of plan.ports) {
    if (p.iface === '') problems.push(refuse(`port ${p.name}: binding:profile.interface is required`));
  }
  if (plan.ports.length > MAX_INDEX) problems.push(refuse(`at most ${MAX_INDEX} ports are supported, got ${plan.ports.length}`));
  if (plan.members.length > MAX_INDEX) problems.push(refuse(`at most ${MAX_INDEX} port pairs in chains are supported`));
  for (const c of plan.chains) {
    const hops = plan.paths[c.forward].sfHops;
    if (hops > MAX_HOPS) problems.push(refuse(`port chain ${c.name}: at most ${MAX_HOPS} hops are supported, got ${hops}`));
  }
  return problems;
}

/** What one generation built, by the exact inputs it was built from. */
interface Memo {
  /** A group's instances (key, weight, instance index) → its Maglev slice of instance indices. */
  maglev: Map<string, Int32Array>;
  /** A rule list (ruleKey per rule) → its compiled classifier, and the partitions it is made of. */
  classifiers: Map<string, { table: ClassifierTable; partitions: Map<string, Partition> }>;
  /** The classifiers' partitions (one logical port's rules), so a changed rule list rebuilds only changed ports. */
  partitions: Map<string, Partition>;
  /** Each port's MAC text, by port index (its bytes are the generation's portMac). */
  macs: string[];
}

const MEMO = new WeakMap<Tables, Memo>();

/**
 * `key` from the previous generation's memo, else made; kept for the next. (Only the previous
 * generation's: a render with nothing to reuse builds everything itself, whatever the keys.)
 */
function reuse<V>(now: Map<string, V>, before: Map<string, V> | undefined, key: string, make: () => V): V {
  const value = before?.get(key) ?? make();
  now.set(key, value);
  return value;
}

/** Everything ruleFromClassifier reads from a match, for a rule at `inPort` (-1: any port). */
function ruleKey(m: ClassifierFields, reverse: boolean, inPort: number): string {
  return JSON.stringify([
    m.ethertype,
    m.protocol,
    m.source_ip_prefix,
    m.destination_ip_prefix,
    m.source_port_range_min,
    m.source_port_range_max,
    m.destination_port_range_min,
    m.destination_port_range_max,
    reverse,
    inPort,
  ]);
}

/**
 * An action list as (opcode, operand) pairs. deliver/switch are steer's output choice and handoff
 * is steer's graph table (pathHandoff), not opcodes; copy_to_tap's operand is the tap node's index
 * (`tapOf` numbers them).
 */
function opcodes(actions: Action[], tapOf: (hop: number) => number): [number, number][] {
  const out: [number, number][] = [];
  for (const a of actions) {
    switch (a.op) {
      case 'copy_to_tap':
        out.push([ACT_COPY_TAP, tapOf(a.hop)]);
        break;
      case 'handoff':
        break; // steer's graph hand-off (pathHandoff)
      case 'set_dst_mac':
        out.push([ACT_SET_DST_MAC, 0]);
        break;
      case 'set_end_macs':
        out.push([ACT_SET_END_MACS, a.port]);
        break;
      case 'restore_macs':
        out.push([ACT_RESTORE_MACS, 0]);
        break;
      case 'push':
        out.push([a.encap === 'mpls' ? ACT_PUSH_MPLS : ACT_PUSH_NSH, (a.spi << 8) | a.si]);
        break;
      case 'pop':
        out.push([a.encap === 'mpls' ? ACT_POP_MPLS : ACT_POP_NSH, 0]);
        break;
      case 'tunnel':
        out.push([ACT_TUNNEL, a.peer]);
        break;
      case 'deliver':
      case 'switch':
        break; // steer's output choice (ruleDstPort)
    }
  }
  return out;
}

/** Plan and render in one step (replay, explain, tests): throws the first `unsupported` problem. */
export function compileTables(state: State, prev?: Tables): Tables {
  const plan = buildPlan(state, prev && { members: prev.instanceKeys.map((id) => ({ id })) });
  const problems = unsupported(plan);
  if (problems.length > 0) throw problems[0];
  return renderTables(plan, prev);
}

export function renderTables(plan: Plan, prev?: Tables, health: HealthView = ALL_UP): Tables {
  const generation = (prev?.generation ?? 0) + 1;
  const before = prev && MEMO.get(prev);
  const { ports, members, groups, paths, rules } = plan;
  const memo: Memo = { maglev: new Map(), classifiers: new Map(), partitions: new Map(), macs: ports.map((p) => p.mac) };

  const classifierFor = (keys: string[], make: () => Rule[]): ClassifierTable => {
    const built = reuse(memo.classifiers, before?.classifiers, keys.join('\n'), () => {
      const partitions = new Map<string, Partition>();
      return { table: compileClassifier(make(), { before: before?.partitions, now: partitions }), partitions };
    });
    for (const [key, p] of built.partitions) memo.partitions.set(key, p);
    return built.table;
  };
  const portIndex = new Map(ports.map((p, k) => [p.id, k]));
  const build = (r: PlanRule, match: ClassifierFields, anyPort: boolean): Rule => {
    try {
      return ruleFromClassifier(match, (id) => portIndex.get(id) ?? -1, { reverse: r.reverse, anyPort });
    } catch (e) {
      throw refuse(`flow classifier ${r.classifier}: ${e instanceof Error ? e.message : String(e)}`);
    }
  };

  // Interface indices: stable, keyed by name (the underlay's too, in a per-host slice).
  const underlay = plan.underlay;
  const interfaces = assignStable(
    [...ports.map((p) => p.iface), ...(underlay ? [underlay.iface] : [])],
    prev?.interfaces ?? [],
  );
  const ifIndex = new Map<string, number>();
  interfaces.forEach((name, k) => name && ifIndex.set(name, k));

  // SF return ports: (path, hop) pairs. A port pair that left its group in this change keeps its
  // return role for one generation (it gets no new flows: it is not in the Maglev table), so frames
  // that were inside that SF when the change landed still continue at the next hop: hitless.
  const leftGroup = new Map<number, { ingress: number; egress: number }[]>(); // group index -> departed members
  if (prev) {
    const groupIndex = new Map(groups.map((g, gi) => [g.id, gi]));
    prev.instanceKeys.forEach((id, k) => {
      if (prev.instGroup[k] < 0 || members[k]?.id === id) return;
      const gi = groupIndex.get(prev.groupIds[prev.instGroup[k]]);
      const ingress = portIndex.get(prev.portIds[prev.instPortIn[k]]);
      const egress = portIndex.get(prev.portIds[prev.instPortOut[k]]);
      if (gi !== undefined && ingress !== undefined && egress !== undefined) {
        leftGroup.set(gi, [...(leftGroup.get(gi) ?? []), { ingress, egress }]);
      }
    });
  }
  const sfByPort: ({ path: number; hop: number }[] | undefined)[] = new Array(ports.length);
  const addReturn = (m: { ingress: number; egress: number }, reverse: boolean, path: number, hop: number) =>
    (sfByPort[reverse ? m.ingress : m.egress] ??= []).push({ path, hop });
  let hopCount = 0;
  paths.forEach((p, pi) => {
    for (let h = 0; h < p.sfHops; h++) {
      const g = p.hops[h].group;
      for (const k of groups[g].members) addReturn(members[k], p.reverse, pi, h);
      for (const m of leftGroup.get(g) ?? []) addReturn(m, p.reverse, pi, h);
    }
    hopCount += p.sfHops;
  });

  // Maglev slices over the live members, entries already instance indices (reused whenever the
  // group's inputs are unchanged). A down member is left out, so only its slots move.
  const up = (k: number) => !health.down.has(members[k].id);
  const maglevs = groups.map((g) => {
    const live = g.members.filter(up);
    const instances = live.map((k) => ({ key: members[k].id, weight: members[k].weight }));
    const key = live.map((k) => `${k} ${members[k].id} ${members[k].weight}`).join(',');
    return reuse(memo.maglev, before?.maglev, key, () => {
      try {
        return buildMaglev(instances, maglevSize(instances.length)).map((m) => (m < 0 ? -1 : live[m]));
      } catch (e) {
        throw refuse(`port pair group ${g.name}: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
  });

  // Action lists: per steered hop, per tap node (a tap hop of a path), per path end (before
  // delivery: copies, decapsulation), per rule (delivery).
  const taps: { path: number; hop: number; member: number; acts: [number, number][] }[] = [];
  const tapIndex = new Map<string, number>(); // "path hop" -> tap node
  paths.forEach((p, pi) =>
    p.hops.forEach((h, hi) => {
      if (h.kind !== 'tap' || groups[h.group].members.length === 0) return;
      tapIndex.set(`${pi} ${hi}`, taps.length);
      taps.push({ path: pi, hop: hi, member: groups[h.group].members[0], acts: [] });
    }),
  );
  const tapOf = (pi: number) => (hop: number) => tapIndex.get(`${pi} ${hop}`)!;
  for (const tap of taps) tap.acts = opcodes(paths[tap.path].hops[tap.hop].actions, tapOf(tap.path));
  const hopActs = paths.flatMap((p, pi) => p.hops.slice(0, p.sfHops).map((h) => opcodes(h.actions, tapOf(pi))));
  const remoteActs = paths.flatMap((p, pi) => p.hops.slice(0, p.sfHops).map((h) => opcodes(h.remote ?? [], tapOf(pi))));
  const arriveActs = paths.flatMap((p, pi) => p.hops.slice(0, p.sfHops).map((h) => opcodes(h.arrive ?? [], tapOf(pi))));
  const endArriveActs = paths.map((p, pi) => opcodes(p.arriveEnd ?? [], tapOf(pi)));
  const endActs = paths.map((p, pi) => opcodes(p.end, tapOf(pi)));
  const ruleActs = rules.map((r) => opcodes(r.end.slice(paths[r.path].end.length), tapOf(r.path)));
  const actionCount = [...hopActs, ...remoteActs, ...arriveActs, ...endArriveActs, ...endActs, ...ruleActs, ...taps.map((x) => x.acts)].reduce(
    (n, a) => n + a.length,
    0,
  );

  const t = allocTables(
    {
      interfaces: interfaces.length,
      ports: ports.length,
      sfEntries: sfByPort.reduce((n, l) => n + (l?.length ?? 0), 0),
      rules: rules.length,
      paths: paths.length,
      hops: hopCount,
      groups: groups.length,
      maglev: maglevs.reduce((n, m) => n + m.length, 0),
      instances: members.length,
      actions: actionCount,
      taps: taps.length,
      peers: underlay?.peers.length ?? 0,
    },
    classifierFor(
      rules.map((r) => ruleKey(r.match, r.reverse, r.at)),
      () => rules.map((r) => build(r, r.match, false)),
    ),
  );
  t.generation = generation;
  t.interfaces = interfaces;
  let actAt = 0;
  const putActs = (acts: [number, number][], base: Int32Array, count: Int32Array, k: number) => {
    base[k] = actAt;
    count[k] = acts.length;
    for (const [op, arg] of acts) {
      t.actOp[actAt] = op;
      t.actArg[actAt++] = arg;
    }
  };

  // Logical ports, and the static MAC table.
  t.portIds = ports.map((p) => p.id);
  t.portNames = ports.map((p) => p.name);
  ports.forEach((p, k) => {
    if (prev && before?.macs[k] === p.mac) for (let b = k * 6; b < k * 6 + 6; b++) t.portMac[b] = prev.portMac[b];
    else if (!parseMac(p.mac, t.portMac, k * 6)) throw refuse(`port ${p.name}: bad mac_address '${p.mac}'`);
    t.portIface[k] = ifIndex.get(p.iface)!;
    t.portIsSf[k] = p.sf ? 1 : 0;
    if (!p.sf) t.ifaceFlood[t.portIface[k]] = 1;
    t.portMacHi[k] = (t.portMac[k * 6] << 8) | t.portMac[k * 6 + 1];
    t.portMacLo[k] = ((t.portMac[k * 6 + 2] << 24) | (t.portMac[k * 6 + 3] << 16) | (t.portMac[k * 6 + 4] << 8) | t.portMac[k * 6 + 5]) >>> 0;
    let at = ((t.portMacLo[k] ^ t.portMacHi[k]) >>> 0) & t.macMask;
    while (t.macSlots[at] !== 0) at = (at + 1) & t.macMask;
    t.macSlots[at] = k + 1;
  });
  // Ports by interface (a counting sort: each interface's ports in port order).
  for (let k = 0; k < ports.length; k++) t.ifacePortCount[t.portIface[k]]++;
  for (let f = 1; f < interfaces.length; f++) t.ifacePortBase[f] = t.ifacePortBase[f - 1] + t.ifacePortCount[f - 1];
  const ifaceFill = t.ifacePortBase.slice();
  for (let k = 0; k < ports.length; k++) t.ifacePorts[ifaceFill[t.portIface[k]]++] = k;
  let at = 0;
  for (let k = 0; k < ports.length; k++) {
    t.portSfBase[k] = at;
    for (const { path, hop } of sfByPort[k] ?? []) {
      t.sfPath[at] = path;
      t.sfHop[at] = hop;
      at++;
    }
    t.portSfCount[k] = at - t.portSfBase[k];
  }

  // Rules.
  t.rules = rules.map((r): RuleInfo => ({ classifier: r.classifier, classifierId: r.classifierId, reverse: r.reverse }));
  rules.forEach((r, k) => {
    t.rulePath[k] = r.path;
    if (t.pathFirstRule[r.path] < 0) t.pathFirstRule[r.path] = k;
    if (r.at >= 0) t.portEntry[r.at] = 1;
    t.ruleAtPort[k] = r.at;
    t.ruleDstPort[k] = r.end.some((a) => a.op === 'deliver' || a.op === 'tunnel') ? r.to : -1;
    if (r.to >= 0) t.ruleEnds.set(t.portMac.subarray(r.to * 6, r.to * 6 + 6), k * RULE_ENDS_STRIDE);
    if (r.at >= 0) t.ruleEnds.set(t.portMac.subarray(r.at * 6, r.at * 6 + 6), k * RULE_ENDS_STRIDE + 6);
    putActs(ruleActs[k], t.ruleActBase, t.ruleActCount, k);
  });

  // Re-classification tables, one per distinct set of (path, hop) an SF port returns from: the
  // rules of those paths as a frame returning from that hop matches them (n-tuple mappings applied).
  const tableByKey = new Map<string, number>();
  for (let k = 0; k < ports.length; k++) {
    const list = sfByPort[k];
    if (list === undefined) continue;
    const entries = [...new Set(list.map((e) => `${e.path} ${e.hop}`))].map((x) => x.split(' ').map(Number));
    entries.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    const key = entries.join(';');
    let ti = tableByKey.get(key);
    if (ti === undefined) {
      const seen = new Set<string>();
      const inTable: { r: number; match: ClassifierFields; key: string }[] = [];
      for (const [p, h] of entries) {
        for (const r of paths[p].rules) {
          const match = rules[r].hopMatch[h];
          const rk = ruleKey(match, rules[r].reverse, -1);
          if (!seen.has(`${r} ${rk}`)) inTable.push({ r, match, key: rk });
          seen.add(`${r} ${rk}`);
        }
      }
      inTable.sort((a, b) => a.r - b.r);
      ti = t.sfTables.length;
      t.sfTables.push(
        classifierFor(
          inTable.map((x) => x.key),
          () => inTable.map((x) => build(rules[x.r], x.match, true)),
        ),
      );
      t.sfTableRules.push(Int32Array.from(inTable.map((x) => x.r)));
      tableByKey.set(key, ti);
    }
    t.portSfTable[k] = ti;
  }

  // Tunnel arrivals (per-host slices): per node with an arrive list, the path's rules as a frame
  // bound for that node matches them (n-tuple mappings of the hops before it applied).
  function arriveTable(pi: number, k: number): number {
    const inTable = paths[pi].rules.map((r) => ({ r, match: k === 0 ? rules[r].match : rules[r].hopMatch[k - 1] }));
    t.sfTables.push(
      classifierFor(
        inTable.map((x) => ruleKey(x.match, rules[x.r].reverse, -1)),
        () => inTable.map((x) => build(rules[x.r], x.match, true)),
      ),
    );
    t.sfTableRules.push(Int32Array.from(inTable.map((x) => x.r)));
    return t.sfTables.length - 1;
  }

  // Service graph hand-offs: per source path, the destination chains' rules (logical ports ignored).
  const handoffByKey = new Map<string, number>();
  paths.forEach((p, pi) => {
    const graphs = p.end.flatMap((a) => (a.op === 'handoff' ? [a.graph] : []));
    if (graphs.length === 0) return;
    const inTable = rules.flatMap((r, ri) => (r.handoffFrom.includes(p.chain) ? [ri] : []));
    const key = inTable.join(',');
    let hx = handoffByKey.get(key);
    if (hx === undefined) {
      hx = t.handoffTables.length;
      t.handoffTables.push(
        classifierFor(
          inTable.map((ri) => ruleKey(rules[ri].match, false, -1)),
          () => inTable.map((ri) => build(rules[ri], rules[ri].match, true)),
        ),
      );
      t.handoffTableRules.push(Int32Array.from(inTable));
      handoffByKey.set(key, hx);
    }
    t.pathHandoff[pi] = hx;
  });

  // Tap nodes.
  taps.forEach((tap, k) => {
    t.tapInst[k] = tap.member;
    putActs(tap.acts, t.tapActBase, t.tapActCount, k);
    const m = members[tap.member];
    t.portIsTap[m.ingress] = 1;
    t.portIsTap[m.egress] = 1;
  });

  // Chains, paths, hops.
  t.chainNames = plan.chains.map((c) => c.name);
  let hopAt = 0;
  paths.forEach((p, pi) => {
    t.pathChain[pi] = p.chain;
    t.pathSpi[pi] = p.spi;
    t.pathReverse[pi] = p.reverse ? 1 : 0;
    t.pathEncap[pi] = p.encap === 'mpls' ? ENCAP_MPLS : ENCAP_NSH;
    putActs(endActs[pi], t.pathEndActBase, t.pathEndActCount, pi);
    putActs(endArriveActs[pi], t.pathArriveActBase, t.pathArriveActCount, pi);
    if (p.arriveEnd) t.pathArriveTable[pi] = arriveTable(pi, p.sfHops);
    t.pathHopBase[pi] = hopAt;
    t.pathHopCount[pi] = p.sfHops;
    liveHops(p, groups, members, up, health.policy).forEach((k, h) => (t.hopLive[hopAt + h] = k));
    for (let h = 0; h < p.sfHops; h++) {
      t.hopGroup[hopAt] = p.hops[h].group;
      t.hopChainHop[hopAt] = p.hops[h].chainHop;
      t.hopSi[hopAt] = p.hops[h].si;
      t.hopAware[hopAt] = p.hops[h].correlation === null ? 0 : 1;
      putActs(hopActs[hopAt], t.hopActBase, t.hopActCount, hopAt);
      putActs(remoteActs[hopAt], t.hopRemoteActBase, t.hopRemoteActCount, hopAt);
      putActs(arriveActs[hopAt], t.hopArriveActBase, t.hopArriveActCount, hopAt);
      if (p.hops[h].arrive) t.hopArriveTable[hopAt] = arriveTable(pi, h);
      const plain = hopActs[hopAt].length === 1 && hopActs[hopAt][0][0] === ACT_SET_DST_MAC && !p.hops[h].remote;
      t.hopPlain[hopAt] = plain ? 1 : 0;
      hopAt++;
    }
  });

  // Groups and their Maglev tables.
  t.groupIds = groups.map((g) => g.id);
  let magAt = 0;
  groups.forEach((g, gi) => {
    t.groupLbMask[gi] = lbFieldMask(g.lbFields);
    const m = maglevs[gi];
    t.groupMaglevBase[gi] = magAt;
    t.groupMaglevMask[gi] = m.length - 1;
    t.maglev.set(m, magAt);
    magAt += m.length;
  });

  // Instances.
  t.instanceKeys = members.map((m) => m.id);
  t.instanceNames = members.map((m): InstanceName => {
    if (m.group < 0) return { chain: '', hop: 0, portPair: '', ingress: '', egress: '' };
    const g = groups[m.group];
    return { chain: g.chains.join(','), hop: g.hop, portPair: m.name, ingress: ports[m.ingress].name, egress: ports[m.egress].name };
  });
  members.forEach((m, k) => {
    if (m.group < 0) return;
    t.instGroup[k] = m.group;
    t.instLiveGroup[k] = up(k) ? m.group : -1;
    t.instPortIn[k] = m.ingress;
    t.instPortOut[k] = m.egress;
    t.instIfIn[k] = t.portIface[m.ingress];
    t.instIfOut[k] = t.portIface[m.egress];
    t.instMac.set(t.portMac.subarray(m.ingress * 6, m.ingress * 6 + 6), k * INST_MAC_STRIDE);
    t.instMac.set(t.portMac.subarray(m.egress * 6, m.egress * 6 + 6), k * INST_MAC_STRIDE + 6);
    // indices are stable: k held this port pair before iff prev's key at k is its id
    t.instBorn[k] = prev && prev.instanceKeys[k] === m.id ? prev.instBorn[k] : generation;
    t.portInst[m.ingress] = k;
    t.portInst[m.egress] = k;
  });
  if (underlay) renderUnderlay(t, plan, ifIndex.get(underlay.iface)!);
  MEMO.set(t, memo);
  return t;
}

/**
 * A per-host slice's tunnel ends (control/slice.ts): the underlay interface and addresses, each
 * peer's address, which peer each port and instance is on, and the VNI -> path index.
 */
function renderUnderlay(t: Tables, plan: Plan, iface: number): void {
  const u = plan.underlay!;
  t.underlayIface = iface;
  t.underlayIp = ipv4Word(u.ip, 'underlay address');
  if (!parseMac(u.mac, t.underlayMac, 0)) throw refuse(`underlay: bad MAC '${u.mac}'`);
  const peerOf = new Map(u.peers.map((p, k) => [p.host, k]));
  u.peers.forEach((p, k) => {
    if (p.ip === '' || !parseMac(p.mac, t.peerMac, k * 6)) return; // not known yet: frames for it are dropped as no_peer
    t.peerIp[k] = ipv4Word(p.ip, `host ${p.host}'s underlay address`);
  });
  plan.ports.forEach((p, k) => (t.portPeer[k] = peerOf.get(p.host) ?? -1));
  plan.members.forEach((m, k) => m.group >= 0 && (t.instPeer[k] = t.portPeer[m.ingress]));
  indexVnis(t);
}

function ipv4Word(text: string, what: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  const bytes = m ? m.slice(1).map(Number) : [];
  if (bytes.length !== 4 || bytes.some((x) => x > 255)) throw refuse(`${what}: '${text}' is not an IPv4 address`);
  return ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
}
