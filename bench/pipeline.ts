/*
 * Pipeline benchmark: the real Engine (breathe -> rxBurst -> parse -> steer -> select -> execute -> tx lists
 * -> txBurst) on one core, over 64-byte UDP frames, with in-memory ports. The input port copies
 * prepared frames into the batch arena (eight float64 moves per frame: a native rxBurst's memcpy,
 * minus the syscall); output ports only count. So the figures are the pipeline's own cost
 * per packet, port overhead excluded but per-interface tx bookkeeping included.
 *
 * Scenarios: classifiers {1, 100, 1000} (one chain, UDP rules splitting the destination port
 * space, so every frame matches one rule at a random position) x flows {1k, 100k} x
 *   path hit:  frames cycle over the flow set; after warm-up every frame finds its flow state
 *              (classification and instance choice cached): the steady state of long flows.
 *   path miss: every frame is a NEW flow (the source address is rewritten per frame), so each one
 *              pays a flow-state miss, a full classification, an insert (evicting) and a Maglev pick.
 * x hash {js-int32, xxhash-wasm} (the hash only runs when a flow has no sticky choice: on misses),
 * all with an SF-unaware hop (hop "none": execute only sets the destination MAC); plus, at 1,000
 * classifiers with js-int32, an NSH-aware hop (hop "nsh": every frame gets NSH MD1 and an outer
 * Ethernet header pushed, 38 bytes, before the MAC is set), for the cost of an encapsulation.
 *
 *   npm run build && npm run bench [-- --json] [-- --seconds S] [-- --only miss,1000,js-int32]
 * One JSON line per scenario with --json: {path, classifiers, flows, hash, correlation, mpps, ns_per_packet,
 * median_ns_per_packet, packets, flow_hit_ratio, and with the options below stages_ns,
 * instructions_per_packet, cycles_per_packet}; a table otherwise. mpps and ns_per_packet are from
 * the best of ROUNDS rounds of process CPU time (a busy machine inflates wall time and the median).
 *
 * Where the time goes (for profiling; both are optional and slower):
 *   --flow-count    adds `flow_count` per scenario: the live flow count's cost (flowcount.ts, a
 *                   slice of its scan between groups of breaths, as the worker does), A/B on the same
 *                   engine in alternating stretches: whole-process CPU per packet without and with it.
 *   --stages        adds `stages_ns` per scenario: ns per packet in each engine stage (rx = the
 *                   rxBurst copies, parse, steer, select, execute, tx = tx lists and txBurst calls), from
 *                   the engine's stage clock (Engine.setStageClock): the median over many batches.
 *   --instructions  adds `instructions_per_packet` and `cycles_per_packet` of the whole engine,
 *                   counted by `perf stat` on a child run of this program: the main thread only
 *                   (not V8's compiler and GC threads), and only while the child's timed packets
 *                   run (perf's --control fifos), so start-up and warm-up are not counted.
 *                   Instruction counts move by well under 1% between runs whatever the machine's
 *                   load; cycles move with it (caches shared with other work). Needs `perf`.
 *   --scenario PATH:CLASSIFIERS:FLOWS:HASH  exactly one scenario (e.g. hit:1000:100000:js-int32).
 *   --packets N [--perf-control CTL,ACK]  (child mode) process exactly N packets after warm-up,
 *                   print nothing; with the fifos, have perf count only those packets.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { flowFrames } from '../src/dataplane/frames.js';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import type { State } from '../src/control/model.js';
import { Batch, BATCH } from '../src/packet/batch.js';
import { Ctr } from '../src/packet/counters.js';
import { Engine, STAGES } from '../src/dataplane/engine.js';
import { FlowCounter } from '../src/dataplane/flowcount.js';
import type { PortIO } from '../src/dataplane/io/portio.js';
import type { Tables } from '../src/dataplane/tables.js';
import { createXxhFlowHasher, hashFlow, type FlowHasher } from '../src/hash/flowhash.js';

const FRAME = 64;
const ROUNDS = 5;
/** An rxBurst late enough to run optimised code: its copies are checked once (RingPort.verify). */
const VERIFY_BURST = 2000;
/** float64 words per frame. */
const WORDS = FRAME / 8;
const FLOW_SETS = [1_000, 100_000];
/** Timed packets of an --instructions child run. */
const PERF_PACKETS = 1 << 21;
const RULE_COUNTS = [1, 100, 1000];
type Stage = (typeof STAGES)[number];
type Path = 'hit' | 'miss';

