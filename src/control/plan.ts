/*
 * The plan: the driver-neutral compiled form of one State (ARCHITECTURE.md §5). Every driver renders
 * the same plan: the userspace renderer into typed-array tables, the OVS renderer into flows and
 * groups. A feature is added here once; a renderer that cannot render part of a plan says so
 * (`unsupported`) and the driver refuses the change in precommit.
 *
 * What it holds (networking-sfc-spec.md B.1-B.9):
 *  - ports with their interface and MAC; `sf` marks a port of some port pair;
 *  - members (port pairs used by a chain's group) with a STABLE index: keyed by port pair id and kept
 *    across plans (`buildPlan(state, prev)`), so counters, sticky flow choices and OVS bucket ids
 *    keep their meaning; a freed index is a hole and may be reused later;
 *  - groups with their members, weights (on the members), lb_fields, tap flag and n-tuple mapping;
 *  - per chain one forward path and, for a symmetric chain, one reverse path: SPI = chain_id; the
 *    source node (the classifier) has SI 255, the i-th non-tap hop 254 - i, the (never programmed)
 *    destination node the next index, tap hops the indices after it (the reference's renumbering,
 *    B.1: SRC 255 -> TAP -> SF -> DST becomes SF 254, DST 253, TAP 252); the reverse path uses the
 *    same numbering over the groups in reverse order;
 *  - per node an ACTION LIST: what happens to a frame on its way into that node (a hop) or out of
 *    the chain (the path's `end`), in order: copy to a tap, push/pop the chain's encapsulation
 *    (B.4's four proxy cases: an aware hop gets the frame encapsulated with the previous node's
 *    index, an unaware one plain), set the destination MAC of the member selection picked, at chain
 *    end set the MACs for the logical destination port and deliver, or restore and switch;
 *  - classifier rules per entry point (the logical source port; the logical destination port for the
 *    reverse path), in priority order (chain order, then classifier order);
 *  - service graphs as hand-offs from a source chain's end to destination chains.
 * The plan refuses nothing a renderer might support: structural errors (a dangling reference the
 * validator should have caught) are 400s here, rendering limits are the renderers'.
 */
import { NeutronError } from './errors.js';
import type { ClassifierFields } from '../classifier/rule.js';
import type { Correlation, LbField, NTuple, PortChain, PortPair, PortPairGroup, State } from './model.js';

export type Encap = 'mpls' | 'nsh';

/** What a renderer does to a frame on its way into a node (or out of the chain), in list order. */
export type Action =
  /** Copy the frame, as it is at this point, to the tap hop `hop` of the same path. */
  | { op: 'copy_to_tap'; hop: number }
  /** Push the chain's encapsulation carrying (spi, si); MPLS: label (spi << 8) | si, TTL si. */
  | { op: 'push'; encap: Encap; spi: number; si: number }
  /** Remove the chain's encapsulation (the frame came from an aware SF). */
  | { op: 'pop'; encap: Encap }
  /** Destination MAC := the selected member's ingress MAC (egress MAC on a reverse path). */
  | { op: 'set_dst_mac' }
  /** Chain end with a logical destination port: destination MAC := that port's MAC, source MAC := the one seen at chain entry. */
  | { op: 'set_end_macs'; port: number }
  /** Chain end without one: both MACs back to what the frame carried at chain entry. */
  | { op: 'restore_macs' }
  /** Leave through logical port `port`'s interface. */
  | { op: 'deliver'; port: number }
  /** Ordinary L2 switching on the frame's (restored) destination MAC. */
  | { op: 'switch' }
  /** Hand the frame to the service graph's destination chains (B.9); matching none, switch. */
  | { op: 'handoff'; graph: number }
  /**
   * Leave in a VXLAN tunnel to another host (a per-host slice, slice.ts): to underlay peer `peer`
   * (Plan.underlay.peers), or with peer -1 to the host of the member selection picked.
   */
  | { op: 'tunnel'; peer: number };

export interface PlanPort {
  id: string;
  name: string;
  mac: string;
  /** binding:profile.interface ('' when missing). */
  iface: string;
  /** A port of some port pair: never an L2 endpoint for traffic outside chains. */
  sf: boolean;
  /** binding:host_id: the host the port is on ('' = the only host). */
  host: string;
}

export interface PlanMember {
  /** Port pair id ('' = a freed index). */
  id: string;
  name: string;
  /** Port indices. */
  ingress: number;
  egress: number;
  weight: number;
  correlation: Correlation;
  /** Group index (-1 for a hole). */
  group: number;
}

