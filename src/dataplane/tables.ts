/*
 * Tables: the userspace renderer's output (control/drivers/userspace/render.ts renders one per
 * plan): the compiled, immutable form of the chain model that the data path indexes
 * (ARCHITECTURE.md §3-§5). The engine reads the current reference once per batch, so publishing a
 * new generation is an atomic swap between batches.
 *
 * Shape rules: a Tables is a plain object of typed arrays, numbers and strings (it is postMessage'd
 * to worker threads), always made by `allocTables` so every generation has the same hidden class.
 * Everything the data path needs is an index into a flat array:
 *
 *   interface (engine port) --ifacePorts--> logical port --(src MAC)--> role:
 *     portEntry      a classifier's logical port: classify with `entryTable` (rule -> path)
 *     portSf*        an SF's return port (egress on forward paths, ingress on reverse paths):
 *                    (path, hop) pairs it returns from; `sfTables[portSfTable]` re-classifies a
 *                    flow the flow state does not know, ignoring logical ports
 *     portIsSf       a port of a port pair: never an L2 destination outside a chain
 *   macSlots         every configured port's MAC -> port (open addressing): the L2 switch's static
 *                    entries, which learning cannot move
 *   path  = one direction of a chain: SPI, reverse flag, hops[pathHopBase .. +pathHopCount)
 *   hop   = group, position in the chain's forward order (shared by both directions), SI, and the
 *           action list run on a frame sent into it (hopAct*)
 *   rule  = classifier on a path: its far port (delivery) and the action list run at chain end
 *           (the path's pathEndAct*, then the rule's ruleAct*); ruleEnds holds the path's endpoint
 *           MACs (far port, entry port); a graph's source path hands off through pathHandoff
 *   tap   = a tap node: its instance and the action list run on a copy (ACT_COPY_TAP)
 *   group = weighted Maglev table (entries are instance indices), lb_fields mask
 *   instance = port pair: ingress/egress interface and MAC; index stable across generations
 *   actions = (actOp, actArg) pairs, ACT_* below; execute.ts runs them
 *
 * Instance indices are the plan's member indices (stable, keyed by port pair id), so per-instance
 * counters and per-flow sticky choices stay meaningful. A freed index is a hole
 * (instanceKeys[k] === '', instGroup[k] === -1) and may be reused later; instBorn[k] is the
 * generation at which index k got its current port pair, so a flow stamped with an older generation
 * can tell its remembered index now names someone else.
 */
import type { ClassifierTable } from '../classifier/lookup.js';
import { inSharedMemory } from '../util/shared-arrays.js';

/**
 * Most hops (non-tap groups) a chain may have: the width of a flow entry's instance list, kept
 * small so a flow's whole state fits one cache line (steer.ts).
 */
export const MAX_HOPS = 8;
/** Instance and logical port indices are stored as int16 in flow state. */
export const MAX_INDEX = 0x7fff;

/**
 * Action opcodes (actOp; actArg is the operand). The plan's actions, minus the ones the userspace
 * data path realises by its output choice in steer (deliver: ruleDstPort; switch: ruleDstPort -1).
 */
/** Destination MAC := the selected instance's ingress MAC (egress MAC on a reverse path). */
export const ACT_SET_DST_MAC = 1;
/** Destination MAC := port actArg's MAC; source MAC := the one seen at chain entry (else the entry port's). */
export const ACT_SET_END_MACS = 2;
/** Both MACs := those seen at chain entry (when seen). */
export const ACT_RESTORE_MACS = 3;
/** Push an MPLS label (actArg = (spi << 8) | si: the label; TTL = si) after the Ethernet header and its VLAN tags. */
export const ACT_PUSH_MPLS = 4;
/** Push NSH MD type 1 (actArg = (spi << 8) | si, next protocol Ethernet) and a new outer Ethernet header. */
export const ACT_PUSH_NSH = 5;
/** Pop the top MPLS label. */
export const ACT_POP_MPLS = 6;
/** Remove the outer Ethernet and NSH headers. */
export const ACT_POP_NSH = 7;
/** Copy the frame, as it is now, to tap node actArg (its own action list runs on the copy). */
export const ACT_COPY_TAP = 8;
/** Push the VXLAN outer headers to underlay peer actArg (-1: the selected instance's host) and leave by the underlay (vxlan.ts). */
export const ACT_TUNNEL = 9;

/** instMac layout: ingress MAC at k*12, egress MAC at k*12+6. */
export const INST_MAC_STRIDE = 12;
/** ruleEnds layout: as an Ethernet header's first 12 bytes: the far port's MAC (zero: none), the entry port's MAC. */
export const RULE_ENDS_STRIDE = 12;

