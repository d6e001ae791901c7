// Live flows per instance (flowcount.ts) counted by a real Engine's flow table over in-memory ports,
// SFs simulated by routing loopbacks: N flows through a two-hop chain give, per instance, exactly the
// flows its SF saw, N per hop; they stop counting once idle longer than FLOW_IDLE_MS (the engine's
// clock, driven by the test), a re-born instance index does not inherit its predecessor's flows, and
// a scan does its work in slices, publishing only when done.
import { describe, expect, it } from 'vitest';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import { Engine } from '../src/dataplane/engine.js';
import { FlowCounter, FLOW_IDLE_MS, COUNT_EVERY_MS, SLICE } from '../src/dataplane/flowcount.js';
import { DEFAULT_FLOW_STATE_CAPACITY } from '../src/dataplane/flowstate.js';
import { buildFrame, macBytes } from '../src/dataplane/frames.js';
import { QueuePort } from '../src/dataplane/io/queue.js';
import { CLIENT_MAC, SERVER_MAC, sfMac, twoHop } from './support/sfc-state.js';

const FLOWS = 300;

/** A chain (default: two hops of three instances each); every SF sends what it is given on to the server. */
function chainLab(state = twoHop({ hops: 2, perHop: 3 }).state) {
  const tables = compileTables(state);
  let now = 1_000_000;
  const ports = new Map<string, QueuePort>();
  /** Per SF ingress interface: the source ports of the flows it was sent. */
  const seen = new Map<string, Set<number>>();
  const engine = new Engine(
    (name) => {
      const q = new QueuePort(name, (frame) => {
        const sf = /^sf(\d)(\d)i$/.exec(name);
        if (sf === null) return;
        (seen.get(name) ?? seen.set(name, new Set()).get(name)!).add((frame[34] << 8) | frame[35]);
        const back = frame.slice();
        back.set(macBytes(SERVER_MAC), 0);
        back.set(macBytes(sfMac(Number(sf[1]), Number(sf[2]), 'out')), 6);
        ports.get(`sf${sf[1]}${sf[2]}e`)!.enqueue(back);
      });
      ports.set(name, q);
      return q;
    },
    undefined,
    { clock: () => now },
  );
  engine.publish(tables);
  engine.breathe();
  const send = (sports: number[]) => {
    for (const sport of sports) {
      ports.get('cli0')!.enqueue(buildFrame({ ethSrc: CLIENT_MAC, ethDst: SERVER_MAC, ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' }, l4: { proto: 'udp', sport, dport: 53 } }));
    }
    while (engine.breathe() > 0);
  };
  /** One whole scan (COUNT_EVERY_MS apart from the last, as the worker paces them); the counts per instance. */
  let scanAt = 0;
  const out = new Float64Array(tables.instanceCount);
  const counter = new FlowCounter(out);
  const count = () => {
    scanAt += COUNT_EVERY_MS;
    while (counter.step(engine, scanAt));
    return out;
  };
  return { tables, engine, seen, send, count, advance: (ms: number) => (now += ms) };
}

describe('live flows per instance', () => {
  it("count, per instance, the flows its SF saw: N per hop; idle flows stop counting after FLOW_IDLE_MS", () => {
    const lab = chainLab();
    const sports = Array.from({ length: FLOWS }, (_, n) => 20000 + n);
    lab.send(sports);
    lab.send(sports); // a flow's second packet is the same flow
    const counts = lab.count();
    const perHop = [0, 0];
    lab.tables.instanceNames.forEach((n, k) => {
      const sf = lab.tables.interfaces[lab.tables.instIfIn[k]];
      expect(counts[k], `${n.portPair}: the flows ${sf} was sent`).toBe(lab.seen.get(sf)?.size ?? 0);
      expect(counts[k], `${n.portPair} carries some`).toBeGreaterThan(0);
      perHop[n.hop - 1] += counts[k];
    });
    expect(perHop).toEqual([FLOWS, FLOWS]);

    // idle just under the timeout: still counted; a third of them used again later
    lab.advance(FLOW_IDLE_MS - 1);
    expect(lab.count().reduce((a, b) => a + b, 0)).toBe(2 * FLOWS);
    lab.send(sports.slice(0, FLOWS / 3));
    lab.advance(2);
    const later = lab.count();
    expect(later.reduce((a, b) => a + b, 0), 'only the flows used within the timeout').toBe((2 * FLOWS) / 3);
    // nothing more: every flow idles out
    lab.advance(FLOW_IDLE_MS);
    expect([...lab.count()]).toEqual(new Array(lab.tables.instanceCount).fill(0));
  });

  it("does not give a re-born instance index the flows of the instance it replaces", () => {
    const b = twoHop({ hops: 1, perHop: 2 });
    const lab = chainLab(b.state);
    lab.send(Array.from({ length: FLOWS }, (_, n) => 20000 + n));
    const before = lab.count().slice();
    const old = lab.tables.instanceNames.findIndex((n) => n.portPair === 'pp12');
    expect(before[old]).toBeGreaterThan(0);
    // pp12 replaced by pp13 in its group: pp13 takes pp12's index (plan.ts assignStable)
    b.port('sf13-in', 'sf13i', sfMac(1, 3, 'in'));
    b.port('sf13-out', 'sf13e', sfMac(1, 3, 'out'));
    const pp13 = b.pair('pp13', 'sf13-in', 'sf13-out');
    const pp12 = b.byName('port_pairs', 'pp12');
    b.byName('port_pair_groups', 'ppg1').port_pairs = [b.byName('port_pairs', 'pp11').id, pp13.id];
    b.state.port_pairs = b.state.port_pairs.filter((p) => p !== pp12);
    const next = compileTables(b.state, lab.tables);
    expect(next.instanceNames[old].portPair, 'the index is re-born').toBe('pp13');
    lab.engine.publish(next);
    lab.engine.breathe();
    const after = lab.count();
    expect(after[old], 'pp13 has carried no flow yet').toBe(0);
    const kept = lab.tables.instanceNames.findIndex((n) => n.portPair === 'pp11');
    expect(after[kept]).toBe(before[kept]);
  });

  it('scans the table in slices of SLICE entries, publishing the counts only when the scan ends', () => {
    const lab = chainLab();
    lab.send([20000, 20001, 20002]);
    const out = new Float64Array(lab.tables.instanceCount);
    const counter = new FlowCounter(out);
    let steps = 1;
    while (counter.step(lab.engine, 5000)) {
      expect(out.reduce((a, b) => a + b, 0), 'nothing published mid-scan').toBe(0);
      steps++;
    }
    expect(steps).toBe(DEFAULT_FLOW_STATE_CAPACITY / SLICE);
    expect(out.reduce((a, b) => a + b, 0)).toBe(6);
    // not due again before COUNT_EVERY_MS
    expect(counter.step(lab.engine, 5000 + COUNT_EVERY_MS - 1)).toBe(false);
    expect(counter.step(lab.engine, 5000 + COUNT_EVERY_MS)).toBe(true);
  });
});
