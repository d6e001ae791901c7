/*
 * `sfc apply` against a real server (in process, 127.0.0.1:0, noop driver): apply a file, apply a
 * changed file (the printed diff: deletes, replacements, detaches and updates in a valid order,
 * including a service graph that must be rebuilt around its chain), converge (a second apply is a
 * no-op), --dry-run changes nothing, and a bad file is refused before anything is sent.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { command as apply } from '../src/commands/apply.js';
import { UsageError, type Command } from '../src/util/args.js';
import { command as del } from '../src/commands/delete.js';
import { command as get } from '../src/commands/get.js';
import { startApiServer, type ApiServer } from '../src/control/api.js';
import { COLLECTIONS } from '../src/control/model.js';
import { Store } from '../src/control/store.js';

const dir = mkdtempSync(join(tmpdir(), 'sfct-apply-'));
let store: Store;
let api: ApiServer;

beforeAll(async () => {
  store = new Store({ linkUp: () => false });
  api = await startApiServer({ store, host: '127.0.0.1', port: 0 });
});

afterAll(async () => {
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Run a subcommand in process, capturing what it prints. */
async function cli(cmd: Command, argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((m: string) => void out.push(m));
  const error = vi.spyOn(console, 'error').mockImplementation((m: string) => void err.push(m));
  try {
    return { code: await cmd.run(argv), out, err };
  } finally {
    log.mockRestore();
    error.mockRestore();
  }
}

