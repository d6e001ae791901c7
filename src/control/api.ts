/*
 * The REST API: networking-sfc's /v2.0 routes over node:http (no framework), on top of the Store.
 *
 * A request goes: request id → token check (401), or without a token the Host check (400, DNS
 * rebinding) → route (404 unknown path, 405 wrong method) → Content-Type of a POST/PUT (415) →
 * body (413 over 1 MiB, 400 not UTF-8, not JSON or nested too deep) → envelope (400: no body,
 * bulk, missing singular key) → Store, which runs the rest of Neutron's order (quota 409, owner,
 * unknown attributes, create/update rules, converters, lookup 404, cross-resource rules, driver
 * precommit), makes the change durable, and answers with a NeutronError or the stored resource.
 * Lists go through query.ts (filters, fields, sorting, pagination). Besides the collections: GET /
 * (version discovery), /v2.0 (resources), /v2.0/extensions, /healthz and /metrics. Every response
 * carries X-Openstack-Request-Id.
 *
 * The server bounds what one client can hold (ServerLimits): complete headers within 10 s, the
 * whole request within 30 s, an idle keep-alive connection closed after 5 s and any connection
 * silent for 30 s, at most 256 connections. A body is read completely before its write joins the
 * Store's queue, so a slow client holds only its own connection, never the writes of others.
 * Protocol errors node:http catches itself (a malformed request line, header or chunk, a timeout)
 * are answered with a NeutronError body too, then the connection is closed.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { NeutronError, badRequest } from './errors.js';
import {
  API_VERSION,
  authorized,
  collectionPath,
  parseJsonBody,
  readBody,
  requireJsonContent,
  requireLoopbackHost,
  sendError,
  sendJson,
} from './http.js';
import type { Metrics } from './metrics.js';
import { answerExplain, streamCapture, streamTrace, type OperatorSource } from './operator.js';
import { COLLECTIONS, SINGULAR, type Collection } from './model.js';
import { pageLinks, pageOf, parseFields, parseListQuery, pickFields, selectItems } from './query.js';
import type { Resource } from './model.js';
import type { Store } from './store.js';
import { chainNotFound, classifierNotFound, graphNotFound, groupNotFound, pairNotFound, portNotFound } from './validate/common.js';

export interface ApiOptions {
  store: Store;
  /** Required token (X-Auth-Token or Authorization: Bearer); none = open. */
  token?: string;
  metrics?: Metrics;
  /** Live trace and capture, and explain on a driver that answers it (operator.ts: /v2.0/sfc/trace, /v2.0/sfc/capture, /v2.0/sfc/explain). */
  operator?: OperatorSource;
  /** Health of the parts behind the API (GET /v2.0/sfc/health; /healthz answers 503 while not ok). */
  health?: () => HealthReport;
  log?: (message: string) => void;
}

/** What GET /v2.0/sfc/health answers (the sfc-health extension) and /healthz summarises. */
export interface HealthReport {
  ok: boolean;
  /** The parts that are not ok, by name, with what is wrong (e.g. dataplane: workers restarting). */
  degraded: Record<string, unknown>;
  /** Per SF instance (port pair): up or down, why, since when, how often it changed. */
  instances: unknown[];
  /** Anything else worth showing (e.g. the dataplane supervisor's restart count). */
  [part: string]: unknown;
}

/** What one client may hold of the server (startApiServer). */
export interface ServerLimits {
  /** Complete request headers within this (ms). */
  headersTimeoutMs: number;
  /** The whole request, body included, within this (ms). */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this (ms). */
  keepAliveTimeoutMs: number;
  /** A connection with no traffic either way for this long is closed (ms; e.g. a client that stopped reading). */
  idleTimeoutMs: number;
  /** Concurrent connections; more are closed on accept. */
  maxConnections: number;
}

export const DEFAULT_SERVER_LIMITS: Readonly<ServerLimits> = Object.freeze({
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  maxConnections: 256,
});

