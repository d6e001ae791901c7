/*
 * Soak and crash benchmark (`npm run bench:soak`; root, for the lab). Three phases, one JSON line each:
 *
 *   crash: bench/crashload.ts, --rounds N (default 100) rounds of kill -9 of `sfc serve --driver
 *          noop` under 8 writers; every acknowledged write must survive, none may be half there.
 *   crash-chain: the same rounds with the userspace driver in the lab while UDP flows cross its
 *          chain (bench/crash-chain.ts): after each restart every flow is back, on the instances
 *          it had at the first start.
 *   soak:  the lab's two-hop chain (2 instances per hop, symmetric) with `sfc serve` (afpacket,
 *          userspace driver) run by bench/soak-server.js inside L-dp, --seconds S (default 600)
 *          of UDP through the chain (64 flows, --pps R, default 2000), one API change per second,
 *          SF 1.1's ingress interface down for 5 s every 30 s. Figures from the serve process:
 *          RSS and live heap (after a full GC) after --warmup W seconds (default 60) and at the
 *          end (RSS growth, median of the minute after warm-up to median of the last minute,
 *          must stay under 10%), open file descriptors and active timers/handles (must not grow), and the
 *          dataplane counters: every frame received is forwarded, dropped with a reason, or a
 *          returned health probe (rx = forwarded + drops + probes_returned, where forwarded <= tx
 *          <= forwarded + flooded copies); the per-reason drops add up to the drop counter; the
 *          per-interface receive counts add up to rx, and interface tx - tx (the probes injected
 *          outside the batches) covers the probes returned. Where the memory is: the workers'
 *          own V8 heaps (by heap space), smaps_rollup and the mapping count (series every 30 s),
 *          and the mappings that grew since warm-up (bench/process-memory.ts); --worker-gc
 *          collects the workers' heaps before each sample (a diagnosis, not the production
 *          schedule); --samples-out FILE writes every 5 s sample as a JSON line.
 *
 * Usage: node dist/bench/soak.js [--only crash|crash-chain|soak] [--rounds N] [--seconds S] [--warmup W] [--pps R]
 *          [--worker-gc] [--samples-out FILE]
 * Exit code 1 when a check fails (the JSON says which).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { distFile, metric, parsePrometheus, startTraffic, stopProcess, type Sample } from '../src/lab/harness.js';
import { SERVER, labDown, labUp, netnsSpawn } from '../src/lab/topology.js';
import type { UdpRecvResult, UdpSendResult } from '../src/lab/traffic.js';
import { parseOptions } from '../src/util/args.js';
import { CHAIN_ACKS_BEFORE_KILL, chainTarget } from './crash-chain.js';
import { crashUnderLoad, noopTarget, type CrashRoundsResult } from './crashload.js';
import type { HeapFigures, Rollup, grownMappings } from './process-memory.js';

const LAB = 'sfc-soak';
const UDP_PORT = 5301;
const here = dirname(fileURLToPath(import.meta.url));

interface ProcSample {
  t: number;
  rss: number;
  heap: number;
  heapTotal: number;
  /** This (the main) thread's committed bytes per heap space. */
  spaces: Record<string, number>;
  /** The data path workers' own heaps (soak-server.ts: through the inspector). */
  workers: HeapFigures[];
  proc: Rollup;
  fds: number;
  resources: Record<string, number>;
  flapping: boolean;
}