function run(yaml: string, ...extra: string[]) {
  const file = join(dir, `chains-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, yaml);
  return cli(apply, ['-f', file, '--url', api.url, ...extra]);
}

/** The server's model with references shown by name. */
function byName() {
  const s = store.state;
  const name = (id: string) => COLLECTIONS.flatMap((c) => s[c] as readonly { id: string; name: string }[]).find((r) => r.id === id)?.name ?? `?${id}`;
  const find = <T extends { name: string }>(list: readonly T[], n: string) => list.find((r) => r.name === n);
  return { s, name, find };
}

const ports = (names: string[]) =>
  'ports:\n' + names.map((n) => `  - {name: ${n}, mac_address: "02:aa:00:00:00:0${n.slice(1)}", binding:profile: {interface: sfct-a${n.slice(1)}}}`).join('\n') + '\n';

const V1 =
  ports(['p1', 'p2', 'p3', 'p4', 'p5', 'p6']) +
  `port_pairs:
  - {name: pp1, ingress: p2, egress: p3, service_function_parameters: {correlation: mpls}}
  - {name: pp2, ingress: p4, egress: p5, service_function_parameters: {correlation: mpls}}
  - {name: pp3, ingress: p6, egress: p6, service_function_parameters: {correlation: mpls, weight: "2"}}
port_pair_groups:
  - {name: g1, port_pairs: [pp1]}
  - {name: g2, port_pairs: [pp3]}
flow_classifiers:
  - {name: fc1, protocol: TCP, destination_ip_prefix: 10.1.0.0/24, logical_source_port: p1}
port_chains:
  - {name: pc1, port_pair_groups: [g1], flow_classifiers: [fc1]}
  - {name: pc2, port_pair_groups: [g2]}
service_graphs:
  - {name: sg1, port_chains: {pc1: [pc2]}}
`;

// p5 gone (so pp2 changes its egress: replaced); fc1 changes protocol (replaced, detached from pc1
// first); pc1 gains fc2 (so sg1 must be rebuilt around it); g1 gains pp2; pp1 edited in place; p7 new.
const V2 =
  ports(['p1', 'p2', 'p3', 'p4', 'p6', 'p7']) +
  `port_pairs:
  - {name: pp1, description: edited, ingress: p2, egress: p3, service_function_parameters: {correlation: mpls}}
  - {name: pp2, ingress: p4, egress: p4, service_function_parameters: {correlation: mpls}}
  - {name: pp3, ingress: p6, egress: p6, service_function_parameters: {correlation: mpls, weight: 2}}
port_pair_groups:
  - {name: g1, port_pairs: [pp1, pp2]}
  - {name: g2, port_pairs: [pp3]}
flow_classifiers:
  - {name: fc1, protocol: udp, destination_ip_prefix: 10.1.0.0/24, logical_source_port: p1}
  - {name: fc2, protocol: tcp, destination_ip_prefix: 10.2.0.0/24, logical_source_port: p1}
port_chains:
  - {name: pc1, port_pair_groups: [g1], flow_classifiers: [fc1, fc2]}
  - {name: pc2, port_pair_groups: [g2]}
service_graphs:
  - {name: sg1, port_chains: {pc1: [pc2]}}
`;

describe('sfc apply', () => {
  it('creates everything in dependency order from an empty server', async () => {
    const r = await run(V1);
    expect(r.err).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.out.at(-1)).toBe('applied 15 change(s)');
    const creates = r.out.slice(0, -1);
    expect(creates.every((l) => l.startsWith('create '))).toBe(true);
    const at = (line: string) => creates.indexOf(line);
    expect(at('create port p1')).toBeLessThan(at('create port pair pp1'));
    expect(at('create port pair pp1')).toBeLessThan(at('create port pair group g1'));
    expect(at('create flow classifier fc1')).toBeLessThan(at('create port chain pc1'));
    expect(at('create port chain pc2')).toBeLessThan(at('create service graph sg1'));
    const { s, name, find } = byName();
    expect(s.ports.map((p) => p.name)).toEqual(['p1', 'p2', 'p3', 'p4', 'p5', 'p6']);
    expect(find(s.port_pairs, 'pp3')!.service_function_parameters.weight).toBe(2);
    expect(find(s.flow_classifiers, 'fc1')!.protocol).toBe('tcp');
    expect(find(s.port_chains, 'pc1')!.flow_classifiers.map(name)).toEqual(['fc1']);
    const sg = find(s.service_graphs, 'sg1')!;
    expect(Object.entries(sg.port_chains).map(([src, dsts]) => [name(src), dsts.map(name)])).toEqual([['pc1', ['pc2']]]);
  });

  it('applying the same file again changes nothing', async () => {
    const revision = store.revision;
    const r = await run(V1);
    expect(r.out).toEqual(['no changes']);
    expect(store.revision).toBe(revision);
  });

  it('--dry-run prints the plan and changes nothing', async () => {
    const before = JSON.stringify(store.state);
    const r = await run(V2, '--dry-run');
    expect(r.code).toBe(0);
    expect(r.out.at(-1)).toMatch(/^\d+ change\(s\) planned \(dry run: nothing applied\)$/);
    expect(r.out).toContain('delete port p5 (not in the file)');
    expect(JSON.stringify(store.state)).toBe(before);
  });

  it('a changed file: prints the diff in a valid order and converges', async () => {
    const old = byName();
    const keep = (n: string) => old.find(old.s.ports, n)!.id;
    const pp1 = old.find(old.s.port_pairs, 'pp1')!.id;
    const pc1 = old.find(old.s.port_chains, 'pc1')!.id;
    const r = await run(V2);
    expect(r.err).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.out).toEqual([
      'delete service graph sg1 (replaced: its chain pc1 changes)',
      "update port chain pc1: flow_classifiers: [fc1] -> []",
      'delete flow classifier fc1 (replaced: protocol cannot be updated)',
      'delete port pair pp2 (replaced: egress cannot be updated)',
      'delete port p5 (not in the file)',
      'create port p7',
      'create port pair pp2',
      "update port pair pp1: description: '' -> 'edited'",
      'update port pair group g1: port_pairs: [pp1] -> [pp1, pp2]',
      'create flow classifier fc1',
      'create flow classifier fc2',
      'update port chain pc1: flow_classifiers: [fc1] -> [fc1, fc2]',
      'create service graph sg1',
      'applied 13 change(s)',
    ]);
    const { s, name, find } = byName();
    expect(s.ports.map((p) => p.name).sort()).toEqual(['p1', 'p2', 'p3', 'p4', 'p6', 'p7']);
    expect(find(s.ports, 'p1')!.id).toBe(keep('p1')); // untouched objects keep their ids
    expect(find(s.port_pairs, 'pp1')!.id).toBe(pp1);
    expect(find(s.port_pairs, 'pp1')!.description).toBe('edited');
    expect(find(s.port_chains, 'pc1')!.id).toBe(pc1);
    const pp2 = find(s.port_pairs, 'pp2')!;
    expect([name(pp2.ingress), name(pp2.egress)]).toEqual(['p4', 'p4']);
    expect(find(s.port_pair_groups, 'g1')!.port_pairs.map(name)).toEqual(['pp1', 'pp2']);
    expect(find(s.flow_classifiers, 'fc1')!.protocol).toBe('udp');
    expect(find(s.port_chains, 'pc1')!.flow_classifiers.map(name)).toEqual(['fc1', 'fc2']);
    expect(s.service_graphs.map((g) => g.name)).toEqual(['sg1']);
    const again = await run(V2);
    expect(again.out).toEqual(['no changes']);
  });

  it('moves a port pair between groups through a detach, and an empty file deletes everything', async () => {
    const moved = V2.replace('{name: g1, port_pairs: [pp1, pp2]}', '{name: g1, port_pairs: [pp1]}').replace('{name: g2, port_pairs: [pp3]}', '{name: g2, port_pairs: [pp3, pp2]}');
    const r = await run(moved);
    expect(r.code).toBe(0);
    expect(r.out.slice(0, 2)).toEqual(['update port pair group g1: port_pairs: [pp1, pp2] -> [pp1]', 'update port pair group g2: port_pairs: [pp3] -> [pp3, pp2]']);
    const { s, name, find } = byName();
    expect(find(s.port_pair_groups, 'g2')!.port_pairs.map(name)).toEqual(['pp3', 'pp2']);
    const wipe = await run('{}\n');
    expect(wipe.code).toBe(0);
    expect(wipe.out.filter((l) => l.startsWith('delete')).length).toBe(wipe.out.length - 1);
    expect(COLLECTIONS.every((c) => store.state[c].length === 0)).toBe(true);
  });

  it('refuses a bad file before sending anything (exit 1, file:line)', async () => {
    await run(V1);
    const revision = store.revision;
    const bad = V1.replace('{name: g2, port_pairs: [pp3]}', '{name: g2, port_pairs: [pp9]}');
    const r = await run(bad);
    expect(r.code).toBe(1);
    expect(r.err.join('\n')).toMatch(/chains-\w+\.yaml:\d+: port_pair_groups\[1\].*pp9/);
    expect(store.revision).toBe(revision);
    const unnamed = await run(V1.replace('port_pairs:', '  - {binding:profile: {interface: sfct-x}}\nport_pairs:'));
    expect(unnamed.code).toBe(1);
    expect(unnamed.err.join('\n')).toMatch(/ports\[6\]: needs a name or an id/);
    expect(store.revision).toBe(revision);
  });
});

describe('sfc get / sfc delete', () => {
  it('lists as a table with references by name, shows one, and --json for scripts', async () => {
    const list = await cli(get, ['port-pairs', '--url', api.url]);
    expect(list.code).toBe(0);
    const [header, ...rows] = list.out.join('\n').split('\n');
    expect(header).toMatch(/^ID\s+NAME\s+INGRESS\s+EGRESS\s+CORRELATION\s+WEIGHT$/);
    expect(rows.find((r) => r.includes(' pp1 '))).toMatch(/ pp1\s+p2\s+p3\s+mpls\s+1$/);
    const one = await cli(get, ['port_pair_group', 'g1', '--url', api.url]);
    expect(one.out.join('\n')).toMatch(/^port_pairs\s+\["pp1 \([0-9a-f-]{36}\)"\]$/m);
    const json = await cli(get, ['flow-classifier', 'fc1', '--json', '--url', api.url]);
    expect(JSON.parse(json.out.join('\n'))).toMatchObject({ name: 'fc1', protocol: 'tcp' });
    const all = await cli(get, ['ports', '--json', '--url', api.url]);
    expect(JSON.parse(all.out.join('\n')).map((p: { name: string }) => p.name)).toEqual(['p1', 'p2', 'p3', 'p4', 'p5', 'p6']);
  });

  it('exit 1 with the server message when refused or not found; usage errors throw UsageError (exit 2)', async () => {
    const missing = await cli(get, ['port-chain', 'nope', '--url', api.url]);
    expect([missing.code, missing.err]).toEqual([1, ["sfc get: no port chain with name or id 'nope'"]]);
    const inUse = await cli(del, ['port-pair-group', 'g1', '--url', api.url]);
    expect(inUse.code).toBe(1);
    expect(inUse.err.join('\n')).toMatch(/^sfc delete: Port Pair Group [0-9a-f-]{36} in use/);
    await expect(cli(get, ['widgets', '--url', api.url])).rejects.toThrow(UsageError);
    await expect(cli(del, ['port', '--url', api.url])).rejects.toThrow(UsageError);
    const before = store.state.service_graphs.length;
    const gone = await cli(del, ['service-graphs', 'sg1', '--url', api.url]);
    expect(gone.code).toBe(0);
    expect(gone.out[0]).toMatch(/^deleted service graph sg1 \([0-9a-f-]{36}\)$/);
    expect(store.state.service_graphs.length).toBe(before - 1);
  });
});
