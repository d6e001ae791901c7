// pcap file I/O (write -> read round trip, hand-crafted big-endian and nanosecond files, truncation,
// tcpdump interoperability) and the in-memory QueuePort.
import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Batch, BATCH, MAX_FRAME } from '../src/packet/batch.js';
import { PCAP_SNAPLEN, PcapWriter, readPcap } from '../src/dataplane/io/pcapio.js';
import { QueuePort } from '../src/dataplane/io/queue.js';
import { prerequisites } from './support/prereq.js';

const dir = mkdtempSync(join(tmpdir(), 'sfct-pcapio-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const T0 = 1_700_000_000; // seconds since the epoch
const timeOf = (sec: number, subNs: number): number => sec * 1e9 + subNs;

/** A frame of `len` bytes with distinct content per (n, len). */
function frameOf(n: number, len: number): Uint8Array {
  const f = new Uint8Array(len);
  for (let k = 0; k < len; k++) f[k] = (k * 7 + n * 13) & 0xff;
  f[12] = 0x08; // IPv4 ethertype, so tcpdump sees Ethernet frames
  f[13] = 0x00;
  return f;
}

/** Bytes of a classic pcap file built field by field (not with PcapWriter). */
interface CraftedRecord {
  sec: number;
  sub: number;
  data: Uint8Array;
}
function craftPcap(opts: { bigEndian: boolean; nanos: boolean; linktype: number; records: CraftedRecord[] }): Buffer {
  const parts: Buffer[] = [];
  const h = Buffer.alloc(24);
  const u32 = (b: Buffer, v: number, o: number) => (opts.bigEndian ? b.writeUInt32BE(v, o) : b.writeUInt32LE(v, o));
  const u16 = (b: Buffer, v: number, o: number) => (opts.bigEndian ? b.writeUInt16BE(v, o) : b.writeUInt16LE(v, o));
  u32(h, opts.nanos ? 0xa1b23c4d : 0xa1b2c3d4, 0);
  u16(h, 2, 4);
  u16(h, 4, 6);
  u32(h, 262144, 16);
  u32(h, opts.linktype, 20);
  parts.push(h);
  for (const r of opts.records) {
    const rh = Buffer.alloc(16);
    u32(rh, r.sec, 0);
    u32(rh, r.sub, 4);
    u32(rh, r.data.length, 8);
    u32(rh, r.data.length, 12);
    parts.push(rh, Buffer.from(r.data));
  }
  return Buffer.concat(parts);
}

describe('PcapWriter + readPcap', () => {
  const frames = [60, 64, 1514, 9000, 1, 65535].map((len, n) => ({
    data: frameOf(n, len),
    timeNs: timeOf(T0 + n * 3, ((n * 123_457) % 1_000_000) * 1000),
  }));
  const roundTrip = join(dir, 'roundtrip.pcap');

  it('round-trips bytes, times and the Ethernet linktype', async () => {
    const w = new PcapWriter(roundTrip);
    for (const f of frames) w.write(f.data, f.timeNs);
    await w.close();
    const got = await readPcap(roundTrip);
    expect(got.linktype).toBe(1);
    expect(got.frames.length).toBe(frames.length);
    got.frames.forEach((f, n) => {
      expect(f.timeNs, `frame ${n} time`).toBe(frames[n].timeNs);
      expect(Buffer.from(f.data).equals(Buffer.from(frames[n].data)), `frame ${n} bytes`).toBe(true);
    });
  });

  it('writes the standard little-endian microsecond header', () => {
    const bytes = readFileSync(roundTrip);
    expect(bytes.readUInt32LE(0)).toBe(0xa1b2c3d4);
    expect([bytes.readUInt16LE(4), bytes.readUInt16LE(6)]).toEqual([2, 4]);
    expect(bytes.readUInt32LE(16)).toBe(PCAP_SNAPLEN);
    expect(bytes.readUInt32LE(20)).toBe(1);
  });

  it('rounds times to the nearest microsecond, carrying into the seconds', async () => {
    const path = join(dir, 'rounding.pcap');
    const w = new PcapWriter(path);
    w.write(frameOf(0, 60), timeOf(T0, 999_999_700)); // rounds up to the next second
    w.write(frameOf(1, 60), timeOf(T0, 1_400)); // rounds down to 1 µs
    await w.close();
    const bytes = readFileSync(path);
    expect([bytes.readUInt32LE(24), bytes.readUInt32LE(28)]).toEqual([T0 + 1, 0]);
    expect([bytes.readUInt32LE(24 + 16 + 60), bytes.readUInt32LE(28 + 16 + 60)]).toEqual([T0, 1]);
  });

  it('cuts frames beyond the snaplen and records their original length', async () => {
    const path = join(dir, 'snap.pcap');
    const big = frameOf(9, PCAP_SNAPLEN + 100);
    const w = new PcapWriter(path);
    w.write(big, timeOf(T0, 0));
    await w.close();
    const bytes = readFileSync(path);
    expect([bytes.readUInt32LE(32), bytes.readUInt32LE(36)]).toEqual([PCAP_SNAPLEN, PCAP_SNAPLEN + 100]);
    const got = await readPcap(path);
    expect(Buffer.from(got.frames[0].data).equals(Buffer.from(big.subarray(0, PCAP_SNAPLEN)))).toBe(true);
  });

  it('spans several internal chunks', async () => {
    const path = join(dir, 'many.pcap');
    const w = new PcapWriter(path);
    const n = 600; // 600 * 1530 bytes > 3 chunks of 256 KiB
    for (let k = 0; k < n; k++) w.write(frameOf(k, 1514), timeOf(T0 + k, k * 1000));
    await w.close();
    const got = await readPcap(path);
    expect(got.frames.length).toBe(n);
    expect(got.frames[n - 1].timeNs).toBe(timeOf(T0 + n - 1, (n - 1) * 1000));
    expect(Buffer.from(got.frames[417].data).equals(Buffer.from(frameOf(417, 1514)))).toBe(true);
  });

  it('fails at construction, naming the path, when the file cannot be created', () => {
    expect(() => new PcapWriter(join(dir, 'no-such-dir', 'x.pcap'))).toThrow(/no-such-dir/);
  });
});

describe('readPcap on crafted files', () => {
  const records = [
    { sec: T0, sub: 1, data: frameOf(1, 60) },
    { sec: T0 + 1, sub: 999_999, data: frameOf(2, 100) },
  ];

  it.each([
    ['little-endian microsecond', false, false],
    ['big-endian microsecond', true, false],
    ['little-endian nanosecond', false, true],
    ['big-endian nanosecond', true, true],
  ])('reads a %s file', async (_name, bigEndian, nanos) => {
    const recs = nanos ? [...records, { sec: T0 + 2, sub: 999_999_999, data: frameOf(3, 1514) }] : records;
    const path = join(dir, `crafted-${bigEndian ? 'be' : 'le'}-${nanos ? 'ns' : 'us'}.pcap`);
    writeFileSync(path, craftPcap({ bigEndian, nanos, linktype: 113, records: recs }));
    const got = await readPcap(path);
    expect(got.linktype).toBe(113);
    expect(got.frames.map((f) => f.timeNs)).toEqual(recs.map((r) => timeOf(r.sec, nanos ? r.sub : r.sub * 1000)));
    got.frames.forEach((f, n) => expect(Buffer.from(f.data).equals(Buffer.from(recs[n].data))).toBe(true));
  });

  it('reads an empty capture (header only)', async () => {
    const path = join(dir, 'empty.pcap');
    writeFileSync(path, craftPcap({ bigEndian: false, nanos: false, linktype: 1, records: [] }));
    expect(await readPcap(path)).toEqual({ linktype: 1, frames: [] });
  });

  it.each([
    ['in a record body', 24 + 16 + 60 + 16 + 50],
    ['in a record header', 24 + 16 + 60 + 7],
    ['in the global header', 10],
  ])('rejects a file truncated %s, naming the file', async (_where, cut) => {
    const path = join(dir, `truncated-${cut}.pcap`);
    writeFileSync(path, craftPcap({ bigEndian: false, nanos: false, linktype: 1, records }).subarray(0, cut));
    await expect(readPcap(path)).rejects.toThrow(new RegExp(`${path}: truncated pcap file`));
  });

  it('rejects a file that is not pcap, and a missing file, naming the file', async () => {
    const path = join(dir, 'not-pcap.pcapng');
    const ng = Buffer.alloc(64);
    ng.writeUInt32BE(0x0a0d0d0a, 0);
    writeFileSync(path, ng);
    await expect(readPcap(path)).rejects.toThrow(/not-pcap\.pcapng: not a readable pcap file.*pcapng is not supported/);
    await expect(readPcap(join(dir, 'missing.pcap'))).rejects.toThrow(/missing\.pcap: cannot read/);
  });
});

const haveTcpdump = prerequisites('pcap interoperability', { commands: ['tcpdump'] });
describe.skipIf(!haveTcpdump)('tcpdump reads PcapWriter files', () => {
  it('lists every frame with its microsecond time', async () => {
    const path = join(dir, 'tcpdump.pcap');
    const w = new PcapWriter(path);
    const times = [timeOf(T0, 1000), timeOf(T0 + 5, 250_000_000), timeOf(T0 + 7, 999_999_000)];
    times.forEach((t, n) => w.write(frameOf(n, 98), t));
    await w.close();
    const out = execFileSync('tcpdump', ['-r', path, '-nn', '-tt', '-e'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines = out.trim().split('\n');
    expect(lines.length).toBe(times.length);
    expect(lines.map((l) => l.split(' ')[0])).toEqual(['1700000000.000001', '1700000005.250000', '1700000007.999999']);
  });
});

describe('QueuePort', () => {
  it('receives queued frames into batch slots, at most `max` per burst, in order', () => {
    const q = new QueuePort('q0', () => {});
    const frames = [frameOf(1, 60), frameOf(2, 70), frameOf(3, 80)];
    frames.forEach((f, n) => q.enqueue(f, 1000 * (n + 1)));
    const b = new Batch();
    expect(q.rxBurst(b, 5, 2)).toBe(2);
    expect(q.pending).toBe(1);
    expect(q.rxBurst(b, 5, 32)).toBe(1);
    expect(q.rxBurst(b, 5, 32)).toBe(0);
    expect(b.count).toBe(3);
    for (let i = 0; i < 3; i++) {
      expect(b.frame(i)).toEqual(frames[i]);
      expect(b.port[i]).toBe(5);
      expect(b.time[i]).toBe(1000 * (i + 1));
    }
  });

  it('stops at a full batch and counts oversize frames as rx drops', () => {
    const q = new QueuePort('q0', () => {});
    q.enqueue(new Uint8Array(MAX_FRAME + 1));
    for (let k = 0; k < BATCH + 3; k++) q.enqueue(frameOf(k, 60));
    const b = new Batch();
    expect(q.rxBurst(b, 0, 1000)).toBe(BATCH);
    expect(q.rxTooBig).toBe(1);
    expect(q.pending).toBe(3);
    b.reset();
    expect(q.rxBurst(b, 0, 1000)).toBe(3);
    expect(b.frame(2)).toEqual(frameOf(BATCH + 2, 60));
  });

  it('transmits copies of the chosen slots to the sink with their times', () => {
    const sent: { frame: Uint8Array; timeNs: number }[] = [];
    const q = new QueuePort('q1', (frame, timeNs) => sent.push({ frame, timeNs }));
    const b = new Batch();
    for (let k = 0; k < 4; k++) b.push(frameOf(k, 64 + k), 0, 500 + k);
    expect(q.txBurst(b, Uint16Array.of(3, 1), 2)).toBe(2);
    b.data.fill(0); // the sink must hold copies, not views of the arena
    expect(sent.map((s) => s.timeNs)).toEqual([503, 501]);
    expect(sent[0].frame).toEqual(frameOf(3, 67));
    expect(sent[1].frame).toEqual(frameOf(1, 65));
  });

  it('loops a frame sent out of one port into the other (sf-loopback wiring)', () => {
    const inner = new QueuePort('sf-in', () => {});
    const outer = new QueuePort('sf-out', (frame, timeNs) => inner.enqueue(frame, timeNs));
    const b = new Batch();
    b.push(frameOf(7, 90), 0, 42);
    outer.txBurst(b, Uint16Array.of(0), 1);
    const rx = new Batch();
    expect(inner.rxBurst(rx, 1, 8)).toBe(1);
    expect(rx.frame(0)).toEqual(frameOf(7, 90));
    expect(rx.time[0]).toBe(42);
  });

  it('signals readability after enqueue, again while frames remain, never synchronously', async () => {
    const q = new QueuePort('q2', () => {});
    let calls = 0;
    q.onReadable(() => calls++);
    const tick = () => new Promise((r) => setImmediate(r));
    await tick();
    expect(calls).toBe(0); // nothing queued yet
    q.enqueue(frameOf(0, 60));
    q.enqueue(frameOf(1, 60));
    expect(calls).toBe(0);
    await tick();
    expect(calls).toBe(1); // one notification for both frames
    const b = new Batch();
    q.rxBurst(b, 0, 1); // one frame left: level-triggered, so it signals again
    await tick();
    expect(calls).toBe(2);
    q.rxBurst(b, 0, 1);
    await tick();
    expect(calls).toBe(2);
  });

  it('is up until closed; close drops queued frames', () => {
    const q = new QueuePort('q3', () => {});
    q.enqueue(frameOf(0, 60));
    expect(q.isUp()).toBe(true);
    q.close();
    expect(q.isUp()).toBe(false);
    expect(q.rxBurst(new Batch(), 0, 8)).toBe(0);
  });
});
