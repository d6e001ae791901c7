/*
 * A real 3-member etcd cluster per test file (src/lab/etcd-cluster.ts) on loopback: each file
 * passes its own base port (6 ports from there), data directories live in a temporary directory
 * removed afterwards, members are killed by pid. Needs Debian's etcd-server (`etcd` on PATH).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdCluster } from '../../src/lab/etcd-cluster.js';
import { prerequisites } from './prereq.js';

export { EtcdCluster };

/** Whether the suite can run (etcd installed); in CI a missing etcd fails the run. */
export function etcdAvailable(suite: string): boolean {
  return prerequisites(suite, { commands: ['etcd'] });
}

export interface TestCluster {
  cluster: EtcdCluster;
  /** Kill the members and remove their data. */
  cleanup(): Promise<void>;
}

export async function startTestCluster(basePort: number): Promise<TestCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'sfc-etcd-'));
  try {
    const cluster = await EtcdCluster.start({ dir, basePort });
    return {
      cluster,
      async cleanup() {
        await cluster.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
