#!/usr/bin/env node
/*
 * `sfc`: one command, subcommands in src/commands/<name>.ts. Each module exports `command`
 * (summary, usage, run). Exit codes: 0 ok, 1 refused/failed, 2 usage error.
 */
import { UsageError, type Command } from './util/args.js';

const COMMANDS: Record<string, () => Promise<{ command: Command }>> = {
  serve: () => import('./commands/serve.js'),
  agent: () => import('./commands/agent.js'),
  apply: () => import('./commands/apply.js'),
  get: () => import('./commands/get.js'),
  delete: () => import('./commands/delete.js'),
  replay: () => import('./commands/replay.js'),
  lab: () => import('./commands/lab.js'),
  demo: () => import('./commands/demo.js'),
  explain: () => import('./commands/explain.js'),
  top: () => import('./commands/top.js'),
  trace: () => import('./commands/trace.js'),
  capture: () => import('./commands/capture.js'),
};

async function help(): Promise<string> {
  const lines = ['usage: sfc <command> [options]   (sfc <command> --help for details)', '', 'commands:'];
  for (const [name, load] of Object.entries(COMMANDS)) {
    try {
      lines.push(`  ${name.padEnd(8)} ${(await load()).command.summary}`);
    } catch {
      // a command module that is not present in this build is simply not listed
    }
  }
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(await help());
    return name ? 0 : 2;
  }
  const load = COMMANDS[name];
  if (!load) {
    console.error(`sfc: unknown command '${name}'\n\n${await help()}`);
    return 2;
  }
  const { command } = await load();
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(`usage: sfc ${name} ${command.usage}\n\n${command.summary}`);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`sfc ${name}: ${e.message}\nusage: sfc ${name} ${command.usage}`);
      return 2;
    }
    console.error(`sfc ${name}: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    console.error(e);
    process.exitCode = 1;
  },
);
