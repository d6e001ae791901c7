/*
 * Steering semantics (issue "one plan, several renderers", part 3), each through the real engine
 * in replay sessions with SF loopback:
 *  1. symmetric chains pick the same instance per hop in both directions BY HASH ALONE: two
 *     separate sessions, one seeing only the forward direction and one only the reverse, agree for
 *     every lb_fields value and weights;
 *  2. chain-end delivery to the logical destination port uses that port's MAC (the sender may have
 *     addressed its gateway) and the source MAC seen at entry;
 *  3. SF ports are not L2 endpoints: traffic outside a chain never reaches an SF interface unless
 *     broadcast or multicast;
 *  4. link-local control traffic (IPv6 neighbour discovery and friends) is switched, never chained.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import type { LbField, State } from '../src/control/model.js';
import { buildArp, buildFrame, mulberry32, type FrameSpec } from '../src/dataplane/frames.js';
import { ReplaySession, type Journey } from '../src/dataplane/replay.js';
import { formatMac } from '../src/dataplane/tables.js';
import { LB_FIELDS } from '../src/hash/flowhash.js';
import { CLIENT_MAC, SERVER_MAC, sfMac, StateBuilder, twoHop } from './support/sfc-state.js';

/** A MAC no port has: the routed sender's gateway. */
const GATEWAY_MAC = '02:00:00:00:00:fe';

/** Run frames through a fresh session; each frame's journey. */
function replay(state: State, frames: { iface: string; frame: Uint8Array }[]): Journey[] {
  const session = new ReplaySession(compileTables(state), { sfLoopback: true });
  try {
    return frames.map(({ iface, frame }, k) => session.run(iface, frame, (k + 1) * 1e6));
  } finally {
    session.close();
  }
}

/** The frame as it left by `iface` in journey j (the last step that output there). */
function leftBy(j: Journey, iface: string): Uint8Array {
  const step = [...j.steps].reverse().find((s) => s.out.includes(iface));
  if (!step) throw new Error(`nothing left by ${iface}: ${JSON.stringify(j.out)}`);
  return step.frame;
}

/** Client 10.0/16 <-> server 10.1/16, symmetric, 3 instances per hop with the given lb_fields and weights. */
function wideSymmetric(lbFields: LbField[], weights: number[][]): State {
  const s = new StateBuilder();
  s.port('client', 'cli0', CLIENT_MAC);
  s.port('server', 'srv0', SERVER_MAC);
  for (let h = 1; h <= 2; h++) {
    for (let k = 1; k <= 3; k++) {
      s.port(`sf${h}${k}-in`, `sf${h}${k}i`, sfMac(h, k, 'in'));
      s.port(`sf${h}${k}-out`, `sf${h}${k}e`, sfMac(h, k, 'out'));
      s.pair(`pp${h}${k}`, `sf${h}${k}-in`, `sf${h}${k}-out`, weights[h - 1][k - 1]);
    }
    s.group(`ppg${h}`, [`pp${h}1`, `pp${h}2`, `pp${h}3`], { lbFields });
  }
  for (const protocol of ['tcp', 'udp'] as const) {
    s.classifier(`fc-${protocol}`, { protocol, source_ip_prefix: '10.0.0.0/16', destination_ip_prefix: '10.1.0.0/16', src: 'client', dst: 'server' });
  }
  s.chain('pc1', ['ppg1', 'ppg2'], ['fc-tcp', 'fc-udp'], { symmetric: true });
  return s.state;
}

/** n random flows: the client's frame and the server's reply, both addressed to the gateway. */
function flows(n: number, seed: number): { fwd: Uint8Array; rev: Uint8Array }[] {
  const rnd = mulberry32(seed);
  const out: { fwd: Uint8Array; rev: Uint8Array }[] = [];
  for (let k = 0; k < n; k++) {
    const a = `10.0.${Math.floor(rnd() * 256)}.${1 + Math.floor(rnd() * 254)}`;
    const b = `10.1.${Math.floor(rnd() * 256)}.${1 + Math.floor(rnd() * 254)}`;
    const proto = rnd() < 0.5 ? 'tcp' : 'udp';
    const sp = 1024 + Math.floor(rnd() * 60000);
    const dp = 1 + Math.floor(rnd() * 65000);
    const frame = (ethSrc: string, src: string, dst: string, sport: number, dport: number): Uint8Array =>
      buildFrame({ ethSrc, ethDst: GATEWAY_MAC, ip: { ver: 4, src, dst }, l4: { proto, sport, dport }, frameLen: 64 });
    out.push({ fwd: frame(CLIENT_MAC, a, b, sp, dp), rev: frame(SERVER_MAC, b, a, dp, sp) });
  }
  return out;
}

