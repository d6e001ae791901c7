/*
 * Crash under load (bench/crashload.ts): rounds of kill -9 of `sfc serve` while 8 clients write as
 * fast as they can; after each restart every acknowledged write is there, no write is half there,
 * and nothing appears that was not requested.
 *   - noop driver, a plain child process: 10 rounds.
 *   - userspace driver in the lab (bench/crash-chain.ts), UDP flows crossing the symmetric two-hop
 *     chain all along: 4 rounds here (about 5 s each); after each restart the SFs' flow logs must show every flow
 *     back, each on the instances it had at the first start.
 * `npm run bench:soak` runs 100 rounds of each.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CHAIN_ACKS_BEFORE_KILL, chainTarget } from '../bench/crash-chain.js';
import { crashUnderLoad, noopTarget } from '../bench/crashload.js';
import { nativeAvailable } from '../src/dataplane/io/native.js';
import { distFile } from '../src/lab/harness.js';
import { prerequisites } from './support/prereq.js';

const dir = mkdtempSync(join(tmpdir(), 'sfct-crash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('10 rounds of kill -9 under write load: every acknowledged write survives, none is half there', async () => {
  const result = await crashUnderLoad({ rounds: 10, target: noopTarget(join(dir, 'state.json')) });
  expect(result.violations).toEqual([]);
  expect(result.acknowledged).toBeGreaterThanOrEqual(10 * 20);
  expect(result.objects).toBeGreaterThan(50);
  // the kills landed with requests in flight: their outcomes were checked too
  expect(result.inFlightApplied + result.inFlightLost).toBeGreaterThan(10);
}, 120_000);

const chainRun = prerequisites('crash under load with traffic', {
  root: true,
  commands: ['ip', 'nft'],
  check: () => {
    try {
      distFile('cli.js');
      distFile('lab/traffic.js');
    } catch (e) {
      return (e as Error).message;
    }
    return nativeAvailable() ? null : 'the native addon is not built (npm run build:native)';
  },
});

describe.skipIf(!chainRun)('crash under load, userspace driver, traffic through the lab chain', () => {
  it('4 rounds of kill -9: acknowledged writes survive, none is half there; traffic resumes with every flow on its instances', async () => {
    const target = await chainTarget({ name: `sfct-crash${process.pid}` });
    let traffic;
    try {
      const result = await crashUnderLoad({ rounds: 4, target, acksBeforeKill: CHAIN_ACKS_BEFORE_KILL });
      expect(result.violations).toEqual([]);
      expect(result.acknowledged).toBeGreaterThanOrEqual(4 * CHAIN_ACKS_BEFORE_KILL[0]);
      expect(result.inFlightApplied + result.inFlightLost).toBeGreaterThan(4);
    } finally {
      traffic = await target.close();
    }
    expect(traffic?.received).toBeGreaterThan(0);
  }, 180_000);
});
