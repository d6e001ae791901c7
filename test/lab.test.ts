/*
 * The lab itself, validated with real kernel parts: a Linux bridge stands in for the dataplane
 * (test only), real ping and TCP through the traffic tool, real L3 forwarding in an SF namespace.
 * Also the traffic tool's own checks (corruption, loss, reordering) over loopback.
 */
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  CLIENT,
  DP_DROP_TABLE,
  SERVER,
  existingNamespaces,
  labDown,
  labStatus,
  labUp,
  netnsExec,
  netnsSpawn,
  runDir,
  type Lab,
} from '../src/lab/topology.js';
import {
  latencySummary,
  nextEvent,
  type ListeningEvent,
  type TcpClientResult,
  type TcpServerResult,
  type UdpRecvResult,
  type UdpSendResult,
} from '../src/lab/traffic.js';
import { prerequisites } from './support/prereq.js';

const TRAFFIC = fileURLToPath(new URL('../dist/src/lab/traffic.js', import.meta.url));
const built = () => (existsSync(TRAFFIC) ? null : `${TRAFFIC} missing: run npm run build`);
const LAB = 'sfct-lab';

type Json = Record<string, unknown>;

const runLab = prerequisites('lab', { root: true, commands: ['ip', 'nft', 'ping', 'sysctl'], check: built });

