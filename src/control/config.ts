/*
 * Config files: a whole chain model in one YAML or JSON file, loaded through the API's own rules.
 *
 * The file has up to six top-level lists named like the collections (ports, port_pairs,
 * port_pair_groups, flow_classifiers, port_chains, service_graphs); objects use networking-sfc
 * attribute names and may carry an explicit `id` (and a group `group_id`) so a file reproduces a
 * state exactly. Wherever an attribute references another resource, the file may use that
 * resource's name instead of its id; names resolve to objects defined earlier in the file, in the
 * list order above. Loading replays every object as a create into a fresh Store, so a file is
 * accepted exactly when the same API calls would be. Every error cites file:line, the object
 * (collection[index] and name) and, when known, the field; rule failures carry the NeutronError
 * type. stateToConfig is the inverse (ids kept, references by name where that is unambiguous).
 *
 * A top-level `health` mapping configures the server, not the model (loadHealthPolicies; sfc serve
 * reads it whenever it starts, --health-policy entries win):
 *   health:
 *     policies: { GROUP: reroute|fail-open|fail-closed, ... }   (a port pair group's name or id)
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Document } from 'yaml';
import { NeutronError } from './errors.js';
import { HEALTH_POLICIES, type HealthPolicy } from './health.js';
import { COLLECTIONS, emptyState, type Collection, type State } from './model.js';
import { Store } from './store.js';
import { REFERENCES } from './validate.js';
import { fieldOf, isObject, isUuid, type Body } from './validate/attrs.js';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export interface LoadOptions {
  /** Owner of objects that carry no project_id (default: the Store's). */
  projectId?: string;
}

/** Singular words for messages ("no port pair named 'x'"). */
const NOUN: Record<Collection, string> = {
  ports: 'port',
  port_pairs: 'port pair',
  port_pair_groups: 'port pair group',
  flow_classifiers: 'flow classifier',
  port_chains: 'port chain',
  service_graphs: 'service graph',
};

type PathStep = string | number;

/** Line numbers of a parsed document by path: a mapping step gives its key's line, a list step its item's. */
class Lines {
  constructor(
    private readonly doc: Document,
    private readonly counter: LineCounter,
  ) {}

  at(path: readonly PathStep[]): number {
    let node: unknown = this.doc.contents;
    let offset = 0;
    for (const step of path) {
      let at: unknown;
      if (isMap(node)) {
        const name = String(step);
        const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === name);
        if (!pair) break;
        at = pair.key;
        node = pair.value;
      } else if (isSeq(node) && typeof step === 'number' && step < node.items.length) {
        at = node = node.items[step];
      } else {
        break;
      }
      const range = (at as { range?: [number, number, number] } | null)?.range;
      if (range) offset = range[0];
    }
    return this.counter.linePos(offset).line;
  }
}

