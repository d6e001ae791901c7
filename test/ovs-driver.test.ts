/*
 * The OVS driver (src/control/drivers/ovs/driver.ts) against a real ovs-vswitchd: a shared Open
 * vSwitch started by this test in its own namespace (the driver's --ovsdb mode, so the switch
 * outlives a driver, as it outlives a restarted `sfc serve`), interfaces p0..p7 as veths.
 *  - precommit accepts what the userspace driver renders (an SF-aware NSH hop here);
 *  - a bundle with one bad mod changes nothing (OpenFlow bundles are atomic);
 *  - a restarted driver reconciles the bridge on its first postcommit: stale flows and groups
 *    left by someone else removed, missing ones added;
 *  - after ovs-vswitchd restarts (its flow tables lost), the driver's watch puts the rendering back.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, loadConfigFile } from '../src/control/config.js';
import { OvsDaemon } from '../src/control/drivers/ovs/daemon.js';
import { OvsDriver } from '../src/control/drivers/ovs/driver.js';
import { COOKIE, exec } from '../src/control/drivers/ovs/ofctl.js';
import { buildPlan, type Plan } from '../src/control/plan.js';
import { ovsPrerequisites, vethNamespace } from './support/ovs.js';

const FIXTURES = new URL('./fixtures/ovs/', import.meta.url).pathname;
const EMPTY = buildPlan(await loadConfig('', 'empty.yaml'));

const run = ovsPrerequisites('ovs driver');

describe.skipIf(!run)('ovs driver on a shared ovs-vswitchd', () => {
  const ns = `sfct-ovsd${process.pid}`;
  let dir: string;
  let daemon: OvsDaemon;
  let plan: Plan;
  const drivers: OvsDriver[] = [];
  const start = async () => {
    const d = await OvsDriver.start({ bridge: 'brd', ovsdb: daemon.db, dir, watchMs: 200 });
    drivers.push(d);
    return d;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sfc-ovs-driver-'));
    await vethNamespace(ns, 8);
    daemon = await OvsDaemon.start({ dir, spawnPrefix: ['ip', 'netns', 'exec', ns] });
    plan = buildPlan(await loadConfigFile(join(FIXTURES, 'b5-symmetric.yaml')));
  }, 60_000);

  afterAll(async () => {
    for (const d of drivers) await d.close();
    await exec(['ovs-vsctl', `--db=${daemon.db}`, '--timeout=10', '--if-exists', 'del-br', 'brd']).catch(() => undefined);
    await daemon?.stop();
    await exec(['ip', 'netns', 'del', ns]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('accepts in precommit what the userspace driver renders (an NSH-aware hop)', async () => {
    const d = await start();
    const aware = buildPlan(
      await loadConfig(
        `
ports:
  - {name: a, mac_address: "02:00:00:00:00:0a", binding:profile: {interface: p0}}
  - {name: i, mac_address: "02:00:00:00:00:01", binding:profile: {interface: p1}}
  - {name: e, mac_address: "02:00:00:00:00:02", binding:profile: {interface: p2}}
port_pairs: [{name: aware1, ingress: i, egress: e, service_function_parameters: {correlation: nsh}}]
port_pair_groups: [{name: g, port_pairs: [aware1]}]
flow_classifiers: [{name: f, ethertype: IPv4, logical_source_port: a}]
port_chains: [{name: c, port_pair_groups: [g], flow_classifiers: [f], chain_parameters: {correlation: nsh}}]
`,
        'aware.yaml',
      ),
    );
    expect(await d.precommit(aware)).toEqual([]);
    expect(await d.precommit(plan)).toEqual([]);
  });

  it('applies a bundle with one bad mod not at all', async () => {
    const d = drivers[0];
    await d.postcommit(plan, EMPTY);
    const before = await d.ofctl.dump();
    const bad = [`flow add ${COOKIE}, table=0, priority=7,ip,nw_src=192.0.2.1 actions=drop`, `flow add ${COOKIE}, table=0, priority=7,ip,nw_src=192.0.2.2 actions=group:999999`];
    await expect(d.ofctl.applyBundle(bad)).rejects.toThrow();
    expect(await d.ofctl.dump()).toEqual(before);
  });

  it('reconciles the bridge when it starts again: stale flows and groups removed, missing ones added', async () => {
    const first = drivers[0];
    await first.close(); // a shared switch keeps the bridge and its flows
    const target = first.ofctl.target;
    const installed = await first.ofctl.dump();
    const [someKey] = [...installed.flows.keys()].filter((k) => k.startsWith('table=0, priority=20000,tcp'));
    await exec(['ovs-ofctl', '-O', 'OpenFlow15', 'add-flow', target, `${COOKIE},table=0,priority=7,ip,nw_src=192.0.2.1,actions=drop`]);
    await exec(['ovs-ofctl', '-O', 'OpenFlow15', 'add-group', target, 'group_id=999,type=select,bucket=actions=drop']);
    await exec(['ovs-ofctl', '-O', 'OpenFlow15', '--strict', 'del-flows', target, someKey.replace(', ', ',')]);

    const second = await start();
    await second.postcommit(plan, EMPTY);
    const now = await second.ofctl.dump();
    expect(now).toEqual(installed);
    expect(await second.reconcile()).toBe(0);
  });

  it('puts the rendering back after ovs-vswitchd restarts', async () => {
    const d = drivers[1];
    const installed = await d.ofctl.dump();
    await daemon.restartVswitchd();
    // The watch (every 200 ms here) finds the tables empty and reconciles; wait for its result.
    for (const end = Date.now() + 30_000; Date.now() < end; await sleep(100)) {
      const now = await d.ofctl.dump().catch(() => null);
      if (now && now.flows.size === installed.flows.size && now.groups.size === installed.groups.size) break;
    }
    expect(await d.ofctl.dump()).toEqual(installed);
  }, 60_000);
});
