/*
 * Traffic tool for the lab: real sockets inside the lab's namespaces, checkable results as JSON.
 *
 *   node dist/src/lab/traffic.js <mode> [options]      (run inside a namespace with netnsExec/netnsSpawn)
 *
 *   tcp-server --listen HOST:PORT [--flows N] [--timeout S]
 *   tcp-client --connect HOST:PORT [--flows N] [--bytes M] [--seed S] [--timeout S]
 *   udp-recv   --listen HOST:PORT [--seconds S] [--idle S] [--expect N]
 *   udp-send   --connect HOST:PORT [--flows N] [--sport P] [--pps R] [--count C | --seconds S] [--size B]
 *
 * Output (stable; scripts and tests parse it): one JSON object per line on stdout, each with an
 * "event" key. Servers print {"event":"listening","mode","address","port"} once bound; every mode
 * ends with one {"event":"result","mode","ok",...} line. Exit code 0 when ok, 1 when not, 2 usage.
 *
 * TCP. Each of N concurrent flows sends a 20-byte header (u32 BE: magic 0x53464354 "SFCT", flow
 * index, seed, byte count high, low) then M bytes of a deterministic stream: xorshift32 words
 * (little-endian) from state (seed * 0x9e3779b1 + (flow + 1) * 0x85ebca77) | 1. The server
 * regenerates the expected stream from the header and compares SHA-256 digests; after M bytes it
 * answers one status byte (1 = exact) and the SHA-256 of what it received.
 *   tcp-server result: {ok, flows: [{flow, bytes, expected, sha256, ok, ms}]} — ok when --flows
 *     flows arrived byte-exact before --timeout (default 60 s).
 *   tcp-client result: {ok, flows: [{flow, bytes, sha256, ok, ms, mbps}]} — ok when the server
 *     confirmed every flow.
 *
 * UDP. Flows are source ports (--sport P .. P+N-1, default 20000); packets round-robin over flows,
 * paced to --pps R in total (default 1000; 0 = as fast as possible). Payload (--size B >= 20 bytes,
 * default 22, i.e. a 64-byte IPv4 frame): u32 BE magic 0x53464355 "SFCU", flow, sequence, send time
 * (process.hrtime.bigint() as two u32). The receiver counts per flow (keyed "addr:port"):
 * received, lost (highest seq + 1 - distinct received), reordered (seq below the highest seen),
 * duplicates; and one-way latency = receive time - send time. Latency is only meaningful when both
 * ends share CLOCK_MONOTONIC, i.e. run on the same host (network namespaces do).
 *   udp-send result: {ok, sent, flows, seconds, pps}
 *   udp-recv result: {ok, received, lost, reordered, duplicates, flows: [{flow, received, lost,
 *     reordered, duplicates}], latency_us: {n, p50, p90, p99, max}} — ok when something arrived
 *     (and, with --expect N, at least N packets). Stops after --seconds S, after --idle S without
 *     packets once one arrived (default 2), or on SIGTERM/SIGINT (then still prints the result).
 */
import type { ChildProcess } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createConnection, createServer, isIPv6, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { parseHostPort, parseOptions, UsageError } from '../util/args.js';

const TCP_MAGIC = 0x53464354;
const UDP_MAGIC = 0x53464355;
const TCP_HEADER = 20;
const UDP_HEADER = 20;
const CHUNK = 1 << 16;

/** The output lines, as documented above. */
export interface ListeningEvent {
  event: 'listening';
  mode: 'tcp-server' | 'udp-recv';
  address: string;
  port: number;
}
export interface ServerFlow {
  flow: number;
  bytes: number;
  expected: number;
  sha256: string;
  ok: boolean;
  ms: number;
}
export interface ClientFlow {
  flow: number;
  bytes: number;
  sha256: string;
  ok: boolean;
  ms: number;
  mbps: number;
  error?: string;
}
export interface UdpFlow {
  flow: string;
  received: number;
  lost: number;
  reordered: number;
  duplicates: number;
}
export interface LatencySummary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}
export interface TcpServerResult {
  event: 'result';
  mode: 'tcp-server';
  ok: boolean;
  flows: ServerFlow[];
}
export interface TcpClientResult {
  event: 'result';
  mode: 'tcp-client';
  ok: boolean;
  flows: ClientFlow[];
}
export interface UdpSendResult {
  event: 'result';
  mode: 'udp-send';
  ok: boolean;
  sent: number;
  flows: number;
  seconds: number;
  pps: number;
}
export interface UdpRecvResult extends Omit<UdpFlow, 'flow'> {
  event: 'result';
  mode: 'udp-recv';
  ok: boolean;
  flows: UdpFlow[];
  latency_us: LatencySummary;
}
export type TrafficOutput = ListeningEvent | TcpServerResult | TcpClientResult | UdpSendResult | UdpRecvResult;
/** Any output line, loosely typed (narrow with `event`/`mode`, or ask nextEvent for a TrafficOutput). */
export type TrafficEvent = { event: string; mode: string; ok?: boolean } & Record<string, unknown>;

