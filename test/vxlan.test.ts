/*
 * Chains across hosts in the userspace data path (issue 14, control/slice.ts + dataplane/vxlan.ts):
 * per-host slices of one plan, three real engines (replay sessions with SF loopback) joined by a
 * simulated underlay that carries what each engine sends on ul0 to the engine whose underlay MAC
 * it is addressed to. Checked against the same chain on one host: the server gets the same bytes,
 * every flow the same instances (selection is a function of the flow, not of the host), both
 * directions; the underlay frames read by tshark (VXLAN, the chain's MPLS / NSH with the node's
 * SPI and SI inside); slicePlan's lists and refusals; malformed tunnel frames as counted drops.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderTables } from '../src/control/drivers/userspace/render.js';
import type { State } from '../src/control/model.js';
import { buildPlan, type Plan } from '../src/control/plan.js';
import { hostsDown, multiHostProblems, slicePlan } from '../src/control/slice.js';
import { buildFrame } from '../src/dataplane/frames.js';
import { PcapWriter } from '../src/dataplane/io/pcapio.js';
import { ReplaySession } from '../src/dataplane/replay.js';
import { Ctr, Drop } from '../src/packet/counters.js';
import { prerequisites } from './support/prereq.js';
import { CLIENT_MAC, SERVER_MAC, twoHop } from './support/sfc-state.js';
import { tsharkFields } from './support/tshark.js';

const HOSTS = {
  h1: { ip: '192.168.50.1', mac: '02:00:00:aa:00:01' },
  h2: { ip: '192.168.50.2', mac: '02:00:00:aa:00:02' },
  h3: { ip: '192.168.50.3', mac: '02:00:00:aa:00:03' },
} as const;
type Host = keyof typeof HOSTS;
const UNDERLAY = 'ul0';

/** The lab chain (2 hops x 2 instances, symmetric): client and server on h1, hop 1 on h2, hop 2 on h3. */
function spread(opts: { correlation?: 'mpls' | 'nsh'; aware?: boolean } = {}): State {
  const s = twoHop({ symmetric: true });
  if (opts.correlation) s.state.port_chains[0].chain_parameters.correlation = opts.correlation;
  if (opts.aware) for (const pp of s.state.port_pairs.filter((p) => p.name.startsWith('pp1'))) pp.service_function_parameters.correlation = opts.correlation ?? 'mpls';
  for (const p of s.state.ports) p['binding:host_id'] = p.name.startsWith('sf1') ? 'h2' : p.name.startsWith('sf2') ? 'h3' : 'h1';
  return s.state;
}

function slice(plan: Plan, host: Host): Plan {
  return slicePlan(plan, { host, iface: UNDERLAY, ...HOSTS[host] }, new Map(Object.entries(HOSTS)));
}

const frame = (from: 'client' | 'server', sport: number, payload = 64) =>
  buildFrame({
    ethSrc: from === 'client' ? CLIENT_MAC : SERVER_MAC,
    ethDst: from === 'client' ? SERVER_MAC : CLIENT_MAC,
    ip: { ver: 4, src: from === 'client' ? '10.0.0.1' : '10.0.0.2', dst: from === 'client' ? '10.0.0.2' : '10.0.0.1', dontFragment: true },
    l4: { proto: 'tcp', sport: from === 'client' ? sport : 80, dport: from === 'client' ? 80 : sport },
    payload,
  });

/** Three engines joined by an underlay; `send` runs one frame to quiescence across all of them. */
class Cluster {
  readonly sessions: Record<Host, ReplaySession>;
  /** Every frame each host sent, by interface. */
  readonly sent: { host: Host; iface: string; frame: Uint8Array }[] = [];
  private readonly wire: { host: Host; frame: Uint8Array }[] = [];
  /** Instances each frame crossed (all hosts), in order. */
  hops: string[] = [];

