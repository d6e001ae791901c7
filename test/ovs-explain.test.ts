/*
 * `sfc explain --server URL` against `sfc serve --driver ovs` (GET /v2.0/sfc/explain: the server
 * traces the packet through its bridge with ovs-appctl ofproto/trace, drivers/ovs/trace.ts) tells
 * the same journey as `sfc explain --config` (the userspace rules, replayed) for the same config
 * and packet: classifier, path (SPI, direction), SI per hop, output port and MACs per step, the
 * verdict. Instances: where a group has one, the same; where it has several the two modes hash
 * differently, so the OVS one must be a member of the hop's group, and the reply must cross the
 * instances the request crossed (symmetric chain). Real ovs-vswitchd (shared, started here in a
 * namespace of this test with veths p0..p7; the server uses it through --ovsdb). No health checks:
 * the SFs here are loopbacks of explain, and the userspace replay ignores health. Last, an
 * SF-aware NSH hop (b5-nsh): the trace follows the pop and recirculation.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OvsDaemon } from '../src/control/drivers/ovs/daemon.js';
import { exec } from '../src/control/drivers/ovs/ofctl.js';
import { buildFrame } from '../src/dataplane/frames.js';
import { distFile } from '../src/lab/harness.js';
import { ovsLabPrerequisites, vethNamespace } from './support/ovs.js';

const FIXTURE = new URL('./fixtures/ovs/b5-symmetric.yaml', import.meta.url).pathname;
/** Per instance of the fixture: its ingress and egress interfaces. */
const PORTS: Record<string, [string, string]> = { pp1: ['p1', 'p2'], pp1b: ['p6', 'p7'], pp2: ['p3', 'p4'] };
/**
 * Hop 1's instances pp1 and pp1b written alike (name, interfaces, MACs): the modes hash flows
 * differently, so which of the two a flow takes is theirs to choose; all else must be the same.
 */
const canon = (text: string) =>
  text.replace(/\bpp1b\b/g, 'pp1').replace(/\bp6\b/g, 'p1').replace(/\bp7\b/g, 'p2').replace(/fa:16:3e:00:00:06/g, 'fa:16:3e:00:00:01').replace(/fa:16:3e:00:00:07/g, 'fa:16:3e:00:00:02');

interface Step {
  in: string;
  verdict: string;
  instance: string | null;
  reverse: boolean;
  out: string[];
  [k: string]: unknown;
}
interface Journey {
  steps: Step[];
  verdict: string;
  chain: string | null;
  hops: string[];
  out: string[];
}

const run = ovsLabPrerequisites('sfc explain on the ovs driver');

