/*
 * What bench/e2e measures and how (LAB-NOTES): trafgen offers 64-byte UDP frames (client ->
 * server MAC, 10.0.0.1 -> 10.0.0.2:9, TTL 64; flows = incrementing source ports) from L-client,
 * pinned to CPU 0. The sink is an nftables netdev ingress table on the server's eth0 that counts
 * frames to udp/9 by condition (dst MAC = the server's, and TTL 64 / 62) and then drops them, so
 * the server's own stack does no work. Offered = the client eth0's tx_packets. Forwarder CPU =
 * utime+stime of its whole thread group (/proc/<pid>/stat), before/after.
 */
import type { ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLIENT, SERVER, netnsExec, netnsSpawn, processCpuMicros, type Lab } from '../../src/lab/topology.js';

export const SINK_TABLE = 'sfc_sink';
export const BENCH_UDP_PORT = 9;
export const FRAME_BYTES = 64;
export const GENERATOR_CPU = 0;

/**
 * trafgen packet config: `flows` distinct source ports (1,024.. for up to 64,512 flows, else the
 * whole 16-bit range), UDP checksums computed by trafgen, frame of FRAME_BYTES without FCS.
 */
export function trafgenConfig(flows: number): string {
  if (flows < 1 || flows > 65536) throw new Error(`flows must be 1..65536, got ${flows}`);
  const first = flows <= 65536 - 1024 ? 1024 : 0;
  const payload = FRAME_BYTES - 14 - 20 - 8;
  return [
    '{',
    `  eth(da=${SERVER.mac}, sa=${CLIENT.mac}),`,
    `  ipv4(saddr=${CLIENT.ip}, daddr=${SERVER.ip}, ttl=64),`,
    `  udp(sp=dinc(${first}, ${first + flows - 1}, 1), dp=${BENCH_UDP_PORT}),`,
    `  fill(0, ${payload})`,
    '}',
    '',
  ].join('\n');
}

export async function installSink(lab: Lab): Promise<void> {
  await netnsExec(lab.serverNs, ['nft', 'delete', 'table', 'netdev', SINK_TABLE], { check: false });
  const mac = SERVER.mac;
  await netnsExec(lab.serverNs, ['nft', '-f', '-'], {
    input: `table netdev ${SINK_TABLE} {
  counter c_all {}
  counter c_mac {}
  counter c_mac_ttl62 {}
  counter c_mac_ttl64 {}
  chain sink {
    type filter hook ingress device eth0 priority 0; policy accept;
    udp dport ${BENCH_UDP_PORT} jump tally
  }
  chain tally {
    counter name c_all
    ether daddr ${mac} counter name c_mac
    ether daddr ${mac} ip ttl 62 counter name c_mac_ttl62
    ether daddr ${mac} ip ttl 64 counter name c_mac_ttl64
    drop
  }
}
`,
  });
}

export interface SinkCounts {
  all: number;
  mac: number;
  mac_ttl62: number;
  mac_ttl64: number;
}

async function readSink(lab: Lab): Promise<SinkCounts> {
  const { stdout } = await netnsExec(lab.serverNs, ['nft', '-j', 'list', 'counters', 'table', 'netdev', SINK_TABLE]);
  const counts: Record<string, number> = {};
  for (const o of JSON.parse(stdout).nftables as { counter?: { name: string; packets: number } }[]) {
    if (o.counter) counts[o.counter.name.replace(/^c_/, '')] = o.counter.packets;
  }
  return { all: counts.all ?? 0, mac: counts.mac ?? 0, mac_ttl62: counts.mac_ttl62 ?? 0, mac_ttl64: counts.mac_ttl64 ?? 0 };
}

async function readTxPackets(ns: string, ifname: string): Promise<number> {
  const { stdout } = await netnsExec(ns, ['cat', `/sys/class/net/${ifname}/statistics/tx_packets`]);
  return Number(stdout.trim());
}

export interface Snapshot {
  ms: number;
  offered: number;
  sink: SinkCounts;
  cpuUs: number | null;
}

/** Counters at one moment: the offered count is read before and after the sink and averaged. */
export async function snapshot(lab: Lab, pid: number | null): Promise<Snapshot> {
  const before = performance.now();
  const offered1 = await readTxPackets(lab.clientNs, 'eth0');
  const cpuUs = pid === null ? null : processCpuMicros(pid);
  const sink = await readSink(lab);
  const offered2 = await readTxPackets(lab.clientNs, 'eth0');
  return { ms: (before + performance.now()) / 2, offered: (offered1 + offered2) / 2, sink, cpuUs };
}

/** trafgen in L-client on the generator CPU, in its own process group (it forks a worker). */
export async function startGenerator(lab: Lab, confPath: string): Promise<ChildProcess> {
  const child = await netnsSpawn(
    lab.name,
    lab.clientNs,
    ['trafgen', '--dev', 'eth0', '--conf', confPath, '--cpus', '1', '--no-sock-mem', '--notouch-irq', '--no-cpu-stats'],
    { cpu: GENERATOR_CPU, detached: true, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-2000)));
  child.once('exit', (code) => {
    if (code) process.stderr.write(`e2e: trafgen exited ${code}: ${stderr.trim()}\n`);
  });
  return child;
}

/** Signal a detached child's whole group; SIGKILL if it is still there after `graceMs`. */
export async function stopGroup(child: ChildProcess, signal: NodeJS.Signals, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise((r) => child.once('exit', r));
  const send = (sig: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      // group already gone
    }
  };
  send(signal);
  if ((await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)])) === false) {
    send('SIGKILL');
    await exited;
  }
}

export async function writeTrafgenConfigs(dir: string, flowCounts: number[]): Promise<Map<number, string>> {
  const paths = new Map<number, string>();
  for (const flows of flowCounts) {
    const path = join(dir, `trafgen-${flows}.cfg`);
    await writeFile(path, trafgenConfig(flows));
    paths.set(flows, path);
  }
  return paths;
}
