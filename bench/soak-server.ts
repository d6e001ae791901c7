/*
 * The process bench/soak.ts starts inside the lab's dataplane namespace: `sfc serve` (the command
 * itself, in this process) plus what the soak needs to see and do from inside it.
 *
 *   node --expose-gc dist/bench/soak-server.js --flap IFNAME [sfc serve options; --listen must be HOST:PORT]
 *
 * Every 5 s it runs a full garbage collection of this thread (so `heap` is what is still
 * referenced, not what the collector has yet to reclaim) and prints one JSON line {event:"sample",
 * t, rss, heap, heapTotal (what V8 keeps committed for this thread's heap: it grows to suit the
 * allocation rate, and is most of the RSS growth after start), external, arrayBuffers, fds,
 * resources, flapping} (resources = process.getActiveResourcesInfo() counted by type:
 * timers, sockets, file handles...). The dataplane workers' heaps are collected on their own. Every
 * second it makes one API change over HTTP (alternately creates and deletes a spare port pair
 * group; the userspace driver publishes a table generation for each); every 30 s it takes IFNAME
 * (an SF's dataplane-side interface) down for 5 s. On SIGUSR2 it stops, prints {event:"final",
 * metrics, changes, failedChanges, flaps} (metrics = the /metrics text), then SIGTERMs itself so
 * serve shuts down. The
 * driver of the changes lives in this process, so its own memory is part of the figures measured.
 */
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { promisify } from 'node:util';
import { command as serve } from '../src/commands/serve.js';

const exec = promisify(execFile);
const argv = process.argv.slice(2);
const flapAt = argv.indexOf('--flap');
const flapIf = argv[flapAt + 1]!;
argv.splice(flapAt, 2);
const listen = argv[argv.indexOf('--listen') + 1]!;
const url = `http://${listen}`;
const t0 = Date.now();
const emit = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');

function sample(): void {
  (globalThis as { gc?: () => void }).gc?.();
  const resources: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1;
  const m = process.memoryUsage();
  emit({
    event: 'sample',
    t: (Date.now() - t0) / 1000,
    rss: m.rss,
    heap: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
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

const timers = [setInterval(sample, 5000)];
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
    .then((metrics) => emit({ event: 'final', metrics, changes, failedChanges, flaps }))
    .finally(() => process.kill(process.pid, 'SIGTERM')); // serve's own handler shuts down
});
sample();
void startLoad();
process.exitCode = await serve.run(argv);
