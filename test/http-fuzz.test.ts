/*
 * HTTP fuzz (property-based, fast-check) against the real server on a socket, with a seeded model
 * (a chain with its ports, pairs, group and classifier): malformed request lines, header fields
 * and chunked encodings as raw bytes; every attribute of every resource with values of every
 * wrong type, on create and update; huge and deeply nested JSON; invalid UTF-8. For every request:
 * the answer is never a 5xx, an error answer carries a NeutronError body, and a refused request
 * leaves the model exactly as it was (same snapshot, same revision). The server must still answer
 * /healthz at the end (it never crashed); an uncaught error in it would fail the run.
 */
import fc from 'fast-check';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApiServer, type ApiServer } from '../src/control/api.js';
import { MAX_BODY_BYTES } from '../src/control/http.js';
import { COLLECTIONS, SINGULAR, type Collection } from '../src/control/model.js';
import { Store } from '../src/control/store.js';
import { collectionPath } from '../src/control/http.js';

let store: Store;
let api: ApiServer;
let port: number;
const ids = {} as Record<Collection, string>;

beforeAll(async () => {
  store = new Store({ linkUp: () => false });
  api = await startApiServer({ store, host: '127.0.0.1', port: 0 });
  port = Number(new URL(api.url).port);
  const p = (name: string, mac: string) => store.create('ports', { name, mac_address: mac, 'binding:profile': { interface: `fz-${name}` } });
  const [a, b, src] = [await p('a', '02:00:00:00:0f:01'), await p('b', '02:00:00:00:0f:02'), await p('src', '02:00:00:00:0f:03')];
  const pair = await store.create('port_pairs', { name: 'pp', ingress: a.id, egress: b.id, service_function_parameters: { correlation: 'mpls' } });
  const group = await store.create('port_pair_groups', { name: 'g', port_pairs: [pair.id] });
  const fcl = await store.create('flow_classifiers', { name: 'fc', protocol: 'tcp', logical_source_port: src.id, source_ip_prefix: '10.9.0.0/16' });
  const chain = await store.create('port_chains', { name: 'pc', port_pair_groups: [group.id], flow_classifiers: [fcl.id] });
  const g2 = await store.create('port_pair_groups', { name: 'g2' });
  const chain2 = await store.create('port_chains', { name: 'pc2', port_pair_groups: [g2.id] });
  const graph = await store.create('service_graphs', { name: 'sg', port_chains: { [chain.id]: [chain2.id] } });
  Object.assign(ids, { ports: a.id, port_pairs: pair.id, port_pair_groups: group.id, flow_classifiers: fcl.id, port_chains: chain.id, service_graphs: graph.id });
});

afterAll(async () => {
  await api.close();
});

/** Send raw bytes on a fresh connection, half-close, and collect everything until the server closes. */
function rawExchange(bytes: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1', () => sock.end(bytes));
    let text = '';
    sock.on('data', (d) => (text += d.toString('latin1')));
    sock.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' || e.code === 'EPIPE' ? undefined : reject(e)));
    sock.on('close', () => resolve(text));
  });
}

/** Every status line in a (possibly pipelined) answer, each checked: not 5xx, errors are NeutronErrors. */
function checkAnswers(text: string): number[] {
  const statuses = [...text.matchAll(/^HTTP\/1\.[01] (\d{3})/gm)].map((m) => Number(m[1]));
  for (const s of statuses) expect(s, text.slice(0, 300)).toBeLessThan(500);
  if (statuses.length > 0 && statuses[0]! >= 400) {
    const body = text.slice(text.indexOf('\r\n\r\n') + 4);
    expect(body, text.slice(0, 300)).toContain('"NeutronError"');
  }
  return statuses;
}

/** Run `request`; when it is refused (>= 400) the model must be exactly what it was. */
async function unchangedUnlessAccepted(request: () => Promise<number[]>): Promise<void> {
  const before = store.state;
  const revision = store.revision;
  const statuses = await request();
  if (statuses.every((s) => s >= 400)) {
    expect(store.state).toBe(before);
    expect(store.revision).toBe(revision);
  }
}