/**
 * One 64-byte frame as eight float64 moves, unrolled: the closest plain JS gets to the memcpy a
 * native rxBurst does (a 16-iteration u32 loop costs 4x more: V8 neither unrolls it nor drops its
 * bounds checks). V8 moves float64 bits unchanged, NaN patterns included; RingPort.verify checks.
 */
function copyFrame(dst: Float64Array, to: number, src: Float64Array, from: number): void {
  dst[to] = src[from];
  dst[to + 1] = src[from + 1];
  dst[to + 2] = src[from + 2];
  dst[to + 3] = src[from + 3];
  dst[to + 4] = src[from + 4];
  dst[to + 5] = src[from + 5];
  dst[to + 6] = src[from + 6];
  dst[to + 7] = src[from + 7];
}

/** Receive side: copies prepared frames round-robin; `fresh` makes every frame a new flow. */
class RingPort implements PortIO {
  private next = 0;
  private counter = 0;
  private bursts = 0;
  private arena: Float64Array | null = null;
  constructor(
    readonly name: string,
    private readonly src: Float64Array,
    private readonly n: number,
    private readonly fresh: boolean,
  ) {}

  rxBurst(b: Batch, port: number, max: number): number {
    if (this.arena === null) this.arena = new Float64Array(b.data.buffer, b.data.byteOffset, b.data.byteLength >>> 3);
    const dst = this.arena;
    const src = this.src;
    const d = b.data;
    const first = b.count;
    const next = this.next;
    for (let k = 0; k < max; k++) {
      const i = b.count++;
      const s = b.start[i];
      copyFrame(dst, s >>> 3, src, this.next * WORDS);
      b.len[i] = FRAME;
      b.port[i] = port;
      b.time[i] = 0;
      if (this.fresh) {
        // New source 10.x.y.z per frame (still inside the rules' 10.0.0.0/8).
        const c = ++this.counter;
        d[s + 27] = (c >>> 16) & 0xff;
        d[s + 28] = (c >>> 8) & 0xff;
        d[s + 29] = c & 0xff;
      }
      if (++this.next === this.n) this.next = 0;
    }
    if (++this.bursts === VERIFY_BURST) this.verify(b, first, next);
    return max;
  }

  /** Throw unless slots first.. of b hold exact copies of frames next.. (bytes a fresh flow rewrites aside). */
  private verify(b: Batch, first: number, next: number): void {
    const bytes = new Uint8Array(this.src.buffer);
    for (let i = first; i < b.count; i++) {
      const from = ((next + i - first) % this.n) * FRAME;
      for (let k = 0; k < FRAME; k++) {
        if ((!this.fresh || k < 27 || k > 29) && b.data[b.start[i] + k] !== bytes[from + k]) throw new Error('rx copy altered a frame');
      }
    }
  }
  txBurst(_b: Batch, _idx: Uint16Array, n: number): number {
    return n;
  }
  isUp(): boolean {
    return true;
  }
  close(): void {}
}

class SinkPort implements PortIO {
  constructor(readonly name: string) {}
  rxBurst(): number {
    return 0;
  }
  txBurst(_b: Batch, _idx: Uint16Array, n: number): number {
    return n;
  }
  isUp(): boolean {
    return true;
  }
  close(): void {}
}

