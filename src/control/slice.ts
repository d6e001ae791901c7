/*
 * Per-host slices of a plan (issue 14): one agent per host renders only its part of the one plan
 * every host shares, and frames cross between hosts in VXLAN tunnels (dataplane/vxlan.ts).
 *
 * A port is on the host its `binding:host_id` names ('' = the only host: local to every slice).
 * Which host runs a node's action list follows from where the frame is: the list "into node k" runs
 * on the host where node k-1 returned the frame (the classifier's host for k = 0). So, on host H:
 *  - a hop with a member on another host gets a `remote` list, used when selection picks such a
 *    member: [tap copies] [pop the chain's encapsulation if the previous node was SF-aware]
 *    push(spi, SI of the hop) set_dst_mac tunnel(-1: the selected member's host). The frame
 *    crosses as "tunnel form": its Ethernet header addressed to the selected instance, the chain's
 *    MPLS label / NSH carrying SPI and the index of the node it is bound for;
 *  - a hop with a member on H gets an `arrive` list for tunnelled frames bound for it: pop the
 *    tunnel form's encapsulation, push the chain's again with the previous node's index if the hop
 *    is SF-aware (B.4), set_dst_mac (the instance the sender selected, steer reads it from the
 *    frame's destination MAC: selection happens once per hop, on the sending host);
 *  - a rule whose far port is on another host ends with push(spi, SI of the destination node)
 *    tunnel(that host) instead of delivery; every path gets `arriveEnd` = pop, after which the
 *    rule's delivery runs on the far port's host;
 *  - ports on other hosts keep their index (so MACs, members and rules keep theirs) but are bound
 *    to the underlay interface and marked `sf` (never an L2 destination here: no L2 between hosts).
 * The VNI names the path (vniOf: SPI and direction); the receiving agent needs no classification
 * to know path and node. Selection is Maglev over the flow's lb_fields (symmetric), so whichever host
 * selects for a hop picks what a single host would, in both directions.
 *
 * What a slice refuses (400s, `multiHostProblems`): a port pair with its ports on two hosts; tap
 * groups and service graphs in a plan whose ports are on several hosts. A server rendering one
 * host itself refuses ports on any other host (`oneHostGuard`).
 */
import type { Driver } from './driver.js';
import { NeutronError } from './errors.js';
import type { State } from './model.js';
import { SOURCE_SI, type Action, type Plan, type PlanPath, type Underlay } from './plan.js';

/** A host's underlay end as its agent publishes it. */
export interface UnderlayAddress {
  ip: string;
  mac: string;
}

const refuse = (message: string) => new NeutronError(400, 'SfcBadRequest', message);

/** The hosts a plan's ports name (sorted; '' left out). */
export function planHosts(plan: Plan): string[] {
  return [...new Set(plan.ports.map((p) => p.host).filter((h) => h !== ''))].sort();
}

/** What a multi-host rendering of `plan` cannot do, as 400s (empty: it can be sliced). */
export function multiHostProblems(plan: Plan): NeutronError[] {
  const problems: NeutronError[] = [];
  for (const m of plan.members) {
    if (m.group < 0) continue;
    const a = plan.ports[m.ingress].host;
    const b = plan.ports[m.egress].host;
    if (a !== b) problems.push(refuse(`port pair ${m.name}: ingress is on host '${a}' and egress on host '${b}'; a port pair's ports must be on one host`));
  }
  if (planHosts(plan).length > 1) {
    for (const g of plan.groups) if (g.tap) problems.push(refuse(`port pair group ${g.name}: tap groups are not supported on chains across hosts`));
    for (const g of plan.graphs) problems.push(refuse(`service graph ${g.name}: service graphs are not supported across hosts`));
  }
  return problems;
}

/**
 * The veto of a server that renders one host itself (`sfc serve --driver userspace|ovs --host H`):
 * every port must be on H (or name no host); a port on another host needs that host's agent. It is
 * the first driver of such a server's DriverManager, so its 400s come before any renderer's.
 */
export function oneHostGuard(host: string): Driver {
  return {
    name: 'one-host',
    precommit: (next) =>
      next.ports
        .filter((p) => p.host !== '' && p.host !== host)
        .map((p) =>
          refuse(
            `port ${p.name || p.id}: binding:host_id '${p.host}' is not this server's host '${host}' (sfc serve --host); this server renders one host's dataplane: ` +
              `run 'sfc agent --host ${p.host}' on that host, with the model in etcd (sfc serve --store etcd://... --driver noop)`,
          ),
        ),
    postcommit: async () => undefined,
  };
}

/**
 * The part of `state` host `host` renders: the port chains with a port on it (a classifier's
 * logical port or a port of one of its port pairs) and the service graphs among those; every
 * other object stays (a plan only uses what its chains reach).
 */
