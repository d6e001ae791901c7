/*
 * End to end on the ovs driver: real namespaces, real TCP/UDP, `sfc serve --driver ovs` rendering
 * the chains into a private Open vSwitch (ovsdb-server + ovs-vswitchd, netdev datapath) inside the
 * lab's dataplane namespace. test/support/e2e.ts has the suite; every test runs here except the
 * garbage test, which checks the userspace parser's per-reason drop counters (OVS's flow extractor
 * keeps no such reasons). Then `sfc demo --driver ovs` as a user runs it: its verdict must pass.
 * Then `sfc capture` through an OVS mirror, on a lab whose hop is an SF-aware NSH instance: what
 * the SF's port is sent (encapsulated, its MAC written) and what the server's port is sent, read
 * by tshark; no mirror is left behind.
 * Last, a chain end without a logical destination port behind an SF that returns frames unchanged
 * (a bump in the wire: tc redirects in0 to out0, so the frame still carries the SF's own ingress
 * MAC as destination): as in the userspace mode the chain end gives the frame back the MACs it had
 * at chain entry (the first hop's conntrack label), so the server receives it, from the client's MAC.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exec } from '../src/control/drivers/ovs/ofctl.js';
import { distFile, LabDataplane, labUpForOvs, startTraffic, type TrafficRun } from '../src/lab/harness.js';
import { parse, stringify } from 'yaml';
import { CLIENT, labDown, netnsExec, SERVER, type Lab } from '../src/lab/topology.js';
import type { UdpRecvResult, UdpSendResult } from '../src/lab/traffic.js';
import { e2eSuite } from './support/e2e.js';
import { ovsLabPrerequisites } from './support/ovs.js';

e2eSuite({ driver: 'ovs' });

const demo = ovsLabPrerequisites('sfc demo --driver ovs');

describe.skipIf(!demo)('sfc demo --driver ovs', () => {
  it('builds the lab, runs TCP and UDP through Open vSwitch and passes its verdict; removes the lab', async () => {
    const name = `sfdo${process.pid % 100000}`;
    const { code, out } = await new Promise<{ code: number; out: string }>((resolve) =>
      execFile(process.execPath, [distFile('cli.js'), 'demo', '--driver', 'ovs', '--seconds', '1', '--name', name], { maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: stdout + stderr }),
      ),
    );
    expect(code, out.slice(-3000)).toBe(0);
    expect(out).toMatch(/sfc serve --driver ovs/);
    expect(out).toMatch(/^verdict: PASS$/m);
    expect(out).not.toMatch(/✗/);
    expect(out).toMatch(new RegExp(`tearing lab '${name}' down ... done`));
  }, 120_000);
});

const capture = ovsLabPrerequisites('sfc capture on the ovs driver');

describe.skipIf(!capture)('sfc capture on the ovs driver (an OVS mirror)', () => {
  const LAB = `sfct-capo${process.pid}`;
  let lab: Lab;
  let dp: LabDataplane;
  let tmp: string;
  let recv: TrafficRun<UdpRecvResult>;
  let send: TrafficRun<UdpSendResult>;
  const sfc = (...args: string[]) => netnsExec(lab.dpNs, [process.execPath, distFile('cli.js'), ...args, '--server', dp.url]);
  const fields = async (file: string, ...names: string[]) =>
    (await exec(['tshark', '-r', file, '-T', 'fields', ...names.flatMap((f) => ['-e', f])])).trim().split('\n').map((l) => l.split('\t'));

  beforeAll(async () => {
    await labDown(LAB);
    tmp = await mkdtemp(join(tmpdir(), 'sfct-capo-'));
    lab = await labUpForOvs({ name: LAB, hops: 1, instances: 1, sfCorrelation: 'nsh', awareHops: [1] });
    dp = await LabDataplane.start(lab, { driver: 'ovs', config: lab.configPath });
    recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:5353`, '--seconds', '60', '--idle', '30']);
    await recv.listening;
    send = await startTraffic<UdpSendResult>(lab, lab.clientNs, ['udp-send', '--connect', `${SERVER.ip}:5353`, '--flows', '4', '--pps', '200', '--seconds', '60']);
  }, 60_000);

  afterAll(async () => {
    send?.child.kill();
    recv?.child.kill();
    await dp?.stop();
    await labDown(LAB);
    await rm(tmp, { recursive: true, force: true });
  });

  it('writes what a port is sent as the bridge sends it (NSH, the SF\'s MAC) and what the server gets, as pcap; removes its mirror', async () => {
    const sf = lab.sfs[0];
    const toSf = join(tmp, 'sf11-in.pcap');
    await sfc('capture', 'sf11-in', '-w', toSf, '-c', '10', '--filter', 'udp dst port 5353', '--timeout', '30');
    // (eth.dst twice: the outer header's, the SF's ingress MAC; the inner frame's, still the server's)
    const row = [`${sf.ingressMac},${SERVER.mac}`, '1', '255', '10.0.0.1', '10.0.0.2', '5353'];
    expect(await fields(toSf, 'eth.dst', 'nsh.spi', 'nsh.si', 'ip.src', 'ip.dst', 'udp.dstport')).toEqual(Array(10).fill(row));
    // The server's port, streamed to stdout: plain, to the server's MAC.
    const piped = await netnsExec(lab.dpNs, ['sh', '-c', `${process.execPath} ${distFile('cli.js')} capture server -w - -c 5 --timeout 30 --server ${dp.url} | tcpdump -nn -e -r -`]);
    const lines = piped.stdout.trim().split('\n');
    expect(lines).toHaveLength(5);
    for (const l of lines) expect(l).toMatch(new RegExp(`> ${SERVER.mac}, ethertype IPv4 .* 10\\.0\\.0\\.1\\.\\d+ > 10\\.0\\.0\\.2\\.5353: `));
    // Each capture took its mirror and port away when it ended.
    const db = `--db=unix:${join(LabDataplane.ovsDir(lab), 'db.sock')}`;
    for (let k = 0; k < 50 && (await exec(['ovs-vsctl', db, 'list-ports', 'br-sfc'])).includes('sfcm'); k++) await new Promise((r) => setTimeout(r, 100));
    expect(await exec(['ovs-vsctl', db, '--columns=name', 'list', 'Mirror'])).toBe('');
    expect(await exec(['ovs-vsctl', db, 'list-ports', 'br-sfc'])).not.toMatch(/sfcm/);
  }, 60_000);
});

const restore = ovsLabPrerequisites('ovs chain end without a logical destination port');

describe.skipIf(!restore)('a chain end without a logical destination port on the ovs driver', () => {
  const LAB = `sfct-rsto${process.pid}`;
  let lab: Lab;
  let dp: LabDataplane;

  beforeAll(async () => {
    await labDown(LAB);
    lab = await labUpForOvs({ name: LAB, hops: 1, instances: 1, symmetric: false });
    // The SF returns every frame as it came: in0's ingress redirected to out0 (u32 match-all; cls_matchall may not be built).
    const sf = lab.sfs[0].ns;
    await netnsExec(sf, ['tc', 'qdisc', 'add', 'dev', 'in0', 'clsact']);
    await netnsExec(sf, ['tc', 'filter', 'add', 'dev', 'in0', 'ingress', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', 'out0']);
    // The server counts what arrives with the entry MACs (the client's source, its own destination).
    await netnsExec(lab.serverNs, ['nft', '-f', '-'], {
      input: `table netdev sfct_macs {
  counter entry {}
  chain in {
    type filter hook ingress device eth0 priority -500; policy accept;
    ether saddr ${CLIENT.mac} ether daddr ${SERVER.mac} udp dport 6100 counter name "entry"
  }
}
`,
    });
    const config = parse(lab.configYaml) as { flow_classifiers: Record<string, unknown>[] };
    for (const c of config.flow_classifiers) delete c.logical_destination_port;
    const file = join(lab.runDir, 'no-destination.yaml');
    await writeFile(file, stringify(config));
    dp = await LabDataplane.start(lab, { driver: 'ovs', config: file });
  }, 60_000);

  afterAll(async () => {
    await dp?.stop();
    await labDown(LAB);
  });

  it('gives the frame back its entry MACs at the chain end: the server receives every datagram, from the client\'s MAC', async () => {
    const recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:6100`, '--idle', '1', '--seconds', '30']);
    await recv.listening;
    const send = await startTraffic<UdpSendResult>(lab, lab.clientNs, ['udp-send', '--connect', `${SERVER.ip}:6100`, '--flows', '8', '--count', '400', '--pps', '400']);
    const [sent, received] = await Promise.all([send.result, recv.result]);
    expect(sent.sent).toBe(400);
    expect(received.received).toBe(400);
    const { stdout } = await netnsExec(lab.serverNs, ['nft', '-j', 'list', 'counter', 'netdev', 'sfct_macs', 'entry']);
    const entry = (JSON.parse(stdout) as { nftables: { counter?: { packets: number } }[] }).nftables.find((o) => o.counter)?.counter;
    expect(entry?.packets).toBe(400);
    // Through the SF (not switched around it): its instance carried them.
    const samples = await dp.metrics();
    expect(samples.find((x) => x.name === 'sfc_instance_packets_total' && x.labels.port_pair === 'pp11')?.value).toBeGreaterThanOrEqual(400);
  }, 60_000);
});

