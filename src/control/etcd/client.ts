/*
 * The connection to the shared store (etcd v3, npm `etcd3` over gRPC).
 *
 * `etcd://HOST:PORT[,HOST:PORT...]` names the cluster's client endpoints. Every unary call carries
 * a deadline (a store that cannot answer must not hang an API write); watches are streams and have
 * none. A call that failed fast (a member down, a leader changing) is retried on another member,
 * up to 3 times; one that ran out its deadline is not, so a store without a quorum answers a write
 * with a 503 after one deadline. connectEtcd checks the cluster answers a linearizable read (so it
 * has a leader and a quorum) before anything else uses it: an unreachable store is one clear error
 * naming the endpoints. unavailable() is how the API reports a write the store refused or did not answer:
 * 503 ServiceUnavailable, the change not applied.
 */
import { handleWhen, retry } from 'cockatiel';
import { Etcd3, GRPCDeadlineExceededError, isRecoverableError } from 'etcd3';
import { NeutronError } from '../errors.js';

/** Most time one etcd call may take (ms): above etcd's own leader-election time, below a client's patience. */
export const DEFAULT_CALL_TIMEOUT_MS = 3000;

export class EtcdUnreachable extends Error {}

export class EtcdUrlError extends Error {}

export interface EtcdOptions {
  /** Deadline of each unary call, ms (default DEFAULT_CALL_TIMEOUT_MS). */
  callTimeoutMs?: number;
}

/** `etcd://a:2379,b:2379` -> ['http://a:2379', 'http://b:2379']; anything else is an EtcdUrlError. */
export function parseEtcdUrl(spec: string): string[] {
  const m = /^etcd:\/\/(.+)$/.exec(spec);
  const hosts = m ? m[1]!.split(',') : [];
  const bad = hosts.find((h) => !/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(h) || Number(h.slice(h.lastIndexOf(':') + 1)) > 65535);
  if (!m || hosts.length === 0 || bad !== undefined) {
    throw new EtcdUrlError(`'${spec}' is not etcd://HOST:PORT[,HOST:PORT...]${bad !== undefined ? ` ('${bad}' is not HOST:PORT)` : ''}`);
  }
  return hosts.map((h) => `http://${h}`);
}

/** A client of the cluster at `endpoints` (http://HOST:PORT) that has answered a linearizable read. */
export async function connectEtcd(endpoints: string[], opts: EtcdOptions = {}): Promise<Etcd3> {
  const timeout = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  const client = new Etcd3({
    hosts: endpoints,
    dialTimeout: timeout,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    faultHandling: { global: retry(handleWhen((e) => isRecoverableError(e) && !(e instanceof GRPCDeadlineExceededError)), { maxAttempts: 3 }) },
  });
  try {
    await client.get('/sfc/v1/ping').string();
  } catch (e) {
    client.close();
    throw new EtcdUnreachable(`etcd at ${endpoints.join(', ')} did not answer (${errorText(e)}): is the cluster running and does it have a quorum?`);
  }
  return client;
}

/** The API's answer to a write the store did not take: 503, nothing applied. */
export function unavailable(endpoints: string[], e: unknown): NeutronError {
  if (e instanceof NeutronError) return e;
  return new NeutronError(
    503,
    'ServiceUnavailable',
    `The change was not applied: the shared store (etcd at ${endpoints.join(', ')}) did not commit it (${errorText(e)})`,
  );
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
