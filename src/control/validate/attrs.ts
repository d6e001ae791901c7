/*
 * Attribute maps: Neutron's generic request processing (networking-sfc spec A.1 steps 1-5),
 * shared by every resource.
 *
 * A resource declares, per attribute, whether POST may or must carry it, whether PUT may change
 * it, its default and one `convert` function (Neutron's converter followed by its validator: it
 * returns the stored value or throws the NeutronError the reference would). parseCreate/parseUpdate
 * then apply the steps in the reference's order, so the same error wins as in networking-sfc:
 * body shape, tenant_id/project_id, unknown attributes, POST/PUT permissions and required
 * attributes (in map order), then conversion of each attribute (in map order).
 *
 * The converters below mirror neutron-lib's (convert_to_int, convert_to_boolean, type:string,
 * type:uuid, type:uuid_list ...) with their error types: converter failures are `InvalidInput`,
 * validator failures `HTTPBadRequest`, both 400.
 */
import { NeutronError, badRequest } from '../errors.js';

export interface AttrSpec<V> {
  /** POST must carry it (no default). */
  required?: true;
  /** PUT may change it. */
  put?: true;
  /** Stored value when POST omits it (ignored when required). */
  default?: () => V;
  convert: (value: unknown, attr: string) => V;
}

export type AttrMap<T> = { [K in keyof T]-?: AttrSpec<T[K]> };

/** A resource's attribute map plus the names that exist but are never writable (id, group_id ...). */
export interface ResourceSpec<T> {
  attrs: AttrMap<T>;
  readOnly: readonly string[];
}

/** The attributes a PUT may change (`put` in the map): one list for the API and `sfc apply`. */
export function updatableAttrs<T>(spec: ResourceSpec<T>): ReadonlySet<string> {
  const attrs = Object.entries(spec.attrs as Record<string, AttrSpec<unknown>>);
  return new Set(attrs.filter(([, attr]) => attr.put).map(([name]) => name));
}

export interface Owner {
  tenant_id: string;
  project_id: string;
}

const OWNER_KEYS = ['tenant_id', 'project_id'] as const;
const NAME_MAX = 255;

export const httpBadRequest = (message: string) => badRequest('HTTPBadRequest', message);

const FIELD = new WeakMap<NeutronError, string>();

/** The attribute a refusal is about, when it is about one (config errors cite it with its line). */
export function fieldOf(e: NeutronError): string | undefined {
  return FIELD.get(e);
}

function tagged(e: NeutronError, attr: string): NeutronError {
  if (!FIELD.has(e)) FIELD.set(e, attr);
  return e;
}

/** A validator failure: `Invalid input for <attr>. Reason: <reason>.` (HTTPBadRequest). */
export const invalidAttr = (attr: string, reason: string) =>
  tagged(httpBadRequest(`Invalid input for ${attr}. Reason: ${reason}.`), attr);

/** A converter failure (neutron-lib InvalidInput). */
export const invalidInput = (reason: string) => badRequest('InvalidInput', `Invalid input for operation: ${reason}.`);

export type Body = Record<string, unknown>;

