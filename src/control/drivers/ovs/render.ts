/*
 * The OVS renderer: one Plan (control/plan.ts) into the flows and select groups of one bridge, as
 * text in OVS's normalised form (ofctl.ts diffs it against the bridge). Spec B.3-B.6 is the
 * recipe; tables and priorities are ours, the behaviour is the userspace mode's.
 *
 * Tables:
 *   0  CLASSIFY  chain entry at a rule's logical port (in_port, plus dl_src when the interface has
 *                several ports) and re-classification at every SF return port (in_port of an
 *                instance's egress on a forward path, ingress on a reverse path), both with the
 *                classifier's fields (IPv4 and IPv6; source and destination swapped on a reverse
 *                path; L4 port ranges cut into maximal aligned value/mask blocks, one flow per
 *                source x destination block). Such a flow loads the next hop's hash key and goes to
 *                the hop's select group, or, after the last hop, runs the rule's chain end: eth_dst
 *                := the logical destination port's MAC, eth_src := the logical source port's MAC,
 *                out of that port. Above the rules, link-scoped control traffic (IPv6 link-local and
 *                link/interface-scope multicast, neighbour discovery, MLD; IPv4 link-local and
 *                224.0.0.0/24) never enters a chain; below them everything else goes to L2.
 *   1, 2 L4      the hash key's L4 ports by role (1: as the packet has them, 2: mirrored), per
 *                protocol: tcp -> reg9, udp -> reg10, sctp -> reg11 (source role << 16 | destination).
 *   3  PIN       flow affinity: a flow's pin to the instance it got (learned, see below), else
 *                per group the select group itself (metadata = the group's id).
 *   4  LEARN     per group and instance: learn the flow's pin, and leave through the instance's port
 *                (the bucket put it in reg8[16..31]). (A learn() in a bucket itself is not run by
 *                OVS 3.1; reached by resubmit from the bucket it is.)
 *   10 L2        every non-SF port's MAC -> its interface; unicast to an SF port's MAC dropped
 *                (SF ports are not L2 endpoints); broadcast and multicast to every interface;
 *                unknown unicast to the interfaces with a non-SF port.
 * Groups: one select group per (path, hop), id = chain_id << 12 | reverse << 11 | hop, buckets
 * setting eth_dst to the instance's ingress MAC (egress MAC on a reverse path) and leaving through
 * that port. selection_method=hash over REGISTERS holding the group's lb_fields by ROLE (the key
 * layout of hash/flowhash.ts): xxreg0 = IP "source", xxreg1 = IP "destination", reg8 = protocol,
 * reg9-11 = ports, xreg6/xreg7 = the path's endpoint MACs (the rule's logical ports, constants).
 * A reverse path loads every field mirrored, so both directions of a flow hash the same values and
 * pick the same instance by hash alone. (Naming packet fields in `fields(...)` cannot do that: OVS
 * hashes them in its own field order whatever the order written, so mirrored lists hash alike only
 * for a single field.)
 * Weights: OVS 3.1's `hash` method gives the flow to the bucket with the highest
 * (hash(bucket_id, flow hash) & 0xffff) x weight, which is NOT proportional to the weights (1:3 gave
 * 17.5/82.5). With every bucket weight 1 that rule is rendezvous hashing, so each instance gets
 * as many buckets as its share (weights divided by their gcd, scaled to at most MAX_BUCKETS per
 * group): each bucket is equally likely to win, the share is exact in expectation. Bucket ids are
 * member index << 8 | replica: stable across plans, so removing an instance moves only its flows.
 *
 * Flow affinity: each bucket, through table 4, LEARNS a pin in table 3 (OVS's learn()):
 * the group's id and the flow's hash key -> this instance's MAC and port, idle timeout 60 s, cookie
 * 0x5fc1<member>. Later frames of the flow take the pin and never reach the group, so adding an
 * instance (new buckets) moves no existing flow, and changing weights neither; removing one
 * deletes its pins (the driver's bundle, by cookie) so only its flows are hashed again; HRW over
 * stable bucket ids sends them to the remaining instances without moving anyone else. (Chosen over
 * OVS's dp_hash/hash alone, which re-deal flows when buckets change, and over conntrack marks,
 * which the netdev datapath supports but which would also pin traffic outside our tables. A pin
 * that idles out is re-learned by hash, which gives the same instance unless instances were added
 * in between: the userspace mode's flow records age the same way.)
 *
 * `unsupported` refuses what this renderer does not render yet: SF-aware pairs (MPLS/NSH), taps,
 * n-tuple mapping, service graphs, ports without an interface.
 */
