/*
 * worker: one data path (an Engine) driven by readiness, as a worker thread or in-process.
 *
 * The breath loop: when any port signals readiness, run breaths (engine.breathe()) until one
 * returns 0 — at most BREATHS_PER_TURN per event-loop turn, so messages (table publications,
 * close) are handled between turns — then arm every port's one-shot readiness again and sleep.
 * An idle data path sleeps in epoll and uses no CPU. With busy polling (busyPollUs) the loop keeps
 * polling instead of sleeping for that long after the last received frame: a sleeping thread is
 * woken by an IPI, which an idle virtual CPU can take milliseconds to receive (measured here: 1.9 ms).
 *
 * Ports: the engine opens interfaces by name through `open`, which returns an AttachedPort at
 * once; the packet socket underneath arrives separately (`attach` messages carry fds the main
 * thread opened, see runtime.ts, which the backend adopts here). A backend without worker threads
 * (cap) runs here on the main thread and opens in-process, retrying a missing interface every
 * second. A port whose interface vanished is reported (`lost`) and re-attached when the owner has
 * a new fd.
 *
 * Health probes from the main thread arrive in a mailbox in shared memory (mailbox.ts), drained at
 * every turn of the loop (a polling one takes a turn every POLL_TURN_MS); a message wakes a
 * sleeping worker for them.
 *
 * Statistics live in one SharedArrayBuffer per worker (StatsLayout): the engine's Counters
 * directly, and per-instance (SF latency histograms too) and per-interface figures copied by
 * engine.copyFigures() at most every STATS_EVERY_MS while busy and whenever the loop goes idle;
 * live flows per instance counted about once a second between batches (flowcount.ts). The main
 * thread reads them without messages.
 */
import { setPriority } from 'node:os';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Counters } from '../packet/counters.js';
import { Engine, type SharedFigures, type TraceStep } from './engine.js';
import { COUNT_EVERY_MS, FlowCounter } from './flowcount.js';
import { FrameMailbox } from './mailbox.js';
import { HIST_STRIDE } from './sf-latency.js';
import { AttachedPort } from './io/attached.js';
import type { Backend } from './io/backend.js';
import type { RingOptions } from './io/native.js';
import { backendNamed, type BackendName } from './io/registry.js';
import type { Tables } from './tables.js';
import { compileMatch, dissect, type Dissected, type FrameMatch } from './tracefilter.js';

export const MAX_INTERFACES = 1024;
export const MAX_INSTANCES = 16384;
/** Instances whose SF latency histogram is shared (sf-latency.ts). */
export const MAX_LATENCY_INSTANCES = 1024;
const BREATHS_PER_TURN = 64;
const STATS_EVERY_MS = 100;
const RETRY_MS = 1000;
/** Busy polling: longest stretch of polling between two event-loop turns (ms). */
const POLL_TURN_MS = 1;
/** Busy polling: empty polls between two reads of the clock. */
const CLOCK_EVERY = 16;

/** Where each figure lives in a worker's SharedArrayBuffer (byte offsets; all Float64). */
export class StatsLayout {
  readonly ioCount: number;
  readonly counters = 0;
  readonly instances = Counters.BYTES;
  readonly instanceBytes = this.instances + MAX_INSTANCES * 8;
  readonly probeSeq = this.instanceBytes + MAX_INSTANCES * 8;
  readonly probeAt = this.probeSeq + MAX_INSTANCES * 8;
  readonly ifRx = this.probeAt + MAX_INSTANCES * 8;
  readonly ifTx = this.ifRx + MAX_INTERFACES * 8;
  /** The table generation the engine runs (-1: none yet). */
  readonly generation = this.ifTx + MAX_INTERFACES * 8;
  /** Live flows per instance (flowcount.ts). */
  readonly instanceFlows = this.generation + 8;
  readonly sfLatency = this.instanceFlows + MAX_INSTANCES * 8;
  /** Health probes to send (mailbox.ts). */
  readonly mailbox = this.sfLatency + MAX_LATENCY_INSTANCES * HIST_STRIDE * 8;
  readonly io = this.mailbox + FrameMailbox.BYTES;
  readonly bytes: number;

