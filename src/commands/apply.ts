/*
 * `sfc apply -f FILE`: make a running server match a chain file, through the REST API.
 *
 * The file is loaded with the config loader (the API's own rules, names resolved, defaults
 * filled), so a bad file is refused before anything changes. Each file object is matched to a
 * server object by id when the file gives one, else by name within its collection. The plan:
 *
 *   - unmatched server objects are deleted;
 *   - a matched object whose differing attributes are all updatable (the API's own list,
 *     validate.ts UPDATABLE) gets one PUT; one whose
 *     non-updatable attributes differ (a pair's ingress, a classifier's match ...) is replaced
 *     (deleted, then created again). Replacement propagates: an object that refers to a replaced
 *     one through a non-updatable reference is replaced too; a service graph is replaced when one
 *     of its chains changes groups or classifiers (the API refuses that while the chain is in a
 *     graph);
 *   - attributes the server chooses (chain_id, mac_address, project) are compared only when the
 *     file sets them.
 *
 * Execution order keeps every intermediate state valid: delete doomed graphs; detach (PUT the
 * surviving membership lists without what is deleted or moves elsewhere, so a port pair or a
 * classifier can join its new owner); delete in reverse dependency order; then create and update
 * in dependency order (ports → pairs → groups → classifiers → chains → graphs). Each change is
 * printed as it is applied; --dry-run prints the plan only.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { ApiError, REFERENCES, connect, mapReferences, resourceWord, type SfcClient } from '../control/client.js';
import { loadConfig } from '../control/config.js';
import { COLLECTIONS, emptyState, type Collection, type State } from '../control/model.js';
import type { Resource } from '../control/model.js';
import { UPDATABLE } from '../control/validate.js';
import { UsageError, parseOptions, type Command } from '../util/args.js';
import { CLIENT_HELP, CLIENT_OPTIONS } from './get.js';

/** Chosen by the server when omitted: compared (and sent) only when the file sets them. */
const SERVER_CHOSEN = new Set(['chain_id', 'mac_address', 'tenant_id', 'project_id']);
/** Never compared or sent. */
const NOT_COMPARED = new Set(['id', 'status', 'group_id']);

type Obj = Record<string, unknown>;

export type Step =
  | { op: 'create'; coll: Collection; localId: string; name: string; body: Obj }
  | { op: 'update'; coll: Collection; id: string; name: string; body: Obj; changes: string[] }
  | { op: 'delete'; coll: Collection; id: string; name: string; why: string };

/** Stands for the server id of an object that does not exist yet (created during the apply). */
const PENDING = 'pending:';
const pending = (localId: string) => PENDING + localId;

class PlanError extends Error {}

/** Canonical JSON: object keys sorted, so dict attributes compare by content. */
function canon(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x !== null && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1))) : x,
  );
}

const pick = (o: Obj, keys: Iterable<string>): Obj => Object.fromEntries([...keys].map((k) => [k, o[k]]));

/**
 * The steps that turn `server` into `desired`. `given[coll][i]` are the attribute names the file
 * set on desired[coll][i] (same order: the loader keeps the file's order).
 */
