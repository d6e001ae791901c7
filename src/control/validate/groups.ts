/*
 * Port pair groups (spec A.4): the interchangeable SF instances of one hop.
 *
 * group_id (the OpenFlow group number) is the lowest unused integer >= 1, derived from the
 * snapshot, so a refused create allocates nothing. A pair belongs to at most one group; all pairs
 * of a group share one correlation (null being a value of its own); a tap group has at most one
 * pair. ppg_n_tuple_mapping values are validated like the flow classifier fields they rewrite, and
 * both sides are always present ({} when unused). Updating port_pairs re-checks all of this and,
 * beyond the reference, the correlation rules of every chain and service graph using the group.
 */
import { badRequest, conflict } from '../errors.js';
import { LB_FIELDS, N_TUPLE_KEYS, type LbField, type NTuple, type PortPairGroup, type State } from '../model.js';
import {
  DESCRIPTION,
  NAME,
  invalidAttr,
  isObject,
  paramsObject,
  parseCreate,
  parseUpdate,
  show,
  toBool,
  toList,
  updatableAttrs,
  uuidListAttr,
  type ResourceSpec,
} from './attrs.js';
import { checkChainCorrelation } from './chains.js';
import { findPair, graphOfChain, groupNotFound, type CreateOptions, type ResourceOps } from './common.js';
import { checkBranches } from './graphs.js';
import { groupsByPair } from './indexes.js';
import { portValue, prefixOrNull } from './classifiers.js';

type GroupInput = Pick<PortPairGroup, 'name' | 'description' | 'port_pairs' | 'port_pair_group_parameters' | 'tap_enabled'>;
type GroupParameters = PortPairGroup['port_pair_group_parameters'];
type Mapping = GroupParameters['ppg_n_tuple_mapping'];

const MAPPING_SIDES = ['ingress_n_tuple', 'egress_n_tuple'] as const;

const invalidMapping = (reason: string) =>
  badRequest(
    'PPGParametersInvalidNTupleMappingParameter',
    `Invalid ppg_n_tuple_mapping: ${reason} (sides: ${MAPPING_SIDES.join(', ')}; keys: ${N_TUPLE_KEYS.join(', ')}).`,
  );

function lbFields(value: unknown, attr: string): LbField[] {
  if (!Array.isArray(value)) throw invalidAttr(attr, `'${show(value)}' is not a list`);
  const illegal = value.filter((f) => !(LB_FIELDS as readonly unknown[]).includes(f));
  if (illegal.length > 0) throw invalidAttr(attr, `Illegal values in a list: ${illegal.map(show).join(', ')}`);
  return value as LbField[];
}

function nTuple(value: unknown, side: string): NTuple {
  if (value === null) return {};
  if (!isObject(value)) throw invalidMapping(`${side} must be a dictionary, not '${show(value)}'`);
  const out: NTuple = {};
  for (const [key, v] of Object.entries(value)) {
    if (!(N_TUPLE_KEYS as readonly string[]).includes(key)) throw invalidMapping(`unknown key '${key}' in ${side}`);
    const k = key as (typeof N_TUPLE_KEYS)[number];
    out[k] = k.endsWith('_ip_prefix') ? prefixOrNull(v, k) : portValue(v);
  }
  return out;
}

function mapping(value: unknown): Mapping {
  if (value === null) return { ingress_n_tuple: {}, egress_n_tuple: {} };
  if (!isObject(value)) throw invalidMapping(`'${show(value)}' is not a dictionary`);
  for (const key of Object.keys(value)) {
    if (!(MAPPING_SIDES as readonly string[]).includes(key)) throw invalidMapping(`unknown side '${key}'`);
  }
  return {
    ingress_n_tuple: nTuple(value.ingress_n_tuple ?? null, 'ingress_n_tuple'),
    egress_n_tuple: nTuple(value.egress_n_tuple ?? null, 'egress_n_tuple'),
  };
}