  constructor(ioCount: number) {
    this.ioCount = ioCount;
    this.bytes = this.io + MAX_INTERFACES * ioCount * 8;
  }
}

/** main -> worker */
export type ToWorker =
  | { type: 'attach'; name: string; fd: number; rx: boolean; epoch: number }
  | { type: 'publish'; tables: Tables }
  /** Send these frames out of these interfaces as they are (health probes the mailbox had no room for). */
  | { type: 'inject'; frames: { iface: string; frame: Uint8Array }[] }
  /** Frames wait in the mailbox of a worker that went to sleep. */
  | { type: 'wake' }
  /** Follow frames matching `match` (tracefilter.ts): post up to `limit` of their trace steps. */
  | { type: 'trace'; id: number; match: string; limit: number }
  | { type: 'untrace'; id: number }
  /** Copy up to `limit` frames interface `iface` receives or sends (those matching `match`, tracefilter.ts; '': all). */
  | { type: 'capture'; id: number; iface: string; limit: number; match: string }
  | { type: 'uncapture'; id: number }
  /** Fault injection (tests, benches): keep the thread busy for `ms`, as a hung worker would be. */
  | { type: 'stall'; ms: number }
  | { type: 'close' };

/** worker -> main */
export type FromWorker =
  | { type: 'live'; generation: number }
  | { type: 'lost'; name: string; epoch: number }
  | { type: 'log'; message: string }
  | { type: 'error'; message: string }
  | { type: 'traced'; id: number; step: TraceStep }
  | { type: 'captured'; id: number; dir: 'rx' | 'tx'; timeNs: number; frame: Uint8Array }
  | { type: 'closed' };

export interface WorkerConfig {
  index: number;
  backend: BackendName;
  sab: SharedArrayBuffer;
  /** Names of the backend's per-port I/O counters (Backend.load; empty for cap). */
  ioNames: readonly string[];
  ring?: RingOptions;
  /** Keep polling this long (µs) after the last received frame before sleeping (0: sleep at once). */
  busyPollUs?: number;
  /** The arena its sockets share (ThreadedIO.arenas): the batch's memory. */
  arena?: number | null;
}

export class DataplaneWorker {
  readonly engine: Engine;
  private readonly cfg: WorkerConfig;
  private readonly backend: Backend;
  private readonly layout: StatsLayout;
  private readonly post: (m: FromWorker) => void;
  private readonly ports = new Map<string, AttachedPort>();
  private readonly fds = new Map<string, { fd: number; rx: boolean }>();
  /** The runtime's attach epoch of each interface's current fd (echoed in loss reports). */
  private readonly epochs = new Map<string, number>();
  /** In-process backend: interfaces that failed to open (logged once). */
  private readonly missing = new Set<string>();
  /** The per-instance and per-interface figures in shared memory (Engine.copyFigures). */
  private readonly figures: SharedFigures;
  private readonly generation: Float64Array;
  private tables: Tables | null = null;
  /** Traces on (by id): what they follow and how many more steps they may be sent. */
  private readonly traces = new Map<number, { match: FrameMatch; left: number }>();
  /** Captures on (by id): their interface, filter (null: every frame) and how many more frames they may be sent. */
  private readonly captures = new Map<number, { iface: string; match: FrameMatch | null; left: number }>();
  private liveWanted = -1;
  private scheduled = false;
  private closing = false;
  private syncedAt = 0;
  /** Busy polling: the loop polls instead of sleeping until then (performance.now() ms). */
  private pollUntil = 0;
  private readonly busyPollMs: number;
  private retry: NodeJS.Timeout | null = null;
  private readonly flows: FlowCounter;
  private readonly mailbox: FrameMailbox;
  private readonly injectFn = (iface: string, frame: Uint8Array): void => void this.engine.inject(iface, [frame]);
  /** Wakes an idle loop for the flow count (flowcount.ts). */
  private readonly countTimer: NodeJS.Timeout;
  private readonly runFn = (): void => this.run();
  private readonly wakeFn = (): void => this.wake();

