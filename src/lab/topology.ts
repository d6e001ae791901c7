/*
 * The network-namespace lab: a client, a server and service-function (SF) "VMs" around one
 * dataplane namespace, built from veth pairs so that real Linux TCP/IP stacks sit at every end.
 *
 *   L-client eth0 (02:00:00:00:00:01, 10.0.0.1/24, fd00::1/64) <-> cli0      ┐
 *   L-server eth0 (02:00:00:00:00:02, 10.0.0.2/24, fd00::2/64) <-> srv0      │ in L-dp: the
 *   L-sf<h><k> in0  (02:00:00:00:<h><k>:01)                    <-> sf<h><k>i │ dataplane's
 *   L-sf<h><k> out0 (02:00:00:00:<h><k>:02)                    <-> sf<h><k>e ┘ interfaces
 *
 * Names and MACs are fixed: examples/two-hop.yaml and the generated chain config use them.
 *
 * - Each SF namespace routes like an SF VM: forwarding on, rp_filter off, no addresses;
 *   10.0.0.2/32 and fd00::2/128 via out0, 10.0.0.1/32 and fd00::1/128 via in0 (reverse traffic),
 *   each a permanent neighbour entry holding the real endpoint's MAC (server behind out0, client
 *   behind in0). A forwarded frame leaves with dst = that endpoint's MAC, src = the SF port's own
 *   MAC, TTL / hop limit decremented: two hops -> TTL 62 at the server. A route-mode SF drops
 *   frames not addressed to its MAC, so a wrong rewrite shows up as loss.
 * - SF-aware hops (sfCorrelation mpls|nsh, awareHops): those SF namespaces are L2 only (no IPv6,
 *   no forwarding, no routes) and run their own Open vSwitch (aware-sf.ts) that takes the chain's
 *   encapsulation on in0, decrements the index and sends the frame back on out0 (and the reverse
 *   for symmetric chains). Their port pairs in the chain config carry the correlation.
 * - tap: a tap instance, namespace L-tap, eth0 (TAP.mac) <-> tap0 in L-dp, L2 only (no IPv6, no
 *   addresses, no forwarding). An nftables netdev ingress chain with policy drop counts every frame
 *   it receives and those addressed to it (counters `received`, `to_tap`: tapReceived) and keeps
 *   its stack from processing any. In
 *   the chain config its port pair forms a tap group (tap_enabled) placed right after hop 1.
 * - graph (3 hops, all SF-aware): the hops become three one-hop chains and a service graph
 *   `sg` {pc1: [pc2, pc3]}. networking-sfc refuses chains whose classifiers overlap on the basic
 *   fields (spec A.6 rule 5), so a destination chain can only match what the source chain's SF
 *   changed: hop 1 is NAT-like, it rewrites the UDP source port GRAPH_PORTS.source to
 *   GRAPH_PORTS.translated (LabSf.udpSourceTo). pc1 (chain_id 1) takes UDP from the client's
 *   source port; pc2 (chain_id 2) and pc3 (chain_id 3) take UDP from the translated port to
 *   GRAPH_PORTS.pc2 / .pc3 (their logical source port, the server, is ignored for handed-off
 *   traffic). What leaves hop 1 is handed to pc2 or pc3, else delivered. The chains are one-way,
 *   and each aware SF answers its own chain's SPI / label (LabSf.chain).
 * - L-dp: IPv6 off (no MLD/RS noise from the namespace itself), no addresses, RPS off, and an
 *   nftables netdev ingress chain with policy drop on every interface. Packet taps (AF_PACKET),
 *   XDP and tc ingress run before it, so forwarders see every frame while the namespace's own IP
 *   stack processes none (LAB-NOTES). A kernel bridge (an rx_handler) runs after it: delete table
 *   `netdev sfc_lab` (DP_DROP_TABLE) first to use one.
 * - Endpoints keep IPv6 (DAD and router solicitations off) and default offloads (real TCP).
 * - dpLink 'tap' (for the TAP backend): each dataplane interface (cli0, srv0, sf<h><k>i/e) is a
 *   persistent TAP instead; the veth's dp end is v<name>, and a two-port Linux bridge b<name>
 *   joins them (STP and multicast snooping off), so the wire stays veth-real at the far end while
 *   the dataplane reads and writes the TAP. No drop table then: it would drop what the dataplane
 *   writes into a TAP before the bridge sees it; the bridges consume the frames anyway. Bridge
 *   netfilter calls are off in L-dp, so malformed frames reach the dataplane as on veth.
 *
 * State lives in /run/sfc/<name>/: lab.json (the options), chains.yaml (default --out) and pids
 * (processes started through netnsSpawn or recorded by aware-sf.ts, as "pid starttime what" so a
 * recycled pid is never killed; process.ts). labDown kills those pids and anything still running inside the lab's namespaces, then
 * deletes the namespaces (matched by exact name pattern); it is idempotent and works after a crash.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Document, Scalar, YAMLMap, YAMLSeq } from 'yaml';
import { MPLS_BYTES, NSH_BYTES } from '../dataplane/encap.js';
import { startAwareSf, type SfCorrelation } from './aware-sf.js';
import { isSameProcess, netnsExec, readPids, run, runDir, terminate } from './process.js';

// The process helpers, for the lab's users (benches, tests, harness).
export { netnsExec, netnsSpawn, processCpuMicros, run, runDir } from './process.js';

export const CLIENT = { mac: '02:00:00:00:00:01', ip: '10.0.0.1', ip6: 'fd00::1', dpIf: 'cli0' } as const;
export const SERVER = { mac: '02:00:00:00:00:02', ip: '10.0.0.2', ip6: 'fd00::2', dpIf: 'srv0' } as const;
/** The tap instance's eth0 (in L-tap) and its dataplane-side interface. */
export const TAP = { mac: '02:00:00:00:99:01', dpIf: 'tap0' } as const;
/** nftables netdev table in L-tap holding the `received` counter. */
const TAP_TABLE = 'sfc_tap';
/** The graph lab's UDP ports: the client's source port, hop 1's translation of it, each destination chain's. */
export const GRAPH_PORTS = { source: 7000, translated: 7001, pc2: 5002, pc3: 5003 } as const;
/** The MTU of an SF-aware instance's links with room for `correlation`'s encapsulation of a 1500-byte packet (LabOptions.awareMtu). */
export function awareLinkMtu(correlation: SfCorrelation): number {
  return 1500 + (correlation === 'nsh' ? NSH_BYTES : MPLS_BYTES);
}
/** nftables netdev table in L-dp that keeps the namespace's own stack from processing frames. */
export const DP_DROP_TABLE = 'sfc_lab';
/** chain_id of the generated chain. */
const CHAIN_ID = 1;