import { NeutronError } from '../../errors.js';
import { type Action, type Plan, type PlanPath, type PlanRule } from '../../plan.js';
import { formatAddress, parsePrefix, maskWords } from '../../../classifier/rule.js';
import type { LbField } from '../../model.js';
import type { BridgeState } from './ofctl.js';

export const T_CLASSIFY = 0;
export const T_L4_FWD = 1;
export const T_L4_REV = 2;
export const T_PIN = 3;
export const T_LEARN = 4;
/** Idle timeout of a flow's pin to its instance (seconds). */
export const PIN_IDLE_S = 60;
export const T_L2 = 10;

export const PRIO_LINK_LOCAL = 30000;
const PRIO_RULE = 20000;
export const MAX_BUCKETS = 256;

const refuse = (message: string) => new NeutronError(400, 'SfcBadRequest', message);

/** What the OVS renderer cannot render yet, as 400s naming the object (empty: renderable). */
export function unsupported(plan: Plan): NeutronError[] {
  const problems: NeutronError[] = [];
  const why = 'is not supported by the ovs driver yet';
  for (const p of plan.ports) if (p.iface === '') problems.push(refuse(`port ${p.name}: binding:profile.interface is required`));
  for (const g of plan.graphs) if (g.edges.length > 0) problems.push(refuse(`service graph ${g.name}: service graphs ${why}`));
  for (const g of plan.groups) {
    if (g.tap && g.members.length > 0) problems.push(refuse(`port pair group ${g.name}: tap groups (passive copies) ${why}`));
    const { ingress_n_tuple, egress_n_tuple } = g.nTupleMapping;
    if (Object.keys(ingress_n_tuple ?? {}).length > 0 || Object.keys(egress_n_tuple ?? {}).length > 0) {
      problems.push(refuse(`port pair group ${g.name}: ppg_n_tuple_mapping ${why}`));
    }
  }
  for (const m of plan.members) {
    if (m.correlation !== null) problems.push(refuse(`port pair ${m.name}: SF-aware port pairs (correlation ${m.correlation}) ${why}`));
  }
  for (const c of plan.chains) {
    if (c.chainId >= 1 << 20) problems.push(refuse(`port chain ${c.name}: chain_id ${c.chainId} is beyond the ovs driver's group numbering (< ${1 << 20})`));
    if (plan.paths[c.forward].hops.length >= 1 << 11) problems.push(refuse(`port chain ${c.name}: too many hops for the ovs driver`));
  }
  return problems;
}

/** Per OpenFlow group: which member each bucket steers to (statistics), and the hop it renders. */
export interface GroupInfo {
  chain: number;
  path: number;
  hop: number;
  /** bucket_id -> member index */
  buckets: Map<number, number>;
  /** Every member of the group (a weight-0 member has no bucket but keeps its flows' pins: it drains). */
  members: number[];
}

export interface Rendered extends BridgeState {
  groupInfo: Map<number, GroupInfo>;
  /** Flow keys of chain entries (their packets are 'classified'). */
  entryFlows: Set<string>;
  /** Flow keys dropping unicast to SF ports ('to_sf_port'). */
  toSfFlows: Set<string>;
}

export const groupNumber = (chainId: number, reverse: boolean, hop: number) => (chainId << 12) | (reverse ? 1 << 11 : 0) | hop;

/** Port range [min, max] as maximal aligned power-of-two blocks (value, mask). Full range: one wildcard block. */
export function portBlocks(min: number, max: number): { value: number; mask: number }[] {
  const out: { value: number; mask: number }[] = [];
  let at = min;
  while (at <= max) {
    let size = 1;
    while (size < 0x10000 && at % (size * 2) === 0 && at + size * 2 - 1 <= max) size *= 2;
    out.push({ value: at, mask: 0xffff & ~(size - 1) });
    at += size;
  }
  return out;
}

