/*
 * The API server under abuse (real sockets, in-process server with short limits so the deadlines
 * are reached in well under a second): slow clients dribbling headers or a body are cut off with
 * a 408 NeutronError while other clients' writes go through; an idle keep-alive connection is
 * closed; the connection cap refuses extra connections; writes need Content-Type
 * application/json (415); without a token the Host header must be a loopback name; per-resource
 * limits answer 409 OverQuota; malformed requests node:http rejects get a NeutronError body too.
 * The token file, the private state directory and the O_EXCL|O_NOFOLLOW temporary file are
 * checked here as well.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SERVER_LIMITS, startApiServer, type ApiServer, type ServerLimits } from '../src/control/api.js';
import { emptyState } from '../src/control/model.js';
import { StateFile } from '../src/control/persist.js';
import { Store, parseLimits } from '../src/control/store.js';
import { readTokenFile } from '../src/control/token.js';

const dir = mkdtempSync(join(tmpdir(), 'sfct-abuse-'));
const LIMITS: ServerLimits = { headersTimeoutMs: 400, requestTimeoutMs: 2_000, keepAliveTimeoutMs: 300, idleTimeoutMs: 5_000, maxConnections: 6 };

let store: Store;
let api: ApiServer;
let port: number;

beforeAll(async () => {
  store = new Store({ linkUp: () => false, limits: { port_pair_groups: 3 } });
  api = await startApiServer({ store, host: '127.0.0.1', port: 0, limits: LIMITS });
  port = Number(new URL(api.url).port);
});

afterAll(async () => {
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A raw connection: everything the server sends, and whether/when it closed. */
function open(): Promise<{ sock: Socket; received: () => string; closed: Promise<number> }> {
  return new Promise((res, rej) => {
    const sock = connect(port, '127.0.0.1');
    let text = '';
    sock.on('data', (d) => (text += d.toString('latin1')));
    sock.on('error', () => undefined);
    const closed = new Promise<number>((r) => sock.once('close', () => r(performance.now())));
    sock.once('connect', () => res({ sock, received: () => text, closed }));
    sock.once('error', rej);
  });
}

/**
 * Send `bytes` one at a time every `everyMs` until the server closes the connection; returns how
 * many were sent. Gives up (returns Infinity) after `max` bytes: the server never cut it off.
 */
async function dribble(c: { sock: Socket; closed: Promise<number> }, bytes: string, everyMs: number, max: number): Promise<number> {
  let gone = false;
  void c.closed.then(() => (gone = true));
  for (let i = 0; i < Math.min(bytes.length, max); i++) {
    if (gone) return i;
    c.sock.write(bytes[i]!);
    await new Promise((r) => setTimeout(r, everyMs));
  }
  await Promise.race([c.closed, new Promise((r) => setTimeout(r, everyMs))]);
  return gone ? Math.min(bytes.length, max) : Infinity;
}

