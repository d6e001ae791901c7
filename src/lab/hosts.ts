/*
 * The multi-host lab (issue 14): the namespace lab of topology.ts spread over N "hosts", each a
 * dataplane namespace L-h<n> with its own `sfc agent`, joined by an underlay.
 *
 *   L-client, L-server  <-> cli0, srv0 in L-h1          (the endpoints' host)
 *   L-sf<h><k>          <-> sf<h><k>i/e in L-h<host(h)> (hop h on host 2 + (h-1) mod (N-1): with
 *                                                        3 hosts hop 1 on h2, hop 2 on h3)
 *   L-h<n> ul0 (10.77.0.<n>/24, MTU 1600) <-> h<n> in L-underlay, a Linux bridge `ul` joining them
 *
 * - The underlay MTU leaves room for VXLAN and the chain's encapsulation around a 1500-byte packet
 *   (what a VXLAN deployment does), so endpoints keep MTU 1500.
 * - etcd: a 3-member cluster (src/lab/etcd-cluster.ts), member i in L-h<i+1> on its underlay
 *   address (one member per host when N = 3), started detached so it outlives `sfc lab up`.
 * - Each L-h<n> is set up like L-dp (IPv6 off, the nftables drop table on its dataplane
 *   interfaces); on ul0 its stack keeps processing (etcd, ARP) but drops VXLAN (UDP 4789): only
 *   the agent's packet socket takes those, and the stack sends no port-unreachable back.
 * - The chain config is topology.ts's with each port's binding:host_id; `sfc serve --store
 *   --driver noop` in L-h1 (the API; LabDataplane's relay reaches it) seeds etcd with it.
 * - Agents: `sfc agent --host h<n> --underlay ul0` in L-h<n>, output to <runDir>/agent-h<n>.log,
 *   their last model in <runDir>/agent-h<n>.json (written once a revision is live: agentRevision).
 * Everything is recorded in the lab's pid file and namespaces; `sfc lab down` removes it all.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { GUARD_KEY } from '../control/etcd/model.js';
import { EtcdCluster } from './etcd-cluster.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { distFile, LabDataplane, stopProcess, type LabInfo } from './harness.js';
import { netnsExec, netnsSpawn, run } from './process.js';
import { buildLab, chainConfig, describeLab, existingNamespaces, labDown, type LabOptions } from './topology.js';

export const UNDERLAY_IF = 'ul0';
const UNDERLAY_MTU = 1600;
const UNDERLAY_NET = '10.77.0';
const ETCD_BASE_PORT = 2379;
const ETCD_MEMBERS = 3;

export interface LabHost {
  /** Host name (binding:host_id, `sfc agent --host`). */
  name: string;
  ns: string;
  /** Underlay address of ul0. */
  ip: string;
  /** Dataplane interfaces in ns (without ul0). */
  interfaces: string[];
}

export interface HostsLab extends LabInfo {
  hosts: LabHost[];
  underlayNs: string;
  /** --store URL of the lab's etcd cluster. */
  store: string;
  configYaml: string;
}

export interface HostsOptions extends Omit<LabOptions, 'dpLink' | 'tap' | 'graph' | 'sfCorrelation' | 'awareHops' | 'awareMtu'> {
  /** Hosts, 2..9 (default 3). */
  hosts?: number;
}

/** Host (1-based) of hop h's instances among n hosts: host 1 has the endpoints. */
export function hopHost(h: number, n: number): number {
  return 2 + ((h - 1) % (n - 1));
}

export function describeHostsLab(opts: HostsOptions = {}): Omit<HostsLab, 'configYaml'> {
  const n = opts.hosts ?? 3;
  if (!Number.isInteger(n) || n < 2 || n > 9) throw new Error(`hosts must be 2..9, got ${n}`);
  const base = describeLab(opts);
  const hosts: LabHost[] = Array.from({ length: n }, (_, i) => ({
    name: `h${i + 1}`,
    ns: `${base.name}-h${i + 1}`,
    ip: `${UNDERLAY_NET}.${i + 1}`,
    interfaces: [
      ...(i === 0 ? [base.dpInterfaces[0], base.dpInterfaces[1]] : []),
      ...base.sfs.filter((s) => hopHost(s.hop, n) === i + 1).flatMap((s) => [s.ingressIf, s.egressIf]),
    ],
  }));
  const etcd = hosts.slice(0, ETCD_MEMBERS).map((h) => `${h.ip}:${ETCD_BASE_PORT + 2 * hosts.indexOf(h)}`);
  return { ...base, dpNs: hosts[0].ns, hosts, underlayNs: `${base.name}-underlay`, store: `etcd://${etcd.join(',')}` };
}

