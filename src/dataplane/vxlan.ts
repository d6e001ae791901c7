/*
 * VXLAN between hosts (RFC 7348; issue 14): when consecutive nodes of a path are on different
 * hosts (control/slice.ts), the frame leaves in a tunnel from this host's underlay interface to the
 * peer agent's underlay address, and the peer takes it out at its underlay interface.
 *
 *   outer Ethernet (peer's underlay MAC <- ours, 0x0800)
 *   IPv4 (ours -> peer's, DF, TTL 64, no options) | UDP (source port from the flow, dst 4789, checksum 0)
 *   VXLAN (flags I, VNI = SPI << 1 | reverse: the path)
 *   inner Ethernet (destination: the instance the sender selected) | the chain's MPLS label or NSH
 *   (SPI, SI of the node the frame is bound for) | the packet
 *
 * Plain VXLAN carrying Ethernet and the chain's own encapsulation, rather than VXLAN-GPE with NSH
 * as next protocol: it is what networking-sfc's OVS agents put in their VXLAN tunnels (the frame
 * as on the integration bridge, MPLS or NSH included), every chain keeps its one correlation
 * (MPLS chains stay MPLS), push/pop (encap.ts) and parse's MPLS/NSH code serve unchanged, and
 * Debian's tshark dissects it on UDP 4789 with no option (vxlan -> eth -> mpls|nsh -> ip), where
 * GPE is dissected only on 4790.
 *
 * pushVxlan (execute's ACT_TUNNEL) writes the outer headers in front of the frame (into the slot's
 * headroom; when NSH already used it, the frame moves back within its slot first). decapBatch runs
 * at the start of steer on the frames of the underlay interface: a frame not UDP 4789 to our
 * underlay address is dropped as 'underlay_not_vxlan' (the host's stack, which AF_PACKET does not
 * take it from, still gets it), a malformed one as 'bad_vxlan'; otherwise the outer headers are
 * stripped, the inner frame parsed again and its VNI kept in tunnelVni for steer (steerTunnel).
 */
import { BATCH, ENCAP_NONE, FRAG_NONE, SLOT, type Batch } from '../packet/batch.js';
import { ipv4HeaderChecksum } from '../packet/checksum.js';
import { Ctr, Drop, type Counters } from '../packet/counters.js';
import { hasRoom, shift } from './encap.js';
import { reparseSlot } from './parse.js';
import type { Tables } from './tables.js';

export const VXLAN_PORT = 4789;
/** Outer Ethernet, IPv4 (no options), UDP and VXLAN headers. */
export const VXLAN_BYTES = 14 + 20 + 8 + 8;
/** SteerState.slotFrom of a frame a tunnel brought (execute then runs the node's arrive list). */
export const FROM_TUNNEL = -2;
const ETH_IPV4 = 0x0800;
const IPPROTO_UDP = 17;
const VXLAN_FLAG_I = 0x08;

/** The VNI of a path: its SPI and its direction (bit 0: reverse). */
export function vniOf(spi: number, reverse: boolean | number): number {
  return ((spi << 1) | (reverse ? 1 : 0)) & 0xffffff;
}

/** The path a VNI names (tables.vniSlots), or -1. */
export function pathByVni(t: Tables, vni: number): number {
  const mask = t.vniMask;
  for (let at = vni & mask; ; at = (at + 1) & mask) {
    const p = t.vniSlots[at] - 1;
    if (p < 0) return -1;
    if (vniOf(t.pathSpi[p], t.pathReverse[p]) === vni) return p;
  }
}

/** Fill t.vniSlots for every path (the renderer). */
export function indexVnis(t: Tables): void {
  for (let p = 0; p < t.pathCount; p++) {
    let at = vniOf(t.pathSpi[p], t.pathReverse[p]) & t.vniMask;
    while (t.vniSlots[at] !== 0) at = (at + 1) & t.vniMask;
    t.vniSlots[at] = p + 1;
  }
}

/** Room for n bytes in front of slot i's frame: from the headroom, else by moving the frame back in its slot. */
function makeRoom(b: Batch, i: number, n: number): boolean {
  if (hasRoom(b, i, n)) return true;
  const s = b.start[i];
  const slot = Math.floor(s / SLOT) * SLOT;
  const move = n - (s - slot);
  if (s + b.len[i] + move > slot + SLOT) return false;
  b.data.copyWithin(s + move, s, s + b.len[i]);
  b.start[i] = s + move;
  return true;
}

