/*
 * afpacket: AF_PACKET ports (native/afpacket.h) as PortIO.
 *
 * openAfPacket opens and attaches in one step (one socket, or one member of a fanout group).
 * The runtime splits the two: it opens every worker's socket of an interface from the main thread,
 * in worker order, because the kernel's fanout hash indexes group members in join order and both
 * directions of a flow must land on the same worker on every interface; each worker then adopts
 * its fd (adoptAfPacket), mapping the ring and polling it on its own event loop.
 */
import { BATCH, MAX_FRAME } from '../../packet/batch.js';
import { ioCounters, loadNative, NativePort, type RingOptions, type SocketOptions } from './native.js';

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

/** Attach a socket from openAfPacketSocket (possibly opened by another thread); the port owns the fd. */
export function adoptAfPacket(fd: number, ifname: string, opts: AfPacketOptions = {}): NativePort {
  const io = loadNative();
  const counters = opts.counters ?? ioCounters(io);
  const ring = { version: opts.version, blockSize: opts.blockSize, blockCount: opts.blockCount };
  const h = io.afpAttach(fd, ifname, { ...ring, maxFrame: MAX_FRAME, maxBurst: BATCH, ownsFd: true }, counters);
  return new NativePort(io, ifname, h, counters);
}

export function openAfPacket(ifname: string, opts: AfPacketOptions = {}): NativePort {
  const fd = openAfPacketSocket(ifname, opts);
  try {
    return adoptAfPacket(fd, ifname, opts);
  } catch (e) {
    loadNative().closeFd(fd);
    throw e;
  }
}
