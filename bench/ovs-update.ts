/*
 * How long an API change takes to be live in the dataplane, ovs driver against userspace driver in
 * the same run: `sfc serve` in a lab (2 hops x 3 instances, the lab's symmetric chain), then N chain
 * updates (PUT port_chains/pc1 alternating its flow classifiers between [v4] and [v4, v6]: the
 * IPv6 rule's flows, groups and pins appear and go), each timed from the request to the answer. The
 * answer comes after the driver's postcommit: the ovs driver's bundle is committed by
 * ovs-vswitchd, the userspace driver's tables are published to the workers. After each answer
 * (untimed) the change is checked in the dataplane itself: the IPv6 entry flows on the bridge
 * (ovs), the table generation (userspace).
 *
 *   npm run build && flock /tmp/sfc-bench.lock node dist/bench/ovs-update.js [--updates 100]
 *
 * Output, one JSON object per line:
 *   {bench:"api-to-live", driver, updates, p50_ms, p99_ms, max_ms}
 *   {bench:"api-to-live-summary", ovs_over_userspace_p50, ovs_over_userspace_p99}
 * Times include the harness relay (one JSON line to a node process inside the dataplane
 * namespace and a loopback HTTP request), the same for both drivers.
 */
import { join } from 'node:path';
import { exec } from '../src/control/drivers/ovs/ofctl.js';
import { LabDataplane, metric } from '../src/lab/harness.js';
import { labDown, labUp, type Lab } from '../src/lab/topology.js';
import { parseOptions } from '../src/util/args.js';

const LAB = `sfcb-upd${process.pid}`;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function measure(lab: Lab, driver: 'ovs' | 'userspace', updates: number) {
  const dp = await LabDataplane.start(lab, { driver, config: lab.configPath });
  try {
    const { port_chains: chains } = await dp.call<{ port_chains: { id: string; flow_classifiers: string[] }[] }>('GET', '/v2.0/sfc/port_chains?name=pc1');
    const [v4, v6] = chains[0].flow_classifiers;
    const bridge = `unix:${join(lab.runDir, 'ovs-br-sfc', 'ovs', 'br-sfc.mgmt')}`;
    const v6EntryFlows = async () =>
      (await exec(['ovs-ofctl', '-O', 'OpenFlow15', '--no-stats', 'dump-flows', bridge, 'table=0,ipv6,ipv6_src=fd00::1'])).split('\n').filter((l) => l.includes('priority=')).length;
    const generation = async () => metric(await dp.metrics(), 'sfc_table_generation');
    const times: number[] = [];
    for (let k = 0; k < updates; k++) {
      const withV6 = k % 2 === 1;
      const before = driver === 'userspace' ? await generation() : 0;
      const t0 = process.hrtime.bigint();
      await dp.call('PUT', `/v2.0/sfc/port_chains/${chains[0].id}`, { port_chain: { flow_classifiers: withV6 ? [v4, v6] : [v4] } });
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
      // Live? (untimed)
      if (driver === 'ovs') {
        const n = await v6EntryFlows();
        if (withV6 ? n === 0 : n !== 0) throw new Error(`update ${k}: ${n} IPv6 entry flows on the bridge after the answer`);
      } else if ((await generation()) <= before) {
        throw new Error(`update ${k}: the table generation did not advance`);
      }
    }
    times.sort((a, b) => a - b);
    const r3 = (x: number) => Math.round(x * 1000) / 1000;
    return { bench: 'api-to-live', driver, updates, p50_ms: r3(percentile(times, 50)), p99_ms: r3(percentile(times, 99)), max_ms: r3(times[times.length - 1]) };
  } finally {
    await dp.stop();
  }
}

async function main(): Promise<void> {
  const { values } = parseOptions(process.argv.slice(2), { updates: { type: 'string', default: '100' } });
  const updates = Number(values.updates);
  if (!Number.isInteger(updates) || updates < 2) throw new Error(`--updates must be an integer >= 2, got '${values.updates}'`);
  await labDown(LAB);
  const lab = await labUp({ name: LAB, hops: 2, instances: 3 });
  try {
    const rows = [];
    for (const driver of ['ovs', 'userspace'] as const) {
      const row = await measure(lab, driver, updates);
      console.log(JSON.stringify(row));
      rows.push(row);
    }
    const [o, u] = rows;
    const r2 = (x: number) => Math.round(x * 100) / 100;
    console.log(JSON.stringify({ bench: 'api-to-live-summary', ovs_over_userspace_p50: r2(o.p50_ms / u.p50_ms), ovs_over_userspace_p99: r2(o.p99_ms / u.p99_ms) }));
  } finally {
    await labDown(LAB);
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
