/*
 * flowlog: what the service functions themselves saw, recorded by nftables inside their
 * namespaces: evidence about steering that does not come from the dataplane's own counters.
 *
 * Every SF namespace gets table inet sfc_flowlog, hooked at prerouting before anything else:
 *   from_in   dynamic set of (ether saddr . l4proto . sport) of TCP/UDP arriving on in0:
 *             the forward direction; the source MAC says who handed the frame over (the client
 *             for hop 1, the previous hop's instance out0 after that: the dataplane rewrites the
 *             destination MAC only)
 *   from_out  dynamic set of (ether saddr . l4proto . dport) arriving on out0: replies of a
 *             symmetric chain, keyed by the client's port; the source MAC is the server's (last
 *             hop) or the next hop's instance in0
 *   pkts_in, pkts_out, pings (ICMP/ICMPv6 echo requests) counters
 * The server namespace gets `flows`, the (l4proto . sport) of TCP/UDP arriving from the client,
 * and a pings counter: the flows that were actually delivered, whatever their path.
 *
 * A flow is named "<proto>/<client port>" (tcp/41234, udp/20000). installFlowLog (re)creates the
 * tables, which also resets them. traceFlows turns the sets into, per flow and hop, the instances
 * that carried it each way, and whether each hop received it from the previous hop's chosen
 * instance (forward) or from the next one's (replies).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { PROBE_PORT } from '../dataplane/probe.js';
import { CLIENT, SERVER, netnsExec, sfMac, type LabSf } from './topology.js';
import type { LabInfo } from './harness.js';

export const FLOWLOG_TABLE = 'sfc_flowlog';

const SET_SIZE = 65536;

const SF_RULES = `
table inet ${FLOWLOG_TABLE} {}
delete table inet ${FLOWLOG_TABLE}
table inet ${FLOWLOG_TABLE} {
  set from_in { type ether_addr . inet_proto . inet_service; flags dynamic; size ${SET_SIZE}; }
  set from_out { type ether_addr . inet_proto . inet_service; flags dynamic; size ${SET_SIZE}; }
  counter pkts_in {}
  counter pkts_out {}
  counter pings {}
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    udp dport ${PROBE_PORT} return comment "the dataplane's own health probes (probe.ts) are not traffic"
    iifname "in0" counter name "pkts_in"
    iifname "out0" counter name "pkts_out"
    icmp type echo-request counter name "pings"
    icmpv6 type echo-request counter name "pings"
    iifname "in0" meta l4proto { tcp, udp } add @from_in { ether saddr . meta l4proto . th sport }
    iifname "out0" meta l4proto { tcp, udp } add @from_out { ether saddr . meta l4proto . th dport }
  }
}
`;

const SERVER_RULES = `
table inet ${FLOWLOG_TABLE} {}
delete table inet ${FLOWLOG_TABLE}
table inet ${FLOWLOG_TABLE} {
  set flows { type inet_proto . inet_service; flags dynamic; size ${SET_SIZE}; }
  counter pings {}
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    icmp type echo-request counter name "pings"
    icmpv6 type echo-request counter name "pings"
    iifname "eth0" meta l4proto { tcp, udp } add @flows { meta l4proto . th sport }
  }
}
`;

/** One set element of an SF: who handed the frame over, and the flow. */
export interface Handover {
  mac: string;
  flow: string;
}

export interface SfView {
  sf: LabSf;
  packetsIn: number;
  packetsOut: number;
  pings: number;
  /** Forward direction (arrived on in0). */
  fromIn: Handover[];
  /** Replies (arrived on out0). */
  fromOut: Handover[];
}

export interface FlowLog {
  sfs: SfView[];
  /** Flows delivered to the server, sorted. */
  serverFlows: string[];
  serverPings: number;
}

/** Create (or reset) the flow log in every SF namespace and in the server's. */
export async function installFlowLog(lab: LabInfo): Promise<void> {
  await Promise.all([
    netnsExec(lab.serverNs, ['nft', '-f', '-'], { input: SERVER_RULES }),
    ...lab.sfs.map((s) => netnsExec(s.ns, ['nft', '-f', '-'], { input: SF_RULES })),
  ]);
}

type NftObject = Record<string, { name: string; packets?: number; elem?: unknown[] }>;

async function listTable(ns: string): Promise<{ counters: Map<string, number>; sets: Map<string, unknown[][]> }> {
  const { stdout } = await netnsExec(ns, ['nft', '-j', 'list', 'table', 'inet', FLOWLOG_TABLE]);
  const counters = new Map<string, number>();
  const sets = new Map<string, unknown[][]>();
  for (const o of (JSON.parse(stdout) as { nftables: NftObject[] }).nftables) {
    if (o.counter) counters.set(o.counter.name, o.counter.packets ?? 0);
    if (o.set) sets.set(o.set.name, (o.set.elem ?? []).map(concat));
  }
  return { counters, sets };
}

