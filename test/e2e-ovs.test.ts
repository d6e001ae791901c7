/*
 * End to end on the ovs driver: real namespaces, real TCP/UDP, `sfc serve --driver ovs` rendering
 * the chains into a private Open vSwitch (ovsdb-server + ovs-vswitchd, netdev datapath) inside the
 * lab's dataplane namespace. test/support/e2e.ts has the suite; every test runs here except the
 * garbage test, which checks the userspace parser's per-reason drop counters (OVS's flow extractor
 * keeps no such reasons). Then `sfc demo --driver ovs` as a user runs it: its verdict must pass.
 * Then `sfc capture` through an OVS mirror, on a lab whose hop is an SF-aware NSH instance: what
 * the SF's port is sent (encapsulated, its MAC written) and what the server's port is sent, read
 * by tshark; no mirror is left behind.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exec } from '../src/control/drivers/ovs/ofctl.js';
import { distFile, LabDataplane, labUpForOvs, startTraffic, type TrafficRun } from '../src/lab/harness.js';
import { labDown, netnsExec, SERVER, type Lab } from '../src/lab/topology.js';
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
    const db = `--db=unix:${join(lab.runDir, 'ovs-br-sfc', 'ovs', 'db.sock')}`;
    for (let k = 0; k < 50 && (await exec(['ovs-vsctl', db, 'list-ports', 'br-sfc'])).includes('sfcm'); k++) await new Promise((r) => setTimeout(r, 100));
    expect(await exec(['ovs-vsctl', db, '--columns=name', 'list', 'Mirror'])).toBe('');
    expect(await exec(['ovs-vsctl', db, 'list-ports', 'br-sfc'])).not.toMatch(/sfcm/);
  }, 60_000);
});