export interface PlanGroup {
  id: string;
  name: string;
  groupId: number;
  tap: boolean;
  lbFields: LbField[];
  /** Member indices, in the group's port pair order. */
  members: number[];
  nTupleMapping: { ingress_n_tuple?: NTuple; egress_n_tuple?: NTuple };
  /** Names of the chains that use the group, and its 1-based hop number in the first of them. */
  chains: string[];
  hop: number;
}

export interface PlanHop {
  group: number;
  kind: 'sf' | 'tap';
  si: number;
  /** Position among the chain's non-tap hops in FORWARD order (shared by both directions); -1 for a tap. */
  chainHop: number;
  /** The members' correlation (all members of a group share it; the validator enforces it). */
  correlation: Correlation;
  actions: Action[];
  /** In a per-host slice (slice.ts): the list instead of `actions` when the member selected is on another host. */
  remote?: Action[];
  /** In a per-host slice: the list for a frame that arrives from another host's tunnel bound for this hop. */
  arrive?: Action[];
}

export interface PlanPath {
  chain: number;
  reverse: boolean;
  spi: number;
  /** The chain's correlation: the encapsulation an aware hop receives. */
  encap: Encap;
  /** Non-tap hops in path order, then tap hops (copies; never steered through). */
  hops: PlanHop[];
  /** Number of non-tap hops (hops[0 .. sfHops) are the steered ones). */
  sfHops: number;
  /** What happens after the last hop, before delivery (which is per rule: PlanRule.end). */
  end: Action[];
  /** Rule indices entering this path. */
  rules: number[];
  /** In a per-host slice: the list for a frame that arrives from a tunnel for the path's end, before the rule's delivery. */
  arriveEnd?: Action[];
}

export interface PlanChain {
  id: string;
  name: string;
  chainId: number;
  correlation: Encap;
  symmetric: boolean;
  /** Forward path index, and reverse path index (-1 when not symmetric). */
  forward: number;
  reverse: number;
}

export interface PlanRule {
  classifierId: string;
  classifier: string;
  /** The classifier's fields as they match at the entry of this path (source and destination NOT yet swapped for reverse). */
  match: ClassifierFields;
  /**
   * The fields a frame returning from each steered hop of the path matches (re-classification at
   * the SF's return port): `match` with the n-tuple mappings of the groups crossed so far (B.8).
   */
  hopMatch: ClassifierFields[];
  path: number;
  reverse: boolean;
  /** Logical port the rule applies at (-1: only through a graph hand-off). */
  at: number;
  /** Logical port of the other end (-1: none). */
  to: number;
  /** Source chains whose end hands traffic to this rule (service graphs; a join has several). */
  handoffFrom: number[];
  /**
   * What happens to this rule's frames after the path's last hop: the path's `end` (tap copies,
   * decapsulation, a graph hand-off), then delivery to `to` (or restore and switch).
   */
  end: Action[];
}

export interface PlanGraph {
  id: string;
  name: string;
  /** Source chain index -> destination chain indices. */
  edges: { from: number; to: number[] }[];
}

/** One host's end of the tunnels between hosts (a per-host slice, slice.ts). */
export interface Underlay {
  /** This host's name (binding:host_id), its underlay interface, IPv4 address and MAC. */
  host: string;
  iface: string;
  ip: string;
  mac: string;
  /** The other hosts the slice's ports are on, with their underlay address ('' while unknown). */
  peers: { host: string; ip: string; mac: string }[];
}

export interface Plan {
  ports: PlanPort[];
  members: PlanMember[];
  groups: PlanGroup[];
  chains: PlanChain[];
  paths: PlanPath[];
  rules: PlanRule[];
  graphs: PlanGraph[];
  /** Set in a per-host slice (slice.ts): ports on other hosts are reached through tunnels from here. */
  underlay?: Underlay;
}

const refuse = (message: string) => new NeutronError(400, 'SfcBadRequest', message);

export const label = (o: { id: string; name: string }) => (o.name ? o.name : o.id);

/** The classifier's SI: the source node of every path. */
export const SOURCE_SI = 255;

/**
 * The plan of `state`. `prev` (the plan in force, or anything that lists its members by index)
 * keeps member indices stable.
 */
