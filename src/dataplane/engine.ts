/*
 * Engine: one data path instance (one per worker thread): its interfaces, one batch, the steer
 * state, and the breath loop (ARCHITECTURE.md §4, Snabb's breathe()).
 *
 *   breathe(): for each interface (round-robin start) rxBurst into the batch; whenever the batch is
 *              full (RX_BATCH frames: a few slots stay free for frames the data path makes), and
 *              once at the end, process it:
 *                parse -> steer -> select -> execute -> per-output tx index lists -> one txBurst per interface
 *
 * Tables are published by reference: publish() only parks the new generation; the next breath
 * applies it before its first batch (opening newly named interfaces, closing dropped ones), and the
 * batch functions receive the table reference read once. A swap is therefore atomic between
 * batches and never drops a frame. Interface indices are the table's (stable across generations).
 *
 * Hot path discipline: the stages are plain functions over the batch; tx index lists are one
 * Uint16Array per interface sized once; counters are typed-array increments. A tracer (replay,
 * explain) may be attached; it is the only code that builds objects per packet and costs one
 * branch per batch when absent. So may a stage clock (bench/pipeline.ts --stages): wall time per
 * stage, read around each stage call. The SF latency sampler (sf-latency.ts) costs two branches
 * per batch, and while samples are out one per interface burst.
 */
import { Batch, BATCH, OUT_FLOOD, OUT_FLOOD_HOSTS } from '../packet/batch.js';
import { Counters, Ctr, Drop, DROP_REASONS } from '../packet/counters.js';
import { DEFAULT_MTU, sysfsMtu } from './io/native.js';
import type { PortIO } from './io/portio.js';
import { parseBatch } from './parse.js';
import { executeBatch } from './execute.js';
import { grow, SteerState, V_DROP, V_END, V_FLOOD, V_HOP, type SteerOptions } from './flowstate.js';
import { selectBatch } from './select.js';
import { DEFAULT_SAMPLE_EVERY, HIST_STRIDE, SfLatency } from './sf-latency.js';
import { steerBatch } from './steer.js';
import type { Tables } from './tables.js';

export interface EngineOptions extends SteerOptions {
  /** Coarse clock in ms (flow LRU, MAC ageing); default Date.now. Replay passes frame time. */
  clock?: () => number;
  /** An interface's MTU; default: sysfs of this process's namespace (1500 when unreadable). */
  mtu?: (ifname: string) => number;
  /** One frame in N is a sampling point of the time inside each SF (sf-latency.ts; 0: off). Default 64. */
  sfLatencyEvery?: number;
  /** Its clock (ms, fractional); default performance.now. */
  sfLatencyClock?: () => number;
  /** Memory for the batch arena (Batch); default: its own. */
  arena?: Uint8Array;
}

/**
 * Frames received per batch: the rest of the BATCH slots stay free for the frames the data path
 * makes itself (ICMP errors; with taps, which copy at most one frame per frame since two tap groups
 * are never adjacent, only BATCH / 2 are received).
 */
export const RX_BATCH = BATCH - 16;

const INJECT_IDX = Uint16Array.from({ length: BATCH }, (_, i) => i);

export interface InterfaceStats {
  name: string;
  rxPackets: number;
  txPackets: number;
  drops: number;
  up: boolean;
}

/** Where a worker shares an engine's figures (Engine.copyFigures), and how much of each the last copy filled. */
export interface SharedFigures {
  instancePackets: Float64Array;
  instanceBytes: Float64Array;
  probeSeq: Float64Array;
  probeAt: Float64Array;
  sfLatency: Float64Array;
  ifRx: Float64Array;
  ifTx: Float64Array;
  instances: number;
  interfaces: number;
}

/** dst[0, n) := src[0, n), and dst[n, was) := 0. */
function copyZeroing(dst: Float64Array, src: Float64Array, n: number, was: number): void {
  for (let i = 0; i < n; i++) dst[i] = src[i];
  if (was > n) dst.fill(0, n, was);
}

