/*
 * `sfc explain` on the ovs driver: one packet's journey through the bridge as OVS's own pipeline
 * computes it (`ovs-appctl ofproto/trace BRIDGE in_port=IFACE PACKET-HEX`), told as the userspace
 * mode's explain tells it (journey.ts StepView: classifier, path, SI and instance per hop, output).
 *
 * Each pass is one trace. The table-0 flow it matched gives the rule (among the path's rules at
 * that interface, the one whose match strings the flow carries); the select group it reached
 * (`group:ID`, `using bucket B`) or the learned pin it took (table 3, cookie 0x5fc1<member>)
 * gives path, hop and instance (GroupInfo); the datapath actions give the outputs with the MACs
 * and encapsulation each copy leaves with. As the userspace explain, service functions are
 * simulated by loopback: a frame sent to an SF port comes back in at the pair's other port (its
 * MACs as sent) for the next pass. A pass whose frame OVS recirculates (after popping an SF-aware
 * hop's MPLS/NSH header) is not followed: explain refuses it (501) rather than guess.
 *
 * ofproto/trace RUNS learn() actions: tracing a packet into a hop installs that flow's pin
 * (table 3, idle timeout 60 s), as the first real packet of the flow would.
 */
import { describeRule } from '../../../classifier/lookup.js';
import { ruleFromClassifier } from '../../../classifier/rule.js';
import { NeutronError } from '../../errors.js';
import type { StepView } from '../../journey.js';
import type { State } from '../../model.js';
import type { Plan, PlanPath } from '../../plan.js';
import { exec } from './ofctl.js';
import { PIN_COOKIE, ruleMatches, type Rendered } from './render.js';

export interface OvsTraceContext {
  /** ovs-vswitchd's control socket. */
  ctl: string;
  bridge: string;
  plan: Plan;
  rendered: Rendered;
  state: State;
}

/** One copy the datapath sends: the interface and the frame's MACs and encapsulation then. */
interface Output {
  iface: string;
  srcMac: string;
  dstMac: string;
  encap: string;
}

/** What one trace found. */
interface Pass {
  /** The table-0 flow's match tokens ('' when nothing matched in table 0). */
  entry: Set<string>;
  /** Group id of the hop this pass selected, and the bucket it used or the member its pin named (-1 when none). */
  gid: number;
  bucket: number;
  pinned: number;
  outputs: Output[];
  /** Flow keys (table=N, priority=P,MATCH) of every flow the pass matched, in order. */
  keys: string[];
  recirculated: boolean;
}

const hexMac = (f: Uint8Array, at: number) => [...f.subarray(at, at + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');

/** Split datapath actions at top-level commas. */
function topLevel(actions: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of actions) {
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
      continue;
    }
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    cur += ch;
  }
  if (cur) out.push(cur);
  return out;
}

const field = (text: string, name: string) => new RegExp(`\\b${name}=([^,)]+)`).exec(text)?.[1];