function emit(event: TrafficOutput): void {
  process.stdout.write(JSON.stringify(event) + '\n');
}

/** The deterministic byte stream of one TCP flow, produced in CHUNK-sized pieces. */
export class PatternStream {
  private state: number;
  private left: number;
  private readonly words = new Uint32Array(CHUNK / 4);

  constructor(seed: number, flow: number, bytes: number) {
    this.state = (Math.imul(seed, 0x9e3779b1) + Math.imul(flow + 1, 0x85ebca77)) | 1;
    this.left = bytes;
  }

  /** Next piece of the stream (a fresh Buffer, safe to hand to socket.write), or null at the end. */
  next(): Buffer | null {
    if (this.left === 0) return null;
    const w = this.words;
    let x = this.state;
    for (let i = 0; i < w.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      w[i] = x;
    }
    this.state = x;
    const n = Math.min(this.left, CHUNK);
    this.left -= n;
    return Buffer.from(new Uint8Array(w.buffer, 0, n));
  }
}

function streamDigest(seed: number, flow: number, bytes: number): string {
  const h = createHash('sha256');
  const s = new PatternStream(seed, flow, bytes);
  for (let c = s.next(); c; c = s.next()) h.update(c);
  return h.digest('hex');
}

function tcpHeader(flow: number, seed: number, bytes: number): Buffer {
  const b = Buffer.alloc(TCP_HEADER);
  b.writeUInt32BE(TCP_MAGIC, 0);
  b.writeUInt32BE(flow, 4);
  b.writeUInt32BE(seed >>> 0, 8);
  b.writeUInt32BE(Math.floor(bytes / 2 ** 32), 12);
  b.writeUInt32BE(bytes >>> 0, 16);
  return b;
}

function seconds(value: string | undefined, fallback: number, option: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`${option} must be a non-negative number, got '${value}'`);
  return n;
}

