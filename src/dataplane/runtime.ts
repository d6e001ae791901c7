/*
 * runtime: the live dataplane — N worker threads, each an Engine over its own packet sockets
 * (worker.ts), driven from the main thread (ARCHITECTURE.md §3).
 *
 * The backend (io/registry.ts) is loaded at construction, so a missing addon or libpcap fails
 * there, naming what to install. Interfaces: the main thread opens every interface's fds for all
 * workers through the backend (AF_PACKET: one socket per worker in a PACKET_FANOUT group, so both
 * directions of a flow meet the same worker; TAP: one fd shared by all, worker 0 reads) and posts
 * them; each worker adopts its fd. A backend that cannot run in a worker (cap: its binding polls
 * the main event loop) runs one in-process data path on this thread; --workers is then ignored.
 *
 * A missing interface (absent at publish, or deleted later) is logged once and retried every
 * second; its ports stay in the engine, reported down, and come back when it reappears.
 *
 * publish(t) posts the tables to every worker and resolves when each reports that generation live
 * (applied before its next batch). A worker that does not within PUBLISH_TIMEOUT_MS fails the
 * publish: every worker is handed the generation in force again (the API write is then undone) and
 * the late worker, hung, is terminated and so restarted. stats() sums the workers' SharedArrayBuffers: no messages.
 *
 * Supervision: a worker thread that exits (a crash, or terminated) is replaced at once by a new one
 * over the same statistics buffer; every interface is re-opened (a fresh fanout group, so the dead
 * worker's share of flows is not black-holed) and the new worker is given the generation in force.
 * Until it reports it live the dataplane is degraded (health(): which worker, since when, and the
 * restart count); deaths and restarts are logged and counted.
 * close() lets each worker process what it already received, close its ports and exit.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { COUNTERS, DROP_REASONS } from '../packet/counters.js';
import type { InterfaceFds, ThreadedIO } from './io/backend.js';
import type { RingOptions } from './io/native.js';
import { backendNamed, type BackendName, type RegisteredBackend } from './io/registry.js';
import { FrameMailbox } from './mailbox.js';
import { HIST_STRIDE } from './sf-latency.js';
import type { Tables } from './tables.js';
import type { TraceStep } from './engine.js';
import { compileMatch } from './tracefilter.js';
import {
  DataplaneWorker,
  MAX_INSTANCES,
  MAX_INTERFACES,
  MAX_LATENCY_INSTANCES,
  StatsLayout,
  type FromWorker,
  type ToWorker,
  type WorkerConfig,
} from './worker.js';

export interface DataplaneOptions {
  backend: BackendName;
  workers: number;
  log?: (m: string) => void;
  /** AF_PACKET ring layout (default TPACKET_V2, 4 MiB). */
  ring?: RingOptions;
  /** Worker threads keep polling this long (µs) after the last received frame before sleeping (worker.ts). */
  busyPollUs?: number;
  /** Each worker's batch is the memory its sockets receive into, so frames are never copied (ThreadedIO.arenas: afxdp). */
  framesInPlace?: boolean;
}

export interface InterfaceStats {
  name: string;
  rxPackets: number;
  txPackets: number;
  up: boolean;
  /** Packet I/O counters summed over workers (the addon's names; empty for cap). */
  io: Record<string, number>;
}

/** One worker's share: its own event counters (batches, packets ...) and the CPU its thread used. */
export interface WorkerStats {
  events: Float64Array;
  /** Seconds its event loop was busy (not waiting in epoll) since it started. */
  busySeconds: number;
}

export interface DataplaneStats {
  events: Float64Array;
  drops: Float64Array;
  instancePackets: Float64Array;
  instanceBytes: Float64Array;
  /** Live flows per instance (flowcount.ts), summed over workers. */
  instanceFlows: Float64Array;
  /** Time inside each SF: per instance a histogram (sf-latency.ts, HIST_STRIDE words), summed over workers. */
  sfLatency: Float64Array;
  interfaces: InterfaceStats[];
  workers: WorkerStats[];
}