/** OVS's print form of a port block: decimal when exact, hex value/mask otherwise, nothing when any. */
function portMatch(field: 'tp_src' | 'tp_dst', b: { value: number; mask: number }): string[] {
  if (b.mask === 0) return [];
  if (b.mask === 0xffff) return [`${field}=${b.value}`];
  return [`${field}=0x${b.value.toString(16)}/0x${b.mask.toString(16)}`];
}

function prefixMatch(field: string, text: string | null): string[] {
  if (text === null) return [];
  const p = parsePrefix(text)!;
  if (p.len === 0) return [];
  const addr = formatAddress(p.ver, maskWords(p.words, p.len));
  return [p.len === (p.ver === 4 ? 32 : 128) ? `${field}=${addr}` : `${field}=${addr}/${p.len}`];
}

/**
 * The match strings of rule r (logical port ignored: the caller adds in_port/dl_src), one per
 * source x destination port block, fields in OVS's print order after the protocol keyword.
 */
export function ruleMatches(r: PlanRule): { proto: string; fields: string[] }[] {
  const m = r.match;
  const v6 = m.ethertype === 'IPv6';
  const proto = m.protocol === null ? (v6 ? 'ipv6' : 'ip') : m.protocol === 'icmp' ? (v6 ? 'icmp6' : 'icmp') : `${m.protocol}${v6 ? '6' : ''}`;
  const [srcField, dstField] = v6 ? ['ipv6_src', 'ipv6_dst'] : ['nw_src', 'nw_dst'];
  let src = prefixMatch(srcField, m.source_ip_prefix);
  let dst = prefixMatch(dstField, m.destination_ip_prefix);
  let sBlocks = portBlocks(m.source_port_range_min ?? 0, m.source_port_range_max ?? 65535);
  let dBlocks = portBlocks(m.destination_port_range_min ?? 0, m.destination_port_range_max ?? 65535);
  if (r.reverse) {
    [src, dst] = [dst.map((s) => s.replace(dstField, srcField)), src.map((s) => s.replace(srcField, dstField))];
    [sBlocks, dBlocks] = [dBlocks, sBlocks];
  }
  const out: { proto: string; fields: string[] }[] = [];
  for (const sb of sBlocks) for (const db of dBlocks) out.push({ proto, fields: [...src, ...dst, ...portMatch('tp_src', sb), ...portMatch('tp_dst', db)] });
  return out;
}

/** Buckets per member: weights over their gcd, scaled down to at most MAX_BUCKETS in all; weight 0 gets none. */
export function bucketCounts(weights: number[]): number[] {
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  const g = weights.reduce((a, w) => (w > 0 ? gcd(w, a) : a), 0);
  if (g === 0) return weights.map(() => 0);
  let counts = weights.map((w) => w / g);
  const sum = counts.reduce((a, b) => a + b, 0);
  if (sum > MAX_BUCKETS) counts = weights.map((w) => (w > 0 ? Math.max(1, Math.round((w * MAX_BUCKETS) / (sum * g))) : 0));
  return counts;
}

/** Cookie of the pins learned for member k (the member index in the low 16 bits). */
export const PIN_COOKIE = 0x5fc10000;
export const pinCookie = (k: number) => `0x${(PIN_COOKIE + k).toString(16)}`;

const macHex = (mac: string) => `0x${mac.replace(/:/g, '').replace(/^0+(?=.)/, '')}`;

