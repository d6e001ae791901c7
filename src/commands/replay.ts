/*
 * `sfc replay`: run pcap captures through the engine offline (dataplane/replay.ts) and write what
 * every interface transmits, plus one verdict line per input frame.
 */
import { compileTables } from '../control/drivers/userspace/render.js';
import { loadConfigFile } from '../control/config.js';
import { replayFiles, type ReplayInput } from '../dataplane/replay.js';
import { parseOptions, UsageError, type Command } from '../util/args.js';

/** `IFACE=FILE` arguments of --in. */
export function parseInputs(values: string[] | undefined): ReplayInput[] {
  if (!values || values.length === 0) throw new UsageError('at least one --in INTERFACE=FILE.pcap is required');
  return values.map((v) => {
    const eq = v.indexOf('=');
    if (eq <= 0 || eq === v.length - 1) throw new UsageError(`--in ${v}: expected INTERFACE=FILE.pcap`);
    return { iface: v.slice(0, eq), file: v.slice(eq + 1) };
  });
}

export const command: Command = {
  summary: 'replay pcap files through the dataplane offline; write per-interface pcaps and verdicts',
  usage: `--config FILE --in INTERFACE=FILE.pcap [--in ...] --out DIR [--sf-loopback]

  --config FILE         chain model (YAML or JSON, as for sfc serve --config)
  --in IFACE=FILE       frames arriving on interface IFACE (repeatable; files are merged by time)
  --out DIR             writes DIR/<interface>.pcap per transmitting interface and DIR/verdicts.jsonl
  --sf-loopback         every frame sent to a port of a port pair comes back on the pair's other
                        port, so whole chains replay without live service functions`,
  async run(argv) {
    const { values } = parseOptions(argv, {
      config: { type: 'string' },
      in: { type: 'string', multiple: true },
      out: { type: 'string' },
      'sf-loopback': { type: 'boolean', default: false },
    });
    if (!values.config) throw new UsageError('--config FILE is required');
    if (!values.out) throw new UsageError('--out DIR is required');
    const inputs = parseInputs(values.in);
    const state = await loadConfigFile(values.config);
    const { verdicts, written } = await replayFiles(compileTables(state), inputs, values.out, values['sf-loopback'] ?? false);
    const tally = new Map<string, number>();
    for (const v of verdicts) tally.set(v.verdict, (tally.get(v.verdict) ?? 0) + 1);
    console.log(`replayed ${verdicts.length} frames: ${[...tally].map(([k, n]) => `${k} ${n}`).join(', ') || 'none'}`);
    for (const [iface, n] of Object.entries(written).sort()) console.log(`  ${values.out}/${iface}.pcap  ${n} frames`);
    console.log(`  ${values.out}/verdicts.jsonl`);
    return 0;
  },
};
