/*
 * The pure parts behind `sfc demo` and the end-to-end checks: reading /metrics text, turning what
 * the SF namespaces recorded into per-flow paths (and judging them), and rendering the live view.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { buildFrame, LiveView, renderFlowMap, renderLine, renderTable, renderVerdict, type Snapshot } from '../src/lab/demo-view.js';
import { flowsSeenBySfs, repliesRetraced, stayedOnOnePath, traceFlows, type FlowLog, type Handover } from '../src/lab/flowlog.js';
import { metric, parsePrometheus } from '../src/lab/harness.js';
import { CLIENT, SERVER, describeLab, sfMac } from '../src/lab/topology.js';

const lab = describeLab({ name: 'unit', hops: 2, instances: 2 });

/** A flow log where each flow crossed the given instances (hop 1, hop 2), replies optionally back. */
function logOf(flows: { flow: string; path: [number, number]; replies?: [number, number] }[]): FlowLog {
  const fromIn = new Map<string, Handover[]>();
  const fromOut = new Map<string, Handover[]>();
  const add = (m: Map<string, Handover[]>, ns: string, h: Handover) => m.set(ns, [...(m.get(ns) ?? []), h]);
  for (const f of flows) {
    add(fromIn, `unit-sf1${f.path[0]}`, { mac: CLIENT.mac, flow: f.flow });
    add(fromIn, `unit-sf2${f.path[1]}`, { mac: sfMac(1, f.path[0], 'out'), flow: f.flow });
    if (f.replies) {
      add(fromOut, `unit-sf2${f.replies[1]}`, { mac: SERVER.mac, flow: f.flow });
      add(fromOut, `unit-sf1${f.replies[0]}`, { mac: sfMac(2, f.replies[1], 'in'), flow: f.flow });
    }
  }
  return {
    sfs: lab.sfs.map((sf) => ({ sf, packetsIn: 0, packetsOut: 0, pings: 0, fromIn: fromIn.get(sf.ns) ?? [], fromOut: fromOut.get(sf.ns) ?? [] })),
    serverFlows: flows.map((f) => f.flow).sort(),
    serverPings: 0,
  };
}

describe('parsePrometheus / metric', () => {
  const text = [
    '# HELP sfc_drops_total Frames dropped, by reason',
    '# TYPE sfc_drops_total counter',
    'sfc_drops_total{reason="runt"} 3',
    'sfc_drops_total{reason="bad_ipv4_header"} 4',
    'sfc_instance_packets_total{port_chain="pc1",hop="1",port_pair="pp11"} 1.5e3',
    'sfc_instance_packets_total{port_chain="a \\"q\\" b",hop="2",port_pair="pp21"} 7',
    'sfc_state_revision 2',
  ].join('\n');
  const samples = parsePrometheus(text);

  it('reads names, labels (with escapes) and values, skipping comments', () => {
    expect(samples).toHaveLength(5);
    expect(samples[2]).toEqual({ name: 'sfc_instance_packets_total', labels: { port_chain: 'pc1', hop: '1', port_pair: 'pp11' }, value: 1500 });
    expect(samples[3].labels.port_chain).toBe('a "q" b');
    expect(samples[4]).toEqual({ name: 'sfc_state_revision', labels: {}, value: 2 });
  });

  it('sums the samples whose labels match', () => {
    expect(metric(samples, 'sfc_drops_total')).toBe(7);
    expect(metric(samples, 'sfc_drops_total', { reason: 'runt' })).toBe(3);
    expect(metric(samples, 'sfc_instance_packets_total', { hop: '2' })).toBe(7);
    expect(metric(samples, 'sfc_drops_total', { reason: 'none' })).toBe(0);
  });
});