const NOT_FOUND: Record<Collection, (id: string) => NeutronError> = {
  ports: portNotFound,
  port_pairs: pairNotFound,
  port_pair_groups: groupNotFound,
  flow_classifiers: classifierNotFound,
  port_chains: chainNotFound,
  service_graphs: graphNotFound,
};

const EXTENSIONS = [
  { alias: 'sfc', name: 'Port Chain', description: 'Service Function Chaining: port pairs, port pair groups and port chains.' },
  { alias: 'flow_classifier', name: 'Flow Classifier', description: 'Flow classifiers selecting the traffic that enters a port chain.' },
  { alias: 'service_graph', name: 'Service Graph', description: 'Service graphs branching from the end of one port chain into others.' },
  { alias: 'networking-sfc-tap', name: 'Networking SFC Tap', description: 'Tap-enabled port pair groups (passive service functions).' },
  {
    alias: 'sfc-health',
    name: 'SFC Health',
    description: 'Health of every port pair and of the dataplane (GET /v2.0/sfc/health): down instances leave their group; per group reroute, fail-open or fail-closed when none is left.',
  },
].map((e) => ({ ...e, updated: '2026-01-01T00:00:00-00:00', links: [] }));

/** A resolved path: a collection or one member of it, or a fixed document. */
type Route =
  | { kind: 'collection'; coll: Collection }
  | { kind: 'member'; coll: Collection; id: string }
  | { kind: 'versions' | 'resources' | 'extensions' | 'healthz' | 'health' | 'metrics' | 'trace' | 'capture' | 'explain' }
  | { kind: 'extension'; alias: string };

const COLLECTION_BY_PATH = new Map(COLLECTIONS.map((c) => [collectionPath(c), c]));

function route(rawPath: string): Route | undefined {
  let path: string;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    return undefined; // malformed %-escape: no such resource
  }
  const p = path.length > 1 ? path.replace(/\/$/, '').replace(/\.json$/, '') : path;
  if (p === '/') return { kind: 'versions' };
  if (p === `/${API_VERSION}`) return { kind: 'resources' };
  if (p === `/${API_VERSION}/extensions`) return { kind: 'extensions' };
  if (p === '/healthz') return { kind: 'healthz' };
  if (p === `/${API_VERSION}/sfc/health`) return { kind: 'health' };
  if (p === '/metrics') return { kind: 'metrics' };
  if (p === `/${API_VERSION}/sfc/trace`) return { kind: 'trace' };
  if (p === `/${API_VERSION}/sfc/capture`) return { kind: 'capture' };
  if (p === `/${API_VERSION}/sfc/explain`) return { kind: 'explain' };
  const ext = new RegExp(`^/${API_VERSION}/extensions/([^/]+)$`).exec(p);
  if (ext) return { kind: 'extension', alias: ext[1]! };
  const coll = COLLECTION_BY_PATH.get(p);
  if (coll) return { kind: 'collection', coll };
  const slash = p.lastIndexOf('/');
  const parent = COLLECTION_BY_PATH.get(p.slice(0, slash));
  if (parent && slash < p.length - 1) return { kind: 'member', coll: parent, id: p.slice(slash + 1) };
  return undefined;
}

const INTERNAL_ERROR = new NeutronError(500, 'HTTPInternalServerError', 'Request Failed: internal server error while processing your request.');

const ALLOWED: Record<Route['kind'], string[]> = {
  collection: ['GET', 'POST'],
  member: ['GET', 'PUT', 'DELETE'],
  versions: ['GET'],
  resources: ['GET'],
  extensions: ['GET'],
  extension: ['GET'],
  healthz: ['GET'],
  health: ['GET'],
  metrics: ['GET'],
  trace: ['GET'],
  capture: ['GET'],
  explain: ['GET'],
};

