/*
 * attached: keep a port usable while its interface comes and goes.
 *
 * AttachedPort is what the engine holds in the runtime: a PortIO that stays valid while the real
 * port underneath (a backend's LosablePort, registry.ts) is absent. Detached it receives nothing,
 * refuses transmits and reports down (the engine then counts 'port_down' drops). When the attached
 * port finds its interface deleted, it is closed and the owner is told once (onLost); the owner
 * re-attaches when the interface is back (the runtime retries every second and logs once per loss).
 */
import type { Batch } from '../../packet/batch.js';
import type { LosablePort, PortIO } from './portio.js';

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
