/*
 * networking-sfc's API rules as pure functions from (current State, request) to the next State.
 *
 * planCreate / planUpdate / planDelete run the whole reference pipeline for one request (spec
 * Part A: body shape, owner, unknown and read-only attributes, converters and validators, the
 * lookup, then the cross-resource rules in the reference's order) and either throw the
 * NeutronError networking-sfc would answer or return a complete next State. They never mutate
 * their input, so the store can hand the result to the drivers and still keep the old snapshot.
 * The per-resource rules live in validate/<resource>.ts.
 */
import { randomUUID } from 'node:crypto';
import { conflict } from './errors.js';
import type { Collection, State } from './model.js';
import type { Resource } from './store.js';
import { isUuid, invalidAttr } from './validate/attrs.js';
import { chainOps } from './validate/chains.js';
import { classifierOps } from './validate/classifiers.js';
import type { CreateOptions, ResourceOps, WriteContext } from './validate/common.js';
import { graphOps } from './validate/graphs.js';
import { groupOps } from './validate/groups.js';
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

function opsOf(coll: Collection): ResourceOps<Resource> {
  return OPS[coll] as ResourceOps<Resource>;
}

function newId(state: State, coll: Collection, wanted: string | undefined): string {
  if (wanted === undefined) return randomUUID();
  if (!isUuid(wanted)) throw invalidAttr('id', `'${wanted}' is not a valid UUID`);
  const id = wanted.toLowerCase();
  if (state[coll].some((r) => r.id === id)) throw conflict('Conflict', `Object with id ${id} already exists in ${coll}.`);
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
): { next: State; id: string } {
  const created = opsOf(coll).create(state, body, ctx, newId(state, coll, opts.id), opts);
  const items: Resource[] = [...state[coll], created];
  return { next: withList(state, coll, items), id: created.id };
}

export function planUpdate(state: State, coll: Collection, id: string, body: unknown, ctx: WriteContext): State {
  const ops = opsOf(coll);
  const apply = ops.parseUpdate(body);
  const items: readonly Resource[] = state[coll];
  const at = items.findIndex((r) => r.id === id);
  if (at < 0) throw ops.notFound(id);
  const updated = apply(state, items[at]!, ctx);
  return withList(state, coll, items.map((r, i) => (i === at ? updated : r)));
}

export function planDelete(state: State, coll: Collection, id: string): State {
  const ops = opsOf(coll);
  const items: readonly Resource[] = state[coll];
  const current = items.find((r) => r.id === id);
  if (!current) throw ops.notFound(id);
  ops.checkDelete(state, current);
  return withList(state, coll, items.filter((r) => r !== current));
}
