/*
 * harness: what a run on the lab needs besides the namespaces themselves (topology.ts): the
 * dataplane process inside L-dp and a way to reach its API, the traffic tool inside the endpoint
 * namespaces, and the lab a backend needs (labUpFor: the links and endpoint settings its registry
 * entry asks for). `sfc demo` and the end-to-end tests use it.
 *
 * - LabDataplane runs `sfc serve` (compiled, dist/) inside L-dp with a fresh state file, or a given one
 *   kept (restarts) (userspace driver on a backend, or --driver ovs: its private Open vSwitch lives
 *   under the run directory), output to
 *   <runDir>/serve.log, in its own process group. Its API listens on 127.0.0.1 of L-dp, which the
 *   caller's namespace cannot reach: a relay (a small node program started inside L-dp) carries
 *   each request as one JSON line on its stdin and answers on its stdout, so one process serves
 *   every scrape. Both processes are recorded in the lab's pid file: labDown kills them if their
 *   owner died.
 * - The traffic tool (traffic.ts) runs from dist/ too, started with netnsSpawn.
 * - libpcap hands the dataplane frames as the sending stack left them: with veth's default
 *   offloads that is a TCP super-frame with a partial checksum, which only a packet socket with a
 *   virtio-net header can repair. For a backend without one (cap: `lab.offloadsOff`) the endpoints
 *   and SFs therefore compute checksums and segment themselves (disableOffloads).
 * - parsePrometheus reads the /metrics text format (one sample per line, no timestamps).
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../dataplane/io/backend.js';
import type { BackendName } from '../dataplane/io/registry.js';
import { awareLinkMtu, labUp, netnsExec, netnsSpawn, type Lab, type LabOptions } from './topology.js';
import { nextEvent, type ListeningEvent, type TrafficEvent } from './traffic.js';

export type LabInfo = Omit<Lab, 'configYaml'>;

const START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 8_000;

/**
 * A compiled file under dist/src (`cli.js`, `lab/traffic.js`): beside this module when it runs
 * compiled, else under the repository's dist/ (TypeScript sources run by the tests).
 */
export function distFile(rel: string): string {
  const here = fileURLToPath(import.meta.url);
  const base = here.endsWith('.ts') ? join(resolve(dirname(here), '..', '..'), 'dist', 'src') : resolve(dirname(here), '..');
  const file = join(base, rel);
  if (!existsSync(file)) throw new Error(`${file} is missing: run \`npm run build\``);
  return file;
}

/** The relay: one JSON request per stdin line -> one JSON answer per stdout line (fetch inside L-dp). */
const RELAY = `
const rl = require('node:readline').createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  let q;
  try { q = JSON.parse(line); } catch { return; }
  let a;
  try {
    const headers = q.body === undefined ? {} : { 'content-type': 'application/json' };
    const r = await fetch(q.url, { method: q.method, headers, body: q.body });
    a = { id: q.id, status: r.status, body: await r.text() };
  } catch (e) {
    a = { id: q.id, status: 0, body: String((e && e.message) || e) };
  }
  process.stdout.write(JSON.stringify(a) + '\\n');
});
rl.on('close', () => process.exit(0));
`;

export interface HttpAnswer {
  status: number;
  body: string;
}

export interface DataplaneStart {
  /** userspace (default): the dataplane on `backend`; ovs: a private Open vSwitch bridge (no backend); noop: the API only. */
  driver?: 'userspace' | 'ovs' | 'noop';
  /** The model in this etcd cluster (--store etcd://...) instead of a state file. */
  store?: string;
  /** The packet I/O backend (--backend); omitted: sfc serve's default. */
  backend?: BackendName;
  /** Chain file that seeds the (fresh) state. */
  config: string;
  /** Serve this state file as it is (a restart: --config seeds it only when empty); default a fresh one. */
  state?: string;
  /** More `sfc serve` options (e.g. --health-policy). */
  args?: string[];
}

export class LabDataplane {
  readonly pid: number;
  readonly url: string;
  readonly logFile: string;
  private readonly child: ChildProcess;
  private readonly relay: ChildProcess;
  private readonly pending = new Map<number, (a: HttpAnswer) => void>();
  private nextId = 1;
  private exited = false;

