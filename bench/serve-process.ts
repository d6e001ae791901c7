/*
 * `sfc serve` as a child process (dist/src/cli.js), for the crash, durability and soak runs: start
 * it with extra arguments and environment, wait for its "listening on URL" line, kill it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** dist/src/cli.js, from this module compiled (dist/bench) or run as TypeScript (bench/). */
export function cliPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const cli = import.meta.url.endsWith('.ts') ? join(resolve(here, '..'), 'dist', 'src', 'cli.js') : join(here, '..', 'src', 'cli.js');
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run \`npm run build\``);
  return cli;
}

export interface ServeProcess {
  proc: ChildProcess;
  /** Resolves with the API's URL once it listens; rejects if the process exits first. */
  listening: Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

/** Start `sfc serve <args>` (stdout parsed for the URL, stderr collected). */
export function launchServe(args: string[], env: NodeJS.ProcessEnv = process.env): ServeProcess {
  const proc = spawn(process.execPath, [cliPath(), 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stdout = '';
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((res) =>
    proc.once('exit', (code, signal) => res({ code, signal, stderr })),
  );
  const listening = new Promise<string>((res, rej) => {
    proc.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(stdout);
      if (m) res(m[1]!);
    });
    void exited.then((e) => rej(new Error(`sfc serve exited (${e.code ?? e.signal}) before listening: ${e.stderr}`)));
  });
  listening.catch(() => undefined);
  return { proc, listening, exited };
}

/** kill -9 and wait for the exit. */
export async function kill9(s: ServeProcess): Promise<void> {
  if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  await s.exited;
}
