/*
 * Port chains (spec A.6): ordered port pair groups (the hops) plus the classifiers that feed them.
 *
 * Rules in the reference's order: groups exist and no two tap groups are adjacent; no other chain
 * has the identical ordered group list (sharing groups is fine); every pair's correlation is null
 * or the chain's; classifiers exist and belong to no other chain; no classifier basically
 * conflicts with one of another chain (SF-unaware hops re-classify without the source port);
 * chain_id; symmetric chains need a logical_destination_port on every classifier. chain_id is the
 * path id (SPI): explicit or the lowest unused from 1. An MPLS label carries (chain_id << 8) | SI
 * in 20 bits, so mpls chains are limited to chain_id <= 4095. Updates re-check the changed lists
 * and, beyond the reference, the correlation and symmetric rules.
 */
import { badRequest, conflict } from '../errors.js';
import type { PortChain, State } from '../model.js';
import {
  DESCRIPTION,
  NAME,
  invalidAttr,
  paramsObject,
  parseCreate,
  parseUpdate,
  show,
  toBool,
  toInt,
  toList,
  updatableAttrs,
  uuidListAttr,
  type ResourceSpec,
} from './attrs.js';
import { basicConflict } from './classifiers.js';
import { chainNotFound, findClassifier, findGroup, findPair, graphOfChain, type ResourceOps } from './common.js';
import { chainsByClassifier, chainsByGroupList, groupListKey } from './indexes.js';

type ChainInput = Omit<PortChain, 'id' | 'tenant_id' | 'project_id'>;
type ChainParameters = PortChain['chain_parameters'];

const MAX_CHAIN_ID = 65535;
/** Largest chain_id whose (chain_id << 8) | SI fits a 20-bit MPLS label. */
export const MAX_MPLS_CHAIN_ID = 4095;

function chainId(value: unknown, attr: string): number {
  const n = toInt(value);
  if (n < 0 || n > MAX_CHAIN_ID) throw invalidAttr(attr, `'${n}' is not in range 0 through ${MAX_CHAIN_ID}`);
  return n;
}

function groupList(value: unknown, attr: string): string[] {
  const list = toList(value);
  if (list.length === 0) throw badRequest('PortPairGroupNotSpecified', 'A Port Chain needs at least one Port Pair Group.');
  return uuidListAttr(list, attr);
}

function chainParameters(value: unknown, attr: string): ChainParameters {
  const p = paramsObject(value, attr, { correlation: 'mpls', symmetric: false });
  if (p.correlation !== 'mpls' && p.correlation !== 'nsh') {
    throw invalidAttr(attr, `'${show(p.correlation)}' is not in ['mpls', 'nsh']`);
  }
  return { correlation: p.correlation, symmetric: toBool(p.symmetric) };
}

const SPEC: ResourceSpec<ChainInput> = {
  attrs: {
    chain_id: { default: () => 0, convert: chainId },
    name: NAME,
    description: DESCRIPTION,
    port_pair_groups: { required: true, put: true, convert: groupList },
    flow_classifiers: { put: true, default: () => [], convert: (v, attr) => uuidListAttr(toList(v), attr) },
    chain_parameters: { default: () => ({ correlation: 'mpls', symmetric: false }), convert: chainParameters },
  },
  readOnly: ['id'],
};

/** Rules 1-2: groups exist, no adjacent taps, no other chain with the same ordered list. */
function checkGroups(state: State, ids: readonly string[], self: string): void {
  let previousTap: string | undefined;
  for (const id of ids) {
    const g = findGroup(state, id);
    if (g.tap_enabled && previousTap) {
      throw badRequest(
        'ConsecutiveTapPPGNotSupported',
        `Consecutive tap port pair groups are not supported (${previousTap}, ${g.id}).`,
      );
    }
    previousTap = g.tap_enabled ? g.id : undefined;
  }
  const twin = chainsByGroupList.all(state.port_chains, groupListKey(ids)).find((pc) => pc.id !== self);
  if (twin) {
    throw conflict(
      'InvalidPortPairGroups',
      `Port Chain ${twin.id} already has exactly this Port Pair Group list (${ids.join(', ')}).`,
    );
  }
}

/** Rule 3: every pair of every group is uncorrelated or uses the chain's correlation. */
export function checkChainCorrelation(
  state: State,
  chain: Pick<PortChain, 'id' | 'port_pair_groups' | 'chain_parameters'>,
): void {
  const want = chain.chain_parameters.correlation;
  for (const gid of chain.port_pair_groups) {
    for (const ppid of findGroup(state, gid).port_pairs) {
      const has = findPair(state, ppid).service_function_parameters.correlation;
      if (has !== null && has !== want) {
        throw badRequest(
          'PortChainInconsistentCorrelations',
          `Port Chain ${chain.id} uses correlation ${want} but includes Port Pair Group ${gid} ` +
            `whose port pair ${ppid} uses ${has}.`,
        );
      }
    }
  }
}

