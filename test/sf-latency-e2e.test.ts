/*
 * Time inside each SF, end to end (root, the netns lab, afpacket): `sfc serve` carries paced UDP
 * flows through the two-hop chain (two instances per hop); one instance, sf11, is made slow: its
 * kernel forwarding is switched off and a userspace relay (support/slow-sf.py, AF_PACKET sockets)
 * forwards instead, holding each frame 2 ms. The relay and the dataplane run at a real-time
 * priority, so that other work on the machine adds to neither. The dataplane's sampled histograms, read with
 * `sfc get port-pair X --json` (sf_time, from /metrics), must show it: sf11's median is 2 ms
 * (within 20%) above the others', whose medians stay under 0.2 ms. `sfc top --json` shows the
 * the slow instance's median above the others'.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { distFile, LabDataplane, labUpFor, startTraffic, stopProcess } from '../src/lab/harness.js';
import { CLIENT, labDown, netnsExec, netnsSpawn, SERVER, type Lab } from '../src/lab/topology.js';
import type { UdpRecvResult, UdpSendResult } from '../src/lab/traffic.js';
import { backendNamed } from '../src/dataplane/io/registry.js';
import { nativeAvailable } from '../src/dataplane/io/native.js';
import type { PairSfTime } from '../src/commands/get.js';
import type { TopView } from '../src/commands/top.js';
import { prerequisites } from './support/prereq.js';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

const backend = backendNamed('afpacket');
const LAB = `sfct-lat${process.pid}`;
const DELAY_MS = 2;
const RELAY = fileURLToPath(new URL('./support/slow-sf.py', import.meta.url));
const run = prerequisites('e2e SF latency', {
  root: true,
  commands: ['ip', 'chrt', '/usr/bin/python3'],
  check: () => (nativeAvailable() ? null : 'the native addon is not built (npm run build:native)'),
});

describe.skipIf(!run)('time inside each SF (afpacket)', () => {
  let lab: Lab;
  let dp: LabDataplane | null = null;
  let relay: ChildProcess | null = null;

  beforeAll(async () => {
    await labDown(LAB);
    lab = await labUpFor(backend, { name: LAB, hops: 2, instances: 2 });
  }, 120_000);

  afterAll(async () => {
    if (relay) await stopProcess(relay);
    await dp?.stop();
    await labDown(LAB);
  });

  const cli = (args: string[]) => netnsExec(lab.dpNs, [process.execPath, distFile('cli.js'), ...args]);

  it("a slow instance's median is the added delay above the others', which stay under 0.2 ms", async () => {
    const slowNs = lab.sfs.find((s) => s.hop === 1 && s.instance === 1)!.ns;
    await netnsExec(slowNs, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=0', 'net.ipv6.conf.all.forwarding=0']);
    relay = await netnsSpawn(LAB, slowNs, ['chrt', '-f', '10', '/usr/bin/python3', RELAY, String(DELAY_MS), CLIENT.mac, SERVER.mac], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: relay!.stdout! }).once('line', (l) => (l === 'ready' ? resolve() : reject(new Error(`relay: ${l}`))));
      relay!.once('exit', (code) => reject(new Error(`relay exited ${code}`)));
    });

    dp = await LabDataplane.start(lab, { backend: 'afpacket', config: lab.configPath });
    // The dataplane's threads at a real-time priority too: other work on the machine delays neither side of the measurement.
    await netnsExec(lab.dpNs, ['chrt', '-f', '-a', '-p', '10', String(dp.pid)]);
    const logFile = dp.logFile;
    onTestFailed(() => console.log(`serve log:\n${readFileSync(logFile, 'utf8')}`));

    const recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:5001`, '--idle', '2', '--seconds', '20']);
    await recv.listening;
    const send = await startTraffic<UdpSendResult>(lab, lab.clientNs, ['udp-send', '--connect', `${SERVER.ip}:5001`, '--flows', '32', '--pps', '1500', '--seconds', '6']);
    // sfc top over the last second of traffic
    const top = JSON.parse((await cli(['top', '--server', dp.url, '--json', '--interval', '1'])).stdout) as TopView;
    expect((await send.result).ok).toBe(true);
    const received = await recv.result;
    expect(received.received).toBeGreaterThan(0);

    const pairs = ['pp11', 'pp12', 'pp21', 'pp22'];
    const time = new Map<string, PairSfTime>();
    for (const pp of pairs) {
      const shown = JSON.parse((await cli(['get', 'port-pair', pp, '--json', '--url', dp.url])).stdout) as { name: string; sf_time: PairSfTime | null };
      console.log(pp, JSON.stringify(shown.sf_time));
      expect(shown.name).toBe(pp);
      expect(shown.sf_time, `${pp} has an sf_time`).not.toBeNull();
      expect(shown.sf_time!.samples, `${pp} samples`).toBeGreaterThanOrEqual(20);
      time.set(pp, shown.sf_time!);
    }
    const others = pairs.filter((pp) => pp !== 'pp11').map((pp) => time.get(pp)!.p50_us!);
    for (const [k, p50] of others.entries()) expect(p50, `${pairs[k + 1]} median`).toBeLessThan(200);
    const added = time.get('pp11')!.p50_us! - others.reduce((a, b) => a + b, 0) / others.length;
    expect(added).toBeGreaterThan(DELAY_MS * 1000 * 0.8);
    expect(added).toBeLessThan(DELAY_MS * 1000 * 1.2);

    const topRows = top.chains.flatMap((c) => c.hops.flatMap((h) => h.instances));
    expect(topRows.map((r) => r.instance).sort()).toEqual(pairs);
    const slow = topRows.find((r) => r.instance === 'pp11')!;
    expect(slow.sfTime?.p50Us).toBeGreaterThan(DELAY_MS * 1000 * 0.8);
    // (over one second: a handful of samples each, so only the order is checked)
    for (const r of topRows.filter((x) => x.instance !== 'pp11')) expect(r.sfTime?.p50Us ?? Infinity, r.instance).toBeLessThan(slow.sfTime!.p50Us!);
  }, 120_000);
});
