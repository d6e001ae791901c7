/*
 * Crash under load: rounds of kill -9 of `sfc serve --driver noop` while clients write as fast as
 * they can, each round restarting on the same state file and checking it against what the
 * clients were told. Used by test/crash-load.test.ts (a few rounds) and bench/soak.ts (100).
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

/** The description a write sends with `name`: a half-applied write would not match it. */
const describe = (name: string) => `d:${name}:${name.length}`;

type Write = { op: 'create'; name: string } | { op: 'rename'; id: string; name: string } | { op: 'delete'; id: string };

/** What the clients know: the acknowledged name of each object, and requests not yet answered. */
interface Truth {
  names: Map<string, string>;
  deleted: Set<string>;
  inFlight: Set<Write>;
}

export interface CrashRoundsOptions {
  rounds: number;
  /** The state file every round restarts on. */
  state: string;
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

async function send(url: string, w: Write): Promise<{ status: number; body: any }> {
  const path = w.op === 'create' ? GROUPS : `${GROUPS}/${w.id}`;
  const body = w.op === 'delete' ? undefined : JSON.stringify({ port_pair_group: { name: w.name, description: describe(w.name) } });
  const res = await fetch(url + path, { method: w.op === 'create' ? 'POST' : w.op === 'rename' ? 'PUT' : 'DELETE', headers: body ? HEADERS : {}, body });
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
}

/** One writer: as fast as it can until the server dies under it. */
async function writer(url: string, tag: string, truth: Truth, counts: { acked: number }, violations: string[]): Promise<void> {
  for (let n = 0; ; n++) {
    const mine = [...truth.names.keys()].filter((id) => ![...truth.inFlight].some((f) => f.op !== 'create' && f.id === id));
    const r = Math.random();
    const victim = mine[Math.floor(Math.random() * mine.length)];
    const w: Write =
      victim !== undefined && r < 0.2 ? { op: 'delete', id: victim } : victim !== undefined && r < 0.45 ? { op: 'rename', id: victim, name: `${tag}-${n}-r` } : { op: 'create', name: `${tag}-${n}` };
    truth.inFlight.add(w);
    let answer: { status: number; body: any };
    try {
      answer = await send(url, w);
    } catch {
      return; // the server died: w stays in flight
    }
    truth.inFlight.delete(w);
    if (answer.status >= 300) {
      violations.push(`${w.op} refused ${answer.status}: ${JSON.stringify(answer.body)}`);
      return;
    }
    counts.acked++;
    if (w.op === 'create') truth.names.set(answer.body.port_pair_group.id as string, w.name);
    else if (w.op === 'rename') truth.names.set(w.id, w.name);
    else {
      truth.names.delete(w.id);
      truth.deleted.add(w.id);
    }
  }
}

/** Compare the restarted server with the truth; adopt the outcome of the in-flight requests. */
async function check(url: string, truth: Truth, violations: string[]): Promise<{ applied: number; lost: number }> {
  const res = await fetch(url + GROUPS);
  const groups = ((await res.json()) as { port_pair_groups: { id: string; name: string; description: string }[] }).port_pair_groups;
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
  const truth: Truth = { names: new Map(), deleted: new Set(), inFlight: new Set() };
  const violations: string[] = [];
  const [lo, hi] = opts.acksBeforeKill ?? [20, 120];
  const restarts: number[] = [];
  let acknowledged = 0;
  let inFlightApplied = 0;
  let inFlightLost = 0;
  let server: ServeProcess | undefined;
  const start = async () => {
    const t0 = performance.now();
    server = launchServe(['--driver', 'noop', '--listen', '127.0.0.1:0', '--state', opts.state], { ...process.env, SFC_TOKEN: '' });
    const url = await server.listening;
    restarts.push(performance.now() - t0);
    return url;
  };
  try {
    for (let round = 1; round <= opts.rounds; round++) {
      const url = await start();
      const outcome = await check(url, truth, violations);
      inFlightApplied += outcome.applied;
      inFlightLost += outcome.lost;
      const counts = { acked: 0 };
      const target = lo + Math.floor(Math.random() * (hi - lo));
      const writers = Promise.all(Array.from({ length: opts.writers ?? 8 }, (_, w) => writer(url, `r${round}w${w}`, truth, counts, violations)));
      let done = false;
      void writers.then(() => (done = true));
      while (counts.acked < target && !done) await new Promise((r) => setImmediate(r));
      await kill9(server!);
      await writers;
      acknowledged += counts.acked;
      opts.onRound?.(round, counts.acked);
    }
    const url = await start();
    const outcome = await check(url, truth, violations);
    inFlightApplied += outcome.applied;
    inFlightLost += outcome.lost;
  } finally {
    if (server) await kill9(server);
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
