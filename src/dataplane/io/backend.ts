/*
 * Backend: one packet I/O backend as one object (ARCHITECTURE.md §6). registry.ts lists them; the
 * runtime, the workers, the CLI and the lab ask the object instead of testing backend names, so a
 * new backend is its own file plus one line in the registry.
 *
 * A backend loads what it needs only when it is used (load(), or the first open) and then fails
 * with an Error naming what to install. It opens a port in-process (open). If it can run in worker
 * threads (`threads`), the main thread opens each interface's fd(s) for all workers at once
 * (openFds: the backend decides how many fds and which workers read), each worker adopts the fd
 * it is sent, and an fd sent but never adopted is released by discard. A backend without `threads`
 * runs one data path on the main thread. `lab` says what a namespace lab must build around it.
 */
import type { RingOptions } from './native.js';
import type { LosablePort } from './portio.js';

export interface OpenOptions {
  /** afpacket: PACKET_FANOUT group to join (hash mode). */
  fanoutGroup?: number;
  fanoutDefrag?: boolean;
  /** afpacket: ring layout. */
  ring?: RingOptions;
  /** afpacket/tap: per-port I/O counters (the addon's counterNames order). */
  counters?: Float64Array;
  /** cap: libpcap buffer size in bytes. */
  bufSize?: number;
}

/** One interface's fd(s), opened on the main thread for every worker. */
export interface InterfaceFds {
  /** Worker i's fd (several workers may share one) and whether it reads it (else it only transmits). */
  readonly workers: readonly { readonly fd: number; readonly rx: boolean }[];
  /** For logs, e.g. "AF_PACKET TPACKET_V3, 2 socket(s); ..." or "TAP; ...". */
  readonly description: string;
  /** Close what the main thread keeps (a shared fd); fds a worker owns are closed by that worker. */
  close(): void;
}

export interface AdoptOptions {
  /** Read (and poll) the fd; false: transmit only. */
  rx: boolean;
  ring?: RingOptions;
  counters?: Float64Array;
}

/** How a backend runs in worker threads. */
export interface ThreadedIO {
  /**
   * Main thread: open `ifname` for `workers` workers (worker i's sockets share arena `arenas[i]`
   * when the backend has arenas); throws when it cannot (e.g. the interface is missing).
   */
  openFds(ifname: string, workers: number, ring: RingOptions, arenas?: readonly (number | null)[]): InterfaceFds;
  /** Worker thread: attach an fd from openFds; on failure the fd is discarded and the error thrown. */
  adopt(fd: number, ifname: string, opts: AdoptOptions): LosablePort;
  /** Worker thread: release an fd it was sent but will not adopt. */
  discard(fd: number): void;
  /** Main thread: whether the interface exists and is up. */
  linkUp(ifname: string): boolean;
  /**
   * Memory a worker's sockets and its batch can share, so that frames stay where they were
   * received (AF_XDP's UMEM; Dataplane's framesInPlace); absent where the backend copies every frame.
   */
  readonly arenas?: {
    /** Main thread: a new arena for one worker (its id goes to openFds and to the worker). */
    create(): number;
    /** Worker thread: the arena as the batch's memory (once per arena). */
    view(id: number): Uint8Array;
    /** Main thread: the worker is gone (its sockets and view keep the memory until they close). */
    release(id: number): void;
  };
}

export interface Backend<N extends string = string> {
  /** The --backend name. */
  readonly name: N;
  /** A word for --help beside the name, e.g. "libpcap". */
  readonly note?: string;
  /**
   * Load what the backend needs (native addon, libpcap), throwing an Error that names what to
   * install; returns the names of its per-port I/O counters (empty when it has none).
   */
  load(): readonly string[];
  /** Open a live port on `ifname` in this thread; throws when it cannot (`code` ENODEV: no such interface). */
  open(ifname: string, opts?: OpenOptions): LosablePort;
  /** Worker-thread operation, or null: the backend runs one data path on the main thread. */
  readonly threads: ThreadedIO | null;
  /** What a namespace lab (src/lab) builds around this backend. */
  readonly lab: {
    /** The dataplane's interfaces: veth ends, or TAP devices (opened by the backend) bridged to veths. */
    readonly link: 'veth' | 'tap';
    /** Endpoints and SFs must segment and checksum themselves (ethtool offloads off). */
    readonly offloadsOff: boolean;
  };
}
