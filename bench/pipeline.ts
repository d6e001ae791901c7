/*
 * Pipeline benchmark: the real Engine (breathe -> rxBurst -> parse -> steer -> rewrite -> tx lists
 * -> txBurst) on one core, over 64-byte UDP frames, with in-memory ports. The input port copies
 * prepared frames into the batch arena (16 u32 stores per frame: what a native rxBurst's copy
 * costs, minus the syscall); output ports only count. So the figures are the pipeline's own cost
 * per packet, port overhead excluded but per-interface tx bookkeeping included.
 *
 * Scenarios: classifiers {1, 100, 1000} (one chain, UDP rules splitting the destination port
 * space, so every frame matches one rule at a random position) x flows {1k, 100k} x
 *   path hit:  frames cycle over the flow set; after warm-up every frame finds its flow state
 *              (classification and instance choice cached): the steady state of long flows.
 *   path miss: every frame is a NEW flow (the source address is rewritten per frame), so each one
 *              pays a flow-state miss, a full classification, an insert (evicting) and a Maglev pick.
 * x hash {js-int32, xxhash-wasm} (the hash only runs when a flow has no sticky choice: on misses).
 *
 *   npm run build && npm run bench [-- --json] [-- --seconds S] [-- --only miss,1000,js-int32]
 * One JSON line per scenario with --json: {path, classifiers, flows, hash, mpps, ns_per_packet,
 * median_ns_per_packet, packets, flow_hit_ratio}; a table otherwise. mpps and ns_per_packet are from
 * the best of ROUNDS rounds of process CPU time (a busy machine inflates wall time and the median).
 */
import { flowFrames } from './gen.js';
import { compileTables } from '../src/control/compile.js';
import type { State } from '../src/control/model.js';
import { Batch } from '../src/dataplane/batch.js';
import { Ctr } from '../src/dataplane/counters.js';
import { Engine } from '../src/dataplane/engine.js';
import type { PortIO } from '../src/dataplane/io/portio.js';
import { createXxhFlowHasher, hashFlow, type FlowHasher } from '../src/hash/flowhash.js';

const FRAME = 64;
const ROUNDS = 5;
const WORDS = FRAME / 4;

/** Receive side: copies prepared frames round-robin; `fresh` makes every frame a new flow. */
class RingPort implements PortIO {
  private next = 0;
  private counter = 0;
  private words: Uint32Array | null = null;
  constructor(
    readonly name: string,
    private readonly src: Uint32Array,
    private readonly n: number,
    private readonly fresh: boolean,
  ) {}