const RETRY_MS = 1000;
const CLOSE_TIMEOUT_MS = 5000;
/** A publish not acknowledged by every worker within this fails (and the late worker is restarted). */
export const PUBLISH_TIMEOUT_MS = 2000;

/** The supervisor's view (Dataplane.health()). */
export interface DataplaneHealth {
  ok: boolean;
  /** Workers being restarted: index, ms since they died. */
  degraded: { worker: number; downMs: number }[];
  /** Worker restarts since start. */
  restarts: number;
}

interface Member {
  index: number;
  sab: SharedArrayBuffer;
  /** A worker thread's health probe mailbox (in `sab`); null for the in-process data path. */
  mailbox: FrameMailbox | null;
  worker: Worker | null;
  local: DataplaneWorker | null;
  live: number;
  waiters: { generation: number; resolve: () => void; reject: (e: Error) => void }[];
  closed: Promise<void>;
  dead: Error | null;
  /** ms (Date.now) since which it is being restarted; 0 while it runs the generation in force. */
  downSince: number;
  /** The memory its sockets and batch share (ThreadedIO.arenas), new with every worker thread; null: none. */
  arena: number | null;
}

interface Iface {
  name: string;
  attached: boolean;
  /** Increments on every attach; a loss report for an older epoch is stale. */
  epoch: number;
  /** What the main thread holds of the current attach (released on loss, removal, close). */
  fds: InterfaceFds | null;
}

export class Dataplane {
  private readonly backend: RegisteredBackend;
  /** The backend's worker-thread side; null: one data path on this thread. */
  private readonly threads: ThreadedIO | null;
  private readonly log: (m: string) => void;
  private readonly ring: RingOptions;
  private readonly busyPollUs: number;
  private readonly framesInPlace: boolean;
  private readonly layout: StatsLayout;
  private readonly ioNames: readonly string[];
  private readonly members: Member[] = [];
  private readonly ifaces = new Map<string, Iface>();
  private tables: Tables | null = null;
  private readonly tracers = new Map<number, (step: TraceStep) => void>();
  private readonly capturers = new Map<number, (frame: Uint8Array, dir: 'rx' | 'tx', timeNs: number) => void>();
  private nextTrace = 1;
  private retry: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;
  private restarts = 0;

  constructor(opts: DataplaneOptions) {
    this.backend = backendNamed(opts.backend);
    this.threads = this.backend.threads;
    this.log = opts.log ?? ((m) => console.error(`sfc dataplane: ${m}`));
    this.ring = opts.ring ?? {};
    this.busyPollUs = opts.busyPollUs ?? 0;
    this.framesInPlace = opts.framesInPlace ?? false;
    if (this.framesInPlace && this.threads?.arenas === undefined) {
      throw new Error(`frames stay in place only where the sockets can share the batch's memory (afxdp); the ${this.backend.name} backend copies them`);
    }
    // Load what the backend needs now, so a missing addon or libpcap fails here with its hint.
    this.ioNames = this.backend.load();
    this.layout = new StatsLayout(this.ioNames.length);
    const workers = Math.max(1, Math.floor(opts.workers));
    if (this.threads === null) {
      if (this.busyPollUs > 0) throw new Error(`busy polling needs worker threads; the ${this.backend.name} backend runs its data path on the main thread`);
      if (workers > 1) this.log(`the ${this.backend.name} backend runs one data path on the main thread; --workers ${workers} ignored`);
      this.members.push(this.localMember());
    } else {
      const url = workerUrl();
      for (let i = 0; i < workers; i++) this.members.push(this.threadMember(url, i, new SharedArrayBuffer(this.layout.bytes)));
    }
  }

  get workers(): number {
    return this.members.length;
  }

