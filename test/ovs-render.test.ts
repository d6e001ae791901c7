/*
 * The OVS renderer (src/control/drivers/ovs/render.ts): its arithmetic (port ranges as value/mask
 * blocks, weights as bucket counts), its refusals, and golden renderings of networking-sfc-spec.md
 * B.5 (the worked example) and a symmetric, weighted, IPv6 variant of it (test/fixtures/ovs/*.flows
 * and *.groups, one line each, sorted; reviewed by hand against B.3-B.6). The golden renderings
 * are then installed into a real ovs-vswitchd (private, netdev datapath, in a namespace of this
 * test with veths p0..p7 on OpenFlow ports 10..17): what OVS dumps back must be the same text
 * (so the driver's diffs are exact), and OVS's own pipeline (ofproto/trace) must carry a B.5 packet
 * through both hops to the chain end.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, loadConfigFile } from '../src/control/config.js';
import { OvsDaemon } from '../src/control/drivers/ovs/daemon.js';
import { diff, exec, Ofctl } from '../src/control/drivers/ovs/ofctl.js';
import { bucketCounts, portBlocks, renderBridge, unsupported } from '../src/control/drivers/ovs/render.js';
import { buildPlan, type Plan } from '../src/control/plan.js';
import { ovsPrerequisites, vethNamespace } from './support/ovs.js';

const FIXTURES = new URL('./fixtures/ovs/', import.meta.url).pathname;
/** Interface p<k> is OpenFlow port 10 + k (the spec's example numbering). */
const ofport = (iface: string) => 10 + Number(iface.slice(1));

async function plan(name: string): Promise<Plan> {
  return buildPlan(await loadConfigFile(join(FIXTURES, `${name}.yaml`)));
}

const sortedLines = (m: Map<unknown, string> | string[]) => [...(Array.isArray(m) ? m : m.values())].sort();
const golden = (file: string) => readFileSync(join(FIXTURES, file), 'utf8').trimEnd().split('\n');

describe('ovs renderer arithmetic', () => {
  it('cuts port ranges into maximal aligned value/mask blocks (B.3: 100-200)', () => {
    expect(portBlocks(100, 200)).toEqual([
      { value: 0x64, mask: 0xfffc },
      { value: 0x68, mask: 0xfff8 },
      { value: 0x70, mask: 0xfff0 },
      { value: 0x80, mask: 0xffc0 },
      { value: 0xc0, mask: 0xfff8 },
      { value: 0xc8, mask: 0xffff },
    ]);
    expect(portBlocks(0, 65535)).toEqual([{ value: 0, mask: 0 }]);
    expect(portBlocks(80, 80)).toEqual([{ value: 80, mask: 0xffff }]);
    // Every range: the blocks cover exactly [min, max], each aligned to its size.
    let x = 12345;
    const rand = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 16);
    for (let k = 0; k < 300; k++) {
      const [a, b] = [rand(), rand()].sort((p, q) => p - q);
      let at = a;
      for (const blk of portBlocks(a, b)) {
        const size = 0x10000 - blk.mask || 0x10000;
        expect(blk.value).toBe(at);
        expect(blk.value % size).toBe(0);
        at += size;
      }
      expect(at).toBe(b + 1);
    }
  });

  it('gives each instance buckets in proportion to its weight (gcd reduced, capped, 0 drains)', () => {
    expect(bucketCounts([1, 3])).toEqual([1, 3]);
    expect(bucketCounts([2, 6, 4])).toEqual([1, 3, 2]);
    expect(bucketCounts([0, 5])).toEqual([0, 1]);
    expect(bucketCounts([0, 0])).toEqual([0, 0]);
    const big = bucketCounts([1000, 3001]);
    expect(big[0] + big[1]).toBeLessThanOrEqual(256);
    expect(big[0] / (big[0] + big[1])).toBeCloseTo(0.25, 2);
  });
});

describe('ovs renderer refusals', () => {
  const base = `
ports:
  - {name: a, mac_address: "02:00:00:00:00:0a", binding:profile: {interface: a}}
  - {name: b, mac_address: "02:00:00:00:00:0b", binding:profile: {interface: b}}
  - {name: i, mac_address: "02:00:00:00:00:01", binding:profile: {interface: i}}
  - {name: e, mac_address: "02:00:00:00:00:02", binding:profile: {interface: e}}
`;
  const refusals = async (yaml: string) => unsupported(buildPlan(await loadConfig(base + yaml, 'test.yaml'))).map((e) => [e.status, e.message]);

  it('refuses SF-aware port pairs, naming the pair', async () => {
    const r = await refusals(`
port_pairs: [{name: aware1, ingress: i, egress: e, service_function_parameters: {correlation: mpls}}]
port_pair_groups: [{name: g, port_pairs: [aware1]}]
flow_classifiers: [{name: f, ethertype: IPv4, logical_source_port: a}]
port_chains: [{name: c, port_pair_groups: [g], flow_classifiers: [f], chain_parameters: {correlation: mpls}}]
`);
    expect(r).toEqual([[400, expect.stringMatching(/^port pair aware1: SF-aware port pairs \(correlation mpls\) is not supported by the ovs driver/)]]);
  });

  it('refuses tap groups, naming the group', async () => {
    const r = await refusals(`
port_pairs: [{name: p1, ingress: i, egress: e}]
port_pair_groups: [{name: tapg, port_pairs: [p1], tap_enabled: true}]
flow_classifiers: [{name: f, ethertype: IPv4, logical_source_port: a}]
port_chains: [{name: c, port_pair_groups: [tapg], flow_classifiers: [f]}]
`);
    expect(r).toEqual([[400, expect.stringMatching(/^port pair group tapg: tap groups/)]]);
  });

  it('accepts the golden examples', async () => {
    expect(unsupported(await plan('b5'))).toEqual([]);
    expect(unsupported(await plan('b5-symmetric'))).toEqual([]);
  });
});