  rxBurst(b: Batch, port: number, max: number): number {
    if (this.words === null) this.words = new Uint32Array(b.data.buffer, b.data.byteOffset, b.data.byteLength >>> 2);
    const dst = this.words;
    const src = this.src;
    const d = b.data;
    for (let k = 0; k < max; k++) {
      const i = b.count++;
      const s = b.start[i];
      const to = s >>> 2;
      const from = this.next * WORDS;
      for (let w = 0; w < WORDS; w++) dst[to + w] = src[from + w];
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
    return max;
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
function benchState(rules: number): State {
  let id = 0;
  const port = (name: string, iface: string, mac: string) => ({
    id: uuid(++id),
    name,
    ...owner,
    mac_address: mac,
    'binding:profile': { interface: iface },
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
    service_function_parameters: { correlation: null, weight: 1 },
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
    chain_parameters: { correlation: 'mpls' as const, symmetric: false },
  };
  return { ports, port_pairs: pairs, port_pair_groups: [group], flow_classifiers: classifiers, port_chains: [chain], service_graphs: [] };
}

interface Result {
  path: 'hit' | 'miss';
  classifiers: number;
  flows: number;
  hash: string;
  mpps: number;
  ns_per_packet: number;
  median_ns_per_packet: number;
  packets: number;
  flow_hit_ratio: number;
}

function runScenario(
  state: State,
  frames: Uint32Array,
  flows: number,
  path: 'hit' | 'miss',
  hashName: string,
  hash: FlowHasher,
  seconds: number,
): Result {
  const t = compileTables(state);
  const engine = new Engine(
    (name) => (name === 'in0' ? new RingPort(name, frames, flows, path === 'miss') : new SinkPort(name)),
    undefined,
    { hash },
  );
  engine.publish(t);
  const ev = engine.counters.events;
  // Warm-up: populate the flow state (hit) and let the optimising compiler settle.
  const warm = Math.max(2 * flows, 150_000);
  for (let n = 0; n < warm; ) n += engine.breathe();
  const hits0 = ev[Ctr.flow_cache_hits];
  const misses0 = ev[Ctr.flow_cache_misses];
  // CPU time of this process (not wall time) in short rounds; the best round is the figure least
  // disturbed by other work on a shared machine, the median is reported beside it.
  const rounds: number[] = [];
  let packets = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const c0 = process.cpuUsage();
    let n = 0;
    let usedUs = 0;
    while (usedUs < (seconds * 1e6) / ROUNDS) {
      for (let k = 0; k < 16; k++) n += engine.breathe();
      const c = process.cpuUsage(c0);
      usedUs = c.user + c.system;
    }
    rounds.push((usedUs * 1e3) / n);
    packets += n;
  }
  engine.close();
  const hits = ev[Ctr.flow_cache_hits] - hits0;
  const misses = ev[Ctr.flow_cache_misses] - misses0;
  rounds.sort((a, b) => a - b);
  const ns = rounds[0];
  return {
    path,
    classifiers: state.flow_classifiers.length,
    flows,
    hash: hashName,
    mpps: Math.round((1e3 / ns) * 100) / 100,
    ns_per_packet: Math.round(ns * 10) / 10,
    median_ns_per_packet: Math.round(rounds[rounds.length >> 1] * 10) / 10,
    packets,
    flow_hit_ratio: Math.round((hits / Math.max(1, hits + misses)) * 1e4) / 1e4,
  };
}

function isKnownKey(o: string): boolean {
  return ['1', '100', '1000', '100000', 'hit', 'miss', 'js-int32', 'xxhash-wasm'].includes(o);
}

async function main(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  const si = argv.indexOf('--seconds');
  const seconds = si >= 0 ? Number(argv[si + 1]) : 0.4;
  const hashers: [string, FlowHasher][] = [
    ['js-int32', hashFlow],
    ['xxhash-wasm', await createXxhFlowHasher()],
  ];
  const flowSets = new Map<number, Uint32Array>();
  for (const n of [1_000, 100_000]) {
    const all = new Uint8Array(n * FRAME);
    flowFrames(n, { proto: 'udp', seed: 7 }).forEach((f, k) => all.set(f.subarray(0, FRAME), k * FRAME));
    flowSets.set(n, new Uint32Array(all.buffer));
  }
  // Optional filters, e.g. --only miss,1000,100000,js-int32 (any subset, in any order) for profiling.
  const oi = argv.indexOf('--only');
  const only = oi >= 0 ? argv[oi + 1].split(',') : [];
  const wanted = (...keys: (string | number)[]) => only.every((o) => keys.map(String).includes(o) || !isKnownKey(o));
  const results: Result[] = [];
  for (const rules of [1, 100, 1000]) {
    const state = benchState(rules);
    for (const [flows, frames] of flowSets) {
      for (const path of ['hit', 'miss'] as const) {
        for (const [name, hash] of hashers) {
          if (!wanted(rules, flows, path, name)) continue;
          const r = runScenario(state, frames, flows, path, name, hash, seconds);
          results.push(r);
          if (json) console.log(JSON.stringify(r));
        }
      }
    }
  }
  if (!json) {
    console.log('path  classifiers   flows  hash          Mpps   ns/pkt  (median)  flow hits');
    for (const r of results) {
      console.log(
        `${r.path.padEnd(5)} ${String(r.classifiers).padStart(11)} ${String(r.flows).padStart(7)}  ${r.hash.padEnd(12)} ${r.mpps.toFixed(2).padStart(6)} ${r.ns_per_packet.toFixed(1).padStart(8)}  ${r.median_ns_per_packet.toFixed(1).padStart(8)}  ${(r.flow_hit_ratio * 100).toFixed(1)}%`,
      );
    }
  }
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