/** Parse one ofproto/trace answer (datapath ports named through `ifaceOf`). */
export function parseTrace(text: string, frame: Uint8Array, ifaceOf: Map<number, string>): Pass {
  const pass: Pass = { entry: new Set(), gid: -1, bucket: -1, pinned: -1, outputs: [], keys: [], recirculated: false };
  for (const m of text.matchAll(/^\s*(\d+)\. (?:(.*), )?priority (\d+), cookie (0x[0-9a-f]+)$/gm)) {
    const [, table, match = '', prio, cookie] = m;
    pass.keys.push(`table=${table}, priority=${prio}${match ? `,${match}` : ''}`);
    if (table === '0' && pass.keys.length === 1) pass.entry = new Set(match.split(','));
    const pin = Number(cookie) - PIN_COOKIE;
    if (table === '3' && pin >= 0 && pin < 0x10000) {
      pass.gid = Number(field(match, 'metadata'));
      pass.pinned = pin;
    }
  }
  const group = /^\s*group:(\d+)$/m.exec(text);
  const bucket = /-> using bucket (\d+)/.exec(text);
  if (group && bucket) {
    pass.gid = Number(group[1]);
    pass.bucket = Number(bucket[1]);
  }
  const actions = /^Datapath actions: (.*)$/m.exec(text)?.[1];
  if (actions === undefined) throw new Error(`ofproto/trace gave no datapath actions:\n${text}`);
  let srcMac = hexMac(frame, 6);
  let dstMac = hexMac(frame, 0);
  let encap = '';
  for (const a of topLevel(actions)) {
    if (/^\d+$/.test(a)) {
      pass.outputs.push({ iface: ifaceOf.get(Number(a)) ?? `datapath port ${a}`, srcMac, dstMac, encap });
    } else if (a.startsWith('set(eth(') || a.startsWith('push_eth(')) {
      srcMac = field(a, 'src') ?? srcMac;
      dstMac = field(a, 'dst') ?? dstMac;
    } else if (a.startsWith('push_mpls(')) {
      const label = Number(field(a, 'label'));
      encap = `MPLS label ${label} (SPI ${label >>> 8}, SI ${label & 0xff}) TTL ${field(a, 'ttl')}`;
    } else if (a.startsWith('push_nsh(')) {
      encap = `NSH SPI ${Number(field(a, 'spi'))} SI ${Number(field(a, 'si'))}`;
    } else if (a.startsWith('pop_mpls') || a.startsWith('pop_nsh')) {
      encap = '';
    } else if (a.startsWith('recirc(')) {
      pass.recirculated = true;
    }
  }
  return pass;
}

/** Datapath port number -> interface name, from `dpif/show` (`  p0 6/7: (system)`). */
async function datapathPorts(ctl: string): Promise<Map<number, string>> {
  const show = await exec(['ovs-appctl', '-t', ctl, 'dpif/show']);
  return new Map([...show.matchAll(/^\s+(\S+) \d+\/(\d+):/gm)].map((m) => [Number(m[2]), m[1]]));
}

const MAX_PASSES = 64;

