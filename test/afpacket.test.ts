/*
 * AF_PACKET ports on real veth pairs inside throwaway network namespaces (root).
 *
 * The test process enters the namespace (enterNetns) so the sockets it opens live there; child
 * processes (TCP endpoints) run with `ip netns exec`.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFrame, mulberry32, type FrameSpec } from '../src/dataplane/frames.js';
import { Batch, BATCH } from '../src/packet/batch.js';
import { openAfPacket } from '../src/dataplane/io/afpacket.js';
import { loadCap, openCap } from '../src/dataplane/io/cap.js';
import { nativeAvailable, type NativePort } from '../src/dataplane/io/native.js';
import type { PortIO } from '../src/dataplane/io/portio.js';
import { backendNamed } from '../src/dataplane/io/registry.js';
import { prerequisites } from './support/prereq.js';
import { receive, sleep, transmit } from './support/portio.js';
import { enterHostsNamespace, enterVethNamespace, nativeCounter as counter, sh, vethPair } from './support/netns.js';

const NS = 'sfct-afp';
const CLIENT_NS = 'sfct-afp-c';
const SERVER_NS = 'sfct-afp-s';

const run = prerequisites('afpacket', {
  root: true,
  commands: ['ip', 'ethtool'],
  check: () => (nativeAvailable() ? null : 'the native addon is not built (npm run build:native)'),
});

function udp(i: number, bytes: number, extra: Partial<FrameSpec> = {}): Uint8Array {
  const payload = new Uint8Array(bytes);
  payload.fill(i & 0xff);
  payload[0] = i >> 8;
  payload[1] = i & 0xff;
  return buildFrame({
    ip: { ver: 4, src: '10.1.0.1', dst: '10.1.0.2' },
    l4: { proto: 'udp', sport: 1000 + (i % 50), dport: 53 },
    payload,
    ...extra,
  });
}

describe.skipIf(!run)('AF_PACKET ports', () => {
  let leave: () => void = () => {};
  const open: PortIO[] = [];
  const track = <T extends PortIO>(p: T): T => (open.push(p), p);

  beforeAll(() => {
    leave = enterVethNamespace(NS, [['va', 'vb']]);
  });

  afterAll(() => {
    for (const p of open) p.close();
    leave();
  });

  it.each([2, 3] as const)('TPACKET_V%i: moves 1,000 frames of various sizes (some VLAN-tagged) a -> b in order, byte for byte, no echo on a', async (version) => {
    const a = track(backendNamed('afpacket').open('va', { ring: { version } }));
    const b = track(backendNamed('afpacket').open('vb', { ring: { version } }));
    const rnd = mulberry32(7);
    const frames = Array.from({ length: 1000 }, (_, i) =>
      i % 7 === 3 ? udp(i, 20 + Math.floor(rnd() * 1400), { vlans: [100 + (i % 5)] }) : udp(i, 18 + Math.floor(rnd() * 1454)),
    );
    frames.push(buildFrame({ vlans: [7, 8], qinq: true, ip: { ver: 6, src: 'fd00::1', dst: 'fd00::2' }, l4: { proto: 'tcp' }, payload: 300 }));
    expect(transmit(a, frames)).toBe(frames.length);
    const got = await receive(b, frames.length);
    expect(got.length).toBe(frames.length);
    const differ = frames.flatMap((f, i) => (Buffer.compare(f, got[i]) === 0 ? [] : [i]));
    expect(differ).toEqual([]);
    expect(await receive(a, 1, 100)).toEqual([]);
  });

  it('fires the readiness callback once per arm when frames arrive', async () => {
    const a = track(backendNamed('afpacket').open('va'));
    const b = track(backendNamed('afpacket').open('vb'));
    let calls = 0;
    b.onReadable!(() => calls++);
    await sleep(30);
    expect(calls).toBe(0); // nothing waiting: the poll sleeps
    transmit(a, [udp(1, 100), udp(2, 100)]);
    await sleep(50);
    expect(calls).toBe(1);
    transmit(a, [udp(3, 100)]);
    await sleep(50);
    expect(calls).toBe(1); // one-shot until armed again
    b.onReadable!(() => calls++);
    await sleep(20);
    expect(calls).toBe(2); // level-triggered: frames are still waiting
    expect((await receive(b, 3)).length).toBe(3);
  });

  it('counts frames larger than the egress MTU instead of sending them', async () => {
    const a = track(openAfPacket('va'));
    const b = track(openAfPacket('vb'));
    const big = udp(1, 1600); // fits a batch slot, not a 1500-byte MTU
    const ok = udp(2, 100);
    expect(transmit(a, [big, ok])).toBe(1);
    expect(counter(a, 'tx_too_big')).toBe(1);
    const got = await receive(b, 2, 200);
    expect(got).toEqual([ok]);
  });

  it('fanout: two sockets in one group split the flows and keep each flow on one socket', async () => {
    const a = track(openAfPacket('va'));
    const group = 0x1000 + (process.pid & 0xfff);
    const s = [track(openAfPacket('vb', { fanoutGroup: group })), track(openAfPacket('vb', { fanoutGroup: group }))];
    const flows = 64;
    const send = () => transmit(a, Array.from({ length: flows * 2 }, (_, i) => udp(i % flows, 60)));
    const owner = new Map<number, Set<number>>();
    for (let round = 0; round < 2; round++) {
      send();
      await sleep(50);
      for (let w = 0; w < 2; w++) {
        for (const f of await receive(s[w], flows * 2, 100)) {
          const sport = (f[34] << 8) | f[35];
          const set = owner.get(sport) ?? new Set<number>();
          set.add(w);
          owner.set(sport, set);
        }
      }
    }
    const perSocket = [0, 0];
    for (const set of owner.values()) {
      expect(set.size).toBe(1);
      perSocket[[...set][0]]++;
    }
    expect(owner.size).toBe(50); // sports 1000..1049
    expect(perSocket[0]).toBeGreaterThan(5);
    expect(perSocket[1]).toBeGreaterThan(5);
  });

  it('fanout groups on two interfaces, joined in the same order, give both directions of a flow to the same member', async () => {
    vethPair(NS, 'vx', 'vy');
    const a = track(openAfPacket('va'));
    const e = track(openAfPacket('vx'));
    const base = 0x2000 + (process.pid & 0xfff) * 2;
    // Member i of each group = "worker i"; the runtime opens them in this order from one thread.
    const fwd = [0, 1, 2].map(() => track(openAfPacket('vb', { fanoutGroup: base })));
    const rev = [0, 1, 2].map(() => track(openAfPacket('vy', { fanoutGroup: base + 1 })));
    const flows = 48;
    const frame = (i: number, reverse: boolean) =>
      buildFrame({
        ip: reverse ? { ver: 4, src: '10.1.0.2', dst: `10.1.1.${i}` } : { ver: 4, src: `10.1.1.${i}`, dst: '10.1.0.2' },
        l4: reverse ? { proto: 'tcp', sport: 80, dport: 20000 + i } : { proto: 'tcp', sport: 20000 + i, dport: 80 },
      });
    transmit(a, Array.from({ length: flows }, (_, i) => frame(i, false)));
    transmit(e, Array.from({ length: flows }, (_, i) => frame(i, true)));
    await sleep(50);
    const memberOf = async (group: NativePort[], portAt: number): Promise<Map<number, number>> => {
      const m = new Map<number, number>();
      for (let w = 0; w < group.length; w++) {
        for (const f of await receive(group[w], flows, 50)) m.set((f[portAt] << 8) | f[portAt + 1], w);
      }
      return m;
    };
    const forward = await memberOf(fwd, 34); // TCP source port of the forward direction
    const reverse = await memberOf(rev, 36); // TCP destination port of the reverse direction
    expect(forward.size).toBe(flows);
    expect(new Set(forward.values()).size).toBe(3);
    for (const [port, w] of forward) expect(reverse.get(port), `flow ${port}`).toBe(w);
  });

  it('reports a down link, and a deleted interface as gone without crashing or spinning', async () => {
    vethPair(NS, 'vc', 'vd');
    const c = track(openAfPacket('vc'));
    const d = track(openAfPacket('vd'));
    expect(c.isUp()).toBe(true);
    sh(`ip -n ${NS} link set vd down`);
    await sleep(250); // isUp trusts its last look for 200 ms
    expect(d.isUp()).toBe(false);
    expect(c.isUp()).toBe(false); // no carrier: the peer is down
    sh(`ip -n ${NS} link set vd up`);
    await sleep(250);
    expect(d.isUp()).toBe(true);

    let gone = 0;
    let errors = 0;
    c.onGone = () => gone++;
    c.onReadable(() => errors++);
    sh(`ip -n ${NS} link del vc`);
    await sleep(100);
    expect(errors).toBe(1); // the poll reported the error once, then stopped
    expect(c.isUp()).toBe(false);
    expect(gone).toBe(1);
    const b = new Batch();
    expect(c.rxBurst(b, 0, BATCH)).toBe(0);
    b.push(udp(1, 60), 0);
    expect(c.txBurst(b, Uint16Array.of(0), 1)).toBe(0);
    await sleep(250);
    expect(d.isUp()).toBe(false); // its peer went with it
    c.close();
    c.close(); // twice is harmless
  });
});

// Real TCP between two Linux hosts through a userspace bridge of two ports (AF_PACKET, and cap for
// comparison). The hosts keep their default veth offloads (TSO, checksum offload), so the bridge
// receives 64 KiB GSO frames with partial checksums; the server's receive checksum offload is off
// so its kernel verifies every checksum we produce.
describe.skipIf(!run)('AF_PACKET offload repair with real TCP', () => {
  let leave: () => void = () => {};
  const ports: NativePort[] = [];
  const cleanups: (() => void)[] = [];
  const children: ReturnType<typeof spawn>[] = [];

  beforeAll(() => {
    leave = enterHostsNamespace(NS, [
      { ns: CLIENT_NS, dp: 'c0', ip: '10.9.0.1' },
      { ns: SERVER_NS, dp: 's0', ip: '10.9.0.2' },
    ]);
  });

  afterAll(() => {
    for (const c of children) if (c.exitCode === null) c.kill();
    for (const p of ports) p.close();
    for (const f of cleanups) f();
    leave();
  });

  /** Run the 4 MiB transfer through a bridge of x and y; the server's reply must match the client's data. */
  async function transfer(x: PortIO, y: PortIO): Promise<void> {
    const stop = bridge(x, y);
    const server = spawn('ip', ['netns', 'exec', SERVER_NS, process.execPath, '-e', TCP_SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(server);
    await new Promise<void>((resolve) => server.stdout!.once('data', () => resolve()));
    const client = spawn('ip', ['netns', 'exec', CLIENT_NS, process.execPath, '-e', TCP_CLIENT], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(client);
    let out = '';
    client.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((resolve) => client.once('exit', resolve));
    stop();
    const result = JSON.parse(out) as { sent: number; hash: string; reply: { n: number; hash: string } };
    expect(result.reply).toEqual({ n: result.sent, hash: result.hash });
  }

  it.each([2, 3] as const)('TPACKET_V%i: delivers a 4 MiB TCP stream intact, with GSO frames cut to the MTU', async (version) => {
    const c0 = openAfPacket('c0', { version });
    const s0 = openAfPacket('s0', { version });
    ports.push(c0, s0);
    await transfer(c0, s0);
    expect(counter(c0, 'rx_gso_frames')).toBeGreaterThan(0);
    expect(counter(c0, 'rx_gso_segments')).toBeGreaterThan(counter(c0, 'rx_gso_frames'));
    expect(counter(s0, 'tx_too_big') + counter(c0, 'tx_too_big')).toBe(0);
    expect(counter(c0, 'rx_malformed') + counter(s0, 'rx_malformed')).toBe(0);
  });

  it('cap backend: the same stream through libpcap, super-frames cut and checksums recomputed in JS', async (ctx) => {
    try {
      loadCap();
    } catch {
      ctx.skip(); // cap.test.ts reports a missing libpcap
    }
    const c0 = openCap('c0');
    const s0 = openCap('s0');
    cleanups.push(() => (c0.close(), s0.close()));
    await transfer(c0, s0);
    expect(c0.rxTooBig + s0.rxTooBig + c0.rxOverflow + s0.rxOverflow + c0.txFailed + s0.txFailed).toBe(0);
  });
});

/** Forward everything between two ports, driven by readiness (as the runtime does). */
function bridge(x: PortIO, y: PortIO): () => void {
  const batch = new Batch();
  const idx = Uint16Array.from({ length: BATCH }, (_, i) => i);
  let scheduled = false;
  let stopped = false;
  const move = (from: PortIO, to: PortIO): number => {
    batch.reset();
    const n = from.rxBurst(batch, 0, BATCH);
    if (n > 0) to.txBurst(batch, idx, n);
    return n;
  };
  const runOnce = (): void => {
    scheduled = false;
    if (stopped) return;
    let n = 0;
    for (let i = 0; i < 64; i++) {
      n = move(x, y) + move(y, x);
      if (n === 0) break;
    }
    if (n > 0) wake();
    else {
      x.onReadable!(wake);
      y.onReadable!(wake);
    }
  };
  const wake = (): void => {
    if (scheduled || stopped) return;
    scheduled = true;
    setImmediate(runOnce);
  };
  wake();
  return () => {
    stopped = true;
  };
}

const TCP_SERVER = `
const net = require('net'), crypto = require('crypto');
const srv = net.createServer((s) => {
  const h = crypto.createHash('sha256'); let n = 0;
  s.on('data', (d) => { h.update(d); n += d.length; });
  s.on('end', () => { s.end(JSON.stringify({ n, hash: h.digest('hex') })); srv.close(); });
});
srv.listen(5201, '10.9.0.2', () => console.log('ready'));
`;

const TCP_CLIENT = `
const net = require('net'), crypto = require('crypto');
const data = Buffer.alloc(4 << 20); let x = 12345;
for (let i = 0; i < data.length; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; data[i] = x >>> 24; }
const hash = crypto.createHash('sha256').update(data).digest('hex');
const s = net.connect(5201, '10.9.0.2', () => s.end(data));
let reply = '';
s.on('data', (d) => (reply += d));
s.on('end', () => console.log(JSON.stringify({ sent: data.length, hash, reply: JSON.parse(reply) })));
`;
