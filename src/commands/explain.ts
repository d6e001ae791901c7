/*
 * `sfc explain`: the journey of one synthetic packet through the dataplane built from a config —
 * which classifier matched, which path (SPI, direction), the SI and instance at every hop with the
 * encapsulation the frame carries there (MPLS label / NSH SPI+SI), tap copies, service graph
 * hand-offs, and where it left — answering "which hop dropped my packet?". It runs the replay machinery
 * (dataplane/replay.ts) with SF loopback, so the whole chain is walked without live SFs. A server
 * on the ovs driver answers with the journey through its bridge instead (GET /v2.0/sfc/explain).
 */
import { compileTables } from '../control/drivers/userspace/render.js';
import { buildFrame, type L4Name } from '../dataplane/frames.js';
import { parseAddress } from '../classifier/rule.js';
import { ApiError, connect } from '../control/client.js';
import { loadConfigFile } from '../control/config.js';
import { journeyLines, journeyVerdict, stepView, type StepView } from '../control/journey.js';
import { COLLECTIONS, emptyState, type State } from '../control/model.js';
import { ReplaySession } from '../dataplane/replay.js';
import { formatMac } from '../dataplane/tables.js';
import { parseOptions, UsageError, type Command } from '../util/args.js';
import { SERVER_HELP, SERVER_OPTIONS } from './live.js';

