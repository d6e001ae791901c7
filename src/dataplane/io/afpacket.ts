/*
 * afpacket: AF_PACKET ports (native/afpacket.h) as PortIO, and the 'afpacket' backend.
 *
 * openAfPacket opens and attaches in one step (one socket, or one member of a fanout group).
 * In worker threads the two are split: the main thread opens every worker's socket of an interface
 * (openFds), one per worker in one fresh PACKET_FANOUT group (hash mode), in worker order, because
 * the kernel's fanout hash is symmetric and indexes group members in join order (an order that
 * survives link flaps): both directions of a flow, arriving on different interfaces, land on the
 * same worker and its flow state. Each worker then adopts its fd (adoptAfPacket), mapping the ring
 * and polling it on its own event loop; the worker owns the socket from then on.
 */
import { BATCH, MAX_FRAME } from '../../packet/batch.js';
import type { Backend } from './backend.js';
import {
  adoptFd,
  ioCounters,
  loadNative,
  NATIVE_OFFLOADS,
  nativeLinkUp,
  type NativePort,
  type RingOptions,
  type SocketOptions,
} from './native.js';

export interface AfPacketOptions extends RingOptions {
  fanoutGroup?: number;
  fanoutDefrag?: boolean;
  /** Per-port counters (counterNames order), e.g. a view into shared memory. */
  counters?: Float64Array;
}

/** Open a configured, bound socket on `ifname` (joined to the fanout group if given); returns its fd. */
export function openAfPacketSocket(ifname: string, opts: SocketOptions = {}): number {
  return loadNative().afpSocket(ifname, opts);
}

/** Attach a socket from openAfPacketSocket (possibly opened by another thread); the port owns the fd (closed if attaching fails). */
export function adoptAfPacket(fd: number, ifname: string, opts: AfPacketOptions = {}): NativePort {
  const io = loadNative();
  const counters = opts.counters ?? ioCounters(io);
  const ring = { version: opts.version, blockSize: opts.blockSize, blockCount: opts.blockCount };
  const attach = { ...ring, maxFrame: MAX_FRAME, maxBurst: BATCH, ownsFd: true };
  return adoptFd(io, fd, ifname, true, counters, () => io.afpAttach(fd, ifname, attach, counters));
}

export function openAfPacket(ifname: string, opts: AfPacketOptions = {}): NativePort {
  return adoptAfPacket(openAfPacketSocket(ifname, opts), ifname, opts);
}

const FANOUT_TRIES = 16;
/** The next fanout group id to try; process-wide, from a start derived from the pid (other processes use groups too). */
let nextGroup = (process.pid * 16) & 0xffff;

/** One socket per worker, in worker order, in a fresh fanout group (none for one worker). */
function openFanout(ifname: string, workers: number, ring: RingOptions): number[] {
  for (let attempt = 0; ; attempt++) {
    const group = workers > 1 ? nextGroup++ & 0xffff : undefined;
    const fds: number[] = [];
    try {
      for (let i = 0; i < workers; i++) fds.push(openAfPacketSocket(ifname, { ...ring, fanoutGroup: group }));
      return fds;
    } catch (e) {
      for (const fd of fds) loadNative().closeFd(fd);
      // Another group with this id (other process, other interface): try the next id.
      if (!(e as Error).message.includes('PACKET_FANOUT') || attempt + 1 >= FANOUT_TRIES) throw e;
    }
  }
}

export const afpacketBackend: Backend<'afpacket'> = {
  name: 'afpacket',
  load: () => loadNative().counterNames,
  open: (ifname, opts = {}) =>
    openAfPacket(ifname, { ...opts.ring, fanoutGroup: opts.fanoutGroup, fanoutDefrag: opts.fanoutDefrag, counters: opts.counters }),
  threads: {
    openFds(ifname, workers, ring) {
      const fds = openFanout(ifname, workers, ring);
      return {
        workers: fds.map((fd) => ({ fd, rx: true })),
        description: `AF_PACKET TPACKET_V${ring.version ?? 2}, ${fds.length} socket(s); ${NATIVE_OFFLOADS}`,
        close: () => {}, // each worker owns its socket
      };
    },
    adopt: (fd, ifname, { ring, counters }) => adoptAfPacket(fd, ifname, { ...ring, counters }),
    discard: (fd) => loadNative().closeFd(fd),
    linkUp: nativeLinkUp,
  },
  lab: { link: 'veth', offloadsOff: false },
};