/** The request handler: mount it on any node:http server. */
export function createApiHandler(opts: ApiOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const log = opts.log ?? (() => undefined);
  return (req, res) => {
    res.setHeader('X-Openstack-Request-Id', `req-${randomUUID()}`);
    if (opts.metrics) {
      const metrics = opts.metrics;
      res.once('finish', () => metrics.countRequest(req.method ?? '', res.statusCode));
    }
    handle(opts, req, res).catch((e: unknown) => {
      if (!(e instanceof NeutronError) || e.status >= 500) {
        log(`${req.method} ${req.url}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      }
      const err = e instanceof NeutronError ? e : INTERNAL_ERROR;
      if (res.headersSent || res.destroyed) res.destroy();
      else sendError(res, err);
    });
  };
}

async function handle(opts: ApiOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.headers.host === undefined && req.httpVersionMinor >= 1) throw badRequest('HTTPBadRequest', 'An HTTP/1.1 request must carry a Host header.');
  if (!authorized(req, opts.token)) {
    throw new NeutronError(401, 'HTTPUnauthorized', 'Authentication required: send X-Auth-Token or Authorization: Bearer.');
  }
  if (opts.token === undefined) requireLoopbackHost(req);
  const url = new URL(req.url ?? '/', 'http://placeholder');
  const r = route(url.pathname);
  if (!r) throw new NeutronError(404, 'HTTPNotFound', 'The resource could not be found.');
  const method = req.method ?? 'GET';
  if (!ALLOWED[r.kind].includes(method)) {
    res.setHeader('Allow', ALLOWED[r.kind].join(', '));
    throw new NeutronError(405, 'HTTPMethodNotAllowed', `The method ${method} is not allowed for this resource.`);
  }
  if (method === 'POST' || method === 'PUT') requireJsonContent(req);
  const base = `http://${req.headers.host ?? 'localhost'}`;
  const { store } = opts;
  switch (r.kind) {
    case 'versions':
      return sendJson(res, 200, { versions: [{ id: API_VERSION, status: 'CURRENT', links: [{ href: `${base}/${API_VERSION}/`, rel: 'self' }] }] });
    case 'resources':
      return sendJson(res, 200, {
        resources: COLLECTIONS.map((c) => ({ name: SINGULAR[c], collection: c, links: [{ href: `${base}${collectionPath(c)}`, rel: 'self' }] })),
      });
    case 'extensions':
      return sendJson(res, 200, { extensions: EXTENSIONS });
    case 'extension': {
      const ext = EXTENSIONS.find((e) => e.alias === r.alias);
      if (!ext) throw new NeutronError(404, 'ExtensionNotFound', `Extension with alias ${r.alias} does not exist`);
      return sendJson(res, 200, { extension: ext });
    }
    case 'healthz': {
      const h = opts.health?.();
      if (h && !h.ok) return sendJson(res, 503, { status: 'degraded', degraded: h.degraded, revision: store.revision });
      return sendJson(res, 200, { status: 'ok', revision: store.revision });
    }
    case 'health': {
      if (!opts.health) throw new NeutronError(404, 'HTTPNotFound', 'Health checks are not enabled.');
      return sendJson(res, 200, { health: opts.health() });
    }
    case 'trace':
    case 'capture': {
      if (!opts.operator) throw new NeutronError(404, 'HTTPNotFound', 'Live trace and capture are not enabled.');
      return (r.kind === 'trace' ? streamTrace : streamCapture)(opts.operator, url, req, res);
    }
    case 'explain': {
      if (!opts.operator) throw new NeutronError(404, 'HTTPNotFound', 'Explain is not enabled.');
      return sendJson(res, 200, { steps: await answerExplain(opts.operator, url) });
    }
    case 'metrics': {
      if (!opts.metrics) throw new NeutronError(404, 'HTTPNotFound', 'Metrics are not enabled.');
      const text = await opts.metrics.registry.metrics();
      res.writeHead(200, { 'Content-Type': opts.metrics.registry.contentType, 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    case 'collection': {
      if (method === 'GET') return sendJson(res, 200, listBody(store, r.coll, url, base));
      const created = await store.create(r.coll, envelope(r.coll, await readBody(req)));
      return sendJson(res, 201, { [SINGULAR[r.coll]]: created });
    }
    case 'member': {
      if (method === 'GET') {
        const item = store.get(r.coll, r.id);
        if (!item) throw NOT_FOUND[r.coll](r.id);
        return sendJson(res, 200, { [SINGULAR[r.coll]]: pickFields(item, parseFields(url.searchParams)) });
      }
      if (method === 'PUT') {
        const updated = await store.update(r.coll, r.id, envelope(r.coll, await readBody(req)));
        return sendJson(res, 200, { [SINGULAR[r.coll]]: updated });
      }
      if ((await readBody(req)).length > 0) throw badRequest('HTTPBadRequest', 'Request body is not supported in DELETE.');
      await store.delete(r.coll, r.id);
      return sendJson(res, 204);
    }
  }
}

function listBody(store: Store, coll: Collection, url: URL, base: string): Record<string, unknown> {
  const q = parseListQuery(coll, url.searchParams);
  const page = pageOf(selectItems(store.list(coll), q), q);
  const body: Record<string, unknown> = { [coll]: page.map((item: Resource) => pickFields(item, q.fields)) };
  const links = pageLinks(page, q, `${base}${url.pathname}`, url.searchParams);
  if (links.length > 0) body[`${coll}_links`] = links;
  return body;
}

/** Step 1 of Neutron's order: valid JSON holding `{"<singular>": {...}}` (no bulk). */
function envelope(coll: Collection, raw: Buffer): unknown {
  if (raw.toString('latin1').trim() === '') throw badRequest('HTTPBadRequest', 'Resource body required');
  const body = parseJsonBody(raw);
  if (typeof body !== 'object' || Array.isArray(body)) throw badRequest('HTTPBadRequest', 'Body contains invalid data');
  if (body === null || Object.keys(body).length === 0) throw badRequest('HTTPBadRequest', 'Resource body required');
  if (Object.hasOwn(body, coll)) throw badRequest('HTTPBadRequest', 'Bulk operation not supported');
  const singular = SINGULAR[coll];
  const inner = (body as Record<string, unknown>)[singular];
  if (inner === undefined || inner === null) throw badRequest('HTTPBadRequest', `Unable to find '${singular}' in request body`);
  if (typeof inner !== 'object' || Array.isArray(inner)) throw badRequest('HTTPBadRequest', `Object '${singular}' contains invalid data`);
  return inner;
}

export interface ApiServer {
  server: Server;
  /** http://host:port of the bound socket. */
  url: string;
  close(): Promise<void>;
}

/**
 * Listen on host:port (0 = any free port) within `limits` (default DEFAULT_SERVER_LIMITS).
 * close() stops accepting and ends idle keep-alive sockets.
 */
export async function startApiServer(opts: ApiOptions & { host: string; port: number; limits?: Partial<ServerLimits> }): Promise<ApiServer> {
  const limits = { ...DEFAULT_SERVER_LIMITS, ...opts.limits };
  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // how often node:http looks for requests past their deadline (its default, 30 s, would let
      // a slowloris overstay the 10 s header deadline threefold)
      connectionsCheckingInterval: Math.max(10, Math.min(1000, limits.headersTimeoutMs / 4)),
      requireHostHeader: false, // checked in handle(), to answer with a NeutronError body
    },
    createApiHandler(opts),
  );
  server.maxConnections = limits.maxConnections;
  server.setTimeout(limits.idleTimeoutMs); // no 'timeout' listener: node:http destroys the socket
  server.on('clientError', answerClientError);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    server,
    url: `http://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

/**
 * node:http's protocol errors (malformed request line, header or chunk; headers or request past
 * their deadline; headers too large): answered with a NeutronError body, then the connection closes.
 */
function answerClientError(err: Error & { code?: string }, socket: Socket): void {
  const [status, type, reason] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'HTTPRequestTimeout', 'Request Timeout']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'HTTPRequestHeaderFieldsTooLarge', 'Request Header Fields Too Large']
        : [400, 'HTTPBadRequest', 'Bad Request'];
  if (!socket.writable || err.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const body = JSON.stringify(new NeutronError(status, type, `${reason}: the request could not be read.`).body());
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}