/** An element of a concatenated set: its fields (elements may come wrapped with a counter/timeout). */
function concat(e: unknown): unknown[] {
  const o = e as { concat?: unknown[]; elem?: { val?: { concat?: unknown[] } } };
  return o.concat ?? o.elem?.val?.concat ?? [];
}

const flowName = (proto: unknown, port: unknown) => `${String(proto)}/${String(port)}`;

export async function readFlowLog(lab: LabInfo): Promise<FlowLog> {
  const [server, ...sfs] = await Promise.all([listTable(lab.serverNs), ...lab.sfs.map((s) => listTable(s.ns))]);
  const handovers = (elems: unknown[][] | undefined): Handover[] =>
    (elems ?? []).map(([mac, proto, port]) => ({ mac: String(mac), flow: flowName(proto, port) }));
  return {
    sfs: lab.sfs.map((sf, i) => ({
      sf,
      packetsIn: sfs[i].counters.get('pkts_in') ?? 0,
      packetsOut: sfs[i].counters.get('pkts_out') ?? 0,
      pings: sfs[i].counters.get('pings') ?? 0,
      fromIn: handovers(sfs[i].sets.get('from_in')),
      fromOut: handovers(sfs[i].sets.get('from_out')),
    })),
    serverFlows: [...new Set((server.sets.get('flows') ?? []).map(([proto, port]) => flowName(proto, port)))].sort(),
    serverPings: server.counters.get('pings') ?? 0,
  };
}

export interface FlowTrace {
  flow: string;
  /** Per hop (index hop-1): the instance numbers that saw the flow arrive on in0. */
  forward: number[][];
  /** Per hop: the instance numbers that saw its replies arrive on out0. */
  reverse: number[][];
  /** Each hop got it from the client (hop 1) or from the previous hop's instance of this flow. */
  forwardInOrder: boolean;
  /** Each hop got the replies from the server (last hop) or from the next hop's instance. */
  reverseInOrder: boolean;
}

/** Per flow (default: every flow the server received), where it went. */
export function traceFlows(lab: LabInfo, log: FlowLog, flows: readonly string[] = log.serverFlows): FlowTrace[] {
  const hops = Array.from({ length: lab.hops }, (_, h) => log.sfs.filter((v) => v.sf.hop === h + 1));
  return flows.map((flow) => {
    const seen = (side: 'fromIn' | 'fromOut') =>
      hops.map((views) => views.filter((v) => v[side].some((x) => x.flow === flow)).map((v) => v.sf.instance));
    const forward = seen('fromIn');
    const reverse = seen('fromOut');
    /** Every element for this flow at the one instance of hop h came from `mac`. */
    const handedBy = (h: number, side: 'fromIn' | 'fromOut', instances: number[], mac: string) =>
      instances.length === 1 &&
      hops[h].find((v) => v.sf.instance === instances[0])![side].every((x) => x.flow !== flow || x.mac === mac);
    const only = (list: number[]) => (list.length === 1 ? list[0] : 0);
    const forwardInOrder = forward.every((inst, h) =>
      handedBy(h, 'fromIn', inst, h === 0 ? CLIENT.mac : sfMac(h, only(forward[h - 1]), 'out')),
    );
    const last = lab.hops - 1;
    const reverseInOrder = reverse.every((inst, h) =>
      handedBy(h, 'fromOut', inst, h === last ? SERVER.mac : sfMac(h + 2, only(reverse[h + 1]), 'in')),
    );
    return { flow, forward, reverse, forwardInOrder, reverseInOrder };
  });
}

/** The flow log once `n` flows reached the server and every hop saw each forward (or after `ms`). */
export async function settledFlowLog(lab: LabInfo, n: number, ms = 10_000): Promise<FlowLog> {
  for (const end = Date.now() + ms; ; await sleep(200)) {
    const log = await readFlowLog(lab);
    const traces = traceFlows(lab, log);
    if (Date.now() > end || (traces.length >= n && traces.every((t) => t.forward.every((inst) => inst.length > 0)))) return log;
  }
}

/** Per flow, the instances that carried it forward at each hop ("1", or "1,2" when it moved). */
export function placement(traces: FlowTrace[]): Map<string, string[]> {
  return new Map(traces.map((t) => [t.flow, t.forward.map((inst) => inst.join(','))]));
}

/** One instance per hop, each handed over by the previous hop's. */
export function stayedOnOnePath(t: FlowTrace): boolean {
  return t.forwardInOrder && t.forward.every((inst) => inst.length === 1);
}

/** Replies crossed the forward instances, last hop first. */
export function repliesRetraced(t: FlowTrace): boolean {
  return stayedOnOnePath(t) && t.reverseInOrder && t.reverse.every((inst, h) => inst.length === 1 && inst[0] === t.forward[h][0]);
}

/** Flows that any SF saw, either way. */
export function flowsSeenBySfs(log: FlowLog): Set<string> {
  const seen = new Set<string>();
  for (const v of log.sfs) for (const x of [...v.fromIn, ...v.fromOut]) seen.add(x.flow);
  return seen;
}
