/*
 * Multi-host benchmark (issue 14), root, two parts; one JSON line per phase, printed as it ends
 * (--verbose: each agent's published revision and each write on stderr as they happen).
 *
 * propagation (for 3 and for 30 agents): a namespace with a 3-member etcd on loopback, `sfc serve
 * --store --driver noop` seeded with 250 port chains, and N `sfc agent` processes (one per host
 * name, health checks off). Every chain's endpoint ports have no binding:host_id (local to every
 * host) and its one SF on host h<(c mod N) + 1>, so every agent renders a slice of all 250 chains
 * (its own SFs local, the others' behind tunnels). Unconnected veth pairs stand for the links (no
 * traffic here). WRITES times, one API write (PUT the first chain's group, alternately with one and two
 * port pairs; agents' lease TTL 30 s) is timed from just before the request to the moment every agent's record in etcd
 * (watched) shows that model revision live: p50/p99 ms. The revision is etcd's (the model guard's
 * mod_revision, read after the write is acknowledged), the number agents publish; also the agents'
 * and the API's CPU per write.
 *
 * underlay (the same run): a UDP stream of --pps datagrams/s for --seconds through the lab chain
 * (2 hops, 1 instance each) on one host (`sfc serve`, afpacket) and on three hosts (sfc lab up
 * --hosts 3: agents, VXLAN between them: 3 tunnel legs per direction). Per setup: delivered pps
 * and the dataplane processes' CPU (µs) per delivered datagram; underlay_us_per_leg = the extra CPU
 * per datagram of the multi-host chain / 3 legs.
 *
 *   npm run build && flock /tmp/sfc-bench.lock node dist/bench/multihost.js [--writes 40] [--pps 5000] [--seconds 8]
 *       [--chains 250] [--agents 3,30] [--verbose]
 *       [--only propagation|underlay]
 * Other agents' tests may run meanwhile on the 2-core machine: compare ratios within one run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { connectEtcd } from '../src/control/etcd/client.js';
import { watchAgents } from '../src/control/etcd/agents.js';
import { currentRevision } from '../src/control/etcd/model.js';
import { EtcdCluster } from '../src/lab/etcd-cluster.js';
import { distFile, LabDataplane, labUpFor, startTraffic, stopProcess } from '../src/lab/harness.js';
import { hostsLabRunning } from '../src/lab/hosts.js';
import { processCpuMicros, run, runDir } from '../src/lab/process.js';
import { labDown, SERVER } from '../src/lab/topology.js';
import type { UdpRecvResult, UdpSendResult } from '../src/lab/traffic.js';
import { backendNamed } from '../src/dataplane/io/registry.js';

const { values } = parseArgs({
  options: {
    writes: { type: 'string', default: '40' },
    pps: { type: 'string', default: '5000' },
    seconds: { type: 'string', default: '8' },
    chains: { type: 'string', default: '250' },
    agents: { type: 'string', default: '3,30' },
    inner: { type: 'string' },
    verbose: { type: 'boolean', default: false },
    only: { type: 'string' },
  },
});
const WRITES = Number(values.writes);
const CHAINS = Number(values.chains);
const VERBOSE = values.verbose;
const NAME = `sfcb-mh${process.pid}`;
/** --verbose progress on stderr (the result lines stay alone on stdout). */
const progress = (what: object) => VERBOSE && console.error(JSON.stringify({ t_ms: Math.round(performance.now()), ...what }));

/**
 * Agents' lease TTL (s). With the default 5 s, 30 agents starving 2 cores miss keep-alives: leases
 * expire, records vanish and come back, and every agent re-renders for each (seen in their logs).
 */
const LEASE_TTL = 30;
/** Longest wait for every agent to have one revision live before the bench gives up naming the laggards. */
const STALL_MS = 120_000;
const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
const mac = (k: number, kind: number) => `02:${kind.toString(16).padStart(2, '0')}:00:${((k >> 16) & 0xff).toString(16).padStart(2, '0')}:${((k >> 8) & 0xff).toString(16).padStart(2, '0')}:${(k & 0xff).toString(16).padStart(2, '0')}`;