const token = fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}$/);
const anyText = fc.string({ unit: 'binary', maxLength: 40 });
const paths = fc.oneof(
  fc.constantFrom('/', '/v2.0', '/v2.0/ports', '/v2.0/sfc/port_chains', '/v2.0/sfc/port_pairs/x', '/healthz', '/metrics', '/v2.0/extensions/sfc'),
  fc.constantFrom(...COLLECTIONS).map((c) => `${collectionPath(c)}/${ids[c] ?? 'missing'}`),
  fc.string({ maxLength: 30 }).map((s) => '/' + s),
  anyText,
);
const headerLine = fc.oneof(
  fc.tuple(token, fc.string({ maxLength: 30 })).map(([k, v]) => `${k}: ${v}`),
  fc.constantFrom('Content-Length: 5', 'Content-Length: -1', 'Content-Length: 99999999999', 'Content-Length: 1, 2', 'Content-Length: abc', 'Transfer-Encoding: chunked', 'Transfer-Encoding: gzip, chunked', 'Transfer-Encoding: chunked, identity', 'Content-Type: application/json', 'Content-Type: text/plain', 'Host: evil.example', 'Expect: 100-continue', ' folded: line', 'NoColon', ':empty-name', 'X\u0000Nul: 1'),
  anyText,
);
const chunked = fc.array(
  fc.oneof(
    fc.string({ maxLength: 20 }).map((s) => `${Buffer.byteLength(s).toString(16)}\r\n${s}\r\n`),
    fc.constantFrom('zz\r\n', 'ffffffffffffffff\r\n', '5;ext=1\r\nhello\r\n', '3\r\nabcdef\r\n', '0\r\n\r\n', '0\r\nTrailer: x\r\n\r\n', '-1\r\n', '\r\n'),
    anyText,
  ),
  { maxLength: 6 },
).map((parts) => parts.join(''));

