/*
 * Crash safety of the durable state, against the real `sfc serve` process (dist/src/cli.js, built
 * by `npm test`'s pretest): concurrent writers (create / rename / delete), kill -9 at random
 * moments (while serving, and during start-up while the file is being compacted), restart on the
 * same file, and check that every acknowledged change is there and nothing else but the few
 * requests that were in flight. Also: corrupt files stop start-up naming the file, a torn last
 * record is dropped, the lock keeps a second server off, --config seeds only an empty state,
 * SIGTERM exits 0, and a non-loopback listen without a token is refused.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { emptyState, type Port, type State } from '../src/control/model.js';
import { StateFile } from '../src/control/persist.js';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist/src/cli.js');
const dir = mkdtempSync(join(tmpdir(), 'sfct-persist-'));
const children = new Set<ChildProcess>();

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first (npx tsc -p ${ROOT})`);
  for (const f of ['src/commands/serve.ts', 'src/control/persist.ts', 'src/control/api.ts', 'src/control/store.ts']) {
    const built = join(ROOT, 'dist', f.replace(/\.ts$/, '.js'));
    if (!existsSync(built) || statSync(built).mtimeMs < statSync(join(ROOT, f)).mtimeMs) {
      throw new Error(`${built} is older than ${f}: rebuild (npx tsc -p ${ROOT})`);
    }
  }
});

afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

interface Run {
  proc: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

function launch(args: string[]): Run & { listening: Promise<string> } {
  const proc = spawn(process.execPath, [CLI, 'serve', '--driver', 'noop', '--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((res) =>
    proc.once('exit', (code, signal) => {
      children.delete(proc);
      res({ code, signal, stderr });
    }),
  );
  const listening = new Promise<string>((res, rej) => {
    proc.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(stdout);
      if (m) res(m[1]!);
    });
    void exited.then((e) => rej(new Error(`serve exited (${e.code ?? e.signal}) before listening: ${e.stderr}`)));
  });
  listening.catch(() => undefined);
  return { proc, exited, listening };
}

async function serve(args: string[]): Promise<Run & { url: string }> {
  const run = launch(args);
  return { ...run, url: await run.listening };
}

async function kill9(run: Run): Promise<void> {
  run.proc.kill('SIGKILL');
  await run.exited;
}

const hex = (n: number) => (n & 255).toString(16).padStart(2, '0');

/** What the clients know: acknowledged state, plus the at most one unanswered request per writer. */
interface Model {
  names: Map<string, string>; // id → acknowledged name
  deleted: Set<string>;
  inFlight: ({ op: 'create'; name: string } | { op: 'rename'; id: string; name: string } | { op: 'delete'; id: string })[];
}

/** Writer `w` of 3 creates ports and renames/deletes the ones it owns (by id), one request at a time. */
async function writer(url: string, w: number, tag: string, model: Model, stop: { now: boolean; acks: number }): Promise<void> {
  for (let n = 0; !stop.now; n++) {
    const mine = [...model.names.keys()].filter((id) => Number.parseInt(id.slice(0, 2), 16) % 3 === w - 1);
    const r = Math.random();
    const victim = mine[Math.floor(Math.random() * mine.length)];
    const op =
      victim !== undefined && r < 0.15
        ? ({ op: 'delete', id: victim } as const)
        : victim !== undefined && r < 0.35
          ? ({ op: 'rename', id: victim, name: `${tag}-${n}-renamed` } as const)
          : ({ op: 'create', name: `${tag}-${n}` } as const);
    model.inFlight.push(op);
    let res: Response;
    try {
      if (op.op === 'create') {
        const port = { name: op.name, description: 'd'.repeat(200), mac_address: `02:00:${tag.split('-').map((x) => hex(Number(x.slice(1)))).join(':')}:${hex(n >> 8)}:${hex(n)}`, 'binding:profile': { interface: 'sfct-p0' } };
        res = await fetch(`${url}/v2.0/ports`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ port }) });
      } else if (op.op === 'rename') {
        res = await fetch(`${url}/v2.0/ports/${op.id}`, { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ port: { name: op.name } }) });
      } else {
        res = await fetch(`${url}/v2.0/ports/${op.id}`, { method: 'DELETE' });
      }
      const body = res.status === 204 ? undefined : ((await res.json()) as { port?: { id: string } });
      if (!res.ok) throw new Error(`refused ${res.status}: ${JSON.stringify(body)}`);
      model.inFlight.splice(model.inFlight.indexOf(op), 1);
      stop.acks++;
      if (op.op === 'create') model.names.set(body!.port!.id, op.name);
      else if (op.op === 'rename') model.names.set(op.id, op.name);
      else {
        model.names.delete(op.id);
        model.deleted.add(op.id);
      }
    } catch (e) {
      if (stop.now) return; // the server was killed under this request: it stays in flight
      throw e;
    }
  }
}