/** The journey of `frame` arriving on interface `iface`, through OVS's pipeline (see the top). */
export async function ovsExplain(ctx: OvsTraceContext, iface: string, frame: Uint8Array): Promise<StepView[]> {
  const { plan, rendered } = ctx;
  const ifaceOf = await datapathPorts(ctx.ctl);
  const portIndex = (id: string) => plan.ports.findIndex((p) => p.id === id);
  const portName = (k: number) => plan.ports[k]?.name ?? String(k);
  const steps: StepView[] = [];
  let chain: { path: PlanPath; rule: number; classifier: string } | null = null;
  let at = iface;
  let bytes = Uint8Array.from(frame);
  for (let n = 0; n < MAX_PASSES; n++) {
    const text = await exec(['ovs-appctl', '-t', ctx.ctl, 'ofproto/trace', ctx.bridge, `in_port=${at}`, Buffer.from(bytes).toString('hex')]);
    const pass = parseTrace(text, bytes, ifaceOf);
    if (pass.recirculated) {
      throw new NeutronError(501, 'OvsExplainUnsupported', `explain on the ovs driver does not follow a recirculation (an SF-aware hop's MPLS/NSH pop) at ${at}; sfc explain --config FILE shows the journey by the userspace rules.`);
    }
    const info = rendered.groupInfo.get(pass.gid);
    const member = info && pass.bucket >= 0 ? info.buckets.get(pass.bucket) ?? -1 : pass.pinned;
    if (info && chain === null) {
      const path = plan.paths[info.path];
      const candidates = path.rules.filter((r) => plan.ports[plan.rules[r].at]?.iface === at);
      const rule = candidates.find((r) => ruleMatches(plan.rules[r]).some((m) => pass.entry.has(m.proto) && m.fields.every((f) => pass.entry.has(f)))) ?? candidates[0] ?? path.rules[0];
      const pr = plan.rules[rule];
      const fc = ctx.state.flow_classifiers.find((f) => f.id === pr.classifierId);
      const what = fc ? describeRule(ruleFromClassifier(fc, portIndex, { reverse: pr.reverse }), portName) : '';
      chain = { path, rule, classifier: `${pr.classifier}: ${what}` };
    }
    const base = {
      in: at,
      drop: null,
      chain: chain ? plan.chains[chain.path.chain].name : null,
      classifier: chain?.classifier ?? null,
      rule: chain?.rule ?? -1,
      reverse: chain?.path.reverse ?? false,
      spi: chain?.path.spi ?? 0,
    };
    const memberPort = (k: number, reverse: boolean) => plan.ports[reverse ? plan.members[k].egress : plan.members[k].ingress];
    // Tap copies (a tap member's port), then the SF hop, then whatever leaves the chain or the bridge.
    let sf: { out: Output; k: number } | null = null;
    const rest: Output[] = [];
    for (const o of pass.outputs) {
      const tap = chain ? chain.path.hops.findIndex((h) => h.kind === 'tap' && plan.groups[h.group].members.some((k) => memberPort(k, chain!.path.reverse).iface === o.iface)) : -1;
      if (tap >= 0) {
        const k = plan.groups[chain!.path.hops[tap].group].members.find((m) => memberPort(m, chain!.path.reverse).iface === o.iface)!;
        steps.push({ ...base, verdict: 'hop', hop: -1, si: chain!.path.hops[tap].si, instance: plan.members[k].name, out: [o.iface], srcMac: o.srcMac, dstMac: o.dstMac, encap: o.encap });
      } else if (info && member >= 0 && memberPort(member, chain!.path.reverse).iface === o.iface) sf = { out: o, k: member };
      else rest.push(o);
    }
    if (sf && info) {
      const hop = chain!.path.hops[info.hop];
      steps.push({ ...base, verdict: 'hop', hop: info.hop, si: hop.si, instance: plan.members[sf.k].name, out: [sf.out.iface], srcMac: sf.out.srcMac, dstMac: sf.out.dstMac, encap: sf.out.encap });
      // SF loopback: the frame as sent comes back on the pair's other port.
      const m = plan.members[sf.k];
      at = plan.ports[chain!.path.reverse ? m.ingress : m.egress].iface;
      bytes = Uint8Array.from(bytes);
      bytes.set(sf.out.dstMac.split(':').map((h) => parseInt(h, 16)), 0);
      bytes.set(sf.out.srcMac.split(':').map((h) => parseInt(h, 16)), 6);
      continue;
    }
    // (In the plan's interface order, as the userspace mode lists a flood.)
    const order = (name: string) => plan.ports.findIndex((p) => p.iface === name);
    rest.sort((x, y) => order(x.iface) - order(y.iface));
    const last = rest[rest.length - 1];
    const macs = { srcMac: last?.srcMac ?? hexMac(bytes, 6), dstMac: last?.dstMac ?? hexMac(bytes, 0), encap: last?.encap ?? '' };
    const stepBase = { ...base, hop: -1, si: 0, instance: null, out: rest.map((o) => o.iface), ...macs };
    if (rest.length === 0) {
      const reason = pass.keys.map((k) => rendered.dropFlows.get(k)).filter((r) => r !== undefined).pop() ?? 'no_match';
      steps.push({ ...stepBase, verdict: 'drop', drop: reason });
    } else if (chain) steps.push({ ...stepBase, verdict: 'end' });
    else {
      const known = plan.ports.some((p) => !p.sf && p.mac === macs.dstMac);
      steps.push({ ...stepBase, verdict: known && rest.length === 1 ? 'l2' : 'flood' });
    }
    return steps;
  }
  throw new Error(`explain: more than ${MAX_PASSES} passes through the bridge (a loop?)`);
}
