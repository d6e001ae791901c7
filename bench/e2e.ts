/*
 * End-to-end benchmark against peers, on the network-namespace lab (2 hops x 2 instances; the
 * one-hop topology uses only client -> cli0 -> srv0 -> server). trafgen offers 64-byte UDP on
 * CPU 0, the forwarder runs on CPU 1, an nftables sink counts what arrives correctly rewritten
 * (dst MAC = the server's; TTL 64 on one hop, 62 through the chain's two L3 SF hops).
 *
 *   npm run build && node dist/bench/e2e.js [--quick] [--rounds N] [--seconds S] [--only NAMES]
 *       [--flows 256,65536] [--no-latency] [--no-tcp] [--no-udp]
 *
 * --only takes forwarder and/or topology names, comma-separated (sfc-afpacket, sfc-afxdp,
 * sfc-afxdp-wakeup, sfc-afxdp-nogso, sfc-afxdp-inplace, sfc-afxdp-nohealth, sfc-afxdp-busypoll,
 * sfc-afxdp-busypoll-nogso, sfc-afxdp-busypoll-h1000,
 * sfc-afxdp-busypoll-nohealth, sfc-cap, sfc-ovs, ovs, ovs-tso, ovs-afxdp, netsniff-ng, tc;
 * one-hop, chain): `--only ovs,chain` runs OVS on the chain only.
 * --quick: 1 round of 1 s (CI smoke). Default: 2 rounds of 5 s, alternating forwarders within each
 * round (A B C A B C), about 5 minutes.
 *
 * Output, one JSON object per line:
 *   {bench:"e2e", forwarder, topology, flows, round, seconds, offered_pps, delivered_pps, loss,
 *    misdelivered_pps, cpu_us_per_pkt, cpu_util, [instance_share] | error}
 *     delivered = frames at the sink with the right MAC and TTL; misdelivered = frames that reached
 *     udp/9 at the sink otherwise; cpu_util = forwarder CPU time / wall time (1 = one core);
 *     cpu_us_per_pkt = forwarder CPU µs per delivered packet (null for tc: softirq, no process)
 *   {bench:"e2e-latency", forwarder, topology, round, pps, sent, received, lost, p50_us, p99_us, max_us}
 *     one-way, 1,000 pps, one flow, traffic tool timestamps (same host clock), sender and receiver
 *     on the generator's CPU, after 5 s of the same flow as warm-up; one run per forwarder per
 *     round, alternating. wire_*: the same
 *     packets timed by the kernel at the client's and the server's eth0 (bench/e2e/wire-latency.ts)
 *   {bench:"e2e-tcp", forwarder, topology:"chain", streams, round, seconds, gbps, retransmits}
 *     iperf3 -P 4 client -> server through the chain with the endpoints' offloads on (sfc backends
 *     that repair offloads: afpacket, afxdp), alternating forwarders within each round
 *   {bench:"e2e-summary", medians: [...], ratios: {...}, latency: [...], tcp: [...]}
 *
 * Everything (namespaces, OVS daemons, trafgen, dataplanes) is removed at the end and on Ctrl-C;
 * net.core.wmem_default is raised for trafgen (it cannot inside a namespace) and restored.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseOptions } from '../src/util/args.js';
import { chainConfig, CLIENT, describeLab, labDown, labUp, netnsExec, netnsSpawn, SERVER, type Lab } from '../src/lab/topology.js';
import { nextEvent, type UdpRecvResult, type UdpSendResult } from '../src/lab/traffic.js';
import { startWireCapture, stopWireCapture, wireLatency } from './e2e/wire-latency.js';
import { FORWARDERS, type BenchEnv, type Forwarder, type Running, type Topology } from './e2e/forwarders.js';
import {
  GENERATOR_CPU,
  installSink,
  snapshot,
  startGenerator,
  stopGroup,
  writeTrafgenConfigs,
  type Snapshot,
} from './e2e/measure.js';

const LAB = 'sfcb';
const TRAFFIC = fileURLToPath(new URL('../src/lab/traffic.js', import.meta.url));
const WMEM = '/proc/sys/net/core/wmem_default';
const WMEM_FOR_TRAFGEN = 4 * 1024 * 1024;
const LATENCY_PORT = 7000;
/** Inside the lab chain's classifier (all TCP from client to server). */
const TCP_PORT = 5201;