export interface LabOptions {
  /** Namespace prefix and run-directory name (default `sfc`). */
  name?: string;
  /** SF hops, 0..9 (0 = client–dp–server only, no chain). Default 2. */
  hops?: number;
  /** SF instances per hop, 1..9. Default 2. */
  instances?: number;
  /** chain_parameters.symmetric of the generated chain. Default true. */
  symmetric?: boolean;
  /** Where to write the chain config. Default /run/sfc/<name>/chains.yaml. */
  out?: string;
  /** What the dataplane attaches to: the veth ends (default) or TAPs bridged to them. */
  dpLink?: DpLink;
  /** Encapsulation of the SF-aware hops (and the chain's correlation); null: every hop unaware. */
  sfCorrelation?: SfCorrelation | null;
  /** Which hops are SF-aware when sfCorrelation is set (1-based). Default [1] (graph: all). */
  awareHops?: number[];
  /** A tap instance (namespace L-tap) whose tap group follows hop 1. */
  tap?: boolean;
  /** Three one-hop chains joined by a service graph pc1 -> {pc2, pc3} (needs hops 3, sfCorrelation). */
  graph?: boolean;
  /**
   * MTU of the SF-aware instances' links (both ends; default 1500). The userspace dataplane tells a
   * sender the MTU that fits once encapsulated (ICMP too big); Open vSwitch cannot, so a lab for the
   * ovs driver gives those links room for the encapsulation instead (awareLinkMtu).
   */
  awareMtu?: number;
}

export type DpLink = 'veth' | 'tap';

export interface LabSf {
  hop: number;
  instance: number;
  ns: string;
  /** dp-side interfaces (in L-dp) facing the SF's in0 and out0. */
  ingressIf: string;
  egressIf: string;
  /** MACs of the SF's own in0 and out0 (what frames to and from the SF carry). */
  ingressMac: string;
  egressMac: string;
  /** The encapsulation this SF handles (an Open vSwitch inside, aware-sf.ts), or null: a routing SF. */
  correlation: SfCorrelation | null;
  /** Its place: chain_id of its chain, its hop in that chain (1-based) and the chain's hops. */
  chain: { id: number; hop: number; hops: number };
  /** An aware SF that is NAT-like: the UDP source port it writes on what it returns forward, or null. */
  udpSourceTo: number | null;
}