/** The group's `fields(...)` over the role registers, in OVS's print order. */
function hashFields(lb: LbField[]): string[] {
  if (lb.length === 0) return ['reg8', 'reg9', 'reg10', 'reg11', 'xxreg0', 'xxreg1'];
  const has = (f: LbField) => lb.includes(f);
  const ports = (reg: string, src: boolean, dst: boolean) => (src && dst ? [reg] : src ? [`${reg}=0xffff0000`] : dst ? [`${reg}=0xffff`] : []);
  return [
    ...ports('reg9', has('tcp_src'), has('tcp_dst')),
    ...ports('reg10', has('udp_src'), has('udp_dst')),
    ...(has('eth_src') ? ['xreg6'] : []),
    ...(has('eth_dst') ? ['xreg7'] : []),
    ...(has('ip_src') ? ['xxreg0'] : []),
    ...(has('ip_dst') ? ['xxreg1'] : []),
  ];
}

/** The learned pin's match: the group's id (metadata) and its hash key, in OVS's print form. */
function pinMatch(fields: string[]): string[] {
  const sub = (reg: string, mask: string | undefined) => {
    const name = `NXM_NX_${reg.toUpperCase()}`;
    if (reg === 'reg8') return `${name}[0..7]`; // the protocol; bits 16-31 carry the pinned port
    return mask === '0xffff0000' ? `${name}[16..31]` : mask === '0xffff' ? `${name}[0..15]` : `${name}[]`;
  };
  return ['OXM_OF_METADATA[]', ...fields.map((f) => sub(...(f.split('=') as [string, string | undefined])))];
}

/**
 * Actions loading the hash key of a group with lb_fields `lb` for a frame of rule r (IPv4 or IPv6
 * per the rule), mirrored on a reverse path.
 */
function keyLoads(plan: Plan, r: PlanRule, lb: LbField[]): string[] {
  const v6 = r.match.ethertype === 'IPv6';
  const any = lb.length === 0;
  const has = (f: LbField) => any || lb.includes(f);
  const [src, dst] = v6 ? ['NXM_NX_IPV6_SRC[]', 'NXM_NX_IPV6_DST[]'] : ['NXM_OF_IP_SRC[]', 'NXM_OF_IP_DST[]'];
  const to = (reg: string) => (v6 ? `NXM_NX_${reg}[]` : `NXM_NX_${reg}[0..31]`);
  const [srcRole, dstRole] = r.reverse ? [dst, src] : [src, dst];
  const out: string[] = [];
  if (has('ip_src')) out.push(`move:${srcRole}->${to('XXREG0')}`);
  if (has('ip_dst')) out.push(`move:${dstRole}->${to('XXREG1')}`);
  if (any) out.push('move:NXM_OF_IP_PROTO[]->NXM_NX_REG8[0..7]');
  // The path's endpoints: the forward source is the rule's `at` (forward) or `to` (reverse).
  const [fwdSrc, fwdDst] = r.reverse ? [r.to, r.at] : [r.at, r.to];
  const mac = (port: number) => (port < 0 ? '0x0' : macHex(plan.ports[port].mac));
  if (!any && lb.includes('eth_src')) out.push(`set_field:${mac(fwdSrc)}->xreg6`);
  if (!any && lb.includes('eth_dst')) out.push(`set_field:${mac(fwdDst)}->xreg7`);
  if (any || lb.some((f) => f.startsWith('tcp_') || f.startsWith('udp_'))) out.push(`resubmit(,${r.reverse ? T_L4_REV : T_L4_FWD})`);
  return out;
}

/** The L4 role tables: every ported protocol, as the packet has its ports (fwd) or mirrored (rev). */
function l4RoleFlows(add: (table: number, priority: number, match: string, actions: string) => void): void {
  const regs: [string, string, string][] = [
    ['tcp', 'NXM_OF_TCP', 'REG9'],
    ['udp', 'NXM_OF_UDP', 'REG10'],
    ['sctp', 'OXM_OF_SCTP', 'REG11'],
  ];
  for (const [proto, nxm, reg] of regs) {
    for (const v of ['', '6']) {
      const a = (x: string, y: string) => `move:${nxm}_${x}[]->NXM_NX_${reg}[16..31],move:${nxm}_${y}[]->NXM_NX_${reg}[0..15]`;
      add(T_L4_FWD, 10, `${proto}${v}`, a('SRC', 'DST'));
      add(T_L4_REV, 10, `${proto}${v}`, a('DST', 'SRC'));
    }
  }
}

