/*
 * Durability when the disk fails, with faults injected below the process:
 *
 * - test/support/faults/faultfs.c (LD_PRELOAD, built here with cc) holds the state file's writes
 *   in memory until fsync/fdatasync, so whatever was not synced vanishes on kill -9 as in a power
 *   cut: every acknowledged write must still be there (this fails if the fdatasync is removed).
 * - The same shim makes fsync/fdatasync fail with EIO: the write is answered 500, is not visible,
 *   and the dataplane (userspace driver: sfc_table_generation) does not move; a retried POST
 *   creates exactly one object, across a kill -9, even though the failed record sits in the file.
 * - A real tmpfs (mounted here, root) runs out of space: 507 SfcStorageFull, reads keep working,
 *   the file is byte-for-byte unchanged by each refusal with no temporary file left, and writes
 *   work again once space is freed.
 * - In process: a failing persist never reaches a driver, and concurrent writes share one persist.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kill9, launchServe, type ServeProcess } from '../bench/serve-process.js';
import { DriverManager, type Driver } from '../src/control/driver.js';
import { NeutronError } from '../src/control/errors.js';
import type { State } from '../src/control/model.js';
import { Store } from '../src/control/store.js';
import { prerequisites } from './support/prereq.js';

const ROOT = resolve(import.meta.dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'sfct-durable-'));
const running = new Set<ServeProcess>();

const runShim = prerequisites('durability (LD_PRELOAD fault shim)', { commands: ['cc'] });
const runTmpfs = prerequisites('durability (ENOSPC on tmpfs)', { root: true, commands: ['mount', 'umount'] });

let shim = '';
beforeAll(() => {
  if (!runShim) return;
  shim = join(dir, 'faultfs.so');
  execFileSync('cc', ['-shared', '-fPIC', '-O2', '-Wall', '-o', shim, join(ROOT, 'test/support/faults/faultfs.c'), '-ldl']);
});

afterAll(async () => {
  for (const s of running) await kill9(s);
  rmSync(dir, { recursive: true, force: true });
});

interface FaultEnv {
  /** Hold unsynced writes in memory (lost on kill -9). */
  buffer?: boolean;
  /** Directory whose fail-sync file turns fsync/fdatasync into EIO. */
  ctl?: string;
  /** After a failed sync, the held writes stay in the file unsynced (else they are dropped). */
  keepFailed?: boolean;
  log?: string;
}

async function serve(state: string, extra: string[] = [], fault?: FaultEnv): Promise<ServeProcess & { url: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, SFC_TOKEN: '' };
  if (fault) {
    Object.assign(env, {
      LD_PRELOAD: shim,
      UV_USE_IO_URING: '0',
      FAULTFS_PATHS: `${state}:${join(state, '..', `.${state.split('/').pop()}.tmp`)}`,
      FAULTFS_BUFFER: fault.buffer ? '1' : '0',
      ...(fault.ctl ? { FAULTFS_CTL: fault.ctl } : {}),
      ...(fault.keepFailed ? { FAULTFS_FAILED: 'keep' } : {}),
      ...(fault.log ? { FAULTFS_LOG: fault.log } : {}),
    });
  }
  const s = launchServe(['--driver', 'noop', '--listen', '127.0.0.1:0', '--state', state, ...extra], env);
  running.add(s);
  void s.exited.then(() => running.delete(s));
  return { ...s, url: await s.listening };
}