  private constructor(child: ChildProcess, relay: ChildProcess, url: string, logFile: string) {
    this.child = child;
    this.relay = relay;
    this.pid = child.pid!;
    this.url = url;
    this.logFile = logFile;
    child.once('exit', () => (this.exited = true));
    createInterface({ input: relay.stdout! }).on('line', (line) => {
      const a = JSON.parse(line) as HttpAnswer & { id: number };
      this.pending.get(a.id)?.({ status: a.status, body: a.body });
      this.pending.delete(a.id);
    });
    relay.once('close', () => {
      for (const answer of this.pending.values()) answer({ status: 0, body: 'relay exited' });
      this.pending.clear();
    });
  }

  /**
   * Where `sfc serve --driver ovs` started by start() (default bridge, default state file in the
   * lab's run dir) runs its Open vSwitch: db.sock, ovs-vswitchd.ctl.
   */
  static ovsDir(lab: Pick<LabInfo, 'runDir'>): string {
    return join(lab.runDir, 'ovs-br-sfc', 'ovs');
  }

  /** Start `sfc serve` in the lab's dataplane namespace and wait until its API listens. */
  static async start(lab: LabInfo, opts: DataplaneStart): Promise<LabDataplane> {
    await mkdir(lab.runDir, { recursive: true });
    const state = opts.state ?? join(lab.runDir, 'state.json');
    if (opts.state === undefined) await rm(state, { force: true }); // --config seeds an empty state only
    const logFile = join(lab.runDir, 'serve.log');
    const log = await open(logFile, 'w');
    const argv = [process.execPath, distFile('cli.js'), 'serve', '--config', opts.config, ...(opts.store ? ['--store', opts.store] : ['--state', state])];
    if (opts.driver === 'ovs' || opts.driver === 'noop') argv.push('--driver', opts.driver);
    else if (opts.backend !== undefined) argv.push('--backend', opts.backend); // else serve's default
    argv.push('--listen', '127.0.0.1:0', ...(opts.args ?? []));
    let child: ChildProcess;
    try {
      child = await netnsSpawn(lab.name, lab.dpNs, argv, { detached: true, stdio: ['ignore', log.fd, log.fd] });
    } finally {
      await log.close();
    }
    let url: string;
    try {
      url = await waitForUrl(child, logFile);
    } catch (e) {
      await stopProcess(child);
      throw e;
    }
    const relay = await netnsSpawn(lab.name, lab.dpNs, [process.execPath, '-e', RELAY], { stdio: ['pipe', 'pipe', 'ignore'] });
    return new LabDataplane(child, relay, url, logFile);
  }

  get running(): boolean {
    return !this.exited;
  }

  /** One API request (path relative to the API root); status 0 when it could not be made. */
  request(method: string, path: string, body?: unknown): Promise<HttpAnswer> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      if (this.relay.exitCode !== null || !this.relay.stdin?.writable) return resolve({ status: 0, body: 'relay exited' });
      this.pending.set(id, resolve);
      const q = { id, method, url: this.url + path, body: body === undefined ? undefined : JSON.stringify(body) };
      this.relay.stdin.write(JSON.stringify(q) + '\n');
    });
  }

  /** A JSON API call that must succeed (2xx). */
  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const a = await this.request(method, path, body);
    if (a.status < 200 || a.status > 299) throw new Error(`${method} ${path}: ${a.status || 'failed'} ${a.body.slice(0, 500)}`);
    return (a.body ? JSON.parse(a.body) : {}) as T;
  }

  async metrics(): Promise<Sample[]> {
    const a = await this.request('GET', '/metrics');
    if (a.status !== 200) throw new Error(`GET /metrics: ${a.status || 'failed'} ${a.body.slice(0, 200)}`);
    return parsePrometheus(a.body);
  }

  /**
   * Poll the health API (what `sfc get health` reads; cheaper than a /metrics scrape, which on the
   * ovs driver reads OVS's statistics) until port pair `pp` is up (or down); ms since `since`.
   */
  async untilHealth(pp: string, up: boolean, since = performance.now(), timeoutMs = 10_000): Promise<number> {
    for (const end = since + timeoutMs; ; await sleep(10)) {
      const { instances } = (await this.call<{ health: { instances: { portPair: string; up: boolean }[] } }>('GET', '/v2.0/sfc/health')).health;
      if (instances.some((h) => h.portPair === pp && h.up === up)) return performance.now() - since;
      if (performance.now() > end) throw new Error(`${pp} never became ${up ? 'up' : 'down'}`);
    }
  }

  /** The last lines of the dataplane's output (for error reports). */
  logTail(lines = 20): string {
    return tail(this.logFile, lines);
  }

  /** Leave the dataplane running after this process exits (sfc lab down stops it). */
  detach(): void {
    this.relay.stdin?.end();
    this.child.unref();
  }

  /** SIGTERM (the dataplane closes its sockets), SIGKILL after a grace period; stops the relay. */
  async stop(): Promise<void> {
    this.relay.stdin?.end();
    await Promise.all([stopProcess(this.child), stopProcess(this.relay)]);
  }
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

