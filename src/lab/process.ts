/*
 * Processes the lab owns: running commands (inside a namespace or not), starting long-running ones
 * and recording them in the lab's pid file (<runDir>/pids, "pid starttime what", so a recycled pid
 * is never mistaken for ours), reading that file back, and stopping processes by pid. topology.ts
 * builds the namespaces with these; labDown stops what the file names.
 */
import { execFileSync, spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const RUN_ROOT = '/run/sfc';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  input?: string;
  /** Reject on a non-zero exit (default true). */
  check?: boolean;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** Run argv to completion and collect its output. */
export function run(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { env: opts.env ?? process.env, timeout: opts.timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (e) => reject(new Error(`${argv[0]}: ${e.message}`)));
    child.on('close', (code, signal) => {
      if (opts.check !== false && code !== 0) {
        const why = signal ? `killed by ${signal}` : `exit ${code}`;
        reject(new Error(`${argv.join(' ')}: ${why}: ${(stderr.trim() || stdout.trim()).slice(0, 2000)}`));
      } else resolve({ code: code ?? 128, stdout, stderr });
    });
    child.stdin.on('error', () => {}); // a command that exits without reading its input
    child.stdin.end(opts.input ?? '');
  });
}

/** Run argv inside network namespace `ns` (`ip netns exec` execs: no extra process). */
export function netnsExec(ns: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return run(['ip', 'netns', 'exec', ns, ...argv], opts);
}

export interface SpawnOptions {
  /** Pin to this CPU (taskset; threads inherit it). */
  cpu?: number;
  env?: NodeJS.ProcessEnv;
  stdio?: StdioOptions;
  /** Own process group (signal the whole group with process.kill(-pid, sig)). */
  detached?: boolean;
}

/**
 * Start a long-running process inside `ns` and record its pid for labDown. `ip netns exec` and
 * `taskset` both exec, so the child's pid is the program's own pid (usable for /proc/<pid>/stat).
 */
export async function netnsSpawn(lab: string, ns: string, argv: string[], opts: SpawnOptions = {}): Promise<ChildProcess> {
  const pinned = opts.cpu === undefined ? argv : ['taskset', '-c', String(opts.cpu), ...argv];
  const child = spawn('ip', ['netns', 'exec', ns, ...pinned], {
    stdio: opts.stdio ?? 'pipe',
    env: opts.env ?? process.env,
    detached: opts.detached,
  });
  if (child.pid === undefined) {
    const e = await new Promise<Error>((resolve) => child.once('error', resolve));
    throw new Error(`${argv[0]}: ${e.message}`);
  }
  await recordPid(lab, child.pid, argv[0]);
  return child;
}

/**
 * Remember a process the lab owns; labDown kills it if it is still the same process (same start
 * time, which exec keeps). A process already gone needs no record.
 */
export async function recordPid(lab: string, pid: number, what: string): Promise<void> {
  const start = procStat(pid)?.[STAT_STARTTIME];
  if (start === undefined) return;
  await mkdir(runDir(lab), { recursive: true });
  await appendFile(join(runDir(lab), 'pids'), `${pid} ${start} ${what.replace(/\s+/g, '_')}\n`);
}

/** Index of fields in procStat()'s result (proc(5) field number minus 3). */
const STAT_UTIME = 11;
const STAT_STIME = 12;
const STAT_STARTTIME = 19;

let clockTicks = 0;
/** CPU time (utime + stime) of a whole thread group in microseconds, or null when it is gone. */
export function processCpuMicros(pid: number): number | null {
  const stat = procStat(pid);
  if (!stat) return null;
  clockTicks ||= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  return ((Number(stat[STAT_UTIME]) + Number(stat[STAT_STIME])) * 1e6) / clockTicks;
}

/** Fields of /proc/<pid>/stat after the command name (index 0 = field 3, state), or null if gone. */
function procStat(pid: number): string[] | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).trim().split(' ');
  } catch {
    return null;
  }
}

export function runDir(name: string): string {
  return join(RUN_ROOT, name);
}

export interface PidRecord {
  pid: number;
  start: string;
  what: string;
}

export async function readPids(name: string): Promise<PidRecord[]> {
  let text = '';
  try {
    text = await readFile(join(runDir(name), 'pids'), 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => {
      const [pid, start, what] = l.split(' ');
      return { pid: Number(pid), start, what: what ?? '' };
    })
    .filter((r) => Number.isInteger(r.pid) && r.pid > 1);
}

export function isSameProcess(r: PidRecord): boolean {
  return procStat(r.pid)?.[STAT_STARTTIME] === r.start;
}

/** SIGTERM, wait up to `graceMs`, then SIGKILL whatever is left. */
export async function terminate(pids: number[], graceMs = 2000): Promise<void> {
  const signal = (pid: number, sig: NodeJS.Signals | 0) => {
    try {
      process.kill(pid, sig);
      return true;
    } catch {
      return false;
    }
  };
  let alive = pids.filter((p) => signal(p, 'SIGTERM'));
  for (let waited = 0; alive.length && waited < graceMs; waited += 50) {
    await sleep(50);
    alive = alive.filter((p) => signal(p, 0));
  }
  for (const p of alive) signal(p, 'SIGKILL');
}
