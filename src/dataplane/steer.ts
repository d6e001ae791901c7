/*
 * Steer: decide, for every parsed slot of a batch, where it goes (ARCHITECTURE.md §4, spec B.4).
 *
 * The input interface and source MAC name a logical port (the interface's only port, or the port
 * whose MAC is the frame's source). The port's role picks the case:
 *  - SF return port (an instance's egress on a forward path, ingress on a reverse path), and the
 *    flow state says the flow is on a path this port returns from: continue at the next hop, or end
 *    the chain.
 *  - Chain entry port (a classifier's logical port): classify (once per flow and in-port: the
 *    result is cached in the flow state), remember the frame's MACs, steer to hop 0.
 *  - SF return port the flow state does not know (state evicted, or an SF that rewrote the tuple):
 *    re-classify with the rules of the paths through this port, logical ports ignored (OVS does the
 *    same), and continue after this port's hop.
 *  - Anything else (ARP, unmatched IP, ports with no role, encapsulated frames for now): the
 *    learning switch (l2.ts): learned unicast to its interface, unknown unicast and broadcast
 *    flooded, a destination learned on the input interface dropped as 'hairpin'.
 *
 * Per-flow state lives in a FlowCache keyed by the CANONICAL 5-tuple + VLAN, so both directions of
 * a flow share one entry (the API refuses overlapping classifiers across chains, so a 5-tuple
 * belongs to one chain), in the cache's own record of the entry (layout below), so one lookup
 * finds key and state together and a known flow reads a single cache line of them: for each
 * orientation (which endpoint sends) the classification (rule, hence path, and the logical in-port,
 * or "no chain"), the MACs seen at chain entry, and one instance per chain hop, shared by the
 * forward and reverse paths (a symmetric chain crosses the same instances both ways). Sticky beats
 * hashing: an instance is reused while it is still a member of the hop's group, so adding an
 * instance moves no flow, removing one moves only its flows, and weight 0 drains (the Maglev table,
 * used only for new choices, skips it). An entry validated against an older table generation is
 * re-validated on first use: its classifications are redone and instance indices re-born since
 * then are forgotten (instBorn); kept instances are found again by group if the chain changed shape.
 *
 * Fragments: a first fragment records its flow entry in a FragmentTable (addresses, protocol, IP
 * id, VLAN); later fragments follow that decision. A later fragment seen first is classified and
 * hashed on L3 fields alone, without creating flow state.
 *
 * Output per slot: b.out (interface, OUT_FLOOD or OUT_DROP), b.path/b.hop/b.flow, and the
 * SteerState scratch rows the rewrite stage and the tracer read (verdict, instance, rule, MACs to
 * restore). Drops set b.drop and count a reason; nothing throws.
 *
 * Cost (bench/pipeline.ts): one pass over the batch; a known flow costs the lookup (hash, one
 * bucket line, one record line) and steerKnown's straight line, with steerKnown and steerChain out
 * of line so that the lookup's helpers fit V8's inlining budget of steerBatch.
 */
import { classify } from '../classifier/lookup.js';
import { endpointsReversed, FLOW_COLD, FLOW_HOT, FLOW_RECORD_WORDS, FlowCache, FragmentTable } from '../classifier/flowcache.js';
import { hashFlow, LB_PORT_BITS, type FlowHasher } from '../hash/flowhash.js';
import { BATCH, FRAG_FIRST, FRAG_LATER, FRAG_NONE, OUT_DROP, OUT_FLOOD, type Batch } from '../packet/batch.js';
import { Ctr, Drop, type Counters } from '../packet/counters.js';
import { MacTable } from './l2.js';
import { MAX_HOPS, RULE_MAC_STRIDE, type Tables } from './tables.js';

/** Per-slot verdicts (SteerState.verdict). */
export const V_L2 = 0;
export const V_FLOOD = 1;
export const V_HOP = 2;
export const V_END = 3;
export const V_DROP = 4;

