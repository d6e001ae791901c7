// sfc top's cells: SF times stay within their column (so a cell never runs into the one before it);
// the FLOWS column (sfc_instance_flows) per instance and summed per hop, '-' when not counted, and
// every line within 100 columns with large figures.
import { describe, expect, it } from 'vitest';
import { micros, renderTop, topView } from '../src/commands/top.js';
import type { Sample } from '../src/lab/harness.js';

describe('sfc top formatting', () => {
  it('SF times: at most 7 columns, in the unit that fits', () => {
    const cases: [number, string][] = [[85, '85 µs'], [999.4, '999 µs'], [999.6, '1.00 ms'], [2104, '2.10 ms'], [9999, '10.0 ms'], [12345, '12.3 ms'], [99_990, '100 ms'], [123_456, '123 ms'], [999_600, '1.00 s'], [1.5e6, '1.50 s']];
    for (const [us, text] of cases) expect(micros(us), String(us)).toBe(text);
    for (let us = 1; us < 1e8; us *= 1.013) expect(micros(us).length, String(us)).toBeLessThanOrEqual(7);
    expect(micros(null)).toBe('-');
  });

  it('FLOWS: per instance from sfc_instance_flows, per hop their sum; "-" when the driver does not count them', () => {
    const at = (chain: string, hop: string, pp: string) => ({ chain, hop, port_pair: pp });
    const samples = (t: number, flows: boolean): Sample[] =>
      [['long-chain-name-of-many-characters', '1', 'pp11'], ['long-chain-name-of-many-characters', '1', 'pp12-with-a-long-name'], ['pc2', '1', 'pp31']].flatMap(([c, h, pp], k) => [
        { name: 'sfc_instance_packets_total', labels: at(c, h, pp), value: 4_000_000_000 + t * 1_000_000 },
        { name: 'sfc_instance_bytes_total', labels: at(c, h, pp), value: 40_000_000_000 + t * 500_000_000 },
        ...(flows && k < 2 ? [{ name: 'sfc_instance_flows', labels: at(c, h, pp), value: 123_456 * (k + 1) }] : []),
      ]);
    const view = topView('http://x', { at: 0, samples: samples(1, true) }, { at: 1000, samples: samples(2, true) });
    const hop = view.chains.find((c) => c.chain === 'long-chain-name-of-many-characters')!.hops[0];
    expect(hop.instances.map((i) => i.flows)).toEqual([123_456, 246_912]);
    expect(hop.flows).toBe(370_368);
    expect(view.chains.find((c) => c.chain === 'pc2')!.hops[0].flows, 'no instance counted').toBeNull();
    const lines = renderTop(view, false);
    for (const l of lines) expect(l.length, l).toBeLessThanOrEqual(100);
    const header = lines.find((l) => l.startsWith('CHAIN'))!;
    const flowsEnd = header.indexOf('FLOWS') + 'FLOWS'.length;
    // right-aligned under the header, a space before each cell
    const cell = (l: string) => l.slice(flowsEnd - 8, flowsEnd);
    expect(cell(lines.find((l) => l.startsWith('  hop 1') && l.includes('370,368'))!)).toBe(' 370,368');
    expect(cell(lines.find((l) => l.startsWith('    pp11'))!)).toBe(' 123,456');
    expect(cell(lines.find((l) => l.startsWith('    pp31'))!)).toBe('       -');
    // without the gauge (an older server, or a driver that cannot count): '-' everywhere
    const none = renderTop(topView('http://x', { at: 0, samples: samples(1, false) }, { at: 1000, samples: samples(2, false) }), false);
    expect(cell(none.find((l) => l.startsWith('    pp11'))!)).toBe('       -');
  });
});
