/*
 * `sfc serve` with a dataplane driver renders one host (issue 14): a port whose binding:host_id names
 * another host than the server's own (--host, default the hostname) is refused in precommit with a
 * 400 NeutronError naming the port and pointing at `sfc agent`, and the state is untouched; ports
 * without a host, or on the server's own, are taken. The noop driver (the multi-host lab's API
 * server, which renders nothing) takes ports on any host. Real `sfc serve` processes over HTTP
 * (the ovs one with its own ovsdb-server and ovs-vswitchd).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startServe, type ServeProcess } from './support/etcd.js';
import { ovsPrerequisites } from './support/ovs.js';
import { prerequisites } from './support/prereq.js';

const run = prerequisites('sfc serve --host', { root: true });
const withOvs = run && ovsPrerequisites('sfc serve --driver ovs --host');

async function call(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: Record<string, any> }> {
  const res = await fetch(`${url}${path}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, any>) : {} };
}

const port = (name: string, host?: string) => ({ port: { name, 'binding:profile': { interface: `sfcth-${name}` }, ...(host === undefined ? {} : { 'binding:host_id': host }) } });
const names = async (url: string) => ((await call(url, 'GET', '/v2.0/ports')).body.ports as { name: string }[]).map((p) => p.name).sort();

describe.skipIf(!run)('sfc serve renders one host: ports on other hosts are refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sfc-serve-host-'));
  const servers: ServeProcess[] = [];
  const serve = async (args: string[]) => {
    const s = await startServe([...args, '--state', join(dir, `state${servers.length}.json`), '--health-interval', '0']);
    servers.push(s);
    return s.url;
  };

  afterAll(async () => {
    for (const s of servers) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('userspace --host hA: a port on hB is a 400 naming it and sfc agent, on create and update; nothing changes', async () => {
    const url = await serve(['--driver', 'userspace', '--backend', 'afpacket', '--host', 'hA']);
    const refused = await call(url, 'POST', '/v2.0/ports', port('far', 'hB'));
    expect(refused.status).toBe(400);
    expect(refused.body.NeutronError.type).toBe('SfcBadRequest');
    expect(refused.body.NeutronError.message).toContain('port far');
    expect(refused.body.NeutronError.message).toContain("binding:host_id 'hB'");
    expect(refused.body.NeutronError.message).toContain("sfc agent --host hB");
    expect(await names(url)).toEqual([]);

    expect((await call(url, 'POST', '/v2.0/ports', port('plain'))).status).toBe(201);
    expect((await call(url, 'POST', '/v2.0/ports', port('own', 'hA'))).status).toBe(201);
    const plain = (await call(url, 'GET', '/v2.0/ports?name=plain')).body.ports[0] as { id: string };
    const moved = await call(url, 'PUT', `/v2.0/ports/${plain.id}`, { port: { 'binding:host_id': 'hB' } });
    expect(moved.status).toBe(400);
    expect(moved.body.NeutronError.message).toContain('port plain');
    expect((await call(url, 'GET', `/v2.0/ports/${plain.id}`)).body.port['binding:host_id']).toBe('');
    expect(await names(url)).toEqual(['own', 'plain']);
  });

  it('userspace without --host: the hostname is its own host', async () => {
    const url = await serve(['--driver', 'userspace', '--backend', 'afpacket']);
    expect((await call(url, 'POST', '/v2.0/ports', port('here', hostname()))).status).toBe(201);
    expect((await call(url, 'POST', '/v2.0/ports', port('there', `not-${hostname()}`))).status).toBe(400);
    expect(await names(url)).toEqual(['here']);
  });

  it.skipIf(!withOvs)('ovs --host hA: a port on hB is a 400 naming it', async () => {
    const url = await serve(['--driver', 'ovs', '--ovs-bridge', `sfcth${process.pid % 100000}`, '--host', 'hA']);
    const refused = await call(url, 'POST', '/v2.0/ports', port('far', 'hB'));
    expect(refused.status).toBe(400);
    expect(refused.body.NeutronError.message).toContain('port far');
    expect(refused.body.NeutronError.message).toContain('sfc agent --host hB');
    expect(await names(url)).toEqual([]);
  }, 30_000);

  it('noop (an API server for agents): ports on any host', async () => {
    const url = await serve(['--driver', 'noop', '--host', 'hA']);
    for (const [name, host] of [['b', 'hB'], ['c', 'hC'], ['a', 'hA']]) expect((await call(url, 'POST', '/v2.0/ports', port(name, host))).status).toBe(201);
    expect(await names(url)).toEqual(['a', 'b', 'c']);
  });
});