export function buildPlan(state: State, prev?: { members: readonly { id: string }[] }): Plan {
  const portIndex = new Map<string, number>(state.ports.map((p, k) => [p.id, k]));
  const pairs = new Map<string, PortPair>(state.port_pairs.map((p) => [p.id, p]));
  const groupsById = new Map<string, PortPairGroup>(state.port_pair_groups.map((g) => [g.id, g]));
  const classifiers = new Map(state.flow_classifiers.map((f) => [f.id, f]));
  const portOf = (id: string | null, what: string): number => {
    const k = id === null ? undefined : portIndex.get(id);
    if (k === undefined) throw refuse(`${what}: unknown port ${id}`);
    return k;
  };

  const sfPorts = new Set<string>();
  for (const pp of state.port_pairs) sfPorts.add(pp.ingress).add(pp.egress);
  const ports: PlanPort[] = state.ports.map((p) => ({
    id: p.id,
    name: label(p),
    mac: p.mac_address.toLowerCase(),
    iface: typeof p['binding:profile']?.interface === 'string' ? p['binding:profile'].interface : '',
    sf: sfPorts.has(p.id),
    host: p['binding:host_id'] ?? '',
  }));

  // Groups used by a chain, in first-use order.
  const groups: PlanGroup[] = [];
  const groupIndex = new Map<string, number>();
  const chainGroups: PortPairGroup[][] = state.port_chains.map((chain) =>
    chain.port_pair_groups.map((gid) => {
      const g = groupsById.get(gid);
      if (!g) throw refuse(`port chain ${label(chain)}: unknown port pair group ${gid}`);
      return g;
    }),
  );
  state.port_chains.forEach((chain, c) => {
    let sfHop = 0;
    for (const g of chainGroups[c]) {
      if (!g.tap_enabled) sfHop++;
      let gi = groupIndex.get(g.id);
      if (gi === undefined) {
        gi = groups.push({
          id: g.id,
          name: label(g),
          groupId: g.group_id,
          tap: g.tap_enabled,
          lbFields: [...g.port_pair_group_parameters.lb_fields],
          members: [],
          nTupleMapping: g.port_pair_group_parameters.ppg_n_tuple_mapping ?? {},
          chains: [],
          hop: g.tap_enabled ? 0 : sfHop,
        }) - 1;
        groupIndex.set(g.id, gi);
      }
      groups[gi].chains.push(label(chain));
    }
  });

  // Members: stable indices keyed by port pair id.
  const used: PortPair[] = [];
  const pairGroup = new Map<string, number>();
  groups.forEach((g, gi) => {
    for (const pid of groupsById.get(g.id)!.port_pairs) {
      const pp = pairs.get(pid);
      if (!pp) throw refuse(`port pair group ${g.name}: unknown port pair ${pid}`);
      const other = pairGroup.get(pid);
      if (other !== undefined && other !== gi) {
        throw refuse(`port pair ${label(pp)} is in two port pair groups (${groups[other].name}, ${g.name})`);
      }
      pairGroup.set(pid, gi);
      used.push(pp);
    }
  });
  const keys = assignStable(
    used.map((pp) => pp.id),
    prev?.members.map((m) => m.id) ?? [],
  );
  const memberIndex = new Map<string, number>();
  keys.forEach((id, k) => id && memberIndex.set(id, k));
  const members: PlanMember[] = keys.map((id) => {
    const pp = id ? pairs.get(id) : undefined;
    if (!pp) return { id: '', name: '', ingress: -1, egress: -1, weight: 0, correlation: null, group: -1 };
    return {
      id,
      name: label(pp),
      ingress: portOf(pp.ingress, `port pair ${label(pp)}: ingress`),
      egress: portOf(pp.egress, `port pair ${label(pp)}: egress`),
      weight: pp.service_function_parameters.weight,
      correlation: pp.service_function_parameters.correlation,
      group: pairGroup.get(id)!,
    };
  });
  groups.forEach((g) => (g.members = groupsById.get(g.id)!.port_pairs.map((pid) => memberIndex.get(pid)!)));
  const groupCorrelation = (gi: number): Correlation => {
    const m = groups[gi].members;
    return m.length > 0 ? members[m[0]].correlation : null;
  };

  // Chains, paths, rules.
  const chains: PlanChain[] = [];
  const paths: PlanPath[] = [];
  const rules: PlanRule[] = [];
  state.port_chains.forEach((chain, c) => {
    const fcs = chain.flow_classifiers.map((fid) => {
      const fc = classifiers.get(fid);
      if (!fc) throw refuse(`port chain ${label(chain)}: unknown flow classifier ${fid}`);
      return fc;
    });
    const encap: Encap = chain.chain_parameters.correlation === 'nsh' ? 'nsh' : 'mpls';
    const pc: PlanChain = {
      id: chain.id,
      name: label(chain),
      chainId: chain.chain_id,
      correlation: encap,
      symmetric: chain.chain_parameters.symmetric,
      forward: -1,
      reverse: -1,
    };
    chains.push(pc);
    const order = chainGroups[c].map((g) => groupIndex.get(g.id)!);
    for (const reverse of chain.chain_parameters.symmetric ? [false, true] : [false]) {
      const p = paths.length;
      paths.push(buildPath(chain, c, reverse ? [...order].reverse() : order, reverse, encap));
      if (reverse) pc.reverse = p;
      else pc.forward = p;
      const hopGroups = paths[p].hops.slice(0, paths[p].sfHops).map((h) => groups[h.group].nTupleMapping);
      for (const fc of fcs) {
        const { match, hopMatch } = nTupleMatches(fc, hopGroups, reverse);
        const from = portOf(fc.logical_source_port, `flow classifier ${label(fc)}: logical_source_port`);
        const to = fc.logical_destination_port === null ? -1 : portOf(fc.logical_destination_port, `flow classifier ${label(fc)}: logical_destination_port`);
        if (reverse && to < 0) throw refuse(`flow classifier ${label(fc)}: a symmetric chain needs a logical_destination_port`);
        paths[p].rules.push(rules.length);
        rules.push({
          classifierId: fc.id,
          classifier: label(fc),
          match,
          hopMatch,
          path: p,
          reverse,
          at: reverse ? to : from,
          to: reverse ? from : to,
          handoffFrom: [],
          end: [],
        });
      }
    }
  });

  function buildPath(chain: PortChain, c: number, order: number[], reverse: boolean, encap: Encap): PlanPath {
    const sf = order.filter((gi) => !groups[gi].tap);
    const taps = order.filter((gi) => groups[gi].tap);
    const n = sf.length;
    const hops: PlanHop[] = sf.map((gi, h) => ({
      group: gi,
      kind: 'sf',
      si: SOURCE_SI - 1 - h,
      chainHop: reverse ? n - 1 - h : h,
      correlation: groupCorrelation(gi),
      actions: [],
    }));
    taps.forEach((gi, t) =>
      hops.push({ group: gi, kind: 'tap', si: SOURCE_SI - 2 - n - t, chainHop: -1, correlation: groupCorrelation(gi), actions: [] }),
    );
    const spi = chain.chain_id;
    // Which non-tap node precedes each tap (its copy is taken on the way out of that node): -1 = the source node.
    const tapAfter = new Map<number, number>(); // tap hop index -> number of sf hops before it
    let seen = 0;
    let t = 0;
    for (const gi of order) {
      if (groups[gi].tap) tapAfter.set(n + t++, seen);
      else seen++;
    }
    // Into node k (k = n: out of the chain): copies for taps placed right before it, then the proxy rules.
    const into = (k: number): Action[] => {
      const acts: Action[] = [];
      // (A tap group without a member copies to nobody: no action.)
      for (const [tap, before] of tapAfter) if (before === k && groups[hops[tap].group].members.length > 0) acts.push({ op: 'copy_to_tap', hop: tap });
      const prevAware = k > 0 && hops[k - 1].correlation !== null;
      const aware = k < n && hops[k].correlation !== null;
      const prevSi = k === 0 ? SOURCE_SI : hops[k - 1].si;
      if (prevAware && !aware) acts.push({ op: 'pop', encap });
      if (!prevAware && aware) acts.push({ op: 'push', encap, spi, si: prevSi });
      return acts;
    };
    for (let k = 0; k < n; k++) hops[k].actions = [...into(k), { op: 'set_dst_mac' }];
    // Tap copies: an aware tap gets the tap node's own label / SPI+SI (B.7: table 7 pushes the tap
    // node's label); an unaware tap a plain frame.
    for (let k = n; k < hops.length; k++) {
      const h = hops[k];
      const before = tapAfter.get(k)!;
      const upstreamAware = before > 0 && hops[before - 1].correlation !== null;
      const acts: Action[] = [];
      if (upstreamAware) acts.push({ op: 'pop', encap });
      if (h.correlation !== null) acts.push({ op: 'push', encap, spi, si: h.si });
      h.actions = [...acts, { op: 'set_dst_mac' }];
    }
    return { chain: c, reverse, spi, encap, hops, sfHops: n, end: into(n), rules: [] };
  }

  // Service graphs: the source chain's end hands off instead of delivering.
  const chainIndex = new Map(state.port_chains.map((ch, c) => [ch.id, c]));
  const graphs: PlanGraph[] = state.service_graphs.map((sg) => ({
    id: sg.id,
    name: label(sg),
    edges: Object.entries(sg.port_chains).map(([from, to]) => ({
      from: chainOf(from, sg),
      to: to.map((id) => chainOf(id, sg)),
    })),
  }));
  function chainOf(id: string, sg: { id: string; name: string }): number {
    const c = chainIndex.get(id);
    if (c === undefined) throw refuse(`service graph ${label(sg)}: unknown port chain ${id}`);
    return c;
  }
  graphs.forEach((g, gi) => {
    for (const e of g.edges) {
      paths[chains[e.from].forward].end.push({ op: 'handoff', graph: gi });
      // A destination chain's forward rules apply to handed-off traffic only, logical source port ignored.
      for (const c of e.to) {
        for (const r of paths[chains[c].forward].rules) {
          rules[r].at = -1;
          rules[r].handoffFrom.push(e.from);
        }
      }
    }
  });
  for (const r of rules) r.end = [...paths[r.path].end, ...delivery(r.to)];

  return { ports, members, groups, chains, paths, rules, graphs };
}

