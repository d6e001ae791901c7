/*
 * native: the lazy loader of the packet I/O addon (src/dataplane/native/*.cc, built by node-gyp
 * into build/Release/sfc_io.node), and its typed surface.
 *
 * Nothing loads the addon until the AF_PACKET or TAP backend is used, so the control plane, replay
 * and the cap backend work on a machine where it was never built; the first use of a native
 * backend then fails with an Error that says how to build it (undici's optional-binding pattern).
 * The addon is a Node-API module: each worker thread loads its own instance and its handles are
 * bound to that thread's event loop.
 *
 * NativePort is the PortIO over an addon handle shared by the AF_PACKET and TAP backends (one
 * native call per burst, one-shot readiness, a cached link state that notices a deleted
 * interface); adoptFd makes one of an fd, closing an fd it was to own when attaching fails.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Batch } from '../../packet/batch.js';
import type { PortIO } from './portio.js';

/** An open port inside the addon (opaque). */
export type Handle = { readonly __sfcIoHandle: unique symbol };

export interface RingOptions {
  /** 2 (TPACKET_V2, default: per-frame wakeups, no idle timers) or 3 (TPACKET_V3 blocks). */
  version?: 2 | 3;
  blockSize?: number;
  blockCount?: number;
  /** TPACKET_V3 block retire timeout in ms. */
  retireMs?: number;
}

export interface SocketOptions extends RingOptions {
  /** Join this PACKET_FANOUT group (hash mode); omit for a lone socket. */
  fanoutGroup?: number;
  /** Reassemble IPv4 fragments before hashing (the socket then receives whole datagrams). */
  fanoutDefrag?: boolean;
  sndbuf?: number;
  rcvbuf?: number;
}

export interface AttachOptions extends RingOptions {
  /** Largest frame a batch slot holds (batch.ts MAX_FRAME). */
  maxFrame?: number;
  /** Slots of a whole batch (batch.ts BATCH): a GSO frame needing more is dropped as too big. */
  maxBurst?: number;
  /** Close the fd with the port (default true). */
  ownsFd?: boolean;
  /** TAP: poll and read this fd (default true); false for a write-only share of the fd. */
  rx?: boolean;
}

export interface SfcIo {
  /** Names of the per-port counters, in the order of the counters array given to attach. */
  readonly counterNames: readonly string[];
  afpSocket(ifname: string, opts: SocketOptions): number;
  afpAttach(fd: number, ifname: string, opts: AttachOptions, counters?: Float64Array): Handle;
  tapOpen(ifname: string): number;
  tapAttach(fd: number, ifname: string, opts: AttachOptions, counters?: Float64Array): Handle;
  rxBurst(h: Handle, arena: Uint8Array, starts: Int32Array, lens: Uint16Array, from: number, max: number, times?: Float64Array): number;
  txBurst(h: Handle, arena: Uint8Array, starts: Int32Array, lens: Uint16Array, idx: Uint16Array, n: number): number;
  /** The callback arm() fires once, with 0 or the errno of a poll error. */
  onReadable(h: Handle, cb: (err: number) => void): void;
  arm(h: Handle): boolean;
  /** LINK_UP, LINK_DOWN or LINK_GONE; also refreshes the MTU and kernel drop counts. */
  linkState(h: Handle): number;
  ifState(ifname: string): number;
  /** The interface's MTU, 0 when it does not exist. */
  ifMtu(ifname: string): number;
  closePort(h: Handle): void;
  closeFd(fd: number): void;
  /** Move the calling thread into a network namespace; returns an fd to come back with. */
  netnsEnter(path: string): number;
  netnsRestore(fd: number): void;
}

export const LINK_GONE = -1;
export const LINK_DOWN = 0;
export const LINK_UP = 1;

/**
 * Interface state from sysfs (this process's namespace), for when the addon is not built and for
 * the control path: LINK_GONE when it does not exist, LINK_UP when administratively up and
 * operationally up ("unknown" counts: loopback and TUN/TAP report it), else LINK_DOWN.
 */
export function sysfsLinkState(ifname: string): number {
  if (ifname === '' || ifname.includes('/') || ifname === '.' || ifname === '..') return LINK_GONE;
  try {
    const flags = Number.parseInt(readFileSync(`/sys/class/net/${ifname}/flags`, 'utf8'), 16);
    const oper = readFileSync(`/sys/class/net/${ifname}/operstate`, 'utf8').trim();
    return (flags & 1) === 1 && (oper === 'up' || oper === 'unknown') ? LINK_UP : LINK_DOWN;
  } catch {
    return LINK_GONE;
  }
}

/** Ethernet's default MTU: what an interface without a readable one is taken to have. */
export const DEFAULT_MTU = 1500;

/** The interface's MTU from sysfs (this process's namespace), DEFAULT_MTU when it cannot be read. */
export function sysfsMtu(ifname: string): number {
  if (ifname === '' || ifname.includes('/') || ifname === '.' || ifname === '..') return DEFAULT_MTU;
  try {
    const mtu = Number.parseInt(readFileSync(`/sys/class/net/${ifname}/mtu`, 'utf8'), 10);
    return Number.isFinite(mtu) && mtu > 0 ? mtu : DEFAULT_MTU;
  } catch {
    return DEFAULT_MTU;
  }
}

let loaded: SfcIo | Error | null = null;

/** The addon, loading it on first use; throws an Error explaining how to build it. */
export function loadNative(): SfcIo {
  loaded ??= tryLoad();
  if (loaded instanceof Error) throw loaded;
  return loaded;
}

/** Whether the addon can be loaded (no throw). */
export function nativeAvailable(): boolean {
  loaded ??= tryLoad();
  return !(loaded instanceof Error);
}