export interface Lab {
  name: string;
  hops: number;
  instances: number;
  symmetric: boolean;
  dpLink: DpLink;
  /** chain_id of the generated chain (its SPI, and the MPLS labels' upper bits). */
  chainId: number;
  sfCorrelation: SfCorrelation | null;
  /** The SF-aware hops (empty without sfCorrelation). */
  awareHops: number[];
  /** The tap instance's namespace, or null without one. */
  tapNs: string | null;
  /** Whether the hops form the service graph's three chains. */
  graph: boolean;
  /** MTU of the SF-aware instances' links (LabOptions.awareMtu). */
  awareMtu: number;
  dpNs: string;
  clientNs: string;
  serverNs: string;
  sfs: LabSf[];
  /** Every interface in L-dp: cli0, srv0, then sf<h><k>i, sf<h><k>e in hop/instance order, then tap0. */
  dpInterfaces: string[];
  runDir: string;
  configPath: string;
  configYaml: string;
}

export function sfMac(hop: number, instance: number, side: 'in' | 'out'): string {
  return `02:00:00:00:${hop}${instance}:${side === 'in' ? '01' : '02'}`;
}

function checkName(name: string): void {
  // namespace names L-sf99 must stay short and shell/nft-safe
  if (!/^[a-z][a-z0-9-]{0,23}$/.test(name)) {
    throw new Error(`lab name '${name}' must be 1-24 characters of a-z, 0-9 and '-', starting with a letter`);
  }
}

/** The full description of a lab, derived from its options only (no system calls). */
export function describeLab(opts: LabOptions = {}): Omit<Lab, 'configYaml'> {
  const name = opts.name ?? 'sfc';
  const hops = opts.hops ?? 2;
  const instances = opts.instances ?? 2;
  checkName(name);
  if (!Number.isInteger(hops) || hops < 0 || hops > 9) throw new Error(`hops must be 0..9, got ${hops}`);
  if (!Number.isInteger(instances) || instances < 1 || instances > 9) {
    throw new Error(`instances must be 1..9, got ${instances}`);
  }
  const sfCorrelation = opts.sfCorrelation ?? null;
  const graph = opts.graph ?? false;
  const allHops = Array.from({ length: hops }, (_, i) => i + 1);
  const awareHops = sfCorrelation ? [...new Set(opts.awareHops ?? (graph ? allHops : [1]))].sort((a, b) => a - b) : [];
  if (sfCorrelation && hops === 0) throw new Error('SF-aware hops need hops >= 1');
  if (opts.tap && hops === 0) throw new Error('a tap needs hops >= 1 (its group follows hop 1)');
  if (graph) {
    // Each chain is one hop, and a graph's branch points must be SF-aware (spec A.7).
    if (hops !== 3 || !sfCorrelation || awareHops.length !== 3) throw new Error('a graph lab needs hops 3, an SF correlation and every hop aware');
    if (opts.tap) throw new Error('a graph lab has no tap (the source chain\'s last group must be its aware hop)');
    if (opts.symmetric) throw new Error('a graph lab\'s chains are one-way (no --symmetric)');
  }
  const outside = awareHops.filter((h) => !Number.isInteger(h) || h < 1 || h > hops);
  if (outside.length) throw new Error(`aware hops must be 1..${hops}, got ${outside.join(', ')}`);
  if (!sfCorrelation && opts.awareHops?.length) throw new Error('aware hops need an SF correlation (mpls or nsh)');
  const sfs: LabSf[] = [];
  for (let h = 1; h <= hops; h++) {
    for (let k = 1; k <= instances; k++) {
      sfs.push({
        hop: h,
        instance: k,
        ns: `${name}-sf${h}${k}`,
        ingressIf: `sf${h}${k}i`,
        egressIf: `sf${h}${k}e`,
        ingressMac: sfMac(h, k, 'in'),
        egressMac: sfMac(h, k, 'out'),
        correlation: awareHops.includes(h) ? sfCorrelation : null,
        chain: graph ? { id: h, hop: 1, hops: 1 } : { id: CHAIN_ID, hop: h, hops },
        udpSourceTo: graph && h === 1 ? GRAPH_PORTS.translated : null,
      });
    }
  }
  return {
    name,
    hops,
    instances,
    symmetric: opts.symmetric ?? !graph,
    dpLink: opts.dpLink ?? 'veth',
    chainId: CHAIN_ID,
    sfCorrelation,
    awareHops,
    tapNs: opts.tap ? `${name}-tap` : null,
    graph,
    awareMtu: opts.awareMtu ?? 1500,
    dpNs: `${name}-dp`,
    clientNs: `${name}-client`,
    serverNs: `${name}-server`,
    sfs,
    dpInterfaces: [CLIENT.dpIf, SERVER.dpIf, ...sfs.flatMap((s) => [s.ingressIf, s.egressIf]), ...(opts.tap ? [TAP.dpIf] : [])],
    runDir: runDir(name),
    configPath: opts.out ?? join(runDir(name), 'chains.yaml'),
  };
}

