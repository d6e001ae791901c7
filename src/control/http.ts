/*
 * HTTP plumbing shared by the API server and its client: where each collection lives, bounded
 * body reading and decoding, JSON/NeutronError responses, and the request guards (token, Host,
 * Content-Type) with the loopback rule.
 *
 * Bodies are read as a stream against a byte budget: a declared Content-Length over the budget is
 * refused before a byte is read, a chunked body is refused the moment it crosses it; either way the
 * connection is closed after the 413 so the rest of the upload is never buffered. A body is
 * decoded as strict UTF-8 and parsed as JSON nested at most MAX_JSON_DEPTH deep (deeper input
 * would overflow the stack of whatever walks it later), each refusal a 400. node:http only.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { NeutronError, badRequest } from './errors.js';
import type { Collection } from './model.js';

/** Largest request body accepted (Neutron's default max_request_body_size is about this). */
export const MAX_BODY_BYTES = 1 << 20;

export const API_VERSION = 'v2.0';

/** URL path of a collection: ports at /v2.0/ports, the SFC resources under /v2.0/sfc. */
export function collectionPath(coll: Collection): string {
  return coll === 'ports' ? `/${API_VERSION}/ports` : `/${API_VERSION}/sfc/${coll}`;
}

/** Deepest nesting of arrays/objects accepted in a request body (the model needs 4). */
export const MAX_JSON_DEPTH = 32;

/**
 * Read the whole body (at most `limit` bytes); over the limit → NeutronError 413. Settles also
 * when the connection goes away mid-body (a timed-out slow client), so no handler is left waiting.
 */
export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise((resolve, reject) => {
    req.once('close', () => {
      if (!req.complete) reject(new NeutronError(400, 'HTTPBadRequest', 'The request body was not received completely.'));
    });
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        req.pause();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks, size)));
    req.once('error', reject);
  });
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A body's JSON value: strict UTF-8, JSON, nesting within MAX_JSON_DEPTH; else 400 MalformedRequestBody. */
export function parseJsonBody(raw: Buffer): unknown {
  let text: string;
  try {
    text = utf8.decode(raw);
  } catch {
    throw badRequest('MalformedRequestBody', 'Malformed request body: the body is not valid UTF-8.');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw badRequest('MalformedRequestBody', 'Malformed request body: the body is not valid JSON.');
  }
  if (nestingDepth(value) > MAX_JSON_DEPTH) {
    throw badRequest('MalformedRequestBody', `Malformed request body: nested deeper than ${MAX_JSON_DEPTH} levels.`);
  }
  return value;
}

/** Deepest array/object nesting of a JSON value (iterative: the input may be a million levels deep). */
function nestingDepth(root: unknown): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[root, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    deepest = Math.max(deepest, depth + 1);
    if (deepest > MAX_JSON_DEPTH) return deepest;
    for (const child of Object.values(v)) stack.push([child, depth + 1]);
  }
  return deepest;
}

function tooLarge(limit: number): NeutronError {
  return new NeutronError(413, 'HTTPRequestEntityTooLarge', `Request is too large: the body limit is ${limit} bytes.`);
}

/** Send a JSON body (or nothing for 204). */
export function sendJson(res: ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * Send a NeutronError. A 413 also closes the connection: the unread rest of the body must not be
 * parsed as the next request.
 */
export function sendError(res: ServerResponse, e: NeutronError): void {
  if (e.status === 413) res.setHeader('Connection', 'close');
  if (e.status === 401) res.setHeader('WWW-Authenticate', 'Bearer');
  sendJson(res, e.status, e.body());
}

/** The token a request carries: `X-Auth-Token: T` or `Authorization: Bearer T`. */
function presentedToken(req: IncomingMessage): string | undefined {
  const header = req.headers['x-auth-token'];
  if (typeof header === 'string') return header;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  return m?.[1];
}

/** True when no token is configured or the request carries it (constant-time compare). */
export function authorized(req: IncomingMessage, token: string | undefined): boolean {
  if (token === undefined) return true;
  const given = presentedToken(req);
  if (given === undefined) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * A request with a body (POST, PUT) must say `Content-Type: application/json` (any parameters):
 * a browser cannot send that cross-site without a CORS preflight, which this server never grants,
 * so a page on the lab host cannot create objects with a text/plain form post. Else 415.
 */
export function requireJsonContent(req: IncomingMessage): void {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new NeutronError(
      415,
      'HTTPUnsupportedMediaType',
      `The request media type ${type === '' ? '(none)' : type} is not supported by this server: send Content-Type: application/json.`,
    );
  }
}

/**
 * Without a token, a request must name this server by a loopback name in Host (localhost,
 * 127.0.0.0/8, [::1]): a page whose DNS name was rebound to 127.0.0.1 sends its own name, and is
 * refused (400). A request without Host (HTTP/1.0) comes from no browser and passes.
 */
export function requireLoopbackHost(req: IncomingMessage): void {
  const host = req.headers.host;
  if (host === undefined) return;
  let name: string;
  try {
    name = new URL(`http://${host}`).hostname.replace(/^\[|\]$/g, '');
  } catch {
    name = host;
  }
  if (!isLoopbackHost(name)) {
    throw badRequest('HTTPBadRequest', `Host '${host}' is not a loopback name: without a token this server answers only requests addressed to localhost, 127.0.0.1 or [::1].`);
  }
}

/** 127.0.0.0/8, ::1 (also IPv4-mapped) and the name localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  return isIP(v4) === 4 && v4.startsWith('127.');
}