describe('symmetric chains by hash alone', () => {
  const fieldSets: LbField[][] = [[], ...LB_FIELDS.map((f) => [f]), ['ip_src', 'tcp_dst'], ['ip_dst', 'udp_src', 'eth_dst']];

  it.each(fieldSets.map((f) => [f.join(',') || '5-tuple', f] as const))(
    'lb_fields %s: a forward-only and a reverse-only session cross the same instances',
    (_, lbFields) => {
      const state = wideSymmetric(lbFields, [
        [1, 3, 2],
        [2, 1, 1],
      ]);
      const fl = flows(300, 7);
      const fwd = replay(state, fl.map((f) => ({ iface: 'cli0', frame: f.fwd })));
      const rev = replay(state, fl.map((f) => ({ iface: 'srv0', frame: f.rev })));
      fl.forEach((_, k) => {
        expect(fwd[k].verdict).toBe('chain');
        expect(rev[k].verdict).toBe('chain');
        expect(fwd[k].hops, `flow ${k}`).toEqual([...rev[k].hops].reverse());
      });
      // The hash spreads what varies: with a 5-tuple or address key every instance is used.
      if (lbFields.length === 0 || lbFields.includes('ip_src')) {
        expect(new Set(fwd.map((j) => j.hops[0])).size).toBe(3);
      }
    },
  );

  it('holds for random lb_fields subsets, weights and flows (property)', () => {
    fc.assert(
      fc.property(
        fc.subarray([...LB_FIELDS]),
        fc.array(fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 3, maxLength: 3 }), { minLength: 2, maxLength: 2 }),
        fc.integer({ min: 1, max: 1 << 30 }),
        (lbFields, weights, seed) => {
          fc.pre(weights.every((w) => w.some((x) => x > 0)));
          const state = wideSymmetric(lbFields, weights);
          const fl = flows(40, seed);
          const fwd = replay(state, fl.map((f) => ({ iface: 'cli0', frame: f.fwd })));
          const rev = replay(state, fl.map((f) => ({ iface: 'srv0', frame: f.rev })));
          fl.forEach((_, k) => expect(fwd[k].hops).toEqual([...rev[k].hops].reverse()));
        },
      ),
      { seed: 42, numRuns: 25 },
    );
  });
});

describe('chain-end delivery', () => {
  const sent = (ethSrc: string, ethDst: string, src: string, dst: string, sport: number, dport: number) =>
    buildFrame({ ethSrc, ethDst, ip: { ver: 4, src, dst }, l4: { proto: 'tcp', sport, dport }, frameLen: 64 });

  it('hands the frame to the logical destination port with its MAC, keeping the sender MAC (both directions)', () => {
    const state = twoHop({ symmetric: true }).state;
    const [fwd, rev] = replay(state, [
      { iface: 'cli0', frame: sent(CLIENT_MAC, GATEWAY_MAC, '10.0.0.1', '10.0.0.2', 40000, 80) },
      { iface: 'srv0', frame: sent(SERVER_MAC, GATEWAY_MAC, '10.0.0.2', '10.0.0.1', 80, 40000) },
    ]);
    expect(fwd.out).toEqual(['srv0']);
    const atServer = leftBy(fwd, 'srv0');
    expect([formatMac(atServer, 0), formatMac(atServer, 6)]).toEqual([SERVER_MAC, CLIENT_MAC]);
    expect(rev.out).toEqual(['cli0']);
    const atClient = leftBy(rev, 'cli0');
    expect([formatMac(atClient, 0), formatMac(atClient, 6)]).toEqual([CLIENT_MAC, SERVER_MAC]);
  });

  it('without a logical destination port restores the MACs seen at entry', () => {
    const s = twoHop();
    for (const c of s.state.flow_classifiers) c.logical_destination_port = null;
    const [j] = replay(s.state, [{ iface: 'cli0', frame: sent(CLIENT_MAC, SERVER_MAC, '10.0.0.1', '10.0.0.2', 40000, 80) }]);
    expect(j.verdict).toBe('chain');
    expect(j.out).toEqual(['srv0']); // the server's MAC is a configured port: switched to it
    const f = leftBy(j, 'srv0');
    expect([formatMac(f, 0), formatMac(f, 6)]).toEqual([SERVER_MAC, CLIENT_MAC]);
  });
});