function parseText(text: string, file: string): { data: unknown; lines: Lines } {
  const ext = extname(file).toLowerCase();
  if (ext !== '.yaml' && ext !== '.yml' && ext !== '.json') {
    throw new ConfigError(`${file}: unsupported file type '${ext}' (use .yaml, .yml or .json)`);
  }
  if (ext === '.json') {
    try {
      JSON.parse(text);
    } catch (e) {
      throw new ConfigError(`${file}: invalid JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: false });
  const bad = doc.errors[0];
  if (bad) throw new ConfigError(`${file}:${counter.linePos(bad.pos[0]).line}: ${bad.message}`);
  return { data: doc.toJS() as unknown, lines: new Lines(doc, counter) };
}

async function readConfigText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`${path}: cannot read: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** Load and validate a config file into a State (.yaml/.yml or .json by extension). */
export async function loadConfigFile(path: string, opts: LoadOptions = {}): Promise<State> {
  return loadConfig(await readConfigText(path), path, opts);
}

/** The file's health policies per port pair group (name or id; see the design comment); empty without a `health` key. */
export async function loadHealthPolicies(path: string): Promise<Map<string, HealthPolicy>> {
  return healthPolicies(await readConfigText(path), path);
}

export function healthPolicies(text: string, file: string): Map<string, HealthPolicy> {
  const { data, lines } = parseText(text, file);
  const out = new Map<string, HealthPolicy>();
  if (!isObject(data) || data.health === undefined) return out;
  const health = data.health;
  if (!isObject(health)) throw new ConfigError(`${file}:${lines.at(['health'])}: 'health' must be a mapping (policies)`);
  for (const key of Object.keys(health)) {
    if (key !== 'policies') throw new ConfigError(`${file}:${lines.at(['health', key])}: health: unknown key '${key}' (expected policies)`);
  }
  const policies = health.policies ?? {};
  if (!isObject(policies)) throw new ConfigError(`${file}:${lines.at(['health', 'policies'])}: health.policies must be a mapping of port pair group to policy`);
  for (const [group, policy] of Object.entries(policies)) {
    if (!HEALTH_POLICIES.includes(policy as HealthPolicy)) {
      throw new ConfigError(`${file}:${lines.at(['health', 'policies', group])}: health.policies.${group}: '${String(policy)}' is not one of ${HEALTH_POLICIES.join(', ')}`);
    }
    out.set(group, policy as HealthPolicy);
  }
  return out;
}

/** Same as loadConfigFile for text already read; `file` names it in errors and gives the format. */
export async function loadConfig(text: string, file: string, opts: LoadOptions = {}): Promise<State> {
  const { data, lines } = parseText(text, file);
  if (data === null || data === undefined) return emptyState();
  if (!isObject(data)) throw new ConfigError(`${file}:${lines.at([])}: the top level must be a mapping of collections`);
  for (const key of Object.keys(data)) {
    if (!(COLLECTIONS as readonly string[]).includes(key) && key !== 'health') {
      throw new ConfigError(
        `${file}:${lines.at([key])}: unknown top-level key '${key}' (expected ${COLLECTIONS.join(', ')} or health)`,
      );
    }
  }
  healthPolicies(text, file); // (checked here too, so a bad health section fails the same load)
  const store = new Store({ projectId: opts.projectId });
  for (const coll of COLLECTIONS) {
    const items = data[coll] ?? [];
    if (!Array.isArray(items)) throw new ConfigError(`${file}:${lines.at([coll])}: '${coll}' must be a list`);
    for (let i = 0; i < items.length; i++) await replay(store, coll, i, items[i], file, lines);
  }
  return structuredClone(store.state);
}

async function replay(store: Store, coll: Collection, index: number, raw: unknown, file: string, lines: Lines) {
  const name = isObject(raw) && typeof raw.name === 'string' && raw.name !== '' ? ` (name '${raw.name}')` : '';
  const where = `${coll}[${index}]${name}`;
  const fail = (path: readonly PathStep[], field: string | undefined, message: string): never => {
    const at = field === undefined ? '' : ` field '${field}':`;
    throw new ConfigError(`${file}:${lines.at([coll, index, ...path])}: ${where}:${at} ${message}`);
  };
  if (!isObject(raw)) return fail([], undefined, 'must be a mapping of attributes');
  // id (and a group's group_id) are not API attributes: they become create options
  const { id, ...body } = raw;
  const groupId = coll === 'port_pair_groups' ? body.group_id : undefined;
  if (groupId !== undefined) delete body.group_id;
  if (id !== undefined && typeof id !== 'string') fail(['id'], 'id', 'must be a UUID string');
  if (groupId !== undefined && typeof groupId !== 'number') fail(['group_id'], 'group_id', 'must be an integer');
  for (const { attr: field, to: target, shape } of REFERENCES[coll]) {
    if (!Object.hasOwn(body, field)) continue;
    const resolve = (value: unknown, path: readonly PathStep[]): unknown => {
      const found = resolveRef(store.state, target, value);
      return 'problem' in found ? fail(path, field, found.problem) : found.value;
    };
    const value = body[field];
    if (shape === 'graph' && isObject(value)) {
      body[field] = Object.fromEntries(
        Object.entries(value).map(([src, dsts]) => [
          resolve(src, [field, src]),
          Array.isArray(dsts) ? dsts.map((d, j) => resolve(d, [field, src, j])) : dsts,
        ]),
      );
    } else if (Array.isArray(value)) {
      body[field] = value.map((v, j) => resolve(v, [field, j]));
    } else {
      body[field] = resolve(value, [field]);
    }
  }
  try {
    await store.create(coll, body, {
      ...(id === undefined ? {} : { id: id as string }),
      ...(groupId === undefined ? {} : { group_id: groupId as number }),
    });
  } catch (e) {
    if (!(e instanceof NeutronError)) throw e;
    const field = fieldOf(e);
    fail(field === undefined ? [] : [field], field, `${e.type}: ${e.message}`);
  }
}

/**
 * A reference as written in the file → the id to send. Ids of existing objects win, then unique
 * names. Anything else that is not a name-like string (a UUID, a number, null) is passed on
 * unchanged so the API's own validation reports it.
 */
function resolveRef(state: State, coll: Collection, value: unknown): { value: unknown } | { problem: string } {
  if (typeof value !== 'string') return { value };
  const items: readonly { id: string; name: string }[] = state[coll];
  if (items.some((r) => r.id === value.toLowerCase())) return { value };
  const named = items.filter((r) => r.name === value);
  if (named.length === 1) return { value: named[0]!.id };
  if (named.length > 1) {
    return { problem: `name '${value}' is ambiguous (${named.length} ${NOUN[coll]}s have it), use the id` };
  }
  if (isUuid(value)) return { value };
  return { problem: `no ${NOUN[coll]} named '${value}'` };
}

/** The config form of a State: ids kept, references by name when the name is unique, defaults omitted. */
export function stateToConfig(state: State): Record<string, unknown[]> {
  const label = (coll: Collection, id: string): string => {
    const items: readonly { id: string; name: string }[] = state[coll];
    const target = items.find((r) => r.id === id);
    if (!target || target.name === '') return id;
    const unique = items.filter((r) => r.name === target.name).length === 1;
    return unique && !items.some((r) => r.id === target.name) ? target.name : id;
  };
  const out: Record<string, unknown[]> = {};
  for (const coll of COLLECTIONS) {
    const items = state[coll] as readonly object[] as readonly Body[];
    if (items.length === 0) continue;
    out[coll] = items.map((item) => {
      const obj: Body = {};
      for (const [key, value] of Object.entries(item)) {
        if (value === null || value === '' || key === 'tenant_id' || (coll === 'ports' && key === 'status')) continue;
        const ref = REFERENCES[coll].find((r) => r.attr === key);
        if (!ref) obj[key] = structuredClone(value);
        else if (ref.shape === 'graph') {
          const edges = value as Record<string, string[]>;
          obj[key] = Object.fromEntries(
            Object.entries(edges).map(([src, dsts]) => [label(ref.to, src), dsts.map((d) => label(ref.to, d))]),
          );
        } else if (Array.isArray(value)) obj[key] = value.map((v: string) => label(ref.to, v));
        else obj[key] = label(ref.to, value as string);
      }
      return obj;
    });
  }
  return out;
}