export function hostState(state: State, host: string): State {
  const here = new Set(state.ports.filter((p) => (p['binding:host_id'] ?? '') === '' || p['binding:host_id'] === host).map((p) => p.id));
  const pairs = new Map(state.port_pairs.map((pp) => [pp.id, pp]));
  const groups = new Map(state.port_pair_groups.map((g) => [g.id, g]));
  const classifiers = new Map(state.flow_classifiers.map((f) => [f.id, f]));
  const touches = (c: State['port_chains'][number]) =>
    c.flow_classifiers.some((id) => {
      const f = classifiers.get(id);
      return f !== undefined && (here.has(f.logical_source_port ?? '') || here.has(f.logical_destination_port ?? ''));
    }) ||
    c.port_pair_groups.some((id) =>
      (groups.get(id)?.port_pairs ?? []).some((pid) => {
        const pp = pairs.get(pid);
        return pp !== undefined && (here.has(pp.ingress) || here.has(pp.egress));
      }),
    );
  const port_chains = state.port_chains.filter(touches);
  const kept = new Set(port_chains.map((c) => c.id));
  const service_graphs = state.service_graphs.filter((g) => Object.entries(g.port_chains).every(([from, to]) => kept.has(from) && to.every((c) => kept.has(c))));
  return { ...state, port_chains, service_graphs };
}

/** `plan` with the members on other hosts than `host` as holes: what this host's health checks probe. */
export function localMembers(plan: Plan, host: string): Plan {
  const here = (port: number) => plan.ports[port].host === '' || plan.ports[port].host === host;
  return { ...plan, members: plan.members.map((m) => (m.group < 0 || here(m.ingress) ? m : { ...m, group: -1 })) };
}

/**
 * The instances host `host` treats as down (its health view, control/health.ts): its own checks'
 * `local` set, the down sets the other agents publish, and every member on a host other than this
 * one that has no agent record (a dead agent's lease expired): a dead host's instances leave
 * selection with the same policies as a failed health check.
 */
export function hostsDown(plan: Plan, host: string, local: ReadonlySet<string>, agents: ReadonlyMap<string, Record<string, unknown>>): Set<string> {
  const down = new Set(local);
  for (const [h, a] of agents) if (h !== host && Array.isArray(a.down)) for (const id of a.down) if (typeof id === 'string') down.add(id);
  for (const m of plan.members) {
    const on = m.group >= 0 ? plan.ports[m.ingress].host : '';
    if (on !== '' && on !== host && !agents.has(on)) down.add(m.id);
  }
  return down;
}

/** The SI of node k of path p (k = sfHops: the destination node). */
export function nodeSi(p: PlanPath, k: number): number {
  return k < p.sfHops ? p.hops[k].si : SOURCE_SI - 1 - p.sfHops;
}

/**
 * Host `local.host`'s slice of `plan`: its underlay interface and address, and the underlay
 * addresses of the other hosts its ports name (`peers`; a host missing there gets '' and frames
 * for it are dropped as 'no_peer' until its agent publishes one). Throws the first
 * multiHostProblems error.
 */
export function slicePlan(plan: Plan, local: { host: string; iface: string; ip: string; mac: string }, peers: ReadonlyMap<string, UnderlayAddress>): Plan {
  const problems = multiHostProblems(plan);
  if (problems.length > 0) throw problems[0];
  const isLocal = (port: number) => plan.ports[port].host === '' || plan.ports[port].host === local.host;
  const remoteHosts = planHosts(plan).filter((h) => h !== local.host);
  const peerIndex = new Map(remoteHosts.map((h, k) => [h, k]));
  const underlay: Underlay = {
    ...local,
    peers: remoteHosts.map((host) => ({ host, ip: peers.get(host)?.ip ?? '', mac: peers.get(host)?.mac ?? '' })),
  };
  const ports = plan.ports.map((p, k) => (isLocal(k) ? p : { ...p, iface: local.iface, sf: true }));

  const paths = plan.paths.map((p): PlanPath => {
    const pop: Action = { op: 'pop', encap: p.encap };
    const pushFor = (k: number): Action => ({ op: 'push', encap: p.encap, spi: p.spi, si: nodeSi(p, k) });
    const hops = p.hops.map((h, k) => {
      if (k >= p.sfHops) return h;
      const where = plan.groups[h.group].members.map((m) => isLocal(plan.members[m].ingress));
      const prevAware = k > 0 && p.hops[k - 1].correlation !== null;
      const prevSi = k === 0 ? SOURCE_SI : p.hops[k - 1].si;
      const sliced = { ...h };
      if (where.includes(false)) {
        const copies = h.actions.filter((a) => a.op === 'copy_to_tap');
        sliced.remote = [...copies, ...(prevAware ? [pop] : []), pushFor(k), { op: 'set_dst_mac' }, { op: 'tunnel', peer: -1 }];
      }
      if (where.includes(true)) {
        const push: Action[] = h.correlation !== null ? [{ op: 'push', encap: p.encap, spi: p.spi, si: prevSi }] : [];
        sliced.arrive = [pop, ...push, { op: 'set_dst_mac' }];
      }
      return sliced;
    });
    return { ...p, hops, arriveEnd: [pop] };
  });

  const rules = plan.rules.map((r) => {
    if (r.to < 0 || isLocal(r.to)) return r;
    const p = paths[r.path];
    const peer = peerIndex.get(plan.ports[r.to].host)!;
    return { ...r, end: [...p.end, { op: 'push', encap: p.encap, spi: p.spi, si: nodeSi(p, p.sfHops) }, { op: 'tunnel', peer }] satisfies Action[] };
  });

  return { ...plan, ports, paths, rules, underlay };
}
