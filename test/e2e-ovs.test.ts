/*
 * End to end on the ovs driver: real namespaces, real TCP/UDP, `sfc serve --driver ovs` rendering
 * the chains into a private Open vSwitch (ovsdb-server + ovs-vswitchd, netdev datapath) inside the
 * lab's dataplane namespace. test/support/e2e.ts has the suite; every test runs here except the
 * garbage test, which checks the userspace parser's per-reason drop counters (OVS's flow extractor
 * keeps no such reasons). Then `sfc demo --driver ovs` as a user runs it: its verdict must pass.
 */
import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { distFile } from '../src/lab/harness.js';
import { e2eSuite } from './support/e2e.js';
import { ovsPrerequisites } from './support/ovs.js';

e2eSuite({ driver: 'ovs' });

const demo = ovsPrerequisites('sfc demo --driver ovs', () => {
  try {
    distFile('cli.js');
    return null;
  } catch (e) {
    return (e as Error).message;
  }
});

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
