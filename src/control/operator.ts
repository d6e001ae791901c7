/*
 * The operator's live endpoints (VPP's `trace add` and `pcap trace`, OVS's ovs-tcpdump), served
 * by the API while the userspace dataplane runs:
 *
 *   GET /v2.0/sfc/trace?match=EXPR&count=N&timeout=S
 *       the journeys (journey.ts) of the next N packets matching EXPR (tracefilter.ts), one JSON
 *       object per line as each completes (application/x-ndjson); ends after N or S seconds.
 *   GET /v2.0/sfc/capture?port=NAME|ID&count=N&timeout=S[&filter=EXPR]
 *       the frames the port's interface receives and sends as the data path sees them (only those
 *       EXPR matches, tracefilter.ts, when given), as a pcap stream (application/vnd.tcpdump.pcap);
 *       ends after N frames, S seconds, or when the client goes away.
 *
 *   GET /v2.0/sfc/explain?in=IFACE&frame=HEX
 *       the journey (journey.ts steps, as JSON) of one frame arriving on IFACE, as the driver's own
 *       pipeline takes it (ovs: ofproto/trace, drivers/ovs/trace.ts); 501 when the driver has none
 *       (`sfc explain --server` then replays the server's model locally, by the userspace rules).
 *
 * Trace and capture ask the workers to copy what they follow (runtime.ts trace/capture) only while a request
 * is open. A quiet stream is not idle: its own timeout bounds it instead of the server's idle deadline.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TraceStep } from '../dataplane/engine.js';
import { pcapRecordBytes, writePcapHeader, writePcapRecord } from '../dataplane/io/pcapio.js';
import type { Tables } from '../dataplane/tables.js';
import { compileMatch, dissect, type Dissected } from '../dataplane/tracefilter.js';
import { badRequest, NeutronError } from './errors.js';
import { JourneyCollector, stepView, type StepView } from './journey.js';
import type { State } from './model.js';

/** What the endpoints need of the running dataplane (runtime.ts Dataplane). */
export interface LiveDataplane {
  trace(match: string, limit: number, onStep: (step: TraceStep) => void): () => void;
  capture(iface: string, limit: number, onFrame: (frame: Uint8Array, dir: 'rx' | 'tx', timeNs: number) => void, match?: string): () => void;
}

export interface OperatorSource {
  /** The live dataplane; undefined when the driver has none of its own (noop, ovs). */
  dataplane: LiveDataplane | undefined;
  tables(): Tables | null;
  state(): State;
  /** The journey of `frame` arriving on `iface` through the driver's own pipeline (ovs); undefined: none. */
  explain?: (iface: string, frame: Uint8Array) => Promise<StepView[]>;
  /** Aborted when the server shuts down: open streams end then. */
  stopping?: AbortSignal;
}

/** How long a journey waits for its packet to come back from an SF. */
const PATIENCE_MS = 1000;
/** Steps a worker may send per requested journey (a journey is a handful; this bounds a busy filter). */
const STEPS_PER_JOURNEY = 64;

const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp' };

/** 'udp 10.0.0.1:20000 > 10.0.0.2:5353' (sfc explain's --packet notation). */
export function packetText(d: Dissected): string {
  const at = (addr: string, port: number) => (d.ver === 6 ? `[${addr}]` : addr) + (d.sport || d.dport ? `:${port}` : '');
  return `${PROTO_NAMES[d.proto] ?? `proto ${d.proto}`} ${at(d.src, d.sport)} > ${at(d.dst, d.dport)}`;
}

function intParam(url: URL, name: string, dflt: number, max: number): number {
  const text = url.searchParams.get(name);
  if (text === null) return dflt;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > max) throw badRequest('HTTPBadRequest', `${name} must be an integer from 1 to ${max}, got '${text}'`);
  return n;
}

function liveDataplane(src: OperatorSource): LiveDataplane {
  if (src.dataplane === undefined) {
    throw new NeutronError(501, 'HTTPNotImplemented', 'Live trace and capture need the userspace dataplane (sfc serve --driver userspace).');
  }
  return src.dataplane;
}

/** End the response when the count is reached, the time is up, or the client left; stop following then. */
function streamUntil(src: OperatorSource, req: IncomingMessage, res: ServerResponse, timeoutS: number, stop: () => void): () => void {
  let ended = false;
  const timer = setTimeout(() => end(), timeoutS * 1000);
  const end = () => {
    if (ended) return;
    ended = true;
    clearTimeout(timer);
    src.stopping?.removeEventListener('abort', end);
    stop();
    res.end();
  };
  req.socket.setTimeout(0);
  req.once('close', end);
  res.once('close', end);
  src.stopping?.addEventListener('abort', end, { once: true });
  return end;
}

