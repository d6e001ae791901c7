/*
 * QueuePort: an in-memory PortIO. Its receive side is a FIFO fed by enqueue(); its transmit side
 * hands a copy of every sent frame to a sink callback. Replay is built from it (pcap frames are
 * enqueued, the sink writes per-port pcaps), so is --sf-loopback (the sink of one SF port enqueues
 * on the pair's other port), and so are the pipeline tests: the engine drives it exactly like a
 * live backend.
 *
 * The FIFO is two parallel arrays with a head index (no Array.shift), reset when drained.
 * onReadable is level-triggered like a socket's poll: the callback is scheduled (setImmediate, never
 * from inside enqueue or rxBurst, so the engine is not re-entered) whenever frames are waiting.
 */
import { BATCH, MAX_FRAME, type Batch } from '../../packet/batch.js';
import type { PortIO } from './portio.js';

export type FrameSink = (frame: Uint8Array, timeNs: number) => void;

export class QueuePort implements PortIO {
  readonly name: string;
  /** Link state reported by isUp(); tests may clear it to simulate a down interface. */
  up = true;
  /** Frames discarded on receive because they exceed a batch slot (MAX_FRAME). */
  rxTooBig = 0;

  private readonly sink: FrameSink;
  private frames: Uint8Array[] = [];
  private times: number[] = [];
  private head = 0;
  private readable: (() => void) | null = null;
  private notifyPending = false;

  constructor(name: string, sink: FrameSink) {
    this.name = name;
    this.sink = sink;
  }

  /** Frames waiting on the receive side. */
  get pending(): number {
    return this.frames.length - this.head;
  }

  /** Queue a frame for reception. The array is kept, not copied: do not modify it afterwards. */
  enqueue(frame: Uint8Array, timeNs = 0): void {
    this.frames.push(frame);
    this.times.push(timeNs);
    this.scheduleNotify();
  }

  rxBurst(b: Batch, portIndex: number, max: number): number {
    let n = 0;
    while (n < max && this.head < this.frames.length && b.count < BATCH) {
      const frame = this.frames[this.head];
      const timeNs = this.times[this.head];
      this.head++;
      if (frame.length > MAX_FRAME) {
        this.rxTooBig++;
        continue;
      }
      b.push(frame, portIndex, timeNs);
      n++;
    }
    if (this.head === this.frames.length) {
      this.frames.length = 0;
      this.times.length = 0;
      this.head = 0;
    } else {
      this.scheduleNotify();
    }
    return n;
  }

  txBurst(b: Batch, idx: Uint16Array, n: number): number {
    for (let k = 0; k < n; k++) {
      const i = idx[k];
      this.sink(b.frame(i), b.time[i]);
    }
    return n;
  }

  onReadable(cb: () => void): void {
    this.readable = cb;
    this.scheduleNotify();
  }

  isUp(): boolean {
    return this.up;
  }

  /** Drop whatever is queued and stop notifying; the port reports down afterwards. */
  close(): void {
    this.frames = [];
    this.times = [];
    this.head = 0;
    this.readable = null;
    this.up = false;
  }

  private scheduleNotify(): void {
    if (this.notifyPending || this.readable === null || this.pending === 0) return;
    this.notifyPending = true;
    setImmediate(() => {
      this.notifyPending = false;
      if (this.readable !== null && this.pending > 0) this.readable();
    });
  }
}
