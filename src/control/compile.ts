/*
 * The compiler: one State (the networking-sfc model) into one immutable Tables generation
 * (dataplane/tables.ts). Runs on the main thread, in the userspace driver's precommit (a compile
 * error vetoes the write) and postcommit (the result is published to the data path).
 *
 * What it renders (networking-sfc-spec.md B.1, B.4, B.6, B.11):
 *  - per chain a forward path (SPI = chain_id; hop i has SI 254 - i) and, for symmetric chains, a
 *    reverse path over the same groups in reverse order, entered at each classifier's
 *    logical_destination_port, leaving SFs by their ingress port and addressing their egress MAC;
 *  - per classifier one rule at its logical_source_port (and one reverse rule at its
 *    logical_destination_port for symmetric chains), in chain order then classifier order, which is
 *    the classifier's priority order (the API refuses overlaps across chains anyway);
 *  - per SF return port the (path, hop) pairs it closes, plus a classifier over the rules of those
 *    paths with logical ports ignored, used when the flow state does not know a returning frame
 *    (OVS re-classifies at every SF egress the same way);
 *  - per group the instances (port pairs) and a weighted Maglev table over them, hashed on the
 *    group's lb_fields.
 * Instance indices are stable across generations (keyed by port pair id; `prev` supplies the old
 * assignment), and so are interface indices (keyed by name).
 *
 * Incremental: every change compiles the whole State, but a compile against `prev` reuses what
 * that generation already built from identical inputs: each group's Maglev slice (keyed by its
 * instances' keys, weights and indices), each classifier table (keyed by its rules' fields) and
 * each port's MAC bytes (same index, same text). The memo hangs off the Tables in a WeakMap, so
 * Tables stay plain structured-clone-able objects and a generation's memo goes away with it; a
 * compile keeps only what it used, so the memo never outgrows one generation.
 *
 * Not rendered yet (the seams exist: hopKind, pathEncap): tap groups with a member, SF-aware port
 * pairs (correlation mpls/nsh) and non-empty service graphs are refused with 400, since rendering
 * them as plain hops would be silently wrong (a tap would get no copy). An empty tap group copies to
 * nobody, so it is skipped: the chain continues to the next hop and the SI numbering counts only
 * non-tap hops, as the reference renumbers them (B.1). ppg_n_tuple_mapping is ignored. Errors are NeutronError(400, 'SfcBadRequest') naming the object.
 */
import { NeutronError } from './errors.js';
import type { FlowClassifier, PortChain, PortPair, PortPairGroup, State } from './model.js';
import { compileClassifier, type ClassifierTable } from '../classifier/lookup.js';
import { ruleFromClassifier, type Rule } from '../classifier/rule.js';
import { lbFieldMask } from '../hash/flowhash.js';
import { buildMaglev, maglevSize } from '../hash/maglev.js';
import {
  allocTables,
  HOP_SF,
  INST_MAC_STRIDE,
  MAX_HOPS,
  MAX_INDEX,
  parseMac,
  RULE_MAC_STRIDE,
  type InstanceName,
  type RuleInfo,
  type Tables,
} from '../dataplane/tables.js';
import { ENCAP_NONE } from '../packet/batch.js';

const refuse = (message: string) => new NeutronError(400, 'SfcBadRequest', message);

const label = (o: { id: string; name: string }) => (o.name ? o.name : o.id);

interface ChainPlan {
  chain: PortChain;
  hops: PortPairGroup[];
  classifiers: FlowClassifier[];
}

interface PathPlan {
  chainIdx: number;
  reverse: boolean;
  /** Group indices in path order, and each hop's position in the chain's forward order. */
  hops: number[];
  chainHops: number[];
}

interface RulePlan {
  fc: FlowClassifier;
  path: number;
  reverse: boolean;
  rule: Rule;
}

/** What one generation built, by the exact inputs it was built from. */
interface Memo {
  /** A group's instances (key, weight, instance index) → its Maglev slice of instance indices. */
  maglev: Map<string, Int32Array>;
  /** A rule list (ruleKey per rule) → its compiled classifier. */
  classifiers: Map<string, ClassifierTable>;
  /** Each port's MAC text, by port index (its bytes are the generation's portMac). */
  macs: string[];
}

const MEMO = new WeakMap<Tables, Memo>();

/**
 * `key` from the previous generation's memo, else made; kept for the next. (Only the previous
 * generation's: a compile with nothing to reuse builds everything itself, whatever the keys.)
 */
