/*
 * `sfc explain` on the ovs driver: one packet's journey through the bridge as OVS's own pipeline
 * computes it (`ovs-appctl ofproto/trace BRIDGE in_port=IFACE PACKET-HEX`), told as the userspace
 * mode's explain tells it (journey.ts StepView: classifier, path, SI and instance per hop, output).
 *
 * Each pass is one trace. The table-0 flow it matched gives the rule (among the path's rules at
 * that interface, the one whose match strings the flow carries); the select group it reached
 * (`group:ID`, `using bucket B`) or the pin it took (T_PIN, ct_mark) gives path, hop and instance (GroupInfo); the datapath actions
 * give the outputs, each with the frame as those actions leave it (applyAction: MAC rewrites, MPLS
 * and NSH push/pop). ofproto/trace resumes a hop's conntrack lookup itself; a flow pinned in
 * the hop's zone (its conntrack entry, read here) is traced on from the lookup with its mark, any
 * other as hashed afresh. A pop recirculates, and so does a dp_hash group: the trace goes on
 * with `recirc_id` and the frame as the pop left it, for a dp_hash group with the datapath hash
 * `dp_hash` set to a symmetric hash of the frame's addresses, protocol and ports computed here (not
 * OVS's own function: the instance shown is one the group maps some hash to, and a reply's is its
 * request's, as both directions' groups map hashes alike). As the
 * userspace explain, service functions are simulated by loopback: a frame sent to an SF port
 * comes back in at the pair's other port for the next pass, its service index decremented as an
 * SF-aware SF does (replay.ts decrementIndex).
 *
 * ofproto/trace RUNS a hop's conntrack commit: explaining a packet of a flow not pinned yet pins
 * it to the instance shown, as its first real packet would. (A group with explicit lb_fields
 * selects in the lookup's resumed pass, so there a pinned flow is hashed afresh and re-pinned.)
 */
import { describeRule } from '../../../classifier/lookup.js';
import { ruleFromClassifier } from '../../../classifier/rule.js';
import type { StepView } from '../../journey.js';
import type { State } from '../../model.js';
import type { Plan, PlanPath } from '../../plan.js';
import { describeEncap, ethertypeAt } from '../../../dataplane/encap.js';
import { dissect } from '../../../dataplane/tracefilter.js';
import { decrementIndex } from '../../../dataplane/replay.js';
import { formatMac } from '../../../dataplane/tables.js';
import { exec } from './ofctl.js';
import { ruleMatches, T_PIN, T_RESTORE, type Rendered } from './render.js';

export interface OvsTraceContext {
  /** ovs-vswitchd's control socket. */
  ctl: string;
  bridge: string;
  plan: Plan;
  rendered: Rendered;
  state: State;
}

/** One copy the datapath sends: the interface and the frame as it leaves. */
interface Output {
  iface: string;
  frame: Uint8Array;
}

