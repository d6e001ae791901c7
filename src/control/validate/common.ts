/*
 * What every resource module of the validator provides, and the lookups they share.
 *
 * A resource module turns a request into the resource it would store, checking it against the
 * current snapshot; it never mutates the snapshot. validate.ts splices the result into a new
 * State. Relations are never stored twice (a pair's group is "the group listing it"), so a
 * write only ever replaces the one resource it targets; lookups go through indexes.ts (hash
 * indexes of the snapshot's lists).
 */
import type { NeutronError } from '../errors.js';
import { notFound } from '../errors.js';
import type { Collection, FlowClassifier, Port, PortChain, PortPair, PortPairGroup, ServiceGraph, State } from '../model.js';
import { findById, graphsByChain } from './indexes.js';

export interface WriteContext {
  projectId: string;
  /** Port status: the bound interface exists and is up. */
  linkUp: (ifname: string) => boolean;
}

/** Extras only the config loader uses, so a file reproduces ids exactly. */
export interface CreateOptions {
  id?: string;
  group_id?: number;
}

export interface ResourceOps<R> {
  /** Neutron's NotFound for this resource. */
  notFound(id: string): NeutronError;
  /** Attributes a PUT may change. */
  updatable: ReadonlySet<string>;
  create(state: State, body: unknown, ctx: WriteContext, id: string, opts: CreateOptions): R;
  /** Steps 1-5 on the PUT body (before the lookup); returns the rest of the update. */
  parseUpdate(body: unknown): (state: State, current: R, ctx: WriteContext) => R;
  /** Refuse the delete while something references the resource. */
  checkDelete(state: State, current: R): void;
}

export const portNotFound = (id: string) => notFound('PortNotFound', `Port ${id} could not be found.`);
export const pairNotFound = (id: string) => notFound('PortPairNotFound', `Port Pair ${id} not found.`);
export const groupNotFound = (id: string) => notFound('PortPairGroupNotFound', `Port Pair Group ${id} not found.`);
export const classifierNotFound = (id: string) =>
  notFound('FlowClassifierNotFound', `Flow Classifier ${id} not found.`);
export const chainNotFound = (id: string) => notFound('PortChainNotFound', `Port Chain ${id} not found.`);
export const graphNotFound = (id: string) => notFound('ServiceGraphNotFound', `Service Graph ${id} not found.`);

function byId<C extends Collection>(s: State, coll: C, id: string, missing: (id: string) => NeutronError): State[C][number] {
  const found = findById(s, coll, id);
  if (!found) throw missing(id);
  return found;
}

export const findPair = (s: State, id: string, missing = pairNotFound): PortPair => byId(s, 'port_pairs', id, missing);
export const findGroup = (s: State, id: string): PortPairGroup => byId(s, 'port_pair_groups', id, groupNotFound);
export const findClassifier = (s: State, id: string): FlowClassifier =>
  byId(s, 'flow_classifiers', id, classifierNotFound);
export const findChain = (s: State, id: string): PortChain => byId(s, 'port_chains', id, chainNotFound);
export const findPort = (s: State, id: string, missing = portNotFound): Port => byId(s, 'ports', id, missing);

/** The graph naming this chain (as source or destination), if any. */
export function graphOfChain(s: State, chainId: string): ServiceGraph | undefined {
  return graphsByChain.first(s.service_graphs, chainId);
}