/*
 * Flow state: the FlowCache's own record of the entry (flowcache.ts), after its key, so a hit finds
 * key and state together. Int32 words of the record (int16 and byte views of the same memory reach
 * the packed fields); everything a packet of a known flow reads is on the key's cache line:
 *   [R_GEN]          table generation the entry was last validated against
 *   [R_SERIAL]       bumped whenever the entry starts a new flow (fragment records check it)
 *   [R_RULE + o]     classification of orientation o: rule index, RULE_NONE or RULE_UNKNOWN
 *   (int16 H_INPORT + o) logical port orientation o was classified at (-1: at an SF port)
 *   [R_FLAGS]        bit o: the MACs of orientation o are recorded; F_KEPT: instances survived a
 *                    re-validation, so a hop's choice may sit at another position
 *   (int16 H_INST + chain hop) MAX_HOPS instance indices, -1 = not chosen yet
 * and on its second line (read at chain entry and end only):
 *   (bytes B_MACS + 12*o) the MACs (dst, src) orientation o carried at chain entry
 */
const REC = FLOW_RECORD_WORDS;
const R_GEN = FLOW_HOT;
const R_SERIAL = FLOW_HOT + 1;
const R_RULE = FLOW_HOT + 2;
const H_INPORT = (FLOW_HOT + 4) * 2;
const R_FLAGS = FLOW_HOT + 5;
const F_KEPT = 1 << 8;
const H_INST = (FLOW_HOT + 6) * 2;
const B_MACS = FLOW_COLD * 4;
const RULE_NONE = -1;
const RULE_UNKNOWN = -2;

const MACS = 12;

export interface SteerOptions {
  flowCapacity?: number;
  fragmentCapacity?: number;
  macCapacity?: number;
  macAgeMs?: number;
  hash?: FlowHasher;
}

export const DEFAULT_FLOW_STATE_CAPACITY = 1 << 17;

/** Everything steer keeps between batches (one per engine) plus its per-slot output rows. */
export class SteerState {
  readonly flows: FlowCache;
  readonly frags: FragmentTable;
  readonly l2: MacTable;
  readonly hash: FlowHasher;
  /** Packets steered to each instance (index = instance index). */
  instancePackets: Float64Array;

  /** The flow cache's records (flow state layout above), with int16 and byte views of the same memory. */
  readonly rec: Int32Array;
  readonly rec16: Int16Array;
  readonly rec8: Uint8Array;
  private nextSerial = 0;

  // fragment record payload
  readonly fragFlow: Int32Array;
  readonly fragSerial: Int32Array;
  readonly fragOrient: Uint8Array;

  // per-slot outputs
  readonly verdict = new Uint8Array(BATCH);
  readonly slotInst = new Int32Array(BATCH);
  readonly slotRule = new Int32Array(BATCH);
  readonly slotMacs = new Uint8Array(BATCH * MACS);
  readonly slotHasMacs = new Uint8Array(BATCH);
  /** Flow key hash of a slot that missed, for its insert. */
  readonly slotHash = new Int32Array(BATCH);

  constructor(opts: SteerOptions = {}) {
    this.flows = new FlowCache(opts.flowCapacity ?? DEFAULT_FLOW_STATE_CAPACITY);
    this.frags = new FragmentTable(opts.fragmentCapacity);
    this.l2 = new MacTable(opts.macCapacity, opts.macAgeMs);
    this.hash = opts.hash ?? hashFlow;
    this.instancePackets = new Float64Array(16);
    const records = this.flows.records;
    this.rec = records;
    this.rec16 = new Int16Array(records.buffer);
    this.rec8 = new Uint8Array(records.buffer);
    const fcap = this.frags.capacity;
    this.fragFlow = new Int32Array(fcap);
    this.fragSerial = new Int32Array(fcap);
    this.fragOrient = new Uint8Array(fcap);
  }

  /** Set the coarse clock of every table (once per batch). */
  setNow(ms: number): void {
    this.flows.now = ms;
    this.frags.now = ms;
    this.l2.now = ms;
  }

  /** Make room for `n` instance counters (configure time, on publish). */
  ensureInstances(n: number): void {
    if (n <= this.instancePackets.length) return;
    const grown = new Float64Array(Math.max(n, this.instancePackets.length * 2));
    grown.set(this.instancePackets);
    this.instancePackets = grown;
  }

