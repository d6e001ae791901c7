/*
 * AF_XDP ports on real veth pairs inside throwaway network namespaces (root, kernel with AF_XDP).
 *
 * The test process enters the namespace (enterNetns) so the sockets it opens, and the XDP
 * programs they attach, live there; other processes run with `ip netns exec`.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFrame } from '../src/dataplane/frames.js';
import { adoptXsk, afxdpBackend, createArena, discardXsk, openXsk } from '../src/dataplane/io/afxdp.js';
import { nativeAvailable, type NativePort } from '../src/dataplane/io/native.js';
import type { PortIO } from '../src/dataplane/io/portio.js';
import { Batch, BATCH, SLOT } from '../src/packet/batch.js';
import { prerequisites } from './support/prereq.js';
import { receive, sleep, transmit } from './support/portio.js';
import { enterHostsNamespace, enterVethNamespace, nativeCounter as counter, sh, snmpCounter } from './support/netns.js';

const NS = `sfct-xdp${process.pid}`;
const CLIENT_NS = `${NS}c`;
const SERVER_NS = `${NS}s`;

function afxdpMissing(): string | null {
  if (!nativeAvailable()) return 'the native addon is not built (npm run build:native)';
  try {
    afxdpBackend.load();
  } catch (e) {
    return (e as Error).message;
  }
  return null;
}

const run = prerequisites('afxdp', { root: true, commands: ['ip', 'ethtool', 'iperf3'], check: afxdpMissing });

function udp(i: number, bytes: number): Uint8Array {
  const payload = new Uint8Array(bytes).fill(i & 0xff);
  return buildFrame({ ip: { ver: 4, src: '10.1.0.1', dst: '10.1.0.2' }, l4: { proto: 'udp', sport: 1000 + (i % 50), dport: 53 }, payload });
}

/** The XDP program on `ifname` in NS as `ip link` reports it ('' when none). */
function xdpOn(ifname: string): string {
  const [link] = JSON.parse(sh(`ip -n ${NS} -j -d link show ${ifname}`)) as { xdp?: { mode: number; prog?: { name: string } } }[];
  const mode = ['none', 'native', 'generic'][link.xdp?.mode ?? 0] ?? 'other';
  return link.xdp?.prog === undefined ? '' : `${mode}:${link.xdp.prog.name}`;
}

/** Run `body` with GSO super-frames received whole (the default) or not (SFC_AFXDP_GSO=0: native XDP). */
function withGso<T>(gso: boolean, body: () => T): T {
  const before = process.env.SFC_AFXDP_GSO;
  if (gso) delete process.env.SFC_AFXDP_GSO;
  else process.env.SFC_AFXDP_GSO = '0';
  try {
    return body();
  } finally {
    if (before === undefined) delete process.env.SFC_AFXDP_GSO;
    else process.env.SFC_AFXDP_GSO = before;
  }
}

function tso(ns: string, ifname: string): string {
  return /tcp-segmentation-offload: (\w+)/.exec(sh(`ip netns exec ${ns} ethtool -k ${ifname}`))![1];
}

function openXdp(ifname: string): NativePort {
  return afxdpBackend.open(ifname) as NativePort;
}

/** Ports on `ifnames` sharing one arena, as a worker has them, and a batch over that arena. */
function arenaPorts(ifnames: string[]): { id: number; ports: NativePort[]; batch: Batch; close: () => void } {
  const arenas = afxdpBackend.threads.arenas;
  const id = createArena();
  const batch = new Batch(arenas.view(id));
  const ports = ifnames.map((n, k) => {
    const o = openXsk(n, { arena: id });
    expect(o.sharesUmem).toBe(k > 0); // the first registers the arena, the others share its UMEM
    return adoptXsk(o.fd, n)!;
  });
  return { id, ports, batch, close: () => (ports.forEach((p) => p.close()), arenas.release(id)) };
}

