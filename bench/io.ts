/*
 * bench/io: raw throughput of the packet I/O addon between the two ends of a veth pair, in a
 * throwaway network namespace (root). One JSON line per case:
 *
 *   tx       the main thread sends 64-byte frames in bursts of 256 (sendmmsg) on va as fast as
 *            it can; nothing reads vb.
 *   rx-v2/3  a generator thread sends as above on va; the main thread receives on vb through the
 *            ring (TPACKET_V2 or V3) the way the runtime does: bursts until idle, then sleep on
 *            readiness.
 *
 * Fields: case, frame_bytes, seconds, offered_pps (frames the sender got accepted), pps (frames
 * sent, or received), cpu_us_per_packet (main thread user+system time per frame, from
 * /proc/self/task/<tid>/stat). The veth peer's receive work runs on the sending CPU (LAB-NOTES).
 *
 * Usage: node dist/bench/io.js [--seconds 2] [--size 64] [--only tx|rx-v2|rx-v3]
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { isMainThread, Worker, workerData } from 'node:worker_threads';
import { Batch, BATCH } from '../src/packet/batch.js';
import { openAfPacket } from '../src/dataplane/io/afpacket.js';
import { enterNetns } from '../src/dataplane/io/native.js';
import { flowFrames } from '../src/dataplane/frames.js';

const NS = 'sfct-bench-io';

interface GenData {
  role: 'io-gen';
  seconds: number;
  size: number;
  result: Float64Array;
}

/** A batch full of frames and the identity index list. */
function loaded(size: number): { b: Batch; idx: Uint16Array } {
  const b = new Batch();
  for (const f of flowFrames(BATCH, { frameLen: size })) b.push(f, 0);
  return { b, idx: Uint16Array.from({ length: BATCH }, (_, i) => i) };
}

/** Send full bursts on `ifname` for `seconds`; returns frames accepted. */
function blast(ifname: string, seconds: number, size: number): number {
  const port = openAfPacket(ifname);
  const { b, idx } = loaded(size);
  const end = performance.now() + seconds * 1000;
  let sent = 0;
  while (performance.now() < end) {
    for (let k = 0; k < 16; k++) sent += port.txBurst(b, idx, BATCH);
  }
  port.close();
  return sent;
}

/** user+system CPU seconds of the calling thread (main thread: tid = pid). */
function threadCpu(): number {
  const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

function txCase(seconds: number, size: number) {
  const cpu0 = threadCpu();
  const sent = blast('va', seconds, size);
  const cpu = threadCpu() - cpu0;
  return { case: 'tx', frame_bytes: size, seconds, offered_pps: Math.round(sent / seconds), pps: Math.round(sent / seconds), cpu_us_per_packet: +((cpu * 1e6) / sent).toFixed(3) };
}

async function rxCase(version: 2 | 3, seconds: number, size: number) {
  const port = openAfPacket('vb', { version });
  const b = new Batch();
  const result = new Float64Array(new SharedArrayBuffer(8));
  const data: GenData = { role: 'io-gen', seconds, size, result };
  const gen = new Worker(new URL(import.meta.url), { workerData: data });
  let received = 0;
  let counting = true;
  const cpu0 = threadCpu();
  await new Promise<void>((resolve) => {
    const drain = (): void => {
      if (!counting) return resolve();
      let n: number;
      let turns = 0;
      do {
        b.reset();
        n = port.rxBurst(b, 0, BATCH);
        received += n;
      } while (n > 0 && ++turns < 64);
      if (n > 0) setImmediate(drain);
      else port.onReadable(drain);
    };
    gen.once('exit', () => {
      counting = false;
      setTimeout(resolve, 20);
    });
    drain();
  });
  const cpu = threadCpu() - cpu0;
  port.close();
  const offered = result[0];
  return {
    case: `rx-v${version}`,
    frame_bytes: size,
    seconds,
    offered_pps: Math.round(offered / seconds),
    pps: Math.round(received / seconds),
    cpu_us_per_packet: +((cpu * 1e6) / Math.max(1, received)).toFixed(3),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '2' }, size: { type: 'string', default: '64' }, only: { type: 'string' } } });
  const seconds = Number(values.seconds);
  const size = Number(values.size);
  const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { stdio: 'ignore' });
  sh(`ip netns del ${NS} 2>/dev/null; ip netns add ${NS}`);
  sh(`ip netns exec ${NS} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1`);
  sh(`ip -n ${NS} link add va type veth peer name vb && ip -n ${NS} link set va up && ip -n ${NS} link set vb up`);
  const leave = enterNetns(NS);
  try {
    const cases: [string, () => Promise<object> | object][] = [
      ['tx', () => txCase(seconds, size)],
      ['rx-v2', () => rxCase(2, seconds, size)],
      ['rx-v3', () => rxCase(3, seconds, size)],
    ];
    for (const [name, run] of cases) if (!values.only || values.only === name) console.log(JSON.stringify(await run()));
  } finally {
    leave();
    sh(`ip netns del ${NS} 2>/dev/null || true`);
  }
}

if (isMainThread) {
  await main();
} else if ((workerData as GenData | null)?.role === 'io-gen') {
  const d = workerData as GenData;
  d.result[0] = blast('va', d.seconds, d.size);
}