function groupParameters(value: unknown, attr: string): GroupParameters {
  const p = paramsObject(value, attr, { lb_fields: [], ppg_n_tuple_mapping: null });
  return { lb_fields: lbFields(p.lb_fields, attr), ppg_n_tuple_mapping: mapping(p.ppg_n_tuple_mapping) };
}

const SPEC: ResourceSpec<GroupInput> = {
  attrs: {
    name: NAME,
    description: DESCRIPTION,
    port_pairs: { put: true, default: () => [], convert: (v, attr) => uuidListAttr(toList(v), attr) },
    port_pair_group_parameters: {
      default: () => ({ lb_fields: [], ppg_n_tuple_mapping: { ingress_n_tuple: {}, egress_n_tuple: {} } }),
      convert: groupParameters,
    },
    tap_enabled: { default: () => false, convert: (v) => toBool(v) },
  },
  readOnly: ['id', 'group_id'],
};

/** Create/update rules 1-3 for a group's pair list (the group itself may already hold some). */
function checkPairs(state: State, groupId: string, pairIds: readonly string[], tap: boolean): void {
  const pairs = pairIds.map((id) => findPair(state, id));
  for (const pp of pairs) {
    if (pp.service_function_parameters.correlation !== pairs[0]!.service_function_parameters.correlation) {
      throw badRequest(
        'InconsistentCorrelations',
        `Port pairs ${pairs[0]!.id} and ${pp.id} have different correlations ` +
          `(${show(pairs[0]!.service_function_parameters.correlation)}, ${show(pp.service_function_parameters.correlation)}): ` +
          'the pairs of a group must share one.',
      );
    }
    if (groupsByPair.all(state.port_pair_groups, pp.id).some((g) => g.id !== groupId)) {
      throw conflict('PortPairInUse', `Port Pair ${pp.id} in use.`);
    }
  }
  if (tap && pairs.length > 1) {
    throw badRequest(
      'MultiplePortPairsInTapPPGNotSupported',
      'A tap port pair group holds at most one port pair.',
    );
  }
}

function groupIdFor(state: State, opts: CreateOptions): number {
  const used = new Set(state.port_pair_groups.map((g) => g.group_id));
  if (opts.group_id === undefined) {
    let id = 1;
    while (used.has(id)) id++;
    return id;
  }
  if (!Number.isSafeInteger(opts.group_id) || opts.group_id < 1) {
    throw invalidAttr('group_id', `'${opts.group_id}' is not an integer >= 1`);
  }
  if (used.has(opts.group_id)) throw invalidAttr('group_id', `${opts.group_id} is already used by another group`);
  return opts.group_id;
}

export const groupOps: ResourceOps<PortPairGroup> = {
  notFound: groupNotFound,
  updatable: updatableAttrs(SPEC),

  create(state, body, ctx, id, opts) {
    const input = parseCreate(SPEC, body, ctx.projectId);
    checkPairs(state, id, input.port_pairs, input.tap_enabled);
    const { tenant_id, project_id, ...fields } = input;
    return { id, group_id: groupIdFor(state, opts), ...fields, tenant_id, project_id };
  },

  parseUpdate(body) {
    const patch = parseUpdate(SPEC, body);
    return (state, current) => {
      const group = { ...current, ...patch };
      if (patch.port_pairs === undefined) return group;
      checkPairs(state, group.id, group.port_pairs, group.tap_enabled);
      // frozen: the indexes may cache it (nothing changes it; the store freezes the group later anyway)
      const groups = Object.freeze(state.port_pair_groups.map((g) => (g.id === group.id ? group : g)));
      const next = { ...state, port_pair_groups: groups as PortPairGroup[] };
      for (const pc of next.port_chains.filter((c) => c.port_pair_groups.includes(group.id))) {
        checkChainCorrelation(next, pc);
        const graph = graphOfChain(next, pc.id);
        if (graph) checkBranches(next, graph.port_chains);
      }
      return group;
    };
  },

  checkDelete(state, group) {
    if (state.port_chains.some((pc) => pc.port_pair_groups.includes(group.id))) {
      throw conflict('PortPairGroupInUse', `Port Pair Group ${group.id} in use.`);
    }
  },
};
