/*
 * `sfc capture` on the ovs driver (issue 13): the frames a logical port's interface receives and
 * sends, through an Open vSwitch mirror. The mirror selects the interface's port both ways
 * (select_src_port: frames as they arrive from its wire; select_dst_port: frames the bridge sends
 * to it, after MAC rewrite and with any MPLS/NSH encapsulation) and outputs to an internal port of
 * its own. OVS reserves a mirror's output port: nothing else is forwarded to it and what arrives
 * on it is discarded, so the capture never changes what the bridge forwards. tcpdump reads that
 * port and hands the frames over as a pcap stream; an optional filter (tracefilter.ts) keeps the
 * frames whose packet it matches. The mirror and its port exist only while the capture runs.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import { compileMatch, dissect } from '../../../dataplane/tracefilter.js';
import { exec } from './ofctl.js';

/** The part of pcap-parser's (untyped, CommonJS) interface used here. */
interface PcapParser {
  on(event: 'packet', cb: (p: { header: { timestampSeconds: number; timestampMicroseconds: number }; data: Buffer }) => void): this;
  on(event: 'error', cb: (e: Error) => void): this;
}
const pcapParser = createRequire(import.meta.url)('pcap-parser') as { parse(input: Readable): PcapParser };

export interface MirrorTarget {
  bridge: string;
  /** One ovs-vsctl transaction of several commands. */
  vsctl(...commands: string[][]): Promise<string>;
  log?: (message: string) => void;
}

let serial = 0;

/**
 * Capture `iface` until `limit` frames were handed to `onFrame` (or the returned stop is called).
 * Returns at once; the mirror is set up in the background (a failure is logged and ends nothing
 * but the capture).
 */
export function mirrorCapture(
  target: MirrorTarget,
  iface: string,
  limit: number,
  onFrame: (frame: Uint8Array, dir: 'rx' | 'tx', timeNs: number) => void,
  match = '',
): () => void {
  const keep = match ? compileMatch(match) : () => true;
  const port = `sfcm${process.pid % 1000}x${serial++}`;
  let stopped = false;
  let child: ReturnType<typeof spawn> | undefined;
  let seen = 0;
  const teardown = async () => {
    child?.kill('SIGTERM');
    // The mirror goes with its bridge reference (OVS collects unreferenced Mirror rows), then its port.
    await target.vsctl(['--id=@m', 'get', 'Mirror', port], ['remove', 'Bridge', target.bridge, 'mirrors', '@m']).catch(() => undefined);
    await target.vsctl(['--if-exists', 'del-port', target.bridge, port]).catch(() => undefined);
  };
  const stop = () => {
    if (stopped) return;
    stopped = true;
    void teardown();
  };
  void (async () => {
    try {
      await target.vsctl(
        ['add-port', target.bridge, port],
        ['set', 'Interface', port, 'type=internal'],
        ['--id=@p', 'get', 'Port', iface],
        ['--id=@o', 'get', 'Port', port],
        ['--id=@m', 'create', 'Mirror', `name=${port}`, 'select-src-port=@p', 'select-dst-port=@p', 'output-port=@o'],
        ['add', 'Bridge', target.bridge, 'mirrors', '@m'],
      );
      if (stopped) return void teardown();
      await exec(['ip', 'link', 'set', 'dev', port, 'up']);
      child = spawn('tcpdump', ['-i', port, '-w', '-', '-U', '-s', '0', '--immediate-mode', '-Q', 'in', '-q'], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.once('error', (e) => target.log?.(`capture on ${iface}: tcpdump: ${e.message} (install the Debian package tcpdump)`));
      pcapParser.parse(child.stdout!).on('packet', ({ header, data }) => {
        if (stopped || seen >= limit) return;
        const frame = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        const d = match ? dissect(frame) : null;
        if (match && (d === null || !keep(d))) return;
        seen++;
        // (A mirror does not say which way a frame went, and neither does pcap: both are written.)
        onFrame(frame, 'tx', header.timestampSeconds * 1e9 + header.timestampMicroseconds * 1e3);
        if (seen >= limit) stop();
      }).on('error', (e) => target.log?.(`capture on ${iface}: ${e.message}`));
    } catch (e) {
      target.log?.(`capture on ${iface}: ${e instanceof Error ? e.message : String(e)}`);
      stop();
    }
  })();
  return stop;
}