/** Compare the restarted server with the model; adopt the outcome of in-flight requests. */
async function verify(url: string, model: Model): Promise<void> {
  const { ports } = (await (await fetch(`${url}/v2.0/ports`)).json()) as { ports: { id: string; name: string }[] };
  const onServer = new Map(ports.map((p) => [p.id, p.name]));
  for (const id of model.deleted) expect(onServer.has(id), `acknowledged delete of ${id} lost`).toBe(false);
  for (const [id, name] of model.names) {
    const pendingDelete = model.inFlight.some((f) => f.op === 'delete' && f.id === id);
    const renames = model.inFlight.filter((f) => f.op === 'rename' && f.id === id).map((f) => (f as { name: string }).name);
    if (!onServer.has(id)) {
      expect(pendingDelete, `acknowledged port ${id} (${name}) lost`).toBe(true);
      model.names.delete(id);
      model.deleted.add(id);
      continue;
    }
    expect([name, ...renames], `acknowledged name of ${id} lost`).toContain(onServer.get(id));
    model.names.set(id, onServer.get(id)!);
  }
  for (const [id, name] of onServer) {
    if (model.names.has(id)) continue;
    expect(
      model.inFlight.some((f) => f.op === 'create' && f.name === name),
      `port ${id} (${name}) was never requested`,
    ).toBe(true);
    model.names.set(id, name);
  }
  model.inFlight.length = 0;
}

describe('StateFile (in process)', () => {
  const mkPort = (i: number, name = `p${i}`): Port => ({
    id: `00000000-0000-4000-8000-${i.toString().padStart(12, '0')}`,
    name,
    description: 'x'.repeat(900),
    mac_address: `02:00:00:00:${hex(i >> 8)}:${hex(i)}`,
    'binding:profile': { interface: 'sfct-p0' },
    admin_state_up: true,
    tenant_id: 'sfc',
    project_id: 'sfc',
    status: 'DOWN',
  });
  const lines = (file: string) => readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').length;
  const reload = async (file: string): Promise<State> => {
    const { file: f, state } = await StateFile.open(file);
    await f.close();
    return state;
  };

  it('appends one record per change, compacts on reorder and when the journal grows, reloads exactly', async () => {
    const file = join(dir, 'unit', 'state.json');
    const opened = await StateFile.open(file);
    expect(opened.existed).toBe(false);
    expect(opened.state).toEqual(emptyState());
    const f = opened.file;
    expect(lines(file)).toBe(1);
    let s: State = emptyState();
    const commit = async (next: State) => {
      await f.write(next);
      s = next;
    };
    await commit({ ...s, ports: [mkPort(1), mkPort(2), mkPort(3)] });
    await commit({ ...s, ports: s.ports.map((p) => (p.id === mkPort(2).id ? { ...p, name: 'two' } : p)) });
    await commit({ ...s, ports: s.ports.filter((p) => p.id !== mkPort(1).id) });
    expect(lines(file)).toBe(4);
    await f.write(s); // the same snapshot again: nothing to write
    await commit({ ...s, ports: [...s.ports] }); // equal content, new arrays: nothing either
    expect(lines(file)).toBe(4);
    await commit({ ...s, ports: [s.ports[1]!, s.ports[0]!] }); // a reorder is not a delta
    expect(lines(file)).toBe(1);
    for (let i = 10; i < 400; i++) await commit({ ...s, ports: [...s.ports, mkPort(i)] });
    expect(lines(file)).toBeLessThan(390); // compacted at least once on the way
    await f.close();
    expect(existsSync(`${file}.lock`)).toBe(false);
    const back = await reload(file);
    expect(back).toEqual(s);
    expect(back.ports.slice(0, 2).map((p) => p.name)).toEqual(['p3', 'two']);
  });
});

describe('crash safety (kill -9)', () => {
  it('keeps every acknowledged write across random kills, while serving and during start-up', async () => {
    const state = join(dir, 'crash', 'state.json');
    const model: Model = { names: new Map(), deleted: new Set(), inFlight: [] };
    let acks = 0;
    for (let round = 1; round <= 6; round++) {
      const run = await serve(['--state', state]);
      await verify(run.url, model);
      // kill after a random number of acknowledged writes (and a random sub-request delay), so the
      // kill lands at a random point of the request/persist cycle whatever the machine's speed
      const stop = { now: false, acks: 0 };
      const target = 20 + Math.floor(Math.random() * 60);
      const writers = Promise.all([1, 2, 3].map((w) => writer(run.url, w, `r${round}-w${w}`, model, stop)));
      while (stop.acks < target) await Promise.race([writers, new Promise((r) => setTimeout(r, 1))]);
      await new Promise((r) => setTimeout(r, Math.random() * 5));
      run.proc.kill('SIGKILL');
      stop.now = true;
      await writers;
      acks += stop.acks;
      await run.exited;
      if (round % 2 === 0) {
        // die again while starting: loading + compacting the file
        const early = launch(['--state', state]);
        await new Promise((r) => setTimeout(r, Math.random() * 250));
        await kill9(early);
      }
    }
    const last = await serve(['--state', state]);
    await verify(last.url, model);
    expect(acks).toBeGreaterThanOrEqual(6 * 20);
    expect(model.names.size).toBeGreaterThan(30);
    last.proc.kill('SIGTERM');
    expect((await last.exited).code).toBe(0);
    expect(existsSync(`${state}.lock`)).toBe(false);
  });
});