export function isObject(value: unknown): value is Body {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Python-ish rendering of a value for messages ('abc', None, 3, [..]). */
export function show(value: unknown): string {
  if (value === null || value === undefined) return 'None';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function requireBody(body: unknown): Body {
  if (!isObject(body)) throw httpBadRequest('Body contains invalid data');
  return body;
}

function rejectUnknown(spec: ResourceSpec<object>, body: Body): void {
  const known = new Set<string>([...Object.keys(spec.attrs), ...spec.readOnly, ...OWNER_KEYS]);
  const extra = Object.keys(body).filter((k) => !known.has(k));
  if (extra.length > 0) throw tagged(httpBadRequest(`Unrecognized attribute(s) '${extra.join(', ')}'`), extra[0]!);
}

/** Step 2: tenant_id/project_id, copied from each other, 400 when both differ. */
function ownerOf(body: Body): unknown {
  const tenant = body.tenant_id;
  const project = body.project_id;
  if (tenant !== undefined && project !== undefined && tenant !== project) {
    throw httpBadRequest("'project_id' and 'tenant_id' do not match");
  }
  return project ?? tenant;
}

export function parseCreate<T>(spec: ResourceSpec<T>, raw: unknown, defaultProject: string): T & Owner {
  const body = requireBody(raw);
  const owner = ownerOf(body);
  rejectUnknown(spec, body);
  for (const name of spec.readOnly) {
    if (Object.hasOwn(body, name)) throw tagged(httpBadRequest(`Attribute '${name}' not allowed in POST`), name);
  }
  const attrs = spec.attrs as Record<string, AttrSpec<unknown>>;
  for (const [name, attr] of Object.entries(attrs)) {
    if (attr.required && !Object.hasOwn(body, name)) {
      throw tagged(httpBadRequest(`Required attribute '${name}' is missing`), name);
    }
  }
  const project = owner === undefined ? defaultProject : stringAttr(NAME_MAX)(owner, 'project_id');
  const out: Record<string, unknown> = {};
  for (const [name, attr] of Object.entries(attrs)) {
    out[name] = Object.hasOwn(body, name) ? convert(attr, body[name], name) : attr.default?.();
  }
  return { ...(out as T), tenant_id: project, project_id: project };
}

/** PUT: only the attributes present, converted; anything not updatable is a 400. */
export function parseUpdate<T>(spec: ResourceSpec<T>, raw: unknown): Partial<T> {
  const body = requireBody(raw);
  ownerOf(body);
  rejectUnknown(spec, body);
  const attrs = spec.attrs as Record<string, AttrSpec<unknown>>;
  for (const name of Object.keys(body)) {
    if (!attrs[name]?.put) throw tagged(httpBadRequest(`Cannot update read-only attribute ${name}`), name);
  }
  const out: Record<string, unknown> = {};
  for (const [name, attr] of Object.entries(attrs)) {
    if (Object.hasOwn(body, name)) out[name] = convert(attr, body[name], name);
  }
  return out as Partial<T>;
}

function convert(attr: AttrSpec<unknown>, value: unknown, name: string): unknown {
  try {
    return attr.convert(value, name);
  } catch (e) {
    throw e instanceof NeutronError ? tagged(e, name) : e;
  }
}

// ---- converters / validators -------------------------------------------------------------

/** type:string with a maximum length; null is refused (400). */
export function stringAttr(max: number): (value: unknown, attr: string) => string {
  return (value, attr) => {
    if (typeof value !== 'string') throw invalidAttr(attr, `'${show(value)}' is not a valid string`);
    if (value.length > max) throw invalidAttr(attr, `'${value}' exceeds maximum length of ${max}`);
    return value;
  };
}

/** Flow classifier flavour: null becomes "". */
export function stringOrEmpty(max: number): (value: unknown, attr: string) => string {
  const str = stringAttr(max);
  return (value, attr) => (value === null ? '' : str(value, attr));
}

export const NAME = { put: true, default: () => '', convert: stringAttr(NAME_MAX) } as const;
export const DESCRIPTION = NAME;

/** neutron-lib convert_to_int (stricter on fractions: 2.5 is refused, not truncated). */
export function toInt(value: unknown): number {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
  if (typeof value === 'string' && /^\s*[+-]?\d+\s*$/.test(value)) {
    const n = Number(value.trim());
    if (Number.isSafeInteger(n)) return n;
  }
  throw invalidInput(`'${show(value)}' is not an integer`);
}

/** neutron-lib convert_to_boolean: true/false, "true"/"false"/"1"/"0" (any case), 1/0. */
export function toBool(value: unknown): boolean {
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string') {
    const v = value.toLowerCase();
    if (v === 'true' || v === '1') return true;
    if (v === 'false' || v === '0') return false;
  }
  if (value === 1) return true;
  if (value === 0) return false;
  throw invalidInput(`'${show(value)}' cannot be converted to boolean`);
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID_RE.test(value);
}

/** type:uuid; stored lower-case so references compare exactly. */
export function uuidAttr(value: unknown, attr: string): string {
  if (!isUuid(value)) throw invalidAttr(attr, `'${show(value)}' is not a valid UUID`);
  return value.toLowerCase();
}

export function uuidOrNullAttr(value: unknown, attr: string): string | null {
  return value === null ? null : uuidAttr(value, attr);
}

/** type:uuid_list: a list of UUIDs without duplicates. */
export function uuidListAttr(value: unknown, attr: string): string[] {
  if (!Array.isArray(value)) throw invalidAttr(attr, `'${show(value)}' is not a list`);
  const ids = value.map((v) => {
    if (!isUuid(v)) throw invalidAttr(attr, `'${show(v)}' is not a valid UUID`);
    return v.toLowerCase();
  });
  const dups = ids.filter((id, i) => ids.indexOf(id) !== i);
  if (dups.length > 0) throw invalidAttr(attr, `Duplicate items in the list: '${[...new Set(dups)].join(', ')}'`);
  return ids;
}

/** neutron-lib convert_to_list: null → [], a list stays, a scalar becomes a one-element list. */
export function toList(value: unknown): unknown[] {
  if (value === null || value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

/** A dict parameter object: null or {} → defaults; only known keys; missing keys filled with defaults. */
export function paramsObject<K extends string>(
  value: unknown,
  attr: string,
  defaults: Record<K, unknown>,
  unknownKey: (key: string) => NeutronError = (key) => invalidAttr(attr, `Unrecognized key '${key}'`),
): Record<K, unknown> {
  if (value === null || value === undefined) return { ...defaults };
  if (!isObject(value)) throw invalidAttr(attr, `'${show(value)}' is not a dictionary`);
  for (const key of Object.keys(value)) if (!Object.hasOwn(defaults, key)) throw unknownKey(key);
  return { ...defaults, ...(value as Partial<Record<K, unknown>>) };
}