/** Fixed port pair ids (as in examples/two-hop.yaml): instance choice is keyed by id, so runs repeat. */
export function portPairId(hop: number, instance: number): string {
  return `5fc00000-0000-4000-8000-0000000000${hop}${instance}`;
}

/**
 * The chain config in the examples/two-hop.yaml shape and names: ports client, server,
 * sf<h><k>-in / -out; port pairs pp<h><k> (fixed ids); groups ppg<h>; IPv4 and IPv6 classifiers for
 * everything from client to server (all protocols, so ping crosses the SFs too); chain pc1,
 * chain_id 1. The port pairs of SF-aware hops carry the lab's SF correlation, which is then also
 * the chain's (else the chain says mpls, which no unaware hop uses). With a tap: port `tap`, pair
 * pptap, tap group ppgtap after ppg1. A graph lab: chains pc1..pc3 of one group each and service
 * graph sg (see the top of this file). With 0 hops only the two ports (the dataplane then forwards
 * as a plain L2 switch).
 */
export function chainConfig(lab: Omit<Lab, 'configYaml'>): string {
  const port = (name: string, mac: string, iface: string) => ({
    name,
    mac_address: quoted(mac),
    'binding:profile': inlineMap({ interface: iface }),
  });
  const config: Record<string, unknown[]> = {
    ports: [
      port('client', CLIENT.mac, CLIENT.dpIf),
      port('server', SERVER.mac, SERVER.dpIf),
      ...lab.sfs.flatMap((s) => [
        port(`sf${s.hop}${s.instance}-in`, s.ingressMac, s.ingressIf),
        port(`sf${s.hop}${s.instance}-out`, s.egressMac, s.egressIf),
      ]),
      ...(lab.tapNs ? [port('tap', TAP.mac, TAP.dpIf)] : []),
    ],
  };
  if (lab.hops > 0) {
    config.port_pairs = lab.sfs.map((s) => ({
      name: `pp${s.hop}${s.instance}`,
      id: portPairId(s.hop, s.instance),
      ingress: `sf${s.hop}${s.instance}-in`,
      egress: `sf${s.hop}${s.instance}-out`,
      ...(s.correlation ? { service_function_parameters: { correlation: s.correlation } } : {}),
    }));
    const hopGroups = Array.from({ length: lab.hops }, (_, i) => `ppg${i + 1}`);
    config.port_pair_groups = hopGroups.map((name, i) => ({
      name,
      port_pairs: flow(lab.sfs.filter((s) => s.hop === i + 1).map((s) => `pp${s.hop}${s.instance}`)),
    }));
    if (lab.tapNs) {
      config.port_pairs.push({ name: 'pptap', ingress: 'tap', egress: 'tap' });
      config.port_pair_groups.push({ name: 'ppgtap', port_pairs: flow(['pptap']), tap_enabled: true });
    }
    const classifier = (name: string, ethertype: string, src: string, dst: string) => ({
      name,
      ethertype,
      source_ip_prefix: src,
      destination_ip_prefix: dst,
      logical_source_port: 'client',
      logical_destination_port: 'server',
    });
    config.flow_classifiers = [
      classifier('client-server-v4', 'IPv4', `${CLIENT.ip}/32`, `${SERVER.ip}/32`),
      classifier('client-server-v6', 'IPv6', `${CLIENT.ip6}/128`, `${SERVER.ip6}/128`),
    ];
    const chain = (name: string, chainId: number, groups: string[], classifiers: string[]) => ({
      name,
      chain_id: chainId,
      port_pair_groups: flow(groups),
      flow_classifiers: flow(classifiers),
      chain_parameters: { correlation: lab.sfCorrelation ?? 'mpls', symmetric: lab.symmetric },
    });
    if (lab.graph) {
      const udp = (name: string, lsp: string, sport: number, dport?: number) => ({
        name,
        ethertype: 'IPv4',
        protocol: 'udp',
        source_port_range_min: sport,
        source_port_range_max: sport,
        ...(dport === undefined ? {} : { destination_port_range_min: dport, destination_port_range_max: dport }),
        logical_source_port: lsp,
        logical_destination_port: 'server',
      });
      config.flow_classifiers = [
        udp('from-client', 'client', GRAPH_PORTS.source),
        udp('to-pc2', 'server', GRAPH_PORTS.translated, GRAPH_PORTS.pc2),
        udp('to-pc3', 'server', GRAPH_PORTS.translated, GRAPH_PORTS.pc3),
      ];
      config.port_chains = [
        chain('pc1', 1, ['ppg1'], ['from-client']),
        chain('pc2', 2, ['ppg2'], ['to-pc2']),
        chain('pc3', 3, ['ppg3'], ['to-pc3']),
      ];
      config.service_graphs = [{ name: 'sg', port_chains: { pc1: flow(['pc2', 'pc3']) } }];
    } else {
      const groups = lab.tapNs ? [hopGroups[0]!, 'ppgtap', ...hopGroups.slice(1)] : hopGroups;
      config.port_chains = [chain('pc1', lab.chainId, groups, ['client-server-v4', 'client-server-v6'])];
    }
  }
  const flags =
    `--name ${lab.name} --hops ${lab.hops} --instances ${lab.instances}` +
    `${lab.symmetric ? '' : ' --no-symmetric'}${lab.dpLink === 'tap' ? ' --dp-link tap' : ''}` +
    `${lab.sfCorrelation ? ` --sf-correlation ${lab.sfCorrelation} --aware-hops ${lab.awareHops.join(',')}` : ''}` +
    `${lab.tapNs ? ' --tap' : ''}${lab.graph ? ' --graph' : ''}`;
  const doc = new Document(config);
  return `# written by: sfc lab up ${flags}\n${doc.toString({ flowCollectionPadding: false })}`;
}

