/*
 * Tables: the compiled, immutable form of the chain model that the data path indexes
 * (ARCHITECTURE.md §3-§5). The compiler (control/compile.ts) builds one per State on the main
 * thread; the engine reads the current reference once per batch, so publishing a new generation is
 * an atomic swap between batches.
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
 *   path  = one direction of a chain: SPI, reverse flag, hops[pathHopBase .. +pathHopCount)
 *   hop   = group, position in the chain's forward order (shared by both directions), SI
 *   group = instances + weighted Maglev table (entries are instance indices), lb_fields mask
 *   instance = port pair: ingress/egress interface and MAC; index stable across generations
 *
 * Instance indices are keyed by port pair id and survive recompiles (compileTables(state, prev)),
 * so per-instance counters and per-flow sticky choices stay meaningful. A freed index is a hole
 * (instanceKeys[k] === '', instGroup[k] === -1) and may be reused later; instBorn[k] is the
 * generation at which index k got its current port pair, so a flow stamped with an older generation
 * can tell its remembered index now names someone else.
 *
 * Seams kept for later work (not rendered yet): hopKind (tap hops), pathEncap (MPLS / NSH
 * correlation between hops).
 */
import type { ClassifierTable } from '../classifier/lookup.js';

/**
 * Most hops (non-tap groups) a chain may have: the width of a flow entry's instance list, kept
 * small so a flow's whole state fits one cache line (steer.ts).
 */
export const MAX_HOPS = 8;
/** Instance and logical port indices are stored as int16 in flow state. */
export const MAX_INDEX = 0x7fff;

/** hopKind values. */
export const HOP_SF = 0;

/** instMac layout: ingress MAC at k*12, egress MAC at k*12+6. */
export const INST_MAC_STRIDE = 12;
/** ruleMacs layout: the Ethernet header's first 12 bytes (dst MAC, src MAC) to restore at chain end. */
export const RULE_MAC_STRIDE = 12;

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
  portCount: number;
  portIds: string[];
  portNames: string[];
  portIface: Int32Array;
  /** 6 bytes per port. */
  portMac: Uint8Array;
  /** The MAC as bytes 0-1 and bytes 2-5, for a two-compare match against a frame's source MAC. */
  portMacHi: Uint16Array;
  portMacLo: Uint32Array;
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
  ruleCount: number;
  rules: RuleInfo[];
  /** Rules at their logical ports: result = rule index. */
  entryTable: ClassifierTable;
  /** Per distinct set of paths, their rules with logical ports ignored; sfTableRules maps results to rule indices. */
  sfTables: ClassifierTable[];
  sfTableRules: Int32Array[];
  rulePath: Int32Array;
  /** Logical port to deliver to at the end of the rule's path, -1 = by L2 learning. */
  ruleDstPort: Int32Array;
  /** Fallback MACs to restore at chain end when the flow's own were not seen (dst, src). */
  ruleMacs: Uint8Array;
  ruleHasMacs: Uint8Array;

  // chains and paths
  chainNames: string[];
  pathCount: number;
  pathChain: Int32Array;
  pathSpi: Int32Array;
  pathReverse: Uint8Array;
  pathEncap: Uint8Array;
  pathHopBase: Int32Array;
  pathHopCount: Int32Array;

  // hops
  hopGroup: Int32Array;
  /** Position in the chain's forward hop order (reverse path hop j of n = n-1-j). */
  hopChainHop: Int32Array;
  hopSi: Uint8Array;
  hopKind: Uint8Array;

  // groups
  groupNames: string[];
  /** Port pair group ids (which group an instance belonged to, across generations). */
  groupIds: string[];
  groupLbMask: Int32Array;
  groupMaglevBase: Int32Array;
  groupMaglevMask: Int32Array;
  groupInstBase: Int32Array;
  groupInstCount: Int32Array;
  groupInst: Int32Array;
  /** All groups' Maglev tables; entries are instance indices, -1 = no usable instance. */
  maglev: Int32Array;

  // instances
  instanceCount: number;
  /** Port pair id per instance index ('' = free). */
  instanceKeys: string[];
  instanceNames: InstanceName[];
  instGroup: Int32Array;
  instWeight: Uint32Array;
  instIfIn: Int32Array;
  instIfOut: Int32Array;
  instMac: Uint8Array;
  instBorn: Uint32Array;
}

export interface TableSizes {
  interfaces: number;
  ports: number;
  sfEntries: number;
  rules: number;
  paths: number;
  hops: number;
  groups: number;
  groupInst: number;
  maglev: number;
  instances: number;
}

/** The one factory: every typed array sized, every field present (names and tables filled by the caller). */
export function allocTables(n: TableSizes, entryTable: ClassifierTable): Tables {
  return {
    generation: 0,
    interfaces: [],
    portCount: n.ports,
    portIds: [],
    portNames: [],
    portIface: new Int32Array(n.ports),
    portMac: new Uint8Array(n.ports * 6),
    portMacHi: new Uint16Array(n.ports),
    portMacLo: new Uint32Array(n.ports),
    ifacePortBase: new Int32Array(n.interfaces),
    ifacePortCount: new Int32Array(n.interfaces),
    ifacePorts: new Int32Array(n.ports),
    portEntry: new Uint8Array(n.ports),
    portSfBase: new Int32Array(n.ports),
    portSfCount: new Int32Array(n.ports),
    sfPath: new Int32Array(n.sfEntries),
    sfHop: new Int32Array(n.sfEntries),
    portSfTable: new Int32Array(n.ports).fill(-1),
    ruleCount: n.rules,
    rules: [],
    entryTable,
    sfTables: [],
    sfTableRules: [],
    rulePath: new Int32Array(n.rules),
    ruleDstPort: new Int32Array(n.rules).fill(-1),
    ruleMacs: new Uint8Array(n.rules * RULE_MAC_STRIDE),
    ruleHasMacs: new Uint8Array(n.rules),
    chainNames: [],
    pathCount: n.paths,
    pathChain: new Int32Array(n.paths),
    pathSpi: new Int32Array(n.paths),
    pathReverse: new Uint8Array(n.paths),
    pathEncap: new Uint8Array(n.paths),
    pathHopBase: new Int32Array(n.paths),
    pathHopCount: new Int32Array(n.paths),
    hopGroup: new Int32Array(n.hops),
    hopChainHop: new Int32Array(n.hops),
    hopSi: new Uint8Array(n.hops),
    hopKind: new Uint8Array(n.hops),
    groupNames: [],
    groupIds: [],
    groupLbMask: new Int32Array(n.groups),
    groupMaglevBase: new Int32Array(n.groups),
    groupMaglevMask: new Int32Array(n.groups),
    groupInstBase: new Int32Array(n.groups),
    groupInstCount: new Int32Array(n.groups),
    groupInst: new Int32Array(n.groupInst),
    maglev: new Int32Array(n.maglev).fill(-1),
    instanceCount: n.instances,
    instanceKeys: [],
    instanceNames: [],
    instGroup: new Int32Array(n.instances).fill(-1),
    instWeight: new Uint32Array(n.instances),
    instIfIn: new Int32Array(n.instances).fill(-1),
    instIfOut: new Int32Array(n.instances).fill(-1),
    instMac: new Uint8Array(n.instances * INST_MAC_STRIDE),
    instBorn: new Uint32Array(n.instances),
  };
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