/** A filter expression parameter (tracefilter.ts); '' when absent, 400 when it does not compile. */
function matchParam(url: URL, name: string): string {
  const match = url.searchParams.get(name) ?? '';
  try {
    compileMatch(match);
  } catch (e) {
    throw badRequest('HTTPBadRequest', (e as Error).message);
  }
  return match;
}

export function streamTrace(src: OperatorSource, url: URL, req: IncomingMessage, res: ServerResponse): void {
  const dp = liveDataplane(src);
  const match = matchParam(url, 'match');
  const count = intParam(url, 'count', 10, 10_000);
  const timeout = intParam(url, 'timeout', 60, 86_400);
  const t = src.tables();
  const sfIfs = new Set<string>();
  for (let k = 0; t !== null && k < t.instanceCount; k++) {
    if (t.instGroup[k] >= 0) sfIfs.add(t.interfaces[t.instIfIn[k]]).add(t.interfaces[t.instIfOut[k]]);
  }
  res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store' });
  let emitted = 0;
  const collector = new JourneyCollector(sfIfs, PATIENCE_MS, (journey) => {
    if (emitted >= count) return;
    res.write(JSON.stringify(journey) + '\n');
    if (++emitted >= count) end();
  });
  const untrace = dp.trace(match, count * STEPS_PER_JOURNEY, (step) => {
    const tables = src.tables();
    const d = dissect(step.frame);
    if (tables !== null && d !== null) collector.add(d.key, `${packetText(d)} on ${step.in}`, stepView(tables, src.state(), step));
  });
  const end = streamUntil(src, req, res, timeout, () => {
    untrace();
    collector.close();
  });
}

export function streamCapture(src: OperatorSource, url: URL, req: IncomingMessage, res: ServerResponse): void {
  const dp = liveDataplane(src);
  const which = url.searchParams.get('port');
  if (!which) throw badRequest('HTTPBadRequest', 'port (a port name or id) is required');
  const ports = src.state().ports.filter((p) => p.id === which || p.name === which);
  if (ports.length === 0) throw new NeutronError(404, 'PortNotFound', `Port ${which} could not be found.`);
  if (ports.length > 1) throw new NeutronError(409, 'Conflict', `${ports.length} ports are named '${which}': use an id.`);
  const iface = ports[0]['binding:profile'].interface;
  const count = intParam(url, 'count', 1_000_000_000, 1_000_000_000);
  const timeout = intParam(url, 'timeout', 86_400, 86_400);
  const filter = matchParam(url, 'filter');
  res.writeHead(200, { 'Content-Type': 'application/vnd.tcpdump.pcap', 'Cache-Control': 'no-store', 'X-Sfc-Interface': iface });
  const header = Buffer.alloc(24);
  writePcapHeader(header, 0);
  res.write(header);
  let written = 0;
  const uncapture = dp.capture(iface, count, (frame, _dir, timeNs) => {
    if (written >= count) return;
    const rec = Buffer.allocUnsafe(pcapRecordBytes(frame));
    writePcapRecord(rec, 0, frame, timeNs);
    res.write(rec);
    if (++written >= count) end();
  }, filter);
  const end = streamUntil(src, req, res, timeout, uncapture);
}

/** Frames explain accepts: Ethernet header to jumbo, as hex. */
const MAX_EXPLAIN_BYTES = 9216;

export async function answerExplain(src: OperatorSource, url: URL): Promise<StepView[]> {
  if (src.explain === undefined) throw new NeutronError(501, 'HTTPNotImplemented', "This server's driver does not explain through its own pipeline: sfc explain replays its model locally.");
  const iface = url.searchParams.get('in') ?? '';
  const hex = url.searchParams.get('frame') ?? '';
  if (!src.state().ports.some((p) => p['binding:profile'].interface === iface)) throw badRequest('HTTPBadRequest', `in: no port has interface '${iface}'`);
  if (!/^([0-9a-f]{2}){14,}$/i.test(hex) || hex.length > 2 * MAX_EXPLAIN_BYTES) throw badRequest('HTTPBadRequest', `frame must be an Ethernet frame as hex (14 to ${MAX_EXPLAIN_BYTES} bytes)`);
  return src.explain(iface, Uint8Array.from(Buffer.from(hex, 'hex')));
}