/** A double-quoted YAML string (MACs: some YAML 1.1 readers take 02:00:... for a base-60 number). */
function quoted(value: string): Scalar {
  const s = new Scalar(value);
  s.type = Scalar.QUOTE_DOUBLE;
  return s;
}

/** A map printed on one line ({k: v}). */
function inlineMap(entries: Record<string, string>): YAMLMap {
  const map = new YAMLMap();
  for (const [k, v] of Object.entries(entries)) map.set(k, v);
  map.flow = true;
  return map;
}

/** A list printed on one line ([a, b]). */
function flow(items: string[]): YAMLSeq {
  const seq = new YAMLSeq();
  seq.items = items;
  seq.flow = true;
  return seq;
}

function labNamespaces(lab: Omit<Lab, 'configYaml'>): string[] {
  return [lab.dpNs, lab.clientNs, lab.serverNs, ...lab.sfs.map((s) => s.ns), ...(lab.tapNs ? [lab.tapNs] : [])];
}

/** Namespaces that exist now and belong to lab `name` (exact pattern, so lab `a` never matches `a-b`). */
export async function existingNamespaces(name: string): Promise<string[]> {
  checkName(name);
  const { stdout } = await run(['ip', '-j', 'netns', 'list']);
  const list = stdout.trim() ? (JSON.parse(stdout) as { name: string }[]) : [];
  const mine = new RegExp(`^${name}-(dp|client|server|tap|sf[1-9][1-9]|h[1-9]|underlay)$`);
  return list
    .map((n) => n.name)
    .filter((n) => mine.test(n))
    .sort();
}

async function sysctl(ns: string, settings: Record<string, string | number>): Promise<void> {
  await netnsExec(ns, ['sysctl', '-q', '-w', ...Object.entries(settings).map(([k, v]) => `${k}=${v}`)]);
}

