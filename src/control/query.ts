/*
 * List queries, as Neutron's API layer does them (neutron/api/api_common.py, spec A.1 "List
 * queries"): filters, field selection, sorting and emulated pagination with `<plural>_links`.
 *
 * Filters: `?attr=v`, a repeated key ORs its values. A value is converted the way the attribute
 * is (integers and booleans as neutron-lib converts them, protocol/ethertype/MAC case-insensitive
 * because their converters normalise case), so `protocol=TCP` matches `tcp` and `chain_id=05`
 * matches 5. On list attributes (a group's port_pairs, a chain's groups and classifiers) a filter
 * matches membership. Keys that are not attributes are ignored, as networking-sfc does.
 * Sorting is allowed on scalar attributes, stable (ties keep creation order), null first.
 * Pagination: `limit` (0 = all), `marker` (id of the last item seen; unknown → empty page),
 * `page_reverse`; links repeat the query with the marker moved.
 */
import { badRequest } from './errors.js';
import type { Collection } from './model.js';
import type { Resource } from './model.js';
import { toBool, toInt } from './validate/attrs.js';

const OWNED = ['id', 'name', 'description', 'tenant_id', 'project_id'];

/** Attributes holding one scalar (string, number, boolean or null): filterable and sortable. */
const SCALARS: Record<Collection, ReadonlySet<string>> = {
  ports: new Set([...OWNED, 'mac_address', 'status', 'admin_state_up', 'binding:host_id']),
  port_pairs: new Set([...OWNED, 'ingress', 'egress']),
  port_pair_groups: new Set([...OWNED, 'group_id', 'tap_enabled']),
  flow_classifiers: new Set([
    ...OWNED,
    'ethertype',
    'protocol',
    'source_port_range_min',
    'source_port_range_max',
    'destination_port_range_min',
    'destination_port_range_max',
    'source_ip_prefix',
    'destination_ip_prefix',
    'logical_source_port',
    'logical_destination_port',
  ]),
  port_chains: new Set([...OWNED, 'chain_id']),
  service_graphs: new Set(OWNED),
};

/** List-of-id attributes: a filter matches when the list contains the value. */
const LISTS: Record<Collection, ReadonlySet<string>> = {
  ports: new Set(),
  port_pairs: new Set(),
  port_pair_groups: new Set(['port_pairs']),
  flow_classifiers: new Set(),
  port_chains: new Set(['port_pair_groups', 'flow_classifiers']),
  service_graphs: new Set(),
};

/** Attributes whose converters fold case (UUIDs are stored lower-case too): compare lower-cased. */
const CASE_FOLDED = new Set([
  'protocol',
  'ethertype',
  'mac_address',
  'id',
  'ingress',
  'egress',
  'logical_source_port',
  'logical_destination_port',
  'port_pairs',
  'port_pair_groups',
  'flow_classifiers',
]);

const RESERVED = new Set(['fields', 'sort_key', 'sort_dir', 'limit', 'marker', 'page_reverse']);

type Scalar = string | number | boolean | null;

export interface ListQuery {
  filters: { attr: string; values: string[] }[];
  fields: string[] | null;
  sort: { key: string; desc: boolean }[];
  limit: number;
  marker: string | null;
  pageReverse: boolean;
}

const last = (params: URLSearchParams, key: string): string | null => params.getAll(key).at(-1) ?? null;

/** Parse and check the query string of a list request (400 on a bad sort or page parameter). */
export function parseListQuery(coll: Collection, params: URLSearchParams): ListQuery {
  const filters: ListQuery['filters'] = [];
  for (const attr of new Set(params.keys())) {
    if (RESERVED.has(attr) || !(SCALARS[coll].has(attr) || LISTS[coll].has(attr))) continue;
    filters.push({ attr, values: params.getAll(attr) });
  }
  const keys = params.getAll('sort_key');
  const dirs = params.getAll('sort_dir');
  if (keys.length !== dirs.length) throw badRequest('HTTPBadRequest', 'The number of sort_keys and sort_dirs must be same');
  const sort = keys.map((key, i) => {
    if (!SCALARS[coll].has(key)) throw badRequest('HTTPBadRequest', `${key} is an invalid attribute for sort_keys`);
    const dir = dirs[i];
    if (dir !== 'asc' && dir !== 'desc') {
      throw badRequest('HTTPBadRequest', `${dir} is an invalid value for sort_dirs, valid values are: asc, desc`);
    }
    return { key, desc: dir === 'desc' };
  });
  return {
    filters,
    fields: parseFields(params),
    sort,
    limit: parseLimit(last(params, 'limit')),
    marker: last(params, 'marker'),
    pageReverse: parsePageReverse(last(params, 'page_reverse')),
  };
}