interface Settings {
  rounds: number;
  seconds: number;
  warmup: number;
  flows: number[];
  latencyPackets: number;
  /** Packets of the latency flow sent (1,000 pps) before each latency measurement. */
  latencyWarmup: number;
  /** iperf3 streams through the chain (0: no TCP runs). */
  tcpStreams: number;
  /** The trafgen UDP throughput rounds (false: latency and TCP only). */
  udp: boolean;
  only: string[] | null;
}

type Row = Record<string, unknown>;

let interrupted = false;

function emit(row: Row): void {
  if (!interrupted) console.log(JSON.stringify(row)); // rows cut short by Ctrl-C are not results
}

function settings(argv: string[]): Settings {
  const { values } = parseOptions(argv, {
    quick: { type: 'boolean' },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    only: { type: 'string' },
    flows: { type: 'string' },
    'no-latency': { type: 'boolean' },
    'no-tcp': { type: 'boolean' },
    'no-udp': { type: 'boolean' },
  });
  const quick = values.quick ?? false;
  const num = (v: string | undefined, fallback: number) => {
    const n = v === undefined ? fallback : Number(v);
    if (!(n > 0)) throw new Error(`expected a positive number, got '${v}'`);
    return n;
  };
  return {
    rounds: num(values.rounds, quick ? 1 : 2),
    seconds: num(values.seconds, quick ? 1 : 5),
    warmup: quick ? 0.5 : 1,
    flows: (values.flows ?? '256,65536').split(',').map((f) => num(f, 0)),
    latencyPackets: values['no-latency'] ? 0 : quick ? 300 : 2000,
    latencyWarmup: quick ? 0 : 5000,
    tcpStreams: values['no-tcp'] ? 0 : 4,
    udp: !values['no-udp'],
    only: values.only ? values.only.split(',') : null,
  };
}

const round = (x: number, digits = 0) => Math.round(x * 10 ** digits) / 10 ** digits;

function rates(a: Snapshot, b: Snapshot, topology: Topology): Row {
  const secs = (b.ms - a.ms) / 1000;
  const offered = b.offered - a.offered;
  const key = topology === 'chain' ? 'mac_ttl62' : 'mac_ttl64';
  const delivered = b.sink[key] - a.sink[key];
  const cpu = a.cpuUs !== null && b.cpuUs !== null ? b.cpuUs - a.cpuUs : null;
  return {
    seconds: round(secs, 3),
    offered_pps: round(offered / secs),
    delivered_pps: round(delivered / secs),
    loss: offered > 0 ? round(1 - delivered / offered, 4) : null,
    misdelivered_pps: round((b.sink.all - a.sink.all - delivered) / secs),
    cpu_us_per_pkt: cpu !== null && delivered > 0 ? round(cpu / delivered, 3) : null,
    cpu_util: cpu !== null ? round(cpu / (secs * 1e6), 3) : null,
  };
}

async function throughput(env: BenchEnv, s: Settings, trafgen: Map<number, string>, fwd: Forwarder, topology: Topology, flows: number, r: number): Promise<Row> {
  const base = { bench: 'e2e', forwarder: fwd.name, topology, flows, round: r };
  let running: Running | null = null;
  let gen: Awaited<ReturnType<typeof startGenerator>> | null = null;
  try {
    running = await fwd.start(env, topology);
    gen = await startGenerator(env.lab, trafgen.get(flows)!);
    await sleep(s.warmup * 1000);
    const a = await snapshot(env.lab, running.pid);
    await sleep(s.seconds * 1000);
    const b = await snapshot(env.lab, running.pid);
    if (gen.exitCode !== null) throw new Error(`trafgen stopped early (exit ${gen.exitCode})`);
    return { ...base, ...rates(a, b, topology), ...(running.detail ? await running.detail() : {}) };
  } catch (e) {
    return { ...base, error: e instanceof Error ? e.message : String(e) };
  } finally {
    if (gen) await stopGroup(gen, 'SIGINT');
    if (running) await running.stop();
  }
}