export interface EngineStats {
  events: Float64Array;
  drops: Float64Array;
  /** Packets and bytes steered to each instance (index = Tables instance index). */
  instancePackets: Float64Array;
  instanceBytes: Float64Array;
  /** Health probes back from each instance: highest sequence number and when (ms; probe.ts). */
  probeSeq: Float64Array;
  probeAt: Float64Array;
  /** Time inside each SF: a histogram per instance (sf-latency.ts, HIST_STRIDE words each). */
  sfLatency: Float64Array;
  /** Index = engine port (Tables.interfaces index); a freed index has name ''. */
  interfaces: InterfaceStats[];
}

/** What happened to one slot in one batch (tracing only). */
export interface TraceStep {
  in: string;
  verdict: 'l2' | 'flood' | 'hop' | 'end' | 'drop';
  /** Drop reason name when verdict is 'drop'. */
  drop: string | null;
  chain: string | null;
  /** Matched (or re-matched) classifier, its rule index in the Tables (-1 = none), and whether it is the reverse-path rule. */
  classifier: string | null;
  rule: number;
  reverse: boolean;
  spi: number;
  /** 0-based hop index within the path, -1 when not at a hop. */
  hop: number;
  si: number;
  /** Port pair chosen at this hop. */
  instance: string | null;
  out: string[];
  /** The frame as it leaves (after execute). */
  frame: Uint8Array;
}

export type Tracer = (step: TraceStep) => void;

/** Sees the frames of the interfaces a capture is on: as received (rx) and as sent (tx, after execute). */
export type Capturer = (iface: number, dir: 'rx' | 'tx', frame: Uint8Array) => void;

/** The stages a stage clock times (Engine.setStageClock), in pipeline order. */
export const STAGES = ['rx', 'parse', 'steer', 'select', 'execute', 'tx'] as const;

export class Engine {
  readonly counters: Counters;
  private readonly open: (ifname: string) => PortIO;
  private readonly clock: () => number;
  private readonly mtuOf: (ifname: string) => number;
  private readonly batch: Batch;
  private readonly steer: SteerState;
  private tables: Tables | null = null;
  private pending: Tables | null = null;
  private ios: (PortIO | null)[] = [];
  private names: string[] = [];
  private txIdx: Uint16Array[] = [];
  private txCount = new Int32Array(0);
  private ifRx = new Float64Array(0);
  private ifTx = new Float64Array(0);
  private ifDrops = new Float64Array(0);
  /** Egress MTU per interface (read when the interface is attached): execute's limit for pushed encapsulations. */
  private ifMtu = new Int32Array(0);
  private rr = 0;
  private tracer: Tracer | null = null;
  private capturer: Capturer | null = null;
  /** 1 for the interfaces the capturer is on (by interface index). */
  private captured: Uint8Array = new Uint8Array(0);
  private stageClock: Float64Array | null = null;
  private injectBatch: Batch | null = null;
  /** Time inside each SF (sf-latency.ts): sampled after select, matched after parse while samples are out. */
  readonly latency: SfLatency;

  constructor(open: (ifname: string) => PortIO, counters?: Counters, opts: EngineOptions = {}) {
    this.open = open;
    this.counters = counters ?? new Counters();
    this.clock = opts.clock ?? Date.now;
    this.mtuOf = opts.mtu ?? sysfsMtu;
    this.steer = new SteerState(opts);
    this.batch = new Batch(opts.arena);
    this.latency = new SfLatency(opts.sfLatencyEvery ?? DEFAULT_SAMPLE_EVERY, opts.sfLatencyClock);
  }

  /** Park a new table generation; the next breath applies it before its first batch. */
  publish(t: Tables): void {
    this.pending = t;
  }

  /** The generation in force (null before the first breath after publish). */
  get current(): Tables | null {
    return this.tables;
  }

  /** Attach (or detach with null) a per-slot tracer. */
  setTracer(tracer: Tracer | null): void {
    this.tracer = tracer;
  }

  /**
   * Attach (or detach with null) a capturer for the interfaces flagged 1 in `on` (by interface
   * index; the frames handed over are views into the batch, valid during the call). One branch
   * per batch, and per transmitting interface, when none is attached.
   */
  setCapture(capturer: Capturer | null, on: Uint8Array = new Uint8Array(0)): void {
    this.capturer = capturer;
    this.captured = on;
  }

