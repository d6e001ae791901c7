/*
 * Crash under load: rounds of kill -9 of `sfc serve` while clients write as fast as they can, each
 * round restarting on the same state file and checking it against what the clients were told.
 * What is killed is a CrashTarget: `sfc serve --driver noop` as a plain child (noopTarget, here),
 * or the userspace driver inside the lab with traffic through its chain (bench/crash-chain.ts),
 * whose own check after each restart (traffic resumed, flows on the same instances) runs while
 * the writers write. Used by test/crash-load.test.ts (a few rounds) and bench/soak.ts (100).
 *
 * Writers (several requests in flight) create port pair groups, rename them and delete them. Every
 * write sets a name and a description derived from it together, so a half-applied write shows as
 * a pair that does not match. After each restart:
 *   - every acknowledged create, rename and delete is there (unless a later in-flight request on
 *     the same object may have changed it);
 *   - every object's (name, description) is one some request sent whole: no write is half there;
 *   - an object nobody acknowledged must be the outcome of a request in flight at the kill.
 * The outcome of in-flight requests is then adopted as the new truth for the next round.
 */
import { kill9, launchServe, type ServeProcess } from './serve-process.js';

const GROUPS = '/v2.0/sfc/port_pair_groups';
const HEADERS = { 'Content-Type': 'application/json' };

/** One API request; status 0 when no answer came (the server is gone). */
export type Api = (method: string, path: string, body?: unknown) => Promise<{ status: number; body: string }>;

/** The server the rounds kill and restart, always on the same state. */
export interface CrashTarget {
  /** Start it; resolves once its API answers. */
  start(): Promise<Api>;
  /** kill -9, and wait for it to be gone. */
  kill(): Promise<void>;
  /** After each (re)start, while the writers write: what else must hold (broken promises, or none). */
  checkRestart?(round: number): Promise<string[]>;
}

/** `sfc serve --driver noop` on `state`, a child of this process. */
export function noopTarget(state: string): CrashTarget {
  let server: ServeProcess | undefined;
  return {
    async start() {
      server = launchServe(['--driver', 'noop', '--listen', '127.0.0.1:0', '--state', state], { ...process.env, SFC_TOKEN: '' });
      const url = await server.listening;
      return async (method, path, body) => {
        try {
          const res = await fetch(url + path, { method, headers: body === undefined ? {} : HEADERS, body: body === undefined ? undefined : JSON.stringify(body) });
          return { status: res.status, body: await res.text() };
        } catch {
          return { status: 0, body: '' };
        }
      };
    },
    kill: () => (server ? kill9(server) : Promise.resolve()),
  };
}

/** The description a write sends with `name`: a half-applied write would not match it. */
const describe = (name: string) => `d:${name}:${name.length}`;

type Write = { op: 'create'; name: string } | { op: 'rename'; id: string; name: string } | { op: 'delete'; id: string };

/** What the clients know: the acknowledged name of each object, and requests not yet answered. */
interface Truth {
  /** Groups there before the first write (a seeding config's, in a chain): never touched, must stay. */
  seeded: Map<string, string> | undefined;
  names: Map<string, string>;
  deleted: Set<string>;
  inFlight: Set<Write>;
}

export interface CrashRoundsOptions {
  rounds: number;
  target: CrashTarget;
  /** Requests in flight (default 8). */
  writers?: number;
  /** Kill after this many acknowledged writes, drawn per round from [min, max) (default 20..120). */
  acksBeforeKill?: [number, number];
  onRound?: (round: number, acked: number) => void;
}

export interface CrashRoundsResult {
  rounds: number;
  acknowledged: number;
  /** Requests unanswered when the server died: how many turned out applied, and not. */
  inFlightApplied: number;
  inFlightLost: number;
  objects: number;
  /** Every broken promise found (empty = all good). */
  violations: string[];
  restartMs: { p50: number; max: number };
}

/** Send a write; undefined when no answer came. */
async function send(api: Api, w: Write): Promise<{ status: number; body: any } | undefined> {
  const path = w.op === 'create' ? GROUPS : `${GROUPS}/${w.id}`;
  const body = w.op === 'delete' ? undefined : { port_pair_group: { name: w.name, description: describe(w.name) } };
  const res = await api(w.op === 'create' ? 'POST' : w.op === 'rename' ? 'PUT' : 'DELETE', path, body);
  if (res.status === 0) return undefined;
  return { status: res.status, body: res.body === '' ? undefined : JSON.parse(res.body) };
}

/** One writer: as fast as it can until the server dies under it. */
/** Acknowledged writes in a round, and who waits for the kill threshold. */
interface Acks {
  acked: number;
  killAt: number;
  reached: () => void;
}