describe('ovs golden renderings', () => {
  for (const name of ['b5', 'b5-symmetric']) {
    it(`renders ${name} as in test/fixtures/ovs/${name}.flows and .groups`, async () => {
      const r = renderBridge(await plan(name), ofport);
      expect(sortedLines(r.groups)).toEqual(golden(`${name}.groups`));
      expect(sortedLines([...r.flows].map(([k, a]) => `${k} actions=${a}`))).toEqual(golden(`${name}.flows`));
    });
  }
});

const live = ovsPrerequisites('ovs golden renderings in ovs-vswitchd');

describe.skipIf(!live)('ovs golden renderings in a real ovs-vswitchd', () => {
  const ns = `sfct-ovsg${process.pid}`;
  let dir: string;
  let daemon: OvsDaemon;
  let ofctl: Ofctl;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sfc-ovs-golden-'));
    await vethNamespace(ns, 8);
    daemon = await OvsDaemon.start({ dir, spawnPrefix: ['ip', 'netns', 'exec', ns] });
    const vsctl = ['ovs-vsctl', `--db=${daemon.db}`, '--timeout=30', 'add-br', 'brg', '--', 'set', 'bridge', 'brg', 'datapath_type=netdev', 'fail-mode=secure', 'protocols=OpenFlow15'];
    for (let k = 0; k < 8; k++) vsctl.push('--', 'add-port', 'brg', `p${k}`, '--', 'set', 'interface', `p${k}`, `ofport_request=${10 + k}`);
    await exec(vsctl);
    ofctl = new Ofctl(`unix:${join(dir, 'brg.mgmt')}`, dir);
  }, 60_000);

  afterAll(async () => {
    await exec(['ovs-vsctl', `--db=${daemon.db}`, '--timeout=10', '--if-exists', 'del-br', 'brg']).catch(() => undefined);
    await daemon?.stop();
    await exec(['ip', 'netns', 'del', ns]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  for (const name of ['b5', 'b5-symmetric']) {
    it(`installs ${name} in one bundle and dumps it back as the same text`, async () => {
      const want = renderBridge(await plan(name), ofport);
      const have = await ofctl.dump();
      await ofctl.applyBundle(diff(have, want));
      const back = await ofctl.dump();
      expect(sortedLines(back.groups)).toEqual(golden(`${name}.groups`));
      expect(sortedLines([...back.flows].map(([k, a]) => `${k} actions=${a}`))).toEqual(golden(`${name}.flows`));
      expect(diff(back, want)).toEqual([]);
    });
  }

  it('carries a B.5 packet through SF1 and SF2 in OVS\'s own pipeline (ofproto/trace)', async () => {
    const want = renderBridge(await plan('b5'), ofport);
    await ofctl.applyBundle(diff(await ofctl.dump(), want));
    const trace = (flow: string) => exec(['ovs-appctl', '-t', daemon.vswitchdCtl, 'ofproto/trace', 'brg', flow]);
    const pkt = 'tcp,dl_src=fa:16:3e:00:00:10,dl_dst=fa:16:3e:00:00:99,nw_src=10.0.0.5,nw_dst=10.0.1.5,tp_src=40000,tp_dst=80';
    // At p0 (the logical source port): to SF1's ingress, its MAC as destination.
    expect(await trace(`in_port=10,${pkt}`)).toMatch(/Datapath actions: set\(eth\(dst=fa:16:3e:00:00:01\)\),\d+\n/);
    // Back from SF1 (p2): re-classified, to SF2's ingress.
    expect(await trace(`in_port=12,${pkt}`)).toMatch(/Datapath actions: set\(eth\(dst=fa:16:3e:00:00:03\)\),\d+\n/);
    // Back from SF2 (p4): the chain end. No logical destination port: the source MAC is p0's again
    // and the frame is switched on the destination MAC the SF gave it; unknown here, so flooded to
    // the interfaces with a host port (p0 alone), never to an SF port.
    const end = await trace(`in_port=14,${pkt}`);
    expect(end).toMatch(/set_field:fa:16:3e:00:00:10->eth_src\n\s+resubmit\(,10\)\n10\. priority 0, cookie 0x5fc0\n\s+output:10\n\nFinal flow/);
  });
});