/** UDP source port from the inner flow (RFC 7348: entropy for the underlay's ECMP), 49152-65535. */
function sourcePort(b: Batch, i: number): number {
  const w = i << 2;
  const x = (b.src[w] ^ b.dst[w] ^ b.src[w + 3] ^ b.dst[w + 3] ^ ((b.sport[i] << 16) | b.dport[i])) >>> 0;
  return 0xc000 | ((x ^ (x >>> 14) ^ (x >>> 28)) & 0x3fff);
}

/**
 * Slot i (on path b.path[i]) into a VXLAN tunnel to peer `peer` and out of the underlay
 * interface. Returns 0, or the drop reason: 'no_peer' (its address is not known), 'frame_too_big'.
 */
export function pushVxlan(t: Tables, b: Batch, i: number, peer: number, c: Counters): number {
  if (peer < 0 || peer >= t.peerIp.length || t.peerIp[peer] === 0) return Drop.no_peer;
  if (!makeRoom(b, i, VXLAN_BYTES)) return Drop.frame_too_big;
  const inner = b.len[i];
  const p = b.path[i];
  shift(b, i, -VXLAN_BYTES);
  const s = b.start[i];
  const d = b.data;
  const v = b.view;
  for (let k = 0; k < 6; k++) {
    d[s + k] = t.peerMac[peer * 6 + k];
    d[s + 6 + k] = t.underlayMac[k];
  }
  v.setUint16(s + 12, ETH_IPV4);
  const ip = s + 14;
  v.setUint32(ip, 0x45000000 | (inner + 36)); // version 4, IHL 5, total length
  v.setUint32(ip + 4, 0x4000); // id 0, DF
  v.setUint32(ip + 8, (64 << 24) | (IPPROTO_UDP << 16)); // TTL, protocol, checksum 0 for now
  v.setUint32(ip + 12, t.underlayIp);
  v.setUint32(ip + 16, t.peerIp[peer]);
  v.setUint16(ip + 10, ipv4HeaderChecksum(d, ip, 20));
  const udp = ip + 20;
  v.setUint16(udp, sourcePort(b, i));
  v.setUint16(udp + 2, VXLAN_PORT);
  v.setUint16(udp + 4, inner + 16);
  v.setUint16(udp + 6, 0);
  v.setUint32(udp + 8, VXLAN_FLAG_I << 24);
  v.setUint32(udp + 12, vniOf(t.pathSpi[p], t.pathReverse[p]) << 8);
  b.vlanCount[i] = 0; // (the outer header has no tags: execute's MTU check measures from byte 14)
  b.out[i] = t.underlayIface;
  c.events[Ctr.tunnel_tx]++;
  return 0;
}

/** VNI of each slot decapBatch took out of a tunnel (valid for the batch steer is working on). */
export const tunnelVni = new Int32Array(BATCH);

/** Strip slot i's VXLAN outer headers (it arrived on the underlay); 0 or the drop reason. */
function decap(t: Tables, b: Batch, i: number): number {
  if (b.etherType[i] !== ETH_IPV4 || b.vlanCount[i] !== 0 || b.proto[i] !== IPPROTO_UDP || b.dport[i] !== VXLAN_PORT || b.dst[i << 2] !== t.underlayIp) {
    return Drop.underlay_not_vxlan;
  }
  const s = b.start[i];
  const udp = s + b.l4Off[i];
  const end = s + b.len[i];
  const udpLen = b.view.getUint16(udp + 4);
  if (b.frag[i] !== FRAG_NONE || b.encap[i] !== ENCAP_NONE || udpLen < 16 + 14 || udp + udpLen > end) return Drop.bad_vxlan;
  if ((b.data[udp + 8] & VXLAN_FLAG_I) === 0) return Drop.bad_vxlan;
  tunnelVni[i] = b.view.getUint32(udp + 12) >>> 8;
  b.start[i] = udp + 16;
  b.len[i] = udpLen - 16;
  return reparseSlot(b, i);
}

/** Take the underlay interface's frames out of their tunnels (see the design comment). */
export function decapBatch(t: Tables, b: Batch, c: Counters): void {
  const u = t.underlayIface;
  for (let i = 0; i < b.count; i++) {
    if (b.port[i] !== u || b.drop[i] !== 0) continue;
    const why = decap(t, b, i);
    if (why === 0) {
      c.events[Ctr.tunnel_rx]++;
      continue;
    }
    b.drop[i] = why;
    c.drops[why]++;
    c.events[Ctr.dropped]++;
  }
}