describe('start-up', () => {
  const snapshot = (ports: unknown[] = []) =>
    JSON.stringify({ sfc_state: 1, seq: 0, state: { ports, port_pairs: [], port_pair_groups: [], flow_classifiers: [], port_chains: [], service_graphs: [] } }) + '\n';
  const port = (id: string, name: string) => ({
    id,
    name,
    description: '',
    mac_address: '02:00:00:00:00:01',
    'binding:profile': { interface: 'sfct-p0' },
    admin_state_up: true,
    tenant_id: 'sfc',
    project_id: 'sfc',
    status: 'DOWN',
  });
  const id1 = '11111111-1111-4111-8111-111111111111';

  it.each([
    ['not JSON', 'this is not a state file\n'],
    ['empty', ''],
    ['a bad record in the middle', snapshot() + '{"seq":1,"put":{"ports":[' + JSON.stringify(port(id1, 'a')) + ']}}\n{garbage\n{"seq":3}\n'],
    ['a gap in the sequence', snapshot() + '{"seq":2,"del":{"ports":["x"]}}\n'],
    ['a wrong shape', '{"sfc_state":1,"seq":0,"state":{"ports":{}}}\n'],
  ])('a corrupt file (%s) stops start-up with a message naming it', async (_what, content) => {
    const file = join(dir, `corrupt-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, content);
    const run = launch(['--state', file]);
    const { code, stderr } = await run.exited;
    expect(code).toBe(1);
    expect(stderr).toContain(file);
    expect(readFileSync(file, 'utf8')).toBe(content);
  });

  it('drops a torn last record (an interrupted, never acknowledged write) and keeps the rest', async () => {
    const file = join(dir, 'torn.json');
    writeFileSync(file, snapshot([port(id1, 'kept')]) + '{"seq":1,"put":{"ports":[{"id":"2222');
    const run = await serve(['--state', file]);
    const { ports } = (await (await fetch(`${run.url}/v2.0/ports`)).json()) as { ports: { name: string }[] };
    expect(ports.map((p) => p.name)).toEqual(['kept']);
    const second = launch(['--state', file]);
    const refused = await second.exited;
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/in use by process/);
    run.proc.kill('SIGTERM');
    expect((await run.exited).code).toBe(0);
  });

  it('--config seeds an empty state only', async () => {
    const config = join(dir, 'seed.yaml');
    writeFileSync(config, 'ports:\n  - name: seeded\n    binding:profile: {interface: sfct-p0}\n');
    const file = join(dir, 'seeded.json');
    const first = await serve(['--state', file, '--config', config]);
    const names = async (url: string) => ((await (await fetch(`${url}/v2.0/ports`)).json()) as { ports: { name: string }[] }).ports.map((p) => p.name);
    expect(await names(first.url)).toEqual(['seeded']);
    await fetch(`${first.url}/v2.0/ports`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ port: { name: 'later', 'binding:profile': { interface: 'sfct-p0' } } }) });
    first.proc.kill('SIGINT');
    expect((await first.exited).code).toBe(0);
    const again = await serve(['--state', file, '--config', config]);
    expect(await names(again.url)).toEqual(['seeded', 'later']);
    again.proc.kill('SIGTERM');
    const { code, stderr } = await again.exited;
    expect(code).toBe(0);
    expect(stderr).toMatch(/--config .*seed\.yaml ignored/);
  });

  it('refuses a non-loopback listen address without a token (usage error)', async () => {
    const proc = spawn(process.execPath, [CLI, 'serve', '--driver', 'noop', '--listen', '0.0.0.0:0', '--state', join(dir, 'x.json')], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SFC_TOKEN: '' },
    });
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((res) => proc.once('exit', res));
    expect(code).toBe(2);
    expect(stderr).toMatch(/refusing to listen on 0\.0\.0\.0 without a token/);
  });

  it('refuses --busy-poll-us that is not a count of µs, with a backend without worker threads or a driver without a dataplane, and --frames-in-place off afxdp (usage errors)', async () => {
    const cases: [string[], RegExp][] = [
      [['--busy-poll-us', '1.5'], /--busy-poll-us must be an integer from 0 to 1000000, got '1\.5'/],
      [['--busy-poll-us', '50', '--backend', 'cap'], /--busy-poll-us needs worker threads; the cap backend/],
      [['--busy-poll-us', '50', '--driver', 'noop'], /--busy-poll-us is for the userspace driver/],
      [['--frames-in-place', '--backend', 'afpacket'], /--frames-in-place is for the userspace driver on --backend afxdp .* --backend afpacket/],
      [['--frames-in-place', '--driver', 'noop'], /--frames-in-place is for the userspace driver on --backend afxdp .* --driver noop/],
    ];
    for (const [args, why] of cases) {
      const proc = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--state', join(dir, 'bp.json'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise<number | null>((res) => proc.once('exit', res));
      expect(code).toBe(2);
      expect(stderr).toMatch(why);
    }
  });
});
