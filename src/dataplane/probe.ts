/*
 * Health probes (control/health-monitor.ts): a probe is a UDP datagram between a chain's endpoint
 * addresses, sent into an SF instance's ingress port addressed to the SF, that a working (routing)
 * SF forwards out of its egress port. The data path consumes it when it comes back at an SF return
 * port, so no endpoint ever sees one, and records the arrival per instance (SteerState.probeSeq /
 * probeAt) for the monitor to read from shared memory.
 *
 * An SF-aware instance gets its probe encapsulated like real traffic (the MPLS label or NSH SPI+SI
 * the hop's push action carries) and returns it with the index one less; parse reads the UDP
 * datagram under the encapsulation, so the return is consumed the same way.
 *
 * Wire format: UDP source and destination port PROBE_PORT, payload PROBE_MAGIC, instance index,
 * sequence number (u32 BE each; the sequence is global to the monitor and increasing, so a late
 * probe for an index since reused never counts for its new owner). Any frame at an SF return port
 * carrying the magic is consumed, even a malformed or stale one: a probe never leaves the chain.
 */
import type { Batch } from '../packet/batch.js';
import { buildFrame } from './frames.js';

export const PROBE_PORT = 34979;
export const PROBE_MAGIC = 0x53464350; // "SFCP"
const PAYLOAD = 12;

export interface ProbeSpec {
  /** The SF's ingress MAC (destination) and the chain entry's MAC (source). */
  ethDst: string;
  ethSrc: string;
  /** The chain's endpoint addresses (same family). */
  src: string;
  dst: string;
  instance: number;
  seq: number;
  /** For an SF-aware instance: the encapsulation its hop receives (MPLS label (spi << 8) | si, or NSH MD1 over Ethernet). */
  encap?: { kind: 'mpls' | 'nsh'; spi: number; si: number };
}

export function buildProbe(p: ProbeSpec): Uint8Array {
  const payload = new Uint8Array(PAYLOAD);
  const v = new DataView(payload.buffer);
  v.setUint32(0, PROBE_MAGIC);
  v.setUint32(4, p.instance);
  v.setUint32(8, p.seq >>> 0);
  const ver = p.src.includes(':') ? 6 : 4;
  const e = p.encap;
  const encap = e === undefined ? {} : e.kind === 'mpls' ? { mpls: [(e.spi << 8) | e.si] } : { nsh: { spi: e.spi, si: e.si, ethernet: true } };
  return buildFrame({ ethSrc: p.ethSrc, ethDst: p.ethDst, ...encap, ip: { ver, src: p.src, dst: p.dst }, l4: { proto: 'udp', sport: PROBE_PORT, dport: PROBE_PORT }, payload });
}

/**
 * Write sequence number `seq` into a probe buildProbe made (its payload ends the frame, right after
 * the UDP header) and update the UDP checksum for it (RFC 1624): the monitor builds a probe per
 * instance once and stamps it every check.
 */
export function stampProbe(frame: Uint8Array, seq: number): void {
  const at = frame.length - PAYLOAD + 8;
  const csum = frame.length - PAYLOAD - 2;
  const old = [(frame[at] << 8) | frame[at + 1], (frame[at + 2] << 8) | frame[at + 3]];
  const now = [(seq >>> 16) & 0xffff, seq & 0xffff];
  let sum = ~((frame[csum] << 8) | frame[csum + 1]) & 0xffff;
  for (let w = 0; w < 2; w++) sum += (~old[w] & 0xffff) + now[w];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const c = ~sum & 0xffff;
  frame[csum] = c === 0 ? 0xff : c >>> 8; // UDP sends a computed 0 as 0xffff
  frame[csum + 1] = c === 0 ? 0xff : c & 0xff;
  frame[at] = now[0] >>> 8;
  frame[at + 1] = now[0] & 0xff;
  frame[at + 2] = now[1] >>> 8;
  frame[at + 3] = now[1] & 0xff;
}

/** Slot i is a probe (UDP to PROBE_PORT with the magic): its payload offset, else -1. */
export function probePayload(b: Batch, i: number): number {
  if (b.proto[i] !== 17 || b.dport[i] !== PROBE_PORT) return -1;
  const off = b.l4Off[i] + 8; // (l4Off is relative to the frame's start)
  if (off + PAYLOAD > b.len[i] || b.view.getUint32(b.start[i] + off) !== PROBE_MAGIC) return -1;
  return b.start[i] + off;
}