export function planApply(desired: State, given: Record<Collection, Set<string>[]>, server: State): Step[] {
  const match = new Map<string, Resource>(); // desired (local) id → server object
  const claimed = new Set<string>();
  for (const coll of COLLECTIONS) {
    const items: readonly Resource[] = desired[coll];
    items.forEach((d, i) => {
      const what = `${coll}[${i}]${d.name ? ` (name '${d.name}')` : ''}`;
      const onServer: readonly Resource[] = server[coll];
      let found: Resource | undefined;
      if (given[coll][i]!.has('id')) {
        found = onServer.find((s) => s.id === d.id);
        if (!found) {
          throw new PlanError(
            `${what}: id ${d.id} is not on the server, and the API cannot create an object with a chosen id (drop the id to create it by name)`,
          );
        }
      } else if (d.name !== '') {
        const named = onServer.filter((s) => s.name === d.name);
        if (named.length > 1) {
          throw new PlanError(`${what}: ${named.length} ${resourceWord(coll)}s on the server are named '${d.name}': give the id`);
        }
        found = named[0];
      } else {
        throw new PlanError(`${what}: needs a name or an id to be matched on the next apply`);
      }
      if (found && claimed.has(found.id)) throw new PlanError(`${what}: matches ${found.id}, already matched by another object of the file`);
      if (found) {
        match.set(d.id, found);
        claimed.add(found.id);
      }
    });
  }

  const replaced = new Map<string, string>(); // server id → why
  const gone = new Set(COLLECTIONS.flatMap((c) => (server[c] as readonly Resource[]).filter((s) => !claimed.has(s.id)).map((s) => s.id)));
  const doomed = (id: string) => gone.has(id) || replaced.has(id);
  const target = (localId: string) => {
    const s = match.get(localId);
    return s && !replaced.has(s.id) ? s.id : pending(localId);
  };
  const finals = new Map<string, { coll: Collection; want: Obj; diffs: string[] }>(); // server id → PUT
  const detach = new Map<string, { coll: Collection; body: Obj }>();
  const serverNames = new Map(COLLECTIONS.flatMap((c) => (server[c] as readonly Resource[]).map((s) => [s.id, s.name] as const)));
  const localNames = new Map(COLLECTIONS.flatMap((c) => (desired[c] as readonly Resource[]).map((d) => [pending(d.id), d.name] as const)));
  const nameOf = (id: string) => serverNames.get(id) || localNames.get(id) || id;

  for (const coll of COLLECTIONS) {
    (desired[coll] as readonly Resource[]).forEach((d, i) => {
      const s = match.get(d.id) as Obj | undefined;
      if (!s) return;
      const keys = given[coll][i]!;
      const want = mapReferences(coll, d as unknown as Obj, target);
      const diffs = Object.keys(want).filter(
        (k) => !NOT_COMPARED.has(k) && (!SERVER_CHOSEN.has(k) || keys.has(k)) && canon(want[k]) !== canon(s[k]),
      );
      const fixed = diffs.filter((k) => !UPDATABLE[coll].has(k));
      const sid = s.id as string;
      if (fixed.length > 0) return void replaced.set(sid, `${fixed.join(', ')} cannot be updated`);
      if (coll === 'service_graphs') {
        const chains = Object.entries(s.port_chains as Record<string, string[]>).flat(2);
        const moving = chains.find((c) => doomed(c) || finals.get(c)?.diffs.some((k) => k !== 'name' && k !== 'description'));
        if (moving) return void replaced.set(sid, `its chain ${nameOf(moving)} changes`);
      }
      if (diffs.length > 0) finals.set(sid, { coll, want, diffs });
      const body = detachBody(coll, s, want);
      if (body === 'replace') return void replaced.set(sid, 'all its port pair groups go away');
      if (body) detach.set(sid, { coll, body });
    });
  }
  const steps: Step[] = [];
  const del = (coll: Collection, id: string) =>
    steps.push({ op: 'delete', coll, id, name: nameOf(id), why: replaced.has(id) ? `replaced: ${replaced.get(id)}` : 'not in the file' });
  for (const s of server.service_graphs) if (doomed(s.id)) del('service_graphs', s.id);
  for (const coll of ['port_chains', 'port_pair_groups'] as const) {
    for (const [id, d] of detach) {
      if (d.coll !== coll || doomed(id)) continue;
      steps.push({ op: 'update', coll, id, name: nameOf(id), body: d.body, changes: describe(d.body, server, id, coll, nameOf) });
    }
  }
  for (const coll of [...COLLECTIONS].reverse()) {
    if (coll === 'service_graphs') continue;
    for (const s of server[coll] as readonly Resource[]) if (doomed(s.id)) del(coll, s.id);
  }
  for (const coll of COLLECTIONS) {
    (desired[coll] as readonly Resource[]).forEach((d, i) => {
      const s = match.get(d.id);
      if (s && !replaced.has(s.id)) return;
      const keys = [...given[coll][i]!].filter((k) => k !== 'id' && k !== 'group_id');
      steps.push({ op: 'create', coll, localId: d.id, name: d.name, body: pick(mapReferences(coll, d as unknown as Obj, target), keys) });
    });
    for (const [id, f] of finals) {
      if (f.coll !== coll || replaced.has(id)) continue;
      const body = pick(f.want, f.diffs);
      const after = detach.get(id)?.body;
      if (after && canon(pick(after, f.diffs)) === canon(body)) continue; // the detach already got there
      steps.push({ op: 'update', coll, id, name: nameOf(id), body, changes: describe(body, server, id, coll, nameOf) });
    }
  }
  return steps;

  /**
   * Phase-one membership for a surviving object: its lists without members that are deleted or
   * leave (pairs and classifiers belong to one owner, so they must be free before they move).
   * 'replace' when a chain would be left without groups.
   */
  function detachBody(coll: Collection, s: Obj, want: Obj): Obj | 'replace' | undefined {
    const body: Obj = {};
    for (const { attr, shape, put } of REFERENCES[coll]) {
      if (!put || shape !== 'list') continue;
      const current = s[attr] as string[];
      const keep =
        attr === 'port_pair_groups' ? current.filter((id) => !doomed(id)) : current.filter((id) => (want[attr] as string[]).includes(id));
      if (keep.length === current.length) continue;
      if (attr === 'port_pair_groups' && keep.length === 0) return 'replace';
      body[attr] = keep;
    }
    return Object.keys(body).length > 0 ? body : undefined;
  }
}

