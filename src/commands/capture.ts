/*
 * `sfc capture`: the frames a logical port's interface receives and sends, as the data path sees
 * them (received as they arrived; sent after MAC rewrite, with any MPLS/NSH encapsulation), as
 * pcap from a running server's workers: `sfc capture p11 -w - | tcpdump -r -`. --filter keeps the
 * frames an expression matches (sfc trace --match's syntax, tracefilter.ts), in the workers. On the
 * ovs driver the server captures through an Open vSwitch mirror of the port instead (ovs/mirror.ts).
 */
import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseOptions, UsageError, type Command } from '../util/args.js';
import { Server, SERVER_HELP, SERVER_OPTIONS } from './live.js';
import { matchOption, positive } from './trace.js';

export const command: Command = {
  summary: "write the frames a port receives and sends, as the dataplane sees them, as pcap",
  usage: `PORT -w FILE|- [-c N] [--filter EXPR] [--timeout S] [--server URL] [--token T]
  PORT                a port's name or id (its interface is captured, both directions)
  -w, --write FILE    pcap to FILE, or '-' for stdout (e.g. | tcpdump -r -)
  -c, --count N       stop after N frames (default: until Ctrl-C)
  --filter EXPR       only frames whose packet matches, e.g. 'udp dst port 53', 'tcp and host 10.0.0.2',
                      'not udp port 34979' (sfc trace --match's syntax; inside MPLS/NSH too)
  --timeout S         stop after S seconds (default: a day)
${SERVER_HELP}`,

  async run(argv) {
    const { values, positionals } = parseOptions(
      argv,
      { ...SERVER_OPTIONS, write: { type: 'string', short: 'w' }, count: { type: 'string', short: 'c' }, filter: { type: 'string' }, timeout: { type: 'string' } },
      true,
    );
    if (positionals.length !== 1) throw new UsageError('one PORT (name or id) is required');
    if (values.write === undefined) throw new UsageError("-w FILE is required ('-w -' writes pcap to stdout)");
    if (values.write === '-' && process.stdout.isTTY) throw new UsageError('pcap is binary: pipe it (-w - | tcpdump -r -) or write a file (-w FILE)');
    const q = new URLSearchParams({ port: positionals[0] });
    if (values.count !== undefined) q.set('count', String(positive(values.count, '--count')));
    if (values.timeout !== undefined) q.set('timeout', String(positive(values.timeout, '--timeout')));
    if (values.filter !== undefined) q.set('filter', matchOption(values.filter, '--filter'));
    const server = new Server(values);
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      const res = await server.get(`/v2.0/sfc/capture?${q}`, stop.signal);
      const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
      stop.signal.addEventListener('abort', () => body.destroy(), { once: true });
      await pipeline(body, values.write === '-' ? process.stdout : createWriteStream(values.write));
    } catch (e) {
      const code = (e as { code?: string }).code;
      // Ctrl-C, or the reader of stdout went away (tcpdump -c): what was written stays a valid capture
      if (!stop.signal.aborted && code !== 'EPIPE' && code !== 'ERR_STREAM_PREMATURE_CLOSE') throw e;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    return 0;
  },
};
