/*
 * tap: TAP devices (native/tap.h) as PortIO.
 *
 * openTap creates the TAP (brought up) or attaches to an existing TAP of that name. The runtime
 * opens one fd per TAP on the main thread and shares it: every worker may transmit on it, one
 * worker reads it (adoptTap with rx false for the others). A TAP we created disappears when its
 * last fd closes.
 */
import { BATCH, MAX_FRAME } from '../../packet/batch.js';
import { ioCounters, loadNative, NativePort } from './native.js';

export interface TapOptions {
  /** Read (and poll) this fd; false for a transmit-only share. Default true. */
  rx?: boolean;
  /** Close the fd with the port. Default true. */
  ownsFd?: boolean;
  counters?: Float64Array;
}

/** Create or attach to the TAP `ifname`; returns its fd. */
export function openTapDevice(ifname: string): number {
  return loadNative().tapOpen(ifname);
}

export function adoptTap(fd: number, ifname: string, opts: TapOptions = {}): NativePort {
  const io = loadNative();
  const counters = opts.counters ?? ioCounters(io);
  const attach = { maxFrame: MAX_FRAME, maxBurst: BATCH, rx: opts.rx ?? true, ownsFd: opts.ownsFd ?? true };
  return new NativePort(io, ifname, io.tapAttach(fd, ifname, attach, counters), counters);
}

export function openTap(ifname: string, opts: Omit<TapOptions, 'ownsFd'> = {}): NativePort {
  const fd = openTapDevice(ifname);
  try {
    return adoptTap(fd, ifname, { ...opts, ownsFd: true });
  } catch (e) {
    loadNative().closeFd(fd);
    throw e;
  }
}