/** Chain-end delivery for a rule whose far end is logical port `to` (-1: none): B.4 plus ARCHITECTURE.md §4 transparency. */
function delivery(to: number): Action[] {
  return to >= 0 ? [{ op: 'set_end_macs', port: to }, { op: 'deliver', port: to }] : [{ op: 'restore_macs' }, { op: 'switch' }];
}

type Mapping = PlanGroup['nTupleMapping'];

/** `fc` with each n-tuple override applied in order (B.8: the switch's view of a translated flow). */
function overridden(fc: ClassifierFields, overrides: (NTuple | undefined)[]): ClassifierFields {
  const m = { ...fc };
  const text = (v: string | number | null) => (v === null ? null : String(v));
  const port = (v: string | number | null) => (v === null ? null : Number(v));
  for (const o of overrides) {
    if (o === undefined) continue;
    if (o.source_ip_prefix !== undefined) m.source_ip_prefix = text(o.source_ip_prefix);
    if (o.destination_ip_prefix !== undefined) m.destination_ip_prefix = text(o.destination_ip_prefix);
    if (o.source_port_range_min !== undefined) m.source_port_range_min = port(o.source_port_range_min);
    if (o.source_port_range_max !== undefined) m.source_port_range_max = port(o.source_port_range_max);
    if (o.destination_port_range_min !== undefined) m.destination_port_range_min = port(o.destination_port_range_min);
    if (o.destination_port_range_max !== undefined) m.destination_port_range_max = port(o.destination_port_range_max);
  }
  return m;
}