export interface InstanceName {
  /** Names of the chains using this instance's group (comma-separated when several). */
  chain: string;
  /** 1-based hop number in the (first) chain, as in the lab's sf<hop><k> names; 0 for a hole. */
  hop: number;
  portPair: string;
  ingress: string;
  egress: string;
}

export interface RuleInfo {
  /** Flow classifier name (or id when unnamed) and id. */
  classifier: string;
  classifierId: string;
  /** Built for the reverse path of a symmetric chain. */
  reverse: boolean;
}

export interface Tables {
  generation: number;
  /** Linux interface names; index = engine port. '' = a freed index (kept so indices stay stable). */
  interfaces: string[];

  // logical ports
  portIds: string[];
  portNames: string[];
  portIface: Int32Array;
  /** 6 bytes per port. */
  portMac: Uint8Array;
  /** The MAC as bytes 0-1 and bytes 2-5, for a two-compare match against a frame's source MAC. */
  portMacHi: Uint16Array;
  portMacLo: Uint32Array;
  /** 1 for a port of some port pair. */
  portIsSf: Uint8Array;
  /** Static MAC table: slot -> port index + 1 (0 = empty); probe from (lo ^ hi) & macMask. */
  macSlots: Int32Array;
  macMask: number;
  /** 1 for a port of a tap's port pair: whatever it sends is dropped ('from_tap'). */
  portIsTap: Uint8Array;
  /** Per interface: 1 when unknown unicast may be flooded there (it has a port that is not an SF port). */
  ifaceFlood: Uint8Array;
  /** Logical ports bound to each interface. */
  ifacePortBase: Int32Array;
  ifacePortCount: Int32Array;
  ifacePorts: Int32Array;
  /** 1 when some classifier (forward or reverse rule) is attached at this port. */
  portEntry: Uint8Array;
  /** (path, hop) pairs this port is the return port of. */
  portSfBase: Int32Array;
  portSfCount: Int32Array;
  sfPath: Int32Array;
  sfHop: Int32Array;
  /** Index into sfTables for re-classification at this SF port, -1 when not an SF port. */
  portSfTable: Int32Array;

  // classification
  rules: RuleInfo[];
  /** Rules at their logical ports: result = rule index. */
  entryTable: ClassifierTable;
  /** Per distinct set of paths, their rules with logical ports ignored; sfTableRules maps results to rule indices. */
  sfTables: ClassifierTable[];
  sfTableRules: Int32Array[];
  rulePath: Int32Array;
  /** Logical port the rule classifies at (-1: none). */
  ruleAtPort: Int32Array;
  /** Logical port to deliver to at the end of the rule's path, -1 = by L2 learning. */
  ruleDstPort: Int32Array;
  /** The rule's endpoint MACs (RULE_ENDS_STRIDE each): hashed for eth_src/eth_dst, entry MAC fallback at chain end. */
  ruleEnds: Uint8Array;
  /** Chain-end action list of each rule. */
  ruleActBase: Int32Array;
  ruleActCount: Int32Array;

  // chains and paths
  chainNames: string[];
  pathCount: number;
  pathChain: Int32Array;
  pathSpi: Int32Array;
  pathReverse: Uint8Array;
  /** The chain's correlation as an ENCAP_* value: what an aware hop receives and sends back. */
  pathEncap: Uint8Array;
  /** Action list run at the path's end before the rule's delivery (tap copies, decapsulation), also on a graph hand-off. */
  pathEndActBase: Int32Array;
  pathEndActCount: Int32Array;
  /** Multi-host: the list for a frame a tunnel brought for the path's end (before the rule's), and its rule classifier. */
  pathArriveActBase: Int32Array;
  pathArriveActCount: Int32Array;
  pathArriveTable: Int32Array;
  /** Index into handoffTables for a service graph's source path, -1 otherwise. */
  pathHandoff: Int32Array;
  /** Per hand-off: the destination chains' rules, logical ports ignored; handoffTableRules maps results to rule indices. */
  handoffTables: ClassifierTable[];
  handoffTableRules: Int32Array[];
  pathHopBase: Int32Array;
  pathHopCount: Int32Array;
  /** The path's first rule (-1: none): the rule of a frame that no rule of its node matches. */
  pathFirstRule: Int32Array;