  constructor(state: State) {
    const plan = buildPlan(state);
    const byMac = new Map(Object.entries(HOSTS).map(([h, a]) => [a.mac, h as Host]));
    const session = (host: Host) =>
      new ReplaySession(renderTables(slice(plan, host)), {
        sfLoopback: true,
        onTransmit: (iface, f) => {
          this.sent.push({ host, iface, frame: f });
          if (iface !== UNDERLAY) return;
          const to = byMac.get([...f.subarray(0, 6)].map((x) => x.toString(16).padStart(2, '0')).join(':'));
          if (to) this.wire.push({ host: to, frame: f });
        },
      });
    this.sessions = { h1: session('h1'), h2: session('h2'), h3: session('h3') };
  }

  /** Frames leaving any host's `out` while `f` arrives on `host`'s `iface` (run to quiescence). */
  send(host: Host, iface: string, f: Uint8Array, out = iface === 'cli0' ? 'srv0' : 'cli0'): Uint8Array[] {
    const from = this.sent.length;
    this.hops = [];
    this.wire.push({ host, frame: f });
    let first = true;
    while (this.wire.length > 0) {
      const next = this.wire.shift()!;
      const j = this.sessions[next.host].run(first ? iface : UNDERLAY, next.frame, 1e15);
      first = false;
      // (a hop shows on the host that selects and on the one that delivers)
      for (const h of j.hops) if (this.hops.at(-1) !== h) this.hops.push(h);
    }
    return this.sent.slice(from).filter((x) => x.iface === out).map((x) => x.frame);
  }

  counters(host: Host) {
    return this.sessions[host].counters;
  }

  close(): void {
    for (const s of Object.values(this.sessions)) s.close();
  }
}

/** The same chain on one host: what leaves srv0 / cli0 and the instances crossed. */
function oneHost(state: State, iface: string, f: Uint8Array) {
  const plan = buildPlan(state);
  const out: { iface: string; frame: Uint8Array }[] = [];
  const session = new ReplaySession(renderTables(plan), { sfLoopback: true, onTransmit: (i, x) => out.push({ iface: i, frame: x }) });
  const j = session.run(iface, f, 1e15);
  session.close();
  return { hops: j.hops, frames: out.filter((x) => x.iface === (iface === 'cli0' ? 'srv0' : 'cli0')).map((x) => x.frame) };
}