describe('SF ports are not L2 endpoints', () => {
  const icmp = (ethDst: string): Uint8Array =>
    buildFrame({ ethSrc: CLIENT_MAC, ethDst, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' }, l4: { proto: 'icmp', type: 8 }, frameLen: 64 });
  const sfInterfaces = ['sf11i', 'sf11e', 'sf12i', 'sf12e', 'sf21i', 'sf21e', 'sf22i', 'sf22e'];

  it('unclassified unicast goes to the known port only, before the server ever spoke', () => {
    const [j] = replay(twoHop().state, [{ iface: 'cli0', frame: icmp(SERVER_MAC) }]);
    expect(j.verdict).toBe('l2');
    expect(j.out).toEqual(['srv0']);
  });

  it('unknown unicast floods to endpoint interfaces only; a frame for an SF port is dropped', () => {
    const [unknown, toSf] = replay(twoHop().state, [
      { iface: 'cli0', frame: icmp('02:00:00:00:77:77') },
      { iface: 'cli0', frame: icmp(sfMac(1, 1, 'in')) },
    ]);
    expect(unknown.verdict).toBe('flood');
    expect(unknown.out).toEqual(['srv0']);
    expect(toSf.verdict).toBe('drop:to_sf_port');
    expect(toSf.out).toEqual([]);
  });

  it('broadcast still reaches every interface', () => {
    const [arp] = replay(twoHop().state, [{ iface: 'cli0', frame: buildArp({ ethSrc: CLIENT_MAC, senderIp: '10.0.0.1', targetIp: '10.0.0.2' }) }]);
    expect([...arp.out].sort()).toEqual(['srv0', ...sfInterfaces].sort());
  });
});

describe('link-local control traffic never enters a chain', () => {
  /** The lab's symmetric chain with an IPv6 classifier (any protocol) fd00::1 <-> fd00::2. */
  function v6Chain(): State {
    const s = twoHop({ symmetric: true });
    s.classifier('fc-v6', { ethertype: 'IPv6', source_ip_prefix: 'fd00::1/128', destination_ip_prefix: 'fd00::2/128', src: 'client', dst: 'server' });
    s.state.port_chains[0].flow_classifiers.push(s.byName('flow_classifiers', 'fc-v6').id);
    return s.state;
  }
  const v6 = (spec: Partial<FrameSpec> & Pick<FrameSpec, 'l4'>, from: 'client' | 'server', hopLimit = 64): Uint8Array =>
    buildFrame({
      ethSrc: from === 'client' ? CLIENT_MAC : SERVER_MAC,
      ethDst: from === 'client' ? SERVER_MAC : CLIENT_MAC,
      ip: { ver: 6, src: from === 'client' ? 'fd00::1' : 'fd00::2', dst: from === 'client' ? 'fd00::2' : 'fd00::1', ttl: hopLimit },
      frameLen: 86,
      ...spec,
    });

  it('switches neighbour discovery that matches a chain classifier, hop limit intact; real traffic still chains', () => {
    const [na, ns, tcp] = replay(v6Chain(), [
      { iface: 'srv0', frame: v6({ l4: { proto: 'icmpv6', type: 136 } }, 'server', 255) },
      { iface: 'cli0', frame: v6({ l4: { proto: 'icmpv6', type: 135 } }, 'client', 255) },
      { iface: 'cli0', frame: v6({ l4: { proto: 'tcp', sport: 40000, dport: 80 } }, 'client') },
    ]);
    expect([na.verdict, na.out]).toEqual(['l2', ['cli0']]);
    expect(leftBy(na, 'cli0')[14 + 7]).toBe(255); // IPv6 hop limit
    expect([ns.verdict, ns.out]).toEqual(['l2', ['srv0']]);
    expect([tcp.verdict, tcp.hops.length]).toEqual(['chain', 2]);
  });

  it('switches link-local and link-scope multicast addresses whatever the protocol', () => {
    const [ll, mcast] = replay(v6Chain(), [
      { iface: 'cli0', frame: v6({ ip: { ver: 6, src: 'fe80::1', dst: 'fd00::2' }, l4: { proto: 'udp', sport: 1, dport: 2 } }, 'client') },
      { iface: 'cli0', frame: v6({ ethDst: '33:33:00:00:00:02', ip: { ver: 6, src: 'fd00::1', dst: 'ff02::2' }, l4: { proto: 'udp', sport: 1, dport: 2 } }, 'client') },
    ]);
    expect(ll.verdict).toBe('l2');
    expect(mcast.verdict).toBe('flood');
  });
});