async function ipBatch(ns: string | null, lines: string[]): Promise<void> {
  await run(['ip', ...(ns ? ['-n', ns] : []), '-batch', '-'], { input: lines.join('\n') + '\n' });
}

/** Build the lab. Refuses if any of its namespaces already exist (run labDown first). */
export async function labUp(opts: LabOptions = {}): Promise<Lab> {
  const desc = describeLab(opts);
  const present = await existingNamespaces(desc.name);
  if (present.length) {
    throw new Error(`lab '${desc.name}' already exists (${present.join(', ')}); run: sfc lab down --name ${desc.name}`);
  }
  try {
    await buildLab(desc);
    for (const s of desc.sfs) if (s.correlation) await startAwareSf(desc, s, s.correlation);
  } catch (e) {
    await labDown(desc.name);
    throw e;
  }
  const configYaml = chainConfig(desc);
  await mkdir(desc.runDir, { recursive: true });
  await mkdir(dirname(desc.configPath), { recursive: true });
  await writeFile(desc.configPath, configYaml);
  await writeFile(join(desc.runDir, 'lab.json'), JSON.stringify({ ...desc }, null, 2) + '\n');
  return { ...desc, configYaml };
}

/** A dataplane namespace and the dataplane interfaces in it (several: the multi-host lab, hosts.ts). */
export interface DpHome {
  ns: string;
  interfaces: string[];
}