async function writer(api: Api, tag: string, truth: Truth, counts: Acks, violations: string[]): Promise<void> {
  for (let n = 0; ; n++) {
    const mine = [...truth.names.keys()].filter((id) => ![...truth.inFlight].some((f) => f.op !== 'create' && f.id === id));
    const r = Math.random();
    const victim = mine[Math.floor(Math.random() * mine.length)];
    const w: Write =
      victim !== undefined && r < 0.2 ? { op: 'delete', id: victim } : victim !== undefined && r < 0.45 ? { op: 'rename', id: victim, name: `${tag}-${n}-r` } : { op: 'create', name: `${tag}-${n}` };
    truth.inFlight.add(w);
    const answer = await send(api, w);
    if (!answer) return; // the server died: w stays in flight
    truth.inFlight.delete(w);
    if (answer.status >= 300) {
      violations.push(`${w.op} refused ${answer.status}: ${JSON.stringify(answer.body)}`);
      return;
    }
    if (++counts.acked === counts.killAt) counts.reached();
    if (w.op === 'create') truth.names.set(answer.body.port_pair_group.id as string, w.name);
    else if (w.op === 'rename') truth.names.set(w.id, w.name);
    else {
      truth.names.delete(w.id);
      truth.deleted.add(w.id);
    }
  }
}

/** Compare the restarted server with the truth; adopt the outcome of the in-flight requests. */
async function check(api: Api, truth: Truth, violations: string[]): Promise<{ applied: number; lost: number }> {
  const res = await api('GET', GROUPS);
  if (res.status !== 200) throw new Error(`GET ${GROUPS} after a restart: ${res.status} ${res.body.slice(0, 200)}`);
  const all = (JSON.parse(res.body) as { port_pair_groups: { id: string; name: string; description: string }[] }).port_pair_groups;
  truth.seeded ??= new Map(all.map((g) => [g.id, g.name]));
  const seeded = truth.seeded;
  for (const [id, name] of seeded) if (!all.some((g) => g.id === id && g.name === name)) violations.push(`seeded group ${id} ('${name}') lost or changed`);
  const groups = all.filter((g) => !seeded.has(g.id));
  const onServer = new Map(groups.map((g) => [g.id, g]));
  const flights = [...truth.inFlight];
  let applied = 0;
  for (const g of groups) {
    if (g.description !== describe(g.name)) violations.push(`group ${g.id}: name '${g.name}' with description '${g.description}': a write half applied`);
  }
  for (const id of truth.deleted) if (onServer.has(id)) violations.push(`acknowledged delete of ${id} undone`);
  for (const [id, name] of truth.names) {
    const g = onServer.get(id);
    const pending = flights.filter((f) => f.op !== 'create' && f.id === id);
    if (!g) {
      if (pending.some((f) => f.op === 'delete')) {
        applied++;
        truth.names.delete(id);
        truth.deleted.add(id);
      } else violations.push(`acknowledged group ${id} ('${name}') lost`);
      continue;
    }
    if (g.name !== name) {
      if (pending.some((f) => f.op === 'rename' && f.name === g.name)) applied++;
      else violations.push(`acknowledged name '${name}' of ${id} lost (found '${g.name}')`);
    }
    truth.names.set(id, g.name);
  }
  for (const g of groups) {
    if (truth.names.has(g.id) || truth.deleted.has(g.id)) continue;
    if (flights.some((f) => f.op === 'create' && f.name === g.name)) applied++;
    else violations.push(`group ${g.id} ('${g.name}') was never requested`);
    truth.names.set(g.id, g.name);
  }
  truth.inFlight.clear();
  return { applied, lost: flights.length - applied };
}

/** Run the rounds; throws only if the server cannot start. */
export async function crashUnderLoad(opts: CrashRoundsOptions): Promise<CrashRoundsResult> {
  const truth: Truth = { seeded: undefined, names: new Map(), deleted: new Set(), inFlight: new Set() };
  const violations: string[] = [];
  const [lo, hi] = opts.acksBeforeKill ?? [20, 120];
  const restarts: number[] = [];
  let acknowledged = 0;
  let inFlightApplied = 0;
  let inFlightLost = 0;
  /** (Re)start, check the store against the truth; returns the API and the target's own check, running. */
  const restart = async (round: number) => {
    const t0 = performance.now();
    const api = await opts.target.start();
    restarts.push(performance.now() - t0);
    const outcome = await check(api, truth, violations);
    inFlightApplied += outcome.applied;
    inFlightLost += outcome.lost;
    const checked = (opts.target.checkRestart?.(round) ?? Promise.resolve([])).then((v) => void violations.push(...v.map((x) => `round ${round}: ${x}`)));
    return { api, checked };
  };
  try {
    for (let round = 1; round <= opts.rounds; round++) {
      const { api, checked } = await restart(round);
      const counts: Acks = { acked: 0, killAt: lo + Math.floor(Math.random() * (hi - lo)), reached: () => {} };
      const enough = new Promise<void>((r) => (counts.reached = r));
      const writers = Promise.all(Array.from({ length: opts.writers ?? 8 }, (_, w) => writer(api, `r${round}w${w}`, truth, counts, violations)));
      // Kill once enough writes were acknowledged and the target's own check is done (or every writer gave up).
      await Promise.race([writers, Promise.all([enough, checked])]);
      await opts.target.kill();
      await Promise.all([writers, checked]);
      acknowledged += counts.acked;
      opts.onRound?.(round, counts.acked);
    }
    await (await restart(opts.rounds + 1)).checked;
  } finally {
    await opts.target.kill();
  }
  const sorted = [...restarts].sort((a, b) => a - b);
  return {
    rounds: opts.rounds,
    acknowledged,
    inFlightApplied,
    inFlightLost,
    objects: truth.names.size,
    violations,
    restartMs: { p50: Math.round(sorted[Math.floor(sorted.length / 2)]!), max: Math.round(sorted.at(-1)!) },
  };
}
