/*
 * The crash target with traffic (bench/crashload.ts): `sfc serve` with the userspace driver
 * (afpacket) inside the lab's dataplane namespace (LabDataplane, restarted on the same state file),
 * serving the lab's symmetric two-hop chain with two instances per hop, while UDP flows from the
 * client to the server cross it for the whole run.
 *
 * After every (re)start, the SFs' own flow logs (src/lab/flowlog.ts, reset at each restart) must
 * show every flow reaching the server again, each on one instance per hop, and on the instances it
 * had at the first start: selection must not depend on anything a restart changes. The first start
 * also requires both instances of each hop to carry flows, or "the same instances" would prove
 * nothing.
 */
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { backendNamed } from '../src/dataplane/io/registry.js';
import { installFlowLog, placement, settledFlowLog, stayedOnOnePath, traceFlows } from '../src/lab/flowlog.js';
import { LabDataplane, labUpFor, startTraffic, stopProcess, type TrafficRun } from '../src/lab/harness.js';
import { SERVER, labDown, type Lab } from '../src/lab/topology.js';
import type { UdpRecvResult, UdpSendResult } from '../src/lab/traffic.js';
import type { CrashTarget } from './crashload.js';

const UDP_PORT = 5302;

/**
 * Kill window for the rounds against this target: each write here republishes the dataplane's
 * tables (fewer writes a second than noop), and each round's restart check takes a second or two.
 */
export const CHAIN_ACKS_BEFORE_KILL: [number, number] = [10, 40];

export interface ChainTargetOptions {
  /** Lab name (namespaces are named after it). */
  name: string;
  /** UDP flows (fixed source ports) and their total rate. */
  flows?: number;
  pps?: number;
}

export interface ChainTarget extends CrashTarget {
  /** Stop the traffic and the dataplane, take the lab down; returns what the traffic tools saw. */
  close(): Promise<{ sent: number; received: number } | undefined>;
}

/** Build the lab, start the traffic; the rounds then start and kill the dataplane. */
export async function chainTarget(opts: ChainTargetOptions): Promise<ChainTarget> {
  const flows = opts.flows ?? 32;
  const backend = backendNamed('afpacket');
  await labDown(opts.name);
  const lab: Lab = await labUpFor(backend, { name: opts.name, hops: 2, instances: 2, symmetric: true });
  const state = join(lab.runDir, 'crash-state.json');
  await rm(state, { force: true });
  let dp: LabDataplane | undefined;
  let recv: TrafficRun<UdpRecvResult> | undefined;
  let send: TrafficRun<UdpSendResult> | undefined;
  let first: Map<string, string[]> | undefined;

  const startTrafficOnce = async () => {
    if (recv) return;
    // Long enough for any run; stopped by close(). Outages last as long as a restart.
    recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:${UDP_PORT}`, '--seconds', '3600', '--idle', '60']);
    await recv.listening;
    send = await startTraffic<UdpSendResult>(lab, lab.clientNs, [
      'udp-send', '--connect', `${SERVER.ip}:${UDP_PORT}`, '--flows', String(flows), '--pps', String(opts.pps ?? 1600), '--seconds', '3600',
    ]);
  };

  const kill = async () => {
    if (!dp) return;
    if (dp.running) process.kill(dp.pid, 'SIGKILL');
    await dp.stop(); // waits for the exit; stops the relay
  };

  return {
    async start() {
      dp = await LabDataplane.start(lab, { backend: 'afpacket', config: lab.configPath, state });
      const d = dp;
      return (method, path, body) => d.request(method, path, body);
    },

    kill,

    async checkRestart() {
      // Reset the SFs' logs: from now on only this dataplane's forwarding shows.
      await installFlowLog(lab);
      await startTrafficOnce();
      const traces = traceFlows(lab, await settledFlowLog(lab, flows));
      const broken: string[] = [];
      if (traces.length < flows) broken.push(`traffic did not resume: ${traces.length} of ${flows} flows reached the server within 10 s`);
      const split = traces.filter((t) => !stayedOnOnePath(t)).map((t) => `${t.flow} ${JSON.stringify(t.forward)}`);
      if (split.length > 0) broken.push(`flows not on one instance per hop: ${split.join('; ')}`);
      const now = placement(traces);
      if (!first) {
        first = now;
        for (let h = 0; h < lab.hops; h++) {
          const used = new Set([...now.values()].map((p) => p[h]));
          if (used.size < 2) broken.push(`hop ${h + 1}: every flow on instance ${[...used].join()}: the placement check would prove nothing`);
        }
        return broken;
      }
      const moved = [...first].filter(([flow, was]) => now.has(flow) && now.get(flow)!.join('/') !== was.join('/'));
      if (moved.length > 0) broken.push(`${moved.length} flows moved: ${moved.slice(0, 5).map(([f, was]) => `${f} ${was.join('/')} -> ${now.get(f)!.join('/')}`).join('; ')}`);
      return broken;
    },

    async close() {
      let figures: { sent: number; received: number } | undefined;
      try {
        send?.child.kill('SIGTERM'); // the sender reports and ends
        recv?.child.kill('SIGTERM');
        const [s, r] = await Promise.all([send?.result, recv?.result].map((p) => p?.catch(() => undefined)));
        if (s && r) figures = { sent: (s as UdpSendResult).sent, received: (r as UdpRecvResult).received };
      } finally {
        await Promise.all([send, recv].map((t) => (t ? stopProcess(t.child, 2000) : undefined)));
        await kill();
        await labDown(opts.name);
      }
      return figures;
    },
  };
}