describe('traceFlows', () => {
  it('follows a flow over its instances and its replies back', () => {
    const log = logOf([
      { flow: 'tcp/1000', path: [1, 2], replies: [1, 2] },
      { flow: 'udp/20000', path: [2, 1] },
    ]);
    const [tcp, udp] = traceFlows(lab, log);
    expect(tcp).toEqual({ flow: 'tcp/1000', forward: [[1], [2]], reverse: [[1], [2]], forwardInOrder: true, reverseInOrder: true });
    expect(stayedOnOnePath(tcp) && repliesRetraced(tcp)).toBe(true);
    expect(udp.forward).toEqual([[2], [1]]);
    expect(stayedOnOnePath(udp)).toBe(true);
    expect(repliesRetraced(udp)).toBe(false); // no replies seen
    expect(flowsSeenBySfs(log)).toEqual(new Set(['tcp/1000', 'udp/20000']));
  });

  it('notices a flow split over two instances of a hop', () => {
    const log = logOf([{ flow: 'tcp/1', path: [1, 1] }]);
    log.sfs.find((v) => v.sf.ns === 'unit-sf12')!.fromIn.push({ mac: CLIENT.mac, flow: 'tcp/1' });
    const [t] = traceFlows(lab, log);
    expect(t.forward[0]).toEqual([1, 2]);
    expect(stayedOnOnePath(t)).toBe(false);
  });

  it('notices a hop handed the flow by an instance the flow did not use', () => {
    const log = logOf([{ flow: 'tcp/1', path: [1, 1] }]);
    log.sfs.find((v) => v.sf.ns === 'unit-sf21')!.fromIn[0].mac = sfMac(1, 2, 'out');
    const [t] = traceFlows(lab, log);
    expect(t.forward).toEqual([[1], [1]]);
    expect(t.forwardInOrder).toBe(false);
    expect(stayedOnOnePath(t)).toBe(false);
  });

  it('notices replies that came back through other instances', () => {
    const [t] = traceFlows(lab, logOf([{ flow: 'tcp/1', path: [1, 1], replies: [2, 1] }]));
    expect(t.reverseInOrder).toBe(true);
    expect(repliesRetraced(t)).toBe(false);
  });

  it('reports flows the server got that no SF saw', () => {
    const log = logOf([]);
    log.serverFlows = ['tcp/9'];
    const [t] = traceFlows(lab, log);
    expect(t.forward).toEqual([[], []]);
    expect(stayedOnOnePath(t)).toBe(false);
  });
});

describe('live view', () => {
  const samples = (pp11: number, pp12: number) =>
    parsePrometheus(
      [
        `sfc_instance_packets_total{chain="pc1",hop="1",port_pair="pp11"} ${pp11}`,
        `sfc_instance_packets_total{chain="pc1",hop="1",port_pair="pp12"} ${pp12}`,
        'sfc_packets_total{event="rx_packets"} 5000',
        'sfc_packets_total{event="classified"} 4000',
        'sfc_drops_total{reason="runt"} 2',
      ].join('\n'),
    );
  const log = logOf([
    { flow: 'tcp/1', path: [1, 2], replies: [1, 2] },
    { flow: 'tcp/2', path: [1, 1] },
  ]);
  const prev: Snapshot = { at: 1000, samples: samples(100, 0), log: null };
  const cur: Snapshot = { at: 3000, samples: samples(2100, 40), log };
  const frame = buildFrame(lab, 'demo', 0, prev, cur, ['TCP: running']);

  it('computes per-instance packets, rates and flows seen', () => {
    expect(frame.seconds).toBe(3);
    expect(frame.rows.map((r) => [r.portPair, r.packets, r.rate, r.flowsIn, r.flowsOut])).toEqual([
      ['pp11', 2100, 1000, 2, 1],
      ['pp12', 40, 20, 0, 0],
      ['pp21', 0, 0, 1, 0],
      ['pp22', 0, 0, 1, 1],
    ]);
    expect([frame.rx, frame.classified, frame.dropped]).toEqual([5000, 4000, 2]);
  });

  it('renders a table for terminals and one line otherwise', () => {
    const table = renderTable(frame);
    expect(table[0]).toBe('demo · 3.0 s');
    expect(table.find((l) => l.includes('unit-sf11'))).toMatch(/pp11\s+2,100\s+1,000\s+2 \/ 1$/);
    expect(table.at(-1)).toBe('  TCP: running');
    expect(renderLine(frame)).toMatch(/^\[3\.0 s\] pp11 2,100 \(1,000\/s, 2 flows\), pp12 40 .* dropped 2 \| TCP: running$/);
  });

  it('redraws in place on a terminal, appends lines otherwise', () => {
    const read = (tty: boolean) => {
      const out = new PassThrough();
      let text = '';
      out.on('data', (d: Buffer) => (text += d.toString()));
      const view = new LiveView(out, tty);
      view.show(frame);
      view.show(frame);
      return text;
    };
    const tty = read(true);
    expect(tty.indexOf('\x1b[')).toBe(tty.indexOf('demo · 3.0 s', 1) - `\x1b[${renderTable(frame).length}F\x1b[J`.length);
    expect(read(false).split('\n').filter(Boolean)).toEqual([renderLine(frame), renderLine(frame)]);
  });

  it('prints a verdict and where each flow went', () => {
    expect(renderVerdict([{ ok: true, text: 'a' }, { ok: false, text: 'b' }])).toEqual(['verdict: FAIL', '  ✓ a', '  ✗ b']);
    expect(renderVerdict([{ ok: true, text: 'a' }])[0]).toBe('verdict: PASS');
    expect(renderFlowMap(traceFlows(lab, log))).toEqual(['  tcp/1  sf11 → sf22   replies sf22 → sf11', '  tcp/2  sf11 → sf21']);
  });
});