/** CHAINS one-hop chains (chain 0's group has a second pair, the one the writes toggle), SFs spread over n hosts. */
function benchConfig(n: number): string {
  const ports = [];
  const pairs = [];
  const groups = [];
  const classifiers = [];
  const chains = [];
  for (let c = 0; c < CHAINS; c++) {
    const host = `h${(c % n) + 1}`;
    ports.push({ name: `a${c}`, mac_address: mac(c, 1), 'binding:profile': { interface: 'ep0' } });
    ports.push({ name: `b${c}`, mac_address: mac(c, 2), 'binding:profile': { interface: 'ep0' } });
    ports.push({ name: `i${c}`, mac_address: mac(c, 3), 'binding:profile': { interface: 'sf0' }, 'binding:host_id': host });
    ports.push({ name: `o${c}`, mac_address: mac(c, 4), 'binding:profile': { interface: 'sf0' }, 'binding:host_id': host });
    pairs.push({ name: `pp${c}`, ingress: `i${c}`, egress: `o${c}` });
    groups.push({ name: `g${c}`, port_pairs: [`pp${c}`] });
    // (classifiers of different chains may not overlap: one source address each)
    classifiers.push({ name: `f${c}`, ethertype: 'IPv4', protocol: 'udp', source_ip_prefix: `10.9.${c >> 8}.${c & 0xff}/32`, logical_source_port: `a${c}`, logical_destination_port: `b${c}` });
    chains.push({ name: `pc${c}`, chain_id: c + 1, port_pair_groups: [`g${c}`], flow_classifiers: [`f${c}`], chain_parameters: { symmetric: true } });
  }
  ports.push({ name: 'ix', mac_address: mac(0, 5), 'binding:profile': { interface: 'sf0' }, 'binding:host_id': 'h1' });
  ports.push({ name: 'ox', mac_address: mac(0, 6), 'binding:profile': { interface: 'sf0' }, 'binding:host_id': 'h1' });
  pairs.push({ name: 'ppx', ingress: 'ix', egress: 'ox' });
  return stringify({ ports, port_pairs: pairs, port_pair_groups: groups, flow_classifiers: classifiers, port_chains: chains });
}

