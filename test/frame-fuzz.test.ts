/*
 * Frame fuzz: 1,000,000 generated and mutated frames through the Engine (the lab's two-hop
 * symmetric chain, in-memory ports on every interface), arriving on every interface.
 *
 * Generated: every ethertype and protocol the parser knows (802.1Q, 802.1ad and 0x9100 tags up to
 * past the limit, MPLS label stacks, NSH with and without an inner Ethernet header, IPv4 with
 * options and fragments, IPv6 with extension-header chains and fragments, TCP/UDP/SCTP/ICMP/
 * ICMPv6/unknown protocols, ARP), addressed to the chain's endpoints, its SF ports, broadcast,
 * multicast or strangers. Mutated: every prefix of a set of frames (truncated at every offset),
 * bytes flipped, ethertypes and next-header fields overwritten, random bytes, frames of a slot's size.
 *
 * For each batch: no exception, every frame fed is received, and every frame in the batch (those
 * received, plus any the data path made, e.g. ICMP errors) is accounted for exactly once: frames
 * transmitted at least once (distinct slots handed to some port's txBurst) + frames dropped =
 * frames processed, and the drop counter equals the sum of the per-reason counters (reason 'none'
 * never counted). Deterministic (seeded PRNG); about 10-20 s on the CI machine.
 */
import { describe, expect, it } from 'vitest';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import { buildArp, buildFrame, mulberry32, type FrameSpec, type Ipv6Ext, type L4Name } from '../src/dataplane/frames.js';
import { Engine, RX_BATCH } from '../src/dataplane/engine.js';
import type { PortIO } from '../src/dataplane/io/portio.js';
import { BATCH, MAX_FRAME, type Batch } from '../src/packet/batch.js';
import { Counters, Ctr, DROP_REASONS } from '../src/packet/counters.js';
import { CLIENT_MAC, SERVER_MAC, sfMac, twoHop } from './support/sfc-state.js';

const FRAMES = 1_000_000;

/** An in-memory port: hands out what was queued, marks every slot it is asked to transmit. */
class FuzzPort implements PortIO {
  queue: Uint8Array[] = [];
  constructor(
    readonly name: string,
    private readonly sent: Uint8Array,
    private readonly tx: { frames: number },
  ) {}
  rxBurst(b: Batch, portIndex: number, max: number): number {
    const n = Math.min(max, this.queue.length);
    for (let k = 0; k < n; k++) b.push(this.queue[k]!, portIndex);
    this.queue = this.queue.slice(n);
    return n;
  }
  txBurst(_b: Batch, idx: Uint16Array, n: number): number {
    for (let k = 0; k < n; k++) this.sent[idx[k]!] = 1;
    this.tx.frames += n;
    return n;
  }
  isUp(): boolean {
    return true;
  }
  close(): void {}
}

/** Frames from a seeded PRNG: generated ones, and mutations of them. */
class FrameSource {
  private readonly rnd: () => number;
  private readonly pool: Uint8Array[] = [];
  private prefixes: { frame: Uint8Array; next: number } | null = null;

  constructor(seed: number) {
    this.rnd = mulberry32(seed);
    for (let k = 0; k < 4000; k++) this.pool.push(this.generate());
  }

  private int(n: number): number {
    return Math.floor(this.rnd() * n);
  }
  private pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  private mac(): string {
    const known = [CLIENT_MAC, SERVER_MAC, sfMac(1, 1, 'in'), sfMac(1, 2, 'out'), sfMac(2, 1, 'in'), sfMac(2, 2, 'out'), 'ff:ff:ff:ff:ff:ff', '33:33:00:00:00:01', '01:00:5e:00:00:fb', '01:80:c2:00:00:00'];
    if (this.rnd() < 0.8) return this.pick(known);
    return Array.from({ length: 6 }, () => this.int(256).toString(16).padStart(2, '0')).join(':');
  }

