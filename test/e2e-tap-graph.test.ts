/*
 * Tap groups and service graphs live (issue "all of networking-sfc in the userspace dataplane"),
 * in the netns lab with the compiled dataplane on afpacket.
 *
 * Tap: `sfc lab up --tap` adds a tap instance (namespace L-tap, whose nftables counters count what
 * it receives and forward nothing) as a tap group right after hop 1 of the lab's symmetric 2-hop
 * chain. Every frame leaving hop 1 (forward) and hop 2 (reverse: the tap's upstream node on the
 * way back) must reach the tap once, counted three ways: the tap's own counter, the SFs' nftables
 * egress counters (IPv4 frames they sent into the dataplane; their IPv6 MLD reports, sent whenever
 * the kernel likes, are no chain's traffic), the dataplane's /metrics. What the tap sends
 * (mausezahn) is dropped as from_tap.
 *
 * Graph: `sfc lab up --graph` makes three one-hop chains of aware SFs (Open vSwitch; MPLS and NSH)
 * and a service graph pc1 -> {pc2, pc3}. networking-sfc refuses overlapping classifiers on different
 * chains, so pc1's SF is NAT-like (rewrites the UDP source port) and pc2 / pc3 match the
 * translated port plus their own destination port. Each SF's OVS only returns its own chain's label
 * (chain_id << 8 | 255) / SPI (chain_id) at SI 255, so its flow counter says which chains a flow crossed. Deleting the graph
 * through the running server's API makes pc1 deliver directly.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { checkOvsInstalled, ovsMissing } from '../src/control/drivers/ovs/daemon.js';
import { nativeAvailable } from '../src/dataplane/io/native.js';
import { backendNamed } from '../src/dataplane/io/registry.js';
import { awareSfFlows, awareSfPackets } from '../src/lab/aware-sf.js';
import { distFile, LabDataplane, labUpFor, labUpForOvs, metric, startTraffic, type Sample } from '../src/lab/harness.js';
import { addMatchCounter, chainConfig, describeLab, GRAPH_PORTS, labDown, matchedFrames, netnsExec, SERVER, TAP, tapReceived, type Lab } from '../src/lab/topology.js';
import type { TcpClientResult, TcpServerResult, UdpRecvResult } from '../src/lab/traffic.js';
import { prerequisites } from './support/prereq.js';

const TCP_PORT = 5001;

function requirements(ovs: boolean): () => string | null {
  return () => {
    try {
      distFile('cli.js');
      distFile('lab/traffic.js');
      if (ovs) checkOvsInstalled();
      backendNamed('afpacket').load();
    } catch (e) {
      return (e as Error).message;
    }
    return nativeAvailable() ? null : 'the native addon is not built (npm run build:native)';
  };
}

const runTap = prerequisites('e2e tap group', { root: true, commands: ['ip', 'nft', 'ping', 'mausezahn'], check: requirements(false) });
const runGraph = prerequisites('e2e service graph (Open vSwitch SFs)', {
  root: true,
  commands: ['ip', 'ovs-vsctl', 'ovs-ofctl', 'ovsdb-tool'],
  check: requirements(true),
});

/** A per-instance metric of the tap's port pair (whatever the label naming the pair is called). */
const ofTapPair = (m: Sample[], name: string) =>
  m.filter((x) => x.name === name && x.labels.chain === 'pc1' && Object.values(x.labels).includes('pptap')).reduce((a, x) => a + x.value, 0);

const delta = (before: Sample[], after: Sample[], name: string, labels: Record<string, string> = {}) =>
  metric(after, name, labels) - metric(before, name, labels);

/** A kernel interface counter (/sys/class/net/<ifname>/statistics/<what>) inside `ns`. */
async function ifCounter(ns: string, ifname: string, what: 'tx_packets' | 'rx_packets' | 'tx_dropped'): Promise<number> {
  const { stdout } = await netnsExec(ns, ['cat', `/sys/class/net/${ifname}/statistics/${what}`]);
  return Number(stdout.trim());
}