const JSON_HEADERS = { 'Content-Type': 'application/json' };
async function call(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(url + path, { method, headers: body === undefined ? {} : JSON_HEADERS, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
}
const GROUPS = '/v2.0/sfc/port_pair_groups';
const groupNames = async (url: string) => ((await call(url, 'GET', GROUPS)).body.port_pair_groups as { name: string }[]).map((g) => g.name).sort();
const metric = async (url: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(await (await fetch(`${url}/metrics`)).text())?.[1]);

describe.skipIf(!runShim)('fsync on the path (unsynced writes vanish on kill -9)', () => {
  it('every acknowledged create, rename and delete survives kill -9 when unsynced data is lost', async () => {
    const state = join(dir, 'vanish', 'state.json');
    const log = join(dir, 'vanish.log');
    const s = await serve(state, [], { buffer: true, log });
    const acked = new Map<string, string>();
    // 8 writers in flight, so batches of several writes share a record
    await Promise.all(
      Array.from({ length: 8 }, async (_, w) => {
        for (let i = 0; i < 12; i++) {
          const r = await call(s.url, 'POST', GROUPS, { port_pair_group: { name: `w${w}-${i}` } });
          expect(r.status).toBe(201);
          acked.set(r.body.port_pair_group.id, `w${w}-${i}`);
        }
      }),
    );
    const ids = [...acked.keys()];
    for (const id of ids.slice(0, 10)) {
      expect((await call(s.url, 'PUT', `${GROUPS}/${id}`, { port_pair_group: { name: `renamed-${id}` } })).status).toBe(200);
      acked.set(id, `renamed-${id}`);
    }
    for (const id of ids.slice(10, 20)) {
      expect((await call(s.url, 'DELETE', `${GROUPS}/${id}`)).status).toBe(204);
      acked.delete(id);
    }
    await kill9(s);
    const again = await serve(state);
    expect(await groupNames(again.url)).toEqual([...acked.values()].sort());
    await kill9(again);
    const syncs = readFileSync(log, 'utf8').split('\n').filter((l) => l === 'sync ok').length;
    expect(syncs, 'the shim saw the fdatasyncs (else it proved nothing)').toBeGreaterThan(10);
  });
});

describe.skipIf(!runShim)('a failed fdatasync', () => {
  it('is answered 500, is neither visible nor live, and a retried POST creates one object (across kill -9)', async () => {
    const state = join(dir, 'eio', 'state.json');
    const ctl = mkdtempSync(join(dir, 'ctl-'));
    const config = join(dir, 'eio-seed.yaml');
    writeFileSync(config, 'ports:\n  - name: seed\n    binding:profile: {interface: sfct-nowhere0}\n');
    const s = await serve(state, ['--driver', 'userspace', '--config', config], { buffer: true, ctl, keepFailed: true });
    expect((await call(s.url, 'POST', GROUPS, { port_pair_group: { name: 'a' } })).status).toBe(201);
    const generation = await metric(s.url, 'sfc_table_generation');
    const revision = await metric(s.url, 'sfc_state_revision');

    writeFileSync(join(ctl, 'fail-sync'), '');
    const failed = await call(s.url, 'POST', GROUPS, { port_pair_group: { name: 'b' } });
    expect(failed.status).toBe(500);
    expect(failed.body.NeutronError.type).toBe('SfcStateWriteFailed');
    expect(failed.body.NeutronError.message).toMatch(/not applied/);
    expect(await groupNames(s.url)).toEqual(['a']);
    expect(await metric(s.url, 'sfc_table_generation')).toBe(generation);
    expect(await metric(s.url, 'sfc_state_revision')).toBe(revision);
    const a = (await call(s.url, 'GET', GROUPS)).body.port_pair_groups[0];
    const put = await call(s.url, 'PUT', `${GROUPS}/${a.id}`, { port_pair_group: { name: 'a2' } });
    expect(put.status).toBe(500);
    expect((await call(s.url, 'DELETE', `${GROUPS}/${a.id}`)).status).toBe(500);
    expect(await groupNames(s.url)).toEqual(['a']);

    rmSync(join(ctl, 'fail-sync'));
    const retried = await call(s.url, 'POST', GROUPS, { port_pair_group: { name: 'b' } });
    expect(retried.status).toBe(201);
    expect(await groupNames(s.url)).toEqual(['a', 'b']);
    expect(await metric(s.url, 'sfc_table_generation')).toBeGreaterThan(generation);
    await kill9(s);

    const again = await serve(state);
    const groups = (await call(again.url, 'GET', GROUPS)).body.port_pair_groups as { id: string; name: string }[];
    expect(groups.map((g) => g.name).sort()).toEqual(['a', 'b']);
    expect(groups.find((g) => g.name === 'b')!.id).toBe(retried.body.port_pair_group.id);
    await kill9(again);
  });
});

describe.skipIf(!runTmpfs)('ENOSPC (a full tmpfs)', () => {
  const mnt = join(dir, 'tmpfs');
  let mounted = false;
  afterAll(() => {
    if (mounted) execFileSync('umount', ['-l', mnt]);
  });

  it('refuses writes with 507 SfcStorageFull, leaves the file untouched, keeps reads, and recovers once space is free', async () => {
    execFileSync('mkdir', ['-p', mnt]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k,mode=0700', 'tmpfs', mnt]);
    mounted = true;
    const state = join(mnt, 'state.json');
    const s = await serve(state);
    const acked: string[] = [];
    for (let i = 0; i < 5; i++) {
      expect((await call(s.url, 'POST', GROUPS, { port_pair_group: { name: `before-${i}`, description: 'x'.repeat(200) } })).status).toBe(201);
      acked.push(`before-${i}`);
    }
    // fill the file system
    const filler = join(mnt, 'filler');
    const fd = openSync(filler, 'w');
    try {
      for (;;) writeSync(fd, Buffer.alloc(4096, 1));
    } catch (e) {
      expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
    } finally {
      closeSync(fd);
    }
    // the state file's last page may still hold a record or two: write until refused
    let refusal: { status: number; body: any } | undefined;
    for (let i = 0; i < 40 && !refusal; i++) {
      const before = readFileSync(state);
      const r = await call(s.url, 'POST', GROUPS, { port_pair_group: { name: `full-${i}`, description: 'y'.repeat(200) } });
      if (r.status === 201) {
        acked.push(`full-${i}`);
        continue;
      }
      refusal = r;
      expect(readFileSync(state).equals(before), 'a refused write changed the file').toBe(true);
    }
    expect(refusal?.status).toBe(507);
    expect(refusal?.body.NeutronError.type).toBe('SfcStorageFull');
    expect(refusal?.body.NeutronError.message).toMatch(/no space left.*Free space and retry/);
    // still full: refused again (now by the compaction the failed append requires), reads work
    const before = readFileSync(state);
    expect((await call(s.url, 'POST', GROUPS, { port_pair_group: { name: 'still-full' } })).status).toBe(507);
    expect(readFileSync(state).equals(before)).toBe(true);
    expect(readdirSync(mnt).sort()).toEqual(['filler', 'state.json', 'state.json.lock']);
    expect(await groupNames(s.url)).toEqual([...acked].sort());
    expect(readFileSync(state, 'utf8').endsWith('\n')).toBe(true);

    rmSync(filler);
    expect((await call(s.url, 'POST', GROUPS, { port_pair_group: { name: 'after' } })).status).toBe(201);
    acked.push('after');
    await kill9(s);
    const again = await serve(state);
    expect(await groupNames(again.url)).toEqual([...acked].sort());
    await kill9(again);
    expect(existsSync(join(mnt, '.state.json.tmp'))).toBe(false);
  });
});

describe('in process: durable before visible', () => {
  class RecordingDriver implements Driver {
    readonly name = 'recording';
    readonly usesPlan = false;
    applied = 0;
    precommit(): NeutronError[] {
      return [];
    }
    async postcommit(): Promise<void> {
      this.applied++;
    }
  }

  it('a failing persist never reaches the drivers; the retry creates one object', async () => {
    const driver = new RecordingDriver();
    let fail = true;
    const store = new Store({
      linkUp: () => false,
      drivers: new DriverManager([driver]),
      persist: () => {
        if (fail) throw new NeutronError(500, 'SfcStateWriteFailed', 'disk gone');
      },
    });
    await expect(store.create('port_pair_groups', { name: 'g' })).rejects.toThrow('disk gone');
    expect(driver.applied).toBe(0);
    expect(store.list('port_pair_groups')).toEqual([]);
    fail = false;
    await store.create('port_pair_groups', { name: 'g' });
    expect(store.list('port_pair_groups').map((g) => g.name)).toEqual(['g']);
    expect(driver.applied).toBe(1);
  });

  it('concurrent writes are committed in batches: fewer persists than writes, each write validated against its predecessors', async () => {
    const persisted: State[] = [];
    const driver = new RecordingDriver();
    const store = new Store({
      linkUp: () => false,
      drivers: new DriverManager([driver]),
      persist: async (next) => {
        persisted.push(next);
        await new Promise((r) => setImmediate(r));
      },
    });
    const results = await Promise.allSettled([
      ...Array.from({ length: 20 }, (_, i) => store.create('port_pair_groups', { name: `g${i}` })),
      store.create('port_pair_groups', { port_pairs: ['11111111-2222-4333-8444-555555555555'] }), // refused in the middle of a batch
      ...Array.from({ length: 20 }, (_, i) => store.create('port_pair_groups', { name: `h${i}` })),
    ]);
    expect(results.filter((r) => r.status === 'rejected')).toHaveLength(1);
    expect(store.list('port_pair_groups')).toHaveLength(40);
    expect(new Set(store.list('port_pair_groups').map((g) => g.group_id)).size).toBe(40);
    expect(persisted.length).toBeLessThan(10);
    expect(driver.applied).toBe(persisted.length);
    expect(store.revision).toBe(40);
  });
});
