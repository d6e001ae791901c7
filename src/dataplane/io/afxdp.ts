/*
 * afxdp: AF_XDP ports (native/afxdp.h, native/xdpprog.h) as PortIO, and the 'afxdp' backend.
 *
 * Per interface and worker one XDP socket, bound to receive queue = worker index; the interface's
 * XDP program (attached by the first socket, detached with the last, never replacing someone
 * else's) redirects each queue's frames to its socket and passes a queue without one to the
 * kernel. The main thread opens every worker's socket of an interface (openFds); each worker adopts
 * its own. On a veth (one queue unless configured otherwise) only worker 0 receives; every worker
 * can transmit on its socket.
 *
 * Frames in place (`sfc serve --frames-in-place`): all of a worker's sockets share one UMEM, the
 * worker's arena (native/xskarena.h), and the worker's batch arena is that memory (`arenas`), so a
 * frame is parsed, rewritten and sent from the chunk the kernel received it in, whichever
 * interface it leaves by. Not the default: on veth the kernel copies every frame in and out of the
 * UMEM anyway (copy mode), and bench/e2e measured no gain from sparing our own copies
 * (sfc-afxdp-inplace, see the README). By default each socket has a private UMEM and frames are
 * copied into the batch and out again, as is every port opened in-process (open).
 *
 * Fallback: where AF_XDP cannot attach (a kernel without it, no permission, another XDP program on
 * the interface, fewer receive queues than workers), that interface gets AF_PACKET sockets
 * instead, and the first such fallback says why in the attach log line. adopt tells the two apart
 * by asking the addon whether the fd is one of its parked XDP sockets.
 *
 * GSO super-frames (default on a veth; SFC_AFXDP_GSO=0 turns it off, and frames in place never
 * have it): the program is attached in generic mode, so a peer's 64 KiB TCP and UDP GSO frames
 * cross whole; it passes them to the kernel, and worker 0's port reads them from an AF_PACKET
 * socket with their offload metadata and cuts them as the afpacket backend does (afxdp.h).
 * bench/e2e measured generic mode level with native for 64-byte frames and TCP through the chain
 * up from about 0.55-0.9x to level with AF_PACKET (sfc-afxdp against sfc-afxdp-nogso, README).
 *
 * veth specifics, and what changes while attached: XDP on a veth needs nothing from its peer to
 * receive (the peer's XDP or GRO settings matter only for XDP_TX/redirect out of a veth, which we
 * do not use: copy-mode transmit is an ordinary skb). While a native-mode program is attached the
 * kernel itself turns the peer's TSO/USO (NETIF_F_GSO_SOFTWARE) off, so the peer's stack segments
 * TCP before it crosses the link; detaching restores it. A generic-mode program leaves it on. We
 * change nothing else on any interface, and nothing is pinned in a bpffs (none is needed without
 * libxdp). Partial checksums from the peer's checksum offload are completed in the addon.
 *
 * need_wakeup: off by default (bench/e2e measured it on and off: see the README); the environment
 * variable SFC_AFXDP_NEED_WAKEUP=1 turns it on.
 */
import { BATCH, MAX_FRAME, SLOT } from '../../packet/batch.js';
import { afpacketBackend, adoptAfPacket } from './afpacket.js';
import type { Backend, InterfaceFds } from './backend.js';
import { ioCounters, loadNative, nativeLinkUp, NativePort, type Handle, type RingOptions, type SfcIo } from './native.js';

export interface XskOpenOptions {
  /** Receive queue to bind (one socket per queue and process). */
  queue?: number;
  /** UMEM chunks of 2 KiB (a power of two); half wait on the fill ring, half transmit. */
  frames?: number;
  needWakeup?: boolean;
  /** Register this arena (a worker's, xskArena) as the UMEM instead of a private one. */
  arena?: number;
  /** Receive GSO super-frames whole (generic-mode XDP program, an AF_PACKET socket beside; private UMEMs only). */
  gso?: boolean;
}

export interface XskOpened {
  fd: number;
  zeroCopy: boolean;
  /** Bound to the UMEM another socket of its arena registered (XDP_SHARED_UMEM). */
  sharesUmem: boolean;
  /** Driver-mode XDP (else generic). */
  nativeXdp: boolean;
  /** GSO super-frames arrive whole (XskOpenOptions.gso took: a veth, and the AF_PACKET socket opened). */
  gso: boolean;
  progId: number;
}

/** The addon's AF_XDP calls (built into the same addon as AF_PACKET and TAP). */
interface XskIo extends SfcIo {
  xskOpen(ifname: string, opts: XskOpenOptions): XskOpened;
  xskAttach(fd: number, ifname: string, opts: { maxFrame: number; maxBurst: number }, counters?: Float64Array): Handle | null;
  xskDiscard(fd: number): boolean;
  xskArena(slots: number, slotBytes: number, poolChunks: number): number;
  xskArenaView(id: number): ArrayBuffer;
  xskArenaRelease(id: number): boolean;
  ifQueues(ifname: string): number;
}

function xskIo(): XskIo {
  const io = loadNative() as XskIo;
  if (typeof io.xskOpen !== 'function') {
    throw new Error('sfc: the native addon was built without AF_XDP support: run `npm run build:native` (needs Linux uapi headers >= 5.9)');
  }
  return io;
}

/** need_wakeup from the environment (off unless SFC_AFXDP_NEED_WAKEUP=1). */
export function needWakeupDefault(): boolean {
  return process.env.SFC_AFXDP_NEED_WAKEUP === '1';
}

/** GSO super-frames received whole, from the environment (on unless SFC_AFXDP_GSO=0). */
export function gsoDefault(): boolean {
  return process.env.SFC_AFXDP_GSO !== '0';
}