/** Link-scoped control traffic that never enters a chain (steer.ts isLinkLocal's set). */
const LINK_LOCAL = [
  'ipv6,ipv6_src=fe80::/10',
  'ipv6,ipv6_dst=fe80::/10',
  'ipv6,ipv6_dst=ff00::/ff0e::',
  'ipv6,ipv6_dst=ff02::/ff0f::',
  ...[130, 131, 132, 133, 134, 135, 136, 137, 143].map((t) => `icmp6,icmp_type=${t}`),
  'ip,nw_src=169.254.0.0/16',
  'ip,nw_dst=169.254.0.0/16',
  'ip,nw_dst=224.0.0.0/24',
];

/**
 * Render `plan` for a bridge whose interfaces have the OpenFlow port numbers `ofport` gives.
 * Call `unsupported` first: an action it refuses throws here.
 */
export function renderBridge(plan: Plan, ofport: (iface: string) => number): Rendered {
  const out: Rendered = { flows: new Map(), groups: new Map(), groupInfo: new Map(), entryFlows: new Set(), toSfFlows: new Set() };
  const add = (table: number, priority: number, match: string, actions: string): string => {
    const key = `table=${table}, priority=${priority}${match ? `,${match}` : ''}`;
    if (!out.flows.has(key)) out.flows.set(key, actions);
    return key;
  };
  const { ports, members, groups, paths, chains } = plan;
  const portOf = (k: number) => ofport(ports[k].iface);
  const ifacePorts = new Map<string, number>();
  for (const p of ports) ifacePorts.set(p.iface, (ifacePorts.get(p.iface) ?? 0) + 1);
  /** in_port (+ dl_src when the interface carries several logical ports) of logical port k. */
  const at = (k: number) => {
    const p = ports[k];
    return [`in_port=${portOf(k)}`, ...((ifacePorts.get(p.iface) ?? 0) > 1 ? [`dl_src=${p.mac}`] : [])];
  };

  // Groups: one per (path, hop).
  paths.forEach((p, pi) => {
    const chainId = chains[p.chain].chainId;
    for (let h = 0; h < p.sfHops; h++) {
      const hop = p.hops[h];
      checkActions(hop.actions, ['set_dst_mac'], `hop ${h + 1} of port chain ${chains[p.chain].name}`);
      const g = groups[hop.group];
      const id = groupNumber(chainId, p.reverse, h);
      const counts = bucketCounts(g.members.map((k) => members[k].weight));
      const info: GroupInfo = { chain: p.chain, path: pi, hop: h, buckets: new Map(), members: g.members };
      const fields = hashFields(g.lbFields);
      const pin = pinMatch(fields).join(',');
      const buckets: string[] = [];
      g.members.forEach((k, j) => {
        const m = members[k];
        const port = p.reverse ? m.egress : m.ingress;
        for (let rep = 0; rep < counts[j]; rep++) {
          const bucketId = (k << 8) | rep;
          info.buckets.set(bucketId, k);
          const out = `0x${(portOf(port) << 16).toString(16)}/0xffff0000`;
          buckets.push(`bucket=bucket_id:${bucketId},actions=set_field:${ports[port].mac}->eth_dst,set_field:${out}->reg8,resubmit(,${T_LEARN})`);
          if (rep === 0) {
            const learn = `learn(table=${T_PIN},idle_timeout=${PIN_IDLE_S},priority=10,cookie=${pinCookie(k)},${pin},load:NXM_OF_ETH_DST[]->NXM_OF_ETH_DST[],output:NXM_NX_REG8[16..31])`;
            add(T_LEARN, 10, `reg8=${out},metadata=0x${id.toString(16)}`, `${learn},output:NXM_NX_REG8[16..31]`);
          }
        }
      });
      const sel = `selection_method=hash,${fields.length === 1 ? `fields=${fields[0]}` : `fields(${fields.join(',')})`}`;
      out.groups.set(id, [`group_id=${id},type=select,${sel}`, ...buckets].join(','));
      out.groupInfo.set(id, info);
      add(T_PIN, 0, `metadata=0x${id.toString(16)}`, `group:${id}`);
    }
  });

  /** Actions taking a frame of rule r on path p on to hop k (k = sfHops: the chain end). */
  const onward = (p: PlanPath, r: PlanRule, k: number): string => {
    if (k < p.sfHops) {
      const g = groups[p.hops[k].group];
      const gid = groupNumber(chains[p.chain].chainId, p.reverse, k);
      return [...keyLoads(plan, r, g.lbFields), `set_field:0x${gid.toString(16)}->metadata`, `resubmit(,${T_PIN})`].join(',');
    }
    return chainEnd(plan, r, portOf);
  };

  // Chain entries and SF returns, per path, per rule (priority: the rule's place in its path).
  paths.forEach((p) => {
    p.rules.forEach((ri, j) => {
      const r = plan.rules[ri];
      const prio = PRIO_RULE - j;
      const matches = ruleMatches(r);
      if (r.at >= 0) {
        for (const m of matches) out.entryFlows.add(add(T_CLASSIFY, prio, [m.proto, ...at(r.at), ...m.fields].join(','), onward(p, r, 0)));
      }
      for (let h = 0; h < p.sfHops; h++) {
        const next = onward(p, r, h + 1);
        for (const k of groups[p.hops[h].group].members) {
          const back = p.reverse ? members[k].ingress : members[k].egress;
          for (const m of matches) add(T_CLASSIFY, prio, [m.proto, ...at(back), ...m.fields].join(','), next);
        }
      }
    });
  });
  for (const m of LINK_LOCAL) add(T_CLASSIFY, PRIO_LINK_LOCAL, m, `resubmit(,${T_L2})`);
  add(T_CLASSIFY, 0, '', `resubmit(,${T_L2})`);
  l4RoleFlows(add);

  // L2: known MACs, SF ports never L2 endpoints, flooding.
  const ifaces = [...new Set(ports.map((p) => p.iface))];
  const hostIfaces = [...new Set(ports.filter((p) => !p.sf).map((p) => p.iface))];
  const outputs = (list: string[]) => (list.length ? list.map((i) => `output:${ofport(i)}`).sort(byPort).join(',') : 'drop');
  ports.forEach((p, k) => {
    const key = add(T_L2, 100, `dl_dst=${p.mac}`, p.sf ? 'drop' : `output:${portOf(k)}`);
    if (p.sf) out.toSfFlows.add(key);
  });
  add(T_L2, 50, 'dl_dst=01:00:00:00:00:00/01:00:00:00:00:00', outputs(ifaces));
  add(T_L2, 0, '', outputs(hostIfaces));
  return out;
}