/** topology.ts's chain config with every port's binding:host_id. */
function hostsConfig(lab: Omit<HostsLab, 'configYaml'>): string {
  const text = chainConfig(lab);
  const config = parse(text) as { ports: { name: string; 'binding:host_id'?: string }[] };
  const n = lab.hosts.length;
  for (const p of config.ports) {
    const m = /^sf(\d)\d-/.exec(p.name);
    p['binding:host_id'] = `h${m ? hopHost(Number(m[1]), n) : 1}`;
  }
  return `# written by: sfc lab up --hosts ${n} (hop h on host ${lab.hosts.map((h) => h.name).join(', ')} as binding:host_id says)\n${stringify(config)}`;
}

/** Build the namespaces, the underlay and etcd, and seed the model through the API server it starts (the caller stops or detaches it). */
export async function hostsLabUp(opts: HostsOptions = {}): Promise<{ lab: HostsLab; api: LabDataplane; etcd: ChildProcess[]; cluster: EtcdCluster }> {
  const lab = describeHostsLab(opts);
  const present = await existingNamespaces(lab.name);
  if (present.length) throw new Error(`lab '${lab.name}' already exists (${present.join(', ')}); run: sfc lab down --name ${lab.name}`);
  const configYaml = hostsConfig(lab);
  try {
    await buildLab(lab, lab.hosts.map((h) => ({ ns: h.ns, interfaces: h.interfaces })));
    await mkdir(lab.runDir, { recursive: true });
    await buildUnderlay(lab);
    const { members: etcd, cluster } = await startEtcd(lab);
    await writeFile(lab.configPath, configYaml);
    await writeFile(join(lab.runDir, 'lab.json'), JSON.stringify(lab, null, 2) + '\n');
    return { lab: { ...lab, configYaml }, api: await startApi(lab), etcd, cluster };
  } catch (e) {
    await labDown(lab.name);
    throw e;
  }
}

async function buildUnderlay(lab: Omit<HostsLab, 'configYaml'>): Promise<void> {
  const u = lab.underlayNs;
  await run(['ip', 'netns', 'add', u]);
  const lines = [`link add ul netns ${u} type bridge stp_state 0 mcast_snooping 0`];
  for (const h of lab.hosts) lines.push(`link add ${UNDERLAY_IF} netns ${h.ns} mtu ${UNDERLAY_MTU} type veth peer name ${h.name} mtu ${UNDERLAY_MTU} netns ${u}`);
  await run(['ip', '-batch', '-'], { input: lines.join('\n') + '\n' });
  await run(['ip', '-n', u, '-batch', '-'], {
    input: ['link set lo up', `link set ul mtu ${UNDERLAY_MTU} up`, ...lab.hosts.flatMap((h) => [`link set ${h.name} master ul`, `link set ${h.name} up`])].join('\n') + '\n',
  });
  for (const h of lab.hosts) {
    await run(['ip', '-n', h.ns, '-batch', '-'], { input: `addr add ${h.ip}/24 dev ${UNDERLAY_IF}\nlink set ${UNDERLAY_IF} up\n` });
    await netnsExec(h.ns, ['nft', '-f', '-'], {
      input: `table netdev sfc_underlay {\n  chain vxlan_to_agent {\n    type filter hook ingress device ${UNDERLAY_IF} priority 500; policy accept;\n    udp dport 4789 drop\n  }\n}\n`,
    });
  }
}

/**
 * The etcd members, detached: `tee -p` keeps reading their log so they outlive this process (a Go
 * program writing to a closed stderr pipe would die of SIGPIPE). Each member's wrapper leads its
 * own process group, which the cluster's kill(i) signals (members the cluster restarts are added
 * to `members` too).
 */
async function startEtcd(lab: Omit<HostsLab, 'configYaml'>): Promise<{ members: ChildProcess[]; cluster: EtcdCluster }> {
  const members: ChildProcess[] = [];
  const cluster = await EtcdCluster.start({
    dir: join(lab.runDir, 'etcd'),
    basePort: ETCD_BASE_PORT,
    hosts: lab.hosts.slice(0, ETCD_MEMBERS).map((h) => h.ip),
    processGroups: true,
    spawn: (argv) => {
      const member = Number(/--name=sfc-etcd(\d+)/.exec(argv.join(' '))![1]);
      const child = netnsSpawn(lab.name, lab.hosts[member].ns, ['sh', '-c', '"$@" 2>&1 | tee -p -a /dev/null >&2', 'etcd', ...argv], { detached: true });
      return child.then((c) => (members.push(c), c));
    },
  });
  return { members, cluster };
}

/** The API server in L-h1 over the lab's etcd (no dataplane of its own: the agents are the dataplane). */
export function startApi(lab: Omit<HostsLab, 'configYaml'>): Promise<LabDataplane> {
  return LabDataplane.start(lab, { driver: 'noop', store: lab.store, config: lab.configPath });
}

