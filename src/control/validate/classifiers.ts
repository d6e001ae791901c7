/*
 * Flow classifiers (spec A.5) and the two conflict relations other resources reuse.
 *
 * "basic" conflict (used across chains and among a graph's branches): same ethertype, protocols
 * equal or either wildcard, both prefix pairs overlapping (null overlaps everything), both port
 * ranges overlapping (a missing bound is open). "full" conflict (checked against every existing
 * classifier on create) adds: logical source ports equal or either null, and likewise for the
 * logical destination ports. Classifiers are immutable after creation except name/description.
 * The project classifies at the logical source port, so it is required (400
 * FlowClassifierBadRequest, the OVS flow-classifier driver's precommit refusal).
 */
import { badRequest, conflict, notFound } from '../errors.js';
import type { FlowClassifier } from '../model.js';
import {
  invalidAttr,
  isObject,
  parseCreate,
  parseUpdate,
  show,
  stringOrEmpty,
  updatableAttrs,
  uuidOrNullAttr,
  type ResourceSpec,
} from './attrs.js';
import { classifierNotFound, findPort, type ResourceOps } from './common.js';
import { parsePrefix, type Prefix } from '../../classifier/rule.js';
import { chainsByClassifier } from './indexes.js';

type ClassifierInput = Omit<FlowClassifier, 'id' | 'tenant_id' | 'project_id'>;

const PROTOCOLS = ['tcp', 'udp', 'icmp'] as const;
const ETHERTYPES = ['IPv4', 'IPv6'] as const;

/** networking-sfc normalize_port_value: null or an integer 0..65535 ("100" → 100). */
export function portValue(value: unknown): number | null {
  if (value === null) return null;
  const n =
    typeof value === 'number' ? value : typeof value === 'string' && /^\s*[+-]?\d+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw badRequest('FlowClassifierInvalidPortValue', `Invalid port value ${show(value)}: ports are integers from 0 to 65535.`);
  }
  return n;
}

/**
 * neutron-lib type:subnet_or_none: "<address>/<length>", IPv4 in canonical dotted decimal (the
 * parser is the classifier compiler's), no leading zeros in the length. Host bits may be set
 * ("10.0.0.1/8"); the text is kept as written.
 */
export function prefixOrNull(value: unknown, attr: string): string | null {
  if (value === null) return null;
  if (typeof value !== 'string' || !parsePrefix(value) || !/\/(0|[1-9]\d*)$/.test(value)) {
    throw invalidAttr(attr, `'${show(value)}' is not a valid IP subnet`);
  }
  return value;
}

function ethertype(value: unknown): FlowClassifier['ethertype'] {
  if (value === null) return 'IPv4';
  const found = typeof value === 'string' ? ETHERTYPES.find((e) => e.toLowerCase() === value.toLowerCase()) : undefined;
  if (!found) {
    throw badRequest(
      'FlowClassifierInvalidEthertype',
      `Ethertype ${show(value)} is not supported (use ${ETHERTYPES.join(' or ')}).`,
    );
  }
  return found;
}

function protocol(value: unknown): FlowClassifier['protocol'] {
  if (value === null) return null;
  const found = typeof value === 'string' ? PROTOCOLS.find((p) => p === value.toLowerCase()) : undefined;
  if (!found) {
    throw badRequest(
      'FlowClassifierInvalidProtocol',
      `Protocol ${show(value)} is not supported (use ${PROTOCOLS.join(', ')} or null for any).`,
    );
  }
  return found;
}

function l7Parameters(value: unknown): Record<string, never> {
  if (value === null || (isObject(value) && Object.keys(value).length === 0)) return {};
  const key = isObject(value) ? Object.keys(value)[0] : show(value);
  throw badRequest(
    'FlowClassifierInvalidL7Parameter',
    `l7_parameters supports no keys, got ${key}.`,
  );
}

const port = { default: () => null, convert: (v: unknown) => portValue(v) };
const prefix = { default: () => null, convert: prefixOrNull };
const logicalPort = { default: () => null, convert: uuidOrNullAttr };
const text = { put: true, default: () => '', convert: stringOrEmpty(255) } as const;

const SPEC: ResourceSpec<ClassifierInput> = {
  attrs: {
    name: text,
    description: text,
    ethertype: { default: () => 'IPv4', convert: ethertype },
    protocol: { default: () => null, convert: protocol },
    source_port_range_min: port,
    source_port_range_max: port,
    destination_port_range_min: port,
    destination_port_range_max: port,
    source_ip_prefix: prefix,
    destination_ip_prefix: prefix,
    logical_source_port: logicalPort,
    logical_destination_port: logicalPort,
    l7_parameters: { default: () => ({}), convert: l7Parameters },
  },
  readOnly: ['id'],
};

function checkRange(fc: ClassifierInput, min: number | null, max: number | null): void {
  if (min !== null && max !== null && min > max) {
    throw badRequest(
      'FlowClassifierInvalidPortRange',
      `Port range minimum ${min} is greater than its maximum ${max}.`,
    );
  }
  if ((min !== null || max !== null) && fc.protocol !== 'tcp' && fc.protocol !== 'udp') {
    throw badRequest('FlowClassifierProtocolRequiredWithPorts', 'A port range needs protocol tcp or udp.');
  }
}

