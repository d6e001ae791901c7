/*
 * The chain across three hosts (issue 14), for real: the multi-host lab (src/lab/hosts.ts: host
 * namespaces joined by an underlay bridge, a 3-member etcd on the underlay, `sfc serve --store
 * --driver noop` as the API, one `sfc agent` per host), the client and server on h1, hop 1's three
 * instances on h2, hop 2's on h3, real TCP/UDP from the traffic tool and evidence from the SFs'
 * own flow logs (src/lab/flowlog.ts) and from tshark on the underlay bridge:
 *  - TCP byte-exact, every instance used, each flow on one instance per hop, replies retracing it
 *    (symmetric), traffic outside the classifiers bypassing every SF;
 *  - frames on the underlay are VXLAN (UDP 4789) carrying the chain's MPLS label with SPI and the
 *    next node's SI;
 *  - every agent serves /metrics (sfc serve's names, each series labelled with its host): tables
 *    live at the model's revision, packets on its underlay interface and to the chain's instances;
 *  - an agent killed with -9 and restarted: its host's flows resume on the instances they had;
 *  - etcd members killed (by pid) under traffic: with one gone writes go on; with two gone (no quorum)
 *    writes get 503 and change nothing; the agents forward on the same instances throughout; with
 *    the members back, writes work again and reach every agent.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flowsSeenBySfs, installFlowLog, placement, readFlowLog, repliesRetraced, settledFlowLog, stayedOnOnePath, traceFlows } from '../src/lab/flowlog.js';
import { distFile, metric, parsePrometheus, startTraffic, stopProcess, type LabDataplane, type Sample } from '../src/lab/harness.js';
import type { EtcdCluster } from '../src/lab/etcd-cluster.js';
import { agentRevision, agentsLive, etcdLeader, hostsLabRunning, modelRevision, startAgent, type HostsLab } from '../src/lab/hosts.js';
import { netnsExec, netnsSpawn } from '../src/lab/process.js';
import { CLIENT, SERVER, labDown } from '../src/lab/topology.js';
import type { TcpClientResult, TcpServerResult, UdpRecvResult, UdpSendResult } from '../src/lab/traffic.js';
import { classifier } from './support/e2e.js';
import { snmpCounter } from './support/netns.js';
import { prerequisites } from './support/prereq.js';
import { tsharkFields } from './support/tshark.js';

const LAB = `sfct-mh${process.pid}`;
const TCP_PORT = 5001;
const UDP_PORT = 6001;
const BYPASS_PORT = 7001;
const METRICS_AT = '127.0.0.1:9464';
/** Health checks off: the test counts on its own flow logs. Metrics in each host's namespace. */
const AGENT_ARGS = ['--health-interval', '0', '--metrics', METRICS_AT];

function requirements(): string | null {
  try {
    distFile('cli.js');
    distFile('lab/traffic.js');
  } catch (e) {
    return (e as Error).message;
  }
  return null;
}
const run = prerequisites('multi-host e2e', { root: true, commands: ['ip', 'nft', 'etcd', 'tcpdump', 'tshark'], check: requirements });

