/*
 * Hitless updates in the OVS mode: 128 UDP flows of steady traffic through chain A (hop 1's three
 * instances) while chain B (hop 2's instances, another classifier) is created, changed (another
 * classifier) and deleted 20 times through the API: 60 changes, each one OpenFlow bundle with only
 * chain B's flows and groups in it. Chain A must lose no frame (the receiver's per-flow sequence
 * numbers) and no flow may move (the SFs' own flow logs: one hop-1 instance per flow, no hop-2
 * instance).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { installFlowLog, readFlowLog, traceFlows } from '../src/lab/flowlog.js';
import { LabDataplane, startTraffic } from '../src/lab/harness.js';
import { CLIENT, SERVER, labDown, labUp, type Lab } from '../src/lab/topology.js';
import type { UdpRecvResult, UdpSendResult } from '../src/lab/traffic.js';
import { ovsLabPrerequisites } from './support/ovs.js';

const LAB = `sfct-hitl${process.pid}`;
const FLOWS = 128;
const ROUNDS = 20;

const run = ovsLabPrerequisites('ovs hitless');

const classifier = (name: string, port: number) => ({
  name,
  ethertype: 'IPv4',
  protocol: 'udp',
  source_ip_prefix: `${CLIENT.ip}/32`,
  destination_ip_prefix: `${SERVER.ip}/32`,
  destination_port_range_min: port,
  destination_port_range_max: port,
  logical_source_port: 'client',
  logical_destination_port: 'server',
});

describe.skipIf(!run)('ovs driver: hitless chain updates', () => {
  let lab: Lab;
  let dp: LabDataplane | undefined;

  beforeAll(async () => {
    await labDown(LAB);
    lab = await labUp({ name: LAB, hops: 2, instances: 3 });
    // Chain A: hop 1's group, UDP 6001. Chain B's group (hop 2's instances) and classifiers exist;
    // chain B itself comes and goes in the test.
    const base = parse(lab.configYaml) as Record<string, unknown[]>;
    const config = {
      ...base,
      flow_classifiers: [classifier('a', 6001), classifier('b1', 7001), classifier('b2', 7002)],
      port_chains: [{ name: 'chain-a', chain_id: 1, port_pair_groups: ['ppg1'], flow_classifiers: ['a'] }],
    };
    const path = join(lab.runDir, 'hitless.yaml');
    await writeFile(path, stringify(config));
    dp = await LabDataplane.start(lab, { driver: 'ovs', config: path });
  }, 60_000);

  afterAll(async () => {
    await dp?.stop();
    await labDown(LAB);
  });

  it(`loses and moves no frame of chain A while chain B is created, changed and deleted ${ROUNDS} times`, async () => {
    const d = dp!;
    await installFlowLog(lab);
    const recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:6001`, '--idle', '1', '--seconds', '120']);
    await recv.listening;
    const send = await startTraffic<UdpSendResult>(lab, lab.clientNs, ['udp-send', '--connect', `${SERVER.ip}:6001`, '--flows', String(FLOWS), '--pps', '2000', '--seconds', '120']);
    // Every flow running through chain A before the first change.
    for (const end = Date.now() + 15_000; Date.now() < end; await sleep(200)) {
      if (traceFlows(lab, await readFlowLog(lab)).length >= FLOWS) break;
    }
    const ids = async <T extends { id: string; name: string }>(path: string, key: string) =>
      new Map(((await d.call<Record<string, T[]>>('GET', path))[key]).map((o) => [o.name, o.id]));
    const fc = await ids('/v2.0/sfc/flow_classifiers', 'flow_classifiers');
    const ppg = await ids('/v2.0/sfc/port_pair_groups', 'port_pair_groups');
    for (let round = 0; round < ROUNDS; round++) {
      const { port_chain: b } = await d.call<{ port_chain: { id: string } }>('POST', '/v2.0/sfc/port_chains', {
        port_chain: { name: 'chain-b', port_pair_groups: [ppg.get('ppg2')], flow_classifiers: [fc.get('b1')] },
      });
      await d.call('PUT', `/v2.0/sfc/port_chains/${b.id}`, { port_chain: { flow_classifiers: [fc.get('b2')] } });
      await d.call('DELETE', `/v2.0/sfc/port_chains/${b.id}`);
    }
    send.child.kill('SIGTERM'); // the sender reports and ends; the receiver ends once idle
    const [sent, received] = await Promise.all([send.result, recv.result]);
    expect(received.flows).toHaveLength(FLOWS);
    expect({ lost: received.lost, duplicates: received.duplicates }).toEqual({ lost: 0, duplicates: 0 });
    expect(received.received).toBeGreaterThan(FLOWS * 10);
    expect(received.received).toBeLessThanOrEqual(sent.sent);

    const traces = traceFlows(lab, await readFlowLog(lab));
    expect(traces).toHaveLength(FLOWS);
    const moved = traces.filter((t) => t.forward[0].length !== 1 || t.forward[1].length !== 0);
    expect(moved, JSON.stringify(moved.slice(0, 5))).toEqual([]);
    expect(new Set(traces.map((t) => t.forward[0][0]))).toEqual(new Set([1, 2, 3]));
  }, 180_000);
});
