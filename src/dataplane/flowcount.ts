/*
 * Live flows per SF instance, counted off the per-packet path: the flow table (flowstate.ts) is
 * scanned about once every COUNT_EVERY_MS, SLICE entries at a time between batches (the worker
 * calls step() after its breaths, and a timer wakes an idle worker for it), so a full table never
 * holds a batch back by more than one slice. A flow counts while it was used within FLOW_IDLE_MS
 * (the ovs driver counts its conntrack pins instead: drivers/ovs/flowcount.ts); it counts once at
 * each hop, for the instance it chose there. The counts of a finished scan replace the
 * published ones at once, so a reader never sees a table half counted.
 */
import type { Engine } from './engine.js';

/** A flow not used for this long is not counted (ms, the engine's clock). */
export const FLOW_IDLE_MS = 60_000;
/** How often a scan starts (ms). */
export const COUNT_EVERY_MS = 1000;
/** Flow entries a step scans. */
export const SLICE = 4096;

export class FlowCounter {
  private readonly counting: Float64Array;
  /** Entry the running scan continues at (-1: none running). */
  private next = -1;
  private startedAt = -Infinity;
  /** Scans finished. */
  scans = 0;

  /** `out[k]`: the live flows of instance k (written when a scan ends). */
  constructor(
    private readonly out: Float64Array,
    private readonly idleMs = FLOW_IDLE_MS,
  ) {
    this.counting = new Float64Array(out.length);
  }

  /** One slice of the scan running, or of a new one when one is due at `now` (ms); true while a scan is unfinished. */
  step(engine: Engine, now: number): boolean {
    if (this.next < 0) {
      if (now - this.startedAt < COUNT_EVERY_MS) return false;
      this.startedAt = now;
      this.next = 0;
      this.counting.fill(0);
    }
    this.next = engine.countFlows(this.next, SLICE, this.idleMs, this.counting);
    if (this.next >= 0) return true;
    this.out.set(this.counting);
    this.scans++;
    return false;
  }
}