/** Build the lab's namespaces and links; `homes` places the dataplane interfaces (default: all in L-dp). */
export async function buildLab(lab: Omit<Lab, 'configYaml'>, homes: DpHome[] = [{ ns: lab.dpNs, interfaces: lab.dpInterfaces }]): Promise<void> {
  const { dpNs, clientNs, serverNs } = lab;
  const homeOf = new Map(homes.flatMap((h) => h.interfaces.map((i): [string, string] => [i, h.ns])));
  await ipBatch(null, [...new Set([...labNamespaces(lab), ...homes.map((h) => h.ns)])].map((ns) => `netns add ${ns}`));
  // Defaults first, so interfaces created afterwards inherit them. Aware SFs are L2 only (their
  // Open vSwitch handles every frame): no IPv6 there either, so their stacks send nothing.
  const aware = lab.sfs.filter((s) => s.correlation);
  const routing = lab.sfs.filter((s) => !s.correlation);
  for (const ns of [...homes.map((h) => h.ns), ...aware.map((s) => s.ns), ...(lab.tapNs ? [lab.tapNs] : [])]) {
    await sysctl(ns, { 'net.ipv6.conf.all.disable_ipv6': 1, 'net.ipv6.conf.default.disable_ipv6': 1 });
  }
  for (const ns of [clientNs, serverNs, ...routing.map((s) => s.ns)]) {
    await sysctl(ns, {
      'net.ipv6.conf.all.accept_dad': 0,
      'net.ipv6.conf.default.accept_dad': 0,
      'net.ipv6.conf.all.router_solicitations': 0,
      'net.ipv6.conf.default.router_solicitations': 0,
    });
  }
  for (const s of routing) {
    await sysctl(s.ns, {
      'net.ipv4.ip_forward': 1,
      'net.ipv4.conf.all.rp_filter': 0,
      'net.ipv4.conf.default.rp_filter': 0,
      'net.ipv6.conf.all.forwarding': 1,
    });
  }
  const tap = lab.dpLink === 'tap';
  const vethEnd = (dpIf: string) => (tap ? `v${dpIf}` : dpIf);
  const veth = (dpIf: string, ns: string, ifname: string, mac: string) =>
    `link add ${vethEnd(dpIf)} netns ${homeOf.get(dpIf)} type veth peer name ${ifname} address ${mac} netns ${ns}`;
  await ipBatch(null, [
    veth(CLIENT.dpIf, clientNs, 'eth0', CLIENT.mac),
    veth(SERVER.dpIf, serverNs, 'eth0', SERVER.mac),
    ...lab.sfs.flatMap((s) => [veth(s.ingressIf, s.ns, 'in0', s.ingressMac), veth(s.egressIf, s.ns, 'out0', s.egressMac)]),
    ...(lab.tapNs ? [veth(TAP.dpIf, lab.tapNs, 'eth0', TAP.mac)] : []),
  ]);
  const bridged = (i: string) => [
    `tuntap add dev ${i} mode tap`,
    `link add b${i} type bridge stp_state 0 mcast_snooping 0`,
    `link set ${vethEnd(i)} master b${i}`,
    `link set ${i} master b${i}`,
    `link set b${i} up`,
    `link set ${vethEnd(i)} up`,
  ];
  for (const h of homes) await ipBatch(h.ns, ['link set lo up', ...h.interfaces.flatMap((i) => (tap ? bridged(i) : [])), ...h.interfaces.map((i) => `link set ${i} up`)]);
  for (const [ns, ep] of [[clientNs, CLIENT], [serverNs, SERVER]] as const) {
    await ipBatch(ns, [
      'link set lo up',
      `addr add ${ep.ip}/24 dev eth0`,
      `addr add ${ep.ip6}/64 dev eth0 nodad`,
      'link set eth0 up',
    ]);
  }
  const mtu = `mtu ${lab.awareMtu}`;
  for (const s of aware) await ipBatch(homeOf.get(s.ingressIf)!, [`link set ${s.ingressIf} ${mtu}`, `link set ${s.egressIf} ${mtu}`]);
  for (const s of aware) await ipBatch(s.ns, ['link set lo up', `link set in0 ${mtu} up`, `link set out0 ${mtu} up`]);
  if (lab.tapNs) {
    await ipBatch(lab.tapNs, ['link set lo up', 'link set eth0 up']);
    await netnsExec(lab.tapNs, ['nft', '-f', '-'], {
      input:
        `table netdev ${TAP_TABLE} {\n` +
        `  counter received {}\n` +
        `  counter to_tap {}\n` +
        `  chain count_drop {\n` +
        `    type filter hook ingress device eth0 priority 0; policy drop;\n` +
        `    counter name received\n` +
        `    ether daddr ${TAP.mac} counter name to_tap\n` +
        `  }\n}\n`,
    });
  }
  for (const s of routing) {
    await ipBatch(s.ns, [
      'link set lo up',
      'link set in0 up',
      'link set out0 up',
      `route add ${SERVER.ip}/32 dev out0`,
      `route add ${CLIENT.ip}/32 dev in0`,
      `route add ${SERVER.ip6}/128 dev out0`,
      `route add ${CLIENT.ip6}/128 dev in0`,
      `neigh replace ${SERVER.ip} lladdr ${SERVER.mac} dev out0 nud permanent`,
      `neigh replace ${CLIENT.ip} lladdr ${CLIENT.mac} dev in0 nud permanent`,
      `neigh replace ${SERVER.ip6} lladdr ${SERVER.mac} dev out0 nud permanent`,
      `neigh replace ${CLIENT.ip6} lladdr ${CLIENT.mac} dev in0 nud permanent`,
    ]);
  }
  // RPS off on the dataplane's interfaces (receive softirq stays on the sending CPU).
  for (const h of homes) {
    await netnsExec(h.ns, [
      'sh',
      '-c',
      'for f in "$@"; do for q in /sys/class/net/$f/queues/rx-*/rps_cpus; do echo 0 > "$q"; done; done',
      'rps-off',
      ...h.interfaces,
      ...(tap ? h.interfaces.map(vethEnd) : []),
    ]);
  }
  if (tap) {
    // Bridges are plain wires here: no br_netfilter (it would drop malformed IP frames before the
    // dataplane sees them). -e: the keys exist only while br_netfilter is loaded.
    const nf = ['iptables', 'ip6tables', 'arptables'].map((t) => `net.bridge.bridge-nf-call-${t}=0`);
    await netnsExec(dpNs, ['sysctl', '-e', '-q', '-w', ...nf]);
    return;
  }
  for (const h of homes.filter((x) => x.interfaces.length > 0)) {
    await netnsExec(h.ns, ['nft', '-f', '-'], {
      input:
        `table netdev ${DP_DROP_TABLE} {\n` +
        `  chain stack_drop {\n` +
        `    type filter hook ingress devices = { ${h.interfaces.join(', ')} } priority 500; policy drop;\n` +
        `  }\n}\n`,
    });
  }
}

export interface FrameCount {
  packets: number;
  /** nftables counts from the IP header on: the Ethernet header's 14 bytes are not included. */
  bytes: number;
}

/**
 * What the lab's tap instance has received so far (its nftables counters): every frame, and the
 * frames addressed to its own MAC (the dataplane's copies; broadcasts the dataplane floods to
 * every port are only in `received`).
 */
