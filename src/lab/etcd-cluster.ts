/*
 * A real etcd cluster for the lab and the tests (Debian's etcd-server 3.4): N members (3 by
 * default) on loopback or on given addresses, each with its own data directory under `dir`,
 * started as child processes and stopped by pid. Member i listens for clients on basePort + 2i and
 * for peers on basePort + 2i + 1, so several clusters on one machine only need distinct base ports.
 *
 * A member is ready when it logs "serving client traffic" (etcd logs that once it has joined a
 * cluster with a leader), so start-up waits on that event, not on a timer. kill(i) is a
 * SIGKILL by pid (a crash); restart(i) starts the same member on its data directory again;
 * leader() says which member leads (tests kill the followers to leave a leader without a quorum).
 * Short raft timers (heartbeat 50 ms, election 500 ms) keep a lost leader's re-election fast;
 * the transaction limits are raised so that a large config seed (a whole-State replace) fits one transaction.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';

/** Logged once the member has joined a cluster with a leader (embed/serve.go, after ReadyNotify). */
const READY = 'serving client traffic';
const START_TIMEOUT_MS = 20_000;

export interface EtcdClusterOptions {
  /** Parent of the members' data directories and logs. */
  dir: string;
  /** First of the 2 * members ports used. */
  basePort: number;
  /** One address per member (default: 127.0.0.1 for each of 3). */
  hosts?: string[];
  /** etcd's --max-txn-ops (default 4096, room for large config seeds; etcd's own default is 128). */
  maxTxnOps?: number;
  /** How to start a member (default: a plain child process); the lab runs them in namespaces and records their pids. */
  spawn?: (argv: string[]) => Promise<ChildProcess>;
  /**
   * spawn starts each member as the leader of its own process group (the lab's detached wrapper
   * around etcd and its log reader): kill(i) then signals that group, so etcd dies with its wrapper.
   */
  processGroups?: boolean;
}

interface Member {
  name: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  logFile: string;
  proc: ChildProcess | undefined;
}

export class EtcdCluster {
  readonly #members: Member[];
  readonly #spawn: (argv: string[]) => Promise<ChildProcess>;
  readonly #token: string;
  readonly #maxTxnOps: number;
  readonly #processGroups: boolean;

  private constructor(opts: EtcdClusterOptions) {
    const hosts = opts.hosts ?? ['127.0.0.1', '127.0.0.1', '127.0.0.1'];
    this.#members = hosts.map((host, i) => ({
      name: `sfc-etcd${i}`,
      clientUrl: `http://${host}:${opts.basePort + 2 * i}`,
      peerUrl: `http://${host}:${opts.basePort + 2 * i + 1}`,
      dataDir: join(opts.dir, `etcd${i}.data`),
      logFile: join(opts.dir, `etcd${i}.log`),
      proc: undefined,
    }));
    this.#spawn = opts.spawn ?? (async (argv) => spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] }));
    this.#token = `sfc-${process.pid}-${opts.basePort}`;
    this.#maxTxnOps = opts.maxTxnOps ?? 4096;
    this.#processGroups = opts.processGroups ?? false;
  }

  /** Start every member and wait until each serves clients; on failure the started ones are killed. */
  static async start(opts: EtcdClusterOptions): Promise<EtcdCluster> {
    await mkdir(opts.dir, { recursive: true });
    const cluster = new EtcdCluster(opts);
    try {
      await Promise.all(cluster.#members.map((m) => cluster.#startMember(m, 'new')));
    } catch (e) {
      await cluster.stop();
      throw e;
    }
    return cluster;
  }

  /** Client URLs (http://HOST:PORT), member order. */
  get endpoints(): string[] {
    return this.#members.map((m) => m.clientUrl);
  }

  /** The --store argument naming every member. */
  get storeUrl(): string {
    return `etcd://${this.#members.map((m) => m.clientUrl.slice('http://'.length)).join(',')}`;
  }

  /** SIGKILL member i (its process group with processGroups) and wait until it is gone. */
  async kill(i: number): Promise<void> {
    const m = this.#member(i);
    const proc = m.proc;
    m.proc = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise((resolve) => proc.once('exit', resolve));
    process.kill(this.#processGroups ? -proc.pid! : proc.pid!, 'SIGKILL');
    await gone;
  }

  /** Start member i again on its data directory; resolves when it serves clients. */
  async restart(i: number): Promise<void> {
    const m = this.#member(i);
    if (m.proc) throw new Error(`etcd member ${m.name} is running`);
    await this.#startMember(m, 'existing');
  }

  /** Index of the member that is the raft leader now, by each running member's own status; -1 when none says it leads. */
  async leader(): Promise<number> {
    for (const [i, m] of this.#members.entries()) {
      if (!m.proc) continue;
      const client = new Etcd3({ hosts: m.clientUrl, dialTimeout: 2000 });
      try {
        const status = await client.maintenance.status({ deadline: Date.now() + 2000 });
        if (status.header.member_id === status.leader) return i;
      } catch {
        // a member that cannot answer is not the leader we are looking for
      } finally {
        client.close();
      }
    }
    return -1;
  }

  /** Kill every member (by pid). */
  async stop(): Promise<void> {
    await Promise.all(this.#members.map((_, i) => this.kill(i)));
  }

  #member(i: number): Member {
    const m = this.#members[i];
    if (!m) throw new Error(`no etcd member ${i} (the cluster has ${this.#members.length})`);
    return m;
  }

  async #startMember(m: Member, state: 'new' | 'existing'): Promise<void> {
    const argv = [
      'etcd',
      `--name=${m.name}`,
      `--data-dir=${m.dataDir}`,
      `--listen-client-urls=${m.clientUrl}`,
      `--advertise-client-urls=${m.clientUrl}`,
      `--listen-peer-urls=${m.peerUrl}`,
      `--initial-advertise-peer-urls=${m.peerUrl}`,
      `--initial-cluster=${this.#members.map((o) => `${o.name}=${o.peerUrl}`).join(',')}`,
      `--initial-cluster-state=${state}`,
      `--initial-cluster-token=${this.#token}`,
      '--heartbeat-interval=50',
      '--election-timeout=500',
      `--max-txn-ops=${this.#maxTxnOps}`,
      '--max-request-bytes=33554432',
      '--logger=zap',
      '--log-outputs=stderr',
    ];
    const proc = await this.#spawn(argv);
    m.proc = proc;
    const log = createWriteStream(m.logFile, { flags: 'a' });
    await new Promise<void>((resolve, reject) => {
      let seen = '';
      const fail = (why: string) => {
        clearTimeout(timer);
        reject(new Error(`etcd member ${m.name} (${m.clientUrl}) ${why}; its log: ${m.logFile}`));
      };
      const timer = setTimeout(() => fail(`was not ready after ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
      proc.once('error', (e) => fail(`did not start: ${e.message}`));
      proc.once('exit', (code, signal) => fail(`exited (${signal ?? `code ${code}`}) before it was ready`));
      proc.stderr!.on('data', (chunk: Buffer) => {
        log.write(chunk);
        if (seen === READY) return;
        seen = (seen + chunk.toString()).slice(-4096);
        if (seen.includes(READY)) {
          seen = READY;
          clearTimeout(timer);
          proc.removeAllListeners('exit');
          resolve();
        }
      });
    });
    proc.once('exit', () => log.end());
  }
}
