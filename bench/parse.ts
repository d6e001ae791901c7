/*
 * bench/parse: nanoseconds per packet of parseBatch over full batches of 64-byte frames.
 * Workloads: udp4 (the target figure), tcp6, and a mix of v4/v6 TCP/UDP with some VLAN tags.
 *
 * The machine may be shared, so time is taken in short bursts (BURST batches each) for the given
 * duration: best_ns is the fastest burst (the parser's own cost, with the least interference from
 * other processes), median_ns the typical burst, cpu_ns the process CPU time over all bursts.
 * ns_per_packet is udp4's best_ns. Prints one JSON object.
 * Usage: node dist/bench/parse.js [--seconds S] (default 1 per workload).
 */
import os from 'node:os';
import { Batch, BATCH } from '../src/packet/batch.js';
import { Counters } from '../src/packet/counters.js';
import { parseBatch } from '../src/dataplane/parse.js';
import { buildFrame, fillBatch, flowFrames, flowSpecs } from '../src/dataplane/frames.js';

const BURST = 20;

interface Figure {
  best_ns: number;
  median_ns: number;
  cpu_ns: number;
}

function measure(frames: Uint8Array[], seconds: number): Figure {
  const b = new Batch();
  const c = new Counters();
  fillBatch(b, frames);
  for (let k = 0; k < 5000; k++) parseBatch(b, c); // warm up: let the optimizing tier settle
  const perBurst = BURST * b.count;
  const samples: number[] = [];
  const cpu0 = process.cpuUsage();
  const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  for (let t = process.hrtime.bigint(); t < deadline; ) {
    for (let k = 0; k < BURST; k++) parseBatch(b, c);
    const now = process.hrtime.bigint();
    samples.push(Number(now - t) / perBurst);
    t = now;
  }
  const cpu = process.cpuUsage(cpu0);
  if (c.events.some((x) => x !== 0)) throw new Error('bench frames must all parse cleanly');
  samples.sort((x, y) => x - y);
  const round = (x: number): number => Math.round(x * 100) / 100;
  return {
    best_ns: round(samples[0]),
    median_ns: round(samples[samples.length >> 1]),
    cpu_ns: round(((cpu.user + cpu.system) * 1000) / (samples.length * perBurst)),
  };
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
console.log(
  JSON.stringify({
    ns_per_packet: udp4.best_ns,
    workload: 'udp4-64B',
    by_workload: { udp4, tcp6, mix_v4v6_vlan: mix },
    batch: BATCH,
    burst_packets: BURST * BATCH,
    load_average_1m: Math.round(os.loadavg()[0] * 100) / 100,
    cpus: os.cpus().length,
    node: process.version,
  }),
);
