/*
 * Journeys: a packet's passes through the data path, told the same way by `sfc explain` (a
 * replayed synthetic packet) and `sfc trace` (live packets, on the server).
 *
 * A TraceStep (engine.ts) refers to the live tables by index; stepView turns it into names and
 * words while those tables are at hand (the classifier that matched, with its match written out,
 * the encapsulation the frame carries, its MACs), so the view can travel (JSON) and be printed
 * anywhere by journeyLines. JourneyCollector groups live steps into journeys: a packet is
 * recognised again by its trace key (tracefilter.ts) when it comes back from an SF; a journey
 * starts where a packet enters from a non-SF interface and ends when it leaves the chain, is
 * switched, flooded or dropped — or is reported incomplete when it is not seen again in time.
 */
import { describeRule } from '../classifier/lookup.js';
import { ruleFromClassifier } from '../classifier/rule.js';
import { describeEncap } from '../dataplane/encap.js';
import type { TraceStep } from '../dataplane/engine.js';
import { formatMac, type Tables } from '../dataplane/tables.js';
import type { State } from './model.js';

export interface StepView extends Omit<TraceStep, 'frame' | 'classifier'> {
  /** The matched classifier as `name: what it matches` (null outside a chain). */
  classifier: string | null;
  srcMac: string;
  dstMac: string;
  /** The MPLS/NSH header the frame carries as it leaves ('' for none). */
  encap: string;
}

export function stepView(t: Tables, state: State, step: TraceStep): StepView {
  const { frame, ...rest } = step;
  let classifier: string | null = null;
  if (step.rule >= 0) {
    const info = t.rules[step.rule];
    const fc = state.flow_classifiers.find((f) => f.id === info.classifierId);
    const portIdx = (id: string) => t.portIds.indexOf(id);
    classifier = `${info.classifier}: ${fc ? describeRule(ruleFromClassifier(fc, portIdx, { reverse: info.reverse }), (k) => t.portNames[k]) : ''}`;
  }
  return { ...rest, classifier, srcMac: formatMac(frame, 6), dstMac: formatMac(frame, 0), encap: describeEncap(frame) };
}

/** Lines for one step; `introduce` adds the matched classifier and the path (first chain step). */
function describeStep(step: StepView, introduce: boolean): string[] {
  const lines: string[] = [];
  const out = step.out.join(', ') || '(nothing)';
  if (introduce && step.classifier !== null) {
    lines.push(`classifier ${step.classifier}`);
    lines.push(`chain ${step.chain}, path SPI ${step.spi} ${step.reverse ? 'reverse' : 'forward'}`);
  }
  const carrying = step.encap ? `, carrying ${step.encap}` : '';
  switch (step.verdict) {
    case 'hop':
      if (step.hop < 0) lines.push(`tap copy: instance ${step.instance} -> out ${out}, dst MAC ${step.dstMac}${carrying}`);
      else lines.push(`hop ${step.hop + 1} (SI ${step.si}): instance ${step.instance} -> out ${out}, dst MAC ${step.dstMac}${carrying}`);
      break;
    case 'end':
      lines.push(`end of chain: MACs ${step.srcMac} > ${step.dstMac} -> out ${out}`);
      break;
    case 'l2':
      lines.push(`not in a chain: switched by L2 learning -> out ${out}`);
      break;
    case 'flood':
      lines.push(`not in a chain: broadcast or unknown destination, flooded -> out ${out}`);
      break;
    case 'drop':
      lines.push(`DROPPED: ${step.drop}`);
      break;
  }
  return lines;
}

/** The numbered lines of a journey (explain's format). */
export function journeyLines(steps: readonly StepView[]): string[] {
  const lines: string[] = [];
  let chain: string | null = null;
  steps.forEach((step, n) => {
    // A new chain: the first classification, or a service graph handing the packet on.
    const entering = step.rule >= 0 && step.chain !== null && step.chain !== chain && step.hop <= 0;
    if (entering && chain !== null) lines.push(`      service graph: handed off from chain ${chain} to chain ${step.chain}`);
    const [head, ...rest] = describeStep(step, entering);
    if (entering) chain = step.chain;
    lines.push(`${String(n + 1).padStart(2)}. in ${step.in}${n > 0 ? ' (from the SF)' : ''}: ${head}`);
    for (const line of rest) lines.push(`      ${line}`);
  });
  return lines;
}

/** Where a journey ends, as `sfc replay` words it ("chain", "l2", "flood", "drop:<reason>"). */
export function journeyVerdict(steps: readonly StepView[]): { verdict: string; chain: string | null; hops: string[]; out: string[] } {
  const last = steps[steps.length - 1];
  const verdict = last === undefined ? 'none' : last.verdict === 'end' ? 'chain' : last.verdict === 'drop' ? `drop:${last.drop}` : last.verdict;
  const hops = steps.filter((s) => s.verdict === 'hop' && s.hop >= 0 && s.instance !== null).map((s) => s.instance!);
  return { verdict, chain: steps.find((s) => s.chain !== null)?.chain ?? null, hops, out: last?.out ?? [] };
}

export interface LiveJourney {
  /** The packet (as the trace filter read it) and where it entered. */
  packet: string;
  steps: StepView[];
  /** False: it left for an SF and was not seen again within the collector's patience. */
  complete: boolean;
}

const ENDS = new Set<StepView['verdict']>(['end', 'drop', 'l2', 'flood']);

export class JourneyCollector {
  private readonly open = new Map<string, { journey: LiveJourney; last: number }>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    /** Interfaces of SF ports: a packet first seen there is mid-journey and not followed. */
    private readonly sfInterfaces: ReadonlySet<string>,
    private readonly patienceMs: number,
    private readonly emit: (j: LiveJourney) => void,
  ) {}

  add(key: string, packet: string, step: StepView, now = Date.now()): void {
    let o = this.open.get(key);
    if (o === undefined) {
      if (this.sfInterfaces.has(step.in)) return;
      o = { journey: { packet, steps: [], complete: false }, last: now };
      this.open.set(key, o);
      this.timer ??= setInterval(() => this.expire(Date.now()), Math.max(50, this.patienceMs / 4));
    }
    o.journey.steps.push(step);
    o.last = now;
    if (ENDS.has(step.verdict)) this.finish(key, true);
  }

  /** Report journeys not seen for the collector's patience as incomplete. */
  expire(now: number): void {
    for (const [key, o] of this.open) if (now - o.last >= this.patienceMs) this.finish(key, false);
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.open.clear();
  }

  private finish(key: string, complete: boolean): void {
    const o = this.open.get(key)!;
    this.open.delete(key);
    o.journey.complete = complete;
    this.emit(o.journey);
  }
}