async function waitForUrl(child: ChildProcess, logFile: string): Promise<string> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const m = /listening on (http:\/\/\S+)/.exec(tail(logFile, 200));
    if (m) return m[1];
    if (child.exitCode !== null || child.signalCode !== null) break;
    await sleep(100);
  }
  const ended = child.exitCode !== null || child.signalCode !== null;
  const why = ended ? `exited (${child.exitCode ?? child.signalCode})` : 'did not start listening';
  throw new Error(`sfc serve ${why}:\n${tail(logFile, 20)}`);
}

/** SIGTERM the process (its group when it leads one), wait, then SIGKILL. */
export async function stopProcess(child: ChildProcess, graceMs = STOP_GRACE_MS): Promise<void> {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  };
  signal('SIGTERM');
  const timer = setTimeout(() => signal('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}

export interface TrafficRun<R = TrafficEvent> {
  child: ChildProcess;
  /** The "listening" event (servers and receivers; rejects if the tool ends without one). */
  listening: Promise<ListeningEvent>;
  /** The final "result" event (R: the mode's result shape). */
  result: Promise<R>;
}

/**
 * Start the traffic tool (`mode` and its options) inside namespace `ns`. Both events are awaited
 * from the start, so a quick tool cannot print them before anyone listens.
 */
export async function startTraffic<R = TrafficEvent>(lab: LabInfo, ns: string, argv: string[]): Promise<TrafficRun<R>> {
  const child = await netnsSpawn(lab.name, ns, [process.execPath, distFile('lab/traffic.js'), ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  const listening = nextEvent<ListeningEvent>(child, (e) => e.event === 'listening');
  const result = nextEvent<R>(child, (e) => e.event === 'result');
  // Handled here so that a tool without a "listening" event is no unhandled rejection.
  listening.catch(() => {});
  result.catch(() => {});
  return { child, listening, result };
}

/** Build the lab for a dataplane on `backend`: the links it attaches to, and the endpoint settings it needs. */
export async function labUpFor(backend: Pick<Backend, 'lab'>, opts: Omit<LabOptions, 'dpLink'>): Promise<Lab> {
  const lab = await labUp({ ...opts, dpLink: backend.lab.link });
  if (backend.lab.offloadsOff) await disableOffloads(lab);
  return lab;
}

/**
 * Build the lab for the ovs driver: veths (its netdev datapath reads them with AF_PACKET, with
 * TSO on). With SF-aware hops two things differ from a userspace lab, both because of what Open
 * vSwitch 3.1's userspace datapath cannot do: it answers no ICMP "too big", so the aware
 * instances' links get room for the encapsulation (awareLinkMtu); and it loses a frame's
 * checksum-offload state when it pushes MPLS or NSH (the frame then reaches its end with the
 * partial checksum the sender left to the device), so the stacks compute checksums themselves.
 */
export async function labUpForOvs(opts: Omit<LabOptions, 'dpLink' | 'awareMtu'>): Promise<Lab> {
  const correlation = opts.sfCorrelation ?? null;
  const lab = await labUp({ ...opts, dpLink: 'veth', awareMtu: correlation ? awareLinkMtu(correlation) : undefined });
  if (correlation) await disableOffloads(lab);
  return lab;
}

/**
 * Checksums and segmentation done by the sending stacks (client, server, SFs) rather than left to
 * the device: what a backend with `lab.offloadsOff` (cap) needs (see above).
 */
async function disableOffloads(lab: LabInfo): Promise<void> {
  const off = ['tx', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off'];
  const jobs = [lab.clientNs, lab.serverNs].map((ns) => netnsExec(ns, ['ethtool', '-K', 'eth0', ...off]));
  for (const s of lab.sfs) {
    jobs.push(netnsExec(s.ns, ['ethtool', '-K', 'in0', ...off]), netnsExec(s.ns, ['ethtool', '-K', 'out0', ...off]));
  }
  await Promise.all(jobs);
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Samples of the Prometheus text exposition format (comments skipped). */
export function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)\s*$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** Sum of the samples named `name` whose labels include `match`. */
export function metric(samples: Sample[], name: string, match: Record<string, string> = {}): number {
  let sum = 0;
  for (const s of samples) {
    if (s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}
