/*
 * Control-plane benchmark: API writes per second with durable state, and how soon a change is
 * live in the dataplane.
 *
 * Workload (through the REST API, keep-alive HTTP, 8 requests in flight for the bulk phases):
 * 2,000 SF ports + 250 client ports (the classifiers' logical source ports), 1,000 port pairs,
 * 250 groups of 4 pairs, 500 classifiers (tcp, one /24 each), 250 chains (1 group, 2
 * classifiers), then 100 chain updates one at a time (each drops a classifier: a real recompile).
 *
 *   driver noop: `sfc serve --driver noop --state <tmp>` as its own process (dist/src/cli.js);
 *     reports writes/s per phase and overall, update latency, server CPU, state file size.
 *   driver userspace: in this process, a Store with a durable StateFile and the UserspaceDriver
 *     publishing to the worker-thread Dataplane (afpacket; the ports' interfaces do not exist, so
 *     the workers run with every port down — the tables still compile and go live). For each
 *     update: generation_live_ms = from sending the PUT to the driver's publish resolving (the
 *     workers report the generation live), publish_ms = compile-to-live inside the driver, and
 *     live_minus_ack_ms = live time minus acknowledgement time (≤ 0: the change was live before
 *     the API answered). Without the native addon it falls back to publish = no-op and says so.
 *
 * Output: one JSON line per driver. Run: npm run build && node dist/bench/control.js [--only noop|userspace]
 * About 10-20 s of CPU. Targets: >= 500 writes/s durable; new generation live within 50 ms.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { processCpuMicros } from '../src/lab/topology.js';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startApiServer } from '../src/control/api.js';
import { SfcClient } from '../src/control/client.js';
import { DriverManager } from '../src/control/driver.js';
import { StateFile } from '../src/control/persist.js';
import { Store } from '../src/control/store.js';
import { UserspaceDriver } from '../src/control/drivers/userspace/driver.js';
import type { Tables } from '../src/dataplane/tables.js';

const N = { sfPorts: 2000, clientPorts: 250, pairs: 1000, groups: 250, classifiers: 500, chains: 250, updates: 100 };
const IN_FLIGHT = 8;
const here = dirname(fileURLToPath(import.meta.url));
const CLI = join(here, '..', 'src', 'cli.js');

const hex = (n: number) => (n & 255).toString(16).padStart(2, '0');
const mac = (kind: number, i: number) => `02:00:${hex(kind)}:${hex(i >> 16)}:${hex(i >> 8)}:${hex(i)}`;
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

async function inParallel<T>(items: T[], fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(range(IN_FLIGHT).map(lane));
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

function summary(values: number[]) {
  const s = [...values].sort((a, b) => a - b);
  return { p50: round(percentile(s, 50)), p99: round(percentile(s, 99)), max: round(s.at(-1) ?? NaN) };
}

/** Run the workload; `onUpdate(i, sent, acked)` sees each of the sequential chain updates. */
async function workload(client: SfcClient, onUpdate: (i: number, sent: number, acked: number) => void) {
  const ids: Record<'sf' | 'client' | 'pairs' | 'groups' | 'fcs' | 'chains', string[]> = { sf: [], client: [], pairs: [], groups: [], fcs: [], chains: [] };
  const phases: Record<string, { writes: number; seconds: number; per_s: number }> = {};
  let writes = 0;
  const phase = async (name: string, count: number, one: (i: number) => Promise<void>) => {
    const t0 = performance.now();
    await inParallel(range(count), one);
    const seconds = (performance.now() - t0) / 1000;
    phases[name] = { writes: count, seconds: round(seconds, 3), per_s: Math.round(count / seconds) };
    writes += count;
  };
  const t0 = performance.now();
  await phase('ports', N.sfPorts + N.clientPorts, async (i) => {
    const sf = i < N.sfPorts;
    const k = sf ? i : i - N.sfPorts;
    const port = await client.create('ports', {
      name: sf ? `p${k}` : `c${k}`,
      mac_address: mac(sf ? 1 : 2, k),
      'binding:profile': { interface: sf ? `sfcb${k % 50}` : `sfcc${k % 10}` },
    });
    (sf ? ids.sf : ids.client)[k] = port.id;
  });
  await phase('port_pairs', N.pairs, async (i) => {
    ids.pairs[i] = (await client.create('port_pairs', { name: `pp${i}`, ingress: ids.sf[2 * i], egress: ids.sf[2 * i + 1] })).id;
  });
  const perGroup = N.pairs / N.groups;
  await phase('port_pair_groups', N.groups, async (i) => {
    const members = ids.pairs.slice(perGroup * i, perGroup * (i + 1));
    ids.groups[i] = (await client.create('port_pair_groups', { name: `g${i}`, port_pairs: members })).id;
  });
  await phase('flow_classifiers', N.classifiers, async (i) => {
    ids.fcs[i] = (
      await client.create('flow_classifiers', {
        name: `fc${i}`,
        protocol: 'tcp',
        destination_ip_prefix: `10.${i >> 8}.${i & 255}.0/24`,
        logical_source_port: ids.client[i >> 1],
      })
    ).id;
  });
  await phase('port_chains', N.chains, async (i) => {
    const chain = { name: `pc${i}`, port_pair_groups: [ids.groups[i]], flow_classifiers: [ids.fcs[2 * i], ids.fcs[2 * i + 1]] };
    ids.chains[i] = (await client.create('port_chains', chain)).id;
  });
  const createSeconds = (performance.now() - t0) / 1000;
  const latencies: number[] = [];
  const tu = performance.now();
  for (let i = 0; i < N.updates; i++) {
    const sent = performance.now();
    await client.update('port_chains', ids.chains[i]!, { flow_classifiers: [ids.fcs[2 * i]] });
    const acked = performance.now();
    latencies.push(acked - sent);
    onUpdate(i, sent, acked);
  }
  const updateSeconds = (performance.now() - tu) / 1000;
  writes += N.updates;
  return {
    writes,
    seconds: round(createSeconds + updateSeconds, 3),
    writes_per_s: Math.round(writes / (createSeconds + updateSeconds)),
    phases,
    updates: { writes: N.updates, per_s: Math.round(N.updates / updateSeconds), latency_ms: summary(latencies) },
  };
}

