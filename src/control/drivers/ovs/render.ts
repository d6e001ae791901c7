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
 *                source x destination block). Such a flow looks the frame up in the next hop's
 *                conntrack zone (see Flow affinity; a group with explicit lb_fields also gets its
 *                hash key loaded) and goes on in table 3, or, after the last hop, runs the rule's
 *                chain end: eth_dst := the logical destination port's MAC, eth_src := the logical
 *                source port's MAC, out of that port (no destination port: table 9). Above the rules, link-scoped control traffic (IPv6 link-local and
 *                link/interface-scope multicast, neighbour discovery, MLD; IPv4 link-local and
 *                224.0.0.0/24) never enters a chain; below them everything else goes to L2.
 *   1, 2 L4      for groups whose lb_fields name L4 ports: the hash key's ports by role (1: as the
 *                packet has them, 2: mirrored): tcp -> reg9, udp -> reg10 (source role << 16 | dst).
 *   3  PIN       after the hop's conntrack lookup (metadata = the group's id, and in bits 32-39
 *                the encapsulation to put on, selectMeta): a flow pinned to a live member
 *                (ct_mark = member + 1) leaves for it: the hop's encapsulation if any, eth_dst :=
 *                the member's ingress MAC (egress MAC on a reverse path), out of that port. Any
 *                other frame goes to the hop's select group.
 *   4  COMMIT    the member the group's bucket named (reg8 = member + 1): the flow is committed in
 *                the hop's zone with ct_mark := member + 1 (at a forward path's first hop, if the
 *                chain's end restores MACs, with the frame's MACs in ct_label), then leaves as in 3.
 *   5  AWARE     a frame back from an SF-aware hop: table 0 matches the SF's own index on its return
 *                port (MPLS: label (SPI << 8) | SI, bottom of stack; NSH: SPI and SI), decapsulates
 *                it (OVS cannot hash or classify beneath the encapsulation) and marks the path and
 *                hop in the metadata; here it is re-classified with the rule fields it returns with,
 *                or, matching none, continues as its path's first rule of its IP family. If the next
 *                node is aware too, the same SPI/SI is put back on once its member is chosen (the
 *                plan's aware -> aware case: the SF's frame goes on as it came, only re-hashed). What else
 *                comes back on an aware return port is dropped with the userspace mode's reasons.
 *   6  TAP       per tap node one flow (metadata = its mark): the tap's own action list (its
 *                encapsulation, its MAC) and out of its instance's port, run on a clone() of the
 *                frame where the plan copies it; what a tap instance sends is dropped in table 0.
 *   7  HANDOFF   service graphs: the end of a source chain (decapsulated, key registers cleared,
 *                metadata = the source rule's mark) offered to the destination chains' rules in
 *                plan order, logical ports ignored; matching none, the source rule's own delivery.
 *   8  DOWN      health: a hop with no live instance, skipped (fail-open) or dropped (fail-closed).
 *   9  RESTORE   a chain end without a logical destination port (the userspace mode's
 *                restore_macs): the frame was looked up in its chain's first-hop zone; the label
 *                its flow committed there at entry gives both MACs back (destination in bits 0-47,
 *                source in 48-95), then L2 switching. A flow without a label (its first hop skipped,
 *                a tuple the SFs changed) keeps the destination the last SF gave it (the
 *                reference's NORMAL) and gets the logical source port's MAC as its source.
 *   10 L2        every non-SF port's MAC -> its interface; unicast to an SF port's MAC dropped
 *                (SF ports are not L2 endpoints); broadcast and multicast to every interface;
 *                unknown unicast to the interfaces with a non-SF port.
 * Groups: one select group per (path, hop), id = chain_id << 12 | reverse << 11 | hop, each bucket
 * naming its member (reg8 := member + 1) and going on in table 4. Bucket ids are member index << 8
 * | replica. Default lb_fields (the 5-tuple): selection_method=dp_hash, algorithm 0: the datapath
 * hashes the 5-tuple and recirculates, and its flows match a few bits of that hash, never the
 * 5-tuple itself, so a new flow needs no upcall. (OVS's symmetric algorithm 1 leaves UDP ports out
 * of the netdev datapath's hash: every UDP flow between two hosts would take one bucket. Replies
 * need no symmetric hash: they find their request's pin.) Explicit lb_fields: selection_method=hash
 * over REGISTERS holding the fields by ROLE (the key layout of hash/flowhash.ts): xxreg0 = IP
 * "source", xxreg1 = IP "destination", reg9/reg10 = ports, xreg6/xreg7 = the path's endpoint MACs
 * (the rule's logical ports, constants); a reverse path loads them mirrored, so both directions
 * hash alike. (Naming packet fields in `fields(...)` cannot do that: OVS hashes them in its own
 * field order whatever the order written.) The hashed fields are then matched exactly by the
 * datapath flows of a flow's first frame, which is what lb_fields asks for.
 * Weights: dp_hash maps its 2^n hash values (n from the bucket weights, at least 16 values) onto
 * the buckets by Webster's method, so 3 equal buckets get 6/5/5 of 16; equal buckets whose number
 * is a power of two get equal numbers of values, so members get replicas in proportion
 * (dpHashCounts: within 1/256). The `hash` method gives the flow to the bucket with the highest
 * (hash(bucket_id, flow hash) & 0xffff) x weight, NOT proportional to the weights (1:3 gave
 * 17.5/82.5); with every weight 1 that is rendezvous hashing, so members get replicas in
 * proportion there too (bucketCounts: gcd-reduced, at most MAX_BUCKETS).
 *
 * Flow affinity: conntrack. Each hop of a chain has a zone (zoneOf: chain_id x 32 + its forward
 * position), shared by its forward and reverse group. A frame is looked up there on its way to the
 * hop (ct, recirculated to table 3). A flow's first frame finds no pin, is hashed by the group and
 * commits the flow with its member's mark; its later frames, and its replies (conntrack's reply
 * direction of the same entry), find the mark and leave for that member without the group. So
 * adding an instance or changing weights (new buckets, a new dp_hash map) moves no existing flow;
 * removing an instance removes its table-3 flows, so only its flows reach the group again and are
 * pinned anew (a commit rewrites an entry's mark); and replies cross their request's instances. A
 * frame conntrack finds invalid is hashed, not pinned. Pins age with conntrack's timeouts (UDP
 * 30-60 s idle, TCP by state), as the userspace mode's flow records age; an aged flow is hashed
 * again. Why (bench/e2e, the chain, 65,536 UDP flows): the previous design learned each flow's pin
 * with learn(): every new flow took the slow path and changed the flow table (ovs-vswitchd then
 * revalidates every datapath flow), and exact-match pins (and the `hash` method over the 5-tuple)
 * need a datapath flow per flow: it delivered about 1.5 kpps where the hand-written dp_hash
 * baseline delivered 18 kpps. A conntrack entry is made in the datapath: no upcall, no flow-table
 * change, few datapath flows. Its price is a conntrack lookup per hop (the recirculation it needs,
 * dp_hash needs too). Pinning only around a group's growth (a flow dump, or learn() switched on
 * around the change) would cost nothing per frame, but would move the flows silent during that
 * window; not chosen.
 *
 * Encapsulations (spec B.2): MPLS push_mpls with label (SPI << 8) | SI, TTL = SI, TC 0; NSH
 * encap(nsh) MD type 1 (TTL 63) and encap(ethernet) with the inner frame's source MAC. OVS cannot
 * look beneath an MPLS label, so a pop must name the payload's ethertype: a path classifying
 * only one IP family pops to it; a path classifying both marks its IPv6 frames with traffic class
 * 1 (mplsMarksV6) and pops by the mark. N-tuple mappings are the plan's per-hop return matches.
 *
 * `unsupported` refuses only what cannot be numbered (ports without an interface, group ids,
 * conntrack zones).
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
/** After the hop's conntrack lookup: a flow pinned to a member (ct_mark) leaves for it, else the select group. */
export const T_PIN = 3;
/** The member a bucket chose (reg8 = member + 1): pin the flow to it (ct commit), and leave for it. */
export const T_COMMIT = 4;
/** Re-classification of a frame back from an SF-aware hop, decapsulated (metadata: awareMark). */
export const T_AWARE = 5;
/** Tap copies (metadata: tapMark), one flow per tap node: its statistics are the tap's. */
export const T_TAP = 6;
/** Service-graph hand-offs (metadata: handoffMark). */
export const T_HANDOFF = 7;
/** Health: a hop with no live instance, skipped (fail-open) or dropped (fail-closed); counted per path and hop. */
export const T_DOWN = 8;
/** Chain end without a logical destination port: the entry MACs back from the first hop's conntrack label (metadata: restoreMark). */
export const T_RESTORE = 9;
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
  const zones = new Map<number, string>();
  for (const c of plan.chains) {
    if (c.chainId >= 1 << 20) problems.push(refuse(`port chain ${c.name}: chain_id ${c.chainId} is beyond the ovs driver's group numbering (< ${1 << 20})`));
    if (plan.paths[c.forward].hops.length >= 1 << 11) problems.push(refuse(`port chain ${c.name}: too many hops for the ovs driver`));
    for (let h = 0; h < plan.paths[c.forward].sfHops; h++) {
      const zone = zoneOf(c.chainId, h);
      const other = zones.get(zone);
      if (zone === 0 || other !== undefined) problems.push(refuse(`port chain ${c.name}: hop ${h + 1} would share conntrack zone ${zone} with ${other ?? 'the default zone'} in the ovs driver (zone = chain_id x 32 + hop, modulo 65536)`));
      zones.set(zone, `port chain ${c.name} hop ${h + 1}`);
    }
  }
  return problems;
}

/**
 * Conntrack zone of a chain's hop (`chainHop`: its position in forward order): the forward and the
 * reverse group of the hop share it, so a reply finds its request's entry (conntrack's reply
 * direction) and the pin in it. Stable across plans; `unsupported` refuses collisions.
 */
export const zoneOf = (chainId: number, chainHop: number) => ((chainId << 5) + chainHop) & 0xffff;

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
  /** Flow keys of the flows that send a frame to an instance (pinned or first packet) -> its member index. */
  instanceFlows: Map<string, number>;
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

/**
 * Buckets per member of a dp_hash group. OVS maps the 2^n hash values (n from the buckets' weights,
 * at least 16 values) onto the buckets by Webster's method, so 3 equal buckets get 6/5/5 of 16. With
 * equal-weight buckets whose number is a power of two every bucket gets as many values as the
 * others: the gcd-reduced counts when they sum to one, else MAX_BUCKETS buckets apportioned by
 * largest remainder (one hash value each; every member with a weight keeps at least one).
 */
export function dpHashCounts(weights: number[]): number[] {
  const base = bucketCounts(weights);
  const sum = base.reduce((a, b) => a + b, 0);
  if (sum === 0 || (sum & (sum - 1)) === 0) return base;
  const total = weights.reduce((a, w) => a + Math.max(w, 0), 0);
  const exact = weights.map((w) => (w > 0 ? (w * MAX_BUCKETS) / total : 0));
  const counts = exact.map((x, j) => (weights[j] > 0 ? Math.max(1, Math.floor(x)) : 0));
  const byRemainder = weights.map((_, j) => j).filter((j) => weights[j] > 0).sort((a, b) => exact[b] - Math.floor(exact[b]) - (exact[a] - Math.floor(exact[a])) || a - b);
  for (let left = MAX_BUCKETS - counts.reduce((a, b) => a + b, 0), i = 0; left > 0; left--, i++) counts[byRemainder[i % byRemainder.length]]++;
  for (let over = counts.reduce((a, b) => a + b, 0) - MAX_BUCKETS; over > 0; over--) counts[counts.indexOf(Math.max(...counts))]--;
  return counts;
}

const macHex = (mac: string) => `0x${mac.replace(/:/g, '').replace(/^0+(?=.)/, '')}`;

/** The `fields(...)` of a group with explicit lb_fields, over the role registers, in OVS's print order. */
function hashFields(lb: LbField[]): string[] {
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

/**
 * Actions loading the hash key of a group with explicit lb_fields `lb` for a frame of rule r (IPv4
 * or IPv6 per the rule), mirrored on a reverse path.
 */
function keyLoads(plan: Plan, r: PlanRule, lb: LbField[]): string[] {
  const v6 = r.match.ethertype === 'IPv6';
  const has = (f: LbField) => lb.includes(f);
  const [src, dst] = v6 ? ['NXM_NX_IPV6_SRC[]', 'NXM_NX_IPV6_DST[]'] : ['NXM_OF_IP_SRC[]', 'NXM_OF_IP_DST[]'];
  const to = (reg: string) => (v6 ? `NXM_NX_${reg}[]` : `NXM_NX_${reg}[0..31]`);
  const [srcRole, dstRole] = r.reverse ? [dst, src] : [src, dst];
  const out: string[] = [];
  if (has('ip_src')) out.push(`move:${srcRole}->${to('XXREG0')}`);
  if (has('ip_dst')) out.push(`move:${dstRole}->${to('XXREG1')}`);
  // The path's endpoints: the forward source is the rule's `at` (forward) or `to` (reverse).
  const [fwdSrc, fwdDst] = r.reverse ? [r.to, r.at] : [r.at, r.to];
  const mac = (port: number) => (port < 0 ? '0x0' : macHex(plan.ports[port].mac));
  if (has('eth_src')) out.push(`set_field:${mac(fwdSrc)}->xreg6`);
  if (has('eth_dst')) out.push(`set_field:${mac(fwdDst)}->xreg7`);
  if (lb.some((f) => f.startsWith('tcp_') || f.startsWith('udp_'))) out.push(`resubmit(,${r.reverse ? T_L4_REV : T_L4_FWD})`);
  return out;
}

/** The L4 role tables: the protocols lb_fields names ports of, as the packet has its ports (fwd) or mirrored (rev). */
function l4RoleFlows(add: (table: number, priority: number, match: string, actions: string) => void): void {
  const regs: [string, string, string][] = [
    ['tcp', 'NXM_OF_TCP', 'REG9'],
    ['udp', 'NXM_OF_UDP', 'REG10'],
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
const MARK_RESTORE = 6n << 40n;
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
/** The chain end of rule `rule`, looking its entry MACs up in the first hop's zone (T_RESTORE). */
const restoreMark = (rule: number) => MARK_RESTORE | BigInt(rule);
/**
 * The metadata of a frame selecting in group `gid` (T_PIN, T_COMMIT): the group's id, and in bits
 * 32-39 the encapsulation to put on once the member is known (`variant`, 0: none; per group).
 */
const selectMeta = (gid: number, variant: number) => (BigInt(variant) << 32n) | BigInt(gid);

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
  const out: Rendered = { flows: new Map(), groups: new Map(), groupInfo: new Map(), eventFlows: new Map(), dropFlows: new Map(), tapFlows: new Map(), instanceFlows: new Map() };
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

  // Health: a down member has no bucket and no pin flow (its flows are hashed again, and pinned
  // anew: only they move); a hop whose group has no usable instance is skipped or dropped by its
  // group's policy.
  const up = (k: number) => !health.down.has(members[k].id);
  const hopLive = paths.map((p) => liveHops(p, groups, members, up, health.policy));

  // Groups: one per (path, steered hop). A bucket names its member (reg8 = member + 1) and goes on
  // to T_COMMIT; the encapsulation, MAC and port are the member flows' (below).
  paths.forEach((p, pi) => {
    const chainId = chains[p.chain].chainId;
    for (let h = 0; h < p.sfHops; h++) {
      const hop = p.hops[h];
      const g = groups[hop.group];
      const id = groupNumber(chainId, p.reverse, h);
      const weights = g.members.map((k) => (up(k) ? members[k].weight : 0));
      const dp = g.lbFields.length === 0;
      const counts = dp ? dpHashCounts(weights) : bucketCounts(weights);
      const info: GroupInfo = { chain: p.chain, path: pi, hop: h, buckets: new Map(), members: g.members.filter(up) };
      const buckets: string[] = [];
      g.members.forEach((k, j) => {
        for (let rep = 0; rep < counts[j]; rep++) {
          const bucketId = (k << 8) | rep;
          info.buckets.set(bucketId, k);
          buckets.push(`bucket=bucket_id:${bucketId},actions=set_field:0x${(k + 1).toString(16)}->reg8,resubmit(,${T_COMMIT})`);
        }
      });
      const fields = dp ? [] : hashFields(g.lbFields);
      // (dp_hash algorithm 0, the 5-tuple; OVS's symmetric one, 1, leaves UDP ports out of the netdev
      // datapath's hash. Replies need no symmetric hash: they find their request's pin.)
      const sel = dp ? 'selection_method=dp_hash' : `selection_method=hash,${fields.length === 1 ? `fields=${fields[0]}` : `fields(${fields.join(',')})`}`;
      out.groups.set(id, [`group_id=${id},type=select,${sel}`, ...buckets].join(','));
      out.groupInfo.set(id, info);
    }
  });

  /**
   * The flows of the members of the group of hop h of path pi, for frames whose encapsulation to
   * put on is `variant`'s (selectMeta): in T_PIN a frame whose flow is pinned to a member
   * (ct_mark = member + 1) leaves for it; any other goes to the select group. In T_COMMIT the
   * bucket's member pins the flow (ct commit in the hop's zone; at a forward path's first hop, the
   * frame's MACs into the label for a chain end that restores them) and the frame leaves for it.
   */
  const memberFlows = (pi: number, h: number, variant: number, carried: Encapsulation | null) => {
    const p = paths[pi];
    const hop = p.hops[h];
    const gid = groupNumber(chains[p.chain].chainId, p.reverse, h);
    const m = meta(selectMeta(gid, variant));
    const zone = zoneOf(chains[p.chain].chainId, hop.chainHop);
    const keepMacs = !p.reverse && hop.chainHop === 0 && p.rules.some((ri) => rules[ri].end.some((a) => a.op === 'restore_macs'));
    add(T_PIN, 0, m, `group:${gid}`);
    for (const k of groups[hop.group].members) {
      if (!up(k)) continue;
      const port = p.reverse ? members[k].egress : members[k].ingress;
      const mark = `0x${(k + 1).toString(16)}`;
      for (const family of ['ip', 'ipv6']) {
        const leave = [...(carried ? pushActions(carried, family === 'ipv6', mplsMarksV6(plan, p)) : []), `set_field:${ports[port].mac}->eth_dst`, `output:${portOf(port)}`].join(',');
        out.instanceFlows.set(add(T_PIN, 10, `ct_state=-inv+trk,ct_mark=${mark},${family},${m}`, leave), k);
        const label = keepMacs ? ',move:NXM_OF_ETH_DST[]->NXM_NX_CT_LABEL[0..47],move:NXM_OF_ETH_SRC[]->NXM_NX_CT_LABEL[48..95]' : '';
        out.instanceFlows.set(add(T_COMMIT, 10, `${family},reg8=${mark},${m}`, `ct(commit,zone=${zone},exec(set_field:${mark}->ct_mark${label})),${leave}`), k);
      }
    }
  };
  /** Per (path, hop): the encapsulations frames select in its group with (variant: their index), rendered by memberFlows at the end. */
  const variants = new Map<string, { pi: number; h: number; carried: Encapsulation | null; variant: number }>();
  const variantOf = (pi: number, h: number, carried: Encapsulation | null): number => {
    const key = JSON.stringify([pi, h, carried]);
    let v = variants.get(key);
    if (!v) {
      const used = [...variants.values()].filter((x) => x.pi === pi && x.h === h).length;
      v = { pi, h, carried, variant: used };
      variants.set(key, v);
    }
    return v.variant;
  };

  /**
   * The OVS actions of plan action list `acts` for a frame of rule r on path p, due at node k
   * (k = sfHops: the chain's end). The frame is plain IP whatever the plan says (an encapsulated
   * frame back from an aware SF was decapsulated to be classified); `carried` is the encapsulation
   * the plan has it carry, put back on when the list keeps it (an aware hop after an aware hop).
   * A hop's encapsulation goes on after its member is chosen (memberFlows): conntrack and the hash
   * see the plain frame.
   */
  const actionsOf = (p: PlanPath, pi: number, r: PlanRule, ri: number, k: number, acts: Action[], carried: Encapsulation | null): string => {
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
          pending = { encap: a.encap, spi: a.spi, si: a.si };
          break;
        case 'set_dst_mac': {
          // The hop's conntrack lookup (its zone) on the plain frame, then T_PIN: its pin, or its
          // select group (explicit lb_fields: over the key registers loaded here).
          const hop = p.hops[k];
          const g = groups[hop.group];
          const gid = groupNumber(chains[p.chain].chainId, p.reverse, k);
          if (g.lbFields.length > 0) outActs.unshift(...keyLoads(plan, r, g.lbFields));
          outActs.push(setMeta(selectMeta(gid, variantOf(pi, k, pending))), `ct(table=${T_PIN},zone=${zoneOf(chains[p.chain].chainId, hop.chainHop)})`);
          break;
        }
        case 'set_end_macs':
          outActs.push(`set_field:${ports[a.port].mac}->eth_dst`, ...(entryMac ? [`set_field:${entryMac}->eth_src`] : []));
          break;
        case 'restore_macs': {
          // Both MACs back to the frame's at chain entry: the first hop's commit keeps them in the
          // flow's conntrack label (memberFlows), looked up here in that hop's zone; the rest of the
          // list goes on in T_RESTORE. A flow without a label (its first hop skipped, or a tuple the
          // SFs changed) keeps the destination the last SF gave it (the reference's NORMAL) and gets
          // the logical source port's MAC as its source.
          const rest = actionsOf(p, pi, r, ri, k, acts.slice(n + 1), null);
          const fallback = [...(entryMac ? [`set_field:${entryMac}->eth_src`] : []), rest].filter(Boolean).join(',');
          if (p.reverse || p.sfHops === 0) return [...outActs, fallback].filter(Boolean).join(',');
          const m = restoreMark(ri);
          add(T_RESTORE, 20, `ct_label=0,${meta(m)}`, fallback);
          add(T_RESTORE, 10, meta(m), ['move:NXM_NX_CT_LABEL[0..47]->NXM_OF_ETH_DST[]', 'move:NXM_NX_CT_LABEL[48..95]->NXM_OF_ETH_SRC[]', rest].filter(Boolean).join(','));
          outActs.push(setMeta(m), `ct(table=${T_RESTORE},zone=${zoneOf(chains[p.chain].chainId, p.hops[0].chainHop)})`);
          return outActs.join(',');
        }
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
          // (Its frames are of the rule's IP family: a conntrack lookup in the rest needs it matched.)
          add(T_HANDOFF, 0, `${r.match.ethertype === 'IPv6' ? 'ipv6' : 'ip'},${meta(handoffMark(ri))}`, actionsOf(p, pi, r, ri, k, acts.slice(n + 1), null));
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

  for (const v of variants.values()) memberFlows(v.pi, v.h, v.variant, v.carried);

  // What a tap instance sends is dropped: a tap only receives copies.
  for (const g of groups) {
    if (!g.tap) continue;
    for (const k of g.members) for (const port of new Set([members[k].ingress, members[k].egress])) drop(T_CLASSIFY, PRIO_FROM_TAP, at(port).join(','), 'from_tap');
  }
  for (const m of LINK_LOCAL) add(T_CLASSIFY, PRIO_LINK_LOCAL, m, `resubmit(,${T_L2})`);
  add(T_CLASSIFY, 0, '', `resubmit(,${T_L2})`);
  if (groups.some((g) => g.lbFields.some((f) => f.startsWith('tcp_') || f.startsWith('udp_')))) l4RoleFlows(add);

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
