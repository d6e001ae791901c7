/*
 * Live flows per instance on the ovs driver (drivers/ovs/flowcount.ts): a real Open vSwitch (netdev
 * datapath, started by `sfc serve --driver ovs` in the lab) pins each flow of the lab's UDP traffic
 * at each hop in conntrack; /metrics' sfc_instance_flows gives per hop the flows udp-send sends and
 * per instance the datapath's conntrack entries carrying its mark (read here with ovs-appctl
 * directly), and `sfc top --json` shows the same.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exec } from '../src/control/drivers/ovs/ofctl.js';
import { distFile, LabDataplane, labUpForOvs, metric, startTraffic, type TrafficRun } from '../src/lab/harness.js';
import { labDown, netnsExec, SERVER, type Lab } from '../src/lab/topology.js';
import type { UdpRecvResult, UdpSendResult } from '../src/lab/traffic.js';
import type { TopView } from '../src/commands/top.js';
import { ovsLabPrerequisites } from './support/ovs.js';
import { until } from './support/until.js';

const FLOWS = 12;
const run = ovsLabPrerequisites('live flows per instance on the ovs driver');

describe.skipIf(!run)('live flows per instance on the ovs driver', () => {
  const LAB = `sfct-flo${process.pid}`;
  let lab: Lab;
  let dp: LabDataplane;
  let recv: TrafficRun<UdpRecvResult>;
  let send: TrafficRun<UdpSendResult>;

  beforeAll(async () => {
    await labDown(LAB);
    lab = await labUpForOvs({ name: LAB, hops: 2, instances: 2 });
    dp = await LabDataplane.start(lab, { driver: 'ovs', config: lab.configPath });
    recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:5353`, '--seconds', '60', '--idle', '30']);
    await recv.listening;
    send = await startTraffic<UdpSendResult>(lab, lab.clientNs, ['udp-send', '--connect', `${SERVER.ip}:5353`, '--flows', String(FLOWS), '--pps', '300', '--seconds', '60']);
  }, 60_000);

  afterAll(async () => {
    send?.child.kill();
    recv?.child.kill();
    await dp?.stop();
    await labDown(LAB);
  });

  it("sfc_instance_flows: per hop the flows sent, per instance its conntrack entries; sfc top --json shows them", async () => {
    const pps = ['pp11', 'pp12', 'pp21', 'pp22'];
    const samples = await until('every flow counted at both hops', async () => {
      const s = await dp.metrics();
      const hop = (h: string) => pps.filter((pp) => pp.startsWith(`pp${h}`)).reduce((n, pp) => n + metric(s, 'sfc_instance_flows', { port_pair: pp }), 0);
      return hop('1') === FLOWS && hop('2') === FLOWS ? s : undefined;
    }, 30_000);
    for (const pp of pps) expect(metric(samples, 'sfc_instance_flows', { port_pair: pp }), `${pp} carries some of the ${FLOWS} flows`).toBeGreaterThan(0);

    // The datapath's own conntrack, by mark (member + 1) in the chain's zones: the metric's figures.
    const ctl = join(LabDataplane.ovsDir(lab), 'ovs-vswitchd.ctl');
    const dump = await exec(['ovs-appctl', '-t', ctl, 'dpctl/dump-conntrack']);
    const byMark = new Map<number, number>();
    for (const m of dump.matchAll(/^udp,orig=\(src=10\.0\.0\.1,dst=10\.0\.0\.2,.*,mark=(\d+)/gm)) byMark.set(Number(m[1]), (byMark.get(Number(m[1])) ?? 0) + 1);
    const shown = [...byMark.values()].sort((a, b) => a - b);
    expect(shown, dump).toEqual(pps.map((pp) => metric(samples, 'sfc_instance_flows', { port_pair: pp })).sort((a, b) => a - b));

    const top = JSON.parse((await netnsExec(lab.dpNs, [process.execPath, distFile('cli.js'), 'top', '--json', '--interval', '0.5', '--server', dp.url])).stdout) as TopView;
    expect(top.chains.flatMap((c) => c.hops.map((h) => h.flows))).toEqual([FLOWS, FLOWS]);
  }, 60_000);
});