describe.skipIf(!runLab)('lab (network namespaces)', () => {
  let lab: Lab;
  let tmp: string;

  beforeAll(async () => {
    await labDown(LAB);
    tmp = await mkdtemp(join(tmpdir(), 'sfct-lab-'));
    lab = await labUp({ name: LAB, hops: 2, instances: 2, out: join(tmp, 'chains.yaml') });
  });

  afterAll(async () => {
    await labDown(LAB);
    await rm(tmp, { recursive: true, force: true });
  });

  const links = async (ns: string) => {
    const { stdout } = await netnsExec(ns, ['ip', '-j', 'addr', 'show']);
    return JSON.parse(stdout) as { ifname: string; address: string; operstate: string; addr_info: { local: string }[] }[];
  };

  it('creates the namespaces and interfaces with the fixed names and MACs', async () => {
    expect(await existingNamespaces(LAB)).toEqual(
      [`${LAB}-client`, `${LAB}-dp`, `${LAB}-server`, `${LAB}-sf11`, `${LAB}-sf12`, `${LAB}-sf21`, `${LAB}-sf22`].sort(),
    );
    const client = (await links(lab.clientNs)).find((l) => l.ifname === 'eth0')!;
    expect(client.address).toBe('02:00:00:00:00:01');
    expect(client.addr_info.map((a) => a.local)).toEqual(expect.arrayContaining(['10.0.0.1', 'fd00::1']));
    const server = (await links(lab.serverNs)).find((l) => l.ifname === 'eth0')!;
    expect(server.address).toBe('02:00:00:00:00:02');
    expect(server.addr_info.map((a) => a.local)).toEqual(expect.arrayContaining(['10.0.0.2', 'fd00::2']));
    for (const h of [1, 2]) {
      for (const k of [1, 2]) {
        const sf = await links(`${LAB}-sf${h}${k}`);
        expect(sf.find((l) => l.ifname === 'in0')?.address).toBe(`02:00:00:00:${h}${k}:01`);
        expect(sf.find((l) => l.ifname === 'out0')?.address).toBe(`02:00:00:00:${h}${k}:02`);
      }
    }
    const dp = await links(lab.dpNs);
    expect(dp.map((l) => l.ifname).sort()).toEqual(
      ['lo', 'cli0', 'srv0', 'sf11i', 'sf11e', 'sf12i', 'sf12e', 'sf21i', 'sf21e', 'sf22i', 'sf22e'].sort(),
    );
    for (const l of dp.filter((x) => x.ifname !== 'lo')) {
      expect(l.operstate, l.ifname).toBe('UP');
      expect(l.addr_info, `${l.ifname} has no addresses`).toEqual([]);
    }
  });

  it('configures the dataplane namespace: RPS off, IPv6 off, ingress drop chain on every interface', async () => {
    const rps = await netnsExec(lab.dpNs, ['sh', '-c', 'cat /sys/class/net/*/queues/rx-*/rps_cpus']);
    expect(rps.stdout.split('\n').filter(Boolean).every((m) => /^0+$/.test(m.replace(/,/g, '')))).toBe(true);
    const v6 = await netnsExec(lab.dpNs, ['sysctl', '-n', 'net.ipv6.conf.cli0.disable_ipv6']);
    expect(v6.stdout.trim()).toBe('1');
    // nft's JSON output omits a multi-device chain's devices: read the text form.
    const nft = (await netnsExec(lab.dpNs, ['nft', 'list', 'table', 'netdev', DP_DROP_TABLE])).stdout;
    const m = /hook ingress devices = \{ ([^}]*) \} priority \d+; policy drop;/.exec(nft);
    expect(m, nft).not.toBeNull();
    expect(m![1].split(', ').sort()).toEqual([...lab.dpInterfaces].sort());
  });

  it('writes the chain config with the lab names and MACs', async () => {
    const config = parse(await readFile(lab.configPath, 'utf8'));
    expect(config).toEqual(parse(lab.configYaml));
    const macOf = new Map<string, string>(
      config.ports.map((p: Json) => [(p['binding:profile'] as Json).interface, p.mac_address]),
    );
    expect(macOf.get('cli0')).toBe(CLIENT.mac);
    expect(macOf.get('srv0')).toBe(SERVER.mac);
    expect(macOf.get('sf21i')).toBe('02:00:00:00:21:01');
    expect(macOf.get('sf12e')).toBe('02:00:00:00:12:02');
    expect(config.port_pair_groups.map((g: Json) => g.port_pairs)).toEqual([
      ['pp11', 'pp12'],
      ['pp21', 'pp22'],
    ]);
    const [chain] = config.port_chains;
    expect(chain.port_pair_groups).toEqual(['ppg1', 'ppg2']);
    expect(chain.chain_parameters.symmetric).toBe(true);
    expect(config.flow_classifiers[0]).toMatchObject({ logical_source_port: 'client', logical_destination_port: 'server' });
  });

  it('carries ping and a verified TCP transfer between client and server over a bridge standing in for the dataplane', async () => {
    const dp = (...args: string[]) => netnsExec(lab.dpNs, ['ip', ...args]);
    await dp('link', 'add', 'br0', 'type', 'bridge');
    await dp('link', 'set', 'cli0', 'master', 'br0');
    await dp('link', 'set', 'srv0', 'master', 'br0');
    await dp('link', 'set', 'br0', 'up');
    try {
      // The drop chain sits before any rx_handler: with it, the bridge never sees a frame.
      const blocked = await netnsExec(lab.clientNs, ['ping', '-c', '1', '-W', '1', SERVER.ip], { check: false });
      expect(blocked.code).not.toBe(0);
      await netnsExec(lab.dpNs, ['nft', 'delete', 'table', 'netdev', DP_DROP_TABLE]);
      const ping = await netnsExec(lab.clientNs, ['ping', '-c', '2', '-i', '0.2', '-W', '2', SERVER.ip]);
      expect(ping.stdout).toMatch(/2 received/);
      expect(ping.stdout).toMatch(/ttl=64/);
      const ping6 = await netnsExec(lab.clientNs, ['ping', '-c', '1', '-W', '2', SERVER.ip6]);
      expect(ping6.stdout).toMatch(/1 received/);

      const server = await netnsSpawn(LAB, lab.serverNs, [
        process.execPath, TRAFFIC, 'tcp-server', '--listen', `${SERVER.ip}:5201`, '--flows', '4', '--timeout', '30',
      ]);
      const serverResult = nextEvent<TcpServerResult>(server, (j) => j.event === 'result');
      await nextEvent<ListeningEvent>(server, (j) => j.event === 'listening');
      const client = await netnsExec(lab.clientNs, [
        process.execPath, TRAFFIC, 'tcp-client', '--connect', `${SERVER.ip}:5201`, '--flows', '4', '--bytes', '3000001', '--seed', '42',
      ], { check: false });
      const clientResult = JSON.parse(client.stdout.trim().split('\n').pop()!) as TcpClientResult;
      const received = await serverResult;
      expect(clientResult.ok).toBe(true);
      expect(received.ok).toBe(true);
      expect(received.flows.map((f) => f.bytes)).toEqual([3000001, 3000001, 3000001, 3000001]);
      expect(received.flows.map((f) => f.sha256)).toEqual(clientResult.flows.map((f) => f.sha256));
      expect(new Set(received.flows.map((f) => f.sha256)).size).toBe(4);
    } finally {
      await dp('link', 'del', 'br0');
    }
  });

  it('forwards at L3 through an SF namespace, decrementing the TTL, both ways and for IPv6', async () => {
    // Bridges cli0+sf11i and sf11e+srv0; the endpoints point at the SF as their next hop.
    const dp = (...args: string[]) => netnsExec(lab.dpNs, ['ip', ...args]);
    for (const [br, a, b] of [['bra', 'cli0', 'sf11i'], ['brb', 'sf11e', 'srv0']]) {
      await dp('link', 'add', br, 'type', 'bridge');
      await dp('link', 'set', a, 'master', br);
      await dp('link', 'set', b, 'master', br);
      await dp('link', 'set', br, 'up');
    }
    const neigh = (ns: string, ip: string, mac: string) =>
      netnsExec(ns, ['ip', 'neigh', 'replace', ip, 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent']);
    try {
      await neigh(lab.clientNs, SERVER.ip, '02:00:00:00:11:01');
      await neigh(lab.clientNs, SERVER.ip6, '02:00:00:00:11:01');
      await neigh(lab.serverNs, CLIENT.ip, '02:00:00:00:11:02');
      await neigh(lab.serverNs, CLIENT.ip6, '02:00:00:00:11:02');
      // Request 64 -> 63 at the server; the reply is routed back through the SF: 63 at the client.
      const ping = await netnsExec(lab.clientNs, ['ping', '-c', '2', '-i', '0.2', '-W', '2', SERVER.ip]);
      expect(ping.stdout).toMatch(/2 received/);
      expect(ping.stdout).toMatch(/ttl=63/);
      const ping6 = await netnsExec(lab.clientNs, ['ping', '-c', '1', '-W', '2', SERVER.ip6]);
      expect(ping6.stdout).toMatch(/ttl=63/);
      const forwarded = await netnsExec(`${LAB}-sf11`, ['nstat', '-az', 'IpForwDatagrams']);
      expect(Number(forwarded.stdout.match(/IpForwDatagrams\s+(\d+)/)![1])).toBeGreaterThanOrEqual(4);
    } finally {
      await dp('link', 'del', 'bra');
      await dp('link', 'del', 'brb');
      for (const [ns, ip] of [[lab.clientNs, SERVER.ip], [lab.clientNs, SERVER.ip6], [lab.serverNs, CLIENT.ip], [lab.serverNs, CLIENT.ip6]]) {
        await netnsExec(ns, ['ip', 'neigh', 'del', ip, 'dev', 'eth0'], { check: false });
      }
    }
  });

  it('lab down removes namespaces and processes, and a second down is fine', async () => {
    const recorded = await netnsSpawn(LAB, lab.serverNs, ['sleep', '300']);
    const stray = spawn('ip', ['netns', 'exec', `${LAB}-sf11`, 'sleep', '300']);
    const gone = Promise.all([recorded, stray].map((c) => new Promise((r) => c.once('exit', r))));
    const status = await labStatus(LAB);
    expect(status.pids.find((p) => p.pid === recorded.pid)?.alive).toBe(true);
    expect(status.namespaces.length).toBe(7);
    await labDown(LAB);
    await gone;
    expect(await existingNamespaces(LAB)).toEqual([]);
    expect(existsSync(runDir(LAB))).toBe(false);
    await labDown(LAB);
    expect((await labStatus(LAB)).namespaces).toEqual([]);
  });
});

const runTool = prerequisites('traffic tool', { check: built });

describe.skipIf(!runTool)('traffic tool (loopback)', () => {
  const tool = (...args: string[]) => spawn(process.execPath, [TRAFFIC, ...args]);

  it('the TCP server rejects a flow whose bytes differ from the seeded stream', async () => {
    const server = tool('tcp-server', '--listen', '127.0.0.1:0', '--flows', '1', '--timeout', '10');
    const result = nextEvent<TcpServerResult>(server, (j) => j.event === 'result');
    const { port } = await nextEvent<ListeningEvent>(server, (j) => j.event === 'listening');
    const header = Buffer.alloc(20);
    header.writeUInt32BE(0x53464354, 0);
    header.writeUInt32BE(0, 4); // flow
    header.writeUInt32BE(1, 8); // seed
    header.writeUInt32BE(0, 12);
    header.writeUInt32BE(1000, 16); // bytes
    const answer = await new Promise<Buffer>((done) => {
      const sock = createConnection({ host: '127.0.0.1', port }, () => sock.end(Buffer.concat([header, Buffer.alloc(1000, 7)])));
      const parts: Buffer[] = [];
      sock.on('data', (d: Buffer) => parts.push(d));
      sock.on('close', () => done(Buffer.concat(parts)));
    });
    expect(answer[0]).toBe(0);
    const r = await result;
    expect(r.ok).toBe(false);
    expect(r.flows[0]).toMatchObject({ bytes: 1000, ok: false });
  });

  it('the TCP client and server agree on a multi-flow transfer', async () => {
    const server = tool('tcp-server', '--listen', '127.0.0.1:0', '--flows', '3', '--timeout', '10');
    const result = nextEvent<TcpServerResult>(server, (j) => j.event === 'result');
    const { port } = await nextEvent<ListeningEvent>(server, (j) => j.event === 'listening');
    const client = tool('tcp-client', '--connect', `127.0.0.1:${port}`, '--flows', '3', '--bytes', '100003');
    const sent = await nextEvent<TcpClientResult>(client, (j) => j.event === 'result');
    const got = await result;
    expect(sent.ok && got.ok).toBe(true);
    expect(got.flows.map((f) => f.sha256)).toEqual(sent.flows.map((f) => f.sha256));
  });

  it('the UDP receiver counts loss, reordering and duplicates per flow', async () => {
    const recv = tool('udp-recv', '--listen', '127.0.0.1:0', '--idle', '0.5');
    const result = nextEvent<UdpRecvResult>(recv, (j) => j.event === 'result');
    const { port } = await nextEvent<ListeningEvent>(recv, (j) => j.event === 'listening');
    const sock = createSocket('udp4');
    const send = (seq: number) =>
      new Promise<void>((done) => {
        const b = Buffer.alloc(22);
        b.writeUInt32BE(0x53464355, 0);
        b.writeUInt32BE(seq, 8);
        const now = process.hrtime.bigint();
        b.writeUInt32BE(Number(now >> 32n), 12);
        b.writeUInt32BE(Number(now & 0xffffffffn), 16);
        sock.send(b, port, '127.0.0.1', () => done());
      });
    for (const seq of [0, 1, 3, 2, 3, 6]) await send(seq);
    const r = await result;
    sock.close();
    expect(r).toMatchObject({ received: 5, lost: 2, reordered: 1, duplicates: 1 });
    expect(r.flows).toHaveLength(1);
    expect(r.latency_us.n).toBe(6);
    expect(r.latency_us.p50).toBeGreaterThan(0);
  });

  it('udp-send paces and the receiver sees every packet over loopback', async () => {
    const recv = tool('udp-recv', '--listen', '127.0.0.1:0', '--idle', '0.5', '--expect', '300');
    const result = nextEvent<UdpRecvResult>(recv, (j) => j.event === 'result');
    const { port } = await nextEvent<ListeningEvent>(recv, (j) => j.event === 'listening');
    const sender = tool('udp-send', '--connect', `127.0.0.1:${port}`, '--flows', '3', '--sport', String(30000 + Math.floor(Math.random() * 30000)), '--pps', '1000', '--count', '300');
    const sent = await nextEvent<UdpSendResult>(sender, (j) => j.event === 'result');
    const r = await result;
    expect(sent.sent).toBe(300);
    expect(sent.seconds).toBeGreaterThan(0.25); // 300 packets at 1,000 pps take ~0.3 s
    expect(r).toMatchObject({ ok: true, received: 300, lost: 0 });
    expect(r.flows).toHaveLength(3);
  });

  it('latency percentiles are nearest-rank over the samples', () => {
    const ns = Float64Array.from({ length: 100 }, (_, i) => (100 - i) * 1000);
    expect(latencySummary(ns)).toEqual({ n: 100, p50: 50, p90: 90, p99: 99, max: 100 });
    expect(latencySummary(new Float64Array(0)).n).toBe(0);
  });
});
