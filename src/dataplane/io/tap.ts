/*
 * tap: TAP devices (native/tap.h) as PortIO, and the 'tap' backend.
 *
 * openTap creates the TAP (brought up) or attaches to an existing TAP of that name. In worker
 * threads the main thread opens one fd per TAP and keeps it (openFds): every worker may transmit
 * on it, worker 0 alone reads it (adoptTap with rx false and ownsFd false for the shares), and the
 * main thread closes it. A TAP we created disappears when its last fd closes.
 */
import { BATCH, MAX_FRAME } from '../../packet/batch.js';
import type { Backend } from './backend.js';
import { adoptFd, ioCounters, loadNative, NATIVE_OFFLOADS, nativeLinkUp, type NativePort } from './native.js';

export interface TapOptions {
  /** Read (and poll) this fd; false for a transmit-only share. Default true. */
  rx?: boolean;
  /** Close the fd with the port (and when attaching fails). Default true. */
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
  return adoptFd(io, fd, ifname, attach.ownsFd, counters, () => io.tapAttach(fd, ifname, attach, counters));
}

export function openTap(ifname: string, opts: Omit<TapOptions, 'ownsFd'> = {}): NativePort {
  return adoptTap(openTapDevice(ifname), ifname, { ...opts, ownsFd: true });
}

export const tapBackend: Backend<'tap'> = {
  name: 'tap',
  load: () => loadNative().counterNames,
  open: (ifname, opts = {}) => openTap(ifname, { counters: opts.counters }),
  threads: {
    openFds(ifname, workers) {
      const fd = openTapDevice(ifname);
      return {
        workers: Array.from({ length: workers }, (_, i) => ({ fd, rx: i === 0 })),
        description: `TAP; ${NATIVE_OFFLOADS}`,
        close: () => loadNative().closeFd(fd),
      };
    },
    adopt: (fd, ifname, { rx, counters }) => adoptTap(fd, ifname, { rx, ownsFd: false, counters }),
    discard: () => {}, // the main thread keeps the shared fd
    linkUp: nativeLinkUp,
  },
  lab: { link: 'tap', offloadsOff: false },
};