  /**
   * Attach (or detach with null) a stage clock: ms of wall time spent in each of STAGES are added
   * to spent[0..5] (rx: the rxBurst calls; parse includes the rx counters; tx: tx lists, txBurst
   * calls, tx counters, and the tracer when one is attached). A few clock reads per batch while
   * attached; one branch per batch when not.
   */
  setStageClock(spent: Float64Array | null): void {
    this.stageClock = spent;
  }

  private apply(t: Tables): void {
    const n = Math.max(t.interfaces.length, this.names.length);
    if (n > this.ios.length) {
      this.ios.length = n;
      this.ios.fill(null, this.names.length);
      for (let f = this.txIdx.length; f < n; f++) this.txIdx.push(new Uint16Array(BATCH));
      this.txCount = new Int32Array(n);
      this.ifRx = grow(this.ifRx, n);
      this.ifTx = grow(this.ifTx, n);
      this.ifDrops = grow(this.ifDrops, n);
      const mtu = new Int32Array(n).fill(DEFAULT_MTU);
      mtu.set(this.ifMtu.subarray(0, Math.min(n, this.ifMtu.length)));
      this.ifMtu = mtu;
    }
    let changed = false;
    for (let f = 0; f < n; f++) {
      const want = t.interfaces[f] ?? '';
      const have = this.names[f] ?? '';
      if (want === have && (want === '' || this.ios[f] !== null)) continue; // same, or retry a failed open
      if (have !== '' && want !== have) changed = true;
      this.ios[f]?.close();
      this.ios[f] = null;
      this.ifRx[f] = this.ifTx[f] = this.ifDrops[f] = 0;
      this.names[f] = want;
      if (want !== '') {
        this.ifMtu[f] = this.mtuOf(want);
        try {
          this.ios[f] = this.open(want);
        } catch {
          // Unavailable interface: stays closed (reported down in stats, frames to it dropped
          // 'port_down') until a later publish retries it.
        }
      }
    }
    // An interface index changed meaning (not merely a new one): forget learned MACs.
    if (changed) this.steer.l2.clear();
    const prev = this.tables;
    this.steer.ensureInstances(t.instanceCount);
    for (let k = 0; k < t.instanceCount; k++) {
      if (prev && prev.instanceKeys[k] !== t.instanceKeys[k]) this.steer.instancePackets[k] = this.steer.instanceBytes[k] = 0;
    }
    this.latency.apply(t, (k) => prev !== null && prev.instanceKeys[k] !== t.instanceKeys[k]);
    this.tables = t;
    this.counters.events[Ctr.table_generations]++;
  }

  /** One pass over every interface; returns the number of frames processed (0 = idle). */
  breathe(): number {
    if (this.pending !== null) {
      const t = this.pending;
      this.pending = null;
      this.apply(t);
    }
    const t = this.tables;
    if (t === null) return 0;
    this.counters.events[Ctr.breaths]++;
    const b = this.batch;
    // Tables with taps copy up to one frame per received frame into the same batch: leave half free.
    const limit = t.tapInst.length > 0 ? BATCH / 2 : RX_BATCH;
    const ios = this.ios;
    const n = ios.length;
    let total = 0;
    b.reset();
    const clock = this.stageClock;
    for (let k = 0; k < n; k++) {
      const f = (this.rr + k) % n;
      const io = ios[f];
      if (io === null) continue;
      const t0 = clock === null ? 0 : performance.now();
      const got = io.rxBurst(b, f, limit - b.count);
      if (clock !== null) lap(clock, 0, t0);
      if (got > 0 && this.latency.out !== 0) this.latency.received(f, b.count - got, b.count);
      this.ifRx[f] += got;
      if (b.count === limit) {
        total += this.process(t);
        b.reset();
      }
    }
    if (b.count > 0) total += this.process(t);
    this.rr = n > 0 ? (this.rr + 1) % n : 0;
    return total;
  }