describe.skipIf(!run)('a chain over three hosts: agents, VXLAN, etcd', () => {
  let lab: HostsLab;
  let api: LabDataplane;
  let etcd: EtcdCluster;
  const agents = new Map<string, ChildProcess>();

  const start = async (host: string) => agents.set(host, await startAgent(lab, lab.hosts.find((h) => h.name === host)!, AGENT_ARGS));

  beforeAll(async () => {
    await labDown(LAB);
    let started: Map<string, ChildProcess>;
    ({ lab, api, agents: started, cluster: etcd } = await hostsLabRunning({ name: LAB, hops: 2, instances: 3 }, AGENT_ARGS));
    for (const [h, a] of started) agents.set(h, a);
    // Narrow the chain to TCP to 5001-5009 and UDP to 6001-6009 (one API write: live on every agent).
    const portId = async (name: string) => (await api.call<{ ports: { id: string }[] }>('GET', `/v2.0/ports?name=${name}`)).ports[0].id;
    const [client, server] = [await portId('client'), await portId('server')];
    const body = (name: string, protocol: 'tcp' | 'udp', port: number) => ({
      flow_classifier: { ...classifier(name, protocol, port), logical_source_port: client, logical_destination_port: server },
    });
    const { port_chains: chains } = await api.call<{ port_chains: { id: string; flow_classifiers: string[] }[] }>('GET', '/v2.0/sfc/port_chains?name=pc1');
    await api.call('PUT', `/v2.0/sfc/port_chains/${chains[0].id}`, { port_chain: { flow_classifiers: [] } });
    for (const id of chains[0].flow_classifiers) await api.call('DELETE', `/v2.0/sfc/flow_classifiers/${id}`);
    const ids: string[] = [];
    for (const [name, proto, port] of [['tcp-in', 'tcp', TCP_PORT], ['udp-in', 'udp', UDP_PORT]] as const) {
      ids.push((await api.call<{ flow_classifier: { id: string } }>('POST', '/v2.0/sfc/flow_classifiers', body(name, proto, port))).flow_classifier.id);
    }
    await api.call('PUT', `/v2.0/sfc/port_chains/${chains[0].id}`, { port_chain: { flow_classifiers: ids } });
    await agentsLive(lab);
  }, 120_000);

  afterAll(async () => {
    for (const a of agents.values()) await stopProcess(a);
    await api?.stop();
    await labDown(LAB);
  });

  async function tcp(port: number, flows: number, bytes: number) {
    const at = `${SERVER.ip}:${port}`;
    const server = await startTraffic<TcpServerResult>(lab, lab.serverNs, ['tcp-server', '--listen', at, '--flows', String(flows), '--timeout', '60']);
    await server.listening;
    const client = await startTraffic<TcpClientResult>(lab, lab.clientNs, ['tcp-client', '--connect', at, '--flows', String(flows), '--bytes', String(bytes), '--timeout', '60']);
    const [c, s] = await Promise.all([client.result, server.result]);
    return { client: c, server: s };
  }

  it('carries TCP byte-exact across the hosts on every instance, each flow on one instance per hop, replies retracing it; the rest bypasses', async () => {
    await installFlowLog(lab);
    const chained = await tcp(TCP_PORT, 12, 1_000_000);
    const bypass = await tcp(BYPASS_PORT, 2, 200_000);
    for (const { client, server } of [chained, bypass]) {
      expect(client.ok, JSON.stringify(client.flows.filter((f) => !f.ok))).toBe(true);
      expect(server.flows.map((f) => f.ok && f.bytes === f.expected)).toEqual(server.flows.map(() => true));
      expect(server.flows.map((f) => f.sha256).sort()).toEqual(client.flows.map((f) => f.sha256).sort());
    }
    const log = await readFlowLog(lab);
    const traces = traceFlows(lab, log).filter((t) => t.flow.startsWith('tcp/'));
    const seen = flowsSeenBySfs(log);
    const bypassed = traces.filter((t) => !seen.has(t.flow));
    expect(bypassed).toHaveLength(2); // port 7001: no SF saw it
    const chainedTraces = traces.filter((t) => seen.has(t.flow));
    expect(chainedTraces).toHaveLength(12);
    expect(chainedTraces.filter((t) => !repliesRetraced(t))).toEqual([]);
    for (const v of log.sfs) expect(v.fromIn.length, `${v.sf.ns} (on ${lab.hosts.find((h) => h.interfaces.includes(v.sf.ingressIf))!.name}) saw no flow`).toBeGreaterThan(0);
  }, 120_000);

  it('puts VXLAN on the underlay: UDP 4789 between the hosts, the chain\'s MPLS label with SPI and the next node\'s SI inside', async () => {
    const file = join(lab.runDir, 'underlay.pcap');
    const capture = await netnsSpawn(lab.name, lab.underlayNs, ['tcpdump', '-i', 'ul', '-U', '-n', '-w', file, 'udp port 4789'], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      capture.stderr!.on('data', (d: Buffer) => d.toString().includes('listening on') && resolve());
      capture.once('exit', () => reject(new Error('tcpdump exited')));
    });
    await tcp(TCP_PORT, 2, 100_000);
    await stopProcess(capture);
    const rows = tsharkFields(file, ['ip.src', 'ip.dst', 'udp.dstport', 'vxlan.vni', 'mpls.label', 'mpls.bottom'], 'f');
    const inner = tsharkFields(file, ['ip.src', 'ip.dst', 'tcp.dstport', 'tcp.srcport'], 'l');
    expect(rows.length).toBeGreaterThan(20);
    const hostOf = (ip: string) => lab.hosts.find((h) => h.ip === ip)?.name;
    const legs = new Map<string, Set<number>>();
    rows.forEach((r, k) => {
      expect(r['udp.dstport']).toBe('4789');
      const forward = inner[k]['ip.src'] === CLIENT.ip;
      expect(Number(r['vxlan.vni'])).toBe(forward ? 2 : 3); // SPI 1, direction
      const leg = `${forward ? 'fwd' : 'rev'} ${hostOf(r['ip.src'].split(',')[0])}>${hostOf(r['ip.dst'].split(',')[0])}`;
      legs.set(leg, (legs.get(leg) ?? new Set()).add(Number(r['mpls.label'])));
    });
    // label = SPI << 8 | SI: hop 1 (254), hop 2 (253), the destination (252), per leg of each direction.
    expect(Object.fromEntries([...legs].map(([k, v]) => [k, [...v]]))).toEqual({
      'fwd h1>h2': [(1 << 8) | 254],
      'fwd h2>h3': [(1 << 8) | 253],
      'fwd h3>h1': [(1 << 8) | 252],
      'rev h1>h3': [(1 << 8) | 254],
      'rev h3>h2': [(1 << 8) | 253],
      'rev h2>h1': [(1 << 8) | 252],
    });
  }, 60_000);

  /** One agent's /metrics, scraped from inside its host's namespace. */
  async function scrape(ns: string): Promise<Sample[]> {
    const get = `fetch('http://${METRICS_AT}/metrics').then(async (r) => process.stdout.write(r.status + '\\n' + (await r.text())))`;
    const { stdout } = await netnsExec(ns, [process.execPath, '-e', get]);
    const [status, ...text] = stdout.split('\n');
    expect(status).toBe('200');
    return parsePrometheus(text.join('\n'));
  }

  it('every agent serves /metrics with its host label: tables at the live revision, underlay and instance packets', async () => {
    await tcp(TCP_PORT, 2, 100_000);
    const revision = await agentsLive(lab);
    let instancePackets = 0;
    for (const h of lab.hosts) {
      const samples = await scrape(h.ns);
      expect(samples.filter((x) => x.labels.host !== h.name).map((x) => x.name)).toEqual([]);
      expect(metric(samples, 'sfc_state_revision')).toBe(revision);
      expect(metric(samples, 'sfc_table_generation')).toBeGreaterThan(0);
      expect(metric(samples, 'sfc_interface_packets_total', { interface: 'ul0', direction: 'rx' }), `${h.name} ul0 rx`).toBeGreaterThan(0);
      expect(metric(samples, 'sfc_interface_packets_total', { interface: 'ul0', direction: 'tx' }), `${h.name} ul0 tx`).toBeGreaterThan(0);
      instancePackets += metric(samples, 'sfc_instance_packets_total', { chain: 'pc1' });
    }
    expect(instancePackets).toBeGreaterThan(0);
  }, 60_000);

  it('an agent killed with -9 and restarted: its host\'s flows resume on the instances they had', async () => {
    await installFlowLog(lab);
    const recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:${UDP_PORT}`, '--idle', '3', '--seconds', '90']);
    await recv.listening;
    const send = await startTraffic<UdpSendResult>(lab, lab.clientNs, ['udp-send', '--connect', `${SERVER.ip}:${UDP_PORT}`, '--flows', '24', '--pps', '600', '--seconds', '90']);
    const before = traceFlows(lab, await settledFlowLog(lab, 24));
    expect(before).toHaveLength(24);
    expect(before.filter((t) => !stayedOnOnePath(t))).toEqual([]);

    const h2 = lab.hosts.find((h) => h.name === 'h2')!;
    const victim = agents.get('h2')!;
    const gone = new Promise((resolve) => victim.once('exit', resolve));
    process.kill(victim.pid!, 'SIGKILL');
    await gone;
    // The restarted agent reads the model again from etcd.
    await start('h2');
    await agentsLive(lab);
    await installFlowLog(lab);
    const after = traceFlows(lab, await settledFlowLog(lab, 24));
    expect(after).toHaveLength(24);
    expect(after.filter((t) => !stayedOnOnePath(t))).toEqual([]);
    expect(placement(after)).toEqual(placement(before));
    expect(await agentRevision(lab, h2)).toBeGreaterThan(0);
    send.child.kill('SIGTERM');
    await send.result;
    await recv.result;
  }, 120_000);

  /** Until the server's stack has received `n` more UDP datagrams than now (the chain still delivers). */
  async function delivered(n: number, ms = 15_000): Promise<void> {
    const from = snmpCounter(lab.serverNs, 'Udp', 'InDatagrams');
    for (const end = Date.now() + ms; ; await sleep(100)) {
      const now = snmpCounter(lab.serverNs, 'Udp', 'InDatagrams');
      if (now >= from + n) return;
      if (Date.now() > end) throw new Error(`the server received ${now - from} datagrams in ${ms} ms, expected ${n}`);
    }
  }

  /** How many lines of host's agent log contain `text`. */
  const logLines = (host: string, text: string) => readFileSync(join(lab.runDir, `agent-${host}.log`), 'utf8').split('\n').filter((l) => l.includes(text)).length;

  /** Until every agent's log has one more line containing `text` than `before` counted. */
  async function everyAgentLogs(text: string, before: Map<string, number>, ms = 20_000): Promise<void> {
    for (const end = Date.now() + ms; ; await sleep(200)) {
      const behind = lab.hosts.filter((h) => logLines(h.name, text) <= before.get(h.name)!).map((h) => h.name);
      if (behind.length === 0) return;
      if (Date.now() > end) throw new Error(`agents ${behind.join(', ')} did not log '${text}' within ${ms} ms`);
    }
  }
  const counts = (text: string) => new Map(lab.hosts.map((h) => [h.name, logLines(h.name, text)]));

  it('forwards while etcd members die: one gone, writes go on; two gone, writes get 503 and change nothing; back, writes reach every agent', async () => {
    const chainId = (await api.call<{ port_chains: { id: string }[] }>('GET', '/v2.0/sfc/port_chains?name=pc1')).port_chains[0].id;
    const chainPath = `/v2.0/sfc/port_chains/${chainId}`;
    const setDescription = (description: string) => api.request('PUT', chainPath, { port_chain: { description } });
    const description = async () => (await api.call<{ port_chain: { description: string } }>('GET', chainPath)).port_chain.description;

    await installFlowLog(lab);
    const recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:${UDP_PORT}`, '--idle', '3', '--seconds', '120']);
    await recv.listening;
    const send = await startTraffic<UdpSendResult>(lab, lab.clientNs, ['udp-send', '--connect', `${SERVER.ip}:${UDP_PORT}`, '--flows', '24', '--pps', '600', '--seconds', '100']);
    const before = placement(traceFlows(lab, await settledFlowLog(lab, 24)));
    expect(before.size).toBe(24);

    // One member (the leader) gone: the write commits and every agent has it live; traffic goes on.
    const leader = await etcdLeader(lab);
    expect(leader).toBeGreaterThanOrEqual(0);
    await etcd.kill(leader);
    expect((await setDescription('one member down')).status).toBe(200);
    const oneDown = await agentsLive(lab);
    await delivered(600);

    // Two gone (no quorum): the write is refused with a 503 and applied nowhere; agents forward with
    // their last state, also once their leases are lost (no keep-alive answered for the lease TTL).
    const lost = counts('lease lost');
    const republished = counts('published again');
    const second = [0, 1, 2].find((i) => i !== leader)!;
    await etcd.kill(second);
    const refused = await setDescription('no quorum');
    expect(refused.status).toBe(503);
    expect(JSON.parse(refused.body).NeutronError.type).toBe('ServiceUnavailable');
    expect(await description()).toBe('one member down');
    await delivered(1200);
    await everyAgentLogs('lease lost', lost);
    await delivered(600);

    // Both back: the refused change never surfaces, a new write works and reaches every agent.
    await etcd.restart(second);
    await etcd.restart(leader);
    expect(await description()).toBe('one member down');
    expect((await setDescription('members back')).status).toBe(200);
    expect(await agentsLive(lab)).toBeGreaterThan(oneDown);
    expect(await modelRevision(lab)).toBeGreaterThan(oneDown);
    await everyAgentLogs('published again', republished);
    await delivered(600);

    // Throughout, each flow stayed on the instances it had (the flow log holds every instance that carried it).
    const after = traceFlows(lab, await settledFlowLog(lab, 24));
    expect(after.filter((t) => !stayedOnOnePath(t))).toEqual([]);
    expect(placement(after)).toEqual(before);
    send.child.kill('SIGTERM');
    await send.result;
    await recv.result;
  }, 120_000);
});
