/*
 * Flow state: what the data path remembers between batches (one SteerState per engine) and the
 * per-slot rows the stages hand each other. Steer (steer.ts) decides where a slot goes, select
 * (select.ts) picks the instance of a hop, execute (execute.ts) runs the node's action list; all
 * three read and write the same flow records and slot rows defined here.
 *
 * Per-flow state lives in a FlowCache keyed by the CANONICAL 5-tuple + VLAN, so both directions of
 * a flow share one entry (the API refuses overlapping classifiers across chains, so a 5-tuple
 * belongs to one chain), in the cache's own record of the entry (layout below), so one lookup
 * finds key and state together and a known flow reads a single cache line of them: for each
 * orientation (which endpoint sends) the classification (rule, hence path, and the logical in-port,
 * or "no chain"), the MACs seen at chain entry, and one instance per chain hop, shared by the
 * forward and reverse paths. The record is a cache of decisions that are functions of the flow and
 * the tables (select's hash is symmetric), so losing it moves no flow whose instances still exist.
 * An entry validated against an older table generation is re-validated on first use: its
 * classifications are redone and instance indices re-born since then are forgotten (instBorn);
 * kept instances are found again by group if the chain changed shape.
 */
import { FLOW_COLD, FLOW_HOT, FLOW_RECORD_WORDS, FlowCache, FragmentTable } from '../classifier/flowcache.js';
import { hashFlow, type FlowHasher } from '../hash/flowhash.js';
import { BATCH, OUT_DROP, type Batch } from '../packet/batch.js';
import { Ctr, type Counters } from '../packet/counters.js';
import { MacTable } from './l2.js';
import { MAX_HOPS, type Tables } from './tables.js';

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
export const R_GEN = FLOW_HOT;
export const R_SERIAL = FLOW_HOT + 1;
export const R_RULE = FLOW_HOT + 2;
export const H_INPORT = (FLOW_HOT + 4) * 2;
export const R_FLAGS = FLOW_HOT + 5;
export const F_KEPT = 1 << 8;
export const H_INST = (FLOW_HOT + 6) * 2;
export const B_MACS = FLOW_COLD * 4;
export const RULE_NONE = -1;
export const RULE_UNKNOWN = -2;

export const MACS = 12;

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
  /** Packets and bytes steered to each instance (index = instance index). */
  instancePackets: Float64Array;
  instanceBytes: Float64Array;
  /** Health probes back from each instance (probe.ts): the highest sequence number, and when (ms, the engine's clock). */
  probeSeq: Float64Array;
  probeAt: Float64Array;
  /** The coarse clock (ms), set once per batch. */
  now = 0;

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
  /** A graph hand-off: the source path whose end actions run before the slot's hop (-1: none). */
  readonly slotFrom = new Int32Array(BATCH);
  /** Orientation of the slot's flow entry (which endpoint sent it): where its entry MACs are in the record. */
  readonly slotOrient = new Uint8Array(BATCH);
  readonly slotRule = new Int32Array(BATCH);
  readonly slotMacs = new Uint8Array(BATCH * MACS);
  readonly slotHasMacs = new Uint8Array(BATCH);
  /** Flow key hash of each slot (steerBatch hashes the batch first), for its lookup and insert. */
  readonly slotHash = new Int32Array(BATCH);
  /** What the flow table's warm-up pass read (kept only so that its loads stay). */
  warmth = 0;

  constructor(opts: SteerOptions = {}) {
    this.flows = new FlowCache(opts.flowCapacity ?? DEFAULT_FLOW_STATE_CAPACITY);
    this.frags = new FragmentTable(opts.fragmentCapacity);
    this.l2 = new MacTable(opts.macCapacity, opts.macAgeMs);
    this.hash = opts.hash ?? hashFlow;
    this.instancePackets = new Float64Array(16);
    this.instanceBytes = new Float64Array(16);
    this.probeSeq = new Float64Array(16);
    this.probeAt = new Float64Array(16);
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
    this.now = ms;
    this.flows.now = ms;
    this.frags.now = ms;
    this.l2.now = ms;
  }

  /** Make room for `n` instance counters (configure time, on publish). */
  ensureInstances(n: number): void {
    if (n <= this.instancePackets.length) return;
    const size = Math.max(n, this.instancePackets.length * 2);
    this.instancePackets = grow(this.instancePackets, size);
    this.instanceBytes = grow(this.instanceBytes, size);
    this.probeSeq = grow(this.probeSeq, size);
    this.probeAt = grow(this.probeAt, size);
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

  /**
   * Count the flows of entries [from, to) used at or after `since` (flows.now's clock): into[k] += 1
   * for each hop of an entry that chose instance k, as the entry's generation knew k (an index
   * re-born since then is another instance: not counted). Off the per-packet path (flowcount.ts).
   */
  countFlows(t: Tables, from: number, to: number, since: number, into: Float64Array): void {
    const flows = this.flows;
    const rec16 = this.rec16;
    for (let e = from; e < to; e++) {
      if (!(flows.lastUsed(e) >= since)) continue;
      const gen = this.rec[recordAt(e) + R_GEN];
      const base = recordAt(e) * 2 + H_INST;
      for (let h = base; h < base + MAX_HOPS; h++) {
        const k = rec16[h];
        if (k >= 0 && k < t.instanceCount && k < into.length && t.instBorn[k] <= gen) into[k]++;
      }
    }
  }
}

/** A copy of `a` with room for n entries (the rest zero). */
export function grow(a: Float64Array, n: number): Float64Array<ArrayBuffer> {
  const g = new Float64Array(n);
  g.set(a);
  return g;
}

/** Slot i (at a hop of path p) goes to instance `inst`: its row, output interface, packet and byte counts. */
export function takeInstance(t: Tables, b: Batch, s: SteerState, i: number, p: number, inst: number): void {
  s.slotInst[i] = inst;
  b.out[i] = t.pathReverse[p] === 1 ? t.instIfOut[inst] : t.instIfIn[inst];
  s.instancePackets[inst]++;
  s.instanceBytes[inst] += b.len[i];
}

/** First int32 word of flow entry e's record in SteerState.rec. */
export function recordAt(e: number): number {
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

