/*
 * The REST API over real HTTP (server on 127.0.0.1:0, noop driver): envelopes, status codes and
 * NeutronError bodies for every resource, Neutron's request-processing order, list queries
 * (filters, fields, pagination links followed both ways, sorting), auth, body limits, routing,
 * discovery documents, health and metrics.
 */
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApiServer, type ApiServer } from '../src/control/api.js';
import { Metrics, type DataplaneStats } from '../src/control/metrics.js';
import { Store } from '../src/control/store.js';
import { COUNTERS, DROP_REASONS } from '../src/packet/counters.js';

interface Reply {
  status: number;
  headers: Headers;
  body: any;
}

function client(base: string, defaults: Record<string, string> = {}) {
  return async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> => {
    const res = await fetch(base + path, {
      method,
      headers: { ...defaults, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      // not JSON (metrics text)
    }
    return { status: res.status, headers: res.headers, body: parsed };
  };
}

/** A raw request with explicit headers (Content-Length lies, chunked bodies). */
function raw(url: string, method: string, path: string, headers: Record<string, string | number>, chunks: Buffer[]): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpRequest({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    const writeNext = (i: number) => {
      if (i === chunks.length) return void req.end();
      req.write(chunks[i], () => writeNext(i + 1));
    };
    writeNext(0);
  });
}

function expectNeutronError(r: Reply, status: number, type?: string) {
  expect(r.status).toBe(status);
  expect(Object.keys(r.body)).toEqual(['NeutronError']);
  expect(typeof r.body.NeutronError.message).toBe('string');
  expect(r.body.NeutronError.detail).toBe('');
  if (type) expect(r.body.NeutronError.type).toBe(type);
}

const stubStats: DataplaneStats = {
  events: Float64Array.from(COUNTERS, (_, i) => 1000 + i),
  drops: Float64Array.from(DROP_REASONS, (_, i) => 10 * i),
  instancePackets: Float64Array.from([7, 9, 5, 3]),
  instanceBytes: Float64Array.from([700, 900, 500, 300]),
  interfaces: [{ name: 'sfct-a', rxPackets: 11, txPackets: 12, io: { rx_kernel_drops: 3, tx_in_place: 7 } }],
  workers: [0, 1].map((w) => ({ events: Float64Array.from(COUNTERS, (name) => (name === 'batches' ? 10 + w : name === 'rx_packets' ? 320 : 0)), busySeconds: 0.25 })),
};

let store: Store;
let api: ApiServer;
let call: ReturnType<typeof client>;

beforeAll(async () => {
  store = new Store({ linkUp: () => false });
  const metrics = new Metrics({
    revision: () => store.revision,
    generation: () => 42,
    dataplane: () => ({
      stats: stubStats,
      instances: [
        { chain: 'pc1', hop: 1, portPair: 'pp1', ingress: 'a', egress: 'b' },
        { chain: 'pc1', hop: 2, portPair: 'pp2', ingress: 'c', egress: 'd' },
        { chain: 'pc1', hop: 2, portPair: 'pp3', ingress: 'e', egress: 'f' },
        { chain: '', hop: 0, portPair: '', ingress: '', egress: '' },
      ],
    }),
  });
  api = await startApiServer({ store, metrics, host: '127.0.0.1', port: 0 });
  call = client(api.url);
});

afterAll(async () => {
  await api.close();
});

let macSeq = 0;
async function port(name: string): Promise<string> {
  const mac = `02:00:00:00:00:${(++macSeq).toString(16).padStart(2, '0')}`;
  const r = await call('POST', '/v2.0/ports', { port: { name, mac_address: mac, 'binding:profile': { interface: 'sfct-api0' } } });
  expect(r.status).toBe(201);
  return r.body.port.id;
}

describe('every resource: envelope, status codes, error body', () => {
  it('create 201 / show / list / update 200 / delete 204 / then 404, for all six collections', async () => {
    const p1 = await port('env-p1');
    const p2 = await port('env-p2');
    const cases: [string, string, string][] = [];
    const pp = await call('POST', '/v2.0/sfc/port_pairs', { port_pair: { name: 'env-pp', ingress: p1, egress: p2, service_function_parameters: { correlation: 'mpls' } } });
    const ppg = await call('POST', '/v2.0/sfc/port_pair_groups', { port_pair_group: { name: 'env-g', port_pairs: [pp.body.port_pair.id] } });
    const fc = await call('POST', '/v2.0/sfc/flow_classifiers', { flow_classifier: { name: 'env-fc', protocol: 'TCP', logical_source_port: p1, source_ip_prefix: '10.77.0.0/16' } });
    const pc = await call('POST', '/v2.0/sfc/port_chains', { port_chain: { name: 'env-pc', port_pair_groups: [ppg.body.port_pair_group.id], flow_classifiers: [fc.body.flow_classifier.id] } });
    const emptyGroup = await call('POST', '/v2.0/sfc/port_pair_groups', { port_pair_group: { name: 'env-g2' } });
    const pc2 = await call('POST', '/v2.0/sfc/port_chains', { port_chain: { name: 'env-pc2', port_pair_groups: [emptyGroup.body.port_pair_group.id] } });
    const sg = await call('POST', '/v2.0/sfc/service_graphs', { service_graph: { name: 'env-sg', port_chains: { [pc.body.port_chain.id]: [pc2.body.port_chain.id] } } });
    for (const [r, singular] of [[pp, 'port_pair'], [ppg, 'port_pair_group'], [fc, 'flow_classifier'], [pc, 'port_chain'], [pc2, 'port_chain'], [sg, 'service_graph']] as const) {
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(Object.keys(r.body)).toEqual([singular]);
      const obj = r.body[singular];
      expect(obj.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(obj.tenant_id).toBe(obj.project_id);
    }
    expect(fc.body.flow_classifier.protocol).toBe('tcp');
    cases.push(
      ['service_graphs', 'service_graph', sg.body.service_graph.id],
      ['port_chains', 'port_chain', pc2.body.port_chain.id],
      ['port_chains', 'port_chain', pc.body.port_chain.id],
      ['flow_classifiers', 'flow_classifier', fc.body.flow_classifier.id],
      ['port_pair_groups', 'port_pair_group', ppg.body.port_pair_group.id],
      ['port_pair_groups', 'port_pair_group', emptyGroup.body.port_pair_group.id],
      ['port_pairs', 'port_pair', pp.body.port_pair.id],
    );
    for (const [coll, singular, id] of cases) {
      const path = `/v2.0/sfc/${coll}`;
      const shown = await call('GET', `${path}/${id}`);
      expect(shown.status).toBe(200);
      expect(Object.keys(shown.body)).toEqual([singular]);
      expect(shown.body[singular].id).toBe(id);
      const listed = await call('GET', path);
      expect(listed.status).toBe(200);
      expect(Object.keys(listed.body)).toEqual([coll]);
      expect(listed.body[coll].map((x: { id: string }) => x.id)).toContain(id);
      const updated = await call('PUT', `${path}/${id}`, { [singular]: { description: 'changed' } });
      expect(updated.status).toBe(200);
      expect(updated.body[singular].description).toBe('changed');
      expect((await call('GET', `${path}/${id}`)).body[singular].description).toBe('changed');
    }
    for (const [coll, , id] of cases) {
      const path = `/v2.0/sfc/${coll}/${id}`;
      const deleted = await call('DELETE', path);
      expect(deleted.status, JSON.stringify(deleted.body)).toBe(204);
      expect(deleted.body).toBeUndefined();
      const gone = await call('GET', path);
      expectNeutronError(gone, 404);
      expect(gone.body.NeutronError.type).toMatch(/NotFound$/);
      expect(gone.body.NeutronError.message).toContain(id);
    }
    for (const id of [p1, p2]) {
      expect((await call('PUT', `/v2.0/ports/${id}`, { port: { name: 'renamed' } })).body.port.name).toBe('renamed');
      expect((await call('DELETE', `/v2.0/ports/${id}`)).status).toBe(204);
      expectNeutronError(await call('GET', `/v2.0/ports/${id}`), 404, 'PortNotFound');
    }
  });

  it('refusals keep their status and type: 409 in use, 400 rule', async () => {
    const p1 = await port('use-p1');
    const p2 = await port('use-p2');
    const pp = (await call('POST', '/v2.0/sfc/port_pairs', { port_pair: { ingress: p1, egress: p2 } })).body.port_pair.id;
    const g = (await call('POST', '/v2.0/sfc/port_pair_groups', { port_pair_group: { port_pairs: [pp] } })).body.port_pair_group.id;
    expectNeutronError(await call('DELETE', `/v2.0/sfc/port_pairs/${pp}`), 409, 'PortPairInUse');
    expectNeutronError(await call('DELETE', `/v2.0/ports/${p1}`), 409, 'PortInUse');
    expectNeutronError(await call('POST', '/v2.0/sfc/port_pairs', { port_pair: { ingress: p1, egress: p2 } }), 400, 'PortPairIngressEgressInUse');
    expect((await call('DELETE', `/v2.0/sfc/port_pair_groups/${g}`)).status).toBe(204);
    expect((await call('DELETE', `/v2.0/sfc/port_pairs/${pp}`)).status).toBe(204);
  });
});

describe('request processing order (A.1)', () => {
  let p1: string;
  let p2: string;
  beforeAll(async () => {
    p1 = await port('ord-p1');
    p2 = await port('ord-p2');
  });

  it('step 1: JSON, then the envelope', async () => {
    expectNeutronError(await call('POST', '/v2.0/sfc/port_pairs', '{"port_pair": {'), 400, 'MalformedRequestBody');
    expectNeutronError(await call('POST', '/v2.0/sfc/port_pairs', ''), 400);
    expectNeutronError(await call('POST', '/v2.0/sfc/port_pairs', {}), 400);
    expectNeutronError(await call('POST', '/v2.0/sfc/port_pairs', []), 400);
    const bulk = await call('POST', '/v2.0/sfc/port_pairs', { port_pairs: [{ ingress: p1, egress: p2 }] });
    expectNeutronError(bulk, 400);
    expect(bulk.body.NeutronError.message).toMatch(/bulk/i);
    const wrongKey = await call('POST', '/v2.0/sfc/port_pairs', { port_chain: { ingress: p1, egress: p2 } });
    expectNeutronError(wrongKey, 400);
    expect(wrongKey.body.NeutronError.message).toContain("'port_pair'");
    expectNeutronError(await call('POST', '/v2.0/sfc/port_pairs', { port_pair: 'x' }), 400);
  });

  it('owner mismatch beats unknown attributes, which beat missing required ones', async () => {
    const owner = await call('POST', '/v2.0/sfc/port_pairs', { port_pair: { tenant_id: 'a', project_id: 'b', bogus: 1 } });
    expectNeutronError(owner, 400);
    expect(owner.body.NeutronError.message).toMatch(/tenant_id/);
    const unknown = await call('POST', '/v2.0/sfc/port_pairs', { port_pair: { bogus: 1 } });
    expectNeutronError(unknown, 400);
    expect(unknown.body.NeutronError.message).toMatch(/Unrecognized attribute.*bogus/);
    const required = await call('POST', '/v2.0/sfc/port_pairs', { port_pair: { ingress: p1 } });
    expectNeutronError(required, 400);
    expect(required.body.NeutronError.message).toMatch(/egress/);
  });

  it('PUT: an invalid body on a missing id is 400, a valid one 404; path ids are not format-checked', async () => {
    const missing = '0b6a1f4e-7a3c-4c2e-9a55-1d2f3e4a5b6c';
    expectNeutronError(await call('PUT', `/v2.0/sfc/port_pairs/${missing}`, { port_pair: { ingress: p1 } }), 400);
    expectNeutronError(await call('PUT', `/v2.0/sfc/port_pairs/${missing}`, { port_pair: { name: 'x' } }), 404, 'PortPairNotFound');
    expectNeutronError(await call('PUT', `/v2.0/sfc/port_pairs/${missing}`, '{bad'), 400, 'MalformedRequestBody');
    expectNeutronError(await call('GET', '/v2.0/sfc/port_pairs/1'), 404, 'PortPairNotFound');
    expectNeutronError(await call('DELETE', '/v2.0/sfc/port_chains/1'), 404, 'PortChainNotFound');
  });

  it('create rules then lookups: a bad UUID is 400, an unknown one 404', async () => {
    expectNeutronError(await call('POST', '/v2.0/sfc/port_pairs', { port_pair: { ingress: 'abc', egress: p2 } }), 400);
    expectNeutronError(await call('POST', '/v2.0/sfc/port_pairs', { port_pair: { ingress: '0b6a1f4e-7a3c-4c2e-9a55-1d2f3e4a5b6c', egress: p2 } }), 404, 'PortPairPortNotFound');
  });

  it('DELETE with a body is 400 and deletes nothing', async () => {
    const r = await call('DELETE', `/v2.0/ports/${p1}`, { port: {} });
    expectNeutronError(r, 400);
    expect((await call('GET', `/v2.0/ports/${p1}`)).status).toBe(200);
  });
});

describe('list queries', () => {
  const names = ['q-c', 'q-a', 'q-e', 'q-b', 'q-d', 'q-g', 'q-f'];
  const ids: string[] = [];
  beforeAll(async () => {
    for (const n of names) ids.push(await port(n));
  });
  const qPorts = async (qs: string) => {
    const r = await call('GET', `/v2.0/ports?${qs}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body as { ports: { id: string; name: string }[]; ports_links?: { rel: string; href: string }[] };
  };

  it('filters: exact, repeated = OR, unknown keys ignored, id', async () => {
    expect((await qPorts('name=q-a')).ports.map((p) => p.name)).toEqual(['q-a']);
    expect((await qPorts('name=q-a&name=q-g')).ports.map((p) => p.name)).toEqual(['q-a', 'q-g']);
    expect((await qPorts('name=q-zzz')).ports).toEqual([]);
    const all = (await qPorts('')).ports.length;
    expect((await qPorts('hello=q-a')).ports.length).toBe(all);
    expect((await qPorts(`id=${ids[2]}`)).ports.map((p) => p.name)).toEqual(['q-e']);
    expect((await qPorts(`id=${ids[2]!.toUpperCase()}`)).ports.map((p) => p.name)).toEqual(['q-e']);
  });

  it('filters convert values like the attribute: protocol case, numeric chain_id, booleans', async () => {
    const fc = await call('POST', '/v2.0/sfc/flow_classifiers', { flow_classifier: { name: 'q-fc', protocol: 'udp', logical_source_port: ids[0], destination_ip_prefix: '10.91.0.0/16' } });
    expect(fc.status).toBe(201);
    const g = await call('POST', '/v2.0/sfc/port_pair_groups', { port_pair_group: { name: 'q-g' } });
    const pc = await call('POST', '/v2.0/sfc/port_chains', { port_chain: { name: 'q-pc', chain_id: 37, port_pair_groups: [g.body.port_pair_group.id] } });
    expect(pc.status).toBe(201);
    const names = async (path: string) => ((await call('GET', path)).body as Record<string, { name: string }[]>);
    expect((await names('/v2.0/sfc/flow_classifiers?protocol=UDP')).flow_classifiers.map((f) => f.name)).toContain('q-fc');
    expect((await names('/v2.0/sfc/flow_classifiers?protocol=tcp')).flow_classifiers.map((f) => f.name)).not.toContain('q-fc');
    expect((await names('/v2.0/sfc/flow_classifiers?ethertype=ipv4')).flow_classifiers.map((f) => f.name)).toContain('q-fc');
    expect((await names('/v2.0/sfc/port_chains?chain_id=37')).port_chains.map((c) => c.name)).toEqual(['q-pc']);
    expect((await names('/v2.0/sfc/port_chains?chain_id=037')).port_chains.map((c) => c.name)).toEqual(['q-pc']);
    expect((await names('/v2.0/sfc/port_chains?chain_id=38')).port_chains).toEqual([]);
    expectNeutronError(await call('GET', '/v2.0/sfc/port_chains?chain_id=abc'), 400);
    expect((await names(`/v2.0/sfc/port_chains?port_pair_groups=${g.body.port_pair_group.id}`)).port_chains.map((c) => c.name)).toEqual(['q-pc']);
    expect((await names('/v2.0/sfc/port_pair_groups?tap_enabled=False&name=q-g')).port_pair_groups.map((x) => x.name)).toEqual(['q-g']);
    expect((await names('/v2.0/sfc/port_pair_groups?tap_enabled=1&name=q-g')).port_pair_groups).toEqual([]);
    await call('DELETE', `/v2.0/sfc/port_chains/${pc.body.port_chain.id}`);
    await call('DELETE', `/v2.0/sfc/port_pair_groups/${g.body.port_pair_group.id}`);
    await call('DELETE', `/v2.0/sfc/flow_classifiers/${fc.body.flow_classifier.id}`);
  });

  it('fields select attributes on list and show', async () => {
    const list = await qPorts('name=q-a&fields=id&fields=name');
    expect(list.ports).toEqual([{ id: ids[1], name: 'q-a' }]);
    const shown = await call('GET', `/v2.0/ports/${ids[1]}?fields=mac_address`);
    expect(Object.keys(shown.body.port)).toEqual(['mac_address']);
  });

  it('sorting on scalar attributes; bad sort parameters are 400', async () => {
    const sorted = (await qPorts('sort_key=name&sort_dir=desc')).ports.map((p) => p.name).filter((n) => n.startsWith('q-'));
    expect(sorted).toEqual([...names].sort().reverse());
    const asc = (await qPorts('sort_key=name&sort_dir=asc')).ports.map((p) => p.name).filter((n) => n.startsWith('q-'));
    expect(asc).toEqual([...names].sort());
    expectNeutronError(await call('GET', '/v2.0/ports?sort_key=name'), 400);
    expectNeutronError(await call('GET', '/v2.0/ports?sort_key=name&sort_dir=up'), 400);
    expectNeutronError(await call('GET', '/v2.0/ports?sort_key=binding:profile&sort_dir=asc'), 400);
  });

  it('pagination: follow next to the end, then previous back to the start', async () => {
    const base = 'name=' + names.join('&name=');
    const everything = (await qPorts(base)).ports.map((p) => p.id);
    expect(everything).toEqual(ids);
    const seen: string[][] = [];
    let page = await qPorts(`${base}&limit=3`);
    for (;;) {
      seen.push(page.ports.map((p) => p.id));
      const next = page.ports_links?.find((l) => l.rel === 'next');
      if (!next) break;
      expect(next.href.startsWith(`${api.url}/v2.0/ports?`)).toBe(true);
      expect(new URL(next.href).searchParams.get('marker')).toBe(page.ports.at(-1)!.id);
      page = await qPorts(new URL(next.href).search.slice(1));
    }
    expect(seen.map((s) => s.length)).toEqual([3, 3, 1]);
    expect(seen.flat()).toEqual(ids);
    const back: string[][] = [];
    for (;;) {
      const prev = page.ports_links?.find((l) => l.rel === 'previous');
      if (!prev) break;
      page = await qPorts(new URL(prev.href).search.slice(1));
      back.push(page.ports.map((p) => p.id));
    }
    // the last forward page links back to [3..5], then [0..2], then an empty reversed page that ends the walk
    expect(back).toEqual([ids.slice(3, 6), ids.slice(0, 3), []]);
    const first = await qPorts(`${base}&limit=3`);
    expect(first.ports_links?.map((l) => l.rel)).toEqual(['next', 'previous']);
    const lastRev = await qPorts(`${base}&limit=2&page_reverse=true`);
    expect(lastRev.ports.map((p) => p.id)).toEqual(ids.slice(-2));
    expect((await qPorts(`${base}&limit=3&marker=0b6a1f4e-7a3c-4c2e-9a55-1d2f3e4a5b6c`)).ports).toEqual([]);
    expect((await qPorts(`${base}&limit=0`)).ports_links).toBeUndefined();
    expectNeutronError(await call('GET', '/v2.0/ports?limit=-1'), 400);
    expectNeutronError(await call('GET', '/v2.0/ports?limit=abc'), 400);
    expectNeutronError(await call('GET', '/v2.0/ports?limit=2&page_reverse=maybe'), 400);
  });

  it('pagination follows the sort order', async () => {
    const base = 'name=' + names.join('&name=') + '&sort_key=name&sort_dir=asc&limit=4';
    const p1 = await qPorts(base);
    const next = p1.ports_links!.find((l) => l.rel === 'next')!;
    const p2 = await qPorts(new URL(next.href).search.slice(1));
    expect([...p1.ports, ...p2.ports].map((p) => p.name)).toEqual([...names].sort());
  });
});

describe('HTTP surface', () => {
  it('every response carries X-Openstack-Request-Id', async () => {
    const ok = await call('GET', '/v2.0/ports');
    const bad = await call('GET', '/nowhere');
    for (const r of [ok, bad]) expect(r.headers.get('x-openstack-request-id')).toMatch(/^req-[0-9a-f-]{36}$/);
    expect(ok.headers.get('x-openstack-request-id')).not.toBe(bad.headers.get('x-openstack-request-id'));
  });

  it('unknown paths 404 HTTPNotFound, wrong methods 405', async () => {
    expectNeutronError(await call('GET', '/v2.0/sfc/bogus'), 404, 'HTTPNotFound');
    expectNeutronError(await call('GET', '/v3/ports'), 404, 'HTTPNotFound');
    expectNeutronError(await call('GET', '/v2.0/ports/%E0%A4%A'), 404, 'HTTPNotFound');
    const m1 = await call('DELETE', '/v2.0/sfc/port_pairs');
    expectNeutronError(m1, 405);
    expect(m1.headers.get('allow')).toBe('GET, POST');
    expectNeutronError(await call('POST', '/v2.0/sfc/port_pairs/0b6a1f4e-7a3c-4c2e-9a55-1d2f3e4a5b6c', { port_pair: {} }), 405);
    expectNeutronError(await call('POST', '/healthz'), 405);
  });

  it('accepts the .json suffix on collections and members', async () => {
    const id = await port('json-p');
    const list = await call('GET', '/v2.0/ports.json?name=json-p');
    expect(list.body.ports.map((p: { id: string }) => p.id)).toEqual([id]);
    expect((await call('GET', `/v2.0/ports/${id}.json`)).body.port.id).toBe(id);
  });

  it('discovery: versions, resources, extensions', async () => {
    const root = await call('GET', '/');
    expect(root.body.versions[0]).toMatchObject({ id: 'v2.0', status: 'CURRENT' });
    expect(root.body.versions[0].links[0].href).toBe(`${api.url}/v2.0/`);
    const res = await call('GET', '/v2.0');
    expect(res.body.resources.map((r: { collection: string }) => r.collection)).toContain('port_chains');
    const ext = await call('GET', '/v2.0/extensions');
    expect(ext.body.extensions.map((e: { alias: string }) => e.alias).sort()).toEqual(['flow_classifier', 'networking-sfc-tap', 'service_graph', 'sfc', 'sfc-health']);
    expect((await call('GET', '/v2.0/extensions/sfc')).body.extension.alias).toBe('sfc');
    expectNeutronError(await call('GET', '/v2.0/extensions/nope'), 404);
  });

  it('healthz reports the revision, which moves with each write', async () => {
    const before = await call('GET', '/healthz');
    expect(before.body).toEqual({ status: 'ok', revision: store.revision });
    await port('health-p');
    expect((await call('GET', '/healthz')).body.revision).toBe(before.body.revision + 1);
  });

  it('413 for a declared or streamed body over 1 MiB, and the server keeps serving', async () => {
    // declared: refused on the headers alone, before any of the body is sent
    const declared = await raw(api.url, 'POST', '/v2.0/ports', { 'Content-Type': 'application/json', 'Content-Length': 2 << 20 }, []);
    expect(declared.status).toBe(413);
    expect(JSON.parse(declared.body).NeutronError.type).toBe('HTTPRequestEntityTooLarge');
    // streamed: refused once the chunks cross the limit
    const chunks = Array.from({ length: 40 }, () => Buffer.alloc(64 * 1024, 0x20));
    const streamed = await raw(api.url, 'POST', '/v2.0/ports', { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' }, chunks);
    expect(streamed.status).toBe(413);
    expect(JSON.parse(streamed.body).NeutronError.type).toBe('HTTPRequestEntityTooLarge');
    const small = await raw(api.url, 'POST', '/v2.0/ports', { 'Content-Type': 'application/json', 'Content-Length': 3 }, [Buffer.from('{x}')]);
    expect(small.status).toBe(400);
    expect((await call('GET', '/healthz')).status).toBe(200);
  });

  it('metrics: Prometheus text with API, state and dataplane counters copied at scrape time', async () => {
    await call('GET', '/v2.0/sfc/port_pairs');
    const m = await call('GET', '/metrics');
    expect(m.status).toBe(200);
    expect(m.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = m.body as string;
    const value = (series: string) => {
      const line = text.split('\n').find((l) => l.startsWith(series + ' '));
      return line === undefined ? undefined : Number(line.slice(series.length + 1));
    };
    expect(value('sfc_api_requests_total{method="GET",status="200"}')).toBeGreaterThan(5);
    expect(value('sfc_api_requests_total{method="POST",status="201"}')).toBeGreaterThan(5);
    expect(value('sfc_state_revision')).toBe(store.revision);
    expect(value('sfc_table_generation')).toBe(42);
    expect(value('sfc_packets_total{event="rx_packets"}')).toBe(1000);
    expect(value(`sfc_packets_total{event="${COUNTERS[3]}"}`)).toBe(1003);
    expect(value('sfc_drops_total{reason="runt"}')).toBe(10);
    expect(value('sfc_drops_total{reason="none"}')).toBeUndefined();
    expect(value('sfc_instance_packets_total{chain="pc1",hop="2",port_pair="pp2"}')).toBe(9);
    expect(value('sfc_instance_bytes_total{chain="pc1",hop="2",port_pair="pp2"}')).toBe(900);
    expect(text).not.toContain('port_pair=""'); // a hole (removed member) is not a series
    expect(value('sfc_hop_packets_total{chain="pc1",hop="2"}')).toBe(14);
    expect(value('sfc_hop_bytes_total{chain="pc1",hop="1"}')).toBe(700);
    expect(value('sfc_worker_batches_total{worker="1"}')).toBe(11);
    expect(value('sfc_worker_packets_total{worker="0"}')).toBe(320);
    expect(value('sfc_worker_busy_seconds_total{worker="1"}')).toBe(0.25);
    expect(value('sfc_interface_packets_total{interface="sfct-a",direction="tx"}')).toBe(12);
    expect(value('sfc_interface_io_total{interface="sfct-a",counter="rx_kernel_drops"}')).toBe(3);
    expect(value('sfc_interface_io_total{interface="sfct-a",counter="tx_in_place"}')).toBe(7);
    stubStats.events[0] = 5000;
    expect(((await call('GET', '/metrics')).body as string)).toContain('sfc_packets_total{event="rx_packets"} 5000');
  });
});

describe('token auth', () => {
  let secured: ApiServer;
  let anon: ReturnType<typeof client>;
  beforeAll(async () => {
    secured = await startApiServer({ store, token: 's3cret', host: '127.0.0.1', port: 0 });
    anon = client(secured.url);
  });
  afterAll(async () => {
    await secured.close();
  });

  it('401 NeutronError without the token or with a wrong one, on every path', async () => {
    for (const path of ['/v2.0/ports', '/healthz', '/nowhere']) expectNeutronError(await anon('GET', path), 401, 'HTTPUnauthorized');
    expectNeutronError(await anon('GET', '/v2.0/ports', undefined, { 'X-Auth-Token': 'wrong' }), 401);
    expectNeutronError(await anon('GET', '/v2.0/ports', undefined, { Authorization: 'Bearer s3cre' }), 401);
    expectNeutronError(await anon('POST', '/v2.0/ports', { port: { 'binding:profile': { interface: 'x' } } }), 401);
  });

  it('accepts X-Auth-Token and Authorization: Bearer', async () => {
    expect((await anon('GET', '/v2.0/ports', undefined, { 'X-Auth-Token': 's3cret' })).status).toBe(200);
    expect((await anon('GET', '/v2.0/ports', undefined, { Authorization: 'Bearer s3cret' })).status).toBe(200);
  });
});