const owner = { description: '', tenant_id: 'bench', project_id: 'bench' };
const uuid = (n: number) => `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;

/** One chain, one hop of two instances, `rules` UDP classifiers splitting the dport space. */
function benchState(rules: number, correlation: Correlation): State {
  let id = 0;
  const port = (name: string, iface: string, mac: string) => ({
    id: uuid(++id),
    name,
    ...owner,
    mac_address: mac,
    'binding:profile': { interface: iface },
    'binding:host_id': '',
    status: 'ACTIVE' as const,
    admin_state_up: true,
  });
  const ports = [
    port('client', 'in0', '02:00:00:00:00:01'),
    port('server', 'out0', '02:00:00:00:00:02'),
    port('sf1-in', 'sf1i', '02:00:00:00:11:01'),
    port('sf1-out', 'sf1e', '02:00:00:00:11:02'),
    port('sf2-in', 'sf2i', '02:00:00:00:12:01'),
    port('sf2-out', 'sf2e', '02:00:00:00:12:02'),
  ];
  const pairs = [1, 2].map((k) => ({
    id: uuid(++id),
    name: `pp${k}`,
    ...owner,
    ingress: ports[2 * k].id,
    egress: ports[2 * k + 1].id,
    service_function_parameters: { correlation: correlation === 'none' ? null : correlation, weight: 1 },
  }));
  const group = {
    id: uuid(++id),
    name: 'ppg',
    ...owner,
    group_id: 1,
    port_pairs: pairs.map((p) => p.id),
    port_pair_group_parameters: { lb_fields: [], ppg_n_tuple_mapping: {} },
    tap_enabled: false,
  };
  const classifiers = Array.from({ length: rules }, (_, k) => ({
    id: uuid(++id),
    name: `fc${k}`,
    ...owner,
    ethertype: 'IPv4' as const,
    protocol: 'udp' as const,
    source_port_range_min: null,
    source_port_range_max: null,
    destination_port_range_min: Math.floor((k * 65536) / rules),
    destination_port_range_max: Math.floor(((k + 1) * 65536) / rules) - 1,
    source_ip_prefix: '10.0.0.0/8',
    destination_ip_prefix: '192.168.0.0/16',
    logical_source_port: ports[0].id,
    logical_destination_port: ports[1].id,
    l7_parameters: {},
  }));
  const chain = {
    id: uuid(++id),
    name: 'pc',
    ...owner,
    chain_id: 1,
    port_pair_groups: [group.id],
    flow_classifiers: classifiers.map((c) => c.id),
    chain_parameters: { correlation: correlation === 'nsh' ? ('nsh' as const) : ('mpls' as const), symmetric: false },
  };
  return { ports, port_pairs: pairs, port_pair_groups: [group], flow_classifiers: classifiers, port_chains: [chain], service_graphs: [] };
}

/** The hop's port pairs: SF-unaware (none) or NSH-aware (every frame gets NSH + outer Ethernet pushed). */
type Correlation = 'none' | 'nsh';

interface Scenario {
  path: Path;
  classifiers: number;
  flows: number;
  hash: string;
  correlation: Correlation;
}

interface Result extends Scenario {
  mpps: number;
  ns_per_packet: number;
  median_ns_per_packet: number;
  packets: number;
  flow_hit_ratio: number;
  stages_ns?: Record<Stage, number>;
  instructions_per_packet?: number;
  cycles_per_packet?: number;
  flow_count?: FlowCountAB;
}

/** The engine over in-memory ports: one breath = one batch of BATCH frames from in0. */
function benchEngine(t: Tables, frames: Float64Array, flows: number, path: Path, hash: FlowHasher): Engine {
  const engine = new Engine(
    (name) => (name === 'in0' ? new RingPort(name, frames, flows, path === 'miss') : new SinkPort(name)),
    undefined,
    { hash },
  );
  engine.publish(t);
  return engine;
}

/** Populate the flow state (hit) and let the optimising compiler settle. */
function warmUp(engine: Engine, flows: number): void {
  const warm = Math.max(2 * flows, 150_000);
  for (let n = 0; n < warm; ) n += engine.breathe();
}

/**
 * CPU time of this process (not wall time) per packet, in ROUNDS short rounds: the best round is the
 * figure least disturbed by other work on a shared machine, the median is reported beside it.
 */
/** Time spent in the flow count's steps (ms): in all, and each that scanned (a step not due returns in well under 5 µs). */
interface StepTime {
  total: number;
  slices: number[];
}

function timeLoop(engine: Engine, seconds: number, counter: FlowCounter | null = null, stepTime?: StepTime): { best: number; median: number; packets: number; meanNs: number } {
  const rounds: number[] = [];
  let packets = 0;
  let totalUs = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const c0 = process.cpuUsage();
    let n = 0;
    let usedUs = 0;
    while (usedUs < (seconds * 1e6) / ROUNDS) {
      for (let k = 0; k < 16; k++) n += engine.breathe();
      // as the worker does between its turns of breaths (worker.ts): a slice when a scan is running or due
      if (counter !== null) {
        const t0 = performance.now();
        counter.step(engine, t0);
        const dt = performance.now() - t0;
        stepTime!.total += dt;
        if (dt > 0.005) stepTime!.slices.push(dt);
      }
      const c = process.cpuUsage(c0);
      usedUs = c.user + c.system;
    }
    rounds.push((usedUs * 1e3) / n);
    packets += n;
    totalUs += usedUs;
  }
  rounds.sort((a, b) => a - b);
  return { best: rounds[0], median: rounds[rounds.length >> 1], packets, meanNs: (totalUs * 1e3) / packets };
}

const round1 = (x: number) => Math.round(x * 10) / 10;

function median(a: Float64Array): number {
  const sorted = a.slice().sort();
  return sorted[sorted.length >> 1];
}

/**
 * ns per packet of each stage, from the engine's stage clock read after every breath: the median
 * over many batches of each stage's time (a batch preempted by other work on the machine is an
 * outlier the median ignores).
 */
function stageTimes(t: Tables, frames: Float64Array, sc: Scenario, hash: FlowHasher, seconds: number): Record<Stage, number> {
  const batches = Math.max(64, Math.round((seconds * 1e9) / (BATCH * 500)));
  const engine = benchEngine(t, frames, sc.flows, sc.path, hash);
  warmUp(engine, sc.flows);
  const spent = new Float64Array(STAGES.length);
  const per = STAGES.map(() => new Float64Array(batches));
  engine.setStageClock(spent);
  for (let k = 0; k < batches; k++) {
    spent.fill(0);
    engine.breathe();
    for (let st = 0; st < STAGES.length; st++) per[st][k] = spent[st];
  }
  const out = {} as Record<Stage, number>;
  STAGES.forEach((st, k) => (out[st] = round1((median(per[k]) * 1e6) / BATCH)));
  return out;
}

/** --flow-count: the engine with and without the live flow count (flowcount.ts) stepped as the worker steps it. */
interface FlowCountAB {
  /** Whole-process CPU per packet over all rounds (ns), without and with the count, and their ratio. */
  off_mean_ns_per_packet: number;
  on_mean_ns_per_packet: number;
  ratio: number;
  /** Best rounds, as ns_per_packet. */
  off_ns_per_packet: number;
  on_ns_per_packet: number;
  /** Scans finished while on, and the flows the last one counted (summed over instances: flows x hops). */
  scans: number;
  flows_counted: number;
  /** Wall time of one whole scan (ms, its slices summed) and of a slice (µs, median and longest): what a batch may wait. */
  scan_ms: number;
  slice_median_us: number;
  slice_max_us: number;
}

const AB_PAIRS = 4;

/** Alternating stretches (AB_PAIRS each, the order swapped every pair) of the same engine without and with the flow count. */
function flowCountAB(engine: Engine, t: Tables, seconds: number): FlowCountAB {
  const out = new Float64Array(t.instanceCount);
  const counter = new FlowCounter(out);
  const off = { ns: 0, packets: 0, best: Infinity };
  const on = { ns: 0, packets: 0, best: Infinity };
  const steps: StepTime = { total: 0, slices: [] };
  for (let k = 0; k < AB_PAIRS; k++) {
    const order: [typeof off, FlowCounter | null][] = [[off, null], [on, counter]];
    for (const [side, c] of k % 2 === 0 ? order : order.reverse()) {
      const m = timeLoop(engine, seconds / AB_PAIRS / 2, c, steps);
      side.ns += m.meanNs * m.packets;
      side.packets += m.packets;
      side.best = Math.min(side.best, m.best);
    }
  }
  const offMean = off.ns / off.packets;
  const onMean = on.ns / on.packets;
  return {
    off_mean_ns_per_packet: round1(offMean),
    on_mean_ns_per_packet: round1(onMean),
    ratio: Math.round((onMean / offMean) * 1000) / 1000,
    off_ns_per_packet: round1(off.best),
    on_ns_per_packet: round1(on.best),
    scans: counter.scans,
    flows_counted: out.reduce((a, b) => a + b, 0),
    scan_ms: Math.round((steps.total / Math.max(1, counter.scans)) * 100) / 100,
    slice_median_us: Math.round(median(Float64Array.from(steps.slices)) * 1000),
    slice_max_us: Math.round(Math.max(0, ...steps.slices) * 1000),
  };
}

function runScenario(state: State, frames: Float64Array, sc: Scenario, hash: FlowHasher, seconds: number, stages: boolean, flowCount: boolean): Result {
  const t = compileTables(state);
  const engine = benchEngine(t, frames, sc.flows, sc.path, hash);
  warmUp(engine, sc.flows);
  const ev = engine.counters.events;
  const hits0 = ev[Ctr.flow_cache_hits];
  const misses0 = ev[Ctr.flow_cache_misses];
  const m = timeLoop(engine, seconds);
  const hits = ev[Ctr.flow_cache_hits] - hits0;
  const misses = ev[Ctr.flow_cache_misses] - misses0;
  const r: Result = {
    ...sc,
    mpps: Math.round((1e3 / m.best) * 100) / 100,
    ns_per_packet: round1(m.best),
    median_ns_per_packet: round1(m.median),
    packets: m.packets,
    flow_hit_ratio: Math.round((hits / Math.max(1, hits + misses)) * 1e4) / 1e4,
  };
  if (stages) r.stages_ns = stageTimes(t, frames, sc, hash, seconds);
  if (flowCount) r.flow_count = flowCountAB(engine, t, seconds);
  return r;
}

/**
 * Child mode: exactly `packets` packets through the engine after warm-up. With `control`
 * (perf stat's control and ack fifos) the counters run only around those packets.
 */
function runFixed(state: State, frames: Float64Array, sc: Scenario, hash: FlowHasher, packets: number, control: string[] | null): void {
  const engine = benchEngine(compileTables(state), frames, sc.flows, sc.path, hash);
  warmUp(engine, sc.flows);
  const ctl = control ? openSync(control[0], 'w') : -1;
  const ack = control ? openSync(control[1], 'r') : -1;
  const reply = Buffer.alloc(16);
  const perf = (command: string) => {
    if (ctl < 0) return;
    writeSync(ctl, `${command}\n`);
    readSync(ack, reply);
  };
  perf('enable');
  for (let n = 0; n < packets; ) n += engine.breathe();
  perf('disable');
}

/**
 * Instructions and cycles per packet of the engine's main thread (V8's compiler and GC threads
 * left out: --no-inherit), counted by perf stat only while a child process runs PERF_PACKETS timed
 * packets (--control fifos; start-up, compilation and warm-up are not counted).
 */
function countsPerPacket(sc: Scenario): { instructions: number; cycles: number } {
  const dir = mkdtempSync(join(tmpdir(), 'sfc-bench-'));
  try {
    const ctl = join(dir, 'ctl');
    const ack = join(dir, 'ack');
    spawnSync('mkfifo', [ctl, ack]);
    const child = [fileURLToPath(import.meta.url), '--scenario', scenarioName(sc), '--packets', String(PERF_PACKETS), '--perf-control', `${ctl},${ack}`];
    const args = ['stat', '--no-inherit', '--delay=-1', `--control=fifo:${ctl},${ack}`, '-x', ',', '-e', 'instructions:u,cycles:u', process.execPath, ...child];
    const run = spawnSync('perf', args, { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
    const out = run.stderr ?? '';
    const count = (event: string) => Number(out.split('\n').find((l) => l.includes(event))?.split(',')[0]);
    const instructions = count('instructions');
    const cycles = count('cycles');
    if (run.status !== 0 || !Number.isFinite(instructions) || !Number.isFinite(cycles)) {
      throw new Error(`perf stat gave no counts: ${run.error?.message ?? out.trim()}`);
    }
    return { instructions: Math.round(instructions / PERF_PACKETS), cycles: Math.round(cycles / PERF_PACKETS) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `path:classifiers:flows:hash`, the exact scenario selector of --scenario. */
function scenarioName(sc: Scenario): string {
  return [sc.path, sc.classifiers, sc.flows, sc.hash, ...(sc.correlation === 'none' ? [] : [sc.correlation])].join(':');
}

function isKnownKey(o: string): boolean {
  return [...RULE_COUNTS, ...FLOW_SETS].map(String).includes(o) || ['hit', 'miss', 'js-int32', 'xxhash-wasm', 'none', 'nsh'].includes(o);
}

function option(argv: string[], name: string): string | undefined {
  const k = argv.indexOf(name);
  return k >= 0 ? argv[k + 1] : undefined;
}

/** n prepared 64-byte frames, as float64 words for RingPort's copy. */
function frameSet(n: number): Float64Array {
  const all = new Uint8Array(n * FRAME);
  flowFrames(n, { proto: 'udp', seed: 7 }).forEach((f, k) => all.set(f.subarray(0, FRAME), k * FRAME));
  return new Float64Array(all.buffer);
}

function printTable(results: Result[]): void {
  const counted = results.some((r) => r.instructions_per_packet !== undefined);
  console.log(`path  classifiers   flows  hash         hop    Mpps   ns/pkt  (median)  flow hits${counted ? '  insn/pkt  cycles/pkt' : ''}`);
  for (const r of results) {
    const insn = r.instructions_per_packet === undefined ? '' : `${String(r.instructions_per_packet).padStart(9)} ${String(r.cycles_per_packet).padStart(11)}`;
    console.log(
      `${r.path.padEnd(5)} ${String(r.classifiers).padStart(11)} ${String(r.flows).padStart(7)}  ${r.hash.padEnd(12)} ${r.correlation.padEnd(4)} ${r.mpps.toFixed(2).padStart(6)} ${r.ns_per_packet.toFixed(1).padStart(8)}  ${r.median_ns_per_packet.toFixed(1).padStart(8)}  ${(r.flow_hit_ratio * 100).toFixed(1).padStart(8)}% ${insn}`,
    );
    if (r.stages_ns) console.log(`      ns/pkt by stage:       ${STAGES.map((st) => `${st} ${r.stages_ns![st]}`).join(', ')}`);
    const f = r.flow_count;
    if (f) console.log(`      flow count off/on:     ${f.off_mean_ns_per_packet} / ${f.on_mean_ns_per_packet} ns/pkt (x${f.ratio}), ${f.scans} scans of ${f.scan_ms} ms, slices ${f.slice_median_us} µs (max ${f.slice_max_us}), ${f.flows_counted} counted`);
  }
}

async function main(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  const stages = argv.includes('--stages');
  const instructions = argv.includes('--instructions');
  const seconds = Number(option(argv, '--seconds') ?? 0.4);
  const packets = option(argv, '--packets');
  const hashers = new Map<string, FlowHasher>([
    ['js-int32', hashFlow],
    ['xxhash-wasm', await createXxhFlowHasher()],
  ]);
  // Optional filters, e.g. --only miss,1000,100000,js-int32 (any subset, in any order) for profiling.
  const only = option(argv, '--only')?.split(',') ?? [];
  const exact = option(argv, '--scenario');
  const wanted = (sc: Scenario) =>
    exact !== undefined
      ? scenarioName(sc) === exact
      : only.every((o) => [sc.classifiers, sc.flows, sc.path, sc.hash, sc.correlation].map(String).includes(o) || !isKnownKey(o));
  // Every combination with SF-unaware hops; the NSH-aware hop at 1,000 classifiers with the default hash.
  const scenarios: Scenario[] = [];
  for (const classifiers of RULE_COUNTS) {
    for (const flows of FLOW_SETS) {
      for (const path of ['hit', 'miss'] as const) {
        for (const hash of hashers.keys()) scenarios.push({ path, classifiers, flows, hash, correlation: 'none' });
      }
    }
  }
  for (const flows of FLOW_SETS) {
    for (const path of ['hit', 'miss'] as const) scenarios.push({ path, classifiers: 1000, flows, hash: 'js-int32', correlation: 'nsh' });
  }
  const flowSets = new Map<number, Float64Array>();
  const states = new Map<string, State>();
  const results: Result[] = [];
  for (const sc of scenarios) {
    if (!wanted(sc)) continue;
    const hash = hashers.get(sc.hash)!;
    const key = `${sc.classifiers} ${sc.correlation}`;
    if (!states.has(key)) states.set(key, benchState(sc.classifiers, sc.correlation));
    const state = states.get(key)!;
    if (!flowSets.has(sc.flows)) flowSets.set(sc.flows, frameSet(sc.flows));
    const frames = flowSets.get(sc.flows)!;
    if (packets !== undefined) {
      runFixed(state, frames, sc, hash, Number(packets), option(argv, '--perf-control')?.split(',') ?? null);
      continue;
    }
    const r = runScenario(state, frames, sc, hash, seconds, stages, argv.includes('--flow-count'));
    if (instructions) {
      const k = countsPerPacket(sc);
      r.instructions_per_packet = k.instructions;
      r.cycles_per_packet = k.cycles;
    }
    results.push(r);
    if (json) console.log(JSON.stringify(r));
  }
  if (!json && packets === undefined) printTable(results);
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
