/*
 * Service graphs (spec A.7): edges from the end of a source chain into destination chains.
 *
 * A chain belongs to at most one graph. Each branch point must be correlated end to end: the
 * pairs of a source chain's last group and of a destination chain's first group must carry the
 * chain's correlation explicitly (not null), and every chain of the graph shares one correlation.
 * Destination chains ignore their logical source port, so the classifiers of all destinations of
 * one source must not basically conflict. No cycles. The graph is immutable but for
 * name/description; a source listed with no destinations contributes no edge and is dropped (the
 * reference rebuilds the map from its stored edges).
 */
import { badRequest, conflict } from '../errors.js';
import type { PortChain, ServiceGraph, State } from '../model.js';
import {
  DESCRIPTION,
  NAME,
  invalidAttr,
  isObject,
  isUuid,
  parseCreate,
  parseUpdate,
  show,
  updatableAttrs,
  type ResourceSpec,
} from './attrs.js';
import { basicConflict } from './classifiers.js';
import { findChain, findClassifier, findGroup, findPair, graphNotFound, type ResourceOps } from './common.js';
import { chainsOfGraph } from './indexes.js';

type GraphInput = Pick<ServiceGraph, 'name' | 'description' | 'port_chains'>;
type Edges = ServiceGraph['port_chains'];

const invalidUuid = (what: string, value: unknown) =>
  badRequest('InvalidUUID', `'${show(value)}' is not a valid UUID for a ${what} Port Chain.`);

function edges(value: unknown, attr: string): Edges {
  if (value === null) return {};
  if (!isObject(value)) throw invalidAttr(attr, `'${show(value)}' is not a dictionary`);
  const out: Edges = {};
  for (const [src, dsts] of Object.entries(value)) {
    if (!isUuid(src)) throw invalidUuid('source', src);
    if (!Array.isArray(dsts)) throw invalidAttr(attr, `the destinations of ${src} must be a list, not ${show(dsts)}`);
    for (const d of dsts) if (!isUuid(d)) throw invalidUuid('destination', d);
    if (dsts.length > 0) out[src.toLowerCase()] = dsts.map((d: string) => d.toLowerCase());
  }
  return out;
}

const SPEC: ResourceSpec<GraphInput> = {
  attrs: {
    name: NAME,
    description: DESCRIPTION,
    port_chains: { required: true, convert: edges },
  },
  readOnly: ['id'],
};

/** The pairs of the chain's group at `end` carry exactly the chain's correlation. */
function checkBranchEnd(state: State, chain: PortChain, end: 'first' | 'last'): void {
  const groups = chain.port_pair_groups;
  const gid = end === 'first' ? groups[0]! : groups[groups.length - 1]!;
  const want = chain.chain_parameters.correlation;
  for (const ppid of findGroup(state, gid).port_pairs) {
    const has = findPair(state, ppid).service_function_parameters.correlation;
    if (has !== want) {
      throw badRequest(
        'ServiceGraphImpossibleBranching',
        `Port Chain ${chain.id} cannot be a branch ${end === 'first' ? 'destination' : 'source'}: port pair ${ppid} ` +
          `of its ${end} group ${gid} has correlation ${show(has)}, the chain's ${want} is required.`,
      );
    }
  }
}

function checkEncapsulation(chain: PortChain, correlation: string): void {
  if (chain.chain_parameters.correlation !== correlation) {
    throw badRequest(
      'ServiceGraphInconsistentEncapsulation',
      `All Port Chains of a Service Graph need one correlation: Port Chain ${chain.id} uses ` +
        `${chain.chain_parameters.correlation}, the graph ${correlation}.`,
    );
  }
}

/** Destinations of one source must not capture each other's traffic. */
function checkBranchClassifiers(state: State, destinations: readonly PortChain[]): void {
  const fcs = destinations.flatMap((d) => d.flow_classifiers.map((id) => findClassifier(state, id)));
  for (let i = 0; i < fcs.length; i++) {
    for (let j = i + 1; j < fcs.length; j++) {
      if (basicConflict(fcs[i]!, fcs[j]!)) {
        throw badRequest(
          'ServiceGraphFlowClassifierInConflict',
          `Flow Classifiers ${fcs[i]!.id} and ${fcs[j]!.id} of destinations of one branch point overlap: ` +
            'the branch could not tell their traffic apart.',
        );
      }
    }
  }
}

/**
 * Rules 2-4 for every source in turn: chains exist, branch ends correlated, one correlation,
 * no duplicate destination, and (when asked) no classifier conflict among a source's destinations.
 */
export function checkBranches(state: State, map: Edges, withClassifiers = false): void {
  let correlation: string | undefined;
  for (const [srcId, dstIds] of Object.entries(map)) {
    const src = findChain(state, srcId);
    checkBranchEnd(state, src, 'last');
    correlation ??= src.chain_parameters.correlation;
    checkEncapsulation(src, correlation);
    const seen = new Set<string>();
    const dsts = dstIds.map((id) => {
      if (seen.has(id)) {
        throw badRequest(
          'ServiceGraphPortChainInConflict',
          `Port Chain ${id} is listed twice as a destination of Port Chain ${srcId}.`,
        );
      }
      seen.add(id);
      const dst = findChain(state, id);
      checkBranchEnd(state, dst, 'first');
      checkEncapsulation(dst, correlation!);
      return dst;
    });
    if (withClassifiers) checkBranchClassifiers(state, dsts);
  }
}

function checkNoLoop(map: Edges): void {
  const done = new Set<string>();
  const onPath = new Set<string>();
  const visit = (id: string): void => {
    if (onPath.has(id)) {
      throw badRequest('ServiceGraphLoopDetected', `Service Graph has a loop through Port Chain ${id}.`);
    }
    if (done.has(id)) return;
    onPath.add(id);
    for (const next of map[id] ?? []) visit(next);
    onPath.delete(id);
    done.add(id);
  };
  for (const src of Object.keys(map)) visit(src);
}

export const graphOps: ResourceOps<ServiceGraph> = {
  notFound: graphNotFound,
  updatable: updatableAttrs(SPEC),

  create(state, body, ctx, id) {
    const input = parseCreate(SPEC, body, ctx.projectId);
    const named = chainsOfGraph(input);
    const taken = state.service_graphs.flatMap((g) => [...chainsOfGraph(g)].filter((c) => named.has(c)));
    if (taken.length > 0) {
      throw conflict(
        'ServiceGraphInvalidPortChains',
        `Port Chain(s) ${[...new Set(taken)].join(', ')} already belong to a Service Graph.`,
      );
    }
    checkBranches(state, input.port_chains, true);
    checkNoLoop(input.port_chains);
    const { tenant_id, project_id, ...fields } = input;
    return { id, ...fields, tenant_id, project_id };
  },

  parseUpdate(body) {
    const patch = parseUpdate(SPEC, body);
    return (_state, current) => ({ ...current, ...patch });
  },

  checkDelete() {},
};
