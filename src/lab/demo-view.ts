/*
 * demo-view: what `sfc demo` shows while traffic runs, and its closing summary.
 *
 * A Frame is one refresh: per SF instance the packets the dataplane steered to it (its
 * sfc_instance_packets_total, both directions) and their rate since the previous refresh, the
 * flows the SF namespace itself saw (flowlog.ts), the dataplane's totals and one status line per
 * traffic generator. On a terminal LiveView redraws the table in place; otherwise (a log, a pipe,
 * CI) it prints one plain line per refresh. Rendering is pure: frames in, lines out.
 */
import type { FlowLog, FlowTrace } from './flowlog.js';
import { metric, type LabInfo, type Sample } from './harness.js';

export interface Snapshot {
  /** performance.now() when taken. */
  at: number;
  samples: Sample[];
  log: FlowLog | null;
}

export interface InstanceRow {
  hop: number;
  /** SF namespace. */
  ns: string;
  portPair: string;
  packets: number;
  /** Packets per second since the previous snapshot. */
  rate: number;
  /** Distinct flows the SF saw arrive forward (in0) and replies of (out0). */
  flowsIn: number;
  flowsOut: number;
}

export interface Frame {
  title: string;
  seconds: number;
  rows: InstanceRow[];
  rx: number;
  tx: number;
  classified: number;
  switched: number;
  dropped: number;
  /** One line per traffic generator (what it does and how far it is). */
  traffic: string[];
}

/** Port pair name of an SF instance in the lab's chain config. */
export const portPairName = (hop: number, instance: number) => `pp${hop}${instance}`;

export function buildFrame(lab: LabInfo, title: string, start: number, prev: Snapshot | null, cur: Snapshot, traffic: string[]): Frame {
  const dt = prev ? (cur.at - prev.at) / 1000 : 0;
  const packets = (s: Snapshot | null, pp: string) => (s ? metric(s.samples, 'sfc_instance_packets_total', { port_pair: pp }) : 0);
  const rows = lab.sfs.map((sf) => {
    const pp = portPairName(sf.hop, sf.instance);
    const now = packets(cur, pp);
    const view = cur.log?.sfs.find((v) => v.sf.ns === sf.ns);
    return {
      hop: sf.hop,
      ns: sf.ns,
      portPair: pp,
      packets: now,
      rate: dt > 0 ? Math.max(0, (now - packets(prev, pp)) / dt) : 0,
      flowsIn: new Set(view?.fromIn.map((x) => x.flow)).size,
      flowsOut: new Set(view?.fromOut.map((x) => x.flow)).size,
    };
  });
  const event = (e: string) => metric(cur.samples, 'sfc_packets_total', { event: e });
  return {
    title,
    seconds: (cur.at - start) / 1000,
    rows,
    rx: event('rx_packets'),
    tx: event('tx_packets'),
    classified: event('classified'),
    switched: event('unclassified'),
    dropped: metric(cur.samples, 'sfc_drops_total'),
    traffic,
  };
}

export const count = (n: number) => Math.round(n).toLocaleString('en-US');

function columns(cells: string[][], right: ReadonlySet<number>): string[] {
  const widths = cells[0].map((_, c) => Math.max(...cells.map((row) => row[c].length)));
  return cells.map((row) => row.map((cell, c) => (right.has(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join('   ').trimEnd());
}

/** The full table (terminal). */
export function renderTable(f: Frame): string[] {
  const cells = [
    ['hop', 'SF namespace', 'port pair', 'packets steered', 'pkt/s', 'flows the SF saw: forward / replies'],
    ...f.rows.map((r) => [String(r.hop), r.ns, r.portPair, count(r.packets), count(r.rate), `${r.flowsIn} / ${r.flowsOut}`]),
  ];
  return [
    `${f.title} · ${f.seconds.toFixed(1)} s`,
    '',
    ...columns(cells, new Set([0, 3, 4])).map((l) => `  ${l}`),
    '',
    `  dataplane: ${count(f.rx)} frames in, ${count(f.tx)} out · ${count(f.classified)} entered the chain, ` +
      `${count(f.switched)} switched at L2 · ${count(f.dropped)} dropped`,
    ...f.traffic.map((t) => `  ${t}`),
  ];
}

/** One line per refresh (not a terminal). */
export function renderLine(f: Frame): string {
  const inst = f.rows.map((r) => `${r.portPair} ${count(r.packets)} (${count(r.rate)}/s, ${r.flowsIn} flows)`).join(', ');
  return [`[${f.seconds.toFixed(1)} s] ${inst}`, `in ${count(f.rx)} out ${count(f.tx)} dropped ${count(f.dropped)}`, ...f.traffic].join(' | ');
}

export class LiveView {
  private readonly out: NodeJS.WritableStream;
  private readonly tty: boolean;
  private drawn = 0;

  constructor(out: NodeJS.WritableStream, tty: boolean) {
    this.out = out;
    this.tty = tty;
  }

  show(f: Frame): void {
    if (!this.tty) {
      this.out.write(renderLine(f) + '\n');
      return;
    }
    const lines = renderTable(f);
    // Back to the first line of the previous drawing, clear to the end of the screen, redraw.
    const up = this.drawn > 0 ? `\x1b[${this.drawn}F\x1b[J` : '';
    this.out.write(up + lines.join('\n') + '\n');
    this.drawn = lines.length;
  }
}

export interface Check {
  ok: boolean;
  text: string;
}

export function renderVerdict(checks: Check[]): string[] {
  const pass = checks.every((c) => c.ok);
  return [`verdict: ${pass ? 'PASS' : 'FAIL'}`, ...checks.map((c) => `  ${c.ok ? '✓' : '✗'} ${c.text}`)];
}

/** Where each flow went: "tcp/41234  sf11 → sf22   replies sf22 → sf11" (instances by namespace suffix). */
export function renderFlowMap(traces: FlowTrace[]): string[] {
  const name = (hop: number, inst: number[]) => (inst.length === 1 ? `sf${hop}${inst[0]}` : inst.length ? `{${inst.map((k) => `sf${hop}${k}`).join(',')}}` : '-');
  const width = Math.max(0, ...traces.map((t) => t.flow.length));
  return traces.map((t) => {
    const fwd = t.forward.map((inst, h) => name(h + 1, inst)).join(' → ');
    const anyReply = t.reverse.some((inst) => inst.length > 0);
    const rev = anyReply ? `   replies ${t.reverse.map((inst, h) => name(h + 1, inst)).reverse().join(' → ')}` : '';
    return `  ${t.flow.padEnd(width)}  ${fwd}${rev}`;
  });
}
