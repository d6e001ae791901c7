/*
 * Crash under load (bench/crashload.ts): 10 rounds of kill -9 of `sfc serve --driver noop` while
 * 8 clients write as fast as they can; after each restart every acknowledged write is there, no
 * write is half there, and nothing appears that was not requested. `npm run bench:soak` runs 100
 * rounds.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { crashUnderLoad } from '../bench/crashload.js';

const dir = mkdtempSync(join(tmpdir(), 'sfct-crash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('10 rounds of kill -9 under write load: every acknowledged write survives, none is half there', async () => {
  const result = await crashUnderLoad({ rounds: 10, state: join(dir, 'state.json') });
  expect(result.violations).toEqual([]);
  expect(result.acknowledged).toBeGreaterThanOrEqual(10 * 20);
  expect(result.objects).toBeGreaterThan(50);
  // the kills landed with requests in flight: their outcomes were checked too
  expect(result.inFlightApplied + result.inFlightLost).toBeGreaterThan(10);
}, 120_000);