  async publish(t: Tables): Promise<void> {
    if (this.closing !== null) throw new Error('dataplane is closed');
    const wanted = new Set(t.interfaces.filter((n) => n !== ''));
    for (const name of wanted) {
      if (this.ifaces.has(name) || this.threads === null) continue;
      const iface: Iface = { name, attached: false, epoch: 0, fds: null };
      this.ifaces.set(name, iface);
      this.attach(iface);
    }
    const prev = this.tables;
    try {
      await Promise.all(this.members.map((m) => this.whenLive(m, t)));
    } catch (e) {
      // Back to the generation in force everywhere (a worker that took t, or takes it late, gets prev after it).
      if (prev !== null) for (const m of this.members) if (m.dead === null) this.send(m, { type: 'publish', tables: prev });
      throw e;
    }
    for (const iface of this.ifaces.values()) {
      if (wanted.has(iface.name)) continue;
      this.ifaces.delete(iface.name);
      release(iface);
    }
    this.tables = t;
  }

  stats(): DataplaneStats {
    const t = this.tables;
    const events = new Float64Array(COUNTERS.length);
    const drops = new Float64Array(DROP_REASONS.length);
    const instancePackets = new Float64Array(Math.min(t?.instanceCount ?? 0, MAX_INSTANCES));
    const instanceBytes = new Float64Array(instancePackets.length);
    const instanceFlows = new Float64Array(instancePackets.length);
    const sfLatency = new Float64Array(Math.min(instancePackets.length, MAX_LATENCY_INSTANCES) * HIST_STRIDE);
    const workers: WorkerStats[] = [];
    const L = this.layout;
    const names = t?.interfaces ?? [];
    const nIf = Math.min(names.length, MAX_INTERFACES);
    const rx = new Float64Array(nIf);
    const tx = new Float64Array(nIf);
    const io = new Float64Array(nIf * L.ioCount);
    for (const m of this.members) {
      const own = new Float64Array(m.sab, L.counters, COUNTERS.length);
      addInto(events, own);
      // the thread's event loop utilisation (an in-process data path shares this thread's)
      const elu = m.worker !== null ? m.worker.performance.eventLoopUtilization() : performance.eventLoopUtilization();
      workers.push({ events: own.slice(), busySeconds: elu.active / 1000 });
      addInto(drops, new Float64Array(m.sab, L.counters + COUNTERS.length * 8, DROP_REASONS.length));
      addInto(instancePackets, new Float64Array(m.sab, L.instances, instancePackets.length));
      addInto(instanceBytes, new Float64Array(m.sab, L.instanceBytes, instanceBytes.length));
      addInto(instanceFlows, new Float64Array(m.sab, L.instanceFlows, instanceFlows.length));
      addInto(sfLatency, new Float64Array(m.sab, L.sfLatency, sfLatency.length));
      addInto(rx, new Float64Array(m.sab, L.ifRx, nIf));
      addInto(tx, new Float64Array(m.sab, L.ifTx, nIf));
      addInto(io, new Float64Array(m.sab, L.io, io.length));
    }
    const interfaces: InterfaceStats[] = [];
    for (let f = 0; f < nIf; f++) {
      const name = names[f];
      if (name === '') continue;
      const counters: Record<string, number> = {};
      this.ioNames.forEach((n, k) => (counters[n] = io[f * L.ioCount + k]));
      interfaces.push({ name, rxPackets: rx[f], txPackets: tx[f], up: this.isUp(name), io: counters });
    }
    return { events, drops, instancePackets, instanceBytes, instanceFlows, sfLatency, interfaces, workers };
  }

  /**
   * Follow live frames matching `match` (tracefilter.ts; a bad expression throws): every worker
   * reports each of their passes through its engine to `onStep`, at most `limit` per worker.
   * Returns the function that stops it. Untraced, the data path pays one branch per batch.
   */
  trace(match: string, limit: number, onStep: (step: TraceStep) => void): () => void {
    compileMatch(match);
    const id = this.nextTrace++;
    this.tracers.set(id, onStep);
    for (const m of this.members) this.send(m, { type: 'trace', id, match, limit });
    return () => {
      if (!this.tracers.delete(id)) return;
      for (const m of this.members) if (m.dead === null) this.send(m, { type: 'untrace', id });
    };
  }