async function crashPhase(rounds: number): Promise<{ ok: boolean }> {
  const dir = mkdtempSync(join(tmpdir(), 'sfc-soak-crash-'));
  try {
    const t0 = performance.now();
    const r = await crashUnderLoad({ rounds, target: noopTarget(join(dir, 'state.json')) });
    const ok = r.violations.length === 0;
    console.log(JSON.stringify({ phase: 'crash', ok, seconds: Math.round((performance.now() - t0) / 100) / 10, ...r, violations: r.violations.slice(0, 20) }));
    return { ok };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function crashChainPhase(rounds: number): Promise<{ ok: boolean }> {
  const t0 = performance.now();
  const target = await chainTarget({ name: LAB });
  let r: CrashRoundsResult;
  let traffic: { sent: number; received: number } | undefined;
  try {
    r = await crashUnderLoad({ rounds, target, acksBeforeKill: CHAIN_ACKS_BEFORE_KILL });
  } finally {
    traffic = await target.close();
  }
  const ok = r.violations.length === 0 && (traffic?.received ?? 0) > 0;
  console.log(JSON.stringify({ phase: 'crash-chain', ok, seconds: Math.round((performance.now() - t0) / 100) / 10, ...r, traffic, violations: r.violations.slice(0, 20) }));
  return { ok };
}

/** The counter identities that must hold whatever the traffic. */
function counterChecks(samples: Sample[], interfaces: number): Record<string, { ok: boolean; [k: string]: unknown }> {
  const ev = (event: string) => metric(samples, 'sfc_packets_total', { event });
  const rx = ev('rx_packets');
  const tx = ev('tx_packets');
  const dropped = ev('dropped');
  const flooded = ev('flooded');
  const probesBack = ev('probes_returned'); // health probes the SFs returned: received, consumed

  const byReason = metric(samples, 'sfc_drops_total');
  const ifRx = metric(samples, 'sfc_interface_packets_total', { direction: 'rx' });
  const ifTx = metric(samples, 'sfc_interface_packets_total', { direction: 'tx' });
  const forwarded = rx - dropped - probesBack;
  const probesSent = ifTx - tx; // health probes are injected outside the batches: interface tx only
  return {
    drops_by_reason_sum_to_dropped: { ok: byReason === dropped, byReason, dropped },
    rx_equals_forwarded_plus_drops_plus_probes: {
      ok: forwarded >= 0 && tx >= forwarded && tx <= forwarded + flooded * Math.max(0, interfaces - 2),
      rx,
      tx,
      dropped,
      probes_returned: probesBack,
      flooded,
    },
    interfaces_sum_to_totals: { ok: ifRx === rx && probesSent >= probesBack, ifRx, ifTx, probes_sent: probesSent },
  };
}

interface SoakOptions {
  seconds: number;
  warmup: number;
  pps: number;
  /** Collect the workers' heaps before each sample (diagnosis: what a GC would give back). */
  workerGc: boolean;
  /** Write every sample (one JSON line each) here. */
  samplesOut?: string;
}

async function soakPhase({ seconds, warmup, pps, workerGc, samplesOut }: SoakOptions): Promise<{ ok: boolean }> {
  await labDown(LAB);
  const dir = mkdtempSync(join(tmpdir(), 'sfc-soak-'));
  const lab = await labUp({ name: LAB, hops: 2, instances: 2, symmetric: true, out: join(dir, 'chains.yaml') });
  const flapIf = lab.sfs[0]!.ingressIf;
  const samples: ProcSample[] = [];
  let final: { metrics: string; changes: number; failedChanges: number; flaps: number; grown?: ReturnType<typeof grownMappings> } | undefined;
  const server = await netnsSpawn(
    lab.name,
    lab.dpNs,
    [process.execPath, '--expose-gc', join(here, 'soak-server.js'), '--flap', flapIf, '--worker-gc', workerGc ? 'on' : 'off', '--smaps-at', String(warmup), '--config', lab.configPath, '--state', join(dir, 'state.json'), '--backend', 'afpacket', '--listen', '127.0.0.1:19696'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const listening = new Promise<void>((resolve) => {
    createInterface({ input: server.stdout! }).on('line', (line) => {
      if (line.startsWith('listening on')) return resolve();
      if (!line.startsWith('{')) return;
      const o = JSON.parse(line) as { event: string } & ProcSample & NonNullable<typeof final>;
      if (o.event === 'sample') samples.push(o);
      else if (o.event === 'final') final = o;
    });
  });
  const exited = new Promise<void>((r) => server.once('exit', () => r()));
  try {
    await listening;
    const recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:${UDP_PORT}`, '--seconds', String(seconds + 30), '--idle', '3']);
    await recv.listening;
    const send = await startTraffic<UdpSendResult>(lab, lab.clientNs, ['udp-send', '--connect', `${SERVER.ip}:${UDP_PORT}`, '--flows', '64', '--pps', String(pps), '--seconds', String(seconds)]);
    const sent = await send.result;
    const received = await recv.result;
    server.kill('SIGUSR2');
    await exited;
    if (!final) throw new Error('the soak server printed no final figures');
    if (samplesOut !== undefined) writeFileSync(samplesOut, samples.map((x) => JSON.stringify(x) + '\n').join(''));
    const after = samples.filter((s) => s.t >= warmup);
    const first = after[0] ?? samples[0]!;
    const last = samples.at(-1)!;
    const half = samples.find((s) => s.t >= seconds / 2) ?? first;
    const growth = (a: number, b: number) => Math.round(((b - a) / a) * 1000) / 10;
    // RSS over a minute: the median of its samples. The data path workers' heaps are collected on
    // their own schedule (the 5 s GC is this thread's), so one sample can land on a worker's peak:
    // consecutive samples differ by 5-10 MB. The medians of the minute after warm-up and of the
    // last minute compare the levels; the single samples are reported beside them.
    const medianRss = (from: number, to: number) => {
      const rss = samples.filter((s) => s.t >= from && s.t < to).map((s) => s.rss).sort((a, b) => a - b);
      return rss[Math.floor(rss.length / 2)] ?? first.rss;
    };
    const [rssStart, rssEnd] = [medianRss(warmup, warmup + 60), medianRss(last.t - 60, last.t + 1)];
    const timers = (s: ProcSample) => (s.resources.Timeout ?? 0) - (s.flapping ? 1 : 0); // a flap's own 5 s timer
    const handles = (s: ProcSample) => Object.values(s.resources).reduce((a, b) => a + b, 0);
    const counters = counterChecks(parsePrometheus(final.metrics), lab.dpInterfaces.length);
    const checks = {
      rss_growth_under_10pct: {
        ok: growth(rssStart, rssEnd) < 10,
        from: rssStart,
        to: rssEnd,
        growth_pct: growth(rssStart, rssEnd),
        single_samples: { from: first.rss, to: last.rss, growth_pct: growth(first.rss, last.rss) },
      },
      no_fd_leak: { ok: last.fds <= first.fds, from: first.fds, to: last.fds },
      no_timer_leak: { ok: timers(last) <= timers(first), from: timers(first), to: timers(last) },
      no_handle_leak: { ok: handles(last) <= handles(first) + 2, from: first.resources, to: last.resources },
      api_changes_all_accepted: { ok: final.failedChanges === 0 && final.changes >= seconds * 0.9, changes: final.changes, failed: final.failedChanges },
      sf_flapped: { ok: final.flaps >= Math.floor(seconds / 30) - 1, flaps: final.flaps },
      traffic_delivered: { ok: received.received > 0.5 * sent.sent, sent: sent.sent, received: received.received, lost: received.lost },
      ...counters,
    };
    const ok = Object.values(checks).every((c) => c.ok);
    const heapGrowth = growth(first.heap, last.heap);
    const mb = (n: number) => Math.round(n / 1e5) / 10;
    const series = (f: (s: ProcSample) => number[]) => samples.filter((_, i) => i % 6 === 0).map((s) => [Math.round(s.t), ...f(s).map(mb)]);
    console.log(
      JSON.stringify({
        phase: 'soak',
        ok,
        seconds,
        warmup,
        pps,
        heap: { from: first.heap, to: last.heap, growth_pct: heapGrowth },
        heap_total: { from: first.heapTotal, to: last.heapTotal, growth_pct: growth(first.heapTotal, last.heapTotal) },
        // A leak keeps growing; a heap sizing itself to the load levels off: the second half tells them apart.
        rss_growth_second_half_pct: growth(half.rss, last.rss),
        checks,
        rss_series_mb: samples.filter((_, i) => i % 6 === 0).map((s) => [Math.round(s.t), Math.round(s.rss / 1e5) / 10]),
        heap_series_mb: samples.filter((_, i) => i % 6 === 0).map((s) => [Math.round(s.t), Math.round(s.heap / 1e5) / 10]),
        heap_total_series_mb: series((s) => [s.heapTotal]),
        // Per 30 s: the main thread's [new space, old space, code space, large objects]
        heap_spaces_series_mb: series((s) => ['new_space', 'old_space', 'code_space', 'large_object_space'].map((k) => s.spaces[k] ?? 0)),
        // Per 30 s: each worker's [heapUsed, heapTotal, external, arrayBuffers, new space, old space]
        worker_heap_series_mb: series((s) =>
          s.workers.flatMap((w) => [w.heapUsed, w.heapTotal, w.external, w.arrayBuffers, w.spaces.new_space ?? 0, w.spaces.old_space ?? 0]),
        ),
        // Per 30 s: [smaps Rss, Anonymous, Shared, mappings (a count)]
        smaps_series: samples.filter((_, i) => i % 6 === 0).map((s) => [Math.round(s.t), mb(s.proc.rss), mb(s.proc.anonymous), mb(s.proc.shared), s.proc.mappings]),
        grown_mappings_since_warmup: final.grown,
        drops: Object.fromEntries(parsePrometheus(final.metrics).filter((s) => s.name === 'sfc_drops_total' && s.value > 0).map((s) => [s.labels.reason, s.value])),
      }),
    );
    return { ok };
  } finally {
    await stopProcess(server, 2000);
    await labDown(LAB);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<number> {
  const { values } = parseOptions(process.argv.slice(2), {
    only: { type: 'string' },
    rounds: { type: 'string', default: '100' },
    seconds: { type: 'string', default: '600' },
    warmup: { type: 'string', default: '60' },
    pps: { type: 'string', default: '2000' },
    'worker-gc': { type: 'boolean', default: false },
    'samples-out': { type: 'string' },
  });
  distFile('cli.js'); // fail early when the build is missing
  const run = (phase: string) => values.only === undefined || values.only === phase;
  let ok = true;
  if (run('crash')) ok = (await crashPhase(Number(values.rounds))).ok && ok;
  if (run('crash-chain')) ok = (await crashChainPhase(Number(values.rounds))).ok && ok;
  if (run('soak')) ok = (await soakPhase({ seconds: Number(values.seconds), warmup: Number(values.warmup), pps: Number(values.pps), workerGc: values['worker-gc'] === true, samplesOut: values['samples-out'] })).ok && ok;
  return ok ? 0 : 1;
}

process.exitCode = await main();
