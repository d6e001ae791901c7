// Per-instance packet and byte counters and the batch counter, counted by the data path itself
// (an Engine over in-memory ports), checked against what each SF interface was actually sent.
import { describe, expect, it } from 'vitest';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import { Engine, RX_BATCH } from '../src/dataplane/engine.js';
import { buildFrame } from '../src/dataplane/frames.js';
import { QueuePort } from '../src/dataplane/io/queue.js';
import { Ctr } from '../src/packet/counters.js';
import { CLIENT_MAC, SERVER_MAC, twoHop } from './support/sfc-state.js';

describe('instance counters', () => {
  it('count the packets and bytes each instance is sent, and the batches', () => {
    const tables = compileTables(twoHop({ hops: 1, perHop: 2 }).state);
    const sent = new Map<string, Uint8Array[]>();
    const ports = new Map<string, QueuePort>();
    const engine = new Engine((name) => {
      const q = new QueuePort(name, (frame) => (sent.get(name) ?? sent.set(name, []).get(name)!).push(frame));
      ports.set(name, q);
      return q;
    });
    engine.publish(tables);
    engine.breathe();
    const frames = 300;
    for (let n = 0; n < frames; n++) {
      const frameLen = 64 + (n % 7) * 100; // lengths differ, so bytes are not packets times a constant
      ports.get('cli0')!.enqueue(
        buildFrame({ ethSrc: CLIENT_MAC, ethDst: SERVER_MAC, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' }, l4: { proto: 'tcp', sport: 20000 + n, dport: 80 }, frameLen }),
      );
    }
    while (engine.breathe() > 0);
    const stats = engine.stats();
    let packets = 0;
    tables.instanceNames.forEach((n, k) => {
      const got = sent.get(tables.interfaces[tables.instIfIn[k]]) ?? [];
      expect(stats.instancePackets[k], n.portPair).toBe(got.length);
      expect(stats.instanceBytes[k], n.portPair).toBe(got.reduce((sum, f) => sum + f.length, 0));
      expect(got.length, `${n.portPair} carried some flows`).toBeGreaterThan(0);
      packets += got.length;
    });
    expect(packets).toBe(frames);
    expect(stats.events[Ctr.batches]).toBe(Math.ceil(frames / RX_BATCH));
  });
});