/** Rules 4-5: classifiers exist, are free, and do not basically conflict with other chains'. */
function checkClassifiers(state: State, ids: readonly string[], self: string): void {
  const fcs = ids.map((id) => findClassifier(state, id));
  for (const fc of fcs) {
    if (chainsByClassifier.all(state.port_chains, fc.id).some((pc) => pc.id !== self)) {
      throw conflict('FlowClassifierInUse', `Flow Classifier ${fc.id} in use.`);
    }
  }
  for (const pc of state.port_chains) {
    if (pc.id === self) continue;
    for (const otherId of pc.flow_classifiers) {
      const other = findClassifier(state, otherId);
      const fc = fcs.find((f) => basicConflict(other, f));
      if (fc) {
        throw badRequest(
          'PortChainFlowClassifierInConflict',
          `Flow Classifier ${fc.id} overlaps Flow Classifier ${other.id} of Port Chain ${pc.id}.`,
        );
      }
    }
  }
}

/** Rule 6: explicit chain_id (representable, unused) or the lowest unused one. */
function allocateChainId(state: State, self: string, requested: number, params: ChainParameters): number {
  const limit = params.correlation === 'mpls' ? MAX_MPLS_CHAIN_ID : MAX_CHAIN_ID - 1;
  if (requested > MAX_MPLS_CHAIN_ID && params.correlation === 'mpls') {
    throw badRequest(
      'SfcBadRequest',
      `Chain id ${requested} cannot be used with correlation mpls: the MPLS label carries (chain_id << 8) | service index ` +
        `in 20 bits, so mpls chains need a chain_id of at most ${MAX_MPLS_CHAIN_ID} (use correlation nsh for larger ids).`,
    );
  }
  const used = new Set(state.port_chains.map((pc) => pc.chain_id));
  if (requested !== 0) {
    const holder = state.port_chains.find((pc) => pc.chain_id === requested);
    if (holder) {
      throw badRequest('PortChainChainIdInConflict', `Chain id ${requested} is already used by Port Chain ${holder.id}.`);
    }
    return requested;
  }
  for (let id = 1; id <= limit; id++) if (!used.has(id)) return id;
  throw badRequest('PortChainUnavailableChainId', `No free chain id (1..${limit}) left for Port Chain ${self}.`);
}

/** Rule 7 (OVS driver precommit): the reverse path starts at the logical destination port. */
function checkSymmetric(state: State, chain: Pick<PortChain, 'id' | 'flow_classifiers' | 'chain_parameters'>): void {
  if (!chain.chain_parameters.symmetric) return;
  for (const id of chain.flow_classifiers) {
    if (findClassifier(state, id).logical_destination_port === null) {
      throw badRequest(
        'SfcBadRequest',
        `Symmetric Port Chain ${chain.id} requires a logical_destination_port on Flow Classifier ${id}.`,
      );
    }
  }
}

export const chainOps: ResourceOps<PortChain> = {
  notFound: chainNotFound,
  updatable: updatableAttrs(SPEC),

  create(state, body, ctx, id) {
    const input = parseCreate(SPEC, body, ctx.projectId);
    checkGroups(state, input.port_pair_groups, id);
    const chain: PortChain = { id, ...input };
    checkChainCorrelation(state, chain);
    checkClassifiers(state, chain.flow_classifiers, id);
    chain.chain_id = allocateChainId(state, id, input.chain_id, input.chain_parameters);
    checkSymmetric(state, chain);
    return chain;
  },

  parseUpdate(body) {
    const patch = parseUpdate(SPEC, body);
    return (state, current) => {
      const graph = graphOfChain(state, current.id);
      if (graph && (patch.flow_classifiers !== undefined || patch.port_pair_groups !== undefined)) {
        throw conflict('ServiceGraphPortChainInUse', `Port Chain ${current.id} in use.`);
      }
      const chain = { ...current, ...patch };
      if (patch.flow_classifiers !== undefined) checkClassifiers(state, chain.flow_classifiers, chain.id);
      if (patch.port_pair_groups !== undefined) {
        checkGroups(state, chain.port_pair_groups, chain.id);
        checkChainCorrelation(state, chain);
      }
      if (patch.flow_classifiers !== undefined) checkSymmetric(state, chain);
      return chain;
    };
  },

  checkDelete(state, chain) {
    if (graphOfChain(state, chain.id)) throw conflict('ServiceGraphPortChainInUse', `Port Chain ${chain.id} in use.`);
  },
};
