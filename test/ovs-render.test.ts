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
import { loadConfigFile } from '../src/control/config.js';
import { OvsDaemon } from '../src/control/drivers/ovs/daemon.js';
import { diff, exec, Ofctl } from '../src/control/drivers/ovs/ofctl.js';
import { bucketCounts, dpHashCounts, portBlocks, renderBridge, unsupported } from '../src/control/drivers/ovs/render.js';
import { healthView, type HealthPolicy } from '../src/control/health.js';
import { buildPlan, type Plan } from '../src/control/plan.js';
import { buildFrame, type FrameSpec } from '../src/dataplane/frames.js';
import { ovsPrerequisites, vethNamespace } from './support/ovs.js';

const FIXTURES = new URL('./fixtures/ovs/', import.meta.url).pathname;
/** Interface p<k> is OpenFlow port 10 + k (the spec's example numbering). */
const ofport = (iface: string) => 10 + Number(iface.slice(1));

async function plan(name: string): Promise<Plan> {
  return buildPlan(await loadConfigFile(join(FIXTURES, `${name}.yaml`)));
}

const sortedLines = (m: Map<unknown, string> | string[]) => [...(Array.isArray(m) ? m : m.values())].sort();
/** The golden renderings: B.5, its symmetric weighted IPv6 variant, and one per correlation / feature. */
const GOLDEN = ['b5', 'b5-symmetric', 'b5-mpls', 'b5-nsh', 'b7-tap', 'b9-graph'];
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

  it('gives dp_hash groups equal buckets in a power-of-two number, so OVS maps each as many hash values', () => {
    expect(dpHashCounts([1, 3])).toEqual([1, 3]);
    expect(dpHashCounts([5, 5])).toEqual([1, 1]);
    expect(dpHashCounts([0, 0])).toEqual([0, 0]);
    // 3 equal members: 16 values would be 6/5/5; 256 buckets, one value each, are 86/85/85.
    expect(dpHashCounts([1, 1, 1])).toEqual([86, 85, 85]);
    const odd = dpHashCounts([1, 1000, 0, 7]);
    expect(odd.reduce((a, b) => a + b, 0)).toBe(256);
    expect(odd[0]).toBe(1);
    expect(odd[2]).toBe(0);
  });
});

describe('ovs renderer refusals', () => {
  it('accepts every correlation, taps, n-tuple mappings and service graphs (the golden examples)', async () => {
    for (const name of GOLDEN) expect(unsupported(await plan(name)), name).toEqual([]);
  });

  it('refuses chain ids whose hops would share a conntrack zone (chain_id x 32 + hop, 16 bits), or take the default zone 0', async () => {
    const p = await plan('b9-graph'); // chains pc1, pc2, pc3: chain ids 1, 2, 3, one hop each
    p.chains[1].chainId = 2049; // zone (2049 x 32) mod 65536 = 32: pc1's hop 1
    p.chains[2].chainId = 2048; // zone 0
    expect(unsupported(p).map((e) => e.message)).toEqual([
      'port chain pc2: hop 1 would share conntrack zone 32 with port chain pc1 hop 1 in the ovs driver (zone = chain_id x 32 + hop, modulo 65536)',
      'port chain pc3: hop 1 would share conntrack zone 0 with the default zone in the ovs driver (zone = chain_id x 32 + hop, modulo 65536)',
    ]);
  });
});

describe('ovs golden renderings', () => {
  for (const name of GOLDEN) {
    it(`renders ${name} as in test/fixtures/ovs/${name}.flows and .groups`, async () => {
      const r = renderBridge(await plan(name), ofport);
      expect(sortedLines(r.groups)).toEqual(golden(`${name}.groups`));
      expect(sortedLines([...r.flows].map(([k, a]) => `${k} actions=${a}`))).toEqual(golden(`${name}.flows`));
    });
  }
});