const status = (text: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
const jsonBody = (text: string) => JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { NeutronError: { type: string } };

async function call(method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(api.url + path, { method, headers, body });
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
}
const json = { 'Content-Type': 'application/json' };

describe('slow and idle clients', () => {
  it('a client dribbling its headers is cut off with a 408 NeutronError, while another client writes', async () => {
    const slow = await open();
    const t0 = performance.now();
    const writes = (async () => {
      // other clients' writes complete while the slow one holds its connection
      for (let i = 0; i < 3; i++) expect((await call('POST', '/v2.0/sfc/port_pair_groups', JSON.stringify({ port_pair_group: { name: `during-slow-${i}` } }), json)).status).toBe(201);
    })();
    const sent = await dribble(slow, 'GET /v2.0/ports HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ' + 'a'.repeat(200), 50, 60);
    await writes;
    expect(sent).toBeLessThan(60);
    expect(performance.now() - t0).toBeLessThan(LIMITS.requestTimeoutMs); // the header deadline, not the request one
    expect(status(slow.received())).toBe(408);
    expect(jsonBody(slow.received()).NeutronError.type).toBe('HTTPRequestTimeout');
    await store.delete('port_pair_groups', store.list('port_pair_groups')[0]!.id);
    for (const g of store.list('port_pair_groups')) await store.delete('port_pair_groups', g.id);
  });

  it('a connection that sends nothing is closed by the header deadline', async () => {
    const silent = await open();
    const t0 = performance.now();
    const closedAt = await Promise.race([silent.closed, new Promise<number>((r) => setTimeout(() => r(Infinity), LIMITS.headersTimeoutMs + 2000))]);
    expect(closedAt - t0).toBeLessThan(LIMITS.requestTimeoutMs);
  });

  it('a client dribbling its body is cut off at the request deadline, and its write never happens', async () => {
    const slow = await open();
    const body = JSON.stringify({ port_pair_group: { name: 'slow-body' } });
    slow.sock.write(`POST /v2.0/sfc/port_pair_groups HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
    const fast = call('POST', '/v2.0/sfc/port_pair_groups', JSON.stringify({ port_pair_group: { name: 'fast' } }), json);
    const sent = await dribble(slow, body, 100, body.length);
    expect(sent).toBeLessThan(body.length);
    expect((await fast).status).toBe(201);
    expect(store.list('port_pair_groups').map((g) => g.name)).toEqual(['fast']);
    expect([408, 0]).toContain(status(slow.received()));
    await store.delete('port_pair_groups', store.list('port_pair_groups')[0]!.id);
  });

  it('an idle keep-alive connection is closed after the keep-alive timeout', async () => {
    const c = await open();
    c.sock.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const t0 = performance.now();
    const closedAt = await Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(Infinity), 5000))]);
    expect(status(c.received())).toBe(200);
    expect(closedAt - t0).toBeLessThan(LIMITS.keepAliveTimeoutMs + 1500);
  });

  it('the connection cap: connections beyond it are closed at once, and a freed slot is usable again', async () => {
    const held = await Promise.all(Array.from({ length: LIMITS.maxConnections }, () => open()));
    for (const h of held) h.sock.write('GET /healthz HTTP/1.1\r\n'); // half a request: each holds its slot
    const extra = await open();
    extra.sock.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await extra.closed;
    expect(extra.received()).toBe('');
    held[0]!.sock.destroy();
    await held[0]!.closed;
    // the server sees the close asynchronously: retry until the slot is free (bounded)
    let answered = '';
    for (let i = 0; i < 50 && answered === ''; i++) {
      const again = await open();
      again.sock.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
      await again.closed;
      answered = again.received();
    }
    expect(status(answered)).toBe(200);
    for (const h of held) h.sock.destroy();
  });

  it('defaults: headers 10 s, request 30 s, 256 connections', () => {
    expect(DEFAULT_SERVER_LIMITS).toMatchObject({ headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, maxConnections: 256 });
    expect(DEFAULT_SERVER_LIMITS.keepAliveTimeoutMs).toBeLessThanOrEqual(5_000);
  });
});

describe('request guards', () => {
  const group = JSON.stringify({ port_pair_group: { name: 'g' } });

  it('POST and PUT need Content-Type: application/json (415 NeutronError, nothing stored); DELETE needs none', async () => {
    for (const headers of [{}, { 'Content-Type': 'text/plain' }, { 'Content-Type': 'application/x-www-form-urlencoded' }, { 'Content-Type': 'application/jsonp' }]) {
      const r = await call('POST', '/v2.0/sfc/port_pair_groups', group, headers);
      expect(r.status, JSON.stringify(headers)).toBe(415);
      expect(r.body.NeutronError.type).toBe('HTTPUnsupportedMediaType');
    }
    expect(store.list('port_pair_groups')).toEqual([]);
    const ok = await call('POST', '/v2.0/sfc/port_pair_groups', group, { 'Content-Type': 'Application/JSON; charset=UTF-8' });
    expect(ok.status).toBe(201);
    const id = ok.body.port_pair_group.id as string;
    expect((await call('PUT', `/v2.0/sfc/port_pair_groups/${id}`, JSON.stringify({ port_pair_group: { name: 'h' } }), { 'Content-Type': 'text/plain' })).status).toBe(415);
    expect(store.get('port_pair_groups', id)!.name).toBe('g');
    expect((await call('DELETE', `/v2.0/sfc/port_pair_groups/${id}`)).status).toBe(204);
  });

  it('without a token, Host must be a loopback name (DNS rebinding)', async () => {
    const withHost = async (host: string) => {
      const c = await open();
      c.sock.write(`GET /v2.0/ports HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      await c.closed;
      return c.received();
    };
    for (const host of ['evil.example', `evil.example:${port}`, '10.0.0.1', 'localhost.evil.example']) {
      const text = await withHost(host);
      expect(status(text), host).toBe(400);
      expect(jsonBody(text).NeutronError.type).toBe('HTTPBadRequest');
    }
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'LOCALHOST', `[::1]:${port}`, '127.0.0.2']) {
      expect(status(await withHost(host)), host).toBe(200);
    }
  });

  it('with a token, any Host is served to a client that presents it', async () => {
    const secured = await startApiServer({ store, token: 'tok', host: '127.0.0.1', port: 0 });
    try {
      const res = await new Promise<string>((res) => {
        const sock = connect(Number(new URL(secured.url).port), '127.0.0.1', () =>
          sock.write('GET /v2.0/ports HTTP/1.1\r\nHost: sfc.lab.example\r\nX-Auth-Token: tok\r\nConnection: close\r\n\r\n'),
        );
        let text = '';
        sock.on('data', (d) => (text += d.toString()));
        sock.on('close', () => res(text));
      });
      expect(status(res)).toBe(200);
    } finally {
      await secured.close();
    }
  });

  it('per-resource limits: 409 OverQuota, and room again after a delete', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await call('POST', '/v2.0/sfc/port_pair_groups', group, json)).body.port_pair_group.id);
    const over = await call('POST', '/v2.0/sfc/port_pair_groups', group, json);
    expect(over.status).toBe(409);
    expect(over.body.NeutronError).toEqual({ type: 'OverQuota', message: "Quota exceeded for resources: ['port_pair_group'].", detail: '' });
    expect(store.list('port_pair_groups')).toHaveLength(3);
    expect((await call('DELETE', `/v2.0/sfc/port_pair_groups/${ids[0]}`)).status).toBe(204);
    expect((await call('POST', '/v2.0/sfc/port_pair_groups', group, json)).status).toBe(201);
    for (const g of store.list('port_pair_groups')) await store.delete('port_pair_groups', g.id);
  });

  it('--limits parses COLLECTION=N lists and refuses anything else naming the entry', () => {
    expect(parseLimits('ports=20000, flow_classifiers=5')).toEqual({ ports: 20000, flow_classifiers: 5 });
    for (const bad of ['ports', 'ports=0', 'ports=-1', 'port=5', 'ports=1e3', 'ports=5,,chains=1']) {
      expect(() => parseLimits(bad), bad).toThrow(/--limits: '.*' is not COLLECTION=N/);
    }
  });

  it('protocol errors node:http catches (bad request line, bad chunk) are answered with a NeutronError body', async () => {
    for (const raw of ['GARBAGE\r\n\r\n', 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n', `POST /v2.0/ports HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`]) {
      const c = await open();
      c.sock.write(raw);
      await c.closed;
      expect(status(c.received()), JSON.stringify(raw)).toBe(400);
      expect(jsonBody(c.received()).NeutronError.type).toBe('HTTPBadRequest');
    }
  });
});

