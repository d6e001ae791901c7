/*
 * Batch: the unit every pipeline stage works on (ARCHITECTURE.md §4).
 *
 * A batch is one arena of BATCH slots of SLOT bytes plus struct-of-arrays metadata, allocated once
 * and reused for every burst. A packet is a slot index, never an object. A frame lives at
 * data[start[i] .. start[i]+len[i]); start[i] begins HEADROOM bytes into the slot so that
 * encapsulation (MPLS, NSH) can be pushed by moving start[i] back instead of copying the payload
 * (Snabb's packet prepend).
 *
 * Stages write small integers per slot: parse fills the header fields below, steer fills
 * out/path/hop, execute edits bytes in place. `drop[i]` is 0 while the packet is alive and a
 * Drop reason (counters.ts) once it is dropped; later stages skip dropped slots.
 *
 * Field conventions written by parse (offsets are relative to start[i]):
 *  - l3Off/l4Off: offset of the L3/L4 header, ABSENT (0xffff) when that layer is missing.
 *  - etherType: the ethertype after all VLAN tags (0x0800, 0x86dd, 0x8847, 0x894f, 0x0806...).
 *  - vlan: outermost VLAN id (0 = untagged); vlanCount: number of 802.1Q/802.1ad tags.
 *  - ipVer: 0 (not IP), 4 or 6. For encapsulated frames (MPLS/NSH) these describe the inner packet
 *    when parse could see it, with l3Off pointing at the inner IP header.
 *  - src/dst: 4 u32 words per slot (index i*4..i*4+3), network order folded into big-endian u32s;
 *    IPv4 uses word 0 and leaves words 1..3 zero.
 *  - proto: IP protocol / IPv6 upper-layer next header (6 tcp, 17 udp, 132 sctp, 1 icmp, 58 icmpv6).
 *  - sport/dport: L4 ports (TCP/UDP/SCTP); ICMP type in sport and code in dport; 0 when absent.
 *  - frag: 0 not a fragment, 1 first fragment (offset 0, more fragments), 2 non-first fragment.
 *  - ipId: IPv4 identification (16 bits) or IPv6 fragment identification (32 bits).
 *  - encap: 0 none, 1 MPLS, 2 NSH; label: MPLS label of the top entry, or NSH (SPI << 8 | SI).
 */

export const BATCH = 256;
export const SLOT = 2048;
export const HEADROOM = 64;
/** Largest frame a slot holds (Ethernet + 1500 MTU + tags + room for pushed headers). */
export const MAX_FRAME = SLOT - HEADROOM;
export const ABSENT = 0xffff;

export const ENCAP_NONE = 0;
export const ENCAP_MPLS = 1;
export const ENCAP_NSH = 2;

export const FRAG_NONE = 0;
export const FRAG_FIRST = 1;
export const FRAG_LATER = 2;

/** Output verdicts in `out[i]` besides an interface index >= 0. */
export const OUT_DROP = -1;
export const OUT_FLOOD = -2;
/** Flood to the interfaces with an endpoint (unknown unicast: never to interfaces of SF ports only). */
export const OUT_FLOOD_HOSTS = -3;

export class Batch {
  readonly data: Uint8Array;
  readonly view: DataView;
  /** Number of live slots (0..BATCH). */
  count = 0;

  readonly start = new Int32Array(BATCH);
  readonly len = new Uint16Array(BATCH);
  /** Input interface index (the engine's attachment number). */
  readonly port = new Uint16Array(BATCH);
  /** Capture time in ns since the epoch, low precision (used by replay and pcap capture). */
  readonly time = new Float64Array(BATCH);

  // parse
  readonly l3Off = new Uint16Array(BATCH);
  readonly l4Off = new Uint16Array(BATCH);
  readonly etherType = new Uint16Array(BATCH);
  readonly vlan = new Uint16Array(BATCH);
  readonly vlanCount = new Uint8Array(BATCH);
  readonly ipVer = new Uint8Array(BATCH);
  readonly src = new Uint32Array(BATCH * 4);
  readonly dst = new Uint32Array(BATCH * 4);
  readonly proto = new Uint8Array(BATCH);
  readonly sport = new Uint16Array(BATCH);
  readonly dport = new Uint16Array(BATCH);
  readonly frag = new Uint8Array(BATCH);
  readonly ipId = new Uint32Array(BATCH);
  readonly encap = new Uint8Array(BATCH);
  readonly label = new Uint32Array(BATCH);

  // steer / select / execute
  readonly drop = new Uint8Array(BATCH);
  readonly hash = new Uint32Array(BATCH);
  readonly out = new Int32Array(BATCH);
  /** Compiled path index (-1 = not in a chain) and hop index within it. */
  readonly path = new Int32Array(BATCH);
  readonly hop = new Int32Array(BATCH);
  /** Flow-table entry index used by this packet (-1 = none). */
  readonly flow = new Int32Array(BATCH);

  /**
   * `data`: memory for the arena (at least BATCH * SLOT bytes; slot i is its i-th SLOT). A worker on
   * AF_XDP passes its sockets' shared UMEM (native/xskarena.h): received frames then stay where
   * the kernel wrote them, beyond the slots, with start[i] pointing there.
   */
  constructor(data?: Uint8Array) {
    if (data !== undefined && data.length < BATCH * SLOT) throw new RangeError(`batch arena of ${data.length} bytes: needs ${BATCH * SLOT}`);
    this.data = data ?? new Uint8Array(BATCH * SLOT);
    this.view = new DataView(this.data.buffer, this.data.byteOffset, this.data.byteLength);
    for (let i = 0; i < BATCH; i++) this.start[i] = i * SLOT + HEADROOM;
  }

  /** Empty the batch and put every slot's frame start back at its headroom mark. */
  reset(): void {
    for (let i = 0; i < this.count; i++) this.start[i] = i * SLOT + HEADROOM;
    this.count = 0;
  }

  /** Append one frame copied from `bytes`; returns its slot, or -1 when full or oversize. */
  push(bytes: Uint8Array, port: number, timeNs = 0): number {
    if (this.count >= BATCH || bytes.length > MAX_FRAME) return -1;
    const i = this.count++;
    const s = i * SLOT + HEADROOM;
    this.start[i] = s;
    this.data.set(bytes, s);
    this.len[i] = bytes.length;
    this.port[i] = port;
    this.time[i] = timeNs;
    return i;
  }

  /**
   * Append a copy of slot i: its bytes and every field parse and steer wrote (a tap's copy continues
   * from where the original is). Returns the new slot, or -1 when the batch is full.
   */
  copySlot(i: number): number {
    if (this.count >= BATCH) return -1;
    const k = this.count++;
    const s = k * SLOT + HEADROOM;
    this.data.copyWithin(s, this.start[i], this.start[i] + this.len[i]);
    this.start[k] = s;
    for (const a of [this.len, this.port, this.time, this.l3Off, this.l4Off, this.etherType, this.vlan, this.vlanCount, this.ipVer,
      this.proto, this.sport, this.dport, this.frag, this.ipId, this.encap, this.label, this.drop, this.hash, this.out, this.path,
      this.hop, this.flow]) {
      a[k] = a[i];
    }
    this.src.copyWithin(k * 4, i * 4, i * 4 + 4);
    this.dst.copyWithin(k * 4, i * 4, i * 4 + 4);
    return k;
  }

  /** A copy of slot i's frame (for tests, replay capture and tracing; not for the hot path). */
  frame(i: number): Uint8Array {
    return this.data.slice(this.start[i], this.start[i] + this.len[i]);
  }
}