describe.skipIf(!run)('AF_XDP ports', () => {
  let leave: () => void = () => {};
  const open: PortIO[] = [];
  const track = <T extends PortIO>(p: T): T => (open.push(p), p);

  beforeAll(() => {
    leave = enterVethNamespace(NS, [['va', 'vb'], ['vc', 'vd']]);
  });

  afterAll(() => {
    for (const p of open) p.close();
    leave();
  });

  // GSO super-frames whole (default): a generic-mode program, the peer keeps TSO; else native
  // XDP, and the kernel turns the peer's TSO off while vb carries the program.
  it.each([
    { gso: true, mode: 'generic', peerTso: 'on' },
    { gso: false, mode: 'native', peerTso: 'off' },
  ])('moves 1,000 frames of various sizes a -> b in order, byte for byte, through $mode XDP; detaches with the last socket', async ({ gso, mode, peerTso }) => {
    expect(tso(NS, 'va')).toBe('on');
    const [b, a] = withGso(gso, () => [openXdp('vb'), openXdp('va')]);
    expect(xdpOn('va')).toBe(`${mode}:sfc_xsk_redir`);
    expect(xdpOn('vb')).toBe(`${mode}:sfc_xsk_redir`);
    expect(tso(NS, 'va')).toBe(peerTso);
    const frames = Array.from({ length: 1000 }, (_, i) => udp(i, 18 + ((i * 37) % 1400)));
    expect(transmit(a, frames)).toBe(frames.length);
    const got = await receive(b, frames.length);
    expect(got.length).toBe(frames.length);
    expect(got.every((f, i) => Buffer.from(f).equals(Buffer.from(frames[i])))).toBe(true);
    expect(counter(b, 'rx_frames')).toBe(1000);
    expect(counter(a, 'tx_frames')).toBe(1000);
    a.close();
    b.close();
    expect(xdpOn('va')).toBe('');
    expect(xdpOn('vb')).toBe('');
    expect(tso(NS, 'va')).toBe('on');
  });

  it('attaches natively, without GSO super-frames, to an interface that is not a veth (a TAP)', () => {
    sh(`ip -n ${NS} tuntap add dev xt0 mode tap && ip -n ${NS} link set xt0 up`);
    try {
      const o = openXsk('xt0');
      expect({ nativeXdp: o.nativeXdp, gso: o.gso }).toEqual({ nativeXdp: true, gso: false });
      expect(xdpOn('xt0')).toBe('native:sfc_xsk_redir');
      discardXsk(o.fd);
      expect(xdpOn('xt0')).toBe('');
    } finally {
      sh(`ip -n ${NS} link del xt0`);
    }
  });

  // A chunk holds at most 1,792 bytes of a received frame (2 KiB less the kernel's XDP headroom):
  // with GSO super-frames on, a longer one (a link with a larger MTU) goes the super-frames' way.
  it('passes a frame longer than a chunk holds (MTU 1900) to the AF_PACKET socket beside, which delivers it whole', async () => {
    const mtu = (n: number) => sh(`ip -n ${NS} link set va mtu ${n} && ip -n ${NS} link set vb mtu ${n}`);
    mtu(1900);
    try {
      const [b, a] = withGso(true, () => [track(openXdp('vb')), track(openXdp('va'))]);
      const frame = udp(4, 1858);
      expect(frame.length).toBe(1900);
      expect(transmit(a, [frame])).toBe(1);
      const got = await receive(b, 1);
      expect(got.map((f) => Buffer.from(f).equals(Buffer.from(frame)))).toEqual([true]);
      a.close();
      b.close();
    } finally {
      mtu(1500);
    }
  });

  it('fires the readiness callback when frames arrive, and counts frames larger than the MTU instead of sending them', async () => {
    const a = track(openXdp('va'));
    const b = track(openXdp('vb'));
    let woken = 0;
    b.onReadable(() => woken++);
    await sleep(20);
    expect(woken).toBe(0);
    transmit(a, [udp(1, 100)]);
    for (let t = 0; t < 100 && woken === 0; t++) await sleep(10);
    expect(woken).toBe(1);
    const big = udp(2, 1600);
    expect(transmit(a, [big, udp(3, 100)])).toBe(1);
    expect(counter(a, 'tx_too_big')).toBe(1);
    expect((await receive(b, 2)).map((f) => f.length)).toEqual([142, 142]);
    a.close();
    b.close();
  });

  it("a worker's shared arena: frames leave from the chunk they arrived in; the second interface of a flood gets a copy", async () => {
    const a = track(openXdp('va'));
    const c = track(openXdp('vc'));
    const { ports: [b, d], batch, close } = arenaPorts(['vb', 'vd']);
    try {
      const frames = Array.from({ length: 600 }, (_, i) => udp(i, 18 + ((i * 53) % 1400)));
      expect(transmit(a, frames)).toBe(frames.length);
      const idx = Uint16Array.from({ length: BATCH }, (_, i) => i);
      let moved = 0;
      for (let tries = 0; moved < frames.length && tries < 1000; tries++) {
        batch.reset();
        const n = b.rxBurst(batch, 0, BATCH);
        if (n === 0) await sleep(2);
        for (let i = 0; i < n; i++) expect(batch.start[i]).toBeGreaterThanOrEqual(BATCH * SLOT); // in the arena's pool, not a slot
        expect(d.txBurst(batch, idx, n)).toBe(n); // in place
        expect(b.txBurst(batch, idx, n)).toBe(n); // copied: d's TX ring has the chunk
        moved += n;
      }
      const [atC, atA] = [await receive(c, frames.length), await receive(a, frames.length)];
      for (const got of [atC, atA]) {
        expect(got.length).toBe(frames.length);
        expect(got.every((f, i) => Buffer.from(f).equals(Buffer.from(frames[i])))).toBe(true);
      }
      expect(counter(d, 'tx_in_place')).toBe(frames.length);
      expect(counter(b, 'tx_in_place')).toBe(0);
    } finally {
      close();
      a.close();
      c.close();
    }
  });

  it('a socket that closes gives its chunks back to the arena: 40 attach cycles (more fill chunks than the arena has) and frames still arrive', async () => {
    const a = track(openXdp('va'));
    const c = track(openXdp('vc'));
    const { id, ports: [first], batch, close } = arenaPorts(['vd']); // registers the UMEM; vb's sockets share it
    const arrives = async (from: PortIO, to: PortIO, tag: number): Promise<number> => {
      transmit(from, [udp(tag, 64)]);
      let got = 0;
      for (let tries = 0; got === 0 && tries < 500; tries++) {
        batch.reset();
        got = to.rxBurst(batch, 0, BATCH);
        if (got === 0) await sleep(1);
      }
      return got;
    };
    const later: NativePort[] = [];
    try {
      const join = (ifname: string): NativePort => {
        const o = openXsk(ifname, { arena: id });
        expect(o.sharesUmem).toBe(true);
        return adoptXsk(o.fd, ifname)!;
      };
      for (let cycle = 0; cycle < 40; cycle++) {
        const b = join('vb');
        expect(await arrives(a, b, cycle)).toBe(1);
        b.close();
      }
      // The socket that registered the UMEM goes; the kernel keeps it for vb's, and a new vd shares it.
      later.push(join('vb'));
      first.close();
      later.push(join('vd'));
      expect(await arrives(a, later[0], 100)).toBe(1);
      expect(await arrives(c, later[1], 101)).toBe(1);
    } finally {
      for (const p of later) p.close();
      close();
      a.close();
      c.close();
    }
  });

  it('workers: one socket per queue and worker; an interface with fewer queues falls back to AF_PACKET and says why', () => {
    const threads = afxdpBackend.threads;
    const one = threads.openFds('va', 1, {});
    expect(one.description).toMatch(/^AF_XDP copy mode, generic XDP program id \d+, 1 socket.*GSO super-frames \(TCP, UDP\) received whole/);
    const port = track(threads.adopt(one.workers[0].fd, 'va', { rx: true }));
    expect(xdpOn('va')).toBe('generic:sfc_xsk_redir');
    port.close();
    expect(xdpOn('va')).toBe('');

    const two = threads.openFds('va', 2, {});
    expect(two.description).toMatch(/^AF_PACKET .*fallback; AF_XDP cannot attach: afxdp va: 1 receive queue\(s\) for 2 worker\(s\)/);
    expect(xdpOn('va')).toBe('');
    const ports = two.workers.map((w) => track(threads.adopt(w.fd, 'va', { rx: w.rx })));
    expect(ports).toHaveLength(2);
    for (const p of ports) p.close();

    // A socket opened but never adopted is released by discard, and with it the program.
    const parked = threads.openFds('vc', 1, {});
    expect(xdpOn('vc')).toBe('generic:sfc_xsk_redir');
    threads.discard(parked.workers[0].fd);
    expect(xdpOn('vc')).toBe('');
  });

  it('never takes over an interface whose queue and XDP program another process holds: falls back to AF_PACKET', async () => {
    const holder = spawnHolder('vc');
    try {
      await holder.ready;
      expect(xdpOn('vc')).toBe('generic:sfc_xsk_redir');
      const fds = afxdpBackend.threads.openFds('vc', 1, {});
      expect(fds.description).toMatch(/^AF_PACKET .*fallback; AF_XDP/);
      afxdpBackend.threads.discard(fds.workers[0].fd);
      expect(() => openXsk('vc')).toThrow(/queue 0 has another AF_XDP socket/);
    } finally {
      holder.child.kill('SIGTERM');
      await new Promise((r) => holder.child.once('exit', r));
    }
    expect(xdpOn('vc')).toBe(''); // the holder's program went with its process
  });
});

