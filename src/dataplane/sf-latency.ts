/*
 * Time spent inside each SF: the data path timestamps a sample of the frames it sends to an SF
 * instance and matches them when they come back, per instance a latency histogram.
 *
 * Sampling: one frame in `every` a batch carries is a sampling point (a countdown over the
 * batch's frame count: one subtraction and one branch per batch); the frame at that point is
 * sampled if select sent it to an instance that has no sample out already (and is not a tap).
 * The sample's key survives an SF that routes (TTL, checksum and MACs change): source and
 * destination addresses, protocol, ports, IP id and the head of the L4 content (TCP sequence and
 * acknowledgement numbers; the first 16 bytes after a UDP/other header), read from the parsed
 * fields and the frame before execute pushes any encapsulation (an aware SF's frame comes back
 * encapsulated too: parse describes its inner packet). It is expected back at the instance's
 * return interface (egress on a forward path, ingress on a reverse one).
 *
 * Matching: while samples are out, the engine notes after each interface's rxBurst which slots
 * came from an interface a sample is expected back on (one check per interface and breath);
 * only those frames are compared after parse, by ports first (a few integer compares), the whole
 * key only when the ports agree. Frames from other interfaces cost nothing. A sample not back within SAMPLE_TIMEOUT_MS is counted lost when its instance
 * is next sampled; a new table generation forgets the samples out.
 *
 * Histogram per instance (HIST_STRIDE float64 words): bucket 0 below 8 µs, buckets 1..136
 * log-spaced at 8 per octave from 8 µs to 2^20 µs (~1.05 s; bucket k ends at 2^((k+24)/8) µs),
 * bucket 137 beyond; then the sum of the samples (µs) and the samples lost. Timing is the worker's
 * monotonic clock, read once per batch that samples or matches: the time from the batch that sent
 * the frame to the batch that received it back.
 */
import type { Batch } from '../packet/batch.js';
import { V_HOP, type SteerState } from './flowstate.js';
import type { Tables } from './tables.js';

export const HIST_BUCKETS = 138;
export const HIST_SUM = HIST_BUCKETS;
export const HIST_LOST = HIST_BUCKETS + 1;
export const HIST_STRIDE = HIST_BUCKETS + 2;
export const DEFAULT_SAMPLE_EVERY = 64;
export const SAMPLE_TIMEOUT_MS = 1000;
/** Samples out at once (per engine). */
const MAX_OUT = 64;
/** Interface bursts noted per batch (more are not matched: their samples come back lost). */
const MAX_RANGES = 64;
const KEY = 5;

/** Upper bound (µs) of bucket k (Infinity for the last). */
export function bucketUpperUs(k: number): number {
  return k >= HIST_BUCKETS - 1 ? Infinity : 2 ** ((k + 24) / 8);
}

export function bucketOf(us: number): number {
  if (!(us >= 8)) return 0;
  return Math.min(Math.floor(Math.log2(us) * 8) - 23, HIST_BUCKETS - 1);
}

/** The q-quantile (0..1) in µs of histogram counts c[0..HIST_BUCKETS) (linear within a bucket); null without samples. */
export function quantileUs(c: ArrayLike<number>, q: number, at = 0): number | null {
  let total = 0;
  for (let k = 0; k < HIST_BUCKETS; k++) total += c[at + k];
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let k = 0; k < HIST_BUCKETS; k++) {
    const n = c[at + k];
    if (n > 0 && seen + n >= rank) {
      const lo = k === 0 ? 0 : bucketUpperUs(k - 1);
      const hi = k === HIST_BUCKETS - 1 ? lo : bucketUpperUs(k);
      return lo + (hi - lo) * Math.max(0, Math.min(1, (rank - seen) / n));
    }
    seen += n;
  }
  return bucketUpperUs(HIST_BUCKETS - 2);
}

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

/** Key of slot i (see the design comment) into out[o..o+KEY). */
function keyOf(b: Batch, i: number, out: Int32Array, o: number): void {
  const w = i * 4;
  let src = b.src[w];
  let dst = b.dst[w];
  if (b.ipVer[i] === 6) {
    src ^= rotl(b.src[w + 1], 7) ^ rotl(b.src[w + 2], 13) ^ rotl(b.src[w + 3], 19);
    dst ^= rotl(b.dst[w + 1], 7) ^ rotl(b.dst[w + 2], 13) ^ rotl(b.dst[w + 3], 19);
  }
  out[o] = src;
  out[o + 1] = dst;
  out[o + 2] = (b.sport[i] << 16) | b.dport[i];
  out[o + 3] = b.ipId[i] ^ (b.proto[i] << 24);
  let head = 0;
  const l4 = b.l4Off[i];
  if (l4 !== 0xffff) {
    const tcp = b.proto[i] === 6;
    const from = b.start[i] + l4 + (tcp ? 4 : 8);
    const end = Math.min(from + (tcp ? 8 : 16), b.start[i] + b.len[i]);
    for (let at = from; at + 4 <= end; at += 4) head = rotl(head, 9) ^ b.view.getInt32(at);
  }
  out[o + 4] = head;
}