async function latency(env: BenchEnv, s: Settings, fwd: Forwarder, topology: Topology, round: number): Promise<Row> {
  const base = { bench: 'e2e-latency', forwarder: fwd.name, topology, round, pps: 1000 };
  const { lab } = env;
  let running: Running | null = null;
  let recv: Awaited<ReturnType<typeof netnsSpawn>> | null = null;
  const captures: ChildProcess[] = [];
  const pcaps = ['client', 'server'].map((side) => join(env.dir, `latency-${side}.pcap`));
  try {
    running = await fwd.start(env, topology);
    // Warm-up, the same for every forwarder: 5 s of the measured flow before the measurement (a
    // fresh sfc process compiles its hot path and OVS sets up its datapath flows meanwhile). With
    // no receiver yet the server answers ICMP, which crosses the chain backwards.
    const send = ['taskset', '-c', String(GENERATOR_CPU), process.execPath, TRAFFIC, 'udp-send', '--connect', `${SERVER.ip}:${LATENCY_PORT}`, '--pps', '1000'];
    if (s.latencyWarmup > 0) await netnsExec(lab.clientNs, [...send, '--count', String(s.latencyWarmup), '--sport', '40000']);
    for (const [k, ns] of [lab.clientNs, lab.serverNs].entries()) captures.push(await startWireCapture(lab.name, ns, pcaps[k], LATENCY_PORT));
    const limit = String(s.latencyPackets / 1000 + 5);
    const argv = [process.execPath, TRAFFIC, 'udp-recv', '--listen', `${SERVER.ip}:${LATENCY_PORT}`, '--idle', '1', '--seconds', limit];
    // Sender and receiver on the generator's CPU: the forwarder keeps CPU 1 to itself.
    recv = await netnsSpawn(lab.name, lab.serverNs, argv, { cpu: GENERATOR_CPU, detached: true });
    const result = nextEvent<UdpRecvResult>(recv, (e) => e.event === 'result');
    await nextEvent(recv, (e) => e.event === 'listening');
    const sent = JSON.parse((await netnsExec(lab.clientNs, [...send, '--count', String(s.latencyPackets), '--sport', '40000'])).stdout.trim().split('\n').pop()!) as UdpSendResult;
    const r = await result;
    for (const c of captures.splice(0)) await stopWireCapture(c);
    const wire = await wireLatency(pcaps[0], pcaps[1]);
    return {
      ...base,
      sent: sent.sent,
      received: r.received,
      lost: r.lost,
      p50_us: r.latency_us.p50,
      p99_us: r.latency_us.p99,
      max_us: r.latency_us.max,
      wire_n: wire.n,
      wire_p50_us: wire.p50,
      wire_p99_us: wire.p99,
      wire_max_us: wire.max,
    };
  } catch (e) {
    return { ...base, error: e instanceof Error ? e.message : String(e) };
  } finally {
    if (recv) await stopGroup(recv, 'SIGTERM').catch(() => {});
    for (const c of captures) await stopWireCapture(c).catch(() => {});
    if (running) await running.stop();
  }
}

/**
 * TCP through the chain: iperf3 with `tcpStreams` streams for `seconds`, the endpoints' offloads
 * on (TSO, checksum offload) as a real host has them; restored to the UDP runs' setting after.
 */
async function tcpThroughput(env: BenchEnv, s: Settings, fwd: Forwarder, r: number): Promise<Row> {
  const base = { bench: 'e2e-tcp', forwarder: fwd.name, topology: 'chain', streams: s.tcpStreams, round: r };
  const { lab } = env;
  const ends = [lab.clientNs, lab.serverNs];
  let running: Running | null = null;
  let server: Awaited<ReturnType<typeof netnsSpawn>> | null = null;
  try {
    for (const ns of ends) await netnsExec(ns, ['ethtool', '-K', 'eth0', 'tx', 'on']);
    running = await fwd.start(env, 'chain');
    server = await netnsSpawn(lab.name, lab.serverNs, ['iperf3', '-s', '-1', '--forceflush', '-B', SERVER.ip, '-p', String(TCP_PORT)], { detached: true });
    await listening(server);
    const argv = ['iperf3', '-c', SERVER.ip, '-p', String(TCP_PORT), '-P', String(s.tcpStreams), '-t', String(s.seconds), '-J'];
    const out = (await netnsExec(lab.clientNs, argv, { check: false })).stdout;
    const end = (JSON.parse(out) as { end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits: number } }; error?: string });
    if (!end.end?.sum_received) throw new Error(`iperf3: ${end.error ?? 'no result'}`);
    return { ...base, seconds: s.seconds, gbps: round(end.end.sum_received.bits_per_second / 1e9, 3), retransmits: end.end.sum_sent?.retransmits ?? null };
  } catch (e) {
    return { ...base, error: e instanceof Error ? e.message : String(e) };
  } finally {
    if (server) await stopGroup(server, 'SIGTERM').catch(() => {});
    if (running) await running.stop();
    for (const ns of ends) await netnsExec(ns, ['ethtool', '-K', 'eth0', 'tx', 'off'], { check: false });
  }
}