  /** One well-formed frame somewhere in the parser's space. */
  private generate(): Uint8Array {
    const ethSrc = this.mac();
    const ethDst = this.mac();
    const vlans = Array.from({ length: this.pick([0, 0, 0, 0, 0, 0, 1, 1, 2, 3]) }, () => this.int(4096));
    const qinq = this.rnd() < 0.3;
    if (this.rnd() < 0.05) return buildArp({ ethSrc, ethDst, vlans, qinq, op: 1 + this.int(2), senderIp: '10.0.0.1', targetIp: '10.0.0.2', frameLen: 60 });
    const v6 = this.rnd() < 0.4;
    const fragment = this.rnd() < 0.15;
    const ext: Ipv6Ext[] = v6 ? Array.from({ length: this.int(4) }, () => (this.rnd() < 0.7 ? this.pick([0, 43, 60]) : { type: this.pick([0, 43, 60]), bytes: 8 * (1 + this.int(6)) })) : [];
    const ends = v6 ? ['fd00::1', 'fd00::2', '2001:db8::7', 'fe80::1', 'ff02::1'] : ['10.0.0.1', '10.0.0.2', '192.0.2.9', '169.254.1.1', '224.0.0.251'];
    // half of the IPv4 frames are the chain's traffic (client <-> server), so chains are walked too
    const [src, dst] = !v6 && this.rnd() < 0.5 ? this.pick([['10.0.0.1', '10.0.0.2'], ['10.0.0.2', '10.0.0.1']]) : [this.pick(ends), this.pick(ends)];
    const ip = {
      ver: v6 ? 6 : 4,
      src,
      dst,
      id: this.int(65536),
      ttl: this.int(256),
      ...(fragment ? { fragOffset: this.int(3) * this.int(200), moreFragments: this.rnd() < 0.5 } : {}),
      ...(v6 ? { ext } : this.rnd() < 0.2 ? { options: Uint8Array.from({ length: 4 * (1 + this.int(10)) }, () => this.pick([0, 1, 7, 68, 130, this.int(256)])) } : {}),
    } as FrameSpec['ip'];
    const protos: (L4Name | number)[] = v6 ? ['tcp', 'udp', 'sctp', 'icmpv6', 0, 47, 253] : ['tcp', 'udp', 'tcp', 'udp', 'sctp', 'icmp', 47, 50, 253];
    const spec: FrameSpec = {
      ethSrc,
      ethDst,
      vlans,
      qinq,
      ip,
      l4: { proto: this.pick(protos), sport: this.pick([80, 443, 53, this.int(65536)]), dport: this.pick([80, 443, 53, this.int(65536)]), flags: this.int(256), type: this.int(256), code: this.int(4) },
      payload: this.int(80),
      frameLen: this.pick([0, 60, 64, 128]),
    };
    const encap = this.rnd();
    if (encap < 0.1) spec.mpls = Array.from({ length: 1 + this.int(4) }, () => this.int(1 << 20));
    else if (encap < 0.2) spec.nsh = { spi: this.int(1 << 24), si: this.int(256), ethernet: this.rnd() < 0.5 };
    return buildFrame(spec);
  }

  /** The next frame: every prefix of some frames, else a pool frame, mutated or not. */
  next(): Uint8Array {
    if (this.prefixes !== null) {
      const { frame, next } = this.prefixes;
      this.prefixes = next + 1 > frame.length ? null : { frame, next: next + 1 };
      return frame.subarray(0, next);
    }
    const base = this.pick(this.pool);
    const r = this.rnd();
    if (r < 0.02) {
      this.prefixes = { frame: base, next: 1 };
      return base.subarray(0, 0);
    }
    if (r < 0.3) return base;
    if (r < 0.45) return base.subarray(0, this.int(base.length));
    if (r < 0.75) {
      const copy = base.slice();
      for (let k = 0, n = 1 + this.int(4); k < n; k++) copy[this.int(copy.length)] = this.int(256);
      return copy;
    }
    if (r < 0.88) {
      // overwrite a type field where the parser reads one: the outer ethertype, a tag's inner type,
      // an IPv4 protocol or IPv6 next header
      const copy = base.slice();
      const at = this.pick([12, 16, 20, 23, 24, 32, 54]);
      if (at + 1 < copy.length) {
        const known = [0x0800, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x8847, 0x894f, 0x0806, this.int(65536)];
        const v = this.rnd() < 0.5 ? this.pick(known) : this.pick([0, 6, 17, 43, 44, 58, 60, 132, 255]) << 8;
        copy[at] = v >> 8;
        copy[at + 1] = v & 255;
      }
      return copy;
    }
    if (r < 0.995) return Uint8Array.from({ length: this.int(200) }, () => this.int(256));
    return Uint8Array.from({ length: MAX_FRAME - this.int(3) }, () => this.int(256));
  }
}