describe.skipIf(!run)('sfc explain --server on the ovs driver (ofproto/trace)', () => {
  const ns = `sfct-ovsx${process.pid}`;
  let dir: string;
  let daemon: OvsDaemon;
  let server: ChildProcess | undefined;
  let url: string;

  /** `sfc serve --driver ovs` on the shared Open vSwitch with `config` on `bridge`; its URL. */
  async function serve(config: string, bridge: string): Promise<string> {
    const proc = spawn(process.execPath, [distFile('cli.js'), 'serve', '--driver', 'ovs', '--ovsdb', daemon.db, '--ovs-bridge', bridge, '--config', config, '--state', join(dir, `${bridge}.json`), '--listen', '127.0.0.1:0', '--health-interval', '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    server = proc;
    let out = '';
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    return new Promise<string>((resolve, reject) => {
      proc.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]);
      });
      proc.once('exit', (code) => reject(new Error(`sfc serve exited (${code}): ${err}`)));
    });
  }

  async function stop(): Promise<void> {
    if (server && server.exitCode === null) {
      const exited = new Promise((r) => server!.once('exit', r));
      server.kill('SIGTERM');
      await exited;
    }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sfc-ovs-explain-'));
    await vethNamespace(ns, 8);
    daemon = await OvsDaemon.start({ dir: join(dir, 'ovs'), spawnPrefix: ['ip', 'netns', 'exec', ns] });
    url = await serve(FIXTURE, 'brx');
  }, 60_000);

  afterAll(async () => {
    await stop();
    for (const br of ['brx', 'brn', 'brb']) await exec(['ovs-vsctl', `--db=${daemon.db}`, '--timeout=10', '--if-exists', 'del-br', br]).catch(() => undefined);
    await daemon?.stop();
    await exec(['ip', 'netns', 'del', ns]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  /** sfc explain's output (it exits 1 for a dropped packet: the output is compared all the same). */
  const explain = (where: string[], iface: string, packet: string, json: boolean) =>
    new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [distFile('cli.js'), 'explain', ...where, '--in', iface, '--packet', packet, ...(json ? ['--json'] : [])], (err, stdout, stderr) =>
        err && (err.code !== 1 || stderr) ? reject(new Error(`sfc explain ${where[0]}: ${stderr || err.message}`)) : resolve(stdout),
      ),
    );
  const journey = async (where: string[], iface: string, packet: string): Promise<Journey> => JSON.parse(await explain(where, iface, packet, true)) as Journey;

  /** The rule indices are each mode's own numbering: only whether a rule matched must agree. */
  const shape = (j: Journey) => JSON.parse(canon(JSON.stringify({ ...j, steps: j.steps.map((s) => ({ ...s, rule: (s.rule as number) >= 0 })) }))) as unknown;

  const PACKETS: [string, string, string][] = [
    ['a chain entry (fc4, port range block)', 'p0', 'tcp 10.0.0.5:40000 > 10.0.1.5:150'],
    ['the reply on the reverse path', 'p5', 'tcp 10.0.1.5:150 > 10.0.0.5:40000'],
    ['IPv6 (fc6)', 'p0', 'udp [fd00::7]:5000 > [fd00:1::5]:53'],
    ['traffic outside the chain (port 80, not 100-200)', 'p0', 'tcp 10.0.0.5:40000 > 10.0.1.5:80'],
  ];

  for (const [what, iface, packet] of PACKETS) {
    it(`tells the userspace journey for ${what}`, async () => {
      const [ovs, userspace, ovsText, userspaceText] = await Promise.all([
        journey(['--server', url], iface, packet),
        journey(['--config', FIXTURE], iface, packet),
        explain(['--server', url], iface, packet, false),
        explain(['--config', FIXTURE], iface, packet, false),
      ]);
      expect(ovs.steps.length).toBeGreaterThan(0);
      expect(shape(ovs)).toEqual(shape(userspace));
      // Each OVS hop leaves by its instance's port: ingress forward, egress on the reverse path.
      for (const st of ovs.steps.filter((x) => x.verdict === 'hop')) expect(st.out).toEqual([PORTS[st.instance!][st.reverse ? 1 : 0]]);
      expect(ovsText).toMatch(/^verdict: /m);
      expect(canon(ovsText)).toBe(canon(userspaceText));
    });
  }

  it('answers GET /v2.0/sfc/explain itself (not the client\'s local replay), 400 for an unknown interface or a bad frame', async () => {
    const frame = Buffer.from(buildFrame({ ethSrc: 'fa:16:3e:00:00:10', ethDst: 'ff:ff:ff:ff:ff:ff', ip: { ver: 4, src: '10.0.0.5', dst: '10.0.1.5' }, l4: { proto: 'tcp', sport: 40000, dport: 150 }, frameLen: 64 })).toString('hex');
    const ok = await fetch(`${url}/v2.0/sfc/explain?in=p0&frame=${frame}`);
    expect(ok.status).toBe(200);
    const { steps } = (await ok.json()) as { steps: Step[] };
    expect(steps.map((x) => x.verdict)).toEqual(['hop', 'hop', 'end']);
    for (const [q, what] of [[`in=p9&frame=${frame}`, /interface 'p9'/], ['in=p0&frame=zz', /hex/]] as const) {
      const bad = await fetch(`${url}/v2.0/sfc/explain?${q}`);
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { NeutronError: { message: string } }).NeutronError.message).toMatch(what);
    }
  });

  it('sends the reply through the instances the request crossed, in reverse, and pins the flow as it traces', async () => {
    // One after the other: the request's trace commits the pin the reply's trace then finds (run
    // together, the reply could commit first and own the conntrack entry in its own direction).
    const fwd = await journey(['--server', url], 'p0', 'tcp 10.0.0.5:41234 > 10.0.1.5:120');
    const rev = await journey(['--server', url], 'p5', 'tcp 10.0.1.5:120 > 10.0.0.5:41234');
    expect(fwd.verdict).toBe('chain');
    expect(rev.hops).toEqual([...fwd.hops].reverse());
    // ofproto/trace ran the hop's commit: the flow is pinned (its conntrack entry, a member's mark), as its first packet would pin it.
    expect(await exec(['ovs-appctl', '-t', daemon.vswitchdCtl, 'dpctl/dump-conntrack'])).toMatch(/^tcp,orig=\(src=10\.0\.0\.5,dst=10\.0\.1\.5,sport=41234,dport=120\),.*,mark=\d+/m);
    const again = await journey(['--server', url], 'p0', 'tcp 10.0.0.5:41234 > 10.0.1.5:120');
    expect(again.hops).toEqual(fwd.hops);
  });

  it('shows a flow on its pin after its instance left and came back, where the hash alone would name the returned one', async () => {
    const packet = 'tcp 10.0.0.5:41300 > 10.0.1.5:130';
    const hop1 = async () => (await journey(['--server', url], 'p0', packet)).hops[0];
    const first = await hop1();
    const { port_pair_groups: groups } = (await (await fetch(`${url}/v2.0/sfc/port_pair_groups?name=ppg1`)).json()) as { port_pair_groups: { id: string; port_pairs: string[] }[] };
    const { port_pairs: pairs } = (await (await fetch(`${url}/v2.0/sfc/port_pairs`)).json()) as { port_pairs: { id: string; name: string }[] };
    const members = groups[0].port_pairs;
    const put = async (ids: string[]) => {
      const r = await fetch(`${url}/v2.0/sfc/port_pair_groups/${groups[0].id}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ port_pair_group: { port_pairs: ids } }) });
      expect(r.status).toBe(200);
    };
    const gone = pairs.find((pp) => pp.name === first)!.id;
    try {
      // Its instance leaves: the flow is hashed to the other one and pinned there (explain commits, as a first packet would).
      await put(members.filter((id) => id !== gone));
      const moved = await hop1();
      expect(moved).not.toBe(first);
      // It comes back (the group as at first, so the hash names it again): the flow stays on its pin.
      await put(members);
      expect(await hop1()).toBe(moved);
    } finally {
      await put(members);
    }
  });

  it('follows an SF-aware NSH hop through its pop and recirculation, both ways (b5-nsh)', async () => {
    await stop();
    await exec(['ovs-vsctl', `--db=${daemon.db}`, '--timeout=10', 'del-br', 'brx']);
    const nsh = new URL('./fixtures/ovs/b5-nsh.yaml', import.meta.url).pathname;
    const at = await serve(nsh, 'brn');
    for (const [iface, packet] of [['p0', 'tcp 10.0.0.5:40000 > 10.0.1.5:80'], ['p5', 'tcp 10.0.1.5:80 > 10.0.0.5:40000']]) {
      const [ovs, userspace, ovsText, userspaceText] = await Promise.all([
        journey(['--server', at], iface, packet),
        journey(['--config', nsh], iface, packet),
        explain(['--server', at], iface, packet, false),
        explain(['--config', nsh], iface, packet, false),
      ]);
      expect(ovs.steps.some((x) => /^NSH SPI 1 SI 25[45]$/.test(x.encap as string))).toBe(true);
      expect(shape(ovs)).toEqual(shape(userspace));
      expect(ovsText).toBe(userspaceText);
    }
  });

  it('gives a chain end without a logical destination port the entry MACs back, as the userspace mode does (b5)', async () => {
    await stop();
    for (const br of ['brx', 'brn']) await exec(['ovs-vsctl', `--db=${daemon.db}`, '--timeout=10', '--if-exists', 'del-br', br]);
    const b5 = new URL('./fixtures/ovs/b5.yaml', import.meta.url).pathname;
    const at = await serve(b5, 'brb');
    // (SFs simulated by loopback return frames as sent: to the SF's own MAC. The OVS trace's
    // first hop commits the flow's entry MACs; the chain end reads them back from conntrack.)
    const packet = 'tcp 10.0.0.5:40000 > 10.0.1.5:80';
    const [ovs, userspace, ovsText, userspaceText] = await Promise.all([
      journey(['--server', at], 'p0', packet),
      journey(['--config', b5], 'p0', packet),
      explain(['--server', at], 'p0', packet, false),
      explain(['--config', b5], 'p0', packet, false),
    ]);
    expect(ovs.verdict).toBe('chain');
    expect(ovs.steps.at(-1)).toMatchObject({ verdict: 'end', dstMac: userspace.steps.at(-1)!.dstMac, srcMac: userspace.steps.at(-1)!.srcMac });
    expect(shape(ovs)).toEqual(shape(userspace));
    expect(ovsText).toBe(userspaceText);
  });
});
