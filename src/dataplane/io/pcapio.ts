/*
 * pcap files: the reader behind replay (pcap in -> engine) and the writer behind capture (engine ->
 * one pcap per port). Classic libpcap format only (not pcapng).
 *
 * Reading uses the pcap-parser package, which understands both byte orders of the microsecond
 * format (magic 0xa1b2c3d4) but not the nanosecond one (0xa1b23c4d). Shim: the file is read whole,
 * a nanosecond magic is rewritten to the microsecond magic of the same byte order before parsing,
 * and the sub-second field is then taken as nanoseconds instead of microseconds. pcap-parser
 * silently stops at a cut-off record, so truncation is detected here by checking that the records
 * account for every byte of the file. Every error message starts with the file name.
 *
 * Times are float64 nanoseconds since the epoch (Batch.time). For present-day dates a float64 step
 * is 256 ns, so nanosecond times are approximate; microsecond times written by PcapWriter and read
 * back compare equal (the writer rounds to the nearest microsecond).
 *
 * Writing produces little-endian, microsecond, linktype 1 (Ethernet), snaplen 65535 files that
 * tcpdump and Wireshark open. Records are staged in a 256 KiB buffer handed to a write stream when
 * full; close() flushes and resolves once the file is complete (or rejects with the first error).
 */
import { openSync, createWriteStream, type WriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';

export const LINKTYPE_ETHERNET = 1;
export const PCAP_SNAPLEN = 65535;

const MAGIC_US = 0xa1b2c3d4;
const MAGIC_NS = 0xa1b23c4d;
const GLOBAL_HEADER = 24;
const RECORD_HEADER = 16;

export interface PcapFrame {
  data: Uint8Array;
  timeNs: number;
}

/** The part of pcap-parser's (untyped, CommonJS) interface used here. */
interface PcapParser {
  on(event: 'globalHeader', cb: (h: { linkLayerType: number }) => void): this;
  on(
    event: 'packet',
    cb: (p: { header: { timestampSeconds: number; timestampMicroseconds: number }; data: Uint8Array }) => void,
  ): this;
  on(event: 'error', cb: (e: Error) => void): this;
  on(event: 'end', cb: () => void): this;
}
const pcapParser = createRequire(import.meta.url)('pcap-parser') as { parse(input: Readable): PcapParser };

/** Read a whole classic pcap file (either byte order, micro- or nanosecond timestamps). */
export async function readPcap(path: string): Promise<{ linktype: number; frames: PcapFrame[] }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read pcap file: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (bytes.length < GLOBAL_HEADER) {
    throw new Error(`${path}: truncated pcap file: ${bytes.length} bytes, shorter than the 24-byte global header`);
  }
  const nanos = fixNanosecondMagic(bytes);
  const subsecondNs = nanos ? 1 : 1000;

  return new Promise((resolve, reject) => {
    let linktype = -1;
    let consumed = 0;
    let failed = false;
    const frames: PcapFrame[] = [];
    const parser = pcapParser.parse(Readable.from([bytes]));
    parser.on('globalHeader', (h) => {
      linktype = h.linkLayerType;
      consumed = GLOBAL_HEADER;
    });
    parser.on('packet', ({ header, data }) => {
      frames.push({
        data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
        timeNs: header.timestampSeconds * 1e9 + header.timestampMicroseconds * subsecondNs,
      });
      consumed += RECORD_HEADER + data.byteLength;
    });
    parser.on('error', (e) => {
      failed = true;
      const pcapng = bytes.readUInt32BE(0) === 0x0a0d0d0a;
      const hint = pcapng ? ' (pcapng is not supported: convert with editcap -F pcap)' : '';
      reject(new Error(`${path}: not a readable pcap file: ${e.message}${hint}`));
    });
    parser.on('end', () => {
      if (failed) return;
      if (consumed !== bytes.length) {
        const stray = bytes.length - consumed;
        const where = `record ${frames.length + 1} is cut off (${stray} stray bytes at offset ${consumed})`;
        reject(new Error(`${path}: truncated pcap file: ${where}`));
        return;
      }
      resolve({ linktype, frames });
    });
  });
}