describe('frame fuzz through the Engine', () => {
  it(`${FRAMES.toLocaleString('en')} generated and mutated frames: no exception, every frame forwarded or dropped with a reason`, () => {
    const tables = compileTables(twoHop({ symmetric: true }).state);
    const sent = new Uint8Array(BATCH);
    const tx = { frames: 0 };
    const ports = new Map<string, FuzzPort>();
    const counters = new Counters();
    const engine = new Engine((name) => {
      const p = new FuzzPort(name, sent, tx);
      ports.set(name, p);
      return p;
    }, counters);
    engine.publish(tables);
    engine.breathe();
    const names = [...ports.keys()];
    expect(names.length).toBeGreaterThanOrEqual(10);
    const source = new FrameSource(0x5fc);
    const dropSum = () => counters.drops.reduce((a, b) => a + b, 0);
    let fed = 0;
    let forwarded = 0;
    while (fed < FRAMES) {
      const port = ports.get(names[(fed / RX_BATCH) % names.length | 0]!)!;
      const n = Math.min(RX_BATCH, FRAMES - fed);
      for (let k = 0; k < n; k++) port.queue.push(source.next());
      const rx0 = counters.events[Ctr.rx_packets]!;
      const drops0 = dropSum();
      const dropped0 = counters.events[Ctr.dropped]!;
      const tx0 = counters.events[Ctr.tx_packets]!;
      const txFrames0 = tx.frames;
      sent.fill(0);
      const processed = engine.breathe();
      const out = sent.reduce((a, b) => a + b, 0);
      const drops = dropSum() - drops0;
      const received = counters.events[Ctr.rx_packets]! - rx0;
      const dropped = counters.events[Ctr.dropped]! - dropped0;
      if (processed < n || out + drops !== processed || dropped !== drops || received !== n) {
        expect({ at: fed, received, out, drops, dropped }).toEqual({ at: fed, received: n, out: processed - drops, drops, dropped: drops });
      }
      expect(counters.events[Ctr.tx_packets]! - tx0).toBe(tx.frames - txFrames0);
      fed += n;
      forwarded += out;
    }
    expect(counters.drops[0]).toBe(0); // reason 'none' is never counted
    const byReason = Object.fromEntries(DROP_REASONS.map((r, i) => [r, counters.drops[i]!]).filter(([, v]) => (v as number) > 0));
    // the fuzz reached deep into the parser and the chain, not only the Ethernet check
    for (const reason of ['runt', 'truncated_vlan', 'too_many_vlan_tags', 'truncated_mpls', 'truncated_nsh', 'truncated_ipv4', 'bad_ipv4_header', 'bad_ipv4_length', 'truncated_ipv6', 'truncated_ipv6_ext', 'truncated_l4', 'bad_ipv6_header', 'bad_ipv6_length', 'bad_nsh', 'bad_tcp_header', 'to_sf_port', 'unknown_spi', 'hairpin']) {
      expect(byReason[reason] ?? 0, `no frame dropped as ${reason}: ${JSON.stringify(byReason)}`).toBeGreaterThan(0);
    }
    expect(counters.events[Ctr.classified]).toBeGreaterThan(1000); // new flows entering the chain (flow-record hits are not counted)
    expect(counters.events[Ctr.flooded]).toBeGreaterThan(1000);
    expect(forwarded).toBeGreaterThan(FRAMES / 10);
    expect(counters.events[Ctr.rx_packets]).toBe(FRAMES);
  });
});
