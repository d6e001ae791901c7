/*
 * `sfc delete <resource> <name|id>`: delete one resource of a running server. A refusal (in use,
 * not found, ambiguous name) prints the server's message and exits 1.
 */
import { ApiError, connect, resourceWord } from '../control/client.js';
import { UsageError, parseOptions, type Command } from '../util/args.js';
import { CLIENT_HELP, CLIENT_OPTIONS, RESOURCE_HELP, resourceArg } from './get.js';

export const command: Command = {
  summary: 'delete a resource of a running server',
  usage: `<resource> <NAME|ID> [--url URL] [--token T]
  ${RESOURCE_HELP} (plurals and underscores accepted)
${CLIENT_HELP}`,

  async run(argv) {
    const { values, positionals } = parseOptions(argv, CLIENT_OPTIONS, true);
    const coll = resourceArg(positionals[0]);
    if (positionals.length < 2) throw new UsageError('missing NAME or ID');
    if (positionals.length > 2) throw new UsageError(`unexpected argument '${positionals[2]}'`);
    const client = connect(values.url, values.token);
    try {
      const target = await client.find(coll, positionals[1]!);
      await client.remove(coll, target.id);
      console.log(`deleted ${resourceWord(coll)} ${target.name || target.id} (${target.id})`);
      return 0;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      console.error(`sfc delete: ${e.message}`);
      return 1;
    }
  },
};
