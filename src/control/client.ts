/*
 * A small client of our own REST API, for `sfc apply/get/delete` and the benches: JSON over
 * fetch (undici keeps connections alive), NeutronError bodies turned into ApiError, and the
 * name-or-id lookup the openstack client does (id first, then a unique name).
 */
import { collectionPath } from './http.js';
import { COLLECTIONS, SINGULAR, type Collection } from './model.js';
import type { Resource } from './model.js';
import { REFERENCES, type Reference } from './validate.js';

export const DEFAULT_URL = 'http://127.0.0.1:9696';

/** A client for `url` (default $SFC_URL, else DEFAULT_URL) with `token` (default $SFC_TOKEN). */
export function connect(url?: string, token?: string, env: NodeJS.ProcessEnv = process.env): SfcClient {
  return new SfcClient(url ?? (env.SFC_URL || DEFAULT_URL), token ?? (env.SFC_TOKEN || undefined));
}

/** `port-pair`, `port_pairs`, `Port-Pair-Groups` ... → the collection (undefined if unknown). */
export function collectionOf(word: string): Collection | undefined {
  const singular = word.toLowerCase().replaceAll('-', '_').replace(/s$/, '');
  return COLLECTIONS.find((c) => SINGULAR[c] === singular);
}

/** Human name of a collection's resource: `port pair group`. */
export const resourceWord = (coll: Collection) => SINGULAR[coll].replaceAll('_', ' ');

/** The reference table is the validator's (re-exported here for the commands). */
export { REFERENCES, type Reference };

/** A copy of `obj` with every reference id passed through `map` (ids → names, file ids → server ids). */
export function mapReferences(
  coll: Collection,
  obj: Record<string, unknown>,
  map: (id: string, to: Collection) => string,
): Record<string, unknown> {
  const out = { ...obj };
  for (const { attr, to, shape } of REFERENCES[coll]) {
    const v = obj[attr];
    if (v === undefined) continue;
    if (shape === 'one') out[attr] = typeof v === 'string' ? map(v, to) : v;
    else if (shape === 'list') out[attr] = (v as string[]).map((id) => map(id, to));
    else {
      const edges = Object.entries(v as Record<string, string[]>);
      out[attr] = Object.fromEntries(edges.map(([src, dsts]) => [map(src, to), dsts.map((d) => map(d, to))]));
    }
  }
  return out;
}

/** A refusal from the server (its NeutronError), or a lookup that found nothing / too much. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export class SfcClient {
  readonly url: string;

  constructor(
    url: string,
    private readonly token?: string,
  ) {
    this.url = url.replace(/\/+$/, '');
  }

  /** One request; a non-2xx answer throws ApiError with the server's message. */
  async request(method: string, path: string, body?: unknown): Promise<unknown> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this.token !== undefined) headers['X-Auth-Token'] = this.token;
    let res: Response;
    try {
      res = await fetch(this.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(`cannot reach the sfc API at ${this.url}: ${cause?.code ?? cause?.message ?? String(e)} (is 'sfc serve' running?)`);
    }
    const text = await res.text();
    const parsed: unknown = text === '' ? undefined : safeJson(text);
    if (res.ok) return parsed;
    const err = (parsed as { NeutronError?: { type?: string; message?: string } } | undefined)?.NeutronError;
    throw new ApiError(res.status, err?.type ?? `HTTP${res.status}`, err?.message ?? (text || res.statusText));
  }

  async list(coll: Collection, query: Record<string, string> = {}): Promise<Resource[]> {
    const qs = new URLSearchParams(query).toString();
    const body = (await this.request('GET', collectionPath(coll) + (qs ? `?${qs}` : ''))) as Record<string, Resource[]>;
    return body[coll] ?? [];
  }

  async create(coll: Collection, attrs: Record<string, unknown>): Promise<Resource> {
    const body = (await this.request('POST', collectionPath(coll), { [SINGULAR[coll]]: attrs })) as Record<string, Resource>;
    return body[SINGULAR[coll]]!;
  }

  async update(coll: Collection, id: string, attrs: Record<string, unknown>): Promise<Resource> {
    const path = `${collectionPath(coll)}/${encodeURIComponent(id)}`;
    const body = (await this.request('PUT', path, { [SINGULAR[coll]]: attrs })) as Record<string, Resource>;
    return body[SINGULAR[coll]]!;
  }

  async remove(coll: Collection, id: string): Promise<void> {
    await this.request('DELETE', `${collectionPath(coll)}/${encodeURIComponent(id)}`);
  }

  /** By id, else by name; none or several → ApiError 404 / 409 (the openstack client's rule). */
  async find(coll: Collection, nameOrId: string): Promise<Resource> {
    const [byId] = await this.list(coll, { id: nameOrId });
    if (byId) return byId;
    const byName = await this.list(coll, { name: nameOrId });
    if (byName.length === 1) return byName[0]!;
    const what = resourceWord(coll);
    if (byName.length === 0) throw new ApiError(404, 'NotFound', `no ${what} with name or id '${nameOrId}'`);
    throw new ApiError(409, 'Conflict', `${byName.length} ${what}s are named '${nameOrId}': use an id`);
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
