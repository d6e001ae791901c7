/*
 * Golden-pcap tests: synthetic captures (src/dataplane/frames.ts) of a client talking to a server are replayed
 * with SF loopback through `sfc replay`'s own code path for examples/two-hop.yaml and its symmetric
 * variant; every output pcap and verdicts.jsonl must equal the committed goldens byte for byte.
 * Regenerate with UPDATE_GOLDEN=1 (then inspect with `tcpdump -enr test/fixtures/replay/...`).
 */
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildArp, buildFrame, type FrameSpec } from '../src/dataplane/frames.js';
import { UsageError } from '../src/util/args.js';
import { command as replayCommand } from '../src/commands/replay.js';
import { command as explainCommand } from '../src/commands/explain.js';
import { loadConfigFile } from '../src/control/config.js';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import { PcapWriter, readPcap } from '../src/dataplane/io/pcapio.js';
import { replayFiles } from '../src/dataplane/replay.js';
import { formatMac } from '../src/dataplane/tables.js';

const UPDATE = process.env.UPDATE_GOLDEN === '1';
const FIXTURES = join(import.meta.dirname, 'fixtures', 'replay');
const EXAMPLES = join(import.meta.dirname, '..', 'examples');

const CLIENT = { mac: '02:00:00:00:00:01', ip: '10.0.0.1' };
const SERVER = { mac: '02:00:00:00:00:02', ip: '10.0.0.2' };
const T0 = 1_700_000_000_000_000_000; // ns; every time below is a whole microsecond

function l4(proto: 'tcp' | 'udp', from: typeof CLIENT, to: typeof CLIENT, sport: number, dport: number, seq: number): Uint8Array {
  const spec: FrameSpec = {
    ethSrc: from.mac,
    ethDst: to.mac,
    ip: { ver: 4, src: from.ip, dst: to.ip, id: seq },
    l4: { proto, sport, dport },
    payload: 16 + (seq % 7),
    frameLen: 64,
  };
  return buildFrame(spec);
}

/** The two captures: what the client sent (cli0) and what the server sent (srv0). */
function captures(): { cli0: [Uint8Array, number][]; srv0: [Uint8Array, number][] } {
  const cli0: [Uint8Array, number][] = [];
  const srv0: [Uint8Array, number][] = [];
  let t = T0;
  const tick = () => (t += 1_000_000); // 1 ms
  cli0.push([buildArp({ ethSrc: CLIENT.mac, senderIp: CLIENT.ip, targetIp: SERVER.ip }), tick()]);
  srv0.push([buildArp({ ethSrc: SERVER.mac, ethDst: CLIENT.mac, op: 2, senderIp: SERVER.ip, targetIp: CLIENT.ip, targetMac: CLIENT.mac }), tick()]);
  let seq = 1;
  for (let n = 0; n < 6; n++) {
    const proto = n % 3 === 2 ? 'udp' : 'tcp';
    const sport = 40000 + n * 7;
    const dport = proto === 'tcp' ? 80 : 53;
    for (let k = 0; k < 2; k++) {
      cli0.push([l4(proto, CLIENT, SERVER, sport, dport, seq++), tick()]);
      srv0.push([l4(proto, SERVER, CLIENT, dport, sport, seq++), tick()]);
    }
  }
  const ping = (from: typeof CLIENT, to: typeof CLIENT, type: number) =>
    buildFrame({ ethSrc: from.mac, ethDst: to.mac, ip: { ver: 4, src: from.ip, dst: to.ip }, l4: { proto: 'icmp', type }, frameLen: 64 });
  cli0.push([ping(CLIENT, SERVER, 8), tick()]);
  srv0.push([ping(SERVER, CLIENT, 0), tick()]);
  return { cli0, srv0 };
}

async function writeCapture(path: string, frames: [Uint8Array, number][]): Promise<void> {
  const w = new PcapWriter(path);
  for (const [f, t] of frames) w.write(f, t);
  await w.close();
}