export class SfLatency {
  /** One frame in `every` is a sampling point (0: off). */
  readonly every: number;
  /** Histograms by instance index (HIST_STRIDE words each). */
  hist = new Float64Array(0);
  /** Samples out. */
  out = 0;
  private skip: number;
  private instances = 0;
  /** Per instance: when its sample left (ms; 0 = none out), where it must come back, its key. */
  private sentAt = new Float64Array(0);
  private expectIf = new Int32Array(0);
  private keys = new Int32Array(0);
  /** Per interface: samples expected back on it. */
  private ifOut = new Int32Array(0);
  /** Instances with a sample out (the first `out` entries). */
  private readonly outList = new Int32Array(MAX_OUT);
  private readonly probe = new Int32Array(KEY);
  /** Slot ranges of the batch being filled that came from interfaces with a sample out (received()). */
  private readonly ranges = new Int32Array(2 * MAX_RANGES);
  /** Ranges noted (afterParse runs when this is not 0). */
  nRanges = 0;
  private readonly clock: () => number;

  constructor(every = DEFAULT_SAMPLE_EVERY, clock: () => number = () => performance.now()) {
    this.every = every;
    this.skip = every;
    this.clock = clock;
  }

  /** A new table generation: room for its instances and interfaces, no sample out; instance k's histogram restarts when `fresh(k)`. */
  apply(t: Tables, fresh: (k: number) => boolean): void {
    const n = t.instanceCount;
    if (n > this.instances) {
      const hist = new Float64Array(n * HIST_STRIDE);
      hist.set(this.hist);
      this.hist = hist;
      this.sentAt = new Float64Array(n);
      this.expectIf = new Int32Array(n);
      this.keys = new Int32Array(n * KEY);
      this.instances = n;
    }
    for (let k = 0; k < n; k++) if (fresh(k)) this.hist.fill(0, k * HIST_STRIDE, (k + 1) * HIST_STRIDE);
    this.sentAt.fill(0);
    if (this.ifOut.length < t.interfaces.length) this.ifOut = new Int32Array(t.interfaces.length);
    this.ifOut.fill(0);
    this.out = 0;
    this.nRanges = 0;
  }

  /** After select: the batch's frames count down to the next sampling point(s). */
  afterSelect(t: Tables, b: Batch, s: SteerState): void {
    if (this.every === 0) return;
    let at = this.skip;
    if (at > b.count) {
      this.skip = at - b.count;
      return;
    }
    let now = 0;
    for (; at <= b.count; at += this.every) {
      const i = at - 1;
      const k = s.slotInst[i];
      if (s.verdict[i] !== V_HOP || k < 0 || b.drop[i] !== 0 || t.portIsTap[t.instPortIn[k]] === 1) continue;
      if (now === 0) now = this.clock();
      this.take(t, b, i, k, now);
    }
    this.skip = at - b.count;
  }

  private take(t: Tables, b: Batch, i: number, k: number, now: number): void {
    if (this.sentAt[k] !== 0) {
      if (now - this.sentAt[k] < SAMPLE_TIMEOUT_MS) return;
      this.hist[k * HIST_STRIDE + HIST_LOST]++;
      this.settle(k);
    }
    if (this.out === MAX_OUT) return;
    const f = t.pathReverse[b.path[i]] === 1 ? t.instIfIn[k] : t.instIfOut[k];
    if (f < 0 || f >= this.ifOut.length) return;
    keyOf(b, i, this.keys, k * KEY);
    this.sentAt[k] = now;
    this.expectIf[k] = f;
    this.ifOut[f]++;
    this.outList[this.out++] = k;
  }

  /** Instance k's sample is no longer out. */
  private settle(k: number): void {
    this.sentAt[k] = 0;
    this.ifOut[this.expectIf[k]]--;
    const list = this.outList;
    for (let j = 0; j < this.out; j++) {
      if (list[j] === k) {
        list[j] = list[--this.out];
        return;
      }
    }
  }

  /**
   * Frames [from, to) of the batch being filled came from interface f: remembered for afterParse
   * when a sample is expected back there (the engine calls this per interface and breath while
   * samples are out, so frames from other interfaces cost nothing).
   */
  received(f: number, from: number, to: number): void {
    if (this.ifOut[f] === 0 || this.nRanges === MAX_RANGES) return;
    this.ranges[2 * this.nRanges] = from;
    this.ranges[2 * this.nRanges + 1] = to;
    this.nRanges++;
  }

  /** After parse: the frames received() noted, those that bring a sample back. */
  afterParse(b: Batch): void {
    let now = 0;
    for (let r = 0; r < this.nRanges; r++) {
      for (let i = this.ranges[2 * r]; i < this.ranges[2 * r + 1]; i++) {
        if (b.ipVer[i] === 0) continue;
        const k = this.match(b, i);
        if (k < 0) continue;
        if (now === 0) now = this.clock();
        const us = (now - this.sentAt[k]) * 1000;
        const h = k * HIST_STRIDE;
        this.hist[h + bucketOf(us)]++;
        this.hist[h + HIST_SUM] += us;
        this.settle(k);
      }
    }
    this.nRanges = 0;
  }

  /** The instance whose sample (expected on slot i's interface) is slot i, or -1: ports compared first, the whole key only when they agree. */
  private match(b: Batch, i: number): number {
    const f = b.port[i];
    const ports = (b.sport[i] << 16) | b.dport[i];
    const keys = this.keys;
    let probed = false;
    for (let j = 0; j < this.out; j++) {
      const k = this.outList[j];
      const o = k * KEY;
      if (this.expectIf[k] !== f || keys[o + 2] !== ports) continue;
      if (!probed) keyOf(b, i, this.probe, 0);
      probed = true;
      const p = this.probe;
      if (keys[o + 4] === p[4] && keys[o + 3] === p[3] && keys[o] === p[0] && keys[o + 1] === p[1]) return k;
    }
    return -1;
  }
}