  constructor(cfg: WorkerConfig, post: (m: FromWorker) => void) {
    this.cfg = cfg;
    this.backend = backendNamed(cfg.backend);
    this.post = post;
    this.layout = new StatsLayout(cfg.ioNames.length);
    this.figures = {
      instancePackets: new Float64Array(cfg.sab, this.layout.instances, MAX_INSTANCES),
      instanceBytes: new Float64Array(cfg.sab, this.layout.instanceBytes, MAX_INSTANCES),
      probeSeq: new Float64Array(cfg.sab, this.layout.probeSeq, MAX_INSTANCES),
      probeAt: new Float64Array(cfg.sab, this.layout.probeAt, MAX_INSTANCES),
      sfLatency: new Float64Array(cfg.sab, this.layout.sfLatency, MAX_LATENCY_INSTANCES * HIST_STRIDE),
      ifRx: new Float64Array(cfg.sab, this.layout.ifRx, MAX_INTERFACES),
      ifTx: new Float64Array(cfg.sab, this.layout.ifTx, MAX_INTERFACES),
      instances: 0,
      interfaces: 0,
    };
    this.generation = new Float64Array(cfg.sab, this.layout.generation, 1);
    this.generation[0] = -1;
    const arena = cfg.arena != null ? this.backend.threads?.arenas?.view(cfg.arena) : undefined;
    this.engine = new Engine((name) => this.open(name), new Counters(cfg.sab, this.layout.counters), { arena });
    this.flows = new FlowCounter(new Float64Array(cfg.sab, this.layout.instanceFlows, MAX_INSTANCES));
    this.mailbox = new FrameMailbox(cfg.sab, this.layout.mailbox);
    this.countTimer = setInterval(this.wakeFn, COUNT_EVERY_MS).unref();
    this.busyPollMs = (cfg.busyPollUs ?? 0) / 1000;
    if (this.busyPollMs > 0) this.raisePriority();
  }

  /**
   * A busy-polling worker shares its CPU with the process's other threads (the API, health checks,
   * V8's helpers) where the process is pinned to one CPU; at equal priority a waking helper takes
   * the CPU from the polling loop for a millisecond or more. Nice -20 (this thread only: Linux
   * priorities are per thread) makes the helpers wait for the loop's slice instead.
   */
  private raisePriority(): void {
    try {
      setPriority(0, -20);
      this.post({ type: 'log', message: `worker ${this.cfg.index}: busy polling ${this.busyPollMs * 1000} µs after traffic; this thread's nice is now -20` });
    } catch (e) {
      this.post({ type: 'log', message: `worker ${this.cfg.index}: busy polling ${this.busyPollMs * 1000} µs after traffic; its priority stays (${(e as Error).message})` });
    }
  }

  handle(m: ToWorker): void {
    if (this.closing) return;
    if (m.type === 'attach') {
      this.epochs.set(m.name, m.epoch);
      this.attachFd(m.name, m.fd, m.rx);
    } else if (m.type === 'publish') {
      this.publish(m.tables);
    } else if (m.type === 'inject') {
      for (const { iface, frame } of m.frames) this.injectFn(iface, frame);
    } else if (m.type === 'wake') {
      this.wake();
    } else if (m.type === 'trace' || m.type === 'untrace') {
      if (m.type === 'trace') this.traces.set(m.id, { match: compileMatch(m.match), left: m.limit });
      else this.traces.delete(m.id);
      this.engine.setTracer(this.traces.size > 0 ? (step) => this.traced(step) : null);
    } else if (m.type === 'capture' || m.type === 'uncapture') {
      if (m.type === 'capture') this.captures.set(m.id, { iface: m.iface, match: m.match.trim() === '' ? null : compileMatch(m.match), left: m.limit });
      else this.captures.delete(m.id);
      this.armCapture();
    } else if (m.type === 'stall') {
      for (const end = performance.now() + m.ms; performance.now() < end; );
    } else {
      this.close();
    }
  }

  private publish(t: Tables): void {
    if (t.interfaces.length > MAX_INTERFACES || t.instanceCount > MAX_INSTANCES) {
      this.post({ type: 'log', message: `worker ${this.cfg.index}: statistics cover the first ${MAX_INTERFACES} interfaces and ${MAX_INSTANCES} instances only` });
    }
    this.tables = t;
    if (this.captures.size > 0) this.armCapture(); // interface indices of new names
    this.engine.publish(t);
    this.liveWanted = t.generation;
    this.wake();
  }

