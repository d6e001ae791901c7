/*
 * bench/parse: nanoseconds per packet of parseBatch over full batches of 64-byte frames.
 * Workloads: udp4 (the target figure, ns_per_packet), tcp6, and a mix of v4/v6 TCP/UDP with VLAN
 * tags. Prints one JSON object; ns_per_packet is process CPU time per packet (udp4), wall time is
 * given too (it inflates when other processes share the cores; see load_average_1m).
 * Usage: node dist/bench/parse.js [--seconds S] (default 1 per workload).
 */
import os from 'node:os';
import { Batch, BATCH } from '../src/dataplane/batch.js';
import { Counters } from '../src/dataplane/counters.js';
import { parseBatch } from '../src/dataplane/parse.js';
import { buildFrame, fillBatch, flowFrames, flowSpecs } from './gen.js';

interface Figure {
  /** Process CPU time per packet: insensitive to other processes sharing the cores. */
  cpu: number;
  wall: number;
}

function measure(frames: Uint8Array[], seconds: number): Figure {
  const b = new Batch();
  const c = new Counters();
  fillBatch(b, frames);
  for (let k = 0; k < 2000; k++) parseBatch(b, c); // warm up: let the optimizing tier settle
  let batches = 0;
  const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let t = t0;
  while (t < deadline) {
    for (let k = 0; k < 1000; k++) parseBatch(b, c);
    batches += 1000;
    t = process.hrtime.bigint();
  }
  const cpu = process.cpuUsage(cpu0);
  if (c.events.some((x) => x !== 0)) throw new Error('bench frames must all parse cleanly');
  const packets = batches * b.count;
  return { cpu: ((cpu.user + cpu.system) * 1000) / packets, wall: Number(t - t0) / packets };
}

function mixFrames(): Uint8Array[] {
  const specs = [...flowSpecs(BATCH / 2, { proto: 'mix', seed: 5 }), ...flowSpecs(BATCH / 2, { ver: 6, proto: 'mix', seed: 6 })];
  return specs.map((s, k) => buildFrame({ ...s, vlans: k % 3 === 0 ? [100 + (k % 7)] : [] }));
}

const arg = process.argv.indexOf('--seconds');
const seconds = arg > 0 ? Number(process.argv[arg + 1]) : 1;
const udp4 = measure(flowFrames(BATCH, { seed: 1 }), seconds);
const tcp6 = measure(flowFrames(BATCH, { ver: 6, proto: 'tcp', seed: 2 }), seconds);
const mix = measure(mixFrames(), seconds);
const round = (x: number): number => Math.round(x * 100) / 100;
const both = (f: Figure): { cpu_ns: number; wall_ns: number } => ({ cpu_ns: round(f.cpu), wall_ns: round(f.wall) });
console.log(
  JSON.stringify({
    ns_per_packet: round(udp4.cpu),
    workload: 'udp4-64B',
    by_workload: { udp4: both(udp4), tcp6: both(tcp6), mix_v4v6_vlan: both(mix) },
    batch: BATCH,
    load_average_1m: os.loadavg()[0],
    node: process.version,
  }),
);
