/*
 * Burst helpers for PortIO backend tests: transmit a list of frames in bursts, receive until a
 * count arrives or time runs out (checking every slot carries the port index given to rxBurst).
 */
import { expect } from 'vitest';
import { BATCH, Batch } from '../../src/packet/batch.js';
import type { PortIO } from '../../src/dataplane/io/portio.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Transmit frames in bursts of at most BATCH; returns how many were accepted. */
export function transmit(port: PortIO, frames: readonly Uint8Array[]): number {
  const b = new Batch();
  const idx = Uint16Array.from({ length: BATCH }, (_, i) => i);
  let sent = 0;
  for (let at = 0; at < frames.length; at += BATCH) {
    b.reset();
    for (const f of frames.slice(at, at + BATCH)) b.push(f, 0);
    sent += port.txBurst(b, idx, b.count);
  }
  return sent;
}

/** Receive until `want` frames arrived or `ms` passed; returns copies of them. */
export async function receive(port: PortIO, want: number, ms = 2000, portIndex = 7): Promise<Uint8Array[]> {
  const b = new Batch();
  const got: Uint8Array[] = [];
  const until = Date.now() + ms;
  while (got.length < want && Date.now() < until) {
    b.reset();
    const n = port.rxBurst(b, portIndex, BATCH);
    for (let i = 0; i < n; i++) {
      expect(b.port[i]).toBe(portIndex);
      got.push(b.frame(i));
    }
    if (n === 0) await sleep(2);
  }
  return got;
}
