/*
 * Config files: name/id references, YAML and JSON, every error shape (file:line, object, field),
 * and the round trip stateToConfig → loadConfig.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { ConfigError, loadConfig, loadConfigFile, stateToConfig } from '../src/control/config.js';
import type { State } from '../src/control/model.js';
import { Store } from '../src/control/store.js';

const FIXTURES = join(import.meta.dirname, 'fixtures');
const fixture = (name: string) => join(FIXTURES, name);

/** 1-based line of the first line containing `needle` in a fixture (so fixtures can be edited freely). */
async function lineOf(name: string, needle: string): Promise<number> {
  const lines = (await readFile(fixture(name), 'utf8')).split('\n');
  const i = lines.findIndex((l) => l.includes(needle));
  if (i < 0) throw new Error(`${needle} not in ${name}`);
  return i + 1;
}

async function failure(load: Promise<unknown>): Promise<string> {
  const e = await load.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ConfigError);
  return (e as ConfigError).message;
}

const byName = <T extends { name: string; id: string }>(items: T[], name: string): T => {
  const found = items.find((i) => i.name === name);
  if (!found) throw new Error(`no ${name}`);
  return found;
};

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sfct-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('loading a good file', () => {
  let state: State;
  beforeAll(async () => {
    state = await loadConfigFile(fixture('config-good.yaml'));
  });

  it('creates every object through the API rules (defaults, conversions)', () => {
    expect(state.ports).toHaveLength(5);
    expect(state.port_pairs.map((p) => p.service_function_parameters)).toEqual([
      { correlation: 'mpls', weight: 2 },
      { correlation: 'mpls', weight: 1 },
    ]);
    const web = byName(state.flow_classifiers, 'web');
    expect(web).toMatchObject({ protocol: 'tcp', destination_port_range_max: 80, ethertype: 'IPv4' });
    const pc1 = byName(state.port_chains, 'pc1');
    expect(pc1).toMatchObject({ chain_id: 1, chain_parameters: { correlation: 'mpls', symmetric: false } });
    expect(byName(state.port_chains, 'pc2').chain_id).toBe(40);
  });

  it('resolves names and ids to ids, keeps explicit ids and group_id', () => {
    const port = (n: string) => byName(state.ports, n).id;
    const ids = byName(state.ports, 'ids');
    expect(ids.id).toBe('7d0e6c9a-3b1f-4c2d-9e8f-0a1b2c3d4e5f');
    expect(byName(state.port_pairs, 'fw1')).toMatchObject({ ingress: port('fw-in'), egress: port('fw-out') });
    expect(byName(state.port_pairs, 'ids1')).toMatchObject({ ingress: ids.id, egress: ids.id });
    const fw = byName(state.port_pair_groups, 'fw');
    expect(fw.port_pairs).toEqual([byName(state.port_pairs, 'fw1').id]);
    expect(state.port_pair_groups.map((g) => g.group_id)).toEqual([1, 2, 7]);
    expect(byName(state.flow_classifiers, 'web')).toMatchObject({ logical_source_port: port('client'), logical_destination_port: port('server') });
    const pc1 = byName(state.port_chains, 'pc1');
    expect(pc1).toMatchObject({ port_pair_groups: [fw.id], flow_classifiers: [byName(state.flow_classifiers, 'web').id] });
    const pc2 = byName(state.port_chains, 'pc2');
    expect(state.service_graphs[0]!.port_chains).toEqual({ [pc1.id]: [pc2.id] });
  });

  it('round-trips through stateToConfig, in YAML and in JSON', async () => {
    const config = stateToConfig(state);
    // references come out as names, defaults and computed fields are left out
    const pp = (config.port_pairs as Record<string, unknown>[])[0]!;
    expect(pp).toMatchObject({ name: 'fw1', ingress: 'fw-in', egress: 'fw-out' });
    expect(pp).not.toHaveProperty('tenant_id');
    expect(pp).not.toHaveProperty('description');
    expect((config.ports as Record<string, unknown>[])[0]).not.toHaveProperty('status');
    expect((config.service_graphs as Record<string, unknown>[])[0]).toMatchObject({ port_chains: { pc1: ['pc2'] } });
    expect(await loadConfig(stringify(config), 'again.yaml')).toEqual(state);
    const jsonPath = join(dir, 'again.json');
    await writeFile(jsonPath, JSON.stringify(config, null, 2));
    expect(await loadConfigFile(jsonPath)).toEqual(state);
  });

  it('stateToConfig falls back to ids when a name is ambiguous or empty, and such a config loads back', async () => {
    const store = new Store({ linkUp: () => false });
    const t1 = await store.create('ports', { name: 'twin', 'binding:profile': { interface: 'a' } });
    await store.create('ports', { name: 'twin', 'binding:profile': { interface: 'b' } });
    const anon = await store.create('ports', { 'binding:profile': { interface: 'c' } });
    const named = await store.create('ports', { name: 'solo', 'binding:profile': { interface: 'd' } });
    await store.create('port_pairs', { ingress: t1.id, egress: anon.id });
    await store.create('port_pairs', { ingress: named.id, egress: named.id });
    const config = stateToConfig(store.state);
    expect(config.port_pairs).toEqual([
      expect.objectContaining({ ingress: t1.id, egress: anon.id }),
      expect.objectContaining({ ingress: 'solo', egress: 'solo' }),
    ]);
    expect(await loadConfig(stringify(config), 'ids.yaml')).toEqual(store.state);
  });

  it('an empty file is an empty state; JSON input works', async () => {
    expect(await loadConfig('', 'empty.yaml')).toEqual({ ports: [], port_pairs: [], port_pair_groups: [], flow_classifiers: [], port_chains: [], service_graphs: [] });
    const json = JSON.stringify({ ports: [{ name: 'p', 'binding:profile': { interface: 'sfct-a' } }], port_pairs: [{ name: 'pp', ingress: 'p', egress: 'p' }] }, null, 2);
    const s = await loadConfig(json, 'x.json');
    expect(s.port_pairs[0]).toMatchObject({ ingress: s.ports[0]!.id, egress: s.ports[0]!.id });
  });
});