  /** A step of the engine's tracer: posted (with its own copy of the frame) to each trace it matches. */
  private traced(step: TraceStep): void {
    const d = dissect(step.frame);
    if (d === null) return;
    for (const [id, t] of this.traces) {
      if (t.left <= 0 || !t.match(d)) continue;
      t.left--;
      this.post({ type: 'traced', id, step: { ...step, frame: step.frame.slice() } });
    }
  }

  /** Point the engine's capturer at the interfaces of the captures on (none: detached). */
  private armCapture(): void {
    const names = this.tables?.interfaces ?? [];
    const on = new Uint8Array(names.length);
    for (const c of this.captures.values()) if (names.indexOf(c.iface) >= 0) on[names.indexOf(c.iface)] = 1;
    this.engine.setCapture(this.captures.size > 0 ? (f, dir, frame) => this.captured(names[f], dir, frame) : null, on);
  }

  private captured(iface: string, dir: 'rx' | 'tx', frame: Uint8Array): void {
    const timeNs = Math.round((performance.timeOrigin + performance.now()) * 1e6); // µs resolution, as pcap keeps
    let d: Dissected | null | undefined;
    for (const [id, c] of this.captures) {
      if (c.iface !== iface || c.left <= 0) continue;
      if (c.match !== null) {
        d = d === undefined ? dissect(frame) : d;
        if (d === null || !c.match(d)) continue;
      }
      c.left--;
      this.post({ type: 'captured', id, dir, timeNs, frame: frame.slice() });
    }
  }

  /** The engine's open(): a port that exists at once and gets its socket when one is there. */
  private open(name: string): AttachedPort {
    const port = new AttachedPort(name, (p) => this.lost(p));
    this.ports.set(name, port);
    if (this.backend.threads === null) {
      this.openLocal(port);
    } else {
      const pending = this.fds.get(name);
      this.fds.delete(name);
      if (pending !== undefined) this.adopt(port, pending.fd, pending.rx);
    }
    return port;
  }

  private attachFd(name: string, fd: number, rx: boolean): void {
    const port = this.ports.get(name);
    if (port !== undefined && !port.isClosed) {
      this.adopt(port, fd, rx);
      this.wake();
    } else {
      const stale = this.fds.get(name);
      if (stale !== undefined) this.backend.threads?.discard(stale.fd);
      this.fds.set(name, { fd, rx });
    }
  }

  /** Put the backend's port over an fd from the main thread underneath (only a backend with threads is sent fds). */
  private adopt(port: AttachedPort, fd: number, rx: boolean): void {
    const counters = this.ioCounters(port.name);
    try {
      port.attach(this.backend.threads!.adopt(fd, port.name, { rx, ring: this.cfg.ring, counters }));
    } catch (e) {
      this.post({ type: 'log', message: `worker ${this.cfg.index}: ${port.name}: ${(e as Error).message}` });
      this.post({ type: 'lost', name: port.name, epoch: this.epochs.get(port.name) ?? 0 });
    }
  }

  /** An in-process backend opens here: a missing interface is logged once and retried every second. */
  private openLocal(port: AttachedPort): void {
    try {
      port.attach(this.backend.open(port.name));
      if (this.missing.delete(port.name)) this.post({ type: 'log', message: `${port.name}: attached` });
    } catch (e) {
      if (!this.missing.has(port.name)) {
        this.missing.add(port.name);
        this.post({ type: 'log', message: `${port.name}: ${(e as Error).message}; retrying every second` });
      }
      this.scheduleRetry();
    }
  }

  /** Per-interface I/O counters in shared memory (by engine interface index). */
  private ioCounters(name: string): Float64Array | undefined {
    const f = this.tables?.interfaces.indexOf(name) ?? -1;
    if (f < 0 || f >= MAX_INTERFACES || this.layout.ioCount === 0) return undefined;
    return new Float64Array(this.cfg.sab, this.layout.io + f * this.layout.ioCount * 8, this.layout.ioCount);
  }

