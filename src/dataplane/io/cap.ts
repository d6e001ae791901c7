/*
 * cap: the libpcap backend ('cap'), through the `cap` package (optional dependency).
 *
 * cap delivers one 'packet' event per frame, copied into the one Buffer given to open(). Each
 * event copies the frame into a preallocated staging ring here (no allocation), and rxBurst
 * drains the ring into batch slots, so the engine still sees bursts (frames staged during one
 * event-loop turn are processed together). Transmit copies each frame into a staging Buffer and
 * calls cap.send() (pcap_sendpacket) once per frame.
 *
 * Offloads: libpcap hands frames over as the kernel has them, without the metadata AF_PACKET's
 * virtio header gives. Endpoints that use TSO and checksum offload (veth defaults) send TCP
 * "super-frames" up to 64 KiB and frames whose L4 checksum is only the pseudo-header sum. While
 * staging, a TCP frame larger than the interface MTU is therefore cut into MSS-sized segments
 * (lengths, IPv4 id, sequence numbers, flags and checksums rewritten), and every other TCP/UDP
 * frame gets its checksum recomputed: a partial checksum cannot be told from a complete one, and
 * recomputing a correct checksum changes nothing. Oversize non-TCP frames are dropped (rxTooBig).
 *
 * Settings: immediate mode (cap sets it), an `inbound` capture filter so our own transmissions
 * (and anything else leaving the interface) are not captured, and a large capture buffer: cap
 * fixes the snap length at 65535, so libpcap's ring holds only bufSize / ~64 KiB frames (a 4 MiB
 * buffer drops the 65th frame of a burst); 32 MiB holds ~500.
 *
 * Limits of the binding and of libpcap, not ours: cap polls on the main event loop (so the backend
 * has no `threads`: it runs one data path on the main thread, never in a worker), and it asserts
 * on poll errors, so an attached interface going down or being deleted aborts the process (cap
 * 0.2.1, src/binding.cc cb_packets). libpcap runs a new filter over frames already in its ring in userland, where
 * `inbound` (a kernel-only BPF extension) never matches: the first frame a fresh handle receives
 * is lost (libpcap 1.10.3).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { MAX_FRAME, type Batch } from '../../packet/batch.js';
import { fixL4Checksum, ipv4HeaderChecksum } from '../../packet/checksum.js';
import { LINK_GONE, LINK_UP, loadNative, nativeAvailable, sysfsLinkState } from './native.js';
import type { Backend } from './backend.js';
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
const DEFAULT_STAGING = 4096;
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
  private mtu: number;

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
    this.mtu = linkMtu(name);
  }

  private stage(nbytes: number, truncated: boolean): void {
    if (truncated) {
      this.rxTooBig++;
      return;
    }
    const l3 = l3Offset(this.capBuf, nbytes);
    if (nbytes > MAX_FRAME || nbytes > (l3 > 0 ? l3 : 14) + this.mtu) {
      if (!this.stageSegments(nbytes, l3)) this.rxTooBig++;
    } else if (this.tail - this.head > this.mask) {
      this.rxOverflow++;
    } else {
      const s = this.tail & this.mask;
      this.capBuf.copy(this.ring, s * MAX_FRAME, 0, nbytes);
      this.ringLen[s] = nbytes;
      this.ringTime[s] = Date.now() * 1e6;
      if (l3 > 0) recomputeL4(this.ring, s * MAX_FRAME, l3, nbytes);
      this.tail++;
    }
    if (this.armed && this.head !== this.tail) {
      this.armed = false;
      this.readable!();
    }
  }

  /** Cut a TCP super-frame in capBuf into MSS-sized segments; false when it is not one we can cut. */
  private stageSegments(nbytes: number, l3: number): boolean {
    const f = this.capBuf;
    const v4 = l3 > 0 && f[l3 - 2] === 0x08 && f[l3 - 1] === 0x00;
    const v6 = l3 > 0 && f[l3 - 2] === 0x86 && f[l3 - 1] === 0xdd;
    if (!v4 && !v6) return false;
    const ipHdr = v4 ? (f[l3] & 0xf) * 4 : 40;
    const proto = v4 ? f[l3 + 9] : f[l3 + 6];
    if (proto !== TCP || (v4 && (f.readUInt16BE(l3 + 6) & 0x3fff) !== 0)) return false;
    const l4 = l3 + ipHdr;
    const hdr = l4 + (f[l4 + 12] >> 4) * 4;
    const mss = this.mtu - (hdr - l3);
    if (hdr + 20 > nbytes || mss <= 0 || hdr + mss > MAX_FRAME) return false;
    const n = Math.ceil((nbytes - hdr) / mss);
    if (this.tail - this.head + n > this.mask + 1) {
      this.rxOverflow++;
      return true;
    }
    const seq0 = f.readUInt32BE(l4 + 4);
    const id0 = v4 ? f.readUInt16BE(l3 + 4) : 0;
    const flags0 = f[l4 + 13];
    const now = Date.now() * 1e6;
    const r = this.ring;
    for (let k = 0; k < n; k++) {
      const s = this.tail & this.mask;
      const base = s * MAX_FRAME;
      const from = hdr + k * mss;
      const chunk = Math.min(mss, nbytes - from);
      const len = hdr + chunk;
      f.copy(r, base, 0, hdr);
      f.copy(r, base + hdr, from, from + chunk);
      if (v4) {
        r.writeUInt16BE(len - l3, base + l3 + 2);
        r.writeUInt16BE((id0 + k) & 0xffff, base + l3 + 4);
        r.writeUInt16BE(ipv4HeaderChecksum(r, base + l3, ipHdr), base + l3 + 10);
      } else {
        r.writeUInt16BE(len - l3 - 40, base + l3 + 4);
      }
      r.writeUInt32BE((seq0 + k * mss) >>> 0, base + l4 + 4);
      let flags = flags0;
      if (k + 1 < n) flags &= ~(TCP_FIN | TCP_PSH);
      if (k > 0) flags &= ~TCP_CWR;
      r[base + l4 + 13] = flags;
      fixL4Checksum(r, base + l3, base + l4, len - l4, v4 ? 4 : 6, TCP);
      this.ringLen[s] = len;
      this.ringTime[s] = now;
      this.tail++;
    }
    return true;
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

const TCP = 6;
const UDP = 17;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

/** Offset of the L3 header of an IPv4/IPv6 frame (after up to two VLAN tags), 0 for anything else. */
function l3Offset(f: Uint8Array, len: number): number {
  let off = 12;
  for (let tags = 0; tags < 2 && off + 2 <= len; tags++) {
    const et = (f[off] << 8) | f[off + 1];
    if (et !== 0x8100 && et !== 0x88a8) break;
    off += 4;
  }
  if (off + 2 > len) return 0;
  const et = (f[off] << 8) | f[off + 1];
  return et === 0x0800 || et === 0x86dd ? off + 2 : 0;
}

/** Recompute the TCP/UDP checksum of an unfragmented IPv4 or IPv6 (no extension header) frame. */
function recomputeL4(r: Uint8Array, base: number, l3: number, len: number): void {
  const v4 = r[base + l3 - 1] === 0x00;
  const ipHdr = v4 ? (r[base + l3] & 0xf) * 4 : 40;
  if (l3 + ipHdr + 8 > len) return;
  const proto = v4 ? r[base + l3 + 9] : r[base + l3 + 6];
  if (proto !== TCP && proto !== UDP) return;
  if (v4 && (((r[base + l3 + 6] << 8) | r[base + l3 + 7]) & 0x3fff) !== 0) return; // a fragment
  const l4 = l3 + ipHdr;
  const ipLen = v4 ? (r[base + l3 + 2] << 8) | r[base + l3 + 3] : 40 + ((r[base + l3 + 4] << 8) | r[base + l3 + 5]);
  const l4Len = Math.min(len, l3 + ipLen) - l4;
  if (proto === UDP && v4 && r[base + l4 + 6] === 0 && r[base + l4 + 7] === 0) return; // "no checksum"
  fixL4Checksum(r, base + l3, base + l4, l4Len, v4 ? 4 : 6, proto);
}

/** The interface MTU: the addon's ioctl when built, else sysfs, else 1500. */
function linkMtu(ifname: string): number {
  if (nativeAvailable()) return loadNative().ifMtu(ifname) || 1500;
  try {
    return Number(readFileSync(`/sys/class/net/${ifname}/mtu`, 'utf8')) || 1500;
  } catch {
    return 1500;
  }
}

/** Interface state by name: the addon's ioctl when built, else sysfs (process namespace only). */
function linkState(ifname: string): number {
  return nativeAvailable() ? loadNative().ifState(ifname) : sysfsLinkState(ifname);
}

export function openCap(ifname: string, opts: CapOptions = {}): CapPort {
  return new CapPort(ifname, opts);
}

export const capBackend: Backend<'cap'> = {
  name: 'cap',
  note: 'libpcap',
  load: () => (loadCap(), []),
  open: (ifname, opts = {}) => openCap(ifname, { bufSize: opts.bufSize }),
  threads: null,
  // Without a virtio-net header the lab's endpoints segment and checksum themselves (harness.ts).
  lab: { link: 'veth', offloadsOff: true },
};