function parseLimit(text: string | null): number {
  if (text === null) return 0;
  const n = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!Number.isSafeInteger(n)) throw badRequest('HTTPBadRequest', `Limit must be an integer 0 or greater and not '${text}'`);
  return n;
}

function parsePageReverse(text: string | null): boolean {
  if (text === null) return false;
  try {
    return toBool(text);
  } catch {
    throw badRequest('HTTPBadRequest', `page_reverse must be a boolean and not '${text}'`);
  }
}

/** A filter value converted like the attribute's stored values (by their runtime type). */
function matcher(attr: string, sample: unknown, values: string[]): (v: unknown) => boolean {
  if (typeof sample === 'number') {
    const wanted = new Set(values.map((v) => convert(attr, v, toInt)));
    return (v) => wanted.has(v as number);
  }
  if (typeof sample === 'boolean') {
    const wanted = new Set(values.map((v) => convert(attr, v, toBool)));
    return (v) => wanted.has(v as boolean);
  }
  const fold = CASE_FOLDED.has(attr);
  const wanted = new Set(fold ? values.map((v) => v.toLowerCase()) : values);
  const hit = (v: unknown) => typeof v === 'string' && wanted.has(fold ? v.toLowerCase() : v);
  return (v) => (Array.isArray(v) ? v.some(hit) : hit(v));
}

function convert<T>(attr: string, value: string, conv: (v: unknown) => T): T {
  try {
    return conv(value);
  } catch {
    throw badRequest('HTTPBadRequest', `Invalid filter value for ${attr}: '${value}'`);
  }
}

/** null < false < true < numbers < strings; strings by code unit (locale-independent). */
function compare(a: Scalar, b: Scalar): number {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  if (typeof a !== typeof b) return rank(a) - rank(b);
  return a < b ? -1 : 1;
}

const rank = (v: Scalar) => (typeof v === 'boolean' ? 0 : typeof v === 'number' ? 1 : 2);

function field(item: Resource, attr: string): unknown {
  return (item as unknown as Record<string, unknown>)[attr];
}

/** Filter and sort (the whole matching list, before pagination). */
export function selectItems(items: readonly Resource[], q: ListQuery): Resource[] {
  let out = [...items];
  for (const { attr, values } of q.filters) {
    const sample = out.map((r) => field(r, attr)).find((v) => v !== null && v !== undefined);
    if (sample === undefined) {
      out = [];
      break;
    }
    const hit = matcher(attr, sample, values);
    out = out.filter((r) => hit(field(r, attr)));
  }
  if (q.sort.length > 0) {
    out.sort((a, b) => {
      for (const { key, desc } of q.sort) {
        const c = compare(field(a, key) as Scalar, field(b, key) as Scalar);
        if (c !== 0) return desc ? -c : c;
      }
      return 0;
    });
  }
  return out;
}

/** Neutron's emulated pagination: the page after (or, reversed, before) the marker. */
export function pageOf(items: readonly Resource[], q: ListQuery): Resource[] {
  if (q.limit === 0) return [...items];
  if (q.marker === null) return q.pageReverse ? items.slice(-q.limit) : items.slice(0, q.limit);
  const at = items.findIndex((r) => r.id === q.marker);
  if (at < 0) return [];
  return q.pageReverse ? items.slice(Math.max(0, at - q.limit), at) : items.slice(at + 1, at + 1 + q.limit);
}

export interface Link {
  rel: 'next' | 'previous';
  href: string;
}

/**
 * `next` unless a short forward page, `previous` unless a short reversed page; each repeats the
 * query with marker = last (next) or first (previous, page_reverse=True) id of the page.
 */
export function pageLinks(page: readonly Resource[], q: ListQuery, base: string, params: URLSearchParams): Link[] {
  if (q.limit === 0) return [];
  const links: Link[] = [];
  const short = page.length < q.limit;
  const href = (marker: string | undefined, reverse: boolean) => {
    const p = new URLSearchParams(params);
    p.delete('marker');
    p.delete('page_reverse');
    if (marker !== undefined) p.set('marker', marker);
    if (reverse) p.set('page_reverse', 'True');
    return `${base}?${p.toString()}`;
  };
  if (!(short && !q.pageReverse)) links.push({ rel: 'next', href: href(page.at(-1)?.id, false) });
  if (!(short && q.pageReverse)) links.push({ rel: 'previous', href: href(page[0]?.id, true) });
  return links;
}

/** `?fields=a&fields=b` (null: all attributes). */
export function parseFields(params: URLSearchParams): string[] | null {
  const fields = params.getAll('fields').filter((f) => f !== '');
  return fields.length > 0 ? fields : null;
}

/** `?fields=`: only the named attributes (unknown names are skipped). */
export function pickFields(item: Resource, fields: string[] | null): Record<string, unknown> {
  if (fields === null) return item as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const f of fields) if (Object.hasOwn(item, f)) out[f] = field(item, f);
  return out;
}