  /**
   * Copy the frames interface `iface` receives (as received) and sends (as sent: after MAC
   * rewrite, with any encapsulation) to `onFrame`, at most `limit` per worker. Returns the
   * function that stops it. Uncaptured, the data path pays one branch per batch. With `match`
   * (tracefilter.ts; a bad expression throws), only the frames it matches, filtered in the workers.
   */
  capture(iface: string, limit: number, onFrame: (frame: Uint8Array, dir: 'rx' | 'tx', timeNs: number) => void, match = ''): () => void {
    compileMatch(match);
    const id = this.nextTrace++;
    this.capturers.set(id, onFrame);
    for (const m of this.members) this.send(m, { type: 'capture', id, iface, limit, match });
    return () => {
      if (!this.capturers.delete(id)) return;
      for (const m of this.members) if (m.dead === null) this.send(m, { type: 'uncapture', id });
    };
  }

  /** Whether every worker runs; the ones being restarted. */
  health(): DataplaneHealth {
    const now = Date.now();
    const degraded = this.members.filter((m) => m.downSince !== 0).map((m) => ({ worker: m.index, downMs: now - m.downSince }));
    return { ok: degraded.length === 0, degraded, restarts: this.restarts };
  }

  /**
   * Send health probes (probe.ts) through one running worker; false when none runs the generation
   * in force. A worker thread takes them from its mailbox (mailbox.ts), with a message only to
   * wake it or for what the mailbox has no room for.
   */
  probe(frames: { iface: string; frame: Uint8Array }[]): boolean {
    const m = this.members.find((x) => x.dead === null && x.downSince === 0);
    if (m === undefined) return false;
    const { taken, wake } = m.mailbox?.post(frames) ?? { taken: 0, wake: false };
    if (taken < frames.length) this.send(m, { type: 'inject', frames: frames.slice(taken) });
    else if (wake) this.send(m, { type: 'wake' });
    return true;
  }

  /** Health probes back from instance k, over every worker: the highest sequence number and when it came (ms). */
  probeReturn(k: number): { seq: number; at: number } {
    let seq = 0;
    let at = 0;
    if (k < 0 || k >= MAX_INSTANCES) return { seq, at };
    for (const m of this.members) {
      const s = new Float64Array(m.sab, this.layout.probeSeq + k * 8, 1)[0];
      if (s > seq) {
        seq = s;
        at = new Float64Array(m.sab, this.layout.probeAt + k * 8, 1)[0];
      }
    }
    return { seq, at };
  }

  /** Frames received on interface `name` so far, over every worker (0 when it is not in the tables). */
  rxFrames(name: string): number {
    const f = this.tables?.interfaces.indexOf(name) ?? -1;
    if (f < 0 || f >= MAX_INTERFACES) return 0;
    let n = 0;
    for (const m of this.members) n += new Float64Array(m.sab, this.layout.ifRx + f * 8, 1)[0];
    return n;
  }

  /** The table generation each worker's engine runs (-1: none yet), as of its last statistics update. */
  generations(): number[] {
    return this.members.map((m) => new Float64Array(m.sab, this.layout.generation, 1)[0]);
  }

  /** Fault injection: keep worker `index` busy for `ms`, as a hung worker would be (a publish then times out). */
  stallWorker(index: number, ms: number): void {
    const m = this.members[index];
    if (m === undefined) throw new Error(`no worker ${index}`);
    this.send(m, { type: 'stall', ms });
  }