function reuse<V>(now: Map<string, V>, before: Map<string, V> | undefined, key: string, make: () => V): V {
  const value = before?.get(key) ?? make();
  now.set(key, value);
  return value;
}

/** Everything ruleFromClassifier reads from a classifier, for a rule at `inPort` (-1: any port). */
function ruleKey(fc: FlowClassifier, reverse: boolean, inPort: number): string {
  return JSON.stringify([
    fc.ethertype,
    fc.protocol,
    fc.source_ip_prefix,
    fc.destination_ip_prefix,
    fc.source_port_range_min,
    fc.source_port_range_max,
    fc.destination_port_range_min,
    fc.destination_port_range_max,
    reverse,
    inPort,
  ]);
}

export function compileTables(state: State, prev?: Tables): Tables {
  const generation = (prev?.generation ?? 0) + 1;
  const before = prev && MEMO.get(prev);
  const memo: Memo = { maglev: new Map(), classifiers: new Map(), macs: state.ports.map((p) => p.mac_address) };
  const ports = state.ports;
  const portIndex = new Map<string, number>(ports.map((p, k) => [p.id, k]));
  const pairs = new Map<string, PortPair>(state.port_pairs.map((p) => [p.id, p]));
  const groups = new Map<string, PortPairGroup>(state.port_pair_groups.map((g) => [g.id, g]));
  const classifiers = new Map<string, FlowClassifier>(state.flow_classifiers.map((f) => [f.id, f]));

  for (const sg of state.service_graphs) {
    if (Object.keys(sg.port_chains).length > 0) {
      throw refuse(`service graph ${label(sg)}: service graphs are not supported by the userspace dataplane yet`);
    }
  }

  for (const p of ports) {
    if (typeof p['binding:profile']?.interface !== 'string' || p['binding:profile'].interface === '') {
      throw refuse(`port ${label(p)}: binding:profile.interface is required`);
    }
  }

  if (ports.length > MAX_INDEX) throw refuse(`at most ${MAX_INDEX} ports are supported, got ${ports.length}`);

  const classifierFor = (keys: string[], rules: () => Rule[]): ClassifierTable =>
    reuse(memo.classifiers, before?.classifiers, keys.join('\n'), () => compileClassifier(rules()));

  const portOf = (id: string | null, what: string): number => {
    const k = id === null ? -1 : (portIndex.get(id) ?? -1);
    if (k < 0) throw refuse(`${what}: unknown port ${id}`);
    return k;
  };

  // Chains: resolve references, drop empty tap hops, check what the data path can render.
  const plans: ChainPlan[] = state.port_chains.map((chain) => {
    const what = `port chain ${label(chain)}`;
    const hops: PortPairGroup[] = [];
    for (const gid of chain.port_pair_groups) {
      const g = groups.get(gid);
      if (!g) throw refuse(`${what}: unknown port pair group ${gid}`);
      if (!g.tap_enabled) hops.push(g);
      else if (g.port_pairs.length > 0)
        throw refuse(`port pair group ${label(g)}: tap groups (passive copies) are not supported by the userspace dataplane yet`);
    }
    if (hops.length > MAX_HOPS) throw refuse(`${what}: at most ${MAX_HOPS} hops are supported, got ${hops.length}`);
    const fcs = chain.flow_classifiers.map((fid) => {
      const fc = classifiers.get(fid);
      if (!fc) throw refuse(`${what}: unknown flow classifier ${fid}`);
      portOf(fc.logical_source_port, `flow classifier ${label(fc)}: logical_source_port`);
      if (fc.logical_destination_port !== null) portOf(fc.logical_destination_port, `flow classifier ${label(fc)}: logical_destination_port`);
      else if (chain.chain_parameters.symmetric) {
        throw refuse(`flow classifier ${label(fc)}: a symmetric chain needs a logical_destination_port`);
      }
      return fc;
    });
    return { chain, hops, classifiers: fcs };
  });

  // Groups used by some chain, in first-use order, and their port pairs.
  const groupList: PortPairGroup[] = [];
  const groupIndex = new Map<string, number>();
  const groupChains = new Map<string, { chains: string[]; hop: number }>();
  for (const { chain, hops } of plans) {
    hops.forEach((g, h) => {
      if (!groupIndex.has(g.id)) {
        groupIndex.set(g.id, groupList.length);
        groupList.push(g);
        groupChains.set(g.id, { chains: [], hop: h + 1 });
      }
      groupChains.get(g.id)!.chains.push(label(chain));
    });
  }
  const pairGroup = new Map<string, PortPairGroup>();
  const groupPairs: PortPair[][] = groupList.map((g) =>
    g.port_pairs.map((pid) => {
      const pp = pairs.get(pid);
      if (!pp) throw refuse(`port pair group ${label(g)}: unknown port pair ${pid}`);
      const other = pairGroup.get(pid);
      if (other && other !== g) throw refuse(`port pair ${label(pp)} is in two port pair groups (${label(other)}, ${label(g)})`);
      pairGroup.set(pid, g);
      if (pp.service_function_parameters.correlation !== null) {
        throw refuse(
          `port pair ${label(pp)}: SF-aware port pairs (correlation ${pp.service_function_parameters.correlation}) are not supported by the userspace dataplane yet`,
        );
      }
      portOf(pp.ingress, `port pair ${label(pp)}: ingress`);
      portOf(pp.egress, `port pair ${label(pp)}: egress`);
      return pp;
    }),
  );

  // Instance indices: keep the previous generation's, fill holes, then append.
  const instanceKeys = assignStable(
    groupPairs.flat().map((pp) => pp.id),
    prev?.instanceKeys ?? [],
  );
  if (instanceKeys.length > MAX_INDEX) throw refuse(`at most ${MAX_INDEX} port pairs in chains are supported`);
  const instIndex = new Map<string, number>();
  instanceKeys.forEach((key, k) => key && instIndex.set(key, k));

  // Interface indices: same policy, keyed by name.
  const interfaces = assignStable(
    ports.map((p) => p['binding:profile'].interface),
    prev?.interfaces ?? [],
  );
  const ifIndex = new Map<string, number>();
  interfaces.forEach((name, k) => name && ifIndex.set(name, k));

  // Paths and hops.
  const paths: PathPlan[] = [];
  const chainPaths: { fwd: number; rev: number }[] = [];
  plans.forEach(({ chain, hops }, c) => {
    const gs = hops.map((g) => groupIndex.get(g.id)!);
    const fwd = paths.push({ chainIdx: c, reverse: false, hops: gs, chainHops: gs.map((_, h) => h) }) - 1;
    let rev = -1;
    if (chain.chain_parameters.symmetric) {
      const n = gs.length;
      rev = paths.push({ chainIdx: c, reverse: true, hops: [...gs].reverse(), chainHops: gs.map((_, h) => n - 1 - h) }) - 1;
    }
    chainPaths.push({ fwd, rev });
  });

  // Rules, in priority order.
  const rulePlans: RulePlan[] = [];
  const build = (fc: FlowClassifier, opts: { reverse?: boolean; anyPort?: boolean }): Rule => {
    try {
      return ruleFromClassifier(fc, (id) => portIndex.get(id) ?? -1, opts);
    } catch (e) {
      throw refuse(`flow classifier ${label(fc)}: ${e instanceof Error ? e.message : String(e)}`);
    }
  };
  plans.forEach(({ classifiers: fcs }, c) => {
    for (const fc of fcs) rulePlans.push({ fc, path: chainPaths[c].fwd, reverse: false, rule: build(fc, {}) });
    if (chainPaths[c].rev >= 0) {
      for (const fc of fcs) rulePlans.push({ fc, path: chainPaths[c].rev, reverse: true, rule: build(fc, { reverse: true }) });
    }
  });

  // SF return ports: (path, hop) pairs. A port pair that left its group in this change keeps its
  // return role for one generation (it gets no new flows: it is not in the Maglev table), so frames
  // that were inside that SF when the change landed still continue at the next hop: hitless.
  const leftGroup = new Map<string, PortPair[]>(); // group id -> its members of prev that are gone
  if (prev) {
    prev.instanceKeys.forEach((id, k) => {
      const g = prev.instGroup[k] >= 0 ? prev.groupIds[prev.instGroup[k]] : undefined;
      const pp = pairs.get(id);
      const gi = g === undefined ? undefined : groupIndex.get(g);
      if (pp && gi !== undefined && !groupPairs[gi].includes(pp)) leftGroup.set(g!, [...(leftGroup.get(g!) ?? []), pp]);
    });
  }
  const sfByPort: ({ path: number; hop: number }[] | undefined)[] = new Array(ports.length);
  const addReturn = (pp: PortPair, reverse: boolean, path: number, hop: number) => {
    const k = portIndex.get(reverse ? pp.ingress : pp.egress);
    if (k !== undefined) (sfByPort[k] ??= []).push({ path, hop });
  };
  let hopCount = 0;
  paths.forEach((p, pi) => {
    p.hops.forEach((g, h) => {
      for (const pp of groupPairs[g]) addReturn(pp, p.reverse, pi, h);
      for (const pp of leftGroup.get(groupList[g].id) ?? []) addReturn(pp, p.reverse, pi, h);
    });
    hopCount += p.hops.length;
  });

  // Maglev slices, entries already instance indices (reused whenever the group's inputs are unchanged).
  const maglevs = groupPairs.map((pps, gi) => {
    const instances = pps.map((pp) => ({ key: pp.id, weight: pp.service_function_parameters.weight }));
    const inst = pps.map((pp) => instIndex.get(pp.id)!);
    const key = JSON.stringify([instances, inst]);
    return reuse(memo.maglev, before?.maglev, key, () => {
      try {
        return buildMaglev(instances, maglevSize(pps.length)).map((m) => (m < 0 ? -1 : inst[m]));
      } catch (e) {
        throw refuse(`port pair group ${label(groupList[gi])}: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
  });

  const t = allocTables(
    {
      interfaces: interfaces.length,
      ports: ports.length,
      sfEntries: sfByPort.reduce((n, l) => n + (l?.length ?? 0), 0),
      rules: rulePlans.length,
      paths: paths.length,
      hops: hopCount,
      groups: groupList.length,
      groupInst: groupPairs.reduce((n, l) => n + l.length, 0),
      maglev: maglevs.reduce((n, m) => n + m.length, 0),
      instances: instanceKeys.length,
    },
    classifierFor(
      rulePlans.map((r) => ruleKey(r.fc, r.reverse, r.rule.inPort)),
      () => rulePlans.map((r) => r.rule),
    ),
  );
  t.generation = generation;
  t.interfaces = interfaces;

  // Logical ports.
  t.portIds = ports.map((p) => p.id);
  t.portNames = ports.map(label);
  ports.forEach((p, k) => {
    if (prev && before?.macs[k] === p.mac_address) for (let b = k * 6; b < k * 6 + 6; b++) t.portMac[b] = prev.portMac[b];
    else if (!parseMac(p.mac_address, t.portMac, k * 6)) throw refuse(`port ${label(p)}: bad mac_address '${p.mac_address}'`);
    t.portIface[k] = ifIndex.get(p['binding:profile'].interface)!;
    t.portMacHi[k] = (t.portMac[k * 6] << 8) | t.portMac[k * 6 + 1];
    t.portMacLo[k] = ((t.portMac[k * 6 + 2] << 24) | (t.portMac[k * 6 + 3] << 16) | (t.portMac[k * 6 + 4] << 8) | t.portMac[k * 6 + 5]) >>> 0;
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
  t.rules = rulePlans.map(
    (r): RuleInfo => ({ classifier: label(r.fc), classifierId: r.fc.id, reverse: r.reverse }),
  );
  rulePlans.forEach((r, k) => {
    t.rulePath[k] = r.path;
    t.portEntry[r.rule.inPort] = 1;
    const from = portIndex.get(r.fc.logical_source_port!)!;
    const to = r.fc.logical_destination_port === null ? -1 : portIndex.get(r.fc.logical_destination_port)!;
    const [src, dst] = r.reverse ? [to, from] : [from, to];
    t.ruleDstPort[k] = dst;
    if (dst >= 0) {
      t.ruleMacs.set(t.portMac.subarray(dst * 6, dst * 6 + 6), k * RULE_MAC_STRIDE);
      t.ruleMacs.set(t.portMac.subarray(src * 6, src * 6 + 6), k * RULE_MAC_STRIDE + 6);
      t.ruleHasMacs[k] = 1;
    }
  });

  // Re-classification tables, one per distinct set of paths an SF port returns from.
  const pathRules: number[][] = paths.map(() => []);
  rulePlans.forEach((r, ri) => pathRules[r.path].push(ri));
  const tableByKey = new Map<string, number>();
  for (let k = 0; k < ports.length; k++) {
    const list = sfByPort[k];
    if (list === undefined) continue;
    const pathSet = [...new Set(list.map((e) => e.path))].sort((a, b) => a - b);
    const key = pathSet.join(',');
    let ti = tableByKey.get(key);
    if (ti === undefined) {
      const members = pathSet.flatMap((p) => pathRules[p]).sort((a, b) => a - b);
      ti = t.sfTables.length;
      t.sfTables.push(
        classifierFor(
          members.map((ri) => ruleKey(rulePlans[ri].fc, rulePlans[ri].reverse, -1)),
          () => members.map((ri) => build(rulePlans[ri].fc, { reverse: rulePlans[ri].reverse, anyPort: true })),
        ),
      );
      t.sfTableRules.push(Int32Array.from(members));
      tableByKey.set(key, ti);
    }
    t.portSfTable[k] = ti;
  }

  // Chains, paths, hops.
  t.chainNames = plans.map(({ chain }) => label(chain));
  let hopAt = 0;
  paths.forEach((p, pi) => {
    t.pathChain[pi] = p.chainIdx;
    t.pathSpi[pi] = plans[p.chainIdx].chain.chain_id;
    t.pathReverse[pi] = p.reverse ? 1 : 0;
    // SF-unaware hops only (see the design comment): frames cross the hops plain.
    t.pathEncap[pi] = ENCAP_NONE;
    t.pathHopBase[pi] = hopAt;
    t.pathHopCount[pi] = p.hops.length;
    p.hops.forEach((g, h) => {
      t.hopGroup[hopAt] = g;
      t.hopChainHop[hopAt] = p.chainHops[h];
      t.hopSi[hopAt] = 254 - h;
      t.hopKind[hopAt] = HOP_SF;
      hopAt++;
    });
  });

  // Groups and their Maglev tables.
  t.groupNames = groupList.map(label);
  t.groupIds = groupList.map((g) => g.id);
  let instAt = 0;
  let magAt = 0;
  groupList.forEach((g, gi) => {
    t.groupLbMask[gi] = lbFieldMask(g.port_pair_group_parameters.lb_fields);
    t.groupInstBase[gi] = instAt;
    t.groupInstCount[gi] = groupPairs[gi].length;
    for (const pp of groupPairs[gi]) t.groupInst[instAt++] = instIndex.get(pp.id)!;
    const m = maglevs[gi];
    t.groupMaglevBase[gi] = magAt;
    t.groupMaglevMask[gi] = m.length - 1;
    t.maglev.set(m, magAt);
    magAt += m.length;
  });

  // Instances.
  t.instanceKeys = instanceKeys;
  t.instanceNames = instanceKeys.map((): InstanceName => ({ chain: '', hop: 0, portPair: '', ingress: '', egress: '' }));
  groupList.forEach((g, gi) => {
    const use = groupChains.get(g.id)!;
    const chainNames = use.chains.join(',');
    for (const pp of groupPairs[gi]) {
      const k = instIndex.get(pp.id)!;
      const ingAt = portIndex.get(pp.ingress)!;
      const egAt = portIndex.get(pp.egress)!;
      const ing = ports[ingAt];
      const eg = ports[egAt];
      t.instanceNames[k] = { chain: chainNames, hop: use.hop, portPair: label(pp), ingress: label(ing), egress: label(eg) };
      t.instGroup[k] = gi;
      t.instWeight[k] = pp.service_function_parameters.weight;
      t.instIfIn[k] = ifIndex.get(ing['binding:profile'].interface)!;
      t.instIfOut[k] = ifIndex.get(eg['binding:profile'].interface)!;
      for (let b = 0; b < 6; b++) {
        t.instMac[k * INST_MAC_STRIDE + b] = t.portMac[ingAt * 6 + b];
        t.instMac[k * INST_MAC_STRIDE + 6 + b] = t.portMac[egAt * 6 + b];
      }
      // indices are stable: k held this port pair before iff prev's key at k is its id
      t.instBorn[k] = prev && prev.instanceKeys[k] === pp.id ? prev.instBorn[k] : generation;
    }
  });
  MEMO.set(t, memo);
  return t;
}

/**
 * Stable index assignment: keys already placed in `prev` keep their index, indices whose key is
 * gone become holes (''), new keys fill holes from the lowest index, then append. Trailing holes
 * are trimmed.
 */
function assignStable(keys: string[], prev: readonly string[]): string[] {
  const wanted = new Set(keys);
  const out = prev.map((k) => (wanted.has(k) ? k : ''));
  const placed = new Set(out);
  let hole = 0;
  for (const k of keys) {
    if (placed.has(k)) continue;
    placed.add(k);
    while (hole < out.length && out[hole] !== '') hole++;
    if (hole < out.length) out[hole] = k;
    else out.push(k);
  }
  while (out.length > 0 && out[out.length - 1] === '') out.pop();
  return out;
}
