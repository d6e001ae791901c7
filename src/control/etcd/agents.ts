/*
 * Agents in the shared store: `/sfc/v1/agents/<host>` holds an agent's JSON record (its underlay
 * address, MAC, health ...) attached to a lease the agent keeps alive. An agent that dies stops
 * renewing; etcd deletes its record when the lease's TTL runs out, and every watcher sees the
 * delete: that is how a dead host's instances leave selection.
 *
 * publishAgent keeps the record published: when the lease is lost (etcd unreachable longer than
 * the TTL), it grants a new one and puts the record again until etcd answers, logging once per
 * outage. watchAgents reads every record, then follows the prefix from the next revision and hands
 * the whole current set to its callback on each change (a failed watch: read again, follow again).
 */
import type { Etcd3, IKeyValue, Lease, Watcher } from 'etcd3';
import { isHostName } from '../validate/ports.js';
import { errorText } from './client.js';

export const AGENTS_PREFIX = '/sfc/v1/agents/';

/** What an agent publishes about itself (JSON; fields beyond these are kept as they are). */
export interface AgentInfo {
  /** Underlay address the agent's VXLAN tunnels end at. */
  underlay: string;
  mac?: string;
  [field: string]: unknown;
}

export interface AgentPublication {
  /** Replace the published record (same lease). */
  update(info: AgentInfo): Promise<void>;
  /** Revoke the lease: the record disappears at once. */
  close(): Promise<void>;
}

/** Publish `info` as host's record under a lease of ttlSeconds, kept alive until close(). */
export async function publishAgent(
  client: Etcd3,
  host: string,
  info: AgentInfo,
  ttlSeconds: number,
  log: (message: string) => void = () => undefined,
): Promise<AgentPublication> {
  if (!isHostName(host)) throw new Error(`agent host '${host}' is not a host name (A-Z a-z 0-9 . _ -, starting with a letter or digit)`);
  const key = `${AGENTS_PREFIX}${host}`;
  let current = info;
  let lease: Lease;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;
  // One retry chain per outage, logged once when it starts and once when it ends (a lease granted
  // while etcd is away is lost too; its loss must not start a second chain).
  let retrying = false;

  const grant = async (): Promise<void> => {
    const next = client.lease(ttlSeconds);
    next.on('lost', (e) => {
      if (closed || next !== lease || retrying) return;
      log(`agent record ${key}: lease lost (${errorText(e)}); publishing again when etcd answers`);
      republish();
    });
    lease = next;
    await next.put(key).value(JSON.stringify(current));
  };
  const republish = (): void => {
    retrying = true;
    retry = setTimeout(() => {
      if (closed) return;
      grant().then(
        () => {
          retrying = false;
          log(`agent record ${key}: published again`);
        },
        () => republish(),
      );
    }, 1000);
  };

  await grant();
  return {
    async update(next) {
      current = next;
      await lease.put(key).value(JSON.stringify(current));
    },
    async close() {
      closed = true;
      clearTimeout(retry);
      await lease.revoke().catch(() => lease.release());
    },
  };
}

export interface AgentSet {
  /** host -> record, as of the last change seen. */
  agents(): ReadonlyMap<string, AgentInfo>;
  close(): Promise<void>;
}

/**
 * Every agent record now, then cb(all records) after each change (an agent appearing, updating or
 * expiring). A watch that fails is replaced by a full re-read (retried each second until etcd answers).
 */
export async function watchAgents(
  client: Etcd3,
  cb: (agents: ReadonlyMap<string, AgentInfo>) => void,
  log: (message: string) => void = () => undefined,
): Promise<AgentSet> {
  let agents = new Map<string, AgentInfo>();
  let watcher: Watcher | undefined;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;
  const apply = (kv: IKeyValue, deleted: boolean) => {
    const host = kv.key.toString().slice(AGENTS_PREFIX.length);
    const info = deleted ? undefined : decodeAgent(kv.value.toString());
    if (info) agents.set(host, info);
    else agents.delete(host);
  };
  const follow = async (): Promise<void> => {
    const res = await client.getAll().prefix(AGENTS_PREFIX).exec();
    agents = new Map();
    for (const kv of res.kvs) apply(kv, false);
    const w = await client.watch().prefix(AGENTS_PREFIX).startRevision(String(Number(res.header.revision) + 1)).create();
    if (closed) return void (await w.cancel());
    watcher = w;
    w.on('data', (r) => {
      for (const ev of r.events) apply(ev.kv, ev.type === 'Delete');
      if (r.events.length > 0) cb(agents);
    });
    w.on('error', (e) => {
      if (closed || watcher !== w) return;
      log(`agent records: watch failed (${errorText(e)}); reading them again`);
      void w.cancel().catch(() => undefined);
      refollow();
    });
  };
  const refollow = (): void => {
    follow().then(
      () => cb(agents),
      () => (retry = setTimeout(() => !closed && refollow(), 1000)),
    );
  };
  await follow();
  return {
    agents: () => agents,
    async close() {
      closed = true;
      clearTimeout(retry);
      await watcher?.cancel();
    },
  };
}

function decodeAgent(text: string): AgentInfo | undefined {
  try {
    const v = JSON.parse(text) as Partial<AgentInfo>;
    if (typeof v === 'object' && v !== null && typeof v.underlay === 'string') return v as AgentInfo;
  } catch {
    // not JSON: not an agent record
  }
  return undefined;
}
