/*
 * The process bench/soak.ts starts inside the lab's dataplane namespace: `sfc serve` (the command
 * itself, in this process) plus what the soak needs to see and do from inside it.
 *
 *   node --expose-gc dist/bench/soak-server.js --flap IFNAME [--worker-gc on|off] [--smaps-at S]
 *        [sfc serve options; --listen must be HOST:PORT]
 *
 * Every 5 s it runs a full garbage collection of this thread (so `heap` is what is still
 * referenced, not what the collector has yet to reclaim) and prints one JSON line {event:"sample",
 * t, rss, heap, heapTotal (what V8 keeps committed for this thread's heap), external, arrayBuffers,
 * workers, proc, fds, resources, flapping}: workers = each data path worker's own heap figures
 * (process-memory.ts, through the inspector: no hook in the production code), collected first
 * with --worker-gc on (a diagnosis: off, they are collected on their own schedule, as in
 * production); proc = smaps_rollup (rss, anonymous, shared) and the number of mappings;
 * resources = process.getActiveResourcesInfo() counted by type (timers, sockets, file handles...).
 * Every second it makes one API change over HTTP (alternately creates and deletes a spare port
 * pair group; the userspace driver publishes a table generation for each); every 30 s it takes
 * IFNAME (an SF's dataplane-side interface) down for 5 s. On SIGUSR2 it stops, prints
 * {event:"final", metrics, changes, failedChanges, flaps, grown} (metrics = the /metrics text;
 * grown = the mappings whose RSS grew since the first sample at or after --smaps-at seconds,
 * process-memory.ts grownMappings), then SIGTERMs itself so serve shuts down. The driver of the
 * changes lives in this process, so its own memory is part of the figures measured.
 */
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { promisify } from 'node:util';
import { command as serve } from '../src/commands/serve.js';
import { WorkerMemory, grownMappings, heapSpaces, mappings, rollup, type Mapping } from './process-memory.js';

const exec = promisify(execFile);
const argv = process.argv.slice(2);
const flapAt = argv.indexOf('--flap');
const flapIf = argv[flapAt + 1]!;
argv.splice(flapAt, 2);
/** Take argv's `--name VALUE` out (soak-only options, not serve's). */
function takeOption(name: string): string | undefined {
  const at = argv.indexOf(name);
  if (at < 0) return undefined;
  return argv.splice(at, 2)[1];
}
const workerGc = takeOption('--worker-gc') === 'on';
const smapsAt = Number(takeOption('--smaps-at') ?? 60);
const listen = argv[argv.indexOf('--listen') + 1]!;
const url = `http://${listen}`;
const t0 = Date.now();
const emit = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');

const workerMemory = new WorkerMemory();
let smapsBase: Map<string, Mapping> | undefined;

async function sample(): Promise<void> {
  (globalThis as { gc?: () => void }).gc?.();
  const workers = await workerMemory.sample(workerGc);
  const resources: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1;
  const m = process.memoryUsage();
  const t = (Date.now() - t0) / 1000;
  if (smapsBase === undefined && t >= smapsAt) smapsBase = mappings();
  emit({
    event: 'sample',
    t,
    rss: m.rss,
    heap: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    spaces: heapSpaces(),
    workers,
    proc: rollup(),
    fds: readdirSync('/proc/self/fd').length,
    resources,
    flapping,
  });
}

let changes = 0;
let failedChanges = 0;
let flaps = 0;
let flapping = false;
let spare: string | undefined;

async function change(): Promise<void> {
  const res = spare
    ? await fetch(`${url}/v2.0/sfc/port_pair_groups/${spare}`, { method: 'DELETE' })
    : await fetch(`${url}/v2.0/sfc/port_pair_groups`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ port_pair_group: { name: 'soak-spare' } }) });
  const body = res.status === 204 ? undefined : ((await res.json()) as { port_pair_group?: { id: string } });
  if (!res.ok) throw new Error(`API change answered ${res.status}`);
  performance.clearResourceTimings(); // fetch records one entry per request (up to 250 kept): this driver's, not serve's
  spare = spare ? undefined : body!.port_pair_group!.id;
}

async function flap(): Promise<void> {
  await exec('ip', ['link', 'set', flapIf, 'down']);
  flapping = true; // while its 5 s timer is pending
  await new Promise((r) => setTimeout(r, 5000));
  flapping = false;
  await exec('ip', ['link', 'set', flapIf, 'up']);
  flaps++;
}

const timers = [setInterval(() => void sample(), 5000)];
/** Start changing and flapping once the API answers (serve is starting in this process meanwhile). */
async function startLoad(): Promise<void> {
  while (!(await fetch(`${url}/healthz`).then((r) => r.ok, () => false))) await new Promise((r) => setTimeout(r, 100));
  timers.push(
    setInterval(() => change().then(() => changes++, () => failedChanges++), 1000),
    setInterval(() => void flap().catch((e: Error) => process.stderr.write(`flap: ${e.message}\n`)), 30_000),
  );
}
process.once('SIGUSR2', () => {
  for (const t of timers) clearInterval(t);
  void fetch(`${url}/metrics`)
    .then((r) => r.text())
    .then((metrics) => emit({ event: 'final', metrics, changes, failedChanges, flaps, grown: smapsBase && grownMappings(smapsBase, mappings(), 15) }))
    .finally(() => process.kill(process.pid, 'SIGTERM')); // serve's own handler shuts down
});
await workerMemory.start();
void sample();
void startLoad();
process.exitCode = await serve.run(argv);