export async function tapReceived(lab: Pick<Lab, 'tapNs'>): Promise<{ received: FrameCount; toTap: FrameCount }> {
  if (!lab.tapNs) throw new Error('the lab has no tap (sfc lab up --tap)');
  const [received, toTap] = await nftCounters(lab.tapNs, TAP_TABLE, ['received', 'to_tap']);
  return { received, toTap };
}

/**
 * An nftables table netdev `table` in `ns` with one counter, `matched`, of the frames matching
 * `match` (nft syntax) that `ifname` sends (egress) or receives (ingress); matchedFrames reads it.
 */
export async function addMatchCounter(ns: string, table: string, hook: 'ingress' | 'egress', ifname: string, match: string): Promise<void> {
  await netnsExec(ns, ['nft', '-f', '-'], {
    input: `table netdev ${table} {\n  counter matched {}\n  chain c {\n    type filter hook ${hook} device ${ifname} priority 0; policy accept;\n    ${match} counter name matched\n  }\n}\n`,
  });
}

/** Frames counted so far by addMatchCounter's table `table` in `ns`. */
export async function matchedFrames(ns: string, table: string): Promise<number> {
  const [matched] = await nftCounters(ns, table, ['matched']);
  return matched.packets;
}

/** The named counters `names` of nftables table netdev `table` in `ns`, in that order. */
export async function nftCounters(ns: string, table: string, names: string[]): Promise<FrameCount[]> {
  const { stdout } = await netnsExec(ns, ['nft', '-j', 'list', 'counters', 'table', 'netdev', table]);
  type Counter = { name: string; packets: number; bytes: number };
  const counters = (JSON.parse(stdout) as { nftables: { counter?: Counter }[] }).nftables.flatMap((o) => (o.counter ? [o.counter] : []));
  return names.map((name) => {
    const c = counters.find((x) => x.name === name);
    if (!c) throw new Error(`no counter '${name}' in table ${table} of ${ns}: ${stdout.slice(0, 200)}`);
    return { packets: c.packets, bytes: c.bytes };
  });
}

async function pidsInNamespace(ns: string): Promise<number[]> {
  const { stdout } = await run(['ip', 'netns', 'pids', ns], { check: false });
  return stdout.split(/\s+/).filter(Boolean).map(Number).filter((p) => p > 1 && p !== process.pid);
}


/** Remove everything lab `name` made. Idempotent; safe after a crash or a half-built lab. */
export async function labDown(name = 'sfc'): Promise<void> {
  checkName(name);
  const recorded = (await readPids(name)).filter(isSameProcess).map((r) => r.pid);
  await terminate(recorded);
  const namespaces = await existingNamespaces(name);
  const inside = (await Promise.all(namespaces.map(pidsInNamespace))).flat();
  await terminate(inside);
  if (namespaces.length) await ipBatch(null, namespaces.map((ns) => `netns del ${ns}`));
  await rm(runDir(name), { recursive: true, force: true });
}

export interface LabStatus {
  name: string;
  /** The options the lab was built with (lab.json), or null if it has no run directory. */
  lab: Omit<Lab, 'configYaml'> | null;
  namespaces: { name: string; interfaces: { name: string; mac: string; state: string }[] }[];
  pids: { pid: number; what: string; alive: boolean }[];
}

export async function labStatus(name = 'sfc'): Promise<LabStatus> {
  checkName(name);
  let lab: LabStatus['lab'] = null;
  try {
    lab = JSON.parse(await readFile(join(runDir(name), 'lab.json'), 'utf8')) as LabStatus['lab'];
  } catch {
    // no run directory: nothing recorded
  }
  const namespaces = [];
  for (const ns of await existingNamespaces(name)) {
    const { stdout } = await run(['ip', '-n', ns, '-j', 'link', 'show']);
    const links = JSON.parse(stdout) as { ifname: string; address?: string; operstate: string }[];
    namespaces.push({
      name: ns,
      interfaces: links
        .filter((l) => l.ifname !== 'lo')
        .map((l) => ({ name: l.ifname, mac: l.address ?? '', state: l.operstate })),
    });
  }
  const pids = (await readPids(name)).map((r) => ({ pid: r.pid, what: r.what, alive: isSameProcess(r) }));
  return { name, lab, namespaces, pids };
}
