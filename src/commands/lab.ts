/*
 * `sfc lab up|down|status`: the network-namespace lab of src/lab/topology.ts from the shell.
 * `up` prints the generated chain config (also written to --out); `down` is idempotent.
 */
import { BACKENDS } from '../dataplane/io/registry.js';
import { SF_CORRELATIONS, type SfCorrelation } from '../lab/aware-sf.js';
import { detachHostsLab, hostsLabRunning, type HostsOptions } from '../lab/hosts.js';
import { labUpForOvs } from '../lab/harness.js';
import { GRAPH_PORTS, labDown, labStatus, labUp } from '../lab/topology.js';
import { parseOptions, UsageError, type Command } from '../util/args.js';

function integer(value: string | undefined, option: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${option} must be ${min}..${max}, got '${value}'`);
  return n;
}

async function up(argv: string[]): Promise<number> {
  const { values } = parseOptions(argv, {
    name: { type: 'string' },
    hops: { type: 'string' },
    instances: { type: 'string' },
    symmetric: { type: 'boolean' },
    'no-symmetric': { type: 'boolean' },
    out: { type: 'string' },
    'dp-link': { type: 'string' },
    'sf-correlation': { type: 'string' },
    'aware-hops': { type: 'string' },
    tap: { type: 'boolean' },
    graph: { type: 'boolean' },
    hosts: { type: 'string' },
    driver: { type: 'string' },
  });
  const driver = values.driver ?? 'userspace';
  if (driver !== 'userspace' && driver !== 'ovs') throw new UsageError(`--driver must be userspace or ovs, got '${driver}'`);
  if (driver === 'ovs' && values['dp-link'] === 'tap') throw new UsageError('--driver ovs reads veths: not with --dp-link tap');
  if (values.hosts !== undefined) {
    const clash = (['dp-link', 'sf-correlation', 'aware-hops', 'tap', 'graph', 'driver'] as const).filter((o) => values[o] !== undefined);
    if (clash.length > 0) throw new UsageError(`--hosts does not combine with ${clash.map((o) => `--${o}`).join(', ')}`);
    return upHosts({
      name: values.name,
      hosts: integer(values.hosts, '--hosts', 2, 9),
      hops: integer(values.hops, '--hops', 0, 9),
      instances: integer(values.instances, '--instances', 1, 9),
      symmetric: values['no-symmetric'] ? false : values.symmetric,
      out: values.out,
    });
  }
  const dpLink = values['dp-link'];
  if (dpLink !== undefined && dpLink !== 'veth' && dpLink !== 'tap') throw new UsageError(`--dp-link must be veth or tap, got '${dpLink}'`);
  if (values.symmetric && values['no-symmetric']) throw new UsageError('--symmetric and --no-symmetric conflict');
  const correlation = values['sf-correlation'];
  if (correlation !== undefined && !SF_CORRELATIONS.includes(correlation as SfCorrelation)) {
    throw new UsageError(`--sf-correlation must be ${SF_CORRELATIONS.join(' or ')}, got '${correlation}'`);
  }
  if (values['aware-hops'] !== undefined && correlation === undefined) throw new UsageError('--aware-hops needs --sf-correlation');
  const awareHops = values['aware-hops']?.split(',').map((h) => integer(h.trim(), '--aware-hops', 1, 9)!);
  const opts = {
    name: values.name,
    hops: integer(values.hops, '--hops', 0, 9),
    instances: integer(values.instances, '--instances', 1, 9),
    symmetric: values['no-symmetric'] ? false : values.symmetric,
    out: values.out,
    dpLink: dpLink as 'veth' | 'tap' | undefined,
    sfCorrelation: correlation as SfCorrelation | undefined,
    awareHops,
    tap: values.tap,
    graph: values.graph,
  };
  const lab = driver === 'ovs' ? await labUpForOvs(opts) : await labUp(opts);
  process.stdout.write(lab.configYaml);
  const aware = lab.sfCorrelation ? `; SF-aware (${lab.sfCorrelation}, Open vSwitch): hop ${lab.awareHops.join(', ')}` : '';
  const sfs = lab.sfs.length ? `, ${lab.sfs.length} SF namespaces (${lab.hops} hops x ${lab.instances}${aware})` : '';
  const tap = lab.tapNs ? `, tap ${lab.tapNs} (after hop 1)` : '';
  const graph = lab.graph ? '; service graph pc1 -> {pc2, pc3}' : '';
  console.error(`lab '${lab.name}' up: ${lab.dpNs}, ${lab.clientNs}, ${lab.serverNs}${sfs}${tap}${graph}; config: ${lab.configPath}`);
  if (driver === 'ovs') console.error(`then: ip netns exec ${lab.dpNs} sfc serve --driver ovs --config ${lab.configPath}`);
  return 0;
}

/** `up --hosts N`: the multi-host lab (src/lab/hosts.ts) with its etcd, API server and agents left running. */
async function upHosts(opts: HostsOptions): Promise<number> {
  const running = await hostsLabRunning(opts);
  detachHostsLab(running);
  const { lab, api } = running;
  process.stdout.write(lab.configYaml);
  const where = lab.hosts.map((h) => `${h.name} (${h.ns}, ${h.ip}: ${h.interfaces.join(' ') || 'no SF'})`).join(', ');
  console.error(`lab '${lab.name}' up on ${lab.hosts.length} hosts: ${where}; underlay ${lab.underlayNs}; etcd ${lab.store}; API ${api.url} inside ${lab.dpNs}; agents' logs in ${lab.runDir}`);
  return 0;
}