export interface PacketSpec {
  proto: L4Name;
  ver: 4 | 6;
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

const PROTOS: readonly L4Name[] = ['tcp', 'udp', 'sctp', 'icmp', 'icmpv6'];

function endpoint(text: string, what: string): { addr: string; ver: 4 | 6; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? (text.split(':').length > 2 ? [text, text, undefined] : /^([^:]+)(?::(\d+))?$/.exec(text));
  const a = m ? parseAddress(m[1]) : null;
  const port = m?.[2] === undefined ? 0 : Number(m[2]);
  if (!m || !a || port > 65535) throw new UsageError(`--packet: bad ${what} '${text}' (ADDRESS[:PORT], IPv6 as [ADDRESS]:PORT)`);
  return { addr: m[1], ver: a.ver, port };
}

/** 'tcp 10.0.0.1:1234 > 10.0.0.2:80' (also udp, sctp, icmp, icmpv6; IPv6 as [addr]:port). */
export function parsePacket(text: string): PacketSpec {
  const m = /^\s*(\w+)\s+(\S+)\s*>\s*(\S+)\s*$/.exec(text);
  const proto = m?.[1].toLowerCase() as L4Name | undefined;
  if (!m || !proto || !PROTOS.includes(proto)) {
    throw new UsageError(`--packet: expected 'PROTO SRC[:PORT] > DST[:PORT]' with PROTO one of ${PROTOS.join(', ')}, got '${text}'`);
  }
  const s = endpoint(m[2], 'source');
  const d = endpoint(m[3], 'destination');
  if (s.ver !== d.ver) throw new UsageError('--packet: source and destination must be the same IP version');
  return { proto, ver: s.ver, src: s.addr, dst: d.addr, sport: s.port, dport: d.port };
}

export const command: Command = {
  summary: "show one packet's journey: classifier, path, SI and instance per hop, output",
  usage: `(--config FILE | --server URL) --in INTERFACE --packet 'PROTO SRC[:PORT] > DST[:PORT]' [--src-mac MAC] [--dst-mac MAC] [--vlan ID]

  --packet          e.g. 'tcp 10.0.0.1:1234 > 10.0.0.2:80', 'udp [fd00::1]:53 > [fd00::2]:53', 'icmp 10.0.0.1 > 10.0.0.2'
  --src-mac         default: the MAC of the (first) port on INTERFACE
  --dst-mac         default: ff:ff:ff:ff:ff:ff
  --json            the journey as JSON (its steps, then the verdict)
  --config FILE     the chains of a config file, or with --server those a running server holds now:
${SERVER_HELP}
  Service functions are simulated by loopback: a frame sent to an SF port returns on the pair's other port.
  With --server on the ovs driver the server traces the packet through its bridge (ovs-appctl
  ofproto/trace), which commits the flow's conntrack pins (flow affinity) as its first real
  packet would.`,
  async run(argv) {
    const { values } = parseOptions(argv, {
      config: { type: 'string' },
      ...SERVER_OPTIONS,
      json: { type: 'boolean' },
      in: { type: 'string' },
      packet: { type: 'string' },
      'src-mac': { type: 'string' },
      'dst-mac': { type: 'string' },
      vlan: { type: 'string' },
    });
    if ((values.config === undefined) === (values.server === undefined)) throw new UsageError('one of --config FILE or --server URL is required');
    if (!values.in) throw new UsageError('--in INTERFACE is required');
    if (!values.packet) throw new UsageError('--packet is required');
    const pkt = parsePacket(values.packet);
    const mac = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
    for (const k of ['src-mac', 'dst-mac'] as const) {
      if (values[k] !== undefined && !mac.test(values[k])) throw new UsageError(`--${k}: bad MAC '${values[k]}'`);
    }
    const vlan = values.vlan === undefined ? undefined : Number(values.vlan);
    if (vlan !== undefined && !(Number.isInteger(vlan) && vlan >= 1 && vlan <= 4094)) throw new UsageError(`--vlan: bad VLAN id '${values.vlan}'`);

    const state = values.config !== undefined ? await loadConfigFile(values.config) : await serverState(values.server!, values.token);
    const session = new ReplaySession(compileTables(state), { sfLoopback: true });
    try {
      const t = session.tables;
      const f = t.interfaces.indexOf(values.in);
      if (f < 0) throw new UsageError(`--in: unknown interface '${values.in}' (the config has: ${session.interfaces.join(', ')})`);
      const ethSrc = values['src-mac'] ?? formatMac(t.portMac, t.ifacePorts[t.ifacePortBase[f]] * 6);
      const ethDst = values['dst-mac'] ?? 'ff:ff:ff:ff:ff:ff';
      const frame = buildFrame({
        ethSrc,
        ethDst,
        vlans: vlan === undefined ? undefined : [vlan],
        ip: { ver: pkt.ver, src: pkt.src, dst: pkt.dst },
        l4: { proto: pkt.proto, sport: pkt.sport, dport: pkt.dport },
        frameLen: 64,
      });
      // A server whose driver has a pipeline of its own (ovs) traces the frame there; else replay here.
      const remote = values.server !== undefined ? await serverExplain(values.server, values.token, values.in, frame) : null;
      const local = remote === null ? session.run(values.in, frame, Date.now() * 1e6) : null;
      const steps = remote ?? local!.steps.map((step) => stepView(t, state, step));
      const j = local ?? journeyVerdict(steps);
      if (values.json) {
        const { verdict, chain, hops, out } = j;
        console.log(JSON.stringify({ packet: values.packet.trim(), in: values.in, steps, verdict, chain, hops, out }, null, 2));
        return j.verdict.startsWith('drop') ? 1 : 0;
      }
      console.log(`packet: ${values.packet.trim()} on ${values.in} (${ethSrc} > ${ethDst}${vlan ? `, vlan ${vlan}` : ''})`);
      for (const line of journeyLines(steps)) console.log(line);
      const via = j.hops.length ? ` via ${j.hops.join(', ')}` : '';
      console.log(`verdict: ${j.verdict}${j.chain ? ` (chain ${j.chain}${via})` : ''} -> ${j.out.join(', ') || 'nowhere'}`);
      return j.verdict.startsWith('drop') ? 1 : 0;
    } finally {
      session.close();
    }
  },
};

/** The model a running server holds now (every collection, as its API lists them). */
async function serverState(url: string, token: string | undefined): Promise<State> {
  const client = connect(url, token);
  const state = emptyState();
  for (const coll of COLLECTIONS) (state[coll] as unknown[]) = await client.list(coll);
  return state;
}

/** The journey through the server's own pipeline (ovs); null when its driver has none (501: replay locally). */
async function serverExplain(url: string, token: string | undefined, iface: string, frame: Uint8Array): Promise<StepView[] | null> {
  const q = new URLSearchParams({ in: iface, frame: Buffer.from(frame).toString('hex') });
  try {
    return ((await connect(url, token).request('GET', `/v2.0/sfc/explain?${q}`)) as { steps: StepView[] }).steps;
  } catch (e) {
    if (e instanceof ApiError && e.status === 501 && e.type === 'HTTPNotImplemented') return null;
    throw e;
  }
}
