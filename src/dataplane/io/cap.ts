/*
 * cap: the libpcap backend, through the `cap` package (optional dependency).
 *
 * cap delivers one 'packet' event per frame, copied into the one Buffer given to open(). Each
 * event copies the frame into a preallocated staging ring here (no allocation), and rxBurst
 * drains the ring into batch slots, so the engine still sees bursts (frames staged during one
 * event-loop turn are processed together). Transmit copies each frame into a staging Buffer and
 * calls cap.send() (pcap_sendpacket) once per frame.
 *
 * Settings: immediate mode (cap sets it), an `inbound` capture filter so our own transmissions
 * (and anything else leaving the interface) are not captured, and a large capture buffer: cap
 * fixes the snap length at 65535, so libpcap's ring holds only bufSize / ~64 KiB frames (a 4 MiB
 * buffer drops the 65th frame of a burst); 32 MiB holds ~500.
 *
 * Limits of the binding, not ours: it polls on the main event loop (so this backend runs on the
 * main thread, never in a worker), and it asserts on poll errors, so an attached interface going
 * down or being deleted aborts the process (cap 0.2.1, src/binding.cc cb_packets).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { MAX_FRAME, type Batch } from '../batch.js';
import { LINK_GONE, LINK_UP, loadNative, nativeAvailable } from './native.js';
import type { PortIO } from './portio.js';

interface CapHandle {
  open(device: string, filter: string, bufSize: number, buffer: Buffer): string;
  close(): void;
  send(buffer: Buffer, nBytes?: number): void;
  on(event: 'packet', listener: (nbytes: number, truncated: boolean) => void): void;
}
interface CapModule {
  Cap: new () => CapHandle;
}

export interface CapOptions {
  /** libpcap buffer (ring) size in bytes. */
  bufSize?: number;
  /** Staging ring slots (a power of two). */
  stagingSlots?: number;
}

const DEFAULT_BUF = 32 << 20;
const DEFAULT_STAGING = 2048;
const LINK_TTL_MS = 200;
const INSTALL_HINT = 'install libpcap (Debian: apt-get install libpcap-dev) and run `npm rebuild cap`';

let capModule: CapModule | Error | null = null;

/** The cap module, loading it on first use; throws an Error saying what to install. */
export function loadCap(): CapModule {
  if (capModule === null) {
    try {
      capModule = createRequire(import.meta.url)('cap') as CapModule;
    } catch (e) {
      const why = e instanceof Error ? e.message.split('\n')[0] : String(e);
      capModule = new Error(`sfc: the cap backend needs the 'cap' package and libpcap (${why}): ${INSTALL_HINT}`);
    }
  }
  if (capModule instanceof Error) throw capModule;
  return capModule;
}

export class CapPort implements PortIO {
  readonly name: string;
  /** Frames lost before the engine saw them: staging ring full, larger than a slot. */
  rxOverflow = 0;
  rxTooBig = 0;
  txFailed = 0;
  onGone: (() => void) | null = null;
  private cap: CapHandle | null;
  private readonly capBuf = Buffer.alloc(65536);
  private readonly txBuf = Buffer.alloc(65536);
  private readonly ring: Buffer;
  private readonly ringLen: Uint16Array;
  private readonly ringTime: Float64Array;
  private readonly mask: number;
  private head = 0;
  private tail = 0;
  private readable: (() => void) | null = null;
  private armed = false;
  private arenaOf: Uint8Array | null = null;
  private arena: Buffer = Buffer.alloc(0);
  private up = true;
  private checkedAt = -Infinity;

  constructor(name: string, opts: CapOptions = {}) {
    const slots = opts.stagingSlots ?? DEFAULT_STAGING;
    if ((slots & (slots - 1)) !== 0) throw new Error(`cap: stagingSlots must be a power of two, got ${slots}`);
    this.name = name;
    this.mask = slots - 1;
    this.ring = Buffer.alloc(slots * MAX_FRAME);
    this.ringLen = new Uint16Array(slots);
    this.ringTime = new Float64Array(slots);
    const { Cap } = loadCap();
    const cap = new Cap();
    try {
      cap.open(name, 'inbound', opts.bufSize ?? DEFAULT_BUF, this.capBuf);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      const err = new Error(`cap ${name}: ${msg}`) as Error & { code?: string };
      if (/no such device|doesn't exist|not exist/i.test(msg)) err.code = 'ENODEV';
      throw err;
    }
    cap.on('packet', (nbytes, truncated) => this.stage(nbytes, truncated));
    this.cap = cap;
  }

  private stage(nbytes: number, truncated: boolean): void {
    if (truncated || nbytes > MAX_FRAME) {
      this.rxTooBig++;
      return;
    }
    if (this.tail - this.head > this.mask) {
      this.rxOverflow++;
      return;
    }
    const s = this.tail & this.mask;
    this.capBuf.copy(this.ring, s * MAX_FRAME, 0, nbytes);
    this.ringLen[s] = nbytes;
    this.ringTime[s] = Date.now() * 1e6;
    this.tail++;
    if (this.armed) {
      this.armed = false;
      this.readable!();
    }
  }

  rxBurst(b: Batch, portIndex: number, max: number): number {
    let k = 0;
    const from = b.count;
    while (k < max && this.head !== this.tail) {
      const s = this.head & this.mask;
      const i = from + k;
      const len = this.ringLen[s];
      this.ring.copy(b.data, b.start[i], s * MAX_FRAME, s * MAX_FRAME + len);
      b.len[i] = len;
      b.time[i] = this.ringTime[s];
      b.port[i] = portIndex;
      this.head++;
      k++;
    }
    b.count = from + k;
    return k;
  }

  txBurst(b: Batch, idx: Uint16Array, n: number): number {
    const cap = this.cap;
    if (cap === null) return 0;
    if (this.arenaOf !== b.data) {
      this.arenaOf = b.data;
      this.arena = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength);
    }
    let sent = 0;
    for (let j = 0; j < n; j++) {
      const i = idx[j];
      const start = b.start[i];
      const len = b.len[i];
      this.arena.copy(this.txBuf, 0, start, start + len);
      try {
        cap.send(this.txBuf, len);
        sent++;
      } catch {
        this.txFailed++; // pcap_sendpacket failed (frame too big, interface down)
      }
    }
    return sent;
  }

  onReadable(cb: () => void): void {
    this.readable = cb;
    if (this.head !== this.tail) cb();
    else this.armed = true;
  }

  isUp(): boolean {
    if (this.cap === null) return false;
    const now = performance.now();
    if (now - this.checkedAt >= LINK_TTL_MS) {
      this.checkedAt = now;
      const state = linkState(this.name);
      this.up = state === LINK_UP;
      if (state === LINK_GONE && this.onGone !== null) {
        const gone = this.onGone;
        this.onGone = null;
        gone();
      }
    }
    return this.up;
  }

  close(): void {
    const cap = this.cap;
    this.cap = null;
    this.armed = false;
    cap?.close();
  }
}

/** Interface state by name: the addon's ioctl when built, else sysfs (process namespace only). */
function linkState(ifname: string): number {
  if (nativeAvailable()) return loadNative().ifState(ifname);
  try {
    const state = readFileSync(`/sys/class/net/${ifname}/operstate`, 'utf8').trim();
    return state === 'up' || state === 'unknown' ? LINK_UP : 0;
  } catch {
    return LINK_GONE;
  }
}

export function openCap(ifname: string, opts: CapOptions = {}): CapPort {
  return new CapPort(ifname, opts);
}