/** `attr: old -> new` for each attribute of an update, references by name. */
function describe(body: Obj, server: State, id: string, coll: Collection, nameOf: (id: string) => string): string[] {
  const current = (server[coll] as readonly Resource[]).find((s) => s.id === id) as unknown as Obj;
  const show = (o: Obj, k: string) => {
    const v = mapReferences(coll, { [k]: o[k] }, nameOf)[k];
    return Array.isArray(v) ? `[${v.join(', ')}]` : typeof v === 'string' ? `'${v}'` : JSON.stringify(v);
  };
  return Object.keys(body).map((k) => `${k}: ${show(current, k)} -> ${show(body, k)}`);
}

function stepLine(step: Step): string {
  const what = `${resourceWord(step.coll)} ${step.name || ('id' in step ? step.id : '(unnamed)')}`;
  if (step.op === 'create') return `create ${what}`;
  if (step.op === 'delete') return `delete ${what} (${step.why})`;
  return `update ${what}: ${step.changes.join('; ')}`;
}

/** Run the steps in order; `created` maps file ids to the ids the server gave. */
async function execute(client: SfcClient, steps: Step[]): Promise<void> {
  const created = new Map<string, string>();
  const resolve = (id: string) => {
    if (!id.startsWith(PENDING)) return id;
    const real = created.get(id.slice(PENDING.length));
    if (real === undefined) throw new Error(`internal: ${id} used before it was created`);
    return real;
  };
  for (const step of steps) {
    console.log(stepLine(step));
    if (step.op === 'create') created.set(step.localId, (await client.create(step.coll, mapReferences(step.coll, step.body, resolve))).id);
    else if (step.op === 'update') await client.update(step.coll, step.id, mapReferences(step.coll, step.body, resolve));
    else await client.remove(step.coll, step.id);
  }
}

/** The validated desired State and, per object, the attribute names the file set. */
async function readDesired(path: string): Promise<{ desired: State; given: Record<Collection, Set<string>[]> }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new PlanError(`${path}: cannot read: ${(e as Error).message}`);
  }
  const desired = await loadConfig(text, path).catch((e: Error) => {
    throw new PlanError(e.message);
  });
  const raw = (parseYaml(text) ?? {}) as Partial<Record<Collection, Obj[]>>;
  const given = Object.fromEntries(COLLECTIONS.map((c) => [c, (raw[c] ?? []).map((o) => new Set(Object.keys(o)))]));
  return { desired, given: given as Record<Collection, Set<string>[]> };
}

async function fetchState(client: SfcClient): Promise<State> {
  const state = emptyState() as unknown as Record<Collection, Resource[]>;
  for (const coll of COLLECTIONS) state[coll] = await client.list(coll);
  return state as unknown as State;
}

export const command: Command = {
  summary: 'make a running server match a chain file (create/update/delete through the API)',
  usage: `-f FILE [--dry-run] [--url URL] [--token T]
  -f, --file FILE     chain file (YAML or JSON, the format of 'sfc serve --config')
  --dry-run           print the changes without applying them
${CLIENT_HELP}`,

  async run(argv) {
    const { values } = parseOptions(argv, { file: { type: 'string', short: 'f' }, 'dry-run': { type: 'boolean' }, ...CLIENT_OPTIONS });
    if (values.file === undefined) throw new UsageError('missing -f FILE');
    const client = connect(values.url, values.token);
    let steps: Step[] = [];
    try {
      const { desired, given } = await readDesired(values.file);
      steps = planApply(desired, given, await fetchState(client));
      if (values['dry-run']) {
        for (const step of steps) console.log(stepLine(step));
        console.log(steps.length === 0 ? 'no changes' : `${steps.length} change(s) planned (dry run: nothing applied)`);
        return 0;
      }
      await execute(client, steps);
      console.log(steps.length === 0 ? 'no changes' : `applied ${steps.length} change(s)`);
      return 0;
    } catch (e) {
      if (!(e instanceof ApiError || e instanceof PlanError)) throw e;
      console.error(`sfc apply: ${e.message}`);
      return 1;
    }
  },
};