  // hops
  hopGroup: Int32Array;
  /** Position in the chain's forward hop order (reverse path hop j of n = n-1-j). */
  hopChainHop: Int32Array;
  hopSi: Uint8Array;
  /** 1 when the hop's members are SF-aware: they return the frame encapsulated, with the hop's SI. */
  hopAware: Uint8Array;
  /** Action list run on a frame sent into the hop. */
  hopActBase: Int32Array;
  hopActCount: Int32Array;
  /** Multi-host (control/slice.ts): the list instead when the selected instance is on another host (instPeer >= 0). */
  hopRemoteActBase: Int32Array;
  hopRemoteActCount: Int32Array;
  /** Multi-host: the list for a frame a tunnel brought for this hop, and the classifier (sfTables index, -1) naming its rule. */
  hopArriveActBase: Int32Array;
  hopArriveActCount: Int32Array;
  hopArriveTable: Int32Array;
  /** 1 when the hop's whole list is set_dst_mac (an SF-unaware hop between unaware nodes): execute's inline case. */
  hopPlain: Uint8Array;
  /**
   * Health (control/health.ts): the hop index of the path a frame due at this hop enters: itself;
   * a later hop, or pathHopCount (the chain's end), when the hop has no live instance and its
   * group fails open; -1 when it has none and fails closed (dropped, 'hop_down').
   */
  hopLive: Int32Array;

  // action lists
  actOp: Uint8Array;
  actArg: Int32Array;

  // tap nodes (ACT_COPY_TAP operands)
  /** The tap's instance (its one port pair). */
  tapInst: Int32Array;
  /** Action list run on the copy (encapsulation for an aware tap, set_dst_mac). */
  tapActBase: Int32Array;
  tapActCount: Int32Array;

  // groups
  /** Port pair group ids (which group an instance belonged to, across generations). */
  groupIds: string[];
  groupLbMask: Int32Array;
  groupMaglevBase: Int32Array;
  groupMaglevMask: Int32Array;
  /** All groups' Maglev tables; entries are instance indices, -1 = no usable instance. */
  maglev: Int32Array;

  // instances
  instanceCount: number;
  /** Port pair id per instance index ('' = free). */
  instanceKeys: string[];
  instanceNames: InstanceName[];
  instGroup: Int32Array;
  /** instGroup for an instance that is up, -1 for one health checks found down: a flow's sticky choice holds while this is the hop's group. */
  instLiveGroup: Int32Array;
  /** Ingress and egress logical ports. */
  instPortIn: Int32Array;
  instPortOut: Int32Array;
  instIfIn: Int32Array;
  instIfOut: Int32Array;
  instMac: Uint8Array;
  instBorn: Uint32Array;
  /** The member whose ingress or egress port each logical port is (-1: none). */
  portInst: Int32Array;

  // tunnels between hosts (control/slice.ts, vxlan.ts); underlayIface -1: one host, no tunnels
  underlayIface: number;
  /** This host's underlay IPv4 address (big-endian u32) and MAC. */
  underlayIp: number;
  underlayMac: Uint8Array;
  /** Per peer host: its underlay IPv4 address (0: not known yet) and MAC. */
  peerIp: Uint32Array;
  peerMac: Uint8Array;
  /** Per logical port and per instance: the peer host it is on, -1 = this host. */
  portPeer: Int32Array;
  instPeer: Int32Array;
  /** VNI -> path + 1 (open addressing from vni & vniMask; 0 = empty). */
  vniSlots: Int32Array;
  vniMask: number;
}

export interface TableSizes {
  interfaces: number;
  ports: number;
  sfEntries: number;
  rules: number;
  paths: number;
  hops: number;
  groups: number;
  maglev: number;
  actions: number;
  taps: number;
  instances: number;
  peers: number;
}

/**
 * The one factory: every typed array sized, every field present (names and tables filled by the
 * caller). The typed arrays are views of one SharedArrayBuffer, so publishing a generation to the
 * workers copies none of them.
 */
