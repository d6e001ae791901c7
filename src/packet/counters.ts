/*
 * Counters: declared once, as lists that yield both the index constants and the exported names
 * (VPP's foreach_*_error). The data path only does `c[Ctr.rx]++` / `c[Drop.truncated_ipv4]++` on
 * one Float64Array per worker; prom-client reads the arrays at scrape time (metrics.ts), never
 * per packet.
 */

/** Why a frame was dropped. Index 0 means "not dropped". */
export const DROP_REASONS = [
  'none',
  'runt', // shorter than an Ethernet header
  'frame_too_big', // larger than a slot / the egress MTU
  'truncated_vlan',
  'too_many_vlan_tags',
  'truncated_mpls',
  'truncated_nsh',
  'bad_nsh',
  'truncated_ipv4',
  'bad_ipv4_header', // version/IHL wrong
  'bad_ipv4_length', // total length beyond the frame or below the header
  'truncated_ipv6',
  'bad_ipv6_length',
  'truncated_ipv6_ext',
  'truncated_l4',
  'bad_tcp_header',
  'no_instance', // the hop's group has no usable instance (empty, all weight 0, all down)
  'hairpin', // would leave through the interface it came in on
  'to_sf_port', // unicast outside a chain addressed to an SF port (SF ports are not L2 endpoints)
  'bad_encap', // an aware hop's frame whose MPLS/NSH header cannot be removed as expected
  'missing_encap', // an SF-aware hop returned a frame without the chain's encapsulation
  'unknown_spi', // an aware hop returned MPLS/NSH for a path it is not on (SPI / label)
  'bad_si', // an aware hop returned the right path with an unexpected service index
  'from_tap', // sent by a tap's port pair (a tap only receives copies)
  'port_down',
  'tx_failed',
  'bad_ipv6_header', // ethertype/next protocol says IPv6 but the version nibble is not 6
  'hop_down', // the hop's group has no live instance and fails closed (control/health.ts)
  'bad_vxlan', // a frame to this host's VXLAN port with malformed outer IPv4/UDP/VXLAN headers (dataplane/vxlan.ts)
  'underlay_not_vxlan', // a frame on the underlay interface that is not VXLAN to this host (the host's own stack still gets it)
  'unknown_tunnel_node', // a tunnelled frame whose VNI / SPI / SI / destination MAC names no node or instance of this host
  'no_peer', // bound for a host whose agent has published no underlay address
] as const;

export type DropReason = (typeof DROP_REASONS)[number];
export const Drop = indexOf(DROP_REASONS);

/** Dataplane event counters (per worker, summed at scrape time). */
export const COUNTERS = [
  'rx_packets',
  'rx_bytes',
  'tx_packets',
  'tx_bytes',
  'dropped',
  'flow_cache_hits',
  'flow_cache_misses',
  'classified', // entered a chain
  'unclassified', // switched by L2 learning
  'flooded',
  'fragments_followed', // non-first fragments steered by their first fragment's decision
  'fragments_l3_only', // non-first fragments steered by L3 fields alone
  'handed_off', // frames handed from a service graph's source chain to a destination chain
  'tap_copies', // copies sent to tap instances
  'tap_copies_lost', // copies not made: no free slot in the batch
  'icmp_too_big', // ICMP "fragmentation needed" / "packet too big" sent for frames an encapsulation pushed over the MTU
  'table_generations', // table swaps observed by the data path
  'breaths',
  'batches', // batches processed (rx_packets / batches: the mean batch size)
  'hops_skipped', // frames that skipped a hop with no live instance (fail-open, control/health.ts)
  'probes_returned', // health probes back from an SF, consumed (dataplane/probe.ts)
  'tunnel_tx', // frames sent to another host in a VXLAN tunnel (dataplane/vxlan.ts)
  'tunnel_rx', // frames taken out of a VXLAN tunnel from another host
] as const;

export type CounterName = (typeof COUNTERS)[number];
export const Ctr = indexOf(COUNTERS);

function indexOf<T extends string>(names: readonly T[]): Readonly<Record<T, number>> {
  const m = {} as Record<T, number>;
  names.forEach((n, i) => (m[n] = i));
  return Object.freeze(m);
}

/**
 * One worker's counters: events then drop reasons. By default in private memory; given a buffer
 * (a SharedArrayBuffer, at least Counters.BYTES from byteOffset) they live there, so another
 * thread can read a worker's counters without messages.
 */
export class Counters {
  static readonly BYTES = (COUNTERS.length + DROP_REASONS.length) * Float64Array.BYTES_PER_ELEMENT;
  readonly events: Float64Array;
  readonly drops: Float64Array;

  constructor(buffer?: ArrayBufferLike, byteOffset = 0) {
    const b = buffer ?? new ArrayBuffer(Counters.BYTES);
    const off = buffer ? byteOffset : 0;
    this.events = new Float64Array(b, off, COUNTERS.length);
    this.drops = new Float64Array(b, off + COUNTERS.length * Float64Array.BYTES_PER_ELEMENT, DROP_REASONS.length);
  }

  snapshot(): { events: Record<CounterName, number>; drops: Record<DropReason, number> } {
    const events = {} as Record<CounterName, number>;
    const drops = {} as Record<DropReason, number>;
    COUNTERS.forEach((n, i) => (events[n] = this.events[i]));
    DROP_REASONS.forEach((n, i) => (drops[n] = this.drops[i]));
    return { events, drops };
  }
}
