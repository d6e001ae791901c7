/*
 * networking-sfc's API rules as pure functions from (current State, request) to the next State.
 *
 * planCreate / planUpdate / planDelete run the whole reference pipeline for one request (spec
 * Part A: body shape, owner, unknown and read-only attributes, converters and validators, the
 * lookup, then the cross-resource rules in the reference's order) and either throw the
 * NeutronError networking-sfc would answer or return a complete next State. They never mutate
 * their input, so the store can hand the result to the drivers and still keep the old snapshot.
 * The next State shares every list but the changed one with the input (a write costs the size of
 * one collection, and the indexes validate/indexes.ts built for the other lists stay in use).
 * The per-resource rules live in validate/<resource>.ts.
 */
import { randomUUID } from 'node:crypto';
import { conflict } from './errors.js';
import { COLLECTIONS, type Collection, type State } from './model.js';
import type { Resource } from './model.js';
import { isUuid, invalidAttr } from './validate/attrs.js';
import { chainOps } from './validate/chains.js';
import { classifierOps } from './validate/classifiers.js';
import type { CreateOptions, ResourceOps, WriteContext } from './validate/common.js';
import { graphOps } from './validate/graphs.js';
import { groupOps } from './validate/groups.js';
import { findById } from './validate/indexes.js';
import { pairOps } from './validate/pairs.js';
import { portOps } from './validate/ports.js';

export type { CreateOptions, WriteContext };

type Item<C extends Collection> = State[C][number];

const OPS: { [C in Collection]: ResourceOps<Item<C>> } = {
  ports: portOps,
  port_pairs: pairOps,
  port_pair_groups: groupOps,
  flow_classifiers: classifierOps,
  port_chains: chainOps,
  service_graphs: graphOps,
};

function perCollection<V>(value: (coll: Collection) => V): Record<Collection, V> {
  return Object.fromEntries(COLLECTIONS.map((c) => [c, value(c)])) as Record<Collection, V>;
}

/** Attributes a PUT may change, per collection (the attribute maps' `put`). */
export const UPDATABLE = perCollection((c) => OPS[c].updatable);

/**
 * Where a resource refers to others: `one` (an id or null), `list` (ids), `graph` (service graph
 * map: source id → destination ids). `put` marks references a PUT may change.
 */
export interface Reference {
  attr: string;
  to: Collection;
  shape: 'one' | 'list' | 'graph';
  put: boolean;
}

const REFERRING: Record<Collection, readonly Omit<Reference, 'put'>[]> = {
  ports: [],
  port_pairs: [
    { attr: 'ingress', to: 'ports', shape: 'one' },
    { attr: 'egress', to: 'ports', shape: 'one' },
  ],
  port_pair_groups: [{ attr: 'port_pairs', to: 'port_pairs', shape: 'list' }],
  flow_classifiers: [
    { attr: 'logical_source_port', to: 'ports', shape: 'one' },
    { attr: 'logical_destination_port', to: 'ports', shape: 'one' },
  ],
  port_chains: [
    { attr: 'port_pair_groups', to: 'port_pair_groups', shape: 'list' },
    { attr: 'flow_classifiers', to: 'flow_classifiers', shape: 'list' },
  ],
  service_graphs: [{ attr: 'port_chains', to: 'port_chains', shape: 'graph' }],
};

/** The reference attributes of each collection: the config loader, `sfc get` and `sfc apply` share it. */
export const REFERENCES = perCollection(
  (c): readonly Reference[] => REFERRING[c].map((r) => ({ ...r, put: UPDATABLE[c].has(r.attr) })),
);

function opsOf(coll: Collection): ResourceOps<Resource> {
  return OPS[coll] as ResourceOps<Resource>;
}

function newId(state: State, coll: Collection, wanted: string | undefined): string {
  if (wanted === undefined) return randomUUID();
  if (!isUuid(wanted)) throw invalidAttr('id', `'${wanted}' is not a valid UUID`);
  const id = wanted.toLowerCase();
  if (findById(state, coll, id)) throw conflict('Conflict', `Object with id ${id} already exists in ${coll}.`);
  return id;
}

function withList(state: State, coll: Collection, items: Resource[]): State {
  return { ...state, [coll]: items };
}

export function planCreate(
  state: State,
  coll: Collection,
  body: unknown,
  ctx: WriteContext,
  opts: CreateOptions = {},
): { next: State; id: string; created: Resource } {
  const created = opsOf(coll).create(state, body, ctx, newId(state, coll, opts.id), opts);
  const items: Resource[] = [...state[coll], created];
  return { next: withList(state, coll, items), id: created.id, created };
}

export function planUpdate(state: State, coll: Collection, id: string, body: unknown, ctx: WriteContext): State {
  const ops = opsOf(coll);
  const apply = ops.parseUpdate(body);
  const items: readonly Resource[] = state[coll];
  const current = findById(state, coll, id);
  if (!current) throw ops.notFound(id);
  const updated = apply(state, current, ctx);
  return withList(state, coll, items.map((r) => (r === current ? updated : r)));
}

export function planDelete(state: State, coll: Collection, id: string): State {
  const ops = opsOf(coll);
  const items: readonly Resource[] = state[coll];
  const current = findById(state, coll, id);
  if (!current) throw ops.notFound(id);
  ops.checkDelete(state, current);
  return withList(state, coll, items.filter((r) => r !== current));
}
