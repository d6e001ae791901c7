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
 *   5  AWARE     a frame back from an SF-aware hop: table 0 matches the SF's own index on its return
 *                port (MPLS: label (SPI << 8) | SI, bottom of stack; NSH: SPI and SI), decapsulates
 *                it (OVS cannot hash or classify beneath the encapsulation) and marks the path and
 *                hop in the metadata; here it is re-classified with the rule fields it returns with,
 *                or, matching none, continues as its path's first rule of its IP family. If the next
 *                node is aware too, the same SPI/SI is put back on before its group (the plan's
 *                aware -> aware case: the SF's frame goes on as it came, only re-hashed). What else
 *                comes back on an aware return port is dropped with the userspace mode's reasons.
 *   6  TAP       per tap node one flow (metadata = its mark): the tap's own action list (its
 *                encapsulation, its MAC) and out of its instance's port, run on a clone() of the
 *                frame where the plan copies it; what a tap instance sends is dropped in table 0.
 *   7  HANDOFF   service graphs: the end of a source chain (decapsulated, key registers cleared,
 *                metadata = the source rule's mark) offered to the destination chains' rules in
 *                plan order, logical ports ignored; matching none, the source rule's own delivery.
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
 * Encapsulations (spec B.2): MPLS push_mpls with label (SPI << 8) | SI, TTL = SI, TC 0; NSH
 * encap(nsh) MD type 1 (TTL 63) and encap(ethernet) with the inner frame's source MAC. OVS cannot
 * look beneath an MPLS label, so a pop must name the payload's ethertype: a path classifying
 * only one IP family pops to it; a path classifying both marks its IPv6 frames with traffic class
 * 1 (mplsMarksV6) and pops by the mark. N-tuple mappings are the plan's per-hop return matches.
 *
 * `unsupported` refuses only what cannot be numbered (ports without an interface, group ids).
 */
import { NeutronError } from '../../errors.js';
import { type Action, type Encap, type Plan, type PlanPath, type PlanRule } from '../../plan.js';
import type { ClassifierFields } from '../../../classifier/rule.js';
import { formatAddress, parsePrefix, maskWords } from '../../../classifier/rule.js';
import type { LbField } from '../../model.js';
import type { CounterName, DropReason } from '../../../packet/counters.js';
import { ALL_UP, liveHops, type HealthView } from '../../health.js';
import type { BridgeState } from './ofctl.js';

export const T_CLASSIFY = 0;
export const T_L4_FWD = 1;
export const T_L4_REV = 2;
export const T_PIN = 3;
export const T_LEARN = 4;
/** Re-classification of a frame back from an SF-aware hop, decapsulated (metadata: awareMark). */
export const T_AWARE = 5;
/** Tap copies (metadata: tapMark), one flow per tap node: its statistics are the tap's. */
export const T_TAP = 6;
/** Service-graph hand-offs (metadata: handoffMark). */
export const T_HANDOFF = 7;
/** Health: a hop with no live instance, skipped (fail-open) or dropped (fail-closed); counted per path and hop. */
export const T_DOWN = 8;
/** Idle timeout of a flow's pin to its instance (seconds). */
export const PIN_IDLE_S = 60;
export const T_L2 = 10;

export const PRIO_LINK_LOCAL = 30000;
const PRIO_FROM_TAP = 31000;
const PRIO_AWARE = 25000;
const PRIO_RULE = 20000;
export const MAX_BUCKETS = 256;

const refuse = (message: string) => new NeutronError(400, 'SfcBadRequest', message);

/** What the OVS renderer cannot render, as 400s naming the object (empty: renderable). */
export function unsupported(plan: Plan): NeutronError[] {
  const problems: NeutronError[] = [];
  for (const p of plan.ports) if (p.iface === '') problems.push(refuse(`port ${p.name}: binding:profile.interface is required`));
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
  /** Flow keys whose packets count as an event of the userspace mode (chain entries: 'classified'; 'handed_off', 'hops_skipped'). */
  eventFlows: Map<string, CounterName>;
  /** Flow keys of the flows that drop, with the userspace mode's reason for their packets. */
  dropFlows: Map<string, DropReason>;
  /** Flow keys of tap copies -> the tap's member index ('tap_copies', its instance counters). */
  tapFlows: Map<string, number>;
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
export function ruleMatches(r: PlanRule, m: ClassifierFields = r.match): { proto: string; fields: string[] }[] {
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

/** Marks in the metadata register (above any group id, which stays below 2^32) for the second-stage tables. */
const MARK_AWARE = 1n << 40n;
const MARK_TAP = 2n << 40n;
const MARK_HANDOFF = 3n << 40n;
const MARK_SKIP = 4n << 40n;
const MARK_DOWN = 5n << 40n;
const meta = (v: bigint | number) => `metadata=0x${v.toString(16)}`;
const setMeta = (v: bigint | number) => `set_field:0x${v.toString(16)}->metadata`;
/** The frame came back from aware hop `hop` of path `path`, decapsulated: re-classify it (T_AWARE). */
const awareMark = (path: number, hop: number) => MARK_AWARE | (BigInt(path) << 12n) | BigInt(hop);
/** A copy for tap hop `hop` of path `path` (T_TAP). */
const tapMark = (path: number, hop: number) => MARK_TAP | (BigInt(path) << 12n) | BigInt(hop);
/** The end of a graph's source chain, for rule `rule` (T_HANDOFF). */
const handoffMark = (rule: number) => MARK_HANDOFF | BigInt(rule);

/** Hop `hop` of path `path` skipped (fail-open) or dropped (fail-closed): health (T_DOWN). */
const skipMark = (path: number, hop: number) => MARK_SKIP | (BigInt(path) << 12n) | BigInt(hop);
const downMark = (path: number, hop: number) => MARK_DOWN | (BigInt(path) << 12n) | BigInt(hop);

/** An encapsulation the plan says the frame carries (or is to carry): what `push` puts on. */
interface Encapsulation {
  encap: Encap;
  spi: number;
  si: number;
}

/**
 * Whether IPv6 frames of path p are marked with MPLS traffic class 1: OVS cannot see beneath an
 * MPLS label, so where a path classifies both IPv4 and IPv6 the mark tells the pop which ethertype
 * the payload has (a path of one family needs no mark: its frames are all of that family).
 */
function mplsMarksV6(plan: Plan, p: PlanPath): boolean {
  const kinds = new Set(p.rules.map((ri) => plan.rules[ri].match.ethertype));
  return p.encap === 'mpls' && kinds.size > 1;
}

/** Actions pushing encapsulation `e` on a plain frame (of IPv6 when `v6`; `mark`: mplsMarksV6). */
function pushActions(e: Encapsulation, v6: boolean, mark: boolean): string[] {
  if (e.encap === 'mpls') {
    // TTL and TC set explicitly (push_mpls copies them from the IP header): TTL = SI, TC 0 (1: IPv6, see mplsMarksV6).
    return ['push_mpls:0x8847', `set_field:${(e.spi << 8) | e.si}->mpls_label`, `set_field:${v6 && mark ? 1 : 0}->mpls_tc`, `set_field:${e.si}->mpls_ttl`];
  }
  // NSH MD type 1 (TTL 63, zero context) and a new outer Ethernet header whose source is the
  // inner frame's (kept on the stack across the encapsulation); its destination is the hop's.
  return ['push:NXM_OF_ETH_SRC[]', 'encap(nsh(md_type=1))', `set_field:0x${e.spi.toString(16)}->nsh_spi`, `set_field:${e.si}->nsh_si`, 'encap(ethernet)', 'pop:NXM_OF_ETH_SRC[]'];
}

/**
 * Render `plan` for a bridge whose interfaces have the OpenFlow port numbers `ofport` gives.
 * Call `unsupported` first: an action it refuses throws here.
 */
export function renderBridge(plan: Plan, ofport: (iface: string) => number, health: HealthView = ALL_UP): Rendered {
  const out: Rendered = { flows: new Map(), groups: new Map(), groupInfo: new Map(), eventFlows: new Map(), dropFlows: new Map(), tapFlows: new Map() };
  const add = (table: number, priority: number, match: string, actions: string): string => {
    const key = `table=${table}, priority=${priority}${match ? `,${match}` : ''}`;
    if (!out.flows.has(key)) out.flows.set(key, actions || 'drop');
    return key;
  };
  const drop = (table: number, priority: number, match: string, reason: DropReason) => {
    const key = add(table, priority, match, 'drop');
    if (!out.dropFlows.has(key)) out.dropFlows.set(key, reason);
  };
  const { ports, members, groups, paths, chains, rules } = plan;
  const portOf = (k: number) => ofport(ports[k].iface);
  const ifacePorts = new Map<string, number>();
  for (const p of ports) ifacePorts.set(p.iface, (ifacePorts.get(p.iface) ?? 0) + 1);
  /** in_port (+ dl_src when the interface carries several logical ports) of logical port k. */
  const at = (k: number) => {
    const p = ports[k];
    return [`in_port=${portOf(k)}`, ...((ifacePorts.get(p.iface) ?? 0) > 1 ? [`dl_src=${p.mac}`] : [])];
  };

  // Health: a down member has no bucket (its pins are deleted by the driver: only its flows move);
  // a hop whose group has no usable instance is skipped or dropped by its group's policy.
  const up = (k: number) => !health.down.has(members[k].id);
  const hopLive = paths.map((p) => liveHops(p, groups, members, up, health.policy));

  // Groups: one per (path, steered hop).
  paths.forEach((p, pi) => {
    const chainId = chains[p.chain].chainId;
    for (let h = 0; h < p.sfHops; h++) {
      const hop = p.hops[h];
      const g = groups[hop.group];
      const id = groupNumber(chainId, p.reverse, h);
      const counts = bucketCounts(g.members.map((k) => (up(k) ? members[k].weight : 0)));
      const info: GroupInfo = { chain: p.chain, path: pi, hop: h, buckets: new Map(), members: g.members.filter(up) };
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

  /**
   * The OVS actions of plan action list `acts` for a frame of rule r on path p, due at node k
   * (k = sfHops: the chain's end). The frame is plain IP whatever the plan says (an encapsulated
   * frame back from an aware SF was decapsulated to be classified); `carried` is the encapsulation
   * the plan has it carry, put back on when the list keeps it (an aware hop after an aware hop).
   */
  const actionsOf = (p: PlanPath, pi: number, r: PlanRule, ri: number, k: number, acts: Action[], carried: Encapsulation | null): string => {
    const v6 = r.match.ethertype === 'IPv6';
    const mark = mplsMarksV6(plan, p);
    const outActs: string[] = [];
    let pending = carried;
    const entryMac = r.at >= 0 ? ports[r.at].mac : null;
    for (const [n, a] of acts.entries()) {
      switch (a.op) {
        case 'copy_to_tap':
          outActs.push(`clone(${setMeta(tapMark(pi, a.hop))},resubmit(,${T_TAP}))`);
          break;
        case 'pop':
          pending = null;
          break;
        case 'push':
          outActs.push(...pushActions(a, v6, mark));
          pending = null;
          break;
        case 'set_dst_mac': {
          // The hop's select group (its bucket sets the MAC), after loading its hash key from the plain frame.
          const g = groups[p.hops[k].group];
          const gid = groupNumber(chains[p.chain].chainId, p.reverse, k);
          outActs.unshift(...keyLoads(plan, r, g.lbFields));
          if (pending) outActs.push(...pushActions(pending, v6, mark));
          outActs.push(setMeta(gid), `resubmit(,${T_PIN})`);
          break;
        }
        case 'set_end_macs':
          outActs.push(`set_field:${ports[a.port].mac}->eth_dst`, ...(entryMac ? [`set_field:${entryMac}->eth_src`] : []));
          break;
        case 'restore_macs':
          // The destination MAC seen at entry did not cross the SFs: the frame keeps the one the last
          // SF gave it (the reference's NORMAL), its source becomes the logical source port's again.
          if (entryMac) outActs.push(`set_field:${entryMac}->eth_src`);
          break;
        case 'deliver':
          outActs.push(`output:${portOf(a.port)}`);
          break;
        case 'switch':
          outActs.push(`resubmit(,${T_L2})`);
          break;
        case 'handoff': {
          // To the destination chains' rules (T_HANDOFF) with cleared key registers; what matches
          // none continues with the rest of this list there (its fallback flow).
          outActs.push('set_field:0->xxreg0', 'set_field:0->xxreg1', 'set_field:0->xxreg2', 'set_field:0->xxreg3', setMeta(handoffMark(ri)), `resubmit(,${T_HANDOFF})`);
          add(T_HANDOFF, 0, meta(handoffMark(ri)), actionsOf(p, pi, r, ri, k, acts.slice(n + 1), null));
          return outActs.join(',');
        }
      }
    }
    return outActs.join(',');
  };
  /** Actions taking a frame of rule ri on path pi on to node k (k = sfHops: the chain end), `carried` as above. */
  const onward = (pi: number, ri: number, k: number, carried: Encapsulation | null): string => {
    const p = paths[pi];
    const r = rules[ri];
    const live = k < p.sfHops ? hopLive[pi][k] : k;
    if (live < 0) {
      drop(T_DOWN, 10, meta(downMark(pi, k)), 'hop_down');
      return [setMeta(downMark(pi, k)), `resubmit(,${T_DOWN})`].join(',');
    }
    if (live !== k) {
      out.eventFlows.set(add(T_DOWN, 10, meta(skipMark(pi, k)), 'drop'), 'hops_skipped');
      return [`clone(${setMeta(skipMark(pi, k))},resubmit(,${T_DOWN}))`, onward(pi, ri, live, carried)].join(',');
    }
    return actionsOf(p, pi, r, ri, k, k < p.sfHops ? p.hops[k].actions : r.end, carried);
  };

  // Chain entries and SF returns, per path, per rule (priority: the rule's place in its path).
  paths.forEach((p, pi) => {
    p.rules.forEach((ri, j) => {
      const r = rules[ri];
      const prio = PRIO_RULE - j;
      if (r.at >= 0) {
        for (const m of ruleMatches(r)) out.eventFlows.set(add(T_CLASSIFY, prio, [m.proto, ...at(r.at), ...m.fields].join(','), onward(pi, ri, 0, null)), 'classified');
      }
      for (let h = 0; h < p.sfHops; h++) {
        const hop = p.hops[h];
        if (hop.correlation === null) {
          // Back from an unaware SF: re-classified with the fields it returns (n-tuple mappings applied).
          const next = onward(pi, ri, h + 1, null);
          for (const k of groups[hop.group].members) {
            const back = p.reverse ? members[k].ingress : members[k].egress;
            for (const m of ruleMatches(r, r.hopMatch[h])) add(T_CLASSIFY, prio, [m.proto, ...at(back), ...m.fields].join(','), next);
          }
        } else {
          // Back from an aware SF, decapsulated (table 0 below): re-classified in T_AWARE.
          const carried = { encap: p.encap, spi: p.spi, si: hop.si };
          for (const m of ruleMatches(r, r.hopMatch[h])) add(T_AWARE, prio, [m.proto, meta(awareMark(pi, h)), ...m.fields].join(','), onward(pi, ri, h + 1, carried));
        }
      }
    });
    // Aware returns: the SF's own index names the path and hop; the frame is decapsulated and
    // re-classified (T_AWARE), or, matching no rule there, continues as the path's first rule of its family.
    const mark = mplsMarksV6(plan, p);
    for (let h = 0; h < p.sfHops; h++) {
      const hop = p.hops[h];
      if (hop.correlation === null) continue;
      const marker = awareMark(pi, h);
      const toAware = [setMeta(marker), `resubmit(,${T_AWARE})`];
      for (const k of groups[hop.group].members) {
        const back = at(p.reverse ? members[k].ingress : members[k].egress);
        // What else an aware SF returns is dropped as the userspace mode counts it: another index of
        // this path (bad_si; for MPLS any other label, as OVS cannot match the label's SPI half
        // alone), another path's SPI (unknown_spi), no encapsulation at all (missing_encap).
        if (p.encap === 'nsh') {
          drop(T_CLASSIFY, PRIO_AWARE - 1, [...back, 'dl_type=0x894f', `nsh_spi=0x${p.spi.toString(16)}`].join(','), 'bad_si');
          drop(T_CLASSIFY, PRIO_AWARE - 2, [...back, 'dl_type=0x894f'].join(','), 'unknown_spi');
        } else {
          drop(T_CLASSIFY, PRIO_AWARE - 2, ['mpls', ...back].join(','), 'bad_si');
        }
        for (const family of ['ip', 'ipv6']) drop(T_CLASSIFY, PRIO_AWARE - 3, [family, ...back].join(','), 'missing_encap');
        if (p.encap === 'nsh') {
          add(T_CLASSIFY, PRIO_AWARE, [...back, 'dl_type=0x894f', `nsh_spi=0x${p.spi.toString(16)}`, `nsh_si=${hop.si}`].join(','), ['decap()', 'decap()', ...toAware].join(','));
          continue;
        }
        const label = `mpls,${back.join(',')},mpls_label=${(p.spi << 8) | hop.si},mpls_bos=1`;
        const v6Only = p.rules.every((ri) => rules[ri].match.ethertype === 'IPv6');
        if (mark) add(T_CLASSIFY, PRIO_AWARE + 1, label.replace(',mpls_label', ',mpls_tc=1,mpls_label'), ['pop_mpls:0x86dd', ...toAware].join(','));
        add(T_CLASSIFY, PRIO_AWARE, label, [`pop_mpls:${v6Only ? '0x86dd' : '0x0800'}`, ...toAware].join(','));
      }
      for (const family of ['IPv4', 'IPv6']) {
        const ri = p.rules.find((x) => rules[x].match.ethertype === family);
        if (ri === undefined) continue;
        add(T_AWARE, 0, `${family === 'IPv6' ? 'ipv6' : 'ip'},${meta(marker)}`, onward(pi, ri, h + 1, { encap: p.encap, spi: p.spi, si: hop.si }));
      }
    }
    // Tap copies: the tap node's own list (its encapsulation, its MAC), out of its instance's port.
    for (let t = p.sfHops; t < p.hops.length; t++) {
      const hop = p.hops[t];
      const k = groups[hop.group].members[0];
      if (k === undefined) continue;
      const m = members[k];
      const port = p.reverse ? m.egress : m.ingress;
      const acts: string[] = [];
      for (const a of hop.actions) {
        if (a.op === 'push') acts.push(...pushActions(a, false, false));
        else if (a.op === 'set_dst_mac') acts.push(`set_field:${ports[port].mac}->eth_dst`);
      }
      const key = add(T_TAP, 10, meta(tapMark(pi, t)), [...acts, `output:${portOf(port)}`].join(','));
      out.tapFlows.set(key, k);
    }
  });

  // Service graphs: a source chain's end (T_HANDOFF, marked with the source rule) offered to the
  // destination chains' rules, logical ports ignored, in plan order.
  rules.forEach((r2, ri2) => {
    for (const from of r2.handoffFrom) {
      for (const ri1 of paths[chains[from].forward].rules) {
        for (const m of ruleMatches(r2)) {
          out.eventFlows.set(add(T_HANDOFF, PRIO_RULE - ri2, [m.proto, meta(handoffMark(ri1)), ...m.fields].join(','), onward(r2.path, ri2, 0, null)), 'handed_off');
        }
      }
    }
  });

  // What a tap instance sends is dropped: a tap only receives copies.
  for (const g of groups) {
    if (!g.tap) continue;
    for (const k of g.members) for (const port of new Set([members[k].ingress, members[k].egress])) drop(T_CLASSIFY, PRIO_FROM_TAP, at(port).join(','), 'from_tap');
  }
  for (const m of LINK_LOCAL) add(T_CLASSIFY, PRIO_LINK_LOCAL, m, `resubmit(,${T_L2})`);
  add(T_CLASSIFY, 0, '', `resubmit(,${T_L2})`);
  l4RoleFlows(add);

  // L2: known MACs, SF ports never L2 endpoints, flooding.
  const ifaces = [...new Set(ports.map((p) => p.iface))];
  const hostIfaces = [...new Set(ports.filter((p) => !p.sf).map((p) => p.iface))];
  const outputs = (list: string[]) => (list.length ? list.map((i) => `output:${ofport(i)}`).sort(byPort).join(',') : 'drop');
  ports.forEach((p, k) => {
    if (p.sf) drop(T_L2, 100, `dl_dst=${p.mac}`, 'to_sf_port');
    else add(T_L2, 100, `dl_dst=${p.mac}`, `output:${portOf(k)}`);
  });
  add(T_L2, 50, 'dl_dst=01:00:00:00:00:00/01:00:00:00:00:00', outputs(ifaces));
  add(T_L2, 0, '', outputs(hostIfaces));
  return out;
}

const byPort = (a: string, b: string) => Number(a.slice(7)) - Number(b.slice(7));
