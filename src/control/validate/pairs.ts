/*
 * Port pairs (spec A.3): one SF instance, ingress and egress ports (possibly the same port).
 *
 * service_function_parameters: null or {} give {correlation: null, weight: 1}; a partial object
 * is completed with the defaults (the reference stores it partial and later crashes). weight goes
 * through convert_to_int, so the openstack client's "2" becomes 2. The host/device checks of the
 * reference (PortPairIngressNoHost ...) do not apply: the standalone model has one host.
 */
import { badRequest, conflict, notFound } from '../errors.js';
import type { Correlation, PortPair } from '../model.js';
import {
  DESCRIPTION,
  NAME,
  invalidAttr,
  paramsObject,
  parseCreate,
  parseUpdate,
  show,
  toInt,
  updatableAttrs,
  uuidAttr,
  type ResourceSpec,
} from './attrs.js';
import { findPort, pairNotFound, type ResourceOps } from './common.js';
import { groupsByPair, pairsByIngress } from './indexes.js';

type PairInput = Pick<PortPair, 'name' | 'description' | 'ingress' | 'egress' | 'service_function_parameters'>;
type SfParameters = PortPair['service_function_parameters'];

const CORRELATIONS: readonly Correlation[] = [null, 'mpls', 'nsh'];

function sfParameters(value: unknown, attr: string): SfParameters {
  const p = paramsObject(value, attr, { correlation: null, weight: 1 });
  if (!CORRELATIONS.includes(p.correlation as Correlation)) {
    throw invalidAttr(attr, `'${show(p.correlation)}' is not in [None, 'mpls', 'nsh']`);
  }
  const weight = toInt(p.weight);
  if (weight < 0) throw invalidAttr(attr, `'${weight}' should be non-negative`);
  return { correlation: p.correlation as Correlation, weight };
}

const SPEC: ResourceSpec<PairInput> = {
  attrs: {
    name: NAME,
    description: DESCRIPTION,
    ingress: { required: true, convert: uuidAttr },
    egress: { required: true, convert: uuidAttr },
    service_function_parameters: { default: () => ({ correlation: null, weight: 1 }), convert: sfParameters },
  },
  readOnly: ['id'],
};

const portMissing = (id: string) => notFound('PortPairPortNotFound', `Port ${id} of the Port Pair not found.`);

export const pairOps: ResourceOps<PortPair> = {
  notFound: pairNotFound,
  updatable: updatableAttrs(SPEC),

  create(state, body, ctx, id) {
    const input = parseCreate(SPEC, body, ctx.projectId);
    const twin = pairsByIngress.all(state.port_pairs, input.ingress).find((pp) => pp.egress === input.egress);
    if (twin) {
      throw badRequest(
        'PortPairIngressEgressInUse',
        `Port Pair with ingress port ${input.ingress} and egress port ${input.egress} ` +
          `is already used by another Port Pair ${twin.id}.`,
      );
    }
    findPort(state, input.ingress, portMissing);
    findPort(state, input.egress, portMissing);
    return { id, ...input };
  },

  parseUpdate(body) {
    const patch = parseUpdate(SPEC, body);
    return (_state, current) => ({ ...current, ...patch });
  },

  checkDelete(state, pair) {
    if (groupsByPair.first(state.port_pair_groups, pair.id)) {
      throw conflict('PortPairInUse', `Port Pair ${pair.id} in use.`);
    }
  },
};