describe('slicePlan', () => {
  const plan = buildPlan(spread());

  it('gives the classifier host remote lists for hops elsewhere and the SF hosts arrive lists', () => {
    const [fwd] = slice(plan, 'h1').paths;
    expect(fwd.hops[0].remote).toEqual([{ op: 'push', encap: 'mpls', spi: 1, si: 254 }, { op: 'set_dst_mac' }, { op: 'tunnel', peer: -1 }]);
    expect(fwd.hops[0].arrive).toBeUndefined();
    const h2 = slice(plan, 'h2');
    expect(h2.paths[0].hops[0].arrive).toEqual([{ op: 'pop', encap: 'mpls' }, { op: 'set_dst_mac' }]);
    expect(h2.paths[0].hops[1].remote?.at(-1)).toEqual({ op: 'tunnel', peer: -1 });
    // The forward rule ends on h1 (the server): from h3 its end is a tunnel to h1 with the destination node's SI.
    const h3 = slice(plan, 'h3');
    const rule = h3.rules.find((r) => !r.reverse)!;
    expect(rule.end).toEqual([{ op: 'push', encap: 'mpls', spi: 1, si: 252 }, { op: 'tunnel', peer: h3.underlay!.peers.findIndex((p) => p.host === 'h1') }]);
    // Ports elsewhere are reached through the underlay and are no L2 destination here.
    const server = h3.ports.find((p) => p.name === 'server')!;
    expect(server).toMatchObject({ iface: UNDERLAY, sf: true });
    expect(slice(plan, 'h1').ports.find((p) => p.name === 'server')).toMatchObject({ iface: 'srv0', sf: false });
  });

  it('an SF-aware hop arriving from a tunnel gets the encapsulation again with the previous index', () => {
    const h2 = slice(buildPlan(spread({ correlation: 'nsh', aware: true })), 'h2');
    expect(h2.paths[0].hops[0].arrive).toEqual([{ op: 'pop', encap: 'nsh' }, { op: 'push', encap: 'nsh', spi: 1, si: 255 }, { op: 'set_dst_mac' }]);
    // Leaving the aware hop for h3: its encapsulation is replaced by the one for hop 2.
    expect(h2.paths[0].hops[1].remote?.slice(0, 2)).toEqual([{ op: 'pop', encap: 'nsh' }, { op: 'push', encap: 'nsh', spi: 1, si: 253 }]);
  });

  it('a host treats as down the instances of hosts without an agent record and those other agents report down', () => {
    const ids = (names: string[]) => names.map((n) => plan.members.find((m) => m.name === n)!.id).sort();
    const agents = new Map<string, Record<string, unknown>>([['h1', {}], ['h2', { down: ids(['pp12']) }]]);
    // h3 has no record (its agent died): pp21 and pp22 are down for h1; h2 reports pp12 down; h1's own check found nothing.
    expect([...hostsDown(plan, 'h1', new Set(), agents)].sort()).toEqual(ids(['pp12', 'pp21', 'pp22']));
    agents.set('h3', { down: 'garbage' });
    expect([...hostsDown(plan, 'h1', new Set(ids(['pp11'])), agents)].sort()).toEqual(ids(['pp11', 'pp12']));
  });

  it('refuses a port pair split over two hosts, and taps across hosts', () => {
    const state = spread();
    state.ports.find((p) => p.name === 'sf11-out')!['binding:host_id'] = 'h3';
    expect(multiHostProblems(buildPlan(state)).map((e) => e.message)).toEqual([
      "port pair pp11: ingress is on host 'h2' and egress on host 'h3'; a port pair's ports must be on one host",
    ]);
    expect(() => slice(buildPlan(state), 'h1')).toThrow(/pp11/);
    const tapped = spread();
    tapped.port_pair_groups[0].tap_enabled = true;
    expect(multiHostProblems(buildPlan(tapped))[0]).toMatchObject({ status: 400, message: expect.stringMatching(/ppg1: tap groups/) });
  });
});

describe('three hosts joined by VXLAN, against one host', () => {
  for (const correlation of ['mpls', 'nsh'] as const) {
    it(`${correlation}: the server and the client get the one-host bytes, every flow on the one-host instances`, () => {
      const state = spread({ correlation });
      const cluster = new Cluster(state);
      const used = new Set<string>();
      try {
        for (let sport = 40000; sport < 40040; sport++) {
          const f = frame('client', sport);
          const single = oneHost(state, 'cli0', f);
          const got = cluster.send('h1', 'cli0', f);
          expect(got).toEqual(single.frames);
          expect(got).toHaveLength(1);
          expect(cluster.hops).toEqual(single.hops);
          cluster.hops.forEach((h) => used.add(h));
          // The reply crosses the same instances in reverse order (symmetric, by hash alone: the hosts share no state).
          const r = frame('server', sport);
          const back = cluster.send('h1', 'srv0', r);
          expect(back).toEqual(oneHost(state, 'srv0', r).frames);
          expect(cluster.hops).toEqual([...single.hops].reverse());
        }
        expect([...used].sort()).toEqual(['pp11', 'pp12', 'pp21', 'pp22']);
        expect(cluster.counters('h2').events[Ctr.tunnel_rx]).toBe(80);
        expect(cluster.counters('h1').events[Ctr.tunnel_tx]).toBe(80);
        for (const h of ['h1', 'h2', 'h3'] as const) expect(cluster.counters(h).events[Ctr.dropped]).toBe(0);
      } finally {
        cluster.close();
      }
    });
  }

  it('a frame the tunnel pushes over the underlay MTU is dropped and its sender told the MTU that fits', () => {
    const cluster = new Cluster(spread());
    try {
      const out = cluster.send('h1', 'cli0', frame('client', 41000, 1500 - 20 - 20), 'cli0');
      const c = cluster.counters('h1');
      expect(c.drops[Drop.frame_too_big]).toBe(1);
      expect(c.events[Ctr.icmp_too_big]).toBe(1);
      // The ICMP error goes back out of cli0 (h1's own port), with 1500 - 50 (VXLAN) - 4 (MPLS).
      expect(out).toHaveLength(1);
      expect(new DataView(out[0].buffer, out[0].byteOffset).getUint16(14 + 20 + 6)).toBe(1500 - 54);
    } finally {
      cluster.close();
    }
  });
});

