/*
 * FrameMailbox (dataplane/mailbox.ts): frames handed from the main thread to a worker in shared
 * memory. Order and bytes kept, a full ring or an oversized record refused (the caller sends those
 * by message), and the sleep handshake: a post to a worker that said it sleeps asks for a wake-up,
 * and a worker about to sleep sees frames posted before.
 */
import { describe, expect, it } from 'vitest';
import { FrameMailbox, MAILBOX_FRAME_MAX } from '../src/dataplane/mailbox.js';

const frame = (n: number, len = 60) => Uint8Array.from({ length: len }, (_, i) => (n + i) & 0xff);

function pair(): [FrameMailbox, FrameMailbox] {
  const sab = new SharedArrayBuffer(8 + FrameMailbox.BYTES);
  return [new FrameMailbox(sab, 8), new FrameMailbox(sab, 8)]; // producer and consumer views of one mailbox
}

const drained = (box: FrameMailbox) => {
  const got: [string, number[]][] = [];
  box.drain((iface, f) => got.push([iface, [...f]]));
  return got;
};

describe('FrameMailbox', () => {
  it('hands frames over in order, byte for byte, each once, across wrap-arounds of the ring', () => {
    const [main, worker] = pair();
    for (let round = 0; round < 5; round++) {
      const frames = Array.from({ length: 100 }, (_, i) => ({ iface: `sf${i % 7}i`, frame: frame(round * 100 + i, 14 + (i % 200)) }));
      expect(main.post(frames).taken).toBe(100);
      expect(drained(worker)).toEqual(frames.map((f) => [f.iface, [...f.frame]]));
      expect(drained(worker)).toEqual([]);
    }
  });

  it('takes what fits: not past a full ring, nor a name or frame too long for a record (those go by message)', () => {
    const [main, worker] = pair();
    const many = Array.from({ length: 300 }, (_, i) => ({ iface: 'p0', frame: frame(i) }));
    expect(main.post(many).taken).toBe(256);
    expect(drained(worker).length).toBe(256);
    expect(main.post([{ iface: 'p0', frame: frame(1) }, { iface: 'p0', frame: frame(2, MAILBOX_FRAME_MAX + 1) }, { iface: 'p0', frame: frame(3) }]).taken).toBe(1);
    expect(main.post([{ iface: 'an-interface-name', frame: frame(4) }]).taken).toBe(0);
    expect(main.post([{ iface: 'p1', frame: frame(5, MAILBOX_FRAME_MAX) }]).taken).toBe(1);
    expect(drained(worker).map(([iface, f]) => [iface, f.length])).toEqual([['p0', 60], ['p1', MAILBOX_FRAME_MAX]]);
  });

  it('asks for a wake-up only while the worker sleeps, and a worker about to sleep sees what waits', () => {
    const [main, worker] = pair();
    expect(worker.sleeping(false)).toBe(false);
    expect(main.post([{ iface: 'p0', frame: frame(1) }]).wake).toBe(false); // awake: it drains at its next breath
    expect(worker.sleeping(true)).toBe(true); // a frame waits: do not sleep
    expect(drained(worker).length).toBe(1);
    expect(worker.sleeping(true)).toBe(false); // nothing waits: asleep
    expect(main.post([{ iface: 'p0', frame: frame(2) }]).wake).toBe(true);
    expect(main.post([]).wake).toBe(false);
  });
});