/**
 * The entry match and per-hop return matches of classifier fc on a path whose steered hops have
 * the given mappings (in path order), per B.8: forward, after a group with an egress_n_tuple the
 * fields are overridden by it and later hops inherit the override; reverse, the entry (at the
 * destination side) sees the forward path's last translation (every egress_n_tuple), and after a
 * group with an ingress_n_tuple its values apply, inherited by later reverse hops.
 */
function nTupleMatches(fc: ClassifierFields, mappings: Mapping[], reverse: boolean): { match: ClassifierFields; hopMatch: ClassifierFields[] } {
  const has = (t: NTuple | undefined) => t !== undefined && Object.keys(t).length > 0;
  if (!mappings.some((m) => has(m.egress_n_tuple) || has(m.ingress_n_tuple))) return { match: fc, hopMatch: mappings.map(() => fc) };
  const applied: (NTuple | undefined)[] = [];
  // Reverse hops run over the groups in reverse order: the entry already carries every forward translation.
  if (reverse) for (const m of [...mappings].reverse()) applied.push(m.egress_n_tuple);
  const match = overridden(fc, applied);
  const hopMatch = mappings.map((m) => {
    applied.push(reverse ? m.ingress_n_tuple : m.egress_n_tuple);
    return overridden(fc, applied);
  });
  return { match, hopMatch };
}

/**
 * Stable index assignment: keys already placed in `prev` keep their index, indices whose key is
 * gone become holes (''), new keys fill holes from the lowest index, then append. Trailing holes
 * are trimmed.
 */
export function assignStable(keys: string[], prev: readonly string[]): string[] {
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
