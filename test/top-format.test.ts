// sfc top's cells: SF times stay within their column (so a cell never runs into the one before it).
import { describe, expect, it } from 'vitest';
import { micros } from '../src/commands/top.js';

describe('sfc top formatting', () => {
  it('SF times: at most 7 columns, in the unit that fits', () => {
    const cases: [number, string][] = [[85, '85 µs'], [999.4, '999 µs'], [999.6, '1.00 ms'], [2104, '2.10 ms'], [9999, '10.0 ms'], [12345, '12.3 ms'], [99_990, '100 ms'], [123_456, '123 ms'], [999_600, '1.00 s'], [1.5e6, '1.50 s']];
    for (const [us, text] of cases) expect(micros(us), String(us)).toBe(text);
    for (let us = 1; us < 1e8; us *= 1.013) expect(micros(us).length, String(us)).toBeLessThanOrEqual(7);
    expect(micros(null)).toBe('-');
  });
});