describe('secrets on disk', () => {
  it('token file: mode 0600/0400 owned by us is read (trimmed); group/world access, links, empty files are refused naming the file', async () => {
    const file = join(dir, 'token');
    writeFileSync(file, '  s3cret-token\n', { mode: 0o600 });
    chmodSync(file, 0o600);
    expect(await readTokenFile(file)).toBe('s3cret-token');
    chmodSync(file, 0o400);
    expect(await readTokenFile(file)).toBe('s3cret-token');
    for (const mode of [0o640, 0o604, 0o620]) {
      chmodSync(file, mode);
      await expect(readTokenFile(file)).rejects.toThrow(new RegExp(`token file ${file} has mode 0${mode.toString(8)}`));
    }
    chmodSync(file, 0o600);
    await expect(readTokenFile(file, 12345)).rejects.toThrow(/owned by uid \d+, not by this user/);
    const link = join(dir, 'token-link');
    symlinkSync(file, link);
    await expect(readTokenFile(link)).rejects.toThrow(/symbolic link/);
    const empty = join(dir, 'token-empty');
    writeFileSync(empty, '\n', { mode: 0o600 });
    await expect(readTokenFile(empty)).rejects.toThrow(`token file ${empty} is empty`);
  });

  it('sfc serve --token-file or SFC_TOKEN: requests need that token; a readable token file stops start-up', async () => {
    const cli = join(resolve(import.meta.dirname, '..'), 'dist/src/cli.js');
    const file = join(dir, 'serve-token');
    writeFileSync(file, 'from-file\n', { mode: 0o600 });
    const run = (tokenArgs: string[], envToken = '') => {
      const proc = spawn(process.execPath, [cli, 'serve', '--driver', 'noop', '--listen', '127.0.0.1:0', '--state', join(dir, 'tok', 'state.json'), ...tokenArgs], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, SFC_TOKEN: envToken },
      });
      let stderr = '';
      proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<{ code: number | null; stderr: string }>((r) => proc.once('exit', (code) => r({ code, stderr })));
      const listening = new Promise<string>((r, j) => {
        let out = '';
        proc.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /listening on (\S+)/.exec(out);
          if (m) r(m[1]!);
        });
        void exited.then(() => j(new Error('exited')));
      });
      listening.catch(() => undefined);
      return { proc, exited, listening };
    };
    for (const [args, env, token] of [[['--token-file', file], '', 'from-file'], [[], 'from-env', 'from-env']] as const) {
      const good = run([...args], env);
      const url = await good.listening;
      expect((await fetch(`${url}/v2.0/ports`)).status).toBe(401);
      expect((await fetch(`${url}/v2.0/ports`, { headers: { 'X-Auth-Token': token } })).status).toBe(200);
      good.proc.kill('SIGTERM');
      expect((await good.exited).code).toBe(0);
    }
    chmodSync(file, 0o644);
    const bad = run(['--token-file', file]);
    const { code, stderr } = await bad.exited;
    expect(code).toBe(1);
    expect(stderr).toContain(`token file ${file} has mode 0644`);
  });

  it('the state directory is created 0700; a link planted at the temporary snapshot path is not followed', async () => {
    const stateDir = join(dir, 'private', 'nested');
    const path = join(stateDir, 'state.json');
    const { file } = await StateFile.open(path);
    expect(statSync(stateDir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'private')).mode & 0o777).toBe(0o700);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    await file.close();

    const victim = join(dir, 'victim');
    writeFileSync(victim, 'do not overwrite\n');
    const shared = join(dir, 'shared');
    mkdirSync(shared);
    symlinkSync(victim, join(shared, '.state.json.tmp'));
    const opened = await StateFile.open(join(shared, 'state.json')); // compacts: writes the temporary snapshot
    await opened.file.write({ ...emptyState(), port_pair_groups: [] });
    await opened.file.close();
    expect(readFileSync(victim, 'utf8')).toBe('do not overwrite\n');
    expect(JSON.parse(readFileSync(join(shared, 'state.json'), 'utf8').split('\n')[0]!).sfc_state).toBe(1);
  });
});