function checkFamily(fc: ClassifierInput, text: string | null): void {
  if (text === null) return;
  if (parsePrefix(text)!.ver !== (fc.ethertype === 'IPv4' ? 4 : 6)) {
    throw badRequest(
      'FlowClassifierIpPrefixFormatConflictWithEthertype',
      `Prefix ${text} does not belong to ethertype ${fc.ethertype}.`,
    );
  }
}

type MatchFields = Omit<ClassifierInput, 'name' | 'description' | 'l7_parameters'>;
type Prefixes = { src: Prefix | null; dst: Prefix | null };

/** Parsed prefixes per classifier object: stored classifiers never change, so this never goes stale. */
const PARSED = new WeakMap<MatchFields, Prefixes>();

function prefixesOf(fc: MatchFields): Prefixes {
  let p = PARSED.get(fc);
  if (!p) {
    const parse = (text: string | null) => (text === null ? null : parsePrefix(text)!);
    p = { src: parse(fc.source_ip_prefix), dst: parse(fc.destination_ip_prefix) };
    PARSED.set(fc, p);
  }
  return p;
}

/** Either is null (any), or one contains the other: they agree on the shorter length's bits. */
function prefixOverlap(a: Prefix | null, b: Prefix | null): boolean {
  if (a === null || b === null) return true;
  if (a.ver !== b.ver) return false;
  // maskWords(a) equals maskWords(b) at the shorter length, compared in place (no arrays: the
  // chain rules run this for every classifier pair across chains)
  const len = Math.min(a.len, b.len);
  for (let k = 0; 32 * k < len; k++) {
    const mask = -1 << (32 - Math.min(32, len - 32 * k));
    if ((a.words[k] & mask) !== (b.words[k] & mask)) return false;
  }
  return true;
}

function rangeOverlap(aMin: number | null, aMax: number | null, bMin: number | null, bMax: number | null): boolean {
  if (aMin !== null && bMax !== null && aMin > bMax) return false;
  return !(bMin !== null && aMax !== null && bMin > aMax);
}

const sameOrWild = <T>(a: T | null, b: T | null) => a === null || b === null || a === b;

/** Conflict on the match fields only (logical ports ignored). */
export function basicConflict(a: MatchFields, b: MatchFields): boolean {
  return (
    a.ethertype === b.ethertype &&
    sameOrWild(a.protocol, b.protocol) &&
    prefixOverlap(prefixesOf(a).src, prefixesOf(b).src) &&
    prefixOverlap(prefixesOf(a).dst, prefixesOf(b).dst) &&
    rangeOverlap(a.source_port_range_min, a.source_port_range_max, b.source_port_range_min, b.source_port_range_max) &&
    rangeOverlap(
      a.destination_port_range_min,
      a.destination_port_range_max,
      b.destination_port_range_min,
      b.destination_port_range_max,
    )
  );
}

export function fullConflict(a: MatchFields, b: MatchFields): boolean {
  return (
    sameOrWild(a.logical_source_port, b.logical_source_port) &&
    sameOrWild(a.logical_destination_port, b.logical_destination_port) &&
    basicConflict(a, b)
  );
}

const portMissing = (id: string) => notFound('FlowClassifierPortNotFound', `Logical port ${id} of the Flow Classifier not found.`);

export const classifierOps: ResourceOps<FlowClassifier> = {
  notFound: classifierNotFound,
  updatable: updatableAttrs(SPEC),

  create(state, body, ctx, id) {
    const { tenant_id, project_id, ...fc } = parseCreate(SPEC, body, ctx.projectId);
    checkRange(fc, fc.source_port_range_min, fc.source_port_range_max);
    checkRange(fc, fc.destination_port_range_min, fc.destination_port_range_max);
    checkFamily(fc, fc.source_ip_prefix);
    checkFamily(fc, fc.destination_ip_prefix);
    if (fc.logical_source_port !== null) findPort(state, fc.logical_source_port, portMissing);
    if (fc.logical_destination_port !== null) findPort(state, fc.logical_destination_port, portMissing);
    const rival = state.flow_classifiers.find((e) => fullConflict(fc, e));
    if (rival) {
      throw badRequest(
        'FlowClassifierInConflict',
        `Flow Classifier overlaps Flow Classifier ${rival.id} on every match field and logical port.`,
      );
    }
    if (fc.logical_source_port === null) {
      throw badRequest(
        'FlowClassifierBadRequest',
        'Flow Classifier requires a logical_source_port: traffic is classified where it enters from that port.',
      );
    }
    return { id, ...fc, tenant_id, project_id };
  },

  parseUpdate(body) {
    const patch = parseUpdate(SPEC, body);
    return (_state, current) => ({ ...current, ...patch });
  },

  checkDelete(state, fc) {
    if (chainsByClassifier.first(state.port_chains, fc.id)) {
      throw conflict('FlowClassifierInUse', `Flow Classifier ${fc.id} in use.`);
    }
  },
};
