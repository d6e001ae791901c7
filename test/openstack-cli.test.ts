/*
 * The real OpenStack client (`openstack sfc ...`, python3-openstackclient + neutronclient +
 * networking-sfc) against our server: create, list, show, set, unset and delete of every resource
 * the client supports, and its refusals (409 in use, 400 rule violations, client-side lookups),
 * checking exit codes, displayed values and messages. Service graphs: create + list through the
 * client, delete over HTTP (the client cannot look graphs up, openstack-cli.md §1.1).
 * Each invocation costs ~1.3 s of CPU, so the scenario is one tight sequence (~35 invocations).
 */
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApiServer, type ApiServer } from '../src/control/api.js';
import { Store } from '../src/control/store.js';
import { prerequisites } from './support/prereq.js';

const ready = prerequisites('openstack-cli', {
  commands: ['openstack'],
  check: () => {
    try {
      // the python that runs `openstack` (its #! line), not whatever python3 is first on PATH
      const bin = execFileSync('sh', ['-c', 'command -v openstack'], { encoding: 'utf8' }).trim();
      const python = readFileSync(bin, 'utf8').split('\n')[0]!.replace(/^#!\s*/, '').split(' ')[0]!;
      execFileSync(python, ['-c', 'import networking_sfc.cli.port_pair'], { stdio: 'ignore' });
      return null;
    } catch {
      return 'needs python3-networking-sfc (the neutronclient extensions that let `openstack sfc` look up names): apt-get install python3-networking-sfc';
    }
  },
});

/** The environment without any OS_* variable. */
const ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OS_')));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

describe.skipIf(!ready)('openstack sfc client', { timeout: 600_000 }, () => {
  let store: Store;
  let api: ApiServer;
  const ids = new Map<string, string>(); // name → id, as the server reports

  const os = (...args: string[]): Promise<Result> =>
    new Promise((resolve) => {
      execFile('openstack', ['--os-auth-type', 'none', '--os-endpoint', api.url, 'sfc', ...args], { env: ENV, timeout: 120_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
      );
    });
  /** A command that must succeed; `-f json` output parsed. */
  const ok = async (...args: string[]) => {
    const r = await os(...args);
    expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    return args.includes('json') ? JSON.parse(r.stdout) : r.stdout;
  };
  /** A command the server or the client refuses (exit 1), with its message. */
  const refused = async (message: RegExp, ...args: string[]) => {
    const r = await os(...args);
    expect(r.code, `${args.join(' ')} should fail: ${r.stdout}`).toBe(1);
    expect(r.stderr).toMatch(message);
    return r.stderr;
  };
  const http = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(api.url + path, { method, headers: { 'Content-Type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: res.status, body: res.status === 204 ? undefined : await res.json() };
  };
  const get = async (coll: string, name: string) => {
    const r = await http('GET', `/v2.0/sfc/${coll}?name=${encodeURIComponent(name)}`);
    expect(r.body[coll], `${coll} ${name}`).toHaveLength(1);
    return r.body[coll][0];
  };

  beforeAll(async () => {
    store = new Store({ linkUp: () => false });
    api = await startApiServer({ store, host: '127.0.0.1', port: 0 });
    for (const name of ['p1', 'p2', 'p3', 'p4', 'p5', 'p6']) {
      const r = await http('POST', '/v2.0/ports', { port: { name, 'binding:profile': { interface: `sfct-os${name}` } } });
      expect(r.status).toBe(201);
      ids.set(name, r.body.port.id);
    }
  });

  afterAll(async () => {
    await api?.close();
  });

  it('port pairs: create (string weight converted), refusals, list, show, set', async () => {
    const pp1 = await ok('port', 'pair', 'create', '--description', 'first pair', '--service-function-parameters', 'correlation=mpls,weight=2', '--ingress', 'p1', '--egress', 'p2', 'pp1', '-f', 'json');
    expect(pp1['Service Function Parameters']).toEqual({ correlation: 'mpls', weight: 2 });
    expect(pp1['Ingress Logical Port']).toBe(ids.get('p1'));
    expect(pp1.Description).toBe('first pair');
    ids.set('pp1', pp1.ID);
    // an id instead of a name goes through the ?id= lookup
    const pp2 = await ok('port', 'pair', 'create', '--service-function-parameters', 'correlation=mpls', '--ingress', ids.get('p3')!, '--egress', 'p4', 'pp2', '-f', 'json');
    expect(pp2['Ingress Logical Port']).toBe(ids.get('p3'));
    expect(pp2['Service Function Parameters']).toEqual({ correlation: 'mpls', weight: 1 });
    await ok('port', 'pair', 'create', '--service-function-parameters', 'correlation=None', '--ingress', 'p5', '--egress', 'p5', 'pp3');
    expect((await get('port_pairs', 'pp3')).service_function_parameters).toEqual({ correlation: null, weight: 1 });
    await refused(/already used by another Port Pair/, 'port', 'pair', 'create', '--ingress', 'p1', '--egress', 'p2', 'ppdup');
    await refused(/Unable to find port with name or id 'nosuchport'/, 'port', 'pair', 'create', '--ingress', 'nosuchport', '--egress', 'p2', 'ppx');
    const list = await ok('port', 'pair', 'list', '-f', 'json');
    expect(list.map((r: { Name: string }) => r.Name)).toEqual(['pp1', 'pp2', 'pp3']);
    const shown = await ok('port', 'pair', 'show', 'pp1', '-f', 'json');
    expect(shown.ID).toBe(ids.get('pp1'));
    await ok('port', 'pair', 'set', '--name', 'pp1b', '--description', 'renamed', 'pp1');
    const after = await get('port_pairs', 'pp1b');
    expect([after.id, after.description]).toEqual([ids.get('pp1'), 'renamed']);
  });

  it('port pair groups: create with lb fields, set/unset membership, refusals', async () => {
    const g1 = await ok('port', 'pair', 'group', 'create', '--port-pair', 'pp1b', '--port-pair-group-parameters', 'lb-fields=ip_src&ip_dst', 'g1', '-f', 'json');
    expect(g1['Port Pair']).toEqual([ids.get('pp1')]);
    expect(g1['Port Pair Group Parameters'].lb_fields).toEqual(['ip_src', 'ip_dst']);
    await refused(/Illegal values.*bogus|bogus/, 'port', 'pair', 'group', 'create', '--port-pair-group-parameters', 'lb-fields=bogus', 'gbad');
    await ok('port', 'pair', 'group', 'create', '--port-pair', 'pp3', '--disable-tap', 'g2');
    await ok('port', 'pair', 'group', 'set', '--port-pair', 'pp2', 'g1');
    expect((await get('port_pair_groups', 'g1')).port_pairs.sort()).toEqual([ids.get('pp1'), (await get('port_pairs', 'pp2')).id].sort());
    await ok('port', 'pair', 'group', 'unset', '--port-pair', 'pp2', 'g1');
    expect((await get('port_pair_groups', 'g1')).port_pairs).toEqual([ids.get('pp1')]);
    await refused(/Port Pair .* in use|in use/, 'port', 'pair', 'group', 'create', '--port-pair', 'pp1b', 'gconflict');
    await ok('port', 'pair', 'group', 'create', 'g3');
    expect(store.state.port_pair_groups.map((g) => g.name)).toEqual(['g1', 'g2', 'g3']);
  });

  it('flow classifiers: create, range refusal, list (summary), set', async () => {
    const fc1 = await ok('flow', 'classifier', 'create', '--protocol', 'TCP', '--destination-port', '80', '--source-ip-prefix', '10.0.0.0/24', '--logical-source-port', 'p1', 'fc1', '-f', 'json');
    expect(fc1.Protocol).toBe('tcp');
    expect([fc1['Destination Port Range Min'], fc1['Destination Port Range Max']]).toEqual([80, 80]);
    await refused(/Invalid input|port/i, 'flow', 'classifier', 'create', '--protocol', 'tcp', '--destination-port', '70000', '--logical-source-port', 'p1', 'fcbad');
    await refused(/overlaps Flow Classifier/, 'flow', 'classifier', 'create', '--protocol', 'tcp', '--source-ip-prefix', '10.0.0.0/16', '--logical-source-port', 'p1', 'fcdup');
    await ok('flow', 'classifier', 'create', '--protocol', 'udp', '--logical-source-port', 'p3', '--logical-destination-port', 'p4', 'fc2');
    const list = (await ok('flow', 'classifier', 'list')) as string;
    expect(list).toMatch(/fc1/);
    expect(list).toMatch(/protocol: TCP/);
    await ok('flow', 'classifier', 'set', '--description', 'web', 'fc1');
    expect((await get('flow_classifiers', 'fc1')).description).toBe('web');
  });

  it('port chains: create (string symmetric converted), set/unset groups and classifiers, show', async () => {
    const pc1 = await ok('port', 'chain', 'create', '--port-pair-group', 'g1', '--flow-classifier', 'fc1', '--chain-parameters', 'correlation=mpls,symmetric=false', 'pc1', '-f', 'json');
    expect(pc1['Chain Parameters']).toEqual({ correlation: 'mpls', symmetric: false });
    expect(typeof pc1['Chain ID']).toBe('number');
    const pc2 = await ok('port', 'chain', 'create', '--port-pair-group', 'g2', '--flow-classifier', 'fc2', '--chain-parameters', 'symmetric=true', 'pc2', '-f', 'json');
    expect(pc2['Chain Parameters']).toEqual({ correlation: 'mpls', symmetric: true });
    await refused(/in use/, 'port', 'chain', 'create', '--port-pair-group', 'g3', '--flow-classifier', 'fc1', 'pcx');
    await ok('port', 'chain', 'set', '--port-pair-group', 'g3', 'pc1');
    const g = (n: string) => store.state.port_pair_groups.find((x) => x.name === n)!.id;
    expect((await get('port_chains', 'pc1')).port_pair_groups).toEqual([g('g1'), g('g3')]);
    await ok('port', 'chain', 'unset', '--port-pair-group', 'g3', '--flow-classifier', 'fc1', 'pc1');
    const after = await get('port_chains', 'pc1');
    expect([after.port_pair_groups, after.flow_classifiers]).toEqual([[g('g1')], []]);
    await ok('port', 'chain', 'set', '--flow-classifier', 'fc1', 'pc1');
    const shown = await ok('port', 'chain', 'show', 'pc1', '-f', 'json');
    expect(shown['Flow Classifiers']).toEqual([store.state.flow_classifiers.find((f) => f.name === 'fc1')!.id]);
    await ok('port', 'chain', 'create', '--port-pair-group', 'g3', 'pc3');
  });

  it('refusals while in use: 409 with the server message, wrapped by the client', async () => {
    const msg = await refused(/Failed to delete port pair group with name or ID 'g1': Port Pair Group .* in use/, 'port', 'pair', 'group', 'delete', 'g1');
    expect(msg).toMatch(/request_ids: \['req-/);
    await refused(/in use/, 'flow', 'classifier', 'delete', 'fc1');
    await refused(/in use/, 'port', 'pair', 'delete', 'pp1b');
  });

  it('service graphs: create and list through the client, 409 on a chain in the graph, delete over HTTP', async () => {
    await ok('service', 'graph', 'create', '--description', 'graph one', '--branching-point', 'pc1:pc3', 'sg1');
    const list = await ok('service', 'graph', 'list', '-f', 'json');
    const chain = (n: string) => store.state.port_chains.find((c) => c.name === n)!.id;
    expect(list.map((r: { Name: string }) => r.Name)).toEqual(['sg1']);
    expect(list[0]['Branching Points']).toEqual({ [chain('pc1')]: [chain('pc3')] });
    await refused(/Port Chain .* in use|in use/, 'port', 'chain', 'delete', 'pc1');
    const sg = await get('service_graphs', 'sg1');
    expect((await http('DELETE', `/v2.0/sfc/service_graphs/${sg.id}`)).status).toBe(204);
  });

  it('deletes through the client, in dependency order', async () => {
    for (const args of [
      ['port', 'chain', 'delete', 'pc1'],
      ['flow', 'classifier', 'delete', 'fc1'],
      ['port', 'pair', 'group', 'delete', 'g1'],
      ['port', 'pair', 'delete', 'pp1b'],
    ]) {
      await ok(...args);
    }
    expect(store.state.port_chains.map((c) => c.name)).toEqual(['pc2', 'pc3']);
    expect(store.state.flow_classifiers.map((c) => c.name)).toEqual(['fc2']);
    expect(store.state.port_pair_groups.map((c) => c.name)).toEqual(['g2', 'g3']);
    expect(store.state.port_pairs.map((c) => c.name)).toEqual(['pp2', 'pp3']);
    await refused(/Unable to find port_chain with name or id 'pc1'|pc1/, 'port', 'chain', 'delete', 'pc1');
  });
});
