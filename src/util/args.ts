/*
 * Shared shape of a subcommand and strict option parsing (node:util parseArgs): an unknown or
 * malformed option is a UsageError, which the dispatcher turns into exit code 2.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

export interface Command {
  summary: string;
  /** Options part of the usage line, e.g. `--config FILE [--out DIR]`, followed by option help lines. */
  usage: string;
  run(argv: string[]): Promise<number>;
}

export class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig['options']>;

export function parseOptions<O extends Options>(argv: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

/** `--listen HOST:PORT` → { host, port }. */
export function parseHostPort(value: string, option: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new UsageError(`${option} must be HOST:PORT, got '${value}'`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

/** A command-line integer >= 1, or a UsageError naming the option. */
export function positiveInt(value: string, option: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${option} must be a positive integer, got '${value}'`);
  return n;
}

/** Resolves with the name of the first SIGINT or SIGTERM (a long-running command's end). */
export function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (signal: string) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(signal);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