  private process(t: Tables): number {
    const b = this.batch;
    const c = this.counters;
    const s = this.steer;
    const clock = this.stageClock;
    let at = clock === null ? 0 : performance.now();
    s.setNow(this.clock());
    let bytes = 0;
    for (let i = 0; i < b.count; i++) bytes += b.len[i];
    c.events[Ctr.batches]++;
    c.events[Ctr.rx_packets] += b.count;
    c.events[Ctr.rx_bytes] += bytes;
    if (this.capturer !== null) {
      for (let i = 0; i < b.count; i++) if (this.captured[b.port[i]] === 1) this.capturer(b.port[i], 'rx', b.frame(i));
    }
    parseBatch(b, c);
    if (this.latency.nRanges !== 0) this.latency.afterParse(b);
    if (clock !== null) at = lap(clock, 1, at);
    steerBatch(t, b, s, c);
    if (clock !== null) at = lap(clock, 2, at);
    selectBatch(t, b, s, c);
    this.latency.afterSelect(t, b, s);
    if (clock !== null) at = lap(clock, 3, at);
    executeBatch(t, b, s, c, this.ifMtu);
    if (clock !== null) at = lap(clock, 4, at);
    if (this.tracer !== null) this.trace(t, this.tracer);
    this.transmit(t);
    if (clock !== null) lap(clock, 5, at);
    return b.count;
  }

  private transmit(t: Tables): void {
    const b = this.batch;
    const c = this.counters;
    const ios = this.ios;
    const n = ios.length;
    const txCount = this.txCount;
    const txIdx = this.txIdx;
    txCount.fill(0);
    for (let i = 0; i < b.count; i++) {
      if (b.drop[i] !== 0) {
        this.ifDrops[b.port[i]]++;
        continue;
      }
      const o = b.out[i];
      if (o >= 0) {
        if (ios[o] !== null) txIdx[o][txCount[o]++] = i;
        else this.dropAt(o, Drop.port_down, 1);
      } else if (o === OUT_FLOOD) {
        const from = b.port[i];
        // (never onto the underlay: frames cross between hosts only in tunnels, vxlan.ts)
        for (let f = 0; f < n; f++) if (f !== from && f !== t.underlayIface && ios[f] !== null) txIdx[f][txCount[f]++] = i;
      } else if (o === OUT_FLOOD_HOSTS) {
        const from = b.port[i];
        for (let f = 0; f < n; f++) if (f !== from && ios[f] !== null && t.ifaceFlood[f] === 1) txIdx[f][txCount[f]++] = i;
      }
    }
    for (let f = 0; f < n; f++) {
      const k = txCount[f];
      if (k === 0) continue;
      const io = ios[f]!;
      if (!io.isUp()) {
        this.dropAt(f, Drop.port_down, k);
        continue;
      }
      const idx = txIdx[f];
      const sent = io.txBurst(b, idx, k);
      if (this.capturer !== null && this.captured[f] === 1) for (let j = 0; j < sent; j++) this.capturer(f, 'tx', b.frame(idx[j]));
      let bytes = 0;
      for (let j = 0; j < sent; j++) bytes += b.len[idx[j]];
      this.ifTx[f] += sent;
      c.events[Ctr.tx_packets] += sent;
      c.events[Ctr.tx_bytes] += bytes;
      if (sent < k) this.dropAt(f, Drop.tx_failed, k - sent);
    }
  }

  /**
   * Send frames made elsewhere (health probes, probe.ts) out of interface `name` as they are, outside
   * any batch; returns how many were sent (0 when the interface is not attached or down).
   */
  inject(name: string, frames: Uint8Array[]): number {
    const f = this.names.indexOf(name);
    const io = f >= 0 ? this.ios[f] : null;
    if (!io || !io.isUp()) return 0;
    const b = (this.injectBatch ??= new Batch());
    b.reset();
    for (const frame of frames.slice(0, BATCH)) b.push(frame, f);
    const sent = io.txBurst(b, INJECT_IDX, b.count);
    this.ifTx[f] += sent;
    return sent;
  }

  private dropAt(f: number, reason: number, k: number): void {
    this.counters.drops[reason] += k;
    this.counters.events[Ctr.dropped] += k;
    this.ifDrops[f] += k;
  }