/** Start host `host`'s agent (detached, output to <runDir>/agent-<host>.log). */
export async function startAgent(lab: Omit<HostsLab, 'configYaml'>, host: LabHost, args: string[] = []): Promise<ChildProcess> {
  const log = await open(join(lab.runDir, `agent-${host.name}.log`), 'a');
  try {
    const argv = [process.execPath, distFile('cli.js'), 'agent', '--host', host.name, '--store', lab.store, '--underlay', UNDERLAY_IF];
    argv.push('--state', agentStatePath(lab, host), ...args);
    return await netnsSpawn(lab.name, host.ns, argv, { detached: true, stdio: ['ignore', log.fd, log.fd] });
  } finally {
    await log.close();
  }
}

/**
 * The model's revision now: etcd's mod_revision of the model guard (control/etcd/model.ts), the
 * number agents publish as live (read with etcdctl from host 1, where the underlay reaches etcd).
 */
export async function modelRevision(lab: Pick<HostsLab, 'store' | 'hosts'>): Promise<number> {
  const { stdout } = await netnsExec(lab.hosts[0].ns, ['etcdctl', `--endpoints=${lab.store.slice('etcd://'.length)}`, '--command-timeout=5s', 'get', GUARD_KEY, '-w', 'json']);
  const res = JSON.parse(stdout) as { kvs?: { mod_revision: number }[] };
  return Number(res.kvs?.[0]?.mod_revision ?? 0);
}

/** Index of the etcd member that leads now, by the members' own status (etcdctl from host 1); -1 when none answers that it leads. */
export async function etcdLeader(lab: Pick<HostsLab, 'store' | 'hosts'>): Promise<number> {
  const endpoints = lab.store.slice('etcd://'.length);
  const { stdout } = await netnsExec(lab.hosts[0].ns, ['etcdctl', `--endpoints=${endpoints}`, '--command-timeout=2s', 'endpoint', 'status', '-w', 'json'], { check: false });
  let rows: { Endpoint: string; Status: { header: { member_id: number }; leader: number } }[] = [];
  try {
    rows = JSON.parse(stdout) as typeof rows;
  } catch {
    return -1; // (no member answered)
  }
  const leader = rows.find((r) => r.Status.header.member_id === r.Status.leader);
  return leader ? endpoints.split(',').indexOf(leader.Endpoint) : -1;
}

/** Until every agent has the model's current revision live (its --state file); returns that revision. */
export async function agentsLive(lab: Omit<HostsLab, 'configYaml'>, ms = 30_000): Promise<number> {
  const want = await modelRevision(lab);
  for (const end = Date.now() + ms; ; await sleep(100)) {
    const revs = await Promise.all(lab.hosts.map((h) => agentRevision(lab, h)));
    if (revs.every((r) => r >= want)) return want;
    if (Date.now() > end) throw new Error(`agents at revisions ${revs.join(', ')} after ${ms} ms, the model at ${want}`);
  }
}

/** The lab with an agent on every host, all live (`agentArgs`: more `sfc agent` options). */
export async function hostsLabRunning(
  opts: HostsOptions,
  agentArgs: string[] = [],
): Promise<{ lab: HostsLab; api: LabDataplane; agents: Map<string, ChildProcess>; etcd: ChildProcess[]; cluster: EtcdCluster }> {
  const { lab, api, etcd, cluster } = await hostsLabUp(opts);
  const agents = new Map<string, ChildProcess>();
  try {
    for (const h of lab.hosts) agents.set(h.name, await startAgent(lab, h, agentArgs));
    await agentsLive(lab);
  } catch (e) {
    await api.stop();
    await labDown(lab.name);
    throw e;
  }
  return { lab, api, agents, etcd, cluster };
}

/** Leave the lab's processes running after this one exits (`sfc lab down` stops them). */
export function detachHostsLab(running: { api: LabDataplane; agents: Map<string, ChildProcess>; etcd: ChildProcess[] }): void {
  running.api.detach();
  for (const p of [...running.agents.values(), ...running.etcd]) {
    for (const pipe of [p.stdin, p.stdout, p.stderr]) pipe?.destroy(); // (etcd's log reader, tee -p, outlives a closed pipe)
    p.unref();
  }
}

export function agentStatePath(lab: Pick<LabInfo, 'runDir'>, host: LabHost): string {
  return join(lab.runDir, `agent-${host.name}.json`);
}

/** The model revision host's agent has live (from its --state file; -1 before the first). */
export async function agentRevision(lab: Pick<LabInfo, 'runDir'>, host: LabHost): Promise<number> {
  try {
    return (JSON.parse(await readFile(agentStatePath(lab, host), 'utf8')) as { revision: number }).revision;
  } catch {
    return -1;
  }
}

export { stopProcess };