  private lost(port: AttachedPort): void {
    if (this.backend.threads !== null) {
      this.post({ type: 'lost', name: port.name, epoch: this.epochs.get(port.name) ?? 0 });
      return;
    }
    this.missing.add(port.name);
    this.post({ type: 'log', message: `${port.name}: interface lost; retrying every second` });
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.retry !== null || this.closing) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      for (const port of this.ports.values()) if (!port.isClosed && !port.attached) this.openLocal(port);
      this.wake();
    }, RETRY_MS);
  }

  /** Whether the interface currently has a live port underneath. */
  attached(name: string): boolean {
    return this.ports.get(name)?.attached === true;
  }

  private wake(): void {
    if (this.scheduled || this.closing) return;
    this.scheduled = true;
    setImmediate(this.runFn);
  }

  private run(): void {
    this.scheduled = false;
    if (this.closing) return;
    let n = 0;
    try {
      this.mailbox.sleeping(false);
      this.mailbox.drain(this.injectFn);
      n = this.breaths();
      if (n === 0 && this.busyPollMs > 0) n = this.poll();
    } catch (e) {
      this.post({ type: 'error', message: `worker ${this.cfg.index}: ${(e as Error).stack ?? String(e)}` });
    }
    if (this.liveWanted >= 0 && this.engine.current?.generation === this.liveWanted) {
      this.post({ type: 'live', generation: this.liveWanted });
      this.liveWanted = -1;
    }
    const now = performance.now();
    const polling = now < this.pollUntil;
    if ((n === 0 && !polling) || now - this.syncedAt >= STATS_EVERY_MS) this.sync(now);
    // Asleep from here unless frames came to the mailbox meanwhile (its handshake, mailbox.ts).
    if (this.flows.step(this.engine, now) || n > 0 || polling || this.mailbox.sleeping(true)) {
      this.wake();
      return;
    }
    for (const [name, port] of this.ports) {
      if (port.isClosed) this.ports.delete(name); // the engine dropped the interface
      else port.onReadable(this.wakeFn);
    }
  }

  /** Breaths while frames come, at most BREATHS_PER_TURN; the last one's count (0: caught up). */
  private breaths(): number {
    let n = 0;
    for (let i = 0; i < BREATHS_PER_TURN; i++) {
      n = this.engine.breathe();
      if (n === 0) break;
      if (this.busyPollMs > 0) this.pollUntil = performance.now() + this.busyPollMs;
    }
    return n;
  }

  /**
   * Busy polling inside one event-loop turn: breathe until the poll deadline passes or
   * POLL_TURN_MS is up, then give messages and timers their turn. Returns > 0 when a turn's
   * breaths ran out with frames still coming. Scheduling one immediate per empty poll instead made
   * garbage for a scavenge every 15 ms, and V8 unmaps the freed pages on its helper threads, which
   * took the worker's CPU for milliseconds.
   */
  private poll(): number {
    const turnEnd = performance.now() + POLL_TURN_MS;
    for (let k = 1; ; k++) {
      const n = this.breaths();
      if (n > 0) return n;
      if (k % CLOCK_EVERY !== 0) continue;
      const now = performance.now();
      if (now >= this.pollUntil || now >= turnEnd) return 0;
    }
  }

  /** Copy the engine's per-instance and per-interface figures into shared memory. */
  private sync(now: number): void {
    this.syncedAt = now;
    this.generation[0] = this.engine.current?.generation ?? -1;
    this.engine.copyFigures(this.figures);
  }

  /** Process what is already received, then close every port and stop. */
  close(): void {
    if (this.closing) return;
    try {
      for (let i = 0; i < BREATHS_PER_TURN && this.engine.breathe() > 0; i++);
    } catch {
      // closing anyway
    }
    this.sync(performance.now());
    this.closing = true;
    clearInterval(this.countTimer);
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
    this.engine.close();
    for (const port of this.ports.values()) port.close();
    this.ports.clear();
    for (const { fd } of this.fds.values()) this.backend.threads?.discard(fd);
    this.fds.clear();
    this.post({ type: 'closed' });
  }
}

if (!isMainThread && parentPort !== null && (workerData as { role?: string } | null)?.role === 'sfc-dataplane') {
  const port = parentPort;
  const w = new DataplaneWorker((workerData as { config: WorkerConfig }).config, (m) => port.postMessage(m));
  port.on('message', (m: ToWorker) => {
    w.handle(m);
    if (m.type === 'close') port.close();
  });
}