const haveTshark = prerequisites('VXLAN dissected by tshark', { commands: ['tshark'] });

describe.skipIf(!haveTshark)('the underlay frames as tshark reads them', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sfc-vxlan-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const correlation of ['mpls', 'nsh'] as const) {
    it(`${correlation}: VXLAN on UDP 4789, VNI = path, the instance's MAC inside, SPI and the next node's SI`, async () => {
      const cluster = new Cluster(spread({ correlation }));
      try {
        cluster.send('h1', 'cli0', frame('client', 40001));
        cluster.send('h1', 'srv0', frame('server', 40001));
        const underlay = cluster.sent.filter((x) => x.iface === UNDERLAY);
        const file = join(dir, `${correlation}.pcap`);
        const w = new PcapWriter(file);
        for (const x of underlay) w.write(x.frame, 1e15);
        await w.close();
        const fields = ['ip.src', 'ip.dst', 'udp.dstport', 'vxlan.vni', 'eth.dst', 'mpls.label', 'nsh.spi', 'nsh.si', 'tcp.srcport'];
        const rows = tsharkFields(file, fields, 'l');
        const outer = tsharkFields(file, ['ip.src', 'ip.dst', 'eth.dst'], 'f');
        // forward: h1 -> h2 (hop 1), h2 -> h3 (hop 2), h3 -> h1 (end); reverse: h1 -> h3, h3 -> h2, h2 -> h1.
        const hosts = (ip: string) => Object.entries(HOSTS).find(([, a]) => a.ip === ip)![0];
        expect(outer.map((r) => `${hosts(r['ip.src'])}>${hosts(r['ip.dst'])}`)).toEqual(['h1>h2', 'h2>h3', 'h3>h1', 'h1>h3', 'h3>h2', 'h2>h1']);
        expect(outer.map((r) => r['eth.dst'])).toEqual(['h2', 'h3', 'h1', 'h3', 'h2', 'h1'].map((h) => HOSTS[h as Host].mac));
        expect(rows.map((r) => r['udp.dstport'])).toEqual(Array(6).fill('4789'));
        expect(rows.map((r) => Number(r['vxlan.vni']))).toEqual([2, 2, 2, 3, 3, 3]);
        const si = [254, 253, 252, 254, 253, 252];
        if (correlation === 'mpls') expect(rows.map((r) => Number(r['mpls.label']))).toEqual(si.map((x) => (1 << 8) | x));
        else {
          expect(rows.map((r) => Number(r['nsh.spi']))).toEqual(Array(6).fill(1));
          expect(rows.map((r) => Number(r['nsh.si']))).toEqual(si);
        }
        // Inside, a hop's frame is addressed to the instance the sender selected (an sf<hop><k> ingress
        // MAC forward, egress MAC reverse): the Ethernet header after VXLAN's (NSH's outer one).
        const inner = execFileSync('tshark', ['-r', file, '-T', 'fields', '-E', 'occurrence=a', '-e', 'eth.dst'], { encoding: 'utf8' })
          .trim()
          .split('\n')
          .map((line) => line.split(',')[1]);
        expect(inner[0]).toMatch(/^02:00:00:00:1[12]:01$/);
        expect(inner[1]).toMatch(/^02:00:00:00:2[12]:01$/);
        expect(inner[3]).toMatch(/^02:00:00:00:2[12]:02$/);
        expect(rows.every((r) => r['tcp.srcport'] !== '')).toBe(true);
      } finally {
        cluster.close();
      }
    });
  }
});