const byPort = (a: string, b: string) => Number(a.slice(7)) - Number(b.slice(7));

function checkActions(actions: Action[], allowed: Action['op'][], where: string): void {
  for (const a of actions) if (!allowed.includes(a.op)) throw new Error(`ovs renderer: action '${a.op}' (${where}) is not rendered`);
}

/** The rule's chain end (plan `end` list): MACs for the logical destination port and out of it, or restore and switch. */
function chainEnd(plan: Plan, r: PlanRule, portOf: (k: number) => number): string {
  checkActions(r.end, ['set_end_macs', 'restore_macs', 'deliver', 'switch'], `chain end of flow classifier ${r.classifier}`);
  const acts: string[] = [];
  const entryMac = r.at >= 0 ? plan.ports[r.at].mac : null;
  for (const a of r.end) {
    if (a.op === 'set_end_macs') {
      acts.push(`set_field:${plan.ports[a.port].mac}->eth_dst`);
      if (entryMac) acts.push(`set_field:${entryMac}->eth_src`);
    } else if (a.op === 'restore_macs') {
      // The destination MAC seen at entry did not cross the SFs: the frame keeps the one the last
      // SF gave it (the reference's NORMAL), its source becomes the logical source port's again.
      if (entryMac) acts.push(`set_field:${entryMac}->eth_src`);
    } else if (a.op === 'deliver') {
      acts.push(`output:${portOf(a.port)}`);
    } else if (a.op === 'switch') {
      acts.push(`resubmit(,${T_L2})`);
    }
  }
  return acts.join(',');
}