  /** A fresh entry for slot i's flow (orientation o, key hash in slotHash), payload reset. */
  newFlow(b: Batch, i: number, o: number, generation: number): number {
    const e = this.flows.insertHashed(this.slotHash[i], b, i, b.vlan[i], true, o === 1);
    const r = recordAt(e);
    const rec = this.rec;
    rec[r + R_GEN] = generation;
    rec[r + R_SERIAL] = ++this.nextSerial | 0;
    rec[r + R_RULE] = RULE_UNKNOWN;
    rec[r + R_RULE + 1] = RULE_UNKNOWN;
    rec[r + H_INPORT / 2] = -1; // both int16 in-ports -1
    rec[r + R_FLAGS] = 0;
    for (let w = r + H_INST / 2; w < r + (H_INST + MAX_HOPS) / 2; w++) rec[w] = -1; // instances -1
    return e;
  }

  /** Bring an entry validated against an older generation up to date (see the design comment). */
  revalidate(t: Tables, e: number): void {
    const r = recordAt(e);
    const old = this.rec[r + R_GEN];
    this.rec[r + R_RULE] = RULE_UNKNOWN;
    this.rec[r + R_RULE + 1] = RULE_UNKNOWN;
    const base = r * 2 + H_INST;
    let kept = 0;
    for (let h = base; h < base + MAX_HOPS; h++) {
      const k = this.rec16[h];
      if (k >= 0 && (k >= t.instanceCount || t.instBorn[k] > old)) this.rec16[h] = -1;
      else if (k >= 0) kept = F_KEPT;
    }
    this.rec[r + R_FLAGS] = (this.rec[r + R_FLAGS] & ~F_KEPT) | kept;
    this.rec[r + R_GEN] = t.generation;
  }
}

/** First int32 word of flow entry e's record in SteerState.rec. */
function recordAt(e: number): number {
  return e * REC;
}

/** Copy an Ethernet header's two MACs (12 bytes) without making views. */
export function copyMacs(from: Uint8Array, fo: number, to: Uint8Array, tof: number): void {
  for (let k = 0; k < MACS; k++) to[tof + k] = from[fo + k];
}

/** Drop slot i for `reason` (counted); later stages skip it. Rewrite uses it too. */
export function dropSlot(b: Batch, s: SteerState, c: Counters, i: number, reason: number): void {
  b.drop[i] = reason;
  b.out[i] = OUT_DROP;
  s.verdict[i] = V_DROP;
  c.drops[reason]++;
  c.events[Ctr.dropped]++;
}

/** Learning-switch delivery of slot i (arrived on interface f) to the MAC hi:lo. */
function switchTo(b: Batch, s: SteerState, c: Counters, i: number, f: number, hi: number, lo: number): void {
  if ((hi & 0x100) !== 0) {
    s.verdict[i] = V_FLOOD;
    b.out[i] = OUT_FLOOD;
    c.events[Ctr.flooded]++;
    return;
  }
  const k = s.l2.lookup(b.vlan[i], hi, lo);
  if (k < 0) {
    s.verdict[i] = V_FLOOD;
    b.out[i] = OUT_FLOOD;
    c.events[Ctr.flooded]++;
  } else if (k === f) {
    dropSlot(b, s, c, i, Drop.hairpin);
  } else {
    s.verdict[i] = V_L2;
    b.out[i] = k;
  }
}

function learnSource(b: Batch, s: SteerState, i: number, f: number): void {
  const at = b.start[i] + 6;
  const d = b.data;
  if ((d[at] & 1) === 0) s.l2.learn(b.vlan[i], (d[at] << 8) | d[at + 1], b.view.getUint32(at + 2), f);
}

function switchSlot(b: Batch, s: SteerState, c: Counters, i: number, f: number): void {
  learnSource(b, s, i, f);
  const at = b.start[i];
  c.events[Ctr.unclassified]++;
  switchTo(b, s, c, i, f, (b.data[at] << 8) | b.data[at + 1], b.view.getUint32(at + 2));
}