/** If `bytes` starts with a nanosecond magic, rewrite it to the microsecond one in place; report which. */
function fixNanosecondMagic(bytes: Buffer): boolean {
  if (bytes.readUInt32BE(0) === MAGIC_NS) {
    bytes.writeUInt32BE(MAGIC_US, 0);
    return true;
  }
  if (bytes.readUInt32LE(0) === MAGIC_NS) {
    bytes.writeUInt32LE(MAGIC_US, 0);
    return true;
  }
  return false;
}

const CHUNK = 256 * 1024;

/** Writes an Ethernet pcap (little-endian, microseconds, snaplen 65535). */
/** Write the pcap global header (microsecond stamps, Ethernet) at `at`; returns the offset after it. */
export function writePcapHeader(h: Buffer, at: number): number {
  h.writeUInt32LE(MAGIC_US, at);
  h.writeUInt16LE(2, at + 4); // version 2.4
  h.writeUInt16LE(4, at + 6);
  h.writeInt32LE(0, at + 8); // thiszone
  h.writeUInt32LE(0, at + 12); // sigfigs
  h.writeUInt32LE(PCAP_SNAPLEN, at + 16);
  h.writeUInt32LE(LINKTYPE_ETHERNET, at + 20);
  return at + GLOBAL_HEADER;
}

/** Bytes the record of `frame` takes (cut to the snaplen). */
export const pcapRecordBytes = (frame: Uint8Array) => RECORD_HEADER + Math.min(frame.length, PCAP_SNAPLEN);

/** Write one record (frame cut to the snaplen, stamped `timeNs` rounded to µs) at `o`; returns the offset after it. */
export function writePcapRecord(c: Buffer, o: number, frame: Uint8Array, timeNs: number): number {
  const caplen = Math.min(frame.length, PCAP_SNAPLEN);
  const totalUs = Math.round(timeNs / 1000);
  const sec = Math.floor(totalUs / 1e6);
  c.writeUInt32LE(sec >>> 0, o);
  c.writeUInt32LE(totalUs - sec * 1e6, o + 4);
  c.writeUInt32LE(caplen, o + 8);
  c.writeUInt32LE(frame.length, o + 12);
  c.set(caplen === frame.length ? frame : frame.subarray(0, caplen), o + RECORD_HEADER);
  return o + RECORD_HEADER + caplen;
}

export class PcapWriter {
  readonly path: string;
  private readonly stream: WriteStream;
  private chunk: Buffer;
  private used = 0;
  private error: Error | null = null;

  /** Creates (or truncates) the file now, so a bad path fails here rather than at close(). */
  constructor(path: string) {
    this.path = path;
    const fd = openSync(path, 'w');
    this.stream = createWriteStream(path, { fd });
    this.stream.on('error', (e) => (this.error ??= e));
    this.chunk = Buffer.allocUnsafe(CHUNK);
    this.used = writePcapHeader(this.chunk, 0);
  }

  /** Append one frame (cut to the snaplen) stamped `timeNs` (ns since the epoch, rounded to µs). */
  write(frame: Uint8Array, timeNs: number): void {
    if (this.used + pcapRecordBytes(frame) > this.chunk.length) this.flush();
    this.used = writePcapRecord(this.chunk, this.used, frame, timeNs);
  }

  /** Flush what is staged and close the file. */
  async close(): Promise<void> {
    this.flush();
    this.stream.end();
    try {
      await finished(this.stream);
    } catch (e) {
      this.error ??= e instanceof Error ? e : new Error(String(e));
    }
    if (this.error) throw new Error(`${this.path}: pcap write failed: ${this.error.message}`);
  }

  private flush(): void {
    if (this.used === 0) return;
    this.stream.write(this.chunk.subarray(0, this.used));
    this.chunk = Buffer.allocUnsafe(CHUNK);
    this.used = 0;
  }
}