/** Whether the interface exists and is up, by the addon's ioctl (false when the addon is not built). */
export function nativeLinkUp(ifname: string): boolean {
  return nativeAvailable() && loadNative().ifState(ifname) === LINK_UP;
}

const BUILD_HINT =
  'run `npm rebuild` (or `npm run build:native`) in the sfc-dataplane directory; building needs a C++17 ' +
  'compiler, make and python3 (Debian: apt-get install build-essential python3). The cap backend ' +
  '(--backend cap) works without it.';

function tryLoad(): SfcIo | Error {
  if (process.platform !== 'linux') {
    return new Error(`sfc: the AF_PACKET/TAP backends need Linux (this is ${process.platform}); use --backend cap`);
  }
  // src/dataplane/io/native.ts runs from the repository, dist/src/dataplane/io/native.js from dist/.
  const candidates = ['../../../build/Release/sfc_io.node', '../../../../build/Release/sfc_io.node'].map((rel) =>
    fileURLToPath(new URL(rel, import.meta.url)),
  );
  const path = candidates.find((p) => existsSync(p));
  if (path === undefined) {
    return new Error(`sfc: the native packet I/O addon is not built (no ${candidates[0]}): ${BUILD_HINT}`);
  }
  try {
    return createRequire(import.meta.url)(path) as SfcIo;
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    return new Error(`sfc: the native packet I/O addon ${path} failed to load (${why}): ${BUILD_HINT}`);
  }
}

/** How long isUp() trusts its last look at the interface (the engine asks once per tx burst). */
const LINK_TTL_MS = 200;

/**
 * A PortIO over one addon handle (AF_PACKET socket or TAP fd): one native call per burst, the
 * addon's one-shot readiness, and a cached link state. When the interface is found gone (deleted
 * or renamed) `onGone` is told once; the owner decides whether to re-attach.
 */
export class NativePort implements PortIO {
  readonly name: string;
  /** Per-port I/O counters in `counterNames` order (may view a SharedArrayBuffer). */
  readonly counters: Float64Array;
  onGone: (() => void) | null = null;
  private readonly io: SfcIo;
  private handle: Handle | null;
  private readable: (() => void) | null = null;
  private callbackSet = false;
  private state = LINK_UP;
  private checkedAt = -Infinity;
  private readonly onNative = (err: number): void => {
    if (err !== 0) this.refresh(performance.now());
    const cb = this.readable;
    if (cb !== null) cb();
  };

  constructor(io: SfcIo, name: string, handle: Handle, counters: Float64Array) {
    this.io = io;
    this.name = name;
    this.handle = handle;
    this.counters = counters;
  }

  rxBurst(b: Batch, portIndex: number, max: number): number {
    const h = this.handle;
    if (h === null) return 0;
    const from = b.count;
    const n = this.io.rxBurst(h, b.data, b.start, b.len, from, max, b.time);
    if (n > 0) {
      b.port.fill(portIndex, from, from + n);
      b.count = from + n;
    }
    return n;
  }

  txBurst(b: Batch, idx: Uint16Array, n: number): number {
    const h = this.handle;
    return h === null ? 0 : this.io.txBurst(h, b.data, b.start, b.len, idx, n);
  }

  onReadable(cb: () => void): void {
    const h = this.handle;
    if (h === null) return;
    this.readable = cb;
    if (!this.callbackSet) {
      this.io.onReadable(h, this.onNative);
      this.callbackSet = true;
    }
    this.io.arm(h);
  }

  isUp(): boolean {
    if (this.handle === null) return false;
    const now = performance.now();
    if (now - this.checkedAt >= LINK_TTL_MS) this.refresh(now);
    return this.state === LINK_UP;
  }

  close(): void {
    const h = this.handle;
    this.handle = null;
    if (h !== null) this.io.closePort(h);
  }

  private refresh(now: number): void {
    const h = this.handle;
    if (h === null) return;
    this.checkedAt = now;
    this.state = this.io.linkState(h);
    if (this.state === LINK_GONE && this.onGone !== null) {
      const gone = this.onGone;
      this.onGone = null;
      gone();
    }
  }
}

/** What NativePort does with offloaded frames, for the backends' descriptions in logs. */
export const NATIVE_OFFLOADS = 'GSO and partial checksums repaired in userspace';

/**
 * A NativePort over the handle `attach()` makes of `fd`. When attaching throws, an fd the port was
 * to own (`ownsFd`) is closed before the error goes on.
 */
export function adoptFd(io: SfcIo, fd: number, ifname: string, ownsFd: boolean, counters: Float64Array, attach: () => Handle): NativePort {
  try {
    return new NativePort(io, ifname, attach(), counters);
  } catch (e) {
    if (ownsFd) io.closeFd(fd);
    throw e;
  }
}

/** A fresh per-port counter array for the addon (or a view the caller placed in shared memory). */
export function ioCounters(io: SfcIo): Float64Array {
  return new Float64Array(io.counterNames.length);
}

/**
 * Run the calling thread in the network namespace /run/netns/NAME (as `ip netns exec` would for
 * a process) until the returned function restores the previous one. Sockets opened meanwhile, and
 * worker threads started meanwhile, live in that namespace. Used by tests and by tools that attach
 * to a lab's namespace without re-executing themselves.
 */
export function enterNetns(name: string): () => void {
  const io = loadNative();
  const back = io.netnsEnter(name.includes('/') ? name : `/run/netns/${name}`);
  let left = false;
  return () => {
    if (left) return;
    left = true;
    io.netnsRestore(back);
  };
}