/** Slot i goes to instance `inst` at hop index k of path p (classified by rule r). */
function toInstance(t: Tables, b: Batch, s: SteerState, i: number, p: number, k: number, r: number, inst: number): void {
  b.path[i] = p;
  b.hop[i] = k;
  b.out[i] = t.pathReverse[p] === 1 ? t.instIfOut[inst] : t.instIfIn[inst];
  s.slotRule[i] = r;
  s.verdict[i] = V_HOP;
  s.slotInst[i] = inst;
  s.instancePackets[inst]++;
}

/** Hop index of path p that logical port L returns from, or -1. */
function hopAt(t: Tables, L: number, p: number): number {
  const end = t.portSfBase[L] + t.portSfCount[L];
  for (let k = t.portSfBase[L]; k < end; k++) if (t.sfPath[k] === p) return t.sfHop[k];
  return -1;
}

/** Instance for hop `hop` of path p: the flow's sticky choice if still valid, else Maglev. */
function chooseInstance(t: Tables, b: Batch, s: SteerState, i: number, e: number, p: number, hop: number): number {
  const g = t.hopGroup[hop];
  const inst = s.rec16;
  const base = recordAt(e) * 2 + H_INST;
  const at = base + t.hopChainHop[hop];
  const moved = e >= 0 && (s.rec[recordAt(e) + R_FLAGS] & F_KEPT) !== 0;
  if (e >= 0) {
    const k = inst[at];
    if (k >= 0 && t.instGroup[k] === g) return k;
    // After a chain update this group's choice may sit at another position: swap it here.
    if (moved) {
      for (let h = base; h < base + MAX_HOPS; h++) {
        const x = inst[h];
        if (x >= 0 && t.instGroup[x] === g) {
          inst[h] = k;
          inst[at] = x;
          return x;
        }
      }
    }
  }
  let mask = t.groupLbMask[g];
  if (b.frag[i] === FRAG_LATER) mask &= ~LB_PORT_BITS;
  const h = s.hash(b, i, mask, t.pathReverse[p] === 1);
  const k = t.maglev[t.groupMaglevBase[g] + (h & t.groupMaglevMask[g])];
  if (k >= 0 && e >= 0) {
    // Keep another group's remembered choice that occupies this position (a later hop needs it).
    const old = inst[at];
    if (moved && old >= 0) {
      for (let x = base; x < base + MAX_HOPS; x++) {
        if (inst[x] === -1) {
          inst[x] = old;
          break;
        }
      }
    }
    inst[at] = k;
  }
  return k;
}

/** Slot i (orientation o of flow entry e, -1 = none) continues on path p at hop index k (k = hop count: end of chain). */
function proceed(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, f: number, e: number, o: number, p: number, k: number, r: number): void {
  b.path[i] = p;
  b.flow[i] = e;
  s.slotRule[i] = r;
  if (k < t.pathHopCount[p]) {
    const hop = t.pathHopBase[p] + k;
    const inst = chooseInstance(t, b, s, i, e, p, hop);
    if (inst < 0) dropSlot(b, s, c, i, Drop.no_instance);
    else toInstance(t, b, s, i, p, k, r, inst);
    return;
  }
  // End of chain: restore the MACs seen at entry (else the rule's port MACs), deliver.
  s.verdict[i] = V_END;
  b.hop[i] = -1;
  const m = i * MACS;
  if (e >= 0 && (s.rec[recordAt(e) + R_FLAGS] & (1 << o)) !== 0) {
    copyMacs(s.rec8, recordAt(e) * 4 + B_MACS + o * MACS, s.slotMacs, m);
    s.slotHasMacs[i] = 1;
  } else if (t.ruleHasMacs[r] === 1) {
    copyMacs(t.ruleMacs, r * RULE_MAC_STRIDE, s.slotMacs, m);
    s.slotHasMacs[i] = 1;
  }
  const d = t.ruleDstPort[r];
  if (d >= 0) {
    b.out[i] = t.portIface[d];
    return;
  }
  const src = s.slotHasMacs[i] === 1 ? s.slotMacs : b.data;
  const at = s.slotHasMacs[i] === 1 ? m : b.start[i];
  const hi = (src[at] << 8) | src[at + 1];
  const lo = ((src[at + 2] << 24) | (src[at + 3] << 16) | (src[at + 4] << 8) | src[at + 5]) >>> 0;
  switchTo(b, s, c, i, f, hi, lo);
  if (s.verdict[i] !== V_DROP) s.verdict[i] = V_END;
}