describe('malformed tunnel frames are counted drops', () => {
  /** A valid h1 -> h2 tunnel frame for hop 1 (taken from a real run), and h2's engine. */
  function setup() {
    const cluster = new Cluster(spread());
    cluster.send('h1', 'cli0', frame('client', 40001));
    const good = cluster.sent.find((x) => x.host === 'h1' && x.iface === UNDERLAY)!.frame;
    return { cluster, good };
  }
  const drops = (cluster: Cluster, f: Uint8Array) => {
    const s = cluster.sessions.h2;
    const before = [...s.counters.drops];
    s.run(UNDERLAY, f, 1e15);
    return [...s.counters.drops].map((n, k) => n - before[k]).flatMap((n, k) => (n > 0 ? [k] : []));
  };
  const edit = (f: Uint8Array, at: number, bytes: number[]) => {
    const x = Uint8Array.from(f);
    x.set(bytes, at);
    return x;
  };

  it('each kind of damage has its reason, and nothing throws', () => {
    const { cluster, good } = setup();
    try {
      expect(drops(cluster, good)).toEqual([]);
      const UDP = 14 + 20;
      expect(drops(cluster, edit(good, UDP + 2, [0x12, 0xb6]))).toEqual([Drop.underlay_not_vxlan]); // UDP 4790
      expect(drops(cluster, edit(good, 14 + 16, [192, 168, 50, 9]))).toEqual([Drop.underlay_not_vxlan]); // not our address
      expect(drops(cluster, edit(good, UDP + 8, [0x00]))).toEqual([Drop.bad_vxlan]); // I flag clear
      expect(drops(cluster, edit(good, UDP + 4, [0x00, 0x10]))).toEqual([Drop.bad_vxlan]); // UDP length too short for a frame
      expect(drops(cluster, edit(good, UDP + 12, [0, 0, 7]))).toEqual([Drop.unknown_tunnel_node]); // VNI of no path
      const MPLS = UDP + 16 + 14;
      const si253 = Uint8Array.from(good);
      new DataView(si253.buffer).setUint32(MPLS, (((1 << 8) | 253) << 12) | 0x100 | 253);
      expect(drops(cluster, good)).toEqual([]);
      expect(drops(cluster, si253)).toEqual([Drop.unknown_tunnel_node]); // SI 253: hop 2 has no instance on h2
      expect(drops(cluster, edit(good, UDP + 16, [2, 0, 0, 0, 0x21, 1]))).toEqual([Drop.unknown_tunnel_node]); // hop 2's instance MAC
      expect(drops(cluster, good.subarray(0, UDP + 16 + 10))).toEqual([Drop.bad_ipv4_length]); // cut short: the outer IPv4 says so
      const short = edit(good.subarray(0, UDP + 16 + 10), 14 + 2, [0, 20 + 8 + 8 + 10]);
      short.set([0, 8 + 8 + 10], UDP + 4);
      expect(drops(cluster, short)).toEqual([Drop.bad_vxlan]); // consistent lengths, but no room for an inner Ethernet header
      // Random damage anywhere after the outer Ethernet header: a counted drop or a delivery, never an exception.
      let seed = 7;
      const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) & 0xff;
      for (let n = 0; n < 2000; n++) {
        const x = Uint8Array.from(good.subarray(0, 14 + (rnd() % (good.length - 14)) + 1));
        for (let k = 0; k < 4; k++) x[14 + (rnd() * 7) % (x.length - 14)] = rnd();
        expect(() => cluster.sessions.h2.run(UNDERLAY, x, 1e15)).not.toThrow();
      }
    } finally {
      cluster.close();
    }
  });
});
