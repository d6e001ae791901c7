/*
 * `sfc trace`: the journeys of the next live packets matching a filter, from a running server's
 * workers — the live counterpart of `sfc explain`, printed in its format (control/journey.ts):
 * classifier hit, path, SI and instance per hop, encapsulation, output or drop reason.
 */
import { journeyLines, journeyVerdict, type LiveJourney } from '../control/journey.js';
import { compileMatch } from '../dataplane/tracefilter.js';
import { parseOptions, UsageError, type Command } from '../util/args.js';
import { Server, SERVER_HELP, SERVER_OPTIONS } from './live.js';

/** A journey as text: the packet, explain's numbered steps, the verdict. */
export function journeyText(j: LiveJourney): string[] {
  const v = journeyVerdict(j.steps);
  const via = v.hops.length ? ` via ${v.hops.join(', ')}` : '';
  const last = j.steps[j.steps.length - 1];
  const verdict = j.complete
    ? `verdict: ${v.verdict}${v.chain ? ` (chain ${v.chain}${via})` : ''} -> ${v.out.join(', ') || 'nowhere'}`
    : `verdict: incomplete (sent to ${last?.out.join(', ') || 'nowhere'} and not seen again)`;
  return [`packet: ${j.packet}`, ...journeyLines(j.steps), verdict];
}

export function positive(text: string, option: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${option} must be a positive integer, got '${text}'`);
  return n;
}

/** A filter expression option (tracefilter.ts), checked here so a typo is a usage error. */
export function matchOption(text: string, option: string): string {
  try {
    compileMatch(text);
  } catch (e) {
    throw new UsageError(`${option}: ${(e as Error).message}`);
  }
  return text;
}

export const command: Command = {
  summary: 'follow the next live packets matching a filter through the chains (journeys as explain)',
  usage: `[--match EXPR] [--count N] [--timeout S] [--json] [--server URL] [--token T]
  --match EXPR        tcpdump-like: tcp|udp|sctp|icmp|icmp6|ip|ip6, [src|dst] host ADDR, [src|dst] port N,
                      joined by 'and', each may be preceded by 'not' (default: every IP packet)
  --count N           journeys to show (default 10)
  --timeout S         give up after S seconds (default 60)
  --json              one JSON object per journey (its steps as explain --json shows them)
${SERVER_HELP}`,

  async run(argv) {
    const { values } = parseOptions(argv, {
      ...SERVER_OPTIONS,
      match: { type: 'string', default: '' },
      count: { type: 'string', default: '10' },
      timeout: { type: 'string', default: '60' },
      json: { type: 'boolean' },
    });
    matchOption(values.match, '--match');
    const count = positive(values.count, '--count');
    const timeout = positive(values.timeout, '--timeout');
    const server = new Server(values);
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once('SIGINT', onSignal);
    let shown = 0;
    try {
      const q = new URLSearchParams({ match: values.match, count: String(count), timeout: String(timeout) });
      const res = await server.get(`/v2.0/sfc/trace?${q}`, stop.signal);
      let rest = '';
      const decoder = new TextDecoder();
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        rest += decoder.decode(chunk, { stream: true });
        const lines = rest.split('\n');
        rest = lines.pop()!;
        for (const line of lines) {
          if (line.trim() === '') continue;
          const j = JSON.parse(line) as LiveJourney;
          console.log(values.json ? JSON.stringify(j) : `${shown > 0 ? '\n' : ''}${journeyText(j).join('\n')}`);
          shown++;
        }
      }
    } catch (e) {
      if (!stop.signal.aborted) throw e;
    } finally {
      process.off('SIGINT', onSignal);
    }
    if (shown < count && !values.json) console.error(`sfc trace: ${shown} of ${count} journeys seen${stop.signal.aborted ? '' : ` within ${timeout} s`}`);
    return 0;
  },
};