function count(value: string | undefined, fallback: number, option: string, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${option} must be an integer >= ${min}, got '${value}'`);
  return n;
}


async function tcpServer(argv: string[]): Promise<number> {
  const { values } = parseOptions(argv, {
    listen: { type: 'string' },
    flows: { type: 'string' },
    timeout: { type: 'string' },
  });
  if (!values.listen) throw new UsageError('--listen HOST:PORT is required');
  const { host, port } = parseHostPort(values.listen, '--listen');
  const flows = count(values.flows, 1, '--flows');
  const timeoutMs = seconds(values.timeout, 60, '--timeout') * 1000;
  const results: ServerFlow[] = [];
  let finish: () => void = () => {};
  const done = new Promise<void>((resolve) => (finish = resolve));
  const server = createServer((sock) =>
    serveFlow(sock, (r) => {
      results.push(r);
      if (results.length === flows) finish();
    }),
  );
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, resolve));
  const addr = server.address();
  emit({ event: 'listening', mode: 'tcp-server', address: host, port: typeof addr === 'object' && addr ? addr.port : port });
  const timer = setTimeout(finish, timeoutMs);
  onStopSignal(finish);
  await done;
  clearTimeout(timer);
  server.close();
  results.sort((a, b) => a.flow - b.flow);
  const ok = results.length === flows && results.every((r) => r.ok);
  emit({ event: 'result', mode: 'tcp-server', ok, flows: results });
  return ok ? 0 : 1;
}

/** Receive one flow: header, then hash the data; answer status + digest after `expected` bytes. */
function serveFlow(sock: Socket, report: (r: ServerFlow) => void): void {
  const start = performance.now();
  let header: Buffer = Buffer.alloc(0);
  let hash: Hash | null = null;
  let flow = -1;
  let seed = 0;
  let expected = 0;
  let received = 0;
  let reported = false;
  const finish = () => {
    if (reported || flow < 0) return;
    reported = true;
    const sha256 = hash!.digest('hex');
    const ok = received === expected && sha256 === streamDigest(seed, flow, expected);
    report({ flow, bytes: received, expected, sha256, ok, ms: Math.round(performance.now() - start) });
    sock.end(Buffer.concat([Buffer.from([ok ? 1 : 0]), Buffer.from(sha256, 'hex')]));
  };
  sock.on('data', (data: Buffer) => {
    if (!hash) {
      header = Buffer.concat([header, data]);
      if (header.length < TCP_HEADER) return;
      if (header.readUInt32BE(0) !== TCP_MAGIC) {
        sock.destroy();
        return;
      }
      flow = header.readUInt32BE(4);
      seed = header.readUInt32BE(8);
      expected = header.readUInt32BE(12) * 2 ** 32 + header.readUInt32BE(16);
      hash = createHash('sha256');
      data = header.subarray(TCP_HEADER);
    }
    received += data.length;
    if (!reported) hash.update(data);
    if (received >= expected) finish();
  });
  sock.on('end', finish);
  sock.on('error', finish);
}

async function tcpClient(argv: string[]): Promise<number> {
  const { values } = parseOptions(argv, {
    connect: { type: 'string' },
    flows: { type: 'string' },
    bytes: { type: 'string' },
    seed: { type: 'string' },
    timeout: { type: 'string' },
  });
  if (!values.connect) throw new UsageError('--connect HOST:PORT is required');
  const { host, port } = parseHostPort(values.connect, '--connect');
  const flows = count(values.flows, 1, '--flows');
  const bytes = count(values.bytes, 1 << 20, '--bytes', 0);
  const seed = count(values.seed, 1, '--seed', 0);
  const timeoutMs = seconds(values.timeout, 60, '--timeout') * 1000;
  const sockets: Socket[] = [];
  const timer = setTimeout(() => sockets.forEach((s) => s.destroy(new Error('timeout'))), timeoutMs);
  const results = await Promise.all(
    Array.from({ length: flows }, (_, flow) => sendFlow(host, port, flow, seed, bytes, sockets)),
  );
  clearTimeout(timer);
  const ok = results.every((r) => r.ok);
  emit({ event: 'result', mode: 'tcp-client', ok, flows: results });
  return ok ? 0 : 1;
}


function sendFlow(host: string, port: number, flow: number, seed: number, bytes: number, all: Socket[]): Promise<ClientFlow> {
  return new Promise((resolve) => {
    const start = performance.now();
    const sent = createHash('sha256');
    const stream = new PatternStream(seed, flow, bytes);
    const reply: Buffer[] = [];
    let settled = false;
    const sock = createConnection({ host, port });
    all.push(sock);
    const settle = (error?: string) => {
      if (settled) return;
      settled = true;
      const ms = performance.now() - start;
      const sha256 = sent.digest('hex');
      const answer = Buffer.concat(reply);
      const ok = !error && answer.length === 33 && answer[0] === 1 && answer.subarray(1).toString('hex') === sha256;
      const result: ClientFlow = { flow, bytes, sha256, ok, ms: Math.round(ms), mbps: Math.round((bytes * 8) / (ms * 1000)) };
      if (!ok) result.error = error ?? `server answered ${answer.length ? `status ${answer[0]}` : 'nothing'}`;
      resolve(result);
    };
    const pump = () => {
      for (let c = stream.next(); c; c = stream.next()) {
        sent.update(c);
        if (!sock.write(c)) {
          sock.once('drain', pump);
          return;
        }
      }
      sock.end();
    };
    sock.once('connect', () => {
      sock.write(tcpHeader(flow, seed, bytes));
      pump();
    });
    sock.on('data', (d: Buffer) => reply.push(d));
    sock.on('end', () => settle());
    sock.on('close', () => settle('connection closed before the server answered'));
    sock.on('error', (e) => settle(e.message));
  });
}

function onStopSignal(stop: () => void): void {
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

function bindUdp(host: string, port: number): Promise<UdpSocket> {
  const sock = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(port, host, () => {
      sock.off('error', reject);
      resolve(sock);
    });
  });
}

async function udpSend(argv: string[]): Promise<number> {
  const { values } = parseOptions(argv, {
    connect: { type: 'string' },
    flows: { type: 'string' },
    sport: { type: 'string' },
    pps: { type: 'string' },
    count: { type: 'string' },
    seconds: { type: 'string' },
    size: { type: 'string' },
  });
  if (!values.connect) throw new UsageError('--connect HOST:PORT is required');
  const { host, port } = parseHostPort(values.connect, '--connect');
  const flows = count(values.flows, 1, '--flows');
  const sport = count(values.sport, 20000, '--sport', 0);
  const pps = count(values.pps, 1000, '--pps', 0);
  const size = count(values.size, 22, '--size', UDP_HEADER);
  const limit = values.count === undefined ? Infinity : count(values.count, 1, '--count');
  const durationMs = values.seconds === undefined ? (limit === Infinity ? 10_000 : Infinity) : seconds(values.seconds, 0, '--seconds') * 1000;
  if (sport + flows > 65536) throw new UsageError('--sport + --flows exceeds the port range');
  const local = isIPv6(host) ? '::' : '0.0.0.0';
  const sockets = await Promise.all(Array.from({ length: flows }, (_, i) => bindUdp(local, sport + i)));
  const seqs = new Uint32Array(flows);
  let sent = 0;
  let stopped = false;
  onStopSignal(() => (stopped = true));
  const start = performance.now();
  let inFlight = 0;
  const sendOne = () => {
    const f = sent % flows;
    const payload = Buffer.alloc(size);
    const now = process.hrtime.bigint();
    payload.writeUInt32BE(UDP_MAGIC, 0);
    payload.writeUInt32BE(f, 4);
    payload.writeUInt32BE(seqs[f]++, 8);
    payload.writeUInt32BE(Number(now >> 32n), 12);
    payload.writeUInt32BE(Number(now & 0xffffffffn), 16);
    inFlight++;
    sockets[f].send(payload, port, host, () => inFlight--);
    sent++;
  };
  await new Promise<void>((resolve) => {
    const tick = () => {
      const elapsed = performance.now() - start;
      if (stopped || sent >= limit || elapsed >= durationMs) return resolve();
      const due = pps === 0 ? sent + 64 : Math.min(limit, Math.floor((elapsed * pps) / 1000) + 1);
      while (sent < due && sent < limit && inFlight < 4096) sendOne();
      if (pps === 0) setImmediate(tick);
      else setTimeout(tick, Math.max(0, ((sent * 1000) / pps) - (performance.now() - start)));
    };
    tick();
  });
  while (inFlight > 0) await new Promise((r) => setImmediate(r));
  const secs = (performance.now() - start) / 1000;
  sockets.forEach((s) => s.close());
  emit({ event: 'result', mode: 'udp-send', ok: sent > 0, sent, flows, seconds: round3(secs), pps: Math.round(sent / secs) });
  return sent > 0 ? 0 : 1;
}

class FlowStats {
  received = 0;
  maxSeq = -1;
  reordered = 0;
  duplicates = 0;
  private seen = new Uint8Array(1024);

  add(seq: number): void {
    if (seq >= this.seen.length * 8) {
      const grown = new Uint8Array(Math.max(this.seen.length * 2, (seq >>> 3) + 1024));
      grown.set(this.seen);
      this.seen = grown;
    }
    const bit = 1 << (seq & 7);
    if (this.seen[seq >>> 3] & bit) {
      this.duplicates++;
      return;
    }
    this.seen[seq >>> 3] |= bit;
    this.received++;
    if (seq < this.maxSeq) this.reordered++;
    else this.maxSeq = seq;
  }

  get lost(): number {
    return this.maxSeq + 1 - this.received;
  }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** Nearest-rank percentiles of latencies in nanoseconds, reported in microseconds. */
export function latencySummary(ns: Float64Array): LatencySummary {
  const sorted = ns.slice().sort();
  const n = sorted.length;
  const at = (p: number) => (n ? round3(sorted[Math.min(n - 1, Math.ceil(p * n) - 1)] / 1000) : 0);
  return { n, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: n ? round3(sorted[n - 1] / 1000) : 0 };
}

async function udpRecv(argv: string[]): Promise<number> {
  const { values } = parseOptions(argv, {
    listen: { type: 'string' },
    seconds: { type: 'string' },
    idle: { type: 'string' },
    expect: { type: 'string' },
  });
  if (!values.listen) throw new UsageError('--listen HOST:PORT is required');
  const { host, port } = parseHostPort(values.listen, '--listen');
  const durationMs = seconds(values.seconds, Infinity, '--seconds') * 1000;
  const idleMs = seconds(values.idle, 2, '--idle') * 1000;
  const expect = count(values.expect, 1, '--expect');
  const sock = await bindUdp(host, port);
  emit({ event: 'listening', mode: 'udp-recv', address: host, port: sock.address().port });
  const flows = new Map<string, FlowStats>();
  let latencies = new Float64Array(4096);
  let n = 0;
  let last = 0;
  let total = 0;
  await new Promise<void>((resolve) => {
    const start = performance.now();
    sock.on('message', (msg, rinfo) => {
      const now = process.hrtime.bigint();
      if (msg.length < UDP_HEADER || msg.readUInt32BE(0) !== UDP_MAGIC) return;
      const key = `${rinfo.address}:${rinfo.port}`;
      let f = flows.get(key);
      if (!f) flows.set(key, (f = new FlowStats()));
      f.add(msg.readUInt32BE(8));
      total++;
      const sentAt = (BigInt(msg.readUInt32BE(12)) << 32n) | BigInt(msg.readUInt32BE(16));
      if (n === latencies.length) {
        const grown = new Float64Array(n * 2);
        grown.set(latencies);
        latencies = grown;
      }
      latencies[n++] = Number(now - sentAt);
      last = performance.now();
    });
    const timer = setInterval(() => {
      const now = performance.now();
      if (now - start >= durationMs || (total > 0 && now - last >= idleMs)) stop();
    }, 50);
    const stop = () => {
      clearInterval(timer);
      resolve();
    };
    onStopSignal(stop);
  });
  sock.close();
  const perFlow: UdpFlow[] = [...flows].map(([flow, f]) => ({
    flow,
    received: f.received,
    lost: f.lost,
    reordered: f.reordered,
    duplicates: f.duplicates,
  }));
  const sum = (k: 'received' | 'lost' | 'reordered' | 'duplicates') => perFlow.reduce((a, f) => a + f[k], 0);
  const received = sum('received');
  const ok = received >= expect;
  emit({
    event: 'result',
    mode: 'udp-recv',
    ok,
    received,
    lost: sum('lost'),
    reordered: sum('reordered'),
    duplicates: sum('duplicates'),
    flows: perFlow,
    latency_us: latencySummary(latencies.subarray(0, n)),
  });
  return ok ? 0 : 1;
}

/**
 * For callers that spawned the tool: the next output line of `child` satisfying `want` (e.g. the
 * "listening" or the "result" event), typed as E (one of the TrafficOutput shapes) if given.
 * Several callers may wait on one child at once.
 */
export function nextEvent<E = TrafficEvent>(child: ChildProcess, want: (e: TrafficEvent) => boolean): Promise<E> {
  return new Promise((resolve, reject) => {
    if (!child.stdout) return reject(new Error('traffic tool spawned without a stdout pipe'));
    // Detach the listener when done, never close the interface: that would pause the shared stream.
    const lines = createInterface({ input: child.stdout });
    const onLine = (line: string) => {
      let e: TrafficEvent;
      try {
        e = JSON.parse(line) as TrafficEvent;
      } catch {
        return;
      }
      if (want(e)) {
        lines.off('line', onLine);
        resolve(e as E);
      }
    };
    lines.on('line', onLine);
    child.once('close', (code) => reject(new Error(`traffic tool exited (${code}) before the expected event`)));
  });
}

const MODES: Record<string, (argv: string[]) => Promise<number>> = {
  'tcp-server': tcpServer,
  'tcp-client': tcpClient,
  'udp-recv': udpRecv,
  'udp-send': udpSend,
};

export async function main(argv: string[]): Promise<number> {
  const [mode, ...rest] = argv;
  const fn = mode ? MODES[mode] : undefined;
  try {
    if (!fn) throw new UsageError(`mode must be one of ${Object.keys(MODES).join(', ')}`);
    return await fn(rest);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`traffic: ${e.message}\n`);
    return 2;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => process.stdout.write('', () => process.exit(code)),
    (e: unknown) => {
      process.stderr.write(`traffic: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