describe('ovs renderer with health (Driver.health)', () => {
  const view = (down: string[], policy: HealthPolicy) => healthView(new Set(down), new Map([['ppg1', policy]]));
  it('leaves a down instance out of its groups, and skips or drops a hop with none left by its policy', async () => {
    const p = await plan('b5-symmetric');
    const id = (name: string) => p.members.find((m) => m.name === name)!.id;
    const entry = (r: ReturnType<typeof renderBridge>) => r.flows.get('table=0, priority=20000,tcp,in_port=10,nw_src=10.0.0.0/24,nw_dst=10.0.1.0/24,tp_dst=200')!;
    // pp1b (weight 3, ports p6/p7) down: hop 1's forward group keeps pp1's bucket only.
    const one = renderBridge(p, ofport, view([id('pp1b')], 'reroute'));
    const k = (name: string) => p.members.findIndex((m) => m.name === name);
    expect(new Set(one.groupInfo.get(4096)!.buckets.values())).toEqual(new Set([k('pp1')]));
    const steersTo = (r: ReturnType<typeof renderBridge>, mac: string) => [...r.flows.values()].some((a) => a.includes(`set_field:${mac}->eth_dst,output:`));
    expect(steersTo(one, 'fa:16:3e:00:00:06')).toBe(false); // (nor is a flow pinned to it taken: its flows are hashed again)
    expect(steersTo(one, 'fa:16:3e:00:00:01')).toBe(true);
    expect(one.groupInfo.get(4096)!.members.map((k) => p.members[k].name)).toEqual(['pp1']);
    // The whole hop down: fail-closed drops at T_DOWN (counted hop_down), fail-open goes on to hop 2 (counted hops_skipped).
    const closed = renderBridge(p, ofport, view([id('pp1'), id('pp1b')], 'fail-closed'));
    expect(entry(closed)).toBe('set_field:0x50000000000->metadata,resubmit(,8)');
    // (forward: hop 1 is path 0's hop 0; reverse: it is path 1's hop 1)
    expect([...closed.dropFlows].filter(([, why]) => why === 'hop_down').map(([k]) => k)).toEqual(['table=8, priority=10,metadata=0x50000000000', 'table=8, priority=10,metadata=0x50000001001']);
    const open = renderBridge(p, ofport, view([id('pp1'), id('pp1b')], 'fail-open'));
    expect(entry(open)).toMatch(/^clone\(set_field:0x40000000000->metadata,resubmit\(,8\)\),.*set_field:0x1001->metadata,ct\(table=3,zone=33\)$/);
    expect([...open.eventFlows].filter(([, e]) => e === 'hops_skipped').map(([k]) => k)).toEqual(['table=8, priority=10,metadata=0x40000000000', 'table=8, priority=10,metadata=0x40000001001']);
    // All up again: the rendering without health.
    expect(renderBridge(p, ofport, view([], 'fail-open')).flows).toEqual(renderBridge(p, ofport).flows);
  });
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

  for (const name of GOLDEN) {
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
    await install('b5');
    // At p0 (the logical source port): a new flow, hashed and pinned to SF1 in hop 1's zone, the
    // entry MACs in its label; to SF1's ingress, its MAC as destination.
    expect(await pipeline(10, frame())).toBe(`${fresh(32, 1, B5_ENTRY_MACS)}set(eth(dst=fa:16:3e:00:00:01)),out(11)`);
    // Back from SF1 (p2): re-classified, pinned in hop 2's zone, to SF2's ingress.
    expect(await pipeline(12, frame())).toBe(`${fresh(33, 2)}set(eth(dst=fa:16:3e:00:00:03)),out(13)`);
    // Back from SF2 (p4): the chain end without a logical destination port looks the entry MACs up
    // in hop 1's zone. ofproto/trace commits nothing, so here the flow has no label: the source MAC
    // is p0's (as it came) and the frame is switched on the destination MAC the SF gave it; unknown
    // here, so flooded to the interfaces with a host port (p0 alone), never to an SF port.
    expect(await pipeline(14, frame({ ethSrc: 'fa:16:3e:00:00:04' }))).toBe('ct(zone=32),recirc | set(eth(src=fa:16:3e:00:00:10)),out(10)');
  });

  /**
   * OVS's own pipeline for `frame` arriving on OpenFlow port `k`: the datapath actions of each pass
   * (' | ' between passes; a hop's conntrack lookup is resumed by ofproto/trace itself, as for a
   * flow's first packet), following a recirculation after a pop with `inner` (the frame as the pop
   * leaves it) and after a dp_hash group with dp_hash 1 (0 is "not computed"), with datapath port numbers written as
   * OpenFlow ones (`out(<ofport>)`).
   */
  async function pipeline(k: number, frame: Uint8Array, inner?: Uint8Array): Promise<string> {
    const show = await exec(['ovs-appctl', '-t', daemon.vswitchdCtl, 'dpif/show']);
    const ofOf = new Map([...show.matchAll(/ (\d+)\/(\d+): \(system\)/g)].map((m) => [m[2], m[1]]));
    const trace = async (flow: string, f: Uint8Array) => {
      const text = await exec(['ovs-appctl', '-t', daemon.vswitchdCtl, 'ofproto/trace', 'brg', flow, Buffer.from(f).toString('hex')]);
      return [...text.matchAll(/^Datapath actions: (.*)$/gm)].map((m) => m[1].replace(/(^|,)(\d+)(?=,|$)/g, (_, c: string, d: string) => `${c}out(${ofOf.get(d)})`));
    };
    const passes = await trace(`in_port=${k}`, frame);
    let now = frame;
    for (let n = 0; n < 4; n++) {
      const last = passes[passes.length - 1];
      const recirc = /recirc\((0x[0-9a-f]+)\)$/.exec(last);
      const hash = /(^|,)hash\(/.test(last);
      if (!recirc || (!hash && !inner)) break;
      if (!hash) now = inner!;
      passes.push(...(await trace(`recirc_id=${recirc[1]},${hash ? 'dp_hash=1,' : ''}in_port=${k}`, now)));
    }
    return passes.map((p) => p.replace(/recirc\(0x[0-9a-f]+\)$/, 'recirc')).join(' | ');
  }
  /** A flow's first packet at a hop: its conntrack lookup, the group's hash, the pin committed (mark: member + 1; label: the entry MACs, hex). */
  const fresh = (zone: number, mark: number, label?: string) =>
    `ct(zone=${zone}),recirc | hash(l4(0)),recirc | ct(commit,zone=${zone},mark=0x${mark}/0xffffffff${label ? `,label=0x${label}/0x${'f'.repeat(24)}` : ''}),`;
  /** B.5's packet at entry: source p0's MAC, destination 99 (label: destination in bits 0-47, source in 48-95). */
  const B5_ENTRY_MACS = 'fa163e000010fa163e000099';
  const frame = (o: Partial<FrameSpec> = {}) =>
    buildFrame({ ethSrc: 'fa:16:3e:00:00:10', ethDst: 'fa:16:3e:00:00:99', ip: { ver: 4, src: '10.0.0.5', dst: '10.0.1.5' }, l4: { proto: 'tcp', sport: 40000, dport: 80 }, ...o });
  const install = async (name: string) => ofctl.applyBundle(diff(await ofctl.dump(), renderBridge(await plan(name), ofport)));
  const mpls = (label: number, ttl: number) => `push_mpls(label=${label},tc=0,ttl=${ttl},bos=1,eth_type=0x8847)`;
  const nsh = (si: number) => `push_nsh(flags=0,ttl=63,mdtype=1,np=3,spi=0x1,si=${si},c1=0x0,c2=0x0,c3=0x0,c4=0x0)`;

  it('carries B.5 with SF-aware MPLS pairs through OVS\'s pipeline: label 511 to SF1, 510 kept for SF2, 509 popped at the end', async () => {
    await install('b5-mpls');
    expect(await pipeline(10, frame())).toBe(`${fresh(32, 1, B5_ENTRY_MACS)}set(eth(dst=fa:16:3e:00:00:01)),${mpls(511, 255)},out(11)`);
    // SF1 returned 510 on p2: popped to hash the flow for hop 2, the same label put back on, to SF2.
    expect(await pipeline(12, frame({ mpls: [510] }), frame())).toBe(`pop_mpls(eth_type=0x800),recirc | ${fresh(33, 2)}set(eth(dst=fa:16:3e:00:00:03)),${mpls(510, 254)},out(13)`);
    // SF2 returned 509 on p4: the chain end, popped, the entry MACs looked up in hop 1's zone (none
    // in a trace: the MACs as they came, p0's source), switched (to p0: unknown destination).
    expect(await pipeline(14, frame({ mpls: [509] }), frame())).toBe('pop_mpls(eth_type=0x800),recirc | ct(zone=32),recirc | out(10)');
    // An SF that did not decrement (bad_si), or returned a plain frame (missing_encap): dropped.
    expect(await pipeline(12, frame({ mpls: [511] }))).toBe('drop');
    expect(await pipeline(12, frame())).toBe('drop');
  });

  it('carries B.5 with an NSH hop both ways: encapsulated to SF1 (SI 255 forward, 254 back), decapsulated for SF2 and the ends', async () => {
    await install('b5-nsh');
    expect(await pipeline(10, frame())).toBe(`${fresh(32, 1)}${nsh(255)},push_eth(src=fa:16:3e:00:00:10,dst=fa:16:3e:00:00:01),out(11)`);
    const inner = frame({ ethSrc: 'fa:16:3e:00:00:02' });
    expect(await pipeline(12, frame({ ethSrc: 'fa:16:3e:00:00:02', nsh: { spi: 1, si: 254, ethernet: true } }), inner)).toBe(
      `pop_eth,pop_nsh(),recirc | ${fresh(33, 2)}set(eth(dst=fa:16:3e:00:00:03)),out(13)`,
    );
    // Reverse: SF2 (entered through p4) returns on p3; encapsulated at SI 254 for SF1, entered through its egress p2.
    const reply = (o: Partial<FrameSpec> = {}) => frame({ ethSrc: 'fa:16:3e:00:00:03', ip: { ver: 4, src: '10.0.1.5', dst: '10.0.0.5' }, l4: { proto: 'tcp', sport: 80, dport: 40000 }, ...o });
    // (Hop 1's reverse group looks up and pins in hop 1's zone: a reply finds its request's pin there.)
    expect(await pipeline(13, reply())).toBe(`${fresh(32, 1)}${nsh(254)},push_eth(src=fa:16:3e:00:00:03,dst=fa:16:3e:00:00:02),out(12)`);
    // SF1 returns SI 253 on p1: decapsulated, delivered to p0 with p0's MAC, p5's as source.
    expect(await pipeline(11, reply({ nsh: { spi: 1, si: 253, ethernet: true } }), reply())).toBe(
      'pop_eth,pop_nsh(),recirc | set(eth(src=fa:16:3e:00:00:20,dst=fa:16:3e:00:00:10)),out(10)',
    );
  });

  it('copies to the tap after hop 1 and re-classifies with the n-tuple mapping (B.7, B.8); drops what the tap sends', async () => {
    await install('b7-tap');
    const udp = (src: string, sport: number) => frame({ ethSrc: 'fa:16:3e:00:00:02', ip: { ver: 4, src, dst: '10.0.1.5' }, l4: { proto: 'udp', sport, dport: 53 } });
    // Back from hop 1 translated (192.0.2.1:7001): one copy to the tap (p6), the frame to SF2 (p3).
    expect(await pipeline(12, udp('192.0.2.1', 7001))).toBe(`set(eth(dst=fa:16:3e:00:00:06)),out(16),set(eth(dst=fa:16:3e:00:00:99)),${fresh(33, 3)}set(eth(dst=fa:16:3e:00:00:03)),out(13)`);
    // Untranslated, it is not the chain's any more: switched (to p0), no copy.
    expect(await pipeline(12, udp('10.0.0.5', 7000))).toBe('out(10)');
    expect(await pipeline(16, udp('10.0.0.5', 7000))).toBe('drop');
  });

  it('hands pc1\'s traffic to pc2 or pc3 by their classifiers (B.9), else ends pc1', async () => {
    await install('b9-graph');
    const udp = (sport: number) => frame({ ethSrc: 'fa:16:3e:00:00:02', l4: { proto: 'udp', sport, dport: 53 } });
    // (The destination chains' first hops keep the MACs the frame is handed off with, for their own ends.)
    const handed = 'fa163e000002fa163e000099';
    for (const [sport, then] of [[2002, `${fresh(64, 2, handed)}set(eth(dst=fa:16:3e:00:00:03)),${mpls(767, 255)},out(13)`], [2003, `${fresh(96, 3, handed)}set(eth(dst=fa:16:3e:00:00:05)),${mpls(1023, 255)},out(15)`], [2009, 'ct(zone=32),recirc | set(eth(src=fa:16:3e:00:00:10)),out(10)']] as const) {
      expect(await pipeline(12, frame({ ethSrc: 'fa:16:3e:00:00:02', mpls: [510], l4: { proto: 'udp', sport, dport: 53 } }), udp(sport))).toBe(`pop_mpls(eth_type=0x800),recirc | ${then}`);
    }
  });
});