async function quietly<T>(fn: () => Promise<T>): Promise<T> {
  const log = console.log;
  console.log = () => undefined;
  try {
    return await fn();
  } finally {
    console.log = log;
  }
}

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'sfc-replay-'));
  const { cli0, srv0 } = captures();
  await writeCapture(join(work, 'cli0.pcap'), cli0);
  await writeCapture(join(work, 'srv0.pcap'), srv0);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('sfc replay golden pcaps (--sf-loopback)', () => {
  for (const variant of ['two-hop', 'two-hop-symmetric']) {
    it(`${variant}: every output pcap and verdicts.jsonl match the goldens`, async () => {
      const out = join(work, `out-${variant}`);
      const code = await quietly(() =>
        replayCommand.run([
          '--config', join(EXAMPLES, `${variant}.yaml`),
          '--in', `cli0=${join(work, 'cli0.pcap')}`,
          '--in', `srv0=${join(work, 'srv0.pcap')}`,
          '--out', out,
          '--sf-loopback',
        ]),
      );
      expect(code).toBe(0);
      const golden = join(FIXTURES, variant);
      if (UPDATE) {
        await rm(golden, { recursive: true, force: true });
        await cp(out, golden, { recursive: true });
        await cp(join(work, 'cli0.pcap'), join(FIXTURES, 'in-cli0.pcap'));
        await cp(join(work, 'srv0.pcap'), join(FIXTURES, 'in-srv0.pcap'));
      }
      expect(existsSync(golden), `no goldens in ${golden}: run with UPDATE_GOLDEN=1`).toBe(true);
      const produced = (await readdir(out)).sort();
      expect(produced).toEqual((await readdir(golden)).sort());
      for (const name of produced) {
        const [a, b] = [await readFile(join(out, name)), await readFile(join(golden, name))];
        expect(a.equals(b), `${name} differs from the golden`).toBe(true);
      }
    });
  }

  it('the symmetric replay crosses each flow forward and back through the same instances', async () => {
    const lines = (await readFile(join(FIXTURES, 'two-hop-symmetric', 'verdicts.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    const fwd = lines.filter((v) => v.in === 'cli0' && v.verdict === 'chain');
    const rev = lines.filter((v) => v.in === 'srv0' && v.verdict === 'chain');
    expect(fwd).toHaveLength(12);
    expect(rev).toHaveLength(12);
    fwd.forEach((v, n) => {
      expect(v.out).toEqual(['srv0']);
      expect(rev[n].out).toEqual(['cli0']);
      expect(rev[n].hops).toEqual([...v.hops].reverse());
    });
    // Both instances of both hops carry traffic across the flows.
    expect(new Set(fwd.map((v) => v.hops[0])).size).toBe(2);
    expect(new Set(fwd.map((v) => v.hops[1])).size).toBe(2);
  });

  it('the goldens carry the right MACs at each hop', async () => {
    const dir = join(FIXTURES, 'two-hop');
    for (const name of await readdir(dir)) {
      const m = /^sf(\d)(\d)i\.pcap$/.exec(name);
      if (!m) continue;
      const { frames } = await readPcap(join(dir, name));
      expect(frames.length).toBeGreaterThan(0);
      for (const f of frames) {
        // Chain frames are addressed to the instance's ingress MAC; the only others are ARP floods.
        const dst = formatMac(f.data, 0);
        expect([`02:00:00:00:${m[1]}${m[2]}:01`, 'ff:ff:ff:ff:ff:ff']).toContain(dst);
        if (dst !== 'ff:ff:ff:ff:ff:ff') expect(formatMac(f.data, 6)).toBe(CLIENT.mac);
      }
    }
    // The server receives the client's frames exactly as sent.
    const sent = captures().cli0.map(([f]) => Buffer.from(f));
    const got = (await readPcap(join(dir, 'srv0.pcap'))).frames.map((f) => Buffer.from(f.data));
    for (const g of got) expect(sent.some((s) => s.equals(g))).toBe(true);
  });
});

describe('replay without loopback, errors, explain', () => {
  it('without --sf-loopback a chain frame stops at its first SF; files are merged by time', async () => {
    const state = await loadConfigFile(join(EXAMPLES, 'two-hop.yaml'));
    const { verdicts, written } = await replayFiles(
      compileTables(state),
      [
        { iface: 'srv0', file: join(work, 'srv0.pcap') },
        { iface: 'cli0', file: join(work, 'cli0.pcap') },
      ],
      join(work, 'plain'),
      false,
    );
    expect(verdicts.slice(0, 3).map((v) => [v.in, v.index, v.verdict])).toEqual([
      ['cli0', 0, 'flood'],
      ['srv0', 0, 'l2'],
      ['cli0', 1, 'chain'],
    ]);
    const chain = verdicts.filter((v) => v.verdict === 'chain');
    for (const v of chain) {
      expect(v.hops).toHaveLength(1);
      expect(v.out).toEqual([v.hops[0].replace(/^pp(\d\d)$/, 'sf$1i')]);
    }
    // The ARP flood and the (unclassified) ping only: chain frames never got past hop 1.
    expect(written.srv0).toBe(2);
  });

  it('names the file or argument in errors', async () => {
    const config = join(EXAMPLES, 'two-hop.yaml');
    const missing = join(work, 'nope.pcap');
    await expect(replayCommand.run(['--config', config, '--in', `cli0=${missing}`, '--out', join(work, 'e1')])).rejects.toThrow(missing);
    await expect(replayCommand.run(['--config', config, '--in', `eth9=${join(work, 'cli0.pcap')}`, '--out', join(work, 'e2')])).rejects.toThrow(
      /--in eth9=.*unknown interface 'eth9'/,
    );
    await expect(replayCommand.run(['--config', config, '--in', 'cli0', '--out', join(work, 'e3')])).rejects.toThrow(UsageError);
    await expect(replayCommand.run(['--config', config, '--out', join(work, 'e4')])).rejects.toThrow(UsageError);
  });

  it('explain prints the journey of one packet and exits 1 when it is dropped', async () => {
    const lines: string[] = [];
    const log = console.log;
    console.log = (s: string) => lines.push(s);
    try {
      const code = await explainCommand.run(['--config', join(EXAMPLES, 'two-hop.yaml'), '--in', 'cli0', '--packet', 'tcp 10.0.0.1:1234 > 10.0.0.2:80', '--dst-mac', SERVER.mac]);
      expect(code).toBe(0);
    } finally {
      console.log = log;
    }
    const text = lines.join('\n');
    expect(text).toMatch(/classifier client-server-tcp: IPv4 tcp from 10\.0\.0\.1\/32 to 10\.0\.0\.2\/32/);
    expect(text).toMatch(/hop 1 \(SI 254\): instance pp1\d -> out sf1\di, dst MAC 02:00:00:00:1\d:01/);
    expect(text).toMatch(/hop 2 \(SI 253\): instance pp2\d -> out sf2\di/);
    expect(text).toMatch(/end of chain: MACs 02:00:00:00:00:01 > 02:00:00:00:00:02 -> out srv0/);
    expect(text).toMatch(/^verdict: chain \(chain pc1 via pp1\d, pp2\d\) -> srv0$/m);
    await expect(explainCommand.run(['--config', join(EXAMPLES, 'two-hop.yaml'), '--in', 'cli0', '--packet', 'gre 1.2.3.4 > 5.6.7.8'])).rejects.toThrow(UsageError);
  });

  it('explain shows the encapsulation at each hop and the tap copy (examples/aware-tap.yaml)', async () => {
    const lines: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => void lines.push(a.join(' '));
    try {
      expect(await explainCommand.run(['--config', join(EXAMPLES, 'aware-tap.yaml'), '--in', 'cli0', '--packet', 'tcp 10.0.0.1:1234 > 10.0.0.2:80'])).toBe(0);
    } finally {
      console.log = log;
    }
    const text = lines.join('\n');
    expect(text).toMatch(/hop 1 \(SI 254\): instance pp11 -> out sf11i, dst MAC 02:00:00:00:11:01, carrying NSH SPI 1 SI 255$/m);
    expect(text).toMatch(/hop 2 \(SI 253\): instance pp21 -> out sf21i, dst MAC 02:00:00:00:21:01$/m);
    expect(text).toMatch(/tap copy: instance pp-ids -> out tap0, dst MAC 02:00:00:00:99:01$/m);
    expect(text).toMatch(/end of chain: MACs 02:00:00:00:00:01 > 02:00:00:00:00:02 -> out srv0/);

    // Hop 2 drained (all weights 0): the journey ends at hop 2 with the reason.
    const drained = join(work, 'drained.yaml');
    const yaml = await readFile(join(EXAMPLES, 'two-hop.yaml'), 'utf8');
    await writeFile(drained, yaml.replace(/(    egress: sf2\d-out\n)/g, '$1    service_function_parameters: {weight: 0}\n'));
    lines.length = 0;
    console.log = (s: string) => lines.push(s);
    try {
      const code = await explainCommand.run(['--config', drained, '--in', 'cli0', '--packet', 'udp 10.0.0.1:1 > 10.0.0.2:2']);
      expect(code).toBe(1);
    } finally {
      console.log = log;
    }
    expect(lines.join('\n')).toMatch(/2\. in sf1\de \(from the SF\): DROPPED: no_instance\nverdict: drop:no_instance/);
  });
});
