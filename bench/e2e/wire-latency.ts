/*
 * One-way latency at the wire, for bench/e2e's latency runs: tcpdump on the client's and the
 * server's eth0 records each packet of the latency tool with the kernel's timestamp (taken where
 * the packet passes the interface's taps, in nanoseconds, one host clock), so the figure is the
 * path between the two interfaces — forwarder, SFs and veths — without the sending and receiving
 * processes' own scheduling, which on this 2-CPU machine dominates the tool's p99. Packets are
 * paired by the tool's flow and sequence number (lab/traffic.ts payload: magic, flow, sequence).
 */
import type { ChildProcess } from 'node:child_process';
import { readPcap } from '../../src/dataplane/io/pcapio.js';
import { netnsSpawn } from '../../src/lab/topology.js';
import { latencySummary, type LatencySummary } from '../../src/lab/traffic.js';
import { GENERATOR_CPU, stopGroup } from './measure.js';

const UDP_MAGIC = 0x53464355;

/** tcpdump on eth0 of `ns`, UDP to `port`, into `file`; resolves once it is capturing. */
export async function startWireCapture(lab: string, ns: string, file: string, port: number): Promise<ChildProcess> {
  const argv = ['tcpdump', '-i', 'eth0', '-n', '-U', '-s', '128', '--time-stamp-precision', 'nano', '-w', file, 'udp', 'dst', 'port', String(port)];
  const child = await netnsSpawn(lab, ns, argv, { cpu: GENERATOR_CPU, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let said = '';
    child.stderr!.on('data', (d: Buffer) => {
      said += d.toString();
      if (said.includes('listening on')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`tcpdump in ${ns} exited (${code}): ${said.trim()}`)));
  });
  return child;
}

/** Stop a capture and wait until its file is complete. */
export const stopWireCapture = (child: ChildProcess) => stopGroup(child, 'SIGINT');

/** Capture time (ns) of each latency-tool packet in a pcap, keyed flow * 2^32 + sequence. */
async function toolPackets(file: string): Promise<Map<number, number>> {
  const at = new Map<number, number>();
  for (const { data, timeNs } of (await readPcap(file)).frames) {
    if (data.length < 14 + 20 + 8 + 12 || data[12] !== 0x08 || data[13] !== 0x00) continue; // IPv4 only
    const payload = new DataView(data.buffer, data.byteOffset + 14 + (data[14] & 0x0f) * 4 + 8);
    if (payload.byteLength < 12 || payload.getUint32(0) !== UDP_MAGIC) continue;
    at.set(payload.getUint32(4) * 2 ** 32 + payload.getUint32(8), timeNs);
  }
  return at;
}

/** Per packet seen on both sides: received - sent (one-way, the wire between the two interfaces). */
export async function wireLatency(sentPcap: string, receivedPcap: string): Promise<LatencySummary & { unmatched: number }> {
  const sent = await toolPackets(sentPcap);
  const received = await toolPackets(receivedPcap);
  const ns = new Float64Array(received.size);
  let n = 0;
  for (const [key, t] of received) {
    const s = sent.get(key);
    if (s !== undefined) ns[n++] = t - s;
  }
  return { ...latencySummary(ns.subarray(0, n)), unmatched: sent.size - n };
}
