/*
 * open: choose a packet I/O backend by name, and keep a port usable while its interface comes
 * and goes.
 *
 * openPortIO(backend, ifname, opts) opens one live port and throws when it cannot (the error's
 * `code` is ENODEV for a missing interface; a missing addon or libpcap names what to install).
 *
 * AttachedPort is what the engine holds in the runtime: a PortIO that stays valid while the real
 * port underneath is absent. Detached it receives nothing, refuses transmits and reports down
 * (the engine then counts 'port_down' drops). When the attached port finds its interface deleted,
 * it is closed and the owner is told once (onLost); the owner re-attaches when the interface is
 * back (the runtime retries every second and logs once per loss).
 */
import type { Batch } from '../../packet/batch.js';
import { openAfPacket } from './afpacket.js';
import { openCap } from './cap.js';
import type { RingOptions } from './native.js';
import type { PortIO } from './portio.js';
import { openTap } from './tap.js';

export type Backend = 'afpacket' | 'cap' | 'tap';
export const BACKENDS: readonly Backend[] = ['afpacket', 'cap', 'tap'];

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

/** A port that can tell its owner the interface vanished. */
export interface LosablePort extends PortIO {
  onGone: (() => void) | null;
}

export function openPortIO(backend: Backend, ifname: string, opts: OpenOptions = {}): LosablePort {
  switch (backend) {
    case 'afpacket':
      return openAfPacket(ifname, {
        ...opts.ring,
        fanoutGroup: opts.fanoutGroup,
        fanoutDefrag: opts.fanoutDefrag,
        counters: opts.counters,
      });
    case 'tap':
      return openTap(ifname, { counters: opts.counters });
    case 'cap':
      return openCap(ifname, { bufSize: opts.bufSize });
    default:
      throw new Error(`unknown packet I/O backend '${String(backend)}' (expected ${BACKENDS.join(', ')})`);
  }
}

export class AttachedPort implements PortIO {
  readonly name: string;
  private inner: LosablePort | null = null;
  private readable: (() => void) | null = null;
  private closed = false;
  private readonly onLost: (port: AttachedPort) => void;

  constructor(name: string, onLost: (port: AttachedPort) => void) {
    this.name = name;
    this.onLost = onLost;
  }

  get attached(): boolean {
    return this.inner !== null;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Put a live port underneath (closing any previous one); a closed AttachedPort closes it. */
  attach(io: LosablePort): void {
    if (this.closed) {
      io.close();
      return;
    }
    this.inner?.close();
    this.inner = io;
    io.onGone = () => this.lost(io);
    if (this.readable !== null) io.onReadable?.(this.readable);
  }

  rxBurst(b: Batch, portIndex: number, max: number): number {
    const io = this.inner;
    return io === null ? 0 : io.rxBurst(b, portIndex, max);
  }

  txBurst(b: Batch, idx: Uint16Array, n: number): number {
    const io = this.inner;
    return io === null ? 0 : io.txBurst(b, idx, n);
  }

  onReadable(cb: () => void): void {
    this.readable = cb;
    this.inner?.onReadable?.(cb);
  }

  isUp(): boolean {
    const io = this.inner;
    return io !== null && io.isUp();
  }

  close(): void {
    this.closed = true;
    this.inner?.close();
    this.inner = null;
  }

  private lost(io: LosablePort): void {
    if (this.inner !== io) return;
    this.inner = null;
    io.close();
    this.onLost(this);
  }
}