/** Inside the namespace: etcd, the API, n agents; the write -> live-everywhere times. */
async function propagationInner(n: number, dir: string): Promise<object> {
  const children: ChildProcess[] = [];
  const etcd = await EtcdCluster.start({ dir: join(dir, 'etcd'), basePort: 22379 });
  try {
    const config = join(dir, 'bench.yaml');
    await writeFile(config, benchConfig(n));
    const cli = distFile('cli.js');
    const api = spawn(process.execPath, [cli, 'serve', '--store', etcd.storeUrl, '--driver', 'noop', '--config', config, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'ignore'] });
    children.push(api);
    const url = await new Promise<string>((resolve, reject) => {
      let text = '';
      api.stdout!.on('data', (d: Buffer) => {
        text += d.toString();
        const m = /listening on (http:\/\/\S+)/.exec(text);
        if (m) resolve(m[1]);
      });
      api.once('exit', (code) => reject(new Error(`sfc serve exited (${code})`)));
    });
    const client = await connectEtcd(etcd.endpoints);
    const live = new Map<string, number>();
    let waiter: { want: number; resolve: () => void } | null = null;
    const check = () => {
      if (waiter && live.size === n && [...live.values()].every((r) => r >= waiter!.want)) {
        waiter.resolve();
        waiter = null;
      }
    };
    const watch = await watchAgents(client, (agents) => {
      for (const [h, a] of agents) {
        const r = Number(a.revision ?? -1);
        if (live.get(h) !== r) progress({ agent: h, revision: r, waiting_for: waiter?.want });
        live.set(h, r);
      }
      check();
    });
    /** Until every agent publishes revision `want` live; a stall (STALL_MS) names the agents behind. */
    const allLive = async (want: number) => {
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const behind = Array.from({ length: n }, (_, k) => `h${k + 1}`).filter((h) => (live.get(h) ?? -2) < want);
          reject(new Error(`${behind.length} of ${n} agents not at revision ${want} after ${STALL_MS} ms: ${behind.map((h) => `${h}@${live.get(h) ?? 'no record'}`).join(' ')} (logs: ${dir}/agent-*.log)`));
        }, STALL_MS);
      });
      try {
        await Promise.race([new Promise<void>((resolve) => ((waiter = { want, resolve }), check())), stalled]);
      } finally {
        clearTimeout(timer);
      }
    };
    const started = performance.now();
    const agentPids: number[] = [];
    for (let k = 1; k <= n; k++) {
      const out = openSync(join(dir, `agent-h${k}.log`), 'a');
      const agent = spawn(process.execPath, [cli, 'agent', '--host', `h${k}`, '--store', etcd.storeUrl, '--underlay', `10.88.${k >> 8}.${k & 0xff}`, '--health-interval', '0', '--lease-ttl', String(LEASE_TTL), '--state', join(dir, `agent-h${k}.json`)], {
        stdio: ['ignore', out, out],
      });
      closeSync(out);
      children.push(agent);
      agentPids.push(agent.pid!);
    }
    // The model's revision is etcd's (the guard key's mod_revision), the number agents publish as live;
    // after a write is acknowledged, the guard is at least at that write's revision.
    await allLive(await currentRevision(client));
    const startupMs = performance.now() - started;
    progress({ phase: `${n} agents live`, startup_ms: Math.round(startupMs) });
    const get = async (path: string) => (await fetch(`${url}${path}`)).json() as Promise<Record<string, { id: string; port_pairs?: string[] }[]>>;
    const group = (await get('/v2.0/sfc/port_pair_groups?name=g0')).port_pair_groups[0];
    const ppx = (await get('/v2.0/sfc/port_pairs?name=ppx')).port_pairs[0].id;
    const times: number[] = [];
    const cpu = (pids: number[]) => pids.reduce((s, p) => s + (processCpuMicros(p) ?? 0), 0);
    const cpuBefore = { agents: cpu(agentPids), api: cpu([api.pid!]) };
    for (let w = 0; w < WRITES; w++) {
      const pairs = w % 2 === 0 ? [...group.port_pairs!, ppx] : group.port_pairs!;
      const t0 = performance.now();
      const res = await fetch(`${url}/v2.0/sfc/port_pair_groups/${group.id}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ port_pair_group: { port_pairs: pairs } }) });
      if (!res.ok) throw new Error(`PUT: ${res.status} ${await res.text()}`);
      const want = await currentRevision(client);
      await allLive(want);
      times.push(performance.now() - t0);
      progress({ write: w, revision: want, ms: +times[w].toFixed(1) });
    }
    const perWrite = (us: number) => +(us / WRITES / 1000).toFixed(1);
    const cpuMs = { agents_cpu_ms_per_write: perWrite(cpu(agentPids) - cpuBefore.agents), api_cpu_ms_per_write: perWrite(cpu([api.pid!]) - cpuBefore.api) };
    await watch.close();
    client.close();
    times.sort((a, b) => a - b);
    return { agents: n, chains: CHAINS, writes: WRITES, startup_all_live_ms: Math.round(startupMs), p50_ms: +percentile(times, 50).toFixed(1), p99_ms: +percentile(times, 99).toFixed(1), max_ms: +times[times.length - 1].toFixed(1), ...cpuMs };
  } finally {
    await Promise.all(children.map((c) => stopProcess(c, 5000)));
    await etcd.stop();
  }
}

/** A namespace with the interfaces the agents bind (dummies), then this program again inside it. */
async function propagation(n: number): Promise<object> {
  const ns = `${NAME}-h${n === 3 ? 1 : 2}`;
  const dir = join(runDir(NAME), `p${n}`);
  await mkdir(dir, { recursive: true });
  await run(['ip', 'netns', 'add', ns]);
  try {
    const lines = ['link set lo up'];
    for (const i of ['ul0', 'ep0', 'sf0']) lines.push(`link add ${i} type veth peer name ${i}p`, `link set ${i} up`, `link set ${i}p up`);
    for (let k = 1; k <= n; k++) lines.push(`addr add 10.88.${k >> 8}.${k & 0xff}/16 dev ul0`);
    await run(['ip', '-n', ns, '-batch', '-'], { input: lines.join('\n') + '\n' });
    // (the inner run's progress lines and errors go straight to our stderr)
    const inner = spawn('ip', ['netns', 'exec', ns, process.execPath, process.argv[1], '--inner', `${n}:${dir}`, '--writes', String(WRITES), '--chains', String(CHAINS), ...(VERBOSE ? ['--verbose'] : [])], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stdout = '';
    inner.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    const code = await new Promise<number | null>((resolve) => inner.once('exit', resolve));
    if (code !== 0) throw new Error(`propagation with ${n} agents failed (exit ${code}); agents' logs kept in ${dir}`);
    await rm(dir, { recursive: true, force: true });
    return JSON.parse(stdout.trim().split('\n').pop()!) as object;
  } finally {
    await run(['ip', 'netns', 'pids', ns], { check: false }).then(({ stdout }) => stdout.split(/\s+/).filter(Boolean).forEach((p) => process.kill(Number(p), 'SIGKILL')));
    await run(['ip', 'netns', 'del', ns], { check: false });
  }
}

