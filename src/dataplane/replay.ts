/*
 * Replay: pcap frames through the SAME Engine the live path runs, on in-memory QueuePorts instead
 * of sockets, so a capture can be re-run offline, turned into golden per-interface pcaps, and
 * explained frame by frame ("which hop dropped my packet?").
 *
 * A ReplaySession runs one input frame at a time to quiescence (breathe until idle) with a tracer
 * attached, and summarises the frame's journey: the verdict ("chain", "l2", "flood",
 * "drop:<reason>"), the chain, the instance (port pair) chosen at each hop, and the interfaces the
 * frame finally left by. With `sfLoopback`, every frame transmitted to a port of a port pair (the
 * interface of the port, addressed to the port's MAC) comes back on the pair's other port (the same
 * port for a single-armed SF), unchanged or, when encapsulated for an SF-aware hop, with its service
 * index decremented as an aware SF does (decrementIndex), standing in for the service functions, so a whole chain,
 * forward and reverse, replays without live SFs; such transmissions are part of the journey, not
 * final outputs. Broadcast and frames for other MACs are not looped (that would loop floods).
 *
 * replayFiles merges several input files by timestamp (stable: file order breaks ties), writes
 * <outDir>/<interface>.pcap for every interface that transmitted, and <outDir>/verdicts.jsonl (one
 * line per input frame).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { findEncap } from './encap.js';
import { Engine, type TraceStep } from './engine.js';
import { LINKTYPE_ETHERNET, PcapWriter, readPcap, type PcapFrame } from './io/pcapio.js';
import { DEFAULT_MTU } from './io/native.js';
import { QueuePort } from './io/queue.js';
import { formatMac, INST_MAC_STRIDE, type Tables } from './tables.js';

export interface Verdict {
  in: string;
  index: number;
  verdict: string;
  chain: string | null;
  hops: string[];
  out: string[];
}

export interface Journey {
  verdict: string;
  chain: string | null;
  hops: string[];
  out: string[];
  steps: TraceStep[];
}

/** At most this many breaths per input frame (a loop through SFs is reported, not hung on). */
const MAX_BREATHS = 1000;

export class ReplaySession {
  readonly tables: Tables;
  private readonly engine: Engine;
  private readonly ports = new Map<string, QueuePort>();
  /** "iface mac" of an SF port -> interface of the pair's other port. */
  private readonly loop = new Map<string, string>();
  private readonly onTransmit: (iface: string, frame: Uint8Array, timeNs: number) => void;
  private nowMs = 0;
  private steps: TraceStep[] = [];
  private finalOut: string[] = [];

  constructor(
    tables: Tables,
    opts: { sfLoopback?: boolean; onTransmit?: (iface: string, frame: Uint8Array, timeNs: number) => void } = {},
  ) {
    this.tables = tables;
    this.onTransmit = opts.onTransmit ?? (() => undefined);
    if (opts.sfLoopback) {
      const t = tables;
      const taps = new Set(t.tapInst);
      for (let k = 0; k < t.instanceCount; k++) {
        if (t.instGroup[k] < 0 || taps.has(k)) continue; // (a simulated tap consumes its copy)
        const ingress = t.interfaces[t.instIfIn[k]];
        const egress = t.interfaces[t.instIfOut[k]];
        this.loop.set(`${ingress} ${formatMac(t.instMac, k * INST_MAC_STRIDE)}`, egress);
        this.loop.set(`${egress} ${formatMac(t.instMac, k * INST_MAC_STRIDE + 6)}`, ingress);
      }
    }
    // Offline there are no interfaces to ask: every egress has Ethernet's default MTU.
    this.engine = new Engine((name) => this.openPort(name), undefined, { clock: () => this.nowMs, mtu: () => DEFAULT_MTU });
    this.engine.setTracer((step) => this.steps.push(step));
    this.engine.publish(this.tables);
    this.engine.breathe();
  }

  /** Interfaces the engine attached (the config's interfaces). */
  get interfaces(): string[] {
    return this.tables.interfaces.filter((n) => n !== '');
  }

  get counters() {
    return this.engine.counters;
  }

  private openPort(name: string): QueuePort {
    const q = new QueuePort(name, (frame, timeNs) => {
      this.onTransmit(name, frame, timeNs);
      const back = this.loop.get(`${name} ${formatMac(frame, 0)}`);
      const port = back === undefined ? undefined : this.ports.get(back);
      if (port) port.enqueue(decrementIndex(frame), timeNs);
      else this.finalOut.push(name);
    });
    this.ports.set(name, q);
    return q;
  }