/** CPU seconds used so far by a process (utime + stime). */
function cpuSeconds(pid: number): number {
  return (processCpuMicros(pid) ?? 0) / 1e6;
}

async function benchNoop(dir: string) {
  const state = join(dir, 'noop', 'state.json');
  const args = [CLI, 'serve', '--driver', 'noop', '--listen', '127.0.0.1:0', '--state', state];
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      proc.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening on (\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      proc.once('exit', (code) => reject(new Error(`sfc serve exited with ${code}`)));
    });
    const cpu0 = cpuSeconds(proc.pid!);
    const result = await workload(new SfcClient(url), () => undefined);
    const serverCpu = cpuSeconds(proc.pid!) - cpu0;
    return {
      driver: 'noop',
      durable: true,
      process: 'sfc serve (separate)',
      ...result,
      server_cpu_ms_per_write: round((serverCpu * 1000) / result.writes, 3),
      state_file_bytes: (await stat(state)).size,
    };
  } finally {
    proc.kill('SIGTERM');
  }
}

async function benchUserspace(dir: string) {
  const { file } = await StateFile.open(join(dir, 'userspace', 'state.json'));
  let publish: (t: Tables) => Promise<void> = async () => undefined;
  let dataplane: { close(): Promise<void> } | undefined;
  let mode = 'worker-thread Dataplane (afpacket, 1 worker)';
  try {
    const { Dataplane } = await import('../src/dataplane/runtime.js');
    const dp = new Dataplane({ backend: 'afpacket', workers: 1, log: () => undefined });
    dataplane = dp;
    publish = (t) => dp.publish(t);
  } catch (e) {
    mode = `none: publish is a no-op (${(e as Error).message.split('\n')[0]})`;
  }
  const live: { start: number; end: number; generation: number }[] = [];
  const driver = new UserspaceDriver(async (t) => {
    const start = performance.now();
    await publish(t);
    live.push({ start, end: performance.now(), generation: t.generation });
  });
  const store = new Store({ drivers: new DriverManager([driver]), persist: (next) => file.write(next), linkUp: () => false });
  const api = await startApiServer({ store, host: '127.0.0.1', port: 0 });
  const updates: { sent: number; acked: number; publishes: number }[] = [];
  try {
    const result = await workload(new SfcClient(api.url), (_i, sent, acked) => updates.push({ sent, acked, publishes: live.length }));
    const perUpdate = updates.map((u) => ({ u, p: live[u.publishes - 1]! }));
    return {
      driver: 'userspace',
      durable: true,
      process: 'in process',
      dataplane: mode,
      ...result,
      final_generation: live.at(-1)?.generation,
      generation_live_ms: summary(perUpdate.map(({ u, p }) => p.end - u.sent)),
      publish_ms: summary(perUpdate.map(({ p }) => p.end - p.start)),
      live_minus_ack_ms: summary(perUpdate.map(({ u, p }) => p.end - u.acked)),
    };
  } finally {
    await api.close();
    await dataplane?.close();
    await file.close();
  }
}

async function main() {
  const dir = await mkdtemp(join(tmpdir(), 'sfc-bench-control-'));
  const env = { node: process.version, cpus: cpus().length, loadavg_start: loadavg().map((x) => round(x)) };
  try {
    const only = process.argv[process.argv.indexOf('--only') + 1];
    for (const [name, run] of [['noop', benchNoop], ['userspace', benchUserspace]] as const) {
      if (process.argv.includes('--only') && only !== name) continue;
      const result = await run(dir).catch((e: Error) => ({ driver: name, error: e.message }));
      console.log(JSON.stringify({ bench: 'control', ...env, ...result, loadavg_end: loadavg().map((x) => round(x)) }));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