/** Resolve once an iperf3 server says it listens (it prints that line before accepting; --forceflush: unbuffered into a pipe). */
function listening(server: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    server.stdout!.on('data', (d: Buffer) => {
      seen += d.toString();
      if (seen.includes('Server listening')) resolve();
    });
    server.once('exit', (code) => reject(new Error(`iperf3 -s exited (${code}): ${seen.trim()}`)));
  });
}

function median(xs: number[]): number | null {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The rows without an error, grouped by the values of `fields` (in first-seen order). */
function groupRows(rows: Row[], fields: string[]): Row[][] {
  const groups = new Map<string, Row[]>();
  for (const r of rows.filter((x) => !x.error)) {
    const key = fields.map((f) => String(r[f])).join('|');
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  return [...groups.values()];
}

function summary(rows: Row[], latencies: Row[], tcp: Row[]): Row {
  const med = (rs: Row[], k: string) => {
    const m = median(rs.map((r) => r[k]).filter((v): v is number => typeof v === 'number'));
    return m === null ? null : round(m, 4);
  };
  const medians = groupRows(rows, ['forwarder', 'topology', 'flows']).map((rs) => ({
    forwarder: rs[0].forwarder,
    topology: rs[0].topology,
    flows: rs[0].flows,
    rounds: rs.length,
    offered_pps: med(rs, 'offered_pps'),
    delivered_pps: med(rs, 'delivered_pps'),
    loss: med(rs, 'loss'),
    cpu_us_per_pkt: med(rs, 'cpu_us_per_pkt'),
  }));
  const find = (fwd: string, topology: Topology, flows: unknown) =>
    medians.find((m) => m.forwarder === fwd && m.topology === topology && m.flows === flows);
  const ratios: Record<string, Record<string, number | null>> = {};
  const flowCounts = [...new Set(medians.map((m) => m.flows))];
  for (const backend of ['sfc-afpacket', 'sfc-afxdp', 'sfc-afxdp-wakeup', 'sfc-cap']) {
    const vsOvs: Record<string, number | null> = {};
    const vsOvsAfxdp: Record<string, number | null> = {};
    const cpu: Record<string, number | null> = {};
    for (const flows of flowCounts) {
      const mine = find(backend, 'chain', flows)?.delivered_pps;
      const ovs = find('ovs', 'chain', flows)?.delivered_pps;
      const ovsAfxdp = find('ovs-afxdp', 'chain', flows)?.delivered_pps;
      vsOvs[String(flows)] = mine != null && ovs ? round(mine / ovs, 3) : null;
      vsOvsAfxdp[String(flows)] = mine != null && ovsAfxdp ? round(mine / ovsAfxdp, 3) : null;
      cpu[String(flows)] = find(backend, 'one-hop', flows)?.cpu_us_per_pkt ?? null;
    }
    ratios[`${backend}_vs_ovs_chain_delivered_pps`] = vsOvs;
    ratios[`${backend}_vs_ovs-afxdp_chain_delivered_pps`] = vsOvsAfxdp;
    ratios[`${backend}_one_hop_cpu_us_per_pkt`] = cpu;
  }
  const tcpMedians = [...new Set(tcp.filter((t) => !t.error).map((t) => t.forwarder as string))].map((forwarder) => {
    const runs = tcp.filter((t) => !t.error && t.forwarder === forwarder);
    return { forwarder, rounds: runs.length, gbps: median(runs.map((t) => t.gbps as number)) };
  });
  const latency = groupRows(latencies, ['forwarder', 'topology']).map((runs) => ({
    forwarder: runs[0].forwarder,
    topology: runs[0].topology,
    rounds: runs.length,
    p50_us: med(runs, 'p50_us'),
    p99_us: med(runs, 'p99_us'),
    wire_p50_us: med(runs, 'wire_p50_us'),
    wire_p99_us: med(runs, 'wire_p99_us'),
  }));
  const ovsLatency = latency.find((l) => l.forwarder === 'ovs' && l.topology === 'chain');
  for (const l of latency) {
    if (l.topology !== 'chain' || !String(l.forwarder).startsWith('sfc-') || !ovsLatency) continue;
    const ratio = (mine: number | null, ovs: number | null) => (mine === null || !ovs ? null : round(mine / ovs, 3));
    ratios[`${l.forwarder as string}_vs_ovs_chain_latency`] = {
      p50: ratio(l.p50_us, ovsLatency.p50_us),
      p99: ratio(l.p99_us, ovsLatency.p99_us),
      wire_p50: ratio(l.wire_p50_us, ovsLatency.wire_p50_us),
      wire_p99: ratio(l.wire_p99_us, ovsLatency.wire_p99_us),
    };
  }
  return {
    bench: 'e2e-summary',
    medians,
    ratios,
    latency,
    tcp: tcpMedians,
    errors: rows.filter((r) => r.error).length + tcp.filter((t) => t.error).length,
    // Other load on the 2 CPUs skews everything: cpu_util well below 1 at loss > 0 means the
    // forwarder was not getting its core.
    loadavg: loadavg().map((x) => round(x, 2)),
  };
}

async function main(): Promise<number> {
  const s = settings(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces)');
  const topologies: Topology[] = ['one-hop', 'chain'];
  const only = (names: string[]) => (s.only ?? []).filter((n) => names.includes(n));
  const unknown = (s.only ?? []).filter((n) => !topologies.includes(n as Topology) && !FORWARDERS.some((f) => f.name === n));
  if (unknown.length) throw new Error(`--only: unknown name(s) ${unknown.join(', ')}`);
  const onlyFwds = only(FORWARDERS.map((f) => f.name));
  const onlyTopologies = only(topologies);
  const selected = (fwd: Forwarder, topology: Topology) =>
    fwd.topologies.includes(topology) &&
    (!onlyFwds.length || onlyFwds.includes(fwd.name)) &&
    (!onlyTopologies.length || onlyTopologies.includes(topology));
  const dir = await mkdtemp(join(tmpdir(), 'sfc-e2e-'));
  const wmem = (await readFile(WMEM, 'utf8')).trim();
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    await labDown(LAB).catch((e: unknown) => process.stderr.write(`e2e: lab down: ${String(e)}\n`));
    await writeFile(WMEM, wmem).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted = true;
    process.stderr.write(`e2e: ${sig}: cleaning up\n`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await labDown(LAB);
    const lab: Lab = await labUp({ name: LAB, hops: 2, instances: 2, out: join(dir, 'chains.yaml') });
    const oneHopConfig = join(dir, 'one-hop.yaml');
    await writeFile(oneHopConfig, chainConfig(describeLab({ name: LAB, hops: 0 })));
    // One-way tools (netsniff-ng, tc) carry no ARP replies back: the client knows the server's MAC.
    await netnsExec(lab.clientNs, ['ip', 'neigh', 'replace', SERVER.ip, 'lladdr', SERVER.mac, 'dev', 'eth0', 'nud', 'permanent']);
    await netnsExec(lab.serverNs, ['ip', 'neigh', 'replace', CLIENT.ip, 'lladdr', CLIENT.mac, 'dev', 'eth0', 'nud', 'permanent']);
    // Full checksums from the endpoints: a veth transmit with checksum offload hands packet sockets
    // CHECKSUM_PARTIAL frames, which raw-socket forwarders (OVS netdev, netsniff-ng) pass on
    // unfinished and the receiver then drops. trafgen writes complete checksums anyway.
    for (const ns of [lab.clientNs, lab.serverNs]) await netnsExec(ns, ['ethtool', '-K', 'eth0', 'tx', 'off']);
    await installSink(lab);
    if (Number(wmem) < WMEM_FOR_TRAFGEN) await writeFile(WMEM, String(WMEM_FOR_TRAFGEN));
    const trafgen = await writeTrafgenConfigs(dir, s.flows);
    const env: BenchEnv = { lab, dir, oneHopConfig };
    const rows: Row[] = [];
    const latencies: Row[] = [];
    for (const topology of topologies) {
      const fwds = FORWARDERS.filter((f) => selected(f, topology));
      for (const flows of s.udp ? s.flows : []) {
        for (let r = 1; r <= s.rounds; r++) {
          for (const fwd of fwds) {
            const row = await throughput(env, s, trafgen, fwd, topology, flows, r);
            emit(row);
            rows.push(row);
          }
        }
      }
      for (let r = 1; r <= (s.latencyPackets ? s.rounds : 0); r++) {
        for (const fwd of fwds) {
          const row = await latency(env, s, fwd, topology, r);
          emit(row);
          latencies.push(row);
        }
      }
    }
    const tcp: Row[] = [];
    if (s.tcpStreams) {
      const fwds = FORWARDERS.filter((f) => f.tcp && selected(f, 'chain'));
      for (let r = 1; r <= s.rounds; r++) {
        for (const fwd of fwds) {
          const row = await tcpThroughput(env, s, fwd, r);
          emit(row);
          tcp.push(row);
        }
      }
    }
    emit(summary(rows, latencies, tcp));
    return 0;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => (process.exitCode = code),
  (e: unknown) => {
    process.stderr.write(`e2e: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
