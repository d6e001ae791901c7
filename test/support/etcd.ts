/*
 * A real 3-member etcd cluster per test file (src/lab/etcd-cluster.ts) on loopback: each file
 * passes its own base port (6 ports from there), data directories live in a temporary directory
 * removed afterwards, members are killed by pid. Needs Debian's etcd-server (`etcd` on PATH).
 * startServe runs the built `sfc serve` (e.g. with --store etcd://...) as a child process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { EtcdCluster, type EtcdClusterOptions } from '../../src/lab/etcd-cluster.js';
import { prerequisites } from './prereq.js';

/** Whether the suite can run (etcd installed); in CI a missing etcd fails the run. */
export function etcdAvailable(suite: string): boolean {
  return prerequisites(suite, { commands: ['etcd'] });
}

export interface TestCluster {
  cluster: EtcdCluster;
  /** Kill the members and remove their data. */
  cleanup(): Promise<void>;
}

export async function startTestCluster(basePort: number, opts: Partial<EtcdClusterOptions> = {}): Promise<TestCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'sfc-etcd-'));
  try {
    const cluster = await EtcdCluster.start({ ...opts, dir, basePort });
    return {
      cluster,
      async cleanup() {
        await cluster.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

const CLI = resolve(import.meta.dirname, '../../dist/src/cli.js');

export interface ServeProcess {
  proc: ChildProcess;
  /** The API's base URL (from its 'listening on URL' line). */
  url: string;
  /** Exit code or signal, and everything it wrote to stderr. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<void>;
}

/** Run `sfc serve ARGS` (built CLI, --listen 127.0.0.1:0 added): resolves once it listens, rejects with its stderr if it exits first. */
export function startServe(args: string[]): Promise<ServeProcess> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first (npm run build)`);
  const proc = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((res) =>
    proc.once('exit', (code, signal) => res({ code, signal, stderr })),
  );
  return new Promise((res, rej) => {
    proc.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(stdout);
      if (m) {
        res({
          proc,
          url: m[1]!,
          exited,
          async stop() {
            if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
            await exited;
          },
        });
      }
    });
    void exited.then((e) => rej(Object.assign(new Error(`sfc serve exited (${e.code ?? e.signal}) before listening: ${e.stderr}`), e)));
  });
}