/** Another process holding an AF_XDP socket (and so the XDP program) on `ifname` in NS. */
function spawnHolder(ifname: string): { child: ChildProcess; ready: Promise<void> } {
  const url = new URL('../dist/src/dataplane/io/afxdp.js', import.meta.url).href;
  const script = `import(${JSON.stringify(url)}).then((m) => { m.openXsk(${JSON.stringify(ifname)}); console.log('ready'); setInterval(() => {}, 1000); });`;
  const child = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`holder exited (${code})`)));
  });
  return { child, ready };
}

// Real TCP between two Linux hosts through a userspace bridge of two AF_XDP ports. The hosts keep
// their default offloads. With GSO super-frames received whole (the default) the client's TSO
// stays on: its 64 KiB frames are passed to the port's AF_PACKET socket and cut into segments
// with full checksums. Without (native XDP: the kernel turned the peers' TSO off) its segments arrive with
// partial checksums, completed by rx. The server's receive checksum offload is off, so its kernel
// verifies every checksum we send on.
describe.skipIf(!run).each([
  { umem: 'private UMEMs (frames copied), GSO super-frames whole', shared: false, gso: true },
  { umem: 'private UMEMs (frames copied), native XDP', shared: false, gso: false },
  { umem: "a worker's shared arena (frames completed and sent in place)", shared: true, gso: false },
])('AF_XDP with real TCP and checksum offload at the endpoints, $umem', ({ shared, gso }) => {
  let leave: () => void = () => {};

  beforeAll(() => {
    leave = enterHostsNamespace(NS, [
      { ns: CLIENT_NS, dp: 'c0', ip: '10.9.0.1' },
      { ns: SERVER_NS, dp: 's0', ip: '10.9.0.2' },
    ]);
  });

  afterAll(() => {
    leave();
  });

  it('8 MB of TCP arrive with no checksum error (super-frames cut into segments, or partial checksums completed)', async () => {
    const arena = shared ? arenaPorts(['c0', 's0']) : null;
    const [c0, s0] = arena?.ports ?? withGso(gso, () => [openXdp('c0'), openXdp('s0')]);
    const batch = arena?.batch ?? new Batch();
    let stop = pump(c0, s0, batch);
    try {
      const errorsBefore = snmpCounter(SERVER_NS, 'Tcp', 'InCsumErrors');
      sh(`ip netns exec ${SERVER_NS} iperf3 -s -1 -D -B 10.9.0.2 --pidfile /tmp/${SERVER_NS}.pid`);
      await sleep(300); // iperf3 -D returns before it listens; the client retries below if early
      const report = await iperfClient();
      // iperf3 -n: it ends when all of it was acknowledged (its last write may overshoot the count)
      expect(report.end.sum_sent.bytes).toBeGreaterThanOrEqual(8 << 20);
      expect(snmpCounter(SERVER_NS, 'Tcp', 'InCsumErrors')).toBe(errorsBefore);
      expect(counter(c0, 'rx_too_big') + counter(s0, 'tx_too_big')).toBe(0);
      expect(counter(c0, 'rx_malformed')).toBe(0);
      if (gso) {
        // Super-frames cut up (8 MB in ~1,448-byte segments: over 5,000 of them in all).
        expect(counter(c0, 'rx_gso_frames')).toBeGreaterThan(50);
        expect(counter(c0, 'rx_gso_segments')).toBeGreaterThan(counter(c0, 'rx_gso_frames'));
        // A UDP GSO datagram (UDP_SEGMENT, 8 x 1,000 bytes): the program passes it to the kernel with
        // its segment size, the port's AF_PACKET socket reads it, and its readiness alone wakes the
        // port (the pump is stopped, the XDP socket idle): cut into its 8 datagrams, which reach the
        // server (no listener: counted NoPorts) with valid checksums.
        stop();
        while (c0.rxBurst(batch, 0, BATCH) > 0) batch.reset();
        let woken = 0;
        c0.onReadable?.(() => woken++);
        const before = { gso: counter(c0, 'rx_gso_frames'), segments: counter(c0, 'rx_gso_segments'), noPorts: snmpCounter(SERVER_NS, 'Udp', 'NoPorts') };
        const udpErrors = snmpCounter(SERVER_NS, 'Udp', 'InCsumErrors');
        sh(`ip netns exec ${CLIENT_NS} python3 -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(17, 103, 1000); s.sendto(bytes(8000), ('10.9.0.2', 9))"`);
        for (let t = 0; t < 200 && woken === 0; t++) await sleep(10);
        expect(woken).toBe(1);
        stop = pump(c0, s0, batch);
        for (let t = 0; t < 200 && snmpCounter(SERVER_NS, 'Udp', 'NoPorts') - before.noPorts < 8; t++) await sleep(10);
        expect({
          gso: counter(c0, 'rx_gso_frames') - before.gso,
          segments: counter(c0, 'rx_gso_segments') - before.segments,
          noPorts: snmpCounter(SERVER_NS, 'Udp', 'NoPorts') - before.noPorts,
          csumErrors: snmpCounter(SERVER_NS, 'Udp', 'InCsumErrors') - udpErrors,
        }).toEqual({ gso: 1, segments: 8, noPorts: 8, csumErrors: 0 });
      } else {
        expect(counter(c0, 'rx_csum_completed')).toBeGreaterThan(1000);
        expect(counter(c0, 'rx_gso_frames')).toBe(0);
      }
      // In place: every frame each way (the data to the server, the acknowledgements back).
      expect(counter(s0, 'tx_in_place')).toBe(shared ? counter(s0, 'tx_frames') : 0);
      expect(counter(c0, 'tx_in_place')).toBe(shared ? counter(c0, 'tx_frames') : 0);
    } finally {
      // A failed transfer leaves the one-off iperf3 daemon waiting: it is ours, stop it by its pid.
      sh(`kill $(cat /tmp/${SERVER_NS}.pid 2>/dev/null) 2>/dev/null; rm -f /tmp/${SERVER_NS}.pid; true`);
      stop();
      c0.close();
      s0.close();
      arena?.close();
    }
  }, 30_000);
});

async function iperfClient(): Promise<{ end: { sum_sent: { bytes: number } } }> {
  for (let attempt = 0; ; attempt++) {
    try {
      // Asynchronous: the pump runs on this event loop meanwhile.
      const { stdout } = await promisify(execFile)('ip', ['netns', 'exec', CLIENT_NS, 'iperf3', '-c', '10.9.0.2', '-n', '8M', '-J', '--connect-timeout', '2000']);
      return JSON.parse(stdout) as { end: { sum_sent: { bytes: number } } };
    } catch (e) {
      if (attempt >= 5) throw e;
      await sleep(200);
    }
  }
}

/** Move frames both ways between two ports until stopped (polling; the test's own event loop stays free). */
function pump(x: PortIO, y: PortIO, batch: Batch): () => void {
  const idx = Uint16Array.from({ length: BATCH }, (_, i) => i);
  let stopped = false;
  const move = (from: PortIO, to: PortIO): void => {
    batch.reset();
    const n = from.rxBurst(batch, 0, BATCH);
    if (n > 0) to.txBurst(batch, idx, n);
  };
  const tick = (): void => {
    if (stopped) return;
    move(x, y);
    move(y, x);
    setImmediate(tick);
  };
  tick();
  return () => {
    stopped = true;
  };
}