export function allocTables(n: TableSizes, entryTable: ClassifierTable): Tables {
  return inSharedMemory((a) => ({
    generation: 0,
    interfaces: [],
    portIds: [],
    portNames: [],
    portIface: a.i32(n.ports),
    portMac: a.u8(n.ports * 6),
    portMacHi: a.u16(n.ports),
    portMacLo: a.u32(n.ports),
    portIsSf: a.u8(n.ports),
    portIsTap: a.u8(n.ports),
    macSlots: a.i32(macSlotCount(n.ports)),
    macMask: macSlotCount(n.ports) - 1,
    ifaceFlood: a.u8(n.interfaces),
    ifacePortBase: a.i32(n.interfaces),
    ifacePortCount: a.i32(n.interfaces),
    ifacePorts: a.i32(n.ports),
    portEntry: a.u8(n.ports),
    portSfBase: a.i32(n.ports),
    portSfCount: a.i32(n.ports),
    sfPath: a.i32(n.sfEntries),
    sfHop: a.i32(n.sfEntries),
    portSfTable: a.i32(n.ports).fill(-1),
    rules: [],
    entryTable,
    sfTables: [],
    sfTableRules: [],
    rulePath: a.i32(n.rules),
    ruleAtPort: a.i32(n.rules).fill(-1),
    ruleDstPort: a.i32(n.rules).fill(-1),
    ruleEnds: a.u8(n.rules * RULE_ENDS_STRIDE),
    ruleActBase: a.i32(n.rules),
    ruleActCount: a.i32(n.rules),
    chainNames: [],
    pathCount: n.paths,
    pathChain: a.i32(n.paths),
    pathSpi: a.i32(n.paths),
    pathReverse: a.u8(n.paths),
    pathEncap: a.u8(n.paths),
    pathEndActBase: a.i32(n.paths),
    pathEndActCount: a.i32(n.paths),
    pathArriveActBase: a.i32(n.paths),
    pathArriveActCount: a.i32(n.paths),
    pathArriveTable: a.i32(n.paths).fill(-1),
    pathHandoff: a.i32(n.paths).fill(-1),
    handoffTables: [],
    handoffTableRules: [],
    pathHopBase: a.i32(n.paths),
    pathHopCount: a.i32(n.paths),
    pathFirstRule: a.i32(n.paths).fill(-1),
    hopGroup: a.i32(n.hops),
    hopChainHop: a.i32(n.hops),
    hopSi: a.u8(n.hops),
    hopAware: a.u8(n.hops),
    hopActBase: a.i32(n.hops),
    hopActCount: a.i32(n.hops),
    hopRemoteActBase: a.i32(n.hops),
    hopRemoteActCount: a.i32(n.hops),
    hopArriveActBase: a.i32(n.hops),
    hopArriveActCount: a.i32(n.hops),
    hopArriveTable: a.i32(n.hops).fill(-1),
    hopPlain: a.u8(n.hops),
    hopLive: a.i32(n.hops),
    actOp: a.u8(n.actions),
    actArg: a.i32(n.actions),
    tapInst: a.i32(n.taps),
    tapActBase: a.i32(n.taps),
    tapActCount: a.i32(n.taps),
    groupIds: [],
    groupLbMask: a.i32(n.groups),
    groupMaglevBase: a.i32(n.groups),
    groupMaglevMask: a.i32(n.groups),
    maglev: a.i32(n.maglev).fill(-1),
    instanceCount: n.instances,
    instanceKeys: [],
    instanceNames: [],
    instGroup: a.i32(n.instances).fill(-1),
    instLiveGroup: a.i32(n.instances).fill(-1),
    instPortIn: a.i32(n.instances).fill(-1),
    instPortOut: a.i32(n.instances).fill(-1),
    instIfIn: a.i32(n.instances).fill(-1),
    instIfOut: a.i32(n.instances).fill(-1),
    instMac: a.u8(n.instances * INST_MAC_STRIDE),
    instBorn: a.u32(n.instances),
    portInst: a.i32(n.ports).fill(-1),
    underlayIface: -1,
    underlayIp: 0,
    underlayMac: a.u8(6),
    peerIp: a.u32(n.peers),
    peerMac: a.u8(n.peers * 6),
    portPeer: a.i32(n.ports).fill(-1),
    instPeer: a.i32(n.instances).fill(-1),
    vniSlots: a.i32(macSlotCount(n.paths)),
    vniMask: macSlotCount(n.paths) - 1,
  }));
}

/** Static MAC table size for n ports: a power of two with at least half the slots free. */
function macSlotCount(ports: number): number {
  let size = 16;
  while (size < ports * 2) size *= 2;
  return size;
}

/** The port whose MAC is hi:lo (bytes 0-1, 2-5), or -1. */
export function portByMac(t: Tables, hi: number, lo: number): number {
  const mask = t.macMask;
  for (let at = ((lo ^ hi) >>> 0) & mask; ; at = (at + 1) & mask) {
    const k = t.macSlots[at] - 1;
    if (k < 0) return -1;
    if (t.portMacLo[k] === lo && t.portMacHi[k] === hi) return k;
  }
}

/** "aa:bb:cc:dd:ee:ff" (case-insensitive) into 6 bytes at out[off]; false when malformed. */
export function parseMac(text: string, out: Uint8Array, off: number): boolean {
  const m = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/i.exec(text);
  if (!m) return false;
  for (let k = 0; k < 6; k++) out[off + k] = parseInt(m[k + 1], 16);
  return true;
}

export function formatMac(bytes: Uint8Array, off: number): string {
  const parts: string[] = [];
  for (let k = 0; k < 6; k++) parts.push(bytes[off + k].toString(16).padStart(2, '0'));
  return parts.join(':');
}