/** Remember the first fragment's decision for the later fragments of its datagram. */
function recordFragment(b: Batch, s: SteerState, i: number, e: number, o: number): void {
  const fe = s.frags.insert(b, i, b.vlan[i]);
  s.fragFlow[fe] = e;
  s.fragSerial[fe] = s.rec[recordAt(e) + R_SERIAL];
  s.fragOrient[fe] = o;
}

/** Record orientation o of entry e as classified into rule r (or RULE_NONE) at logical port L. */
function setRule(s: SteerState, e: number, o: number, r: number, L: number): void {
  s.rec[recordAt(e) + R_RULE + o] = r;
  s.rec16[recordAt(e) * 2 + H_INPORT + o] = L;
}

/**
 * Slot i arrived on interface f from logical port L, which has a chain role; e is its flow entry
 * (-1: none, or a later fragment) in orientation o.
 */
function steerChain(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, f: number, L: number, e: number, o: number): void {
  const rec = s.rec;
  let early = false;
  const frag = b.frag[i];
  if (frag === FRAG_LATER) {
    const fe = s.frags.lookup(b, i, b.vlan[i]);
    if (fe >= 0 && rec[recordAt(s.fragFlow[fe]) + R_SERIAL] === s.fragSerial[fe]) {
      e = s.fragFlow[fe];
      o = s.fragOrient[fe];
      c.events[Ctr.fragments_followed]++;
    } else {
      early = true;
      c.events[Ctr.fragments_l3_only]++;
    }
  }
  let known = RULE_UNKNOWN;
  if (e >= 0) {
    if (rec[recordAt(e) + R_GEN] !== t.generation) s.revalidate(t, e);
    known = rec[recordAt(e) + R_RULE + o];
  }

  // 1. Returning from an SF on a path the flow state knows.
  if (known >= 0 && t.portSfCount[L] !== 0) {
    const p = t.rulePath[known];
    const h = hopAt(t, L, p);
    if (h >= 0) {
      proceed(t, b, s, c, i, f, e, o, p, h + 1, known);
      if (frag === FRAG_FIRST) recordFragment(b, s, i, e, o);
      return;
    }
  }

  // 2. Chain entry: classify once per flow and in-port.
  if (t.portEntry[L] !== 0) {
    let r: number;
    if (known !== RULE_UNKNOWN && s.rec16[recordAt(e) * 2 + H_INPORT + o] === L) {
      r = known;
    } else {
      r = classify(t.entryTable, b, i, L, early);
      if (e < 0 && !early) e = s.newFlow(b, i, o, t.generation);
      if (e >= 0) {
        setRule(s, e, o, r < 0 ? RULE_NONE : r, L);
        if (r >= 0) {
          copyMacs(b.data, b.start[i], s.rec8, recordAt(e) * 4 + B_MACS + o * MACS);
          rec[recordAt(e) + R_FLAGS] |= 1 << o;
        }
      }
    }
    if (r < 0) {
      switchSlot(b, s, c, i, f);
      return;
    }
    learnSource(b, s, i, f);
    c.events[Ctr.classified]++;
    proceed(t, b, s, c, i, f, e, o, t.rulePath[r], 0, r);
    if (frag === FRAG_FIRST && e >= 0) recordFragment(b, s, i, e, o);
    return;
  }

  // 3. Returning from an SF the flow state does not know: re-classify, logical ports ignored.
  const tb = t.portSfTable[L];
  const local = classify(t.sfTables[tb], b, i, -1, early);
  const r = local >= 0 ? t.sfTableRules[tb][local] : -1;
  const p = r >= 0 ? t.rulePath[r] : -1;
  const h = p >= 0 ? hopAt(t, L, p) : -1;
  if (h < 0) {
    switchSlot(b, s, c, i, f);
    return;
  }
  if (e < 0 && !early) e = s.newFlow(b, i, o, t.generation);
  if (e >= 0) setRule(s, e, o, r, -1);
  proceed(t, b, s, c, i, f, e, o, p, h + 1, r);
  if (frag === FRAG_FIRST && e >= 0) recordFragment(b, s, i, e, o);
}