  private trace(t: Tables, tracer: Tracer): void {
    const b = this.batch;
    const s = this.steer;
    for (let i = 0; i < b.count; i++) {
      const v = s.verdict[i];
      const p = b.path[i];
      const r = s.slotRule[i];
      const inChain = v === V_HOP || v === V_END || (v === V_DROP && p >= 0);
      const hop = v === V_HOP ? b.hop[i] : -1;
      const out: string[] = [];
      if (b.out[i] >= 0) out.push(this.names[b.out[i]]);
      else if (b.out[i] === OUT_FLOOD) this.names.forEach((name, f) => f !== b.port[i] && this.ios[f] && out.push(name));
      else if (b.out[i] === OUT_FLOOD_HOSTS) this.names.forEach((name, f) => f !== b.port[i] && this.ios[f] && t.ifaceFlood[f] === 1 && out.push(name));
      tracer({
        in: this.names[b.port[i]],
        verdict: v === V_HOP ? 'hop' : v === V_END ? 'end' : v === V_DROP ? 'drop' : v === V_FLOOD ? 'flood' : 'l2',
        drop: v === V_DROP ? DROP_REASONS[b.drop[i]] : null,
        chain: inChain ? t.chainNames[t.pathChain[p]] : null,
        classifier: inChain && r >= 0 ? t.rules[r].classifier : null,
        rule: inChain ? r : -1,
        reverse: inChain && t.pathReverse[p] === 1,
        spi: inChain ? t.pathSpi[p] : 0,
        hop,
        si: hop >= 0 ? t.hopSi[t.pathHopBase[p] + hop] : 0,
        instance: v === V_HOP ? t.instanceNames[s.slotInst[i]].portPair : null,
        out,
        frame: b.frame(i),
      });
    }
  }

  /**
   * Copy the per-instance and per-interface figures into `to` (a worker's shared memory) without
   * allocating: a worker copies whenever it goes idle, at a low packet rate after every batch.
   * Entries past this table's instances and interfaces are zeroed where an earlier copy wrote them.
   */
  copyFigures(to: SharedFigures): void {
    const k = Math.min(this.tables?.instanceCount ?? 0, to.instancePackets.length);
    copyZeroing(to.instancePackets, this.steer.instancePackets, k, to.instances);
    copyZeroing(to.instanceBytes, this.steer.instanceBytes, k, to.instances);
    copyZeroing(to.probeSeq, this.steer.probeSeq, k, to.instances);
    copyZeroing(to.probeAt, this.steer.probeAt, k, to.instances);
    const h = Math.min(k * HIST_STRIDE, to.sfLatency.length);
    copyZeroing(to.sfLatency, this.latency.hist, h, Math.min(to.instances * HIST_STRIDE, to.sfLatency.length));
    to.instances = k;
    const n = Math.min(this.names.length, to.ifRx.length);
    copyZeroing(to.ifRx, this.ifRx, n, to.interfaces);
    copyZeroing(to.ifTx, this.ifTx, n, to.interfaces);
    to.interfaces = n;
  }

  stats(): EngineStats {
    return {
      events: this.counters.events.slice(),
      drops: this.counters.drops.slice(),
      instancePackets: this.steer.instancePackets.slice(0, this.tables?.instanceCount ?? 0),
      instanceBytes: this.steer.instanceBytes.slice(0, this.tables?.instanceCount ?? 0),
      probeSeq: this.steer.probeSeq.slice(0, this.tables?.instanceCount ?? 0),
      probeAt: this.steer.probeAt.slice(0, this.tables?.instanceCount ?? 0),
      sfLatency: this.latency.hist.slice(0, (this.tables?.instanceCount ?? 0) * HIST_STRIDE),
      interfaces: this.names.map((name, f) => ({
        name,
        rxPackets: this.ifRx[f],
        txPackets: this.ifTx[f],
        drops: this.ifDrops[f],
        up: this.ios[f]?.isUp() ?? false,
      })),
    };
  }

  /**
   * Flow entries [from, from + n) used within the last idleMs (the engine's clock): into[k] += 1 per
   * hop that chose instance k (flowcount.ts scans the table in such slices, between batches).
   * Returns the entry after the slice, -1 at the end of the table.
   */
  countFlows(from: number, n: number, idleMs: number, into: Float64Array): number {
    const end = this.steer.flows.capacity;
    const to = Math.min(from + n, end);
    if (this.tables !== null) this.steer.countFlows(this.tables, from, to, this.clock() - idleMs, into);
    return to < end ? to : -1;
  }

  close(): void {
    for (const io of this.ios) io?.close();
    this.ios = this.ios.map(() => null);
  }
}

/** Add the time since `since` to spent[k]; returns the clock reading. */
function lap(spent: Float64Array, k: number, since: number): number {
  const now = performance.now();
  spent[k] += now - since;
  return now;
}