/** Open (and park) an XDP socket on `ifname` for a later adoptXsk, in this thread's namespace. */
export function openXsk(ifname: string, opts: XskOpenOptions = {}): XskOpened {
  return xskIo().xskOpen(ifname, { needWakeup: needWakeupDefault(), gso: gsoDefault(), ...opts });
}

/** Attach the parked XDP socket `fd`; null when `fd` is not one (e.g. an AF_PACKET fallback socket). */
export function adoptXsk(fd: number, ifname: string, counters?: Float64Array): NativePort | null {
  const io = xskIo();
  const c = counters ?? ioCounters(io);
  const h = io.xskAttach(fd, ifname, { maxFrame: MAX_FRAME, maxBurst: BATCH }, c);
  return h === null ? null : new NativePort(io, ifname, h, c);
}

/** Free a parked XDP socket nobody adopted; false when `fd` is not one. */
export function discardXsk(fd: number): boolean {
  return xskIo().xskDiscard(fd);
}

/**
 * One XDP socket per worker (queue = worker index), or an Error saying why not. Every receive
 * queue needs a socket (the program passes a queue without one to the kernel: its frames would
 * never reach the dataplane), so the interface must have exactly one queue per worker.
 */
function openSockets(ifname: string, workers: number, arenas: readonly (number | null)[]): XskOpened[] {
  const queues = xskIo().ifQueues(ifname);
  if (queues !== workers) {
    throw new Error(`afxdp ${ifname}: ${queues} receive queue(s) for ${workers} worker(s); AF_XDP binds one socket per queue and worker (ethtool -L ${ifname} rx ${workers} tx ${workers})`);
  }
  const opened: XskOpened[] = [];
  try {
    for (let q = 0; q < workers; q++) opened.push(openXsk(ifname, { queue: q, arena: arenas[q] ?? undefined }));
    return opened;
  } catch (e) {
    for (const o of opened) discardXsk(o.fd);
    throw e;
  }
}

function describe(o: XskOpened, sockets: number, inPlace: boolean): string {
  const mode = `${o.zeroCopy ? 'zero-copy' : 'copy mode'}, ${o.nativeXdp ? 'native' : 'generic'} XDP program id ${o.progId}`;
  const frames = inPlace ? "frames kept in the worker's UMEM from receive to transmit" : 'frames copied to and from the batch';
  const gso = o.gso
    ? 'GSO super-frames (TCP, UDP) received whole through an AF_PACKET socket beside and cut in userspace (the peer keeps TSO/USO)'
    : o.nativeXdp ? 'while attached to a veth the kernel turns TSO/USO off on its peer (the peer segments in software)' : 'no GSO super-frames';
  return `AF_XDP ${mode}, ${sockets} socket(s), need_wakeup ${needWakeupDefault() ? 'on' : 'off'}, ${frames}; ${gso}; partial checksums completed in userspace`;
}

/**
 * Free chunks of a worker's arena beyond its batch slots (64 MiB): each socket keeps 2,048 on its
 * fill ring, the rest are frames in flight on TX and completion rings and in batch slots. A worker
 * with more than 15 interfaces fills their rings only as far as the pool goes.
 */
const ARENA_POOL_CHUNKS = 32768;

/** A new arena for one worker's sockets and batch (xskarena.h); `arenas.view` and `release` take its id. */
export function createArena(): number {
  return xskIo().xskArena(BATCH, SLOT, ARENA_POOL_CHUNKS);
}

let fallbackReported = false;

/** Whether an open error means AF_XDP cannot work here (fall back) rather than a missing interface (retry). */
function cannotAttach(e: unknown): boolean {
  return (e as { code?: string }).code !== 'ENODEV';
}

function fallbackFds(ifname: string, workers: number, ring: RingOptions, why: string): InterfaceFds {
  const afpacket = afpacketBackend.threads;
  if (afpacket === null) throw new Error(`afxdp ${ifname}: ${why}`);
  const fds = afpacket.openFds(ifname, workers, ring);
  const note = fallbackReported ? 'AF_XDP unavailable' : `AF_XDP cannot attach: ${why}`;
  fallbackReported = true;
  return { ...fds, description: `${fds.description} (fallback; ${note})` };
}

export const afxdpBackend: Backend<'afxdp'> = {
  name: 'afxdp',
  note: 'AF_XDP, falls back to afpacket',
  load: () => xskIo().counterNames,
  open(ifname, opts = {}) {
    let o: XskOpened;
    try {
      o = openXsk(ifname);
    } catch (e) {
      if (!cannotAttach(e)) throw e;
      return afpacketBackend.open(ifname, opts);
    }
    return adoptXsk(o.fd, ifname, opts.counters)!;
  },
  threads: {
    openFds(ifname, workers, ring, arenas = []) {
      let opened: XskOpened[];
      try {
        opened = openSockets(ifname, workers, arenas);
      } catch (e) {
        if (!cannotAttach(e)) throw e;
        return fallbackFds(ifname, workers, ring, (e as Error).message);
      }
      return {
        workers: opened.map((o) => ({ fd: o.fd, rx: true })),
        description: describe(opened[0], opened.length, arenas.length === workers && arenas.every((a) => a !== null)),
        close: () => {}, // each worker owns its socket
      };
    },
    adopt: (fd, ifname, { ring, counters }) => adoptXsk(fd, ifname, counters) ?? adoptAfPacket(fd, ifname, { ...ring, counters }),
    discard: (fd) => {
      if (!discardXsk(fd)) loadNative().closeFd(fd);
    },
    linkUp: nativeLinkUp,
    arenas: {
      create: createArena,
      view: (id) => new Uint8Array(xskIo().xskArenaView(id)),
      release: (id) => void xskIo().xskArenaRelease(id),
    },
  },
  lab: { link: 'veth', offloadsOff: false },
};
