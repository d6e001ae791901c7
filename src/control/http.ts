/*
 * HTTP plumbing shared by the API server and its client: where each collection lives, bounded
 * body reading, JSON/NeutronError responses, the token check and the loopback rule.
 *
 * Bodies are read as a stream against a byte budget: a declared Content-Length over the budget is
 * refused before a byte is read, a chunked body is refused the moment it crosses it; either way the
 * connection is closed after the 413 so the rest of the upload is never buffered. node:http only.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { NeutronError } from './errors.js';
import type { Collection } from './model.js';

/** Largest request body accepted (Neutron's default max_request_body_size is about this). */
export const MAX_BODY_BYTES = 1 << 20;

export const API_VERSION = 'v2.0';

/** URL path of a collection: ports at /v2.0/ports, the SFC resources under /v2.0/sfc. */
export function collectionPath(coll: Collection): string {
  return coll === 'ports' ? `/${API_VERSION}/ports` : `/${API_VERSION}/sfc/${coll}`;
}

/** Read the whole body (at most `limit` bytes); over the limit → NeutronError 413. */
export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise((resolve, reject) => {
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

/** 127.0.0.0/8, ::1 (also IPv4-mapped) and the name localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  return isIP(v4) === 4 && v4.startsWith('127.');
}