describe('error shapes', () => {
  it('unknown reference: file:line, object, field', async () => {
    const msg = await failure(loadConfigFile(fixture('config-bad-ref.yaml')));
    const line = await lineOf('config-bad-ref.yaml', 'sf9i');
    expect(msg).toBe(`${fixture('config-bad-ref.yaml')}:${line}: port_pairs[1] (name 'pp2'): field 'ingress': no port named 'sf9i'`);
  });

  it('rule failure: NeutronError type and message at the object line', async () => {
    const msg = await failure(loadConfigFile(fixture('config-bad-rule.yaml')));
    const line = await lineOf('config-bad-rule.yaml', 'name: pc1');
    expect(msg).toMatch(new RegExp(`^.*config-bad-rule\\.yaml:${line}: port_chains\\[0\\] \\(name 'pc1'\\): PortChainInconsistentCorrelations: `));
  });

  it('attribute failure: the field and its line', async () => {
    const msg = await failure(loadConfigFile(fixture('config-bad-field.yaml')));
    const line = await lineOf('config-bad-field.yaml', 'service_function_parameters');
    expect(msg).toMatch(
      new RegExp(`config-bad-field\\.yaml:${line}: port_pairs\\[0\\] \\(name 'heavy'\\): field 'service_function_parameters': InvalidInput: .*'lots' is not an integer`),
    );
  });

  it('unknown top-level key names it', async () => {
    const msg = await failure(loadConfigFile(fixture('config-bad-toplevel.yaml')));
    const line = await lineOf('config-bad-toplevel.yaml', 'chains:');
    expect(msg).toMatch(new RegExp(`config-bad-toplevel\\.yaml:${line}: unknown top-level key 'chains' \\(expected ports, port_pairs, `));
  });

  it('ambiguous name', async () => {
    const msg = await failure(loadConfigFile(fixture('config-bad-ambiguous.yaml')));
    const line = await lineOf('config-bad-ambiguous.yaml', 'logical_source_port: twin');
    expect(msg).toMatch(new RegExp(`:${line}: flow_classifiers\\[0\\] \\(name 'fc'\\): field 'logical_source_port': name 'twin' is ambiguous`));
  });

  it('YAML syntax error with a line', async () => {
    const msg = await failure(loadConfigFile(fixture('config-bad-syntax.yaml')));
    expect(msg).toMatch(/config-bad-syntax\.yaml:\d+: /);
  });

  it('JSON: syntax errors, and field lines inside JSON', async () => {
    expect(await failure(loadConfig('{"ports": [', 'bad.json'))).toMatch(/^bad\.json: invalid JSON: /);
    const text = JSON.stringify({ ports: [{ name: 'p', 'binding:profile': { interface: 'sfct-a' }, mac_address: 'nope' }] }, null, 2);
    const line = text.split('\n').findIndex((l) => l.includes('nope')) + 1;
    const msg = await failure(loadConfig(text, 'p.json'));
    expect(msg).toMatch(new RegExp(`^p\\.json:${line}: ports\\[0\\] \\(name 'p'\\): field 'mac_address': HTTPBadRequest: `));
  });

  it('list items and collections must have the right shape; explicit ids are checked', async () => {
    expect(await failure(loadConfig('ports:\n  - 3\n', 'x.yaml'))).toBe('x.yaml:2: ports[0]: must be a mapping of attributes');
    expect(await failure(loadConfig('ports: {}\n', 'x.yaml'))).toBe("x.yaml:1: 'ports' must be a list");
    expect(await failure(loadConfig('- 1\n', 'x.yaml'))).toMatch(/^x\.yaml:1: the top level must be a mapping/);
    expect(await failure(loadConfig('ports:\n  - id: nope\n    binding:profile: {interface: a}\n', 'x.yaml'))).toMatch(
      /^x\.yaml:2: ports\[0\]: field 'id': HTTPBadRequest: /,
    );
    const dup = 'ports:\n  - id: 7d0e6c9a-3b1f-4c2d-9e8f-0a1b2c3d4e5f\n    binding:profile: {interface: a}\n  - id: 7d0e6c9a-3b1f-4c2d-9e8f-0a1b2c3d4e5f\n    binding:profile: {interface: b}\n';
    expect(await failure(loadConfig(dup, 'x.yaml'))).toMatch(/^x\.yaml:4: ports\[1\]: Conflict: /);
    expect(await failure(loadConfig('port_pair_groups:\n  - group_id: 0\n', 'x.yaml'))).toMatch(/^x\.yaml:2: port_pair_groups\[0\]: field 'group_id': /);
    expect(await failure(loadConfig('port_pair_groups:\n  - group_id: 2\n  - group_id: 2\n', 'x.yaml'))).toMatch(/^x\.yaml:3: port_pair_groups\[1\]: field 'group_id': .*already used/);
    expect(await failure(loadConfig('ports:\n  - group_id: 2\n', 'x.yaml'))).toMatch(/^x\.yaml:2: ports\[0\]: field 'group_id': HTTPBadRequest: Unrecognized attribute/);
    expect(await failure(loadConfig('ports: []\n', 'x.txt'))).toMatch(/unsupported file type '\.txt'/);
    expect(await failure(loadConfigFile(join(dir, 'missing.yaml')))).toMatch(/missing\.yaml: cannot read: /);
  });

  it('collections load in dependency order whatever their order in the file', async () => {
    const text = 'port_pairs:\n  - name: pp\n    ingress: later\n    egress: later\nports:\n  - name: later\n    binding:profile: {interface: a}\n';
    const s = await loadConfig(text, 'fwd.yaml');
    expect(s.port_pairs[0]!.ingress).toBe(s.ports[0]!.id);
  });

  it('graph references: keys and values resolved, errors point at them', async () => {
    const base = await readFile(fixture('config-good.yaml'), 'utf8');
    const bad = base.replace('pc1: [pc2]', 'pc1: [pc9]');
    const line = bad.split('\n').findIndex((l) => l.includes('pc9')) + 1;
    expect(await failure(loadConfig(bad, 'g.yaml'))).toBe(`g.yaml:${line}: service_graphs[0] (name 'g1'): field 'port_chains': no port chain named 'pc9'`);
    const badKey = base.replace('pc1: [pc2]', 'pcx: [pc2]');
    expect(await failure(loadConfig(badKey, 'g.yaml'))).toBe(`g.yaml:${line}: service_graphs[0] (name 'g1'): field 'port_chains': no port chain named 'pcx'`);
  });
});
