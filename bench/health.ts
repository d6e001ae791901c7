/*
 * SF health benchmark, in the netns lab (root): how soon a dead SF instance is acted on, what its
 * failure costs the traffic, and what the probes cost.
 *
 * `sfc serve` (afpacket, default health settings) in L-dp on a lab of 2 hops x 2 instances; one
 * paced UDP stream (32 flows, --pps in total) crosses the chain. For each way of killing an SF,
 * FAILURES times an instance of hop 1 (alternately 1 and 2) is killed:
 *   link        its in0 set down inside its namespace (found by link state)
 *   forwarding  net.ipv4.conf.all.forwarding=0 inside its namespace, links up (found by probes)
 *   detection_ms  from just before the kill command to /metrics showing sfc_instance_up = 0
 *                 (polled every 5 ms: the figure includes up to one poll and the command's start-up)
 * then it is revived and its return awaited (sfc_instance_up = 1) before the next failure.
 *   lost_per_failure  UDP packets the receiver counted lost during the mode's run / FAILURES (the
 *                     stream sends about pps/2 packets per second into the killed instance)
 *   probe_pps_per_instance  probes back per second per probed instance (probes_returned over the
 *                     whole run / seconds / 4 instances; the probes of a dead SF are not counted)
 *
 *   npm run build && flock /tmp/sfc-bench.lock node dist/bench/health.js [--failures 20] [--pps 1000]
 * Output: one JSON line.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { LabDataplane, labUpFor, metric, startTraffic } from '../src/lab/harness.js';
import { labDown, netnsExec, SERVER } from '../src/lab/topology.js';
import type { UdpRecvResult, UdpSendResult } from '../src/lab/traffic.js';
import { backendNamed } from '../src/dataplane/io/registry.js';
import { DEFAULT_HEALTH } from '../src/control/health-monitor.js';

const { values } = parseArgs({ options: { failures: { type: 'string', default: '20' }, pps: { type: 'string', default: '1000' } } });
const FAILURES = Number(values.failures);
const PPS = Number(values.pps);
const LAB = `sfcb-hl${process.pid}`;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function main(): Promise<void> {
  await labDown(LAB);
  const lab = await labUpFor(backendNamed('afpacket'), { name: LAB, hops: 2, instances: 2 });
  let dp: LabDataplane | null = null;
  try {
    dp = await LabDataplane.start(lab, { backend: 'afpacket', config: lab.configPath });
    const d = dp;
    const upIs = async (pp: string, up: 0 | 1, since: number): Promise<number> => {
      for (;;) {
        const samples = await d.metrics();
        if (samples.some((s) => s.name === 'sfc_instance_up' && s.labels.instance === pp && s.value === up)) return performance.now() - since;
        if (performance.now() - since > 10_000) throw new Error(`${pp} never became ${up ? 'up' : 'down'}`);
        await sleep(5);
      }
    };
    await upIs('pp11', 1, performance.now());
    const round = (x: number) => Math.round(x * 10) / 10;
    const kills = {
      link: (ns: string, dead: boolean) => netnsExec(ns, ['ip', 'link', 'set', 'in0', dead ? 'down' : 'up']),
      forwarding: (ns: string, dead: boolean) => netnsExec(ns, ['sysctl', '-qw', `net.ipv4.conf.all.forwarding=${dead ? 0 : 1}`]),
    };
    const startedAt = performance.now();
    const returnedBefore = metric(await d.metrics(), 'sfc_packets_total', { event: 'probes_returned' });
    const modes: Record<string, unknown> = {};
    for (const [mode, kill] of Object.entries(kills)) {
      const seconds = Math.ceil(FAILURES * 1.5) + 10;
      const port = mode === 'link' ? 6001 : 6002;
      const recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:${port}`, '--idle', '2', '--seconds', String(seconds + 20)]);
      await recv.listening;
      const send = await startTraffic<UdpSendResult>(lab, lab.clientNs, ['udp-send', '--connect', `${SERVER.ip}:${port}`, '--flows', '32', '--pps', String(PPS), '--seconds', String(seconds)]);
      await sleep(1000); // the stream is flowing everywhere
      const detection: number[] = [];
      const recovery: number[] = [];
      for (let k = 0; k < FAILURES; k++) {
        const inst = (k % 2) + 1;
        const sf = lab.sfs.find((s) => s.hop === 1 && s.instance === inst)!;
        const t0 = performance.now();
        await kill(sf.ns, true);
        detection.push(await upIs(`pp1${inst}`, 0, t0));
        await sleep(200);
        const t1 = performance.now();
        await kill(sf.ns, false);
        recovery.push(await upIs(`pp1${inst}`, 1, t1));
        await sleep(200);
      }
      const [sent, received] = await Promise.all([send.result, recv.result]);
      const sorted = [...detection].sort((a, b) => a - b);
      const rsorted = [...recovery].sort((a, b) => a - b);
      modes[mode] = {
        detection_ms: { p50: round(percentile(sorted, 50)), p99: round(percentile(sorted, 99)), min: round(sorted[0]), max: round(sorted.at(-1)!) },
        back_up_ms: { p50: round(percentile(rsorted, 50)), p99: round(percentile(rsorted, 99)) },
        udp: { pps: PPS, flows: 32, sent: sent.sent, received: received.received, lost: received.lost, lost_per_failure: round(received.lost / FAILURES) },
      };
    }
    const returned = metric(await d.metrics(), 'sfc_packets_total', { event: 'probes_returned' }) - returnedBefore;
    const elapsed = (performance.now() - startedAt) / 1000;
    console.log(
      JSON.stringify({
        bench: 'health',
        date: new Date().toISOString(),
        failures_per_mode: FAILURES,
        health: DEFAULT_HEALTH,
        ...modes,
        probe_pps_per_instance: round(returned / elapsed / lab.sfs.length),
      }),
    );
  } finally {
    await dp?.stop();
    await labDown(LAB);
  }
}

main().catch((e: Error) => {
  console.error(e.stack ?? e.message);
  process.exit(1);
});