async function down(argv: string[]): Promise<number> {
  const { values } = parseOptions(argv, { name: { type: 'string' } });
  await labDown(values.name);
  console.error(`lab '${values.name ?? 'sfc'}' down`);
  return 0;
}

async function status(argv: string[]): Promise<number> {
  const { values } = parseOptions(argv, { name: { type: 'string' }, json: { type: 'boolean' } });
  const s = await labStatus(values.name);
  if (values.json) {
    console.log(JSON.stringify(s, null, 2));
    return 0;
  }
  if (!s.namespaces.length && !s.lab) {
    console.log(`lab '${s.name}': not running`);
    return 0;
  }
  const what = s.lab ? ` (${s.lab.hops} hops x ${s.lab.instances} instances, config ${s.lab.configPath})` : '';
  console.log(`lab '${s.name}'${what}`);
  for (const ns of s.namespaces) {
    console.log(`  ${ns.name}`);
    for (const i of ns.interfaces) console.log(`    ${i.name.padEnd(8)} ${i.mac}  ${i.state}`);
  }
  for (const p of s.pids) console.log(`  pid ${p.pid} ${p.what} ${p.alive ? 'running' : 'gone'}`);
  return 0;
}

/** The backends whose lab links are TAPs, as serve options: "--backend tap". */
const TAP_BACKENDS = BACKENDS.filter((b) => b.lab.link === 'tap').map((b) => `--backend ${b.name}`).join(', ');

const ACTIONS: Record<string, (argv: string[]) => Promise<number>> = { up, down, status };

export const command: Command = {
  summary: 'build, remove or show the network-namespace lab (client, server, SFs around a dataplane namespace)',
  usage: `up|down|status [options]
  up     [--name L] [--hops 2] [--instances 2] [--no-symmetric] [--out FILE] [--dp-link veth|tap]
         [--sf-correlation mpls|nsh [--aware-hops 1[,2...]]] [--tap] [--graph] [--driver userspace|ovs]
         namespaces L-dp, L-client, L-server, L-sf<h><k>; prints the chain config and writes it to
         --out (default /run/sfc/L/chains.yaml); --dp-link tap: the dataplane's interfaces are TAPs
         bridged to the veths (for sfc serve ${TAP_BACKENDS}); --sf-correlation: the SFs of the
         --aware-hops (default 1) are SF-aware, an Open vSwitch each (netdev datapath, run directory
         under /run/sfc/L) returning the chain's MPLS or NSH with the index decremented; their port
         pairs and the chain carry that correlation; --tap: a tap instance L-tap (eth0 <-> tap0,
         an nftables counter of what it receives, forwards nothing) whose tap group follows hop 1;
         --graph (--hops 3 --sf-correlation, every hop aware): three one-hop one-way chains
         and a service graph sg {pc1: [pc2, pc3]}: pc1 takes UDP from client port ${GRAPH_PORTS.source}, its SF
         (NAT-like) writes source port ${GRAPH_PORTS.translated}, pc2 / pc3 take that to UDP port ${GRAPH_PORTS.pc2} / ${GRAPH_PORTS.pc3};
         --driver ovs: the lab for sfc serve --driver ovs (veths; SF-aware links with room for the
         encapsulation and the stacks computing their own checksums: Open vSwitch sends no ICMP
         too big and loses checksum offload when it encapsulates)
  up --hosts N [--name L] [--hops 2] [--instances 2] [--no-symmetric] [--out FILE]
         the chain over N hosts (2..9): namespaces L-h1..L-hN joined by an underlay bridge
         (L-underlay, 10.77.0.0/24, MTU 1600), a 3-member etcd on it, client and server on h1,
         hop h's SFs on host 2 + (h-1) mod (N-1); sfc serve --store (API, driver noop) in L-h1
         seeded with the config (ports carry binding:host_id) and one sfc agent per host
  down   [--name L]   remove the namespaces and the processes the lab started (idempotent)
  status [--name L] [--json]   namespaces, interfaces and recorded pids`,
  async run(argv) {
    const [action, ...rest] = argv;
    const fn = action ? ACTIONS[action] : undefined;
    if (!fn) throw new UsageError(`expected one of: ${Object.keys(ACTIONS).join(', ')}`);
    return fn(rest);
  },
};
