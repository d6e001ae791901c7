/*
 * PortIO: the one seam between the engine and packet I/O (ARCHITECTURE.md §6).
 *
 * A backend moves whole bursts: one call receives up to `max` frames into consecutive batch slots,
 * one call transmits a list of slots. Backends: AF_PACKET rings and TAP (native addon, afpacket.ts /
 * tap.ts), libpcap through `cap` (cap.ts), each registered in registry.ts; pcap files (pcapio.ts,
 * replay) through QueuePort. The engine never knows which one it drives.
 *
 * A live port is a LosablePort: it tells its owner, once, when its interface vanished.
 */
import type { Batch } from '../../packet/batch.js';

export interface PortIO {
  /** Linux interface name (or the replay name) this backend is attached to. */
  readonly name: string;
  /**
   * Receive up to `max` frames, appending them at slots b.count.. and advancing b.count; sets
   * start/len/port(=portIndex)/time for each. Returns how many were received (0 when none wait).
   */
  rxBurst(b: Batch, portIndex: number, max: number): number;
  /** Transmit the frames of slots idx[0..n). Returns how many were accepted; the rest are tx drops. */
  txBurst(b: Batch, idx: Uint16Array, n: number): number;
  /** Ask to be told (once per readiness) when frames may be waiting; backends without readiness omit it. */
  onReadable?(cb: () => void): void;
  /** Whether the interface exists and is up (a down interface marks its ports DOWN). */
  isUp(): boolean;
  close(): void;
}

/** A live port that can tell its owner (once) that its interface vanished. */
export interface LosablePort extends PortIO {
  onGone: (() => void) | null;
}
