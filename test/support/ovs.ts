/*
 * What the OVS tests share: their prerequisites, and a namespace of their own with veths p0..p<n-1>
 * for a private or shared ovs-vswitchd to use as bridge ports.
 */
import { ovsMissing } from '../../src/control/drivers/ovs/daemon.js';
import { exec } from '../../src/control/drivers/ovs/ofctl.js';
import { distFile } from '../../src/lab/harness.js';
import { prerequisites } from './prereq.js';

/** Root, iproute2 and Open vSwitch (see prereq.ts: a skip outside CI, a failure in CI). */
export const ovsPrerequisites = (suite: string, more: () => string | null = () => null) =>
  prerequisites(suite, { root: true, commands: ['ip', 'ovs-vsctl', 'ovs-ofctl', 'ovs-appctl'], check: () => ovsMissing() ?? more() });

/** ovsPrerequisites plus the compiled CLI and traffic tool (tests that run `sfc serve` in a lab). */
export const ovsLabPrerequisites = (suite: string) =>
  ovsPrerequisites(suite, () => {
    try {
      distFile('cli.js');
      distFile('lab/traffic.js');
      return null;
    } catch (e) {
      return (e as Error).message;
    }
  });

/** Create namespace `ns` with veths p0..p<n-1> (up; their peers q<k> stay down). */
export async function vethNamespace(ns: string, n: number): Promise<void> {
  await exec(['ip', 'netns', 'add', ns]);
  const lines = Array.from({ length: n }, (_, k) => [`link add p${k} type veth peer name q${k}`, `link set p${k} up`]).flat();
  await exec(['ip', '-n', ns, '-batch', '-'], { input: lines.join('\n') + '\n' });
}