  /** Run one frame arriving on `iface` to quiescence and describe its journey. */
  run(iface: string, frame: Uint8Array, timeNs: number): Journey {
    const port = this.ports.get(iface);
    if (!port) throw new Error(`unknown interface '${iface}' (the config has: ${this.interfaces.join(', ')})`);
    this.steps = [];
    this.finalOut = [];
    this.nowMs = timeNs / 1e6;
    port.enqueue(frame, timeNs);
    let breaths = 0;
    while (this.engine.breathe() > 0 && ++breaths < MAX_BREATHS);
    const steps = this.steps;
    const drop = [...steps].reverse().find((s) => s.verdict === 'drop');
    const chained = steps.find((s) => s.chain !== null);
    let verdict: string;
    if (breaths >= MAX_BREATHS) verdict = 'loop';
    else if (drop) verdict = `drop:${drop.drop}`;
    else if (chained) verdict = 'chain';
    else verdict = steps.some((s) => s.verdict === 'flood') ? 'flood' : 'l2';
    return {
      verdict,
      chain: chained?.chain ?? null,
      hops: steps.filter((s) => s.verdict === 'hop').map((s) => s.instance!),
      out: this.finalOut,
      steps,
    };
  }

  close(): void {
    this.engine.close();
  }
}

/**
 * What an SF-aware SF does to the service index (spec B.2): an MPLS frame comes back with the top
 * label's SI byte and its TTL decremented, an NSH frame with its SI decremented; anything else
 * unchanged (a copy).
 */
export function decrementIndex(frame: Uint8Array): Uint8Array {
  const out = Uint8Array.from(frame);
  const e = findEncap(out);
  if (e?.kind === 'mpls') {
    const v = new DataView(out.buffer);
    const w = v.getUint32(e.at);
    const si = ((w >>> 12) - 1) & 0xff;
    v.setUint32(e.at, ((((w >>> 20) << 8) | si) << 12) | (w & 0xf00) | (((w & 0xff) - 1) & 0xff));
  } else if (e?.kind === 'nsh') {
    out[e.at + 7] = (out[e.at + 7] - 1) & 0xff;
  }
  return out;
}

export interface ReplayInput {
  iface: string;
  file: string;
}

export interface ReplayResult {
  verdicts: Verdict[];
  /** Frames written per output interface. */
  written: Record<string, number>;
}

/** Replay pcap files into an engine running `tables`; write per-interface pcaps and verdicts. */
export async function replayFiles(tables: Tables, inputs: ReplayInput[], outDir: string, sfLoopback: boolean): Promise<ReplayResult> {
  const merged: { iface: string; index: number; frame: PcapFrame; order: number }[] = [];
  for (const [order, { iface, file }] of inputs.entries()) {
    const { linktype, frames } = await readPcap(file);
    if (linktype !== LINKTYPE_ETHERNET) throw new Error(`${file}: linktype ${linktype} is not Ethernet (1)`);
    frames.forEach((frame, index) => merged.push({ iface, index, frame, order }));
  }
  merged.sort((a, b) => a.frame.timeNs - b.frame.timeNs || a.order - b.order || a.index - b.index);

  await mkdir(outDir, { recursive: true });
  const writers = new Map<string, PcapWriter>();
  const written: Record<string, number> = {};
  const session = new ReplaySession(tables, {
    sfLoopback,
    onTransmit: (iface, frame, timeNs) => {
      let w = writers.get(iface);
      if (!w) writers.set(iface, (w = new PcapWriter(join(outDir, `${iface}.pcap`))));
      w.write(frame, timeNs);
      written[iface] = (written[iface] ?? 0) + 1;
    },
  });
  for (const { iface } of inputs) {
    if (!session.interfaces.includes(iface)) {
      session.close();
      throw new Error(`--in ${iface}=...: unknown interface '${iface}' (the config has: ${session.interfaces.join(', ')})`);
    }
  }
  const verdicts: Verdict[] = [];
  try {
    for (const { iface, index, frame } of merged) {
      const j = session.run(iface, frame.data, frame.timeNs);
      verdicts.push({ in: iface, index, verdict: j.verdict, chain: j.chain, hops: j.hops, out: j.out });
    }
  } finally {
    session.close();
    for (const w of writers.values()) await w.close();
  }
  await writeFile(join(outDir, 'verdicts.jsonl'), verdicts.map((v) => JSON.stringify(v) + '\n').join(''));
  return { verdicts, written };
}