/** Logical port of slot i: its interface's only port, or the one whose MAC is the frame's source (-1: none). */
function logicalPort(t: Tables, b: Batch, i: number): number {
  const f = b.port[i];
  const n = t.ifacePortCount[f];
  if (n === 1) return t.ifacePorts[t.ifacePortBase[f]];
  if (n === 0) return -1;
  const at = b.start[i] + 6;
  const hi = (b.data[at] << 8) | b.data[at + 1];
  const lo = b.view.getUint32(at + 2);
  for (let k = t.ifacePortBase[f]; k < t.ifacePortBase[f] + n; k++) {
    const q = t.ifacePorts[k];
    if (t.portMacHi[q] === hi && t.portMacLo[q] === lo) return q;
  }
  return -1;
}

/**
 * The common case in straight-line code: a flow the state knows (validated against this
 * generation, classified in this orientation, not a fragment), entering at the port it was
 * classified at or returning from an SF of its path, and going on to a hop whose remembered
 * instance is still in the hop's group. Returns false, having changed nothing, for anything else
 * (steerChain decides those; for these it would reach the same result through its general steps).
 */
function steerKnown(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, L: number, e: number, o: number): boolean {
  const rec = s.rec;
  const r = recordAt(e);
  if (b.frag[i] !== FRAG_NONE || rec[r + R_GEN] !== t.generation) return false;
  const rule = rec[r + R_RULE + o];
  if (rule < 0) return false;
  const p = t.rulePath[rule];
  let k = 0;
  if (t.portSfCount[L] !== 0) {
    k = hopAt(t, L, p) + 1;
    if (k === 0) return false;
  } else if (s.rec16[r * 2 + H_INPORT + o] !== L) {
    return false;
  }
  if (k >= t.pathHopCount[p]) return false;
  const hop = t.pathHopBase[p] + k;
  const inst = s.rec16[r * 2 + H_INST + t.hopChainHop[hop]];
  if (inst < 0 || t.instGroup[inst] !== t.hopGroup[hop]) return false;
  if (k === 0) {
    learnSource(b, s, i, b.port[i]);
    c.events[Ctr.classified]++;
  }
  toInstance(t, b, s, i, p, k, rule, inst);
  return true;
}

/**
 * Steer every slot of b with tables t. Chain traffic is looked up in the flow state; a known flow
 * takes steerKnown's straight line, anything else steerChain's general steps (which insert a new
 * flow with the hash of this lookup).
 */
export function steerBatch(t: Tables, b: Batch, s: SteerState, c: Counters): void {
  const n = b.count;
  const flows = s.flows;
  s.slotInst.fill(-1, 0, n);
  s.slotRule.fill(-1, 0, n);
  s.slotHasMacs.fill(0, 0, n);
  let hits = 0;
  let misses = 0;
  for (let i = 0; i < n; i++) {
    if (b.drop[i] !== 0) {
      s.verdict[i] = V_DROP;
      b.out[i] = OUT_DROP;
      continue;
    }
    const L = logicalPort(t, b, i);
    // Encapsulated frames (MPLS / NSH hand-off between switches) are switched plainly for now.
    if (L < 0 || b.ipVer[i] === 0 || b.encap[i] !== 0 || (t.portEntry[L] === 0 && t.portSfCount[L] === 0)) {
      switchSlot(b, s, c, i, b.port[i]);
      continue;
    }
    let e = -1;
    let o = 0;
    if (b.frag[i] !== FRAG_LATER) {
      // (A later fragment has no ports: steerChain finds its flow through the fragment table.)
      const swap = endpointsReversed(b, i);
      o = swap ? 1 : 0;
      e = flows.findSlot(b, i, b.vlan[i], true, swap);
      b.flow[i] = e;
      if (e < 0) {
        misses++;
        s.slotHash[i] = flows.lastHash;
      } else {
        hits++;
        if (steerKnown(t, b, s, c, i, L, e, o)) continue;
      }
    }
    steerChain(t, b, s, c, i, b.port[i], L, e, o);
  }
  c.events[Ctr.flow_cache_hits] += hits;
  c.events[Ctr.flow_cache_misses] += misses;
}