/** Poll `read` until `done` holds of its value or 5 s passed; the last value either way. */
async function settle<T>(read: () => Promise<T>, done: (v: T) => boolean): Promise<T> {
  let v = await read();
  for (const end = Date.now() + 5000; !done(v) && Date.now() < end; v = await read()) await new Promise((r) => setImmediate(r));
  return v;
}

/** `count` UDP datagrams from the client (source port `sport`) to the server's `dport`; the receiver's result. */
async function udp(lab: Lab, dport: number, count: number, sport: number): Promise<UdpRecvResult> {
  const recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:${dport}`, '--seconds', '10', '--idle', '1']);
  await recv.listening;
  const send = await startTraffic(lab, lab.clientNs, ['udp-send', '--connect', `${SERVER.ip}:${dport}`, '--sport', String(sport), '--count', String(count), '--pps', '1000']);
  await send.result;
  return recv.result;
}

describe('tap and graph labs (no system calls)', () => {
  it('places the tap group after hop 1 and the tap port on tap0; refuses a tap without hops', () => {
    const config = parse(chainConfig(describeLab({ name: 'x', hops: 3, instances: 1, tap: true }))) as {
      ports: { name: string; mac_address: string; 'binding:profile': { interface: string } }[];
      port_pair_groups: { name: string; port_pairs: string[]; tap_enabled?: boolean }[];
      port_chains: { port_pair_groups: string[] }[];
    };
    expect(config.ports.at(-1)).toEqual({ name: 'tap', mac_address: TAP.mac, 'binding:profile': { interface: 'tap0' } });
    expect(config.port_pair_groups.find((g) => g.tap_enabled)).toEqual({ name: 'ppgtap', port_pairs: ['pptap'], tap_enabled: true });
    expect(config.port_chains[0].port_pair_groups).toEqual(['ppg1', 'ppgtap', 'ppg2', 'ppg3']);
    expect(() => describeLab({ hops: 0, tap: true })).toThrow(/a tap needs hops >= 1/);
  });

  it('makes each graph hop its own one-hop chain; hop 1 translates the UDP source port and each SF answers its chain\'s label', () => {
    const lab = describeLab({ name: 'x', hops: 3, instances: 1, sfCorrelation: 'mpls', graph: true });
    expect(lab.symmetric).toBe(false);
    const config = parse(chainConfig(lab)) as { port_chains: { name: string; chain_id: number; port_pair_groups: string[] }[]; service_graphs: unknown[] };
    expect(config.port_chains.map((c) => [c.name, c.chain_id, c.port_pair_groups])).toEqual([
      ['pc1', 1, ['ppg1']],
      ['pc2', 2, ['ppg2']],
      ['pc3', 3, ['ppg3']],
    ]);
    expect(config.service_graphs).toEqual([{ name: 'sg', port_chains: { pc1: ['pc2', 'pc3'] } }]);
    const [sf1, sf2] = lab.sfs;
    expect(awareSfFlows(lab, sf1, 'mpls')).toEqual([
      `priority=10,in_port=1,mpls,mpls_label=${(1 << 8) | 255},mpls_bos=1,actions=pop_mpls:0x0800,resubmit(,1)`,
      `table=1,priority=10,udp,actions=set_field:${GRAPH_PORTS.translated}->udp_src,push_mpls:0x8847,set_field:${(1 << 8) | 254}->mpls_label,set_field:254->mpls_ttl,set_field:02:00:00:00:11:02->eth_src,output:2`,
      'priority=0,actions=drop',
    ]);
    expect(awareSfFlows(lab, sf2, 'mpls')[0]).toMatch(new RegExp(`^priority=10,in_port=1,mpls,mpls_label=${(2 << 8) | 255},`));
    const nsh = describeLab({ name: 'x', hops: 3, instances: 1, sfCorrelation: 'nsh', graph: true });
    expect(awareSfFlows(nsh, nsh.sfs[0]!, 'nsh')).toEqual([
      'priority=10,in_port=1,dl_type=0x894f,nsh_mdtype=1,nsh_spi=1,nsh_si=255,actions=decap(),decap(),resubmit(,1)',
      `table=1,priority=10,udp,actions=set_field:${GRAPH_PORTS.translated}->udp_src,encap(nsh(md_type=1)),set_field:1->nsh_spi,set_field:254->nsh_si,` +
        'encap(ethernet),set_field:02:00:00:00:11:01->eth_dst,set_field:02:00:00:00:11:02->eth_src,output:2',
      'priority=0,actions=drop',
    ]);
    expect(awareSfFlows(nsh, nsh.sfs[2]!, 'nsh')[0]).toMatch(/^priority=10,in_port=1,dl_type=0x894f,nsh_mdtype=1,nsh_spi=3,nsh_si=255,/);
    expect(() => describeLab({ hops: 3, graph: true })).toThrow(/an SF correlation/);
    expect(() => describeLab({ hops: 2, sfCorrelation: 'mpls', graph: true })).toThrow(/needs hops 3/);
    expect(() => describeLab({ hops: 3, sfCorrelation: 'mpls', graph: true, tap: true })).toThrow(/no tap/);
  });
});

/** Each test runs on both drivers: the userspace dataplane (afpacket) and Open vSwitch (ovs). */
const DRIVERS = ['userspace', 'ovs'] as const;
type Driver = (typeof DRIVERS)[number];
const onDriver = (driver: Driver) => (driver === 'ovs' ? 'ovs driver' : 'afpacket');
/** The lab for `driver` and the dataplane's start options (`args`: more `sfc serve` options). */
const labFor = (driver: Driver, opts: Parameters<typeof labUpForOvs>[0]) => (driver === 'ovs' ? labUpForOvs(opts) : labUpFor(backendNamed('afpacket'), opts));
const startOn = (driver: Driver, config: string, args?: string[]) => (driver === 'ovs' ? { driver, config, args } : { backend: 'afpacket' as const, config, args });

for (const driver of DRIVERS) describe.skipIf(!runTap || (driver === 'ovs' && !!ovsMissing()))(`a tap instance after hop 1 of a symmetric 2-hop chain, ${onDriver(driver)}`, () => {
  const LAB = `sfct-tap${driver === 'ovs' ? 'o' : ''}${process.pid}`;
  const SENT = 'sfct_sent';
  const FROM_TAP = 'sfct_from_tap';
  const FROM_TAP_IP = '10.0.0.99';
  let lab: Lab;
  let dp: LabDataplane;

  /** The SF interfaces whose frames the tap must copy: hop 1's out0 (forward) and hop 2's in0 (reverse). */
  const tapUpstream = () => lab.sfs.map((s) => ({ ns: s.ns, ifname: s.hop === 1 ? 'out0' : 'in0' }));
  /** IPv4 frames the SFs sent into the dataplane through those interfaces (not their IPv6 MLD reports, which no chain carries). */
  const leftTapUpstream = async () => {
    const counts = await Promise.all(tapUpstream().map((u) => matchedFrames(u.ns, SENT)));
    return counts.reduce((a, b) => a + b, 0);
  };
  /** The dataplane's side of those links (where it reads what the SFs sent). */
  const tapUpstreamPorts = () => lab.sfs.map((s) => (s.hop === 1 ? s.egressIf : s.ingressIf));
  /** The dataplane's packet sockets in its namespace (`ss -0 -m`): each one's interface and dropped frames. */
  const packetSockets = async () => {
    const { stdout } = await netnsExec(lab.dpNs, ['ss', '-0', '-m', '-p'], { check: false });
    return { text: stdout, drops: [...stdout.matchAll(/\*:(\S+)\s.*skmem:\(.*\bd(\d+)\)/g)].map((m) => ({ ifname: m[1], drops: Number(m[2]) })) };
  };
  /**
   * Frames lost between the SFs and the dataplane's pipeline, in the kernel: the SFs' veths full
   * (tx_dropped), the packet sockets' receive buffers full (Open vSwitch: their drop counts; the
   * userspace backends: rx_kernel_drops). Counted, not copied: TCP sends them again.
   */
  const kernelLosses = async (m: Sample[]) => {
    const ports = new Set(tapUpstreamPorts());
    const veths = await Promise.all(tapUpstream().map((u) => ifCounter(u.ns, u.ifname, 'tx_dropped')));
    const sockets = (await packetSockets()).drops.filter((x) => ports.has(x.ifname)).reduce((a, x) => a + x.drops, 0);
    const ring = [...ports].reduce((a, ifname) => a + metric(m, 'sfc_interface_io_total', { interface: ifname, counter: 'rx_kernel_drops' }), 0);
    return veths.reduce((a, b) => a + b, 0) + sockets + ring;
  };
  /** Where frames could have gone missing, for a failure's message: kernel, packet-socket and dataplane drops, the dataplane's events. */
  const lossReport = async (m: Sample[]) => {
    const lossy = (x: Sample) =>
      x.name === 'sfc_drops_total' || x.name === 'sfc_packets_total' || (x.name === 'sfc_interface_io_total' && /too_big|malformed|drops|failed|busy/.test(x.labels.counter));
    const drops = m.filter((x) => lossy(x) && x.value > 0).map((x) => `${x.name}${JSON.stringify(x.labels)} ${x.value}`);
    // (Open vSwitch's own receive drops and errors per port, as its database last recorded them)
    const db = `--db=unix:${join(LabDataplane.ovsDir(lab), 'db.sock')}`;
    const ovs = driver === 'ovs' ? (await netnsExec(lab.dpNs, ['ovs-vsctl', db, '--columns=name,statistics', 'list', 'Interface'], { check: false })).stdout : '';
    const ovsStats = ovs.split('\n').filter((l) => /^(name|statistics)\b/.test(l)).join('\n');
    return `kernel losses ${await kernelLosses(m)}\n${drops.join('\n')}\n${ovsStats}\npacket sockets of the dataplane:\n${(await packetSockets()).text}`;
  };
  const tapCopies = (m: Sample[]) => metric(m, 'sfc_packets_total', { event: 'tap_copies' });
  const instanceCopies = (before: Sample[], after: Sample[]) => ofTapPair(after, 'sfc_instance_packets_total') - ofTapPair(before, 'sfc_instance_packets_total');
  const lostCopies = (before: Sample[], after: Sample[]) => delta(before, after, 'sfc_packets_total', { event: 'tap_copies_lost' });

  beforeAll(async () => {
    await labDown(LAB);
    lab = await labFor(driver, { name: LAB, hops: 2, instances: 2, tap: true });
    // No health probes: they leave the SFs too (and are consumed, not copied), and the accounting
    // below compares every frame leaving the tap's upstream SF with the copies.
    dp = await LabDataplane.start(lab, startOn(driver, lab.configPath, ['--health-interval', '0']));
    for (const u of tapUpstream()) await addMatchCounter(u.ns, SENT, 'egress', u.ifname, 'ether type ip');
    await addMatchCounter(lab.serverNs, FROM_TAP, 'ingress', 'eth0', `ip saddr ${FROM_TAP_IP}`);
    // Resolve the endpoints' neighbours now (ARP broadcasts are flooded to the tap port as well).
    const warm = await netnsExec(lab.clientNs, ['ping', '-c', '1', '-W', '2', SERVER.ip], { check: false });
    expect(warm.code, warm.stdout).toBe(0);
  }, 60_000);

  afterAll(async () => {
    await dp?.stop();
    await labDown(LAB);
  });

  it('gets one copy of each UDP datagram leaving hop 1 (one-way flows): as many as the client sent', async () => {
    const COUNT = 200;
    const tapBefore = await tapReceived(lab);
    const before = await dp.metrics();
    const r = await udp(lab, 6000, COUNT, 20000);
    expect(r.received, JSON.stringify(r)).toBe(COUNT);
    const tap = await settle(() => tapReceived(lab), (t) => t.toTap.packets - tapBefore.toTap.packets >= COUNT);
    const after = await settle(() => dp.metrics(), (m) => tapCopies(m) - tapCopies(before) >= COUNT && instanceCopies(before, m) >= COUNT);
    expect({
      tap: tap.toTap.packets - tapBefore.toTap.packets,
      tapCopies: tapCopies(after) - tapCopies(before),
      instance: instanceCopies(before, after),
      lost: lostCopies(before, after),
    }).toEqual({ tap: COUNT, tapCopies: COUNT, instance: COUNT, lost: 0 });
  }, 30_000);

  // Under TCP bulk load the receive batches fill up; a copy needs a free slot of the same batch
  // (Batch.copySlot), which is why a batch with taps receives only half a batch of frames. Every
  // frame leaving the tap's upstream node must reach the tap: none lost (tap_copies_lost stays 0).
  it('carries TCP byte-exact; every frame leaving the tap\'s upstream node, both ways, reaches the tap (tap, SF and dataplane counters agree)', async () => {
    const FLOWS = 8;
    const sfBefore = await leftTapUpstream();
    const tapBefore = await tapReceived(lab);
    const before = await dp.metrics();
    const lossesBefore = await kernelLosses(before);
    const server = await startTraffic<TcpServerResult>(lab, lab.serverNs, ['tcp-server', '--listen', `${SERVER.ip}:${TCP_PORT}`, '--flows', String(FLOWS), '--timeout', '20']);
    await server.listening;
    const client = await startTraffic<TcpClientResult>(lab, lab.clientNs, [
      'tcp-client', '--connect', `${SERVER.ip}:${TCP_PORT}`, '--flows', String(FLOWS), '--bytes', '200000', '--timeout', '20',
    ]);
    const [c, s] = await Promise.all([client.result, server.result]);
    expect(c.ok, JSON.stringify(c.flows.filter((f) => !f.ok))).toBe(true);
    expect(s.flows.map((f) => f.ok)).toEqual(Array(FLOWS).fill(true));

    const sfLeft = (await leftTapUpstream()) - sfBefore;
    expect(sfLeft).toBeGreaterThan(FLOWS * 2);
    const handled = (m: Sample[]) => tapCopies(m) - tapCopies(before) + lostCopies(before, m);
    const after = await settle(() => dp.metrics(), (m) => handled(m) >= sfLeft);
    // (what the kernel lost on the way never reached the dataplane: TCP sent it again)
    const lostOnTheWay = (await kernelLosses(after)) - lossesBefore;
    const copied = tapCopies(after) - tapCopies(before);
    const tap = await settle(() => tapReceived(lab), (t) => t.toTap.packets - tapBefore.toTap.packets >= copied);
    const received = { packets: tap.toTap.packets - tapBefore.toTap.packets, bytes: tap.toTap.bytes - tapBefore.toTap.bytes };
    expect({ handled: handled(after), tap: received.packets, instance: instanceCopies(before, after), lost: lostCopies(before, after) }, await lossReport(after)).toEqual({
      handled: sfLeft - lostOnTheWay,
      tap: copied,
      instance: copied,
      lost: 0,
    });
    // The dataplane counts whole frames, nftables from the IP header on.
    const bytes = ofTapPair(after, 'sfc_instance_bytes_total') - ofTapPair(before, 'sfc_instance_bytes_total');
    expect(bytes).toBe(received.bytes + 14 * received.packets);
    console.log(`tap: ${copied} of ${sfLeft} frames leaving its upstream node copied, ${lostCopies(before, after)} counted as lost copies, ${lostOnTheWay} lost in the kernel on the way`);
  }, 60_000);

  it('drops and counts (from_tap) what the tap sends; nothing reaches the server', async () => {
    const FRAMES = 5;
    const before = await dp.metrics();
    await netnsExec(lab.tapNs!, [
      'mausezahn', 'eth0', '-q', '-c', String(FRAMES), '-d', '1msec', '-a', TAP.mac, '-b', SERVER.mac, '-A', FROM_TAP_IP, '-B', SERVER.ip, '-t', 'udp', 'sp=7,dp=9',
    ]);
    expect(await ifCounter(lab.tapNs!, 'eth0', 'tx_packets')).toBe(FRAMES);
    const fromTap = (m: Sample[]) => delta(before, m, 'sfc_drops_total', { reason: 'from_tap' });
    const after = await settle(() => dp.metrics(), (m) => fromTap(m) >= FRAMES);
    expect(fromTap(after)).toBe(FRAMES);
    expect(await matchedFrames(lab.serverNs, FROM_TAP)).toBe(0);
  }, 30_000);
});

for (const driver of DRIVERS) for (const correlation of ['mpls', 'nsh'] as const) describe.skipIf(!runGraph)(`a service graph pc1 -> {pc2, pc3} of one-hop ${correlation} chains (Open vSwitch SFs), ${onDriver(driver)}`, () => {
  const LAB = `sfct-sg${correlation}${driver === 'ovs' ? 'o' : ''}${process.pid}`;
  let lab: Lab;
  let dp: LabDataplane;

  /** Packets each chain's SF (hop h = chain h) returned so far. */
  const sfPackets = async () => Promise.all(lab.sfs.map(async (s) => (await awareSfPackets(lab, s)).forward));

  /** `a` datagrams to GRAPH_PORTS.pc2 and `b` to .pc3: what arrived, what each chain's SF returned, the metrics around. */
  async function branchRun(a: number, b: number) {
    const ovsBefore = await sfPackets();
    const before = await dp.metrics();
    const toPc2 = await udp(lab, GRAPH_PORTS.pc2, a, GRAPH_PORTS.source);
    const toPc3 = await udp(lab, GRAPH_PORTS.pc3, b, GRAPH_PORTS.source);
    const after = await dp.metrics();
    const ovs = (await sfPackets()).map((x, i) => x - ovsBefore[i]!);
    return { toPc2, toPc3, ovs, before, after };
  }

  beforeAll(async () => {
    await labDown(LAB);
    lab = await labFor(driver, { name: LAB, hops: 3, instances: 1, sfCorrelation: correlation, graph: true });
    dp = await LabDataplane.start(lab, startOn(driver, lab.configPath));
  }, 60_000);

  afterAll(async () => {
    await dp?.stop();
    await labDown(LAB);
  });

  it('branches: UDP to port pc2 crosses pc1 then pc2, to port pc3 crosses pc1 then pc3; everything arrives translated', async () => {
    const [A, B] = [60, 40];
    const { toPc2, toPc3, ovs, before, after } = await branchRun(A, B);
    expect([toPc2.received, toPc3.received]).toEqual([A, B]);
    // Every datagram left pc1's SF with the translated source port (pc1's classifier could not have matched that).
    expect([...toPc2.flows, ...toPc3.flows].map((f) => f.flow)).toEqual([`10.0.0.1:${GRAPH_PORTS.translated}`, `10.0.0.1:${GRAPH_PORTS.translated}`]);
    // Each chain's SF only answers its own label: SF 1 saw both flows, SF 2 only A, SF 3 only B.
    expect(ovs).toEqual([A + B, A, B]);
    expect(delta(before, after, 'sfc_packets_total', { event: 'handed_off' })).toBe(A + B);
    expect([1, 2, 3].map((k) => delta(before, after, 'sfc_hop_packets_total', { chain: `pc${k}`, hop: '1' }))).toEqual([A + B, A, B]);
    for (const reason of ['bad_si', 'unknown_spi', 'missing_encap', 'bad_encap', 'to_sf_port']) {
      expect(delta(before, after, 'sfc_drops_total', { reason }), reason).toBe(0);
    }
  }, 60_000);

  it('deleting the graph through the API restores the chains: pc1 delivers directly, pc2 and pc3 see nothing', async () => {
    const { service_graphs } = await dp.call<{ service_graphs: { id: string; name: string }[] }>('GET', '/v2.0/sfc/service_graphs');
    expect(service_graphs.map((g) => g.name)).toEqual(['sg']);
    await dp.call('DELETE', `/v2.0/sfc/service_graphs/${service_graphs[0]!.id}`);
    const [A, B] = [30, 20];
    const { toPc2, toPc3, ovs, before, after } = await branchRun(A, B);
    expect([toPc2.received, toPc3.received]).toEqual([A, B]);
    expect(ovs).toEqual([A + B, 0, 0]);
    expect(delta(before, after, 'sfc_packets_total', { event: 'handed_off' })).toBe(0);
  }, 60_000);
});