  /** Stop worker `index` the hard way, as a crash would (the supervisor restarts it). */
  terminateWorker(index: number): Promise<number> {
    const w = this.members[index]?.worker;
    if (!w) return Promise.reject(new Error(`no worker thread ${index}`));
    return w.terminate();
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
    for (const m of this.members) this.send(m, { type: 'close' });
    // A worker that does not finish closing in time is stopped.
    const timer = setTimeout(() => this.members.forEach((m) => void m.worker?.terminate()), CLOSE_TIMEOUT_MS);
    await Promise.all(this.members.map((m) => m.closed));
    clearTimeout(timer);
    for (const iface of this.ifaces.values()) release(iface);
    this.ifaces.clear();
  }

  private isUp(name: string): boolean {
    if (this.threads === null) return this.members[0].local?.attached(name) === true;
    return this.ifaces.get(name)?.attached === true && this.threads.linkUp(name);
  }

  /** Open the interface's fd(s) for every worker and post them; false when it is missing. */
  private attach(iface: Iface): boolean {
    const threads = this.threads;
    if (threads === null) return false;
    release(iface);
    let fds: InterfaceFds;
    try {
      fds = threads.openFds(iface.name, this.members.length, this.ring, this.members.map((m) => m.arena));
    } catch (e) {
      if (iface.epoch === 0 || iface.attached) this.log(`${iface.name}: ${(e as Error).message}; retrying every second`);
      iface.attached = false;
      this.scheduleRetry();
      return false;
    }
    iface.attached = true;
    iface.epoch++;
    iface.fds = fds;
    this.members.forEach((m, i) => {
      const { fd, rx } = fds.workers[i];
      this.send(m, { type: 'attach', name: iface.name, fd, rx, epoch: iface.epoch });
    });
    this.log(`${iface.name}: attached (${fds.description})`);
    return true;
  }