/** What one trace found. */
interface Pass {
  /** The table-0 flow's match tokens (empty when nothing matched in table 0). */
  entry: Set<string>;
  /** Group id of the hop this pass selected, and the bucket it used or the member its pin named (-1 when none). */
  gid: number;
  bucket: number;
  pinned: number;
  outputs: Output[];
  /** Flow keys (table=N, priority=P,MATCH) of every flow the pass matched, in order. */
  keys: string[];
  /** After a pop or a dp_hash group: the recirculation id and the frame as it is then (to trace on; `hash`: set dp_hash). */
  recirc: { id: string; frame: Uint8Array; hash: boolean } | null;
}

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
const macBytes = (mac: string) => mac.split(':').map((h) => parseInt(h, 16));
const word = (n: number) => [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
const ETH_NSH = 0x894f;
const NSH_MD1_WORDS = 6;

/**
 * The frame after one datapath action (OVS's print form): MAC rewrites, MPLS push/pop (after the
 * MACs and VLAN tags), NSH MD type 1 push/pop and the Ethernet header around it; others leave it.
 */
function applyAction(f: Uint8Array, a: string): Uint8Array {
  const at = ethertypeAt(f);
  switch (/^\w+/.exec(a)?.[0]) {
    case 'set': {
      const out = Uint8Array.from(f);
      const [dst, src] = [field(a, 'dst'), field(a, 'src')];
      if (a.startsWith('set(eth(') && dst) out.set(macBytes(dst), 0);
      if (a.startsWith('set(eth(') && src) out.set(macBytes(src), 6);
      return out;
    }
    case 'push_mpls': {
      const w = ((Number(field(a, 'label')) & 0xfffff) << 12) | ((Number(field(a, 'tc')) & 7) << 9) | (1 << 8) | (Number(field(a, 'ttl')) & 0xff);
      return Uint8Array.from([...f.subarray(0, at), 0x88, 0x47, ...word(w >>> 0), ...f.subarray(at + 2)]);
    }
    case 'pop_mpls': {
      const type = Number(field(a, 'eth_type'));
      return Uint8Array.from([...f.subarray(0, at), type >> 8, type & 0xff, ...f.subarray(at + 6)]);
    }
    case 'push_nsh': {
      const w0 = ((Number(field(a, 'ttl')) & 0x3f) << 22) | (NSH_MD1_WORDS << 16) | ((Number(field(a, 'mdtype')) & 0xf) << 8) | (Number(field(a, 'np')) & 0xff);
      const context = ['c1', 'c2', 'c3', 'c4'].flatMap((c) => word(Number(field(a, c) ?? 0)));
      return Uint8Array.from([...word(w0), ...word(((Number(field(a, 'spi')) << 8) | (Number(field(a, 'si')) & 0xff)) >>> 0), ...context, ...f]);
    }
    case 'push_eth':
      return Uint8Array.from([...macBytes(field(a, 'dst')!), ...macBytes(field(a, 'src')!), ETH_NSH >> 8, ETH_NSH & 0xff, ...f]);
    case 'pop_eth':
      return f.slice(at + 2);
    case 'pop_nsh':
      return f.slice((f[1] & 0x3f) * 4); // (its length field, in 4-byte words)
    default:
      return f;
  }
}

/** Parse one ofproto/trace answer for `frame` (datapath ports named through `ifaceOf`). */
export function parseTrace(text: string, frame: Uint8Array, ifaceOf: Map<number, string>): Pass {
  const pass: Pass = { entry: new Set(), gid: -1, bucket: -1, pinned: -1, outputs: [], keys: [], recirc: null };
  for (const m of text.matchAll(/^\s*(\d+)\. (?:(.*), )?priority (\d+), cookie 0x[0-9a-f]+$/gm)) {
    const [, table, match = '', prio] = m;
    pass.keys.push(`table=${table}, priority=${prio}${match ? `,${match}` : ''}`);
    if (table === '0' && pass.keys.length === 1) pass.entry = new Set(match.split(','));
    // A pinned flow (T_PIN, ct_mark = member + 1; the group's id in the metadata's low 32 bits).
    const mark = field(match, 'ct_mark');
    if (table === String(T_PIN) && mark) {
      pass.gid = Number(BigInt(field(match, 'metadata')!) & 0xffffffffn);
      pass.pinned = Number(mark) - 1;
    }
  }
  const group = /^\s*group:(\d+)$/m.exec(text);
  const bucket = /-> using bucket (\d+)/.exec(text);
  if (group && bucket) {
    pass.gid = Number(group[1]);
    pass.bucket = Number(bucket[1]);
  }
  // One section per pass of the datapath: a conntrack recirculation is resumed in the same answer,
  // so only the last section's recirculation is left to trace.
  const sections = [...text.matchAll(/^Datapath actions: (.*)$/gm)].map((m) => m[1]);
  if (sections.length === 0) throw new Error(`ofproto/trace gave no datapath actions:\n${text}`);
  let f = frame;
  let hash = false;
  sections.forEach((actions, n) => {
    for (const a of topLevel(actions)) {
      if (/^\d+$/.test(a)) pass.outputs.push({ iface: ifaceOf.get(Number(a)) ?? `datapath port ${a}`, frame: f });
      else if (a.startsWith('recirc(')) pass.recirc = n === sections.length - 1 ? { id: a.slice('recirc('.length, -1), frame: f, hash } : null;
      else if (a.startsWith('hash(')) hash = true;
      else f = applyAction(f, a);
    }
  });
  return pass;
}

/** The frame's addresses (raw), protocol and L4 ports (0 when it has none), as tracefilter's dissect reads them. */
function tupleOf(f: Uint8Array): { a: Uint8Array; b: Uint8Array; proto: number; p: number; q: number } {
  const d = dissect(f);
  return d === null ? { a: f.subarray(0, 0), b: f.subarray(0, 0), proto: 0, p: 0, q: 0 } : { a: d.srcBytes, b: d.dstBytes, proto: d.proto, p: d.sport, q: d.dport };
}

/** An address as OVS prints it (IPv4 dotted, IPv6 compressed). */
const addressText = (x: Uint8Array) =>
  x.length === 4 ? [...x].join('.') : new URL(`http://[${Array.from({ length: 8 }, (_, i) => ((x[2 * i] << 8) | x[2 * i + 1]).toString(16)).join(':')}]`).hostname.slice(1, -1);

/**
 * The conntrack entry of the flow of frame `f` in zone `zone` (either direction) as ofproto/trace
 * flow fields (ct_mark: the member it is pinned to, + 1; ct_label: its entry MACs), or null.
 */
async function conntrackEntry(ctl: string, zone: number, f: Uint8Array): Promise<string | null> {
  const { a, b, p, q } = tupleOf(f);
  const tuple = `(src=${addressText(a)},dst=${addressText(b)}${p || q ? `,sport=${p},dport=${q}` : ''})`;
  const dump = await exec(['ovs-appctl', '-t', ctl, 'dpctl/dump-conntrack', `zone=${zone}`]);
  const line = dump.split('\n').find((l) => l.includes(`orig=${tuple}`) || l.includes(`reply=${tuple}`));
  if (!line) return null;
  const [mark, labels] = [/,mark=(\d+)/.exec(line)?.[1], /,labels=(0x[0-9a-f]+)/.exec(line)?.[1]];
  return [`ct_state=trk|est,ct_zone=${zone}`, ...(mark ? [`ct_mark=${mark}`] : []), ...(labels ? [`ct_label=${labels}`] : [])].join(',');
}

/**
 * A hash of the frame's IP addresses, protocol and L4 ports, the same for both directions of a
 * flow (each pair in sorted order; FNV-1a), for a dp_hash group's recirculation.
 */
export function symmetricHash(f: Uint8Array): number {
  const { a, b, proto, p, q } = tupleOf(f);
  const addrs = Buffer.compare(a, b) <= 0 ? [a, b] : [b, a];
  const bytes = [...addrs[0], ...addrs[1], proto, Math.min(p, q) >> 8, Math.min(p, q) & 0xff, Math.max(p, q) >> 8, Math.max(p, q) & 0xff];
  let h = 0x811c9dc5;
  for (const x of bytes) h = Math.imul(h ^ x, 0x01000193) >>> 0;
  return h || 1; // (OVS takes dp_hash 0 for "not computed yet")
}

/** Datapath port number -> interface name, from `dpif/show` (`  p0 6/7: (system)`). */
async function datapathPorts(ctl: string): Promise<Map<number, string>> {
  const show = await exec(['ovs-appctl', '-t', ctl, 'dpif/show']);
  return new Map([...show.matchAll(/^\s+(\S+) \d+\/(\d+):/gm)].map((m) => [Number(m[2]), m[1]]));
}

const MAX_PASSES = 64;

/** A frame's MACs and encapsulation as a step shows them. */
const seen = (f: Uint8Array) => ({ srcMac: formatMac(f, 6), dstMac: formatMac(f, 0), encap: describeEncap(f) });

/** The journey of `frame` arriving on interface `iface`, through OVS's pipeline (see the top). */
export async function ovsExplain(ctx: OvsTraceContext, iface: string, frame: Uint8Array): Promise<StepView[]> {
  const { plan, rendered } = ctx;
  const ifaceOf = await datapathPorts(ctx.ctl);
  const portIndex = (id: string) => plan.ports.findIndex((p) => p.id === id);
  const portName = (k: number) => plan.ports[k]?.name ?? String(k);
  const steps: StepView[] = [];
  let chain: { path: PlanPath; rule: number; classifier: string } | null = null;
  let at = iface;
  let bytes: Uint8Array = Uint8Array.from(frame);
  for (let n = 0; n < MAX_PASSES; n++) {
    const run = (flow: string, f: Uint8Array, ct = 'trk,inv') => exec(['ovs-appctl', '-t', ctx.ctl, 'ofproto/trace', '--ct-next', ct, ctx.bridge, flow, Buffer.from(f).toString('hex')]);
    /**
     * One trace of `f`. A conntrack lookup is resumed as invalid (a hop: no pin, hashed; the commit
     * runs after the group, in a pass traced on here; a chain end: no entry MACs); where the flow
     * has an entry in the lookup's zone (read here), it is traced on from the lookup with the
     * entry's mark and label instead, so explaining a pinned flow does not pin it anew.
     */
    const trace = async (flow: string, f: Uint8Array) => {
      const text = await run(flow, f);
      const lookup = new RegExp(`^\\s*ct\\(table=(?:${T_PIN}|${T_RESTORE}),zone=(\\d+)\\)$`, 'm').exec(text);
      const resume = /^=+\nrecirc\((0x[0-9a-f]+)\) - resume conntrack.*\n=+$/m.exec(text);
      if (!lookup || !resume) return text;
      const entry = await conntrackEntry(ctx.ctl, Number(lookup[1]), f);
      if (entry === null) return text;
      const pinned = await run(`recirc_id=${resume[1]},${entry},${flow.replace(/^recirc_id=[^,]*,/, '')}`, f, 'trk,est');
      return `${text.slice(0, resume.index)}${pinned}`;
    };
    let pass = parseTrace(await trace(`in_port=${at}`, bytes), bytes, ifaceOf);
    // After a pop or a dp_hash group, follow the recirculation with the frame as it then is; the entry flow is the first trace's.
    for (let r = 0; pass.recirc !== null && r < MAX_PASSES; r++) {
      const { id, frame: inner, hash } = pass.recirc;
      const next = parseTrace(await trace(`recirc_id=${id},${hash ? `dp_hash=0x${symmetricHash(inner).toString(16)},` : ''}in_port=${at}`, inner), inner, ifaceOf);
      const hop = next.gid >= 0 ? next : pass;
      pass = { ...next, outputs: [...pass.outputs, ...next.outputs], entry: pass.entry, keys: [...pass.keys, ...next.keys], gid: hop.gid, bucket: hop.bucket, pinned: hop.pinned };
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
        steps.push({ ...base, verdict: 'hop', hop: -1, si: chain!.path.hops[tap].si, instance: plan.members[k].name, out: [o.iface], ...seen(o.frame) });
      } else if (info && member >= 0 && memberPort(member, chain!.path.reverse).iface === o.iface) sf = { out: o, k: member };
      else rest.push(o);
    }
    if (sf && info) {
      const hop = chain!.path.hops[info.hop];
      steps.push({ ...base, verdict: 'hop', hop: info.hop, si: hop.si, instance: plan.members[sf.k].name, out: [sf.out.iface], ...seen(sf.out.frame) });
      // SF loopback: the frame as sent comes back on the pair's other port (its index decremented).
      const m = plan.members[sf.k];
      at = plan.ports[chain!.path.reverse ? m.ingress : m.egress].iface;
      bytes = decrementIndex(sf.out.frame);
      continue;
    }
    // (In the plan's interface order, as the userspace mode lists a flood.)
    const order = (name: string) => plan.ports.findIndex((p) => p.iface === name);
    rest.sort((x, y) => order(x.iface) - order(y.iface));
    const last = rest[rest.length - 1];
    const macs = seen(last?.frame ?? bytes);
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
