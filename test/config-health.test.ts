// The config file's health section (config.ts healthPolicies): policies per port pair group, read
// beside the chain model, and bad entries named by file, line and field.
import { describe, expect, it } from 'vitest';
import { ConfigError, healthPolicies, loadConfig } from '../src/control/config.js';

const MODEL = `ports:\n  - {name: a, mac_address: '02:00:00:00:00:01', 'binding:profile': {interface: a0}}\n`;

describe('config file health section', () => {
  it('gives the policies by group, and the model loads beside it', async () => {
    const text = `${MODEL}health:\n  policies:\n    ppg1: fail-open\n    ppg2: fail-closed\n`;
    expect([...healthPolicies(text, 'c.yaml')]).toEqual([['ppg1', 'fail-open'], ['ppg2', 'fail-closed']]);
    expect((await loadConfig(text, 'c.yaml')).ports.map((p) => p.name)).toEqual(['a']);
    expect(healthPolicies(MODEL, 'c.yaml').size).toBe(0);
  });

  it('names the file, line and field of a bad entry, and the model load fails on it too', async () => {
    const bad = `${MODEL}health:\n  policies:\n    ppg1: fail-sideways\n`;
    expect(() => healthPolicies(bad, 'c.yaml')).toThrow(new ConfigError("c.yaml:5: health.policies.ppg1: 'fail-sideways' is not one of reroute, fail-open, fail-closed"));
    await expect(loadConfig(bad, 'c.yaml')).rejects.toThrow(/c\.yaml:5: health\.policies\.ppg1/);
    expect(() => healthPolicies(`health:\n  interval: 5\n`, 'c.yaml')).toThrow("c.yaml:2: health: unknown key 'interval' (expected policies)");
    expect(() => healthPolicies(`health: [1]\n`, 'c.yaml')).toThrow("c.yaml:1: 'health' must be a mapping (policies)");
  });
});