  private scheduleRetry(): void {
    if (this.retry !== null || this.closing !== null) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      for (const iface of this.ifaces.values()) {
        if (!iface.attached && this.attach(iface) && iface.epoch > 1) this.log(`${iface.name}: back`);
      }
    }, RETRY_MS);
    this.retry.unref();
  }

  private fromWorker(m: Member, msg: FromWorker): void {
    switch (msg.type) {
      case 'live':
        m.live = Math.max(m.live, msg.generation);
        m.waiters = m.waiters.filter((w) => (w.generation <= m.live ? (w.resolve(), false) : true));
        break;
      case 'lost': {
        const iface = this.ifaces.get(msg.name);
        if (iface === undefined || !iface.attached || msg.epoch !== iface.epoch) break;
        iface.attached = false;
        this.log(`${msg.name}: interface lost; retrying every second`);
        release(iface);
        this.scheduleRetry();
        break;
      }
      case 'log':
        this.log(msg.message);
        break;
      case 'error':
        this.log(msg.message);
        break;
      case 'traced':
        this.tracers.get(msg.id)?.(msg.step);
        break;
      case 'captured':
        this.capturers.get(msg.id)?.(msg.frame, msg.dir, msg.timeNs);
        break;
      case 'closed':
        break;
    }
  }

  /** Post t to m; resolves when m reports it live, rejects after PUBLISH_TIMEOUT_MS (m is then restarted). */
  private whenLive(m: Member, t: Tables): Promise<void> {
    if (m.dead !== null) return Promise.reject(m.dead);
    const p = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        m.waiters = m.waiters.filter((w) => w !== waiter);
        reject(new Error(`dataplane worker ${m.index} did not take generation ${t.generation} within ${PUBLISH_TIMEOUT_MS} ms`));
        if (m.worker !== null && this.closing === null) {
          this.log(`worker ${m.index} did not take generation ${t.generation} within ${PUBLISH_TIMEOUT_MS} ms: restarting it`);
          void m.worker.terminate();
        }
      }, PUBLISH_TIMEOUT_MS);
      const waiter = {
        generation: t.generation,
        resolve: () => (clearTimeout(timer), resolve()),
        reject: (e: Error) => (clearTimeout(timer), reject(e)),
      };
      m.waiters.push(waiter);
    });
    this.send(m, { type: 'publish', tables: t });
    return p;
  }

  private send(m: Member, msg: ToWorker): void {
    if (m.worker !== null) m.worker.postMessage(msg);
    else if (m.local !== null) m.local.handle(msg);
  }

  private fail(m: Member, e: Error): void {
    m.dead ??= e;
    for (const w of m.waiters) w.reject(e);
    m.waiters = [];
  }

  /** A worker thread for slot `index` over `sab`; `m`: the member it replaces (restart). */
  private threadMember(url: URL, index: number, sab: SharedArrayBuffer, m?: Member): Member {
    const arena = this.framesInPlace ? this.threads!.arenas!.create() : null;
    const config: WorkerConfig = { index, backend: this.backend.name, sab, ioNames: this.ioNames, ring: this.ring, busyPollUs: this.busyPollUs, arena };
    const worker = new Worker(url, { workerData: { role: 'sfc-dataplane', config } });
    if (m === undefined) m = { index, sab, mailbox: new FrameMailbox(sab, this.layout.mailbox), worker, local: null, live: -1, waiters: [], closed: Promise.resolve(), dead: null, downSince: 0, arena };
    else Object.assign(m, { worker, live: -1, waiters: [], dead: null, arena });
    const self = m;
    worker.on('message', (msg: FromWorker) => {
      if (self.worker === worker) this.fromWorker(self, msg);
    });
    worker.on('error', (e) => {
      this.log(`worker ${index} failed: ${e.stack ?? e.message}`);
      this.fail(self, e);
    });
    m.closed = new Promise<void>((resolve) => {
      worker.once('exit', (code) => {
        if (arena !== null) this.threads?.arenas?.release(arena);
        this.fail(self, new Error(`dataplane worker ${index} exited`));
        if (this.closing === null) this.restart(url, self, code);
        resolve();
      });
    });
    return m;
  }

  /** Replace m's dead worker: a new thread, every interface re-opened, the generation in force. */
  private restart(url: URL, m: Member, code: number): void {
    this.restarts++;
    m.downSince = Date.now();
    this.log(`worker ${m.index} exited (code ${code}): restarting it (restart ${this.restarts})`);
    this.threadMember(url, m.index, m.sab, m);
    for (const iface of this.ifaces.values()) if (iface.attached) this.attach(iface);
    const t = this.tables;
    if (t === null) {
      m.downSince = 0;
      return;
    }
    this.whenLive(m, t).then(
      () => {
        this.log(`worker ${m.index} restarted: generation ${t.generation} live after ${Date.now() - m.downSince} ms`);
        m.downSince = 0;
      },
      (e: Error) => this.log(`worker ${m.index} restart: ${e.message}`),
    );
  }

  private localMember(): Member {
    const sab = new SharedArrayBuffer(this.layout.bytes);
    const m: Member = { index: 0, sab, mailbox: null, worker: null, local: null, live: -1, waiters: [], closed: Promise.resolve(), dead: null, downSince: 0, arena: null };
    const config: WorkerConfig = { index: 0, backend: this.backend.name, sab, ioNames: this.ioNames };
    m.local = new DataplaneWorker(config, (msg) => this.fromWorker(m, msg));
    return m;
  }
}

/** Close what the main thread holds of the interface's current attach. */
function release(iface: Iface): void {
  iface.fds?.close();
  iface.fds = null;
}

function addInto(sum: Float64Array, part: Float64Array): void {
  for (let i = 0; i < sum.length; i++) sum[i] += part[i];
}

/** worker.js beside this module; from TypeScript sources (tests), its compiled twin under dist/. */
function workerUrl(): URL {
  const here = fileURLToPath(import.meta.url);
  if (!here.endsWith('.ts')) return new URL('./worker.js', import.meta.url);
  const root = resolve(dirname(here), '..', '..');
  const js = join(root, 'dist', 'src', 'dataplane', 'worker.js');
  if (!existsSync(js)) throw new Error(`sfc: ${js} is missing: run \`npm run build\` (worker threads run the compiled JavaScript)`);
  return pathToFileURL(js);
}
