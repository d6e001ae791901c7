/*
 * `sfc serve --store etcd://...` as processes on a real 3-member etcd cluster: an unreachable
 * store stops start-up with one message naming the endpoints; two servers take concurrent POSTs
 * (each lands once, both serve the same model in the same order, a classifier raced for by two
 * chains goes to exactly one: 201 + 409); a restarted server reloads the model from etcd; a POST
 * while etcd has no quorum is 503 and changes nothing.
 */
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prerequisites } from './support/prereq.js';
import { etcdAvailable, startServe, startTestCluster, type ServeProcess, type TestCluster } from './support/etcd.js';

const BASE_PORT = 32479;
const run = etcdAvailable('sfc serve --store etcd');
const withOpenstack = run && prerequisites('binding:host_id through the openstack client', { commands: ['openstack'] });

/** The real OpenStack client against `url` (no Keystone), output of -f value. */
function openstack(url: string, args: string[]): Promise<string> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OS_')));
  return new Promise((resolve, reject) =>
    execFile('openstack', ['--os-auth-type', 'none', '--os-endpoint', url, ...args], { env, timeout: 120_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`openstack ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout.trim()),
    ),
  );
}

async function call(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

/** GET /v2.0/<path>[?query]: the listed objects (the envelope key is the path's last part). */
const list = async (url: string, path: string) =>
  (await call(url, 'GET', `/v2.0/${path}`)).body[path.split('?')[0]!.split('/').pop()!] as { id: string; name: string }[];

/** Until `url` lists `coll` satisfying `ok` (the other server's watch has brought the writes); the last list. */
async function eventually(url: string, coll: string, ok: (items: { id: string; name: string }[]) => boolean): Promise<{ id: string; name: string }[]> {
  for (const end = Date.now() + 10_000; ; ) {
    const items = await list(url, coll);
    if (ok(items) || Date.now() > end) return items;
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe.skipIf(!run)('sfc serve --store etcd://', () => {
  let tc: TestCluster;
  const servers: ServeProcess[] = [];
  const serve = async () => {
    const s = await startServe(['--driver', 'noop', '--store', tc.cluster.storeUrl]);
    servers.push(s);
    return s;
  };

  beforeAll(async () => {
    tc = await startTestCluster(BASE_PORT);
  }, 60_000);

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await tc?.cleanup();
  });

  it('an unreachable store is one clear error naming its endpoints (exit 1, no stack trace)', async () => {
    const e = (await startServe(['--driver', 'noop', '--store', 'etcd://127.0.0.1:1,127.0.0.1:2']).catch((x: unknown) => x)) as { code: number; stderr: string };
    expect(e.code).toBe(1);
    expect(e.stderr).toMatch(/^sfc serve: etcd at http:\/\/127\.0\.0\.1:1, http:\/\/127\.0\.0\.1:2 did not answer/);
    expect(e.stderr).not.toMatch(/\n\s+at /);
    const usage = (await startServe(['--driver', 'noop', '--store', 'http://127.0.0.1:2379']).catch((x: unknown) => x)) as { code: number; stderr: string };
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--store: 'http:\/\/127\.0\.0\.1:2379' is not etcd:\/\/HOST:PORT/);
  });

  it('two servers: concurrent POSTs land once each, both serve the same model, one of two racing chains wins; a restart reloads it', async () => {
    const [a, b] = [await serve(), await serve()];
    const N = 10;
    const posts = await Promise.all(
      [...Array(N).keys()].flatMap((i) => [
        call(a.url, 'POST', '/v2.0/ports', { port: { name: `a${i}`, 'binding:profile': { interface: `ea${i}` }, 'binding:host_id': 'host2' } }),
        call(b.url, 'POST', '/v2.0/ports', { port: { name: `b${i}`, 'binding:profile': { interface: `eb${i}` } } }),
      ]),
    );
    expect(posts.map((p) => p.status)).toEqual(Array(2 * N).fill(201));
    const onA = await eventually(a.url, 'ports', (ps) => ps.length === 2 * N);
    const onB = await eventually(b.url, 'ports', (ps) => ps.length === 2 * N);
    expect(onA).toHaveLength(2 * N);
    expect(new Set(onA.map((p) => p.id)).size).toBe(2 * N);
    expect(onB).toEqual(onA);
    expect(onB.filter((p) => (p as Record<string, unknown>)['binding:host_id'] === 'host2')).toHaveLength(N);
    expect((await list(b.url, 'ports?binding:host_id=host2')).map((p) => p.name).sort()).toEqual(onA.filter((p) => p.name.startsWith('a')).map((p) => p.name).sort());

    const [src, pin, pout, qin, qout] = onA;
    const pp = (await call(a.url, 'POST', '/v2.0/sfc/port_pairs', { port_pair: { ingress: pin!.id, egress: pout!.id } })).body.port_pair as { id: string };
    const qq = (await call(a.url, 'POST', '/v2.0/sfc/port_pairs', { port_pair: { ingress: qin!.id, egress: qout!.id } })).body.port_pair as { id: string };
    const g1 = (await call(a.url, 'POST', '/v2.0/sfc/port_pair_groups', { port_pair_group: { port_pairs: [pp.id] } })).body.port_pair_group as { id: string };
    const g2 = (await call(a.url, 'POST', '/v2.0/sfc/port_pair_groups', { port_pair_group: { port_pairs: [qq.id] } })).body.port_pair_group as { id: string };
    const fc = (await call(a.url, 'POST', '/v2.0/sfc/flow_classifiers', { flow_classifier: { logical_source_port: src!.id } })).body.flow_classifier as { id: string };
    await eventually(b.url, 'sfc/flow_classifiers', (fcs) => fcs.some((f) => f.id === fc.id));
    const race = await Promise.all([
      call(a.url, 'POST', '/v2.0/sfc/port_chains', { port_chain: { port_pair_groups: [g1.id], flow_classifiers: [fc.id] } }),
      call(b.url, 'POST', '/v2.0/sfc/port_chains', { port_chain: { port_pair_groups: [g2.id], flow_classifiers: [fc.id] } }),
    ]);
    expect(race.map((r) => r.status).sort()).toEqual([201, 409]);
    expect(race.find((r) => r.status === 409)!.body).toMatchObject({ NeutronError: { type: 'FlowClassifierInUse' } });

    const chains = await eventually(b.url, 'sfc/port_chains', (cs) => cs.length === 1);
    await a.stop();
    const again = await serve();
    expect(await list(again.url, 'ports')).toEqual(onA);
    expect(await list(again.url, 'sfc/port_chains')).toEqual(chains);
  });

  it.skipIf(!withOpenstack)("binding:host_id through the real openstack client: set on one server, listed by host on the other", async () => {
    const [a, b] = servers.slice(-2) as [ServeProcess, ServeProcess];
    const port = (await call(a.url, 'POST', '/v2.0/ports', { port: { name: 'os-host', 'binding:profile': { interface: 'os0' } } })).body.port as { id: string };
    await openstack(a.url, ['port', 'set', '--host', 'host7', port.id]);
    await eventually(b.url, 'ports?binding:host_id=host7', (ps) => ps.length === 1);
    expect(await openstack(b.url, ['port', 'list', '--host', 'host7', '-c', 'ID', '-f', 'value'])).toBe(port.id);
    expect(await openstack(b.url, ['port', 'show', port.id, '-c', 'binding_host_id', '-f', 'value'])).toBe('host7');
  }, 60_000);

  it('without a quorum a POST is 503 ServiceUnavailable and changes nothing; with it back, POSTs work', async () => {
    const s = servers.at(-1)!;
    const before = await list(s.url, 'ports');
    const leader = await tc.cluster.leader();
    const down = [0, 1, 2].filter((i) => i !== leader);
    for (const i of down) await tc.cluster.kill(i);
    const refused = await call(s.url, 'POST', '/v2.0/ports', { port: { name: 'no-quorum', 'binding:profile': { interface: 'nq0' } } });
    expect(refused.status).toBe(503);
    expect(refused.body).toMatchObject({ NeutronError: { type: 'ServiceUnavailable' } });
    expect(await list(s.url, 'ports')).toEqual(before);
    await Promise.all(down.map((i) => tc.cluster.restart(i)));
    const ok = await call(s.url, 'POST', '/v2.0/ports', { port: { name: 'quorum-back', 'binding:profile': { interface: 'qb0' } } });
    expect(ok.status).toBe(201);
    expect((await list(s.url, 'ports')).map((p) => p.name)).toEqual([...before.map((p) => p.name), 'quorum-back']);
  }, 30_000);
});