describe('raw HTTP', () => {
  it('malformed request lines, headers, bodies and chunked encodings: never a 5xx, never a change', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'CONNECT', 'TRACE'), token, anyText),
        paths,
        fc.constantFrom('HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 extra', 'HTTP/9', ''),
        fc.array(headerLine, { maxLength: 6 }),
        fc.oneof(chunked, fc.json({ maxDepth: 4 }), anyText),
        fc.boolean(),
        async (method, path, version, headers, body, hostFirst) => {
          const lines = [`${method} ${path} ${version}`, ...(hostFirst ? ['Host: 127.0.0.1'] : []), ...headers];
          const bytes = Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body}`, 'latin1');
          await unchangedUnlessAccepted(async () => checkAnswers(await rawExchange(bytes)));
        },
      ),
      { numRuns: 2000, seed: 11 },
    );
  });
});

/** Values of every JSON type (and some that stress converters): at least one is wrong for any attribute. */
const wrongValue = fc.oneof(
  fc.constantFrom(null, true, false, 0, -1, 1.5, 1e308, -0, '', ' ', 'x'.repeat(300), '10.0.0.0/33', 'tcp', '02:00:00:00:00:01', '00000000-0000-4000-8000-000000000000', [], {}, [null], { '': null }, ['x'], { a: [1, { b: {} }] }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.integer(),
  fc.double(),
  fc.jsonValue({ maxDepth: 3 }),
);

async function jsonRequest(method: string, path: string, body: string | Buffer): Promise<number[]> {
  const res = await fetch(api.url + path, { method, headers: { 'Content-Type': 'application/json' }, body });
  const text = await res.text();
  expect(res.status, text).toBeLessThan(500);
  if (res.status >= 400) expect(Object.keys(JSON.parse(text) as object)).toEqual(['NeutronError']);
  return [res.status];
}

describe('JSON bodies', () => {
  const attributes = (c: Collection) => Object.keys(store.get(c, ids[c])!);

  it('every attribute of every resource, each with values of every wrong type, on create and update', async () => {
    const created: [Collection, string][] = [];
    for (const coll of COLLECTIONS) {
      const attrs = [...attributes(coll), 'unknown_attr', 'tenant_id', 'project_id'];
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...attrs), wrongValue, fc.boolean(), async (attr, value, update) => {
          const body = JSON.stringify({ [SINGULAR[coll]]: { [attr]: value } });
          const path = update ? `${collectionPath(coll)}/${ids[coll]}` : collectionPath(coll);
          await unchangedUnlessAccepted(() => jsonRequest(update ? 'PUT' : 'POST', path, body));
          // an accepted create (some values are valid) is removed again so the seed stays as it was
          for (const item of store.list(coll)) if (!Object.values(ids).includes(item.id)) created.push([coll, item.id]);
          for (const [c, id] of created.splice(0)) await store.delete(c, id).catch(() => undefined);
        }),
        { numRuns: 300, seed: 11 },
      );
    }
  });

  it('envelopes of every wrong shape', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...COLLECTIONS), fc.jsonValue({ maxDepth: 4 }), fc.boolean(), async (coll, body, update) => {
        const path = update ? `${collectionPath(coll)}/${ids[coll]}` : collectionPath(coll);
        await unchangedUnlessAccepted(() => jsonRequest(update ? 'PUT' : 'POST', path, JSON.stringify(body)));
      }),
      { numRuns: 500, seed: 11 },
    );
  });

  it('huge and deeply nested JSON, invalid UTF-8: 400 or 413, nothing changes', async () => {
    const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
    const cases: [string, Buffer | string, number][] = [
      ['a million levels of nesting (under the size limit)', deep(MAX_BODY_BYTES / 2 - 16), 400],
      ['deep nesting inside an attribute', `{"port_pair_group":{"name":"x","port_pair_group_parameters":${deep(10_000)}}}`, 400],
      ['deep objects inside an attribute', `{"port":{"binding:profile":${'{"a":'.repeat(5_000)}1${'}'.repeat(5_000)}}}`, 400],
      ['one byte over the size limit', `{"port":{"name":"${'x'.repeat(MAX_BODY_BYTES)}"}}`, 413],
      ['a 1 MiB string attribute', `{"port_pair_group":{"name":"${'x'.repeat(MAX_BODY_BYTES - 64)}"}}`, 400],
      ['60,000 attributes', `{"port_pair_group":{${Array.from({ length: 60_000 }, (_, i) => `"a${i}":1`).join(',')}}}`, 400],
      ['invalid UTF-8 in a name', Buffer.concat([Buffer.from('{"port_pair_group":{"name":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}}')]), 400],
      ['a lone surrogate escape', '{"port_pair_group":{"name":"\\ud800"}}', 201],
      ['overlong UTF-8 encoding', Buffer.concat([Buffer.from('{"port_pair_group":{"name":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}}')]), 400],
      ['a UTF-8 BOM before the JSON (skipped, as by the WHATWG decoder)', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"port_pair_group":{}}')]), 201],
      ['__proto__ keys', '{"port_pair_group":{"__proto__":{"name":"p"},"constructor":{"prototype":{"x":1}}}}', 400],
    ];
    for (const [what, body, status] of cases) {
      const coll: Collection = typeof body === 'string' && body.startsWith('{"port"') ? 'ports' : 'port_pair_groups';
      await unchangedUnlessAccepted(async () => {
        const [s] = await jsonRequest('POST', collectionPath(coll), body);
        expect(s, what).toBe(status);
        return [s!];
      });
    }
    for (const g of store.list('port_pair_groups')) if (g.id !== ids.port_pair_groups && g.name !== 'g2') await store.delete('port_pair_groups', g.id);
    expect(({} as Record<string, unknown>).x).toBeUndefined(); // nothing polluted Object.prototype
  });

  it('the server still answers afterwards', async () => {
    expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
  });
});