/** UDP through the 2-hop chain; delivered pps and the dataplane processes' CPU per delivered datagram. */
async function stream(lab: Parameters<typeof startTraffic>[0], pids: number[]): Promise<{ delivered_pps: number; cpu_us_per_packet: number; lost: number }> {
  const seconds = Number(values.seconds);
  const recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:6001`, '--idle', '2', '--seconds', String(seconds + 30)]);
  await recv.listening;
  const cpu = () => pids.reduce((s, p) => s + (processCpuMicros(p) ?? 0), 0);
  const before = cpu();
  const send = await startTraffic<UdpSendResult>(lab, lab.clientNs, ['udp-send', '--connect', `${SERVER.ip}:6001`, '--flows', '16', '--pps', String(values.pps), '--seconds', String(seconds)]);
  const sent = await send.result;
  const got = await recv.result;
  const used = cpu() - before;
  return { delivered_pps: Math.round(got.received / sent.seconds), cpu_us_per_packet: +(used / Math.max(1, got.received)).toFixed(2), lost: sent.sent - got.received };
}

async function underlay(): Promise<object> {
  const one = `${NAME}-one`;
  const many = `${NAME}-three`;
  await labDown(one);
  await labDown(many);
  try {
    const lab = await labUpFor(backendNamed('afpacket'), { name: one, hops: 2, instances: 1 });
    const dp = await LabDataplane.start(lab, { backend: 'afpacket', config: lab.configPath, args: ['--health-interval', '0'] });
    const single = await stream(lab, [dp.pid]);
    await dp.stop();
    await labDown(one);
    const multi = await hostsLabRunning({ name: many, hops: 2, instances: 1, hosts: 3 }, ['--health-interval', '0']);
    const three = await stream(multi.lab, [...multi.agents.values()].map((a) => a.pid!));
    await multi.api.stop();
    return {
      offered_pps: Number(values.pps),
      one_host: single,
      three_hosts: three,
      pps_ratio: +(three.delivered_pps / single.delivered_pps).toFixed(3),
      cpu_ratio: +(three.cpu_us_per_packet / single.cpu_us_per_packet).toFixed(2),
      underlay_us_per_leg: +((three.cpu_us_per_packet - single.cpu_us_per_packet) / 3).toFixed(2),
    };
  } finally {
    await labDown(one);
    await labDown(many);
  }
}

async function main(): Promise<void> {
  if (values.inner) {
    const [n, dir] = values.inner.split(':');
    console.log(JSON.stringify(await propagationInner(Number(n), dir)));
    return;
  }
  // One JSON line per phase as it ends.
  const phase = (p: string) => values.only === undefined || values.only === p;
  if (phase('propagation')) for (const n of values.agents.split(',').map(Number)) console.log(JSON.stringify({ bench: 'multihost', phase: 'propagation', ...(await propagation(n)) }));
  if (phase('underlay')) console.log(JSON.stringify({ bench: 'multihost', phase: 'underlay', ...(await underlay()) }));
  await rm(runDir(NAME), { recursive: true, force: true });
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
