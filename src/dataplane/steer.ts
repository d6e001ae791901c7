/*
 * Steer: decide, for every parsed slot of a batch, which node of which path it goes to next, or
 * where it leaves (ARCHITECTURE.md §4, spec B.4). Select (select.ts) then picks a hop's instance
 * and execute (execute.ts) runs the node's action list.
 *
 * The input interface and source MAC name a logical port (the interface's only port, or the port
 * whose MAC is the frame's source). The port's role picks the case:
 *  - SF return port (an instance's egress on a forward path, ingress on a reverse path), and the
 *    flow state says the flow is on a path this port returns from: continue at the next hop, or end
 *    the chain.
 *  - Chain entry port (a classifier's logical port): classify (once per flow and in-port: the
 *    result is cached in the flow state), remember the frame's MACs, steer to hop 0.
 *  - SF return port the flow state does not know (state evicted, a restart, or an SF that rewrote
 *    the tuple): re-classify with the rules of the paths through this port, logical ports ignored
 *    (OVS does the same), and continue after this port's hop.
 *  - Anything else (ARP, unmatched IP, ports with no role, link-local control traffic such as IPv6
 *    neighbour discovery and MLD, encapsulated frames for now): the L2 switch.
 * The L2 switch knows every configured port's MAC (tables.macSlots; learning cannot move one) and
 * learns the rest (l2.ts). SF ports are not L2 endpoints: unicast outside a chain addressed to an
 * SF port is dropped ('to_sf_port'), unknown unicast is flooded only to interfaces with a port
 * that is not an SF port (OUT_FLOOD_HOSTS); broadcast and multicast are flooded everywhere. A
 * destination on the input interface is dropped as 'hairpin'.
 *
 * Health (tables.hopLive): a frame due at a hop whose group has no live instance skips it
 * (fail-open) or is dropped ('hop_down', fail-closed); steerKnown leaves such hops to proceed().
 *
 * Chain end: the rule's far port (the logical destination port, or the logical source port on a
 * reverse path) gets the frame (execute sets its MAC as destination, the entry's source MAC as
 * source); without one the MACs seen at entry are restored and the frame is switched. At the end
 * of a service graph's source chain the frame is first offered to the destination chains' rules
 * (logical ports ignored): a match continues at that chain's first hop (slotFrom remembers the
 * source path, whose end actions execute runs first), no match ends the chain as usual.
 *
 * What a tap's port pair sends is dropped ('from_tap'): a tap only receives copies.
 *
 * Fragments: a first fragment records its flow entry in a FragmentTable (addresses, protocol, IP
 * id, VLAN); later fragments follow that decision. A later fragment seen first is classified and
 * hashed on L3 fields alone, without creating flow state.
 *
 * Output per slot: b.out (interface, OUT_FLOOD*, OUT_DROP; a hop's interface is select's),
 * b.path/b.hop/b.flow, and the SteerState rows (flowstate.ts) the later stages and the tracer read
 * (verdict, rule, MACs seen at entry). Drops set b.drop and count a reason; nothing throws.
 *
 * Cost (bench/pipeline.ts): one pass over the batch; a known flow costs the lookup (hash, one
 * bucket line, one record line) and steerKnown's straight line, with steerKnown and steerChain out
 * of line so that the lookup's helpers fit V8's inlining budget of steerBatch.
 */
import { classify } from '../classifier/lookup.js';
import { endpointsReversed } from '../classifier/flowcache.js';
import { ENCAP_NSH, FRAG_FIRST, FRAG_LATER, FRAG_NONE, OUT_DROP, OUT_FLOOD, OUT_FLOOD_HOSTS, type Batch } from '../packet/batch.js';
import { Ctr, Drop, type Counters } from '../packet/counters.js';
import {
  B_MACS,
  copyMacs,
  dropSlot,
  H_INPORT,
  H_INST,
  MACS,
  R_FLAGS,
  R_GEN,
  R_RULE,
  R_SERIAL,
  recordAt,
  RULE_NONE,
  RULE_UNKNOWN,
  takeInstance,
  V_DROP,
  V_END,
  V_FLOOD,
  V_HOP,
  V_L2,
  type SteerState,
} from './flowstate.js';
import { nshInnerEthernet } from './encap.js';
import { PROBE_PORT, probePayload } from './probe.js';
import { portByMac, type Tables } from './tables.js';
import { decapBatch, FROM_TUNNEL, pathByVni, tunnelVni } from './vxlan.js';

/** L2 delivery of slot i (arrived on interface f) to the MAC hi:lo (see the design comment). */
function switchTo(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, f: number, hi: number, lo: number): void {
  if ((hi & 0x100) !== 0) {
    s.verdict[i] = V_FLOOD;
    b.out[i] = OUT_FLOOD;
    c.events[Ctr.flooded]++;
    return;
  }
  const port = portByMac(t, hi, lo);
  let k: number;
  if (port >= 0) {
    if (t.portIsSf[port] === 1) {
      dropSlot(b, s, c, i, Drop.to_sf_port);
      return;
    }
    k = t.portIface[port];
  } else {
    k = s.l2.lookup(b.vlan[i], hi, lo);
    if (k >= 0 && k < t.ifaceFlood.length && t.ifaceFlood[k] === 0) {
      dropSlot(b, s, c, i, Drop.to_sf_port);
      return;
    }
  }
  if (k < 0) {
    s.verdict[i] = V_FLOOD;
    b.out[i] = OUT_FLOOD_HOSTS;
    c.events[Ctr.flooded]++;
  } else if (k === f) {
    dropSlot(b, s, c, i, Drop.hairpin);
  } else {
    s.verdict[i] = V_L2;
    b.out[i] = k;
  }
}

function learnSource(b: Batch, s: SteerState, i: number, f: number): void {
  const at = b.start[i] + 6;
  const d = b.data;
  if ((d[at] & 1) === 0) s.l2.learn(b.vlan[i], (d[at] << 8) | d[at + 1], b.view.getUint32(at + 2), f);
}

function switchSlot(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, f: number): void {
  learnSource(b, s, i, f);
  const at = b.start[i];
  c.events[Ctr.unclassified]++;
  switchTo(t, b, s, c, i, f, (b.data[at] << 8) | b.data[at + 1], b.view.getUint32(at + 2));
}

/** Slot i goes to hop index k of path p (classified by rule r); select picks the instance. */
function toHop(b: Batch, s: SteerState, i: number, p: number, k: number, r: number): void {
  b.path[i] = p;
  b.hop[i] = k;
  s.slotRule[i] = r;
  s.verdict[i] = V_HOP;
}

/** Hop index of path p that logical port L returns from, or -1. */
function hopAt(t: Tables, L: number, p: number): number {
  const end = t.portSfBase[L] + t.portSfCount[L];
  for (let k = t.portSfBase[L]; k < end; k++) if (t.sfPath[k] === p) return t.sfHop[k];
  return -1;
}

/**
 * The hop of path p that slot i, due at hop index k < hop count, enters by health (tables.hopLive):
 * k itself, a later one (fail-open skips a hop with no live instance; the hop count: the chain's
 * end) or -1: dropped ('hop_down', fail-closed).
 */
function liveHop(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, p: number, k: number): number {
  const live = t.hopLive[t.pathHopBase[p] + k];
  if (live === k) return k;
  if (live < 0) dropSlot(b, s, c, i, Drop.hop_down);
  else c.events[Ctr.hops_skipped]++;
  return live;
}

/** Slot i (orientation o of flow entry e, -1 = none) continues on path p at hop index k (k = hop count: end of chain). */
function proceed(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, f: number, e: number, o: number, p: number, k: number, r: number): void {
  b.flow[i] = e;
  if (k < t.pathHopCount[p]) {
    k = liveHop(t, b, s, c, i, p, k);
    if (k < 0) return;
    if (k < t.pathHopCount[p]) {
      toHop(b, s, i, p, k, r);
      return;
    }
  }
  // End of a graph's source chain: hand off to the destination chain whose rules match (B.9).
  const hx = t.pathHandoff[p];
  if (hx >= 0) {
    const local = classify(t.handoffTables[hx], b, i, -1, b.frag[i] === FRAG_LATER);
    const next = local >= 0 ? t.handoffTableRules[hx][local] : -1;
    const q = next >= 0 ? t.rulePath[next] : -1;
    if (q >= 0 && t.pathHopCount[q] > 0) {
      s.slotFrom[i] = p;
      c.events[Ctr.handed_off]++;
      // (a destination chain whose every hop fails open cannot end here: dropped as 'hop_down')
      const h = liveHop(t, b, s, c, i, q, 0);
      if (h >= 0 && h < t.pathHopCount[q]) toHop(b, s, i, q, h, next);
      else if (h >= 0) dropSlot(b, s, c, i, Drop.hop_down);
      return;
    }
  }
  // End of chain: the MACs seen at entry (execute's end actions use them), then the far port or L2.
  b.path[i] = p;
  s.slotRule[i] = r;
  s.verdict[i] = V_END;
  b.hop[i] = -1;
  const m = i * MACS;
  if (e >= 0 && (s.rec[recordAt(e) + R_FLAGS] & (1 << o)) !== 0) {
    copyMacs(s.rec8, recordAt(e) * 4 + B_MACS + o * MACS, s.slotMacs, m);
    s.slotHasMacs[i] = 1;
  }
  const d = t.ruleDstPort[r];
  if (d >= 0) {
    b.out[i] = t.portIface[d];
    return;
  }
  // Switched on the destination the frame will have: the one seen at entry, else (a flow this
  // process has not seen enter, e.g. one an SF translated) the inner header under NSH, else its own.
  let src = b.data;
  let at = b.start[i];
  if (s.slotHasMacs[i] === 1) {
    src = s.slotMacs;
    at = m;
  } else if (b.encap[i] === ENCAP_NSH) {
    const inner = nshInnerEthernet(b, i);
    if (inner >= 0) at = inner;
  }
  const hi = (src[at] << 8) | src[at + 1];
  const lo = ((src[at + 2] << 24) | (src[at + 3] << 16) | (src[at + 4] << 8) | src[at + 5]) >>> 0;
  const port = portByMac(t, hi, lo);
  if (port >= 0 && t.portIsSf[port] === 1) {
    // An SF's MAC is no destination for a frame leaving its chain: offer it to the endpoints.
    s.verdict[i] = V_END;
    b.out[i] = OUT_FLOOD_HOSTS;
    c.events[Ctr.flooded]++;
    return;
  }
  switchTo(t, b, s, c, i, f, hi, lo);
  if (s.verdict[i] !== V_DROP) s.verdict[i] = V_END;
}

/** Remember the first fragment's decision for the later fragments of its datagram. */
function recordFragment(b: Batch, s: SteerState, i: number, e: number, o: number): void {
  const fe = s.frags.insert(b, i, b.vlan[i]);
  s.fragFlow[fe] = e;
  s.fragSerial[fe] = s.rec[recordAt(e) + R_SERIAL];
  s.fragOrient[fe] = o;
}

/** Record orientation o of entry e as classified into rule r (or RULE_NONE) at logical port L. */
function setRule(s: SteerState, e: number, o: number, r: number, L: number): void {
  s.rec[recordAt(e) + R_RULE + o] = r;
  s.rec16[recordAt(e) * 2 + H_INPORT + o] = L;
}

/**
 * Slot i arrived on interface f from logical port L, which has a chain role; e is its flow entry
 * (-1: none, or a later fragment) in orientation o.
 */
function steerChain(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, f: number, L: number, e: number, o: number): void {
  const rec = s.rec;
  let early = false;
  const frag = b.frag[i];
  if (frag === FRAG_LATER) {
    const fe = s.frags.lookup(b, i, b.vlan[i]);
    if (fe >= 0 && rec[recordAt(s.fragFlow[fe]) + R_SERIAL] === s.fragSerial[fe]) {
      e = s.fragFlow[fe];
      o = s.fragOrient[fe];
      s.slotOrient[i] = o;
      c.events[Ctr.fragments_followed]++;
    } else {
      early = true;
      c.events[Ctr.fragments_l3_only]++;
    }
  }
  let known = RULE_UNKNOWN;
  if (e >= 0) {
    if (rec[recordAt(e) + R_GEN] !== t.generation) s.revalidate(t, e);
    known = rec[recordAt(e) + R_RULE + o];
  }

  // 1. Returning from an SF on a path the flow state knows.
  if (known >= 0 && t.portSfCount[L] !== 0) {
    const p = t.rulePath[known];
    const h = hopAt(t, L, p);
    if (h >= 0) {
      if (t.hopAware[t.pathHopBase[p] + h] === 1) {
        dropSlot(b, s, c, i, Drop.missing_encap);
        return;
      }
      proceed(t, b, s, c, i, f, e, o, p, h + 1, known);
      if (frag === FRAG_FIRST) recordFragment(b, s, i, e, o);
      return;
    }
  }

  // 2. Chain entry: classify once per flow and in-port.
  if (t.portEntry[L] !== 0) {
    let r: number;
    if (known !== RULE_UNKNOWN && s.rec16[recordAt(e) * 2 + H_INPORT + o] === L) {
      r = known;
    } else {
      r = classify(t.entryTable, b, i, L, early);
      if (e < 0 && !early) e = s.newFlow(b, i, o, t.generation);
      if (e >= 0) {
        setRule(s, e, o, r < 0 ? RULE_NONE : r, L);
        if (r >= 0) {
          copyMacs(b.data, b.start[i], s.rec8, recordAt(e) * 4 + B_MACS + o * MACS);
          rec[recordAt(e) + R_FLAGS] |= 1 << o;
        }
      }
    }
    if (r < 0) {
      switchSlot(t, b, s, c, i, f);
      return;
    }
    learnSource(b, s, i, f);
    c.events[Ctr.classified]++;
    proceed(t, b, s, c, i, f, e, o, t.rulePath[r], 0, r);
    if (frag === FRAG_FIRST && e >= 0) recordFragment(b, s, i, e, o);
    return;
  }

  // 3. Returning from an SF the flow state does not know: re-classify, logical ports ignored.
  const tb = t.portSfTable[L];
  const local = classify(t.sfTables[tb], b, i, -1, early);
  const r = local >= 0 ? t.sfTableRules[tb][local] : -1;
  const p = r >= 0 ? t.rulePath[r] : -1;
  const h = p >= 0 ? hopAt(t, L, p) : -1;
  if (h < 0) {
    switchSlot(t, b, s, c, i, f);
    return;
  }
  if (t.hopAware[t.pathHopBase[p] + h] === 1) {
    dropSlot(b, s, c, i, Drop.missing_encap);
    return;
  }
  if (e < 0 && !early) e = s.newFlow(b, i, o, t.generation);
  if (e >= 0) setRule(s, e, o, r, -1);
  proceed(t, b, s, c, i, f, e, o, p, h + 1, r);
  if (frag === FRAG_FIRST && e >= 0) recordFragment(b, s, i, e, o);
}

/**
 * Slot i came back ENCAPSULATED (MPLS or NSH) on SF return port L: the label / SPI+SI names the
 * path and the hop (the aware SF emitted its own node's index), not a classifier (spec B.4 cases 1
 * and 2). A path this port is not on is 'unknown_spi', the right path with another index 'bad_si'.
 * The rule (for chain-end delivery) is the flow's when it is on this path, else the inner packet
 * re-classified with this port's rules, else the path's first rule.
 */
function steerEncap(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, f: number, L: number, e: number, o: number): void {
  const label = b.label[i];
  const spi = label >>> 8;
  const si = label & 0xff;
  let known = RULE_UNKNOWN;
  if (e >= 0) {
    if (s.rec[recordAt(e) + R_GEN] !== t.generation) s.revalidate(t, e);
    known = s.rec[recordAt(e) + R_RULE + o];
  }
  let p = -1;
  let h = -1;
  let onPath = false;
  const end = t.portSfBase[L] + t.portSfCount[L];
  for (let k = t.portSfBase[L]; k < end; k++) {
    const q = t.sfPath[k];
    const g = t.pathHopBase[q] + t.sfHop[k];
    if (t.pathSpi[q] !== spi || t.pathEncap[q] !== b.encap[i] || t.hopAware[g] === 0) continue;
    onPath = true;
    if (t.hopSi[g] === si && (p < 0 || (known >= 0 && t.rulePath[known] === q))) {
      p = q;
      h = t.sfHop[k];
    }
  }
  if (p < 0) {
    dropSlot(b, s, c, i, onPath ? Drop.bad_si : Drop.unknown_spi);
    return;
  }
  let r = known >= 0 && t.rulePath[known] === p ? known : -1;
  if (r < 0) {
    const tb = t.portSfTable[L];
    const local = classify(t.sfTables[tb], b, i, -1, b.frag[i] === FRAG_LATER);
    r = local >= 0 && t.rulePath[t.sfTableRules[tb][local]] === p ? t.sfTableRules[tb][local] : t.pathFirstRule[p];
    if (e < 0 && b.frag[i] !== FRAG_LATER) e = s.newFlow(b, i, o, t.generation);
    if (e >= 0) setRule(s, e, o, r, -1);
  }
  proceed(t, b, s, c, i, f, e, o, p, h + 1, r);
}

/**
 * Slot i came out of a VXLAN tunnel (vxlan.ts decapBatch; control/slice.ts): the VNI names the
 * path, the chain's label / SPI+SI the node it is bound for (SI 254 - k: hop k; the path's hop
 * count: its end), and for a hop its destination MAC the instance the sending host selected, which
 * must be a member of that hop on this host. Anything else is 'unknown_tunnel_node'. The rule is
 * the flow's when it is on this path, else the inner packet classified with the path's rules as
 * they match at that node, else the path's first rule. Execute then runs the node's arrive list
 * (slotFrom FROM_TUNNEL).
 */
function steerTunnel(t: Tables, b: Batch, s: SteerState, c: Counters, i: number): void {
  const p = pathByVni(t, tunnelVni[i]);
  const label = b.label[i];
  const k = 254 - (label & 0xff);
  if (p < 0 || b.encap[i] !== t.pathEncap[p] || label >>> 8 !== t.pathSpi[p] || k < 0 || k > t.pathHopCount[p] || b.ipVer[i] === 0) {
    dropSlot(b, s, c, i, Drop.unknown_tunnel_node);
    return;
  }
  const later = b.frag[i] === FRAG_LATER;
  const o = s.slotOrient[i];
  let e = later ? -1 : s.flows.findHashed(s.slotHash[i], b, i, b.vlan[i], true, o === 1);
  let r = RULE_UNKNOWN;
  if (e >= 0) {
    if (s.rec[recordAt(e) + R_GEN] !== t.generation) s.revalidate(t, e);
    r = s.rec[recordAt(e) + R_RULE + o];
  }
  if (r < 0 || t.rulePath[r] !== p) {
    const tb = k < t.pathHopCount[p] ? t.hopArriveTable[t.pathHopBase[p] + k] : t.pathArriveTable[p];
    const local = tb >= 0 ? classify(t.sfTables[tb], b, i, -1, later) : -1;
    r = local >= 0 ? t.sfTableRules[tb][local] : t.pathFirstRule[p];
    if (e < 0 && !later) e = s.newFlow(b, i, o, t.generation);
    if (e >= 0) setRule(s, e, o, r, -1);
  }
  proceed(t, b, s, c, i, b.port[i], e, o, p, k, r);
  if (s.verdict[i] === V_HOP) {
    const at = b.start[i];
    const port = portByMac(t, (b.data[at] << 8) | b.data[at + 1], b.view.getUint32(at + 2));
    const inst = port >= 0 ? t.portInst[port] : -1;
    if (inst < 0 || t.instGroup[inst] !== t.hopGroup[t.pathHopBase[p] + b.hop[i]] || t.instPeer[inst] >= 0) {
      dropSlot(b, s, c, i, Drop.unknown_tunnel_node);
      return;
    }
    takeInstance(t, b, s, i, p, inst);
  }
  if (s.verdict[i] !== V_DROP) s.slotFrom[i] = FROM_TUNNEL;
}

/** Logical port of slot i: its interface's only port, or the one whose MAC is the frame's source (-1: none). */
function logicalPort(t: Tables, b: Batch, i: number): number {
  const f = b.port[i];
  const n = t.ifacePortCount[f];
  if (n === 1) return t.ifacePorts[t.ifacePortBase[f]];
  if (n === 0) return -1;
  const at = b.start[i] + 6;
  const hi = (b.data[at] << 8) | b.data[at + 1];
  const lo = b.view.getUint32(at + 2);
  for (let k = t.ifacePortBase[f]; k < t.ifacePortBase[f] + n; k++) {
    const q = t.ifacePorts[k];
    if (t.portMacHi[q] === hi && t.portMacLo[q] === lo) return q;
  }
  return -1;
}

/**
 * The common case in straight-line code: a flow the state knows (validated against this
 * generation, classified in this orientation, not a fragment), entering at the port it was
 * classified at or returning from an SF of its path, and going on to a hop. Returns false, having
 * changed nothing, for anything else (steerChain decides those; for these it would reach the same
 * result through its general steps).
 */
function steerKnown(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, L: number, e: number, o: number): boolean {
  const rec = s.rec;
  const r = recordAt(e);
  if (b.frag[i] !== FRAG_NONE || rec[r + R_GEN] !== t.generation) return false;
  const rule = rec[r + R_RULE + o];
  if (rule < 0) return false;
  const p = t.rulePath[rule];
  let k = 0;
  if (t.portSfCount[L] !== 0) {
    k = hopAt(t, L, p) + 1;
    if (k === 0 || t.hopAware[t.pathHopBase[p] + k - 1] === 1) return false;
  } else if (s.rec16[r * 2 + H_INPORT + o] !== L) {
    return false;
  }
  if (k >= t.pathHopCount[p] || t.hopLive[t.pathHopBase[p] + k] !== k) return false;
  if (k === 0) {
    learnSource(b, s, i, b.port[i]);
    c.events[Ctr.classified]++;
  }
  toHop(b, s, i, p, k, rule);
  // Select's first rule, taken here while the record is at hand: the flow's remembered instance,
  // if still a live member of the hop's group (select then leaves the slot alone).
  const hop = t.pathHopBase[p] + k;
  const inst = s.rec16[r * 2 + H_INST + t.hopChainHop[hop]];
  if (inst >= 0 && t.instLiveGroup[inst] === t.hopGroup[hop]) takeInstance(t, b, s, i, p, inst);
  return true;
}

/** Slot i at SF return port L: if it is a probe, record its return for the instance it names (when L is that instance's) and consume it. */
function consumeProbe(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, L: number): boolean {
  const at = probePayload(b, i);
  if (at < 0) return false;
  const inst = b.view.getUint32(at + 4);
  const seq = b.view.getUint32(at + 8);
  if (inst < t.instanceCount && (t.instPortOut[inst] === L || t.instPortIn[inst] === L) && seq > s.probeSeq[inst]) {
    s.probeSeq[inst] = seq;
    s.probeAt[inst] = s.now;
  }
  c.events[Ctr.probes_returned]++;
  s.verdict[i] = V_DROP;
  b.out[i] = OUT_DROP;
  return true;
}

/**
 * Link-scoped control traffic that must never enter a chain (it would cross routing SFs and arrive
 * with a decremented hop limit, which RFC 4861 forbids for neighbour discovery): IPv6 with a
 * link-local source or destination (fe80::/10), link- or interface-scope multicast (ff01::/16,
 * ff02::/16), ICMPv6 MLD (130-132, 143), router/neighbour discovery and redirect (133-137); IPv4
 * link-local (169.254.0.0/16) and local-network multicast (224.0.0.0/24).
 */
export function isLinkLocal(b: Batch, i: number): boolean {
  const w = i * 4;
  const src = b.src[w];
  const dst = b.dst[w];
  if (b.ipVer[i] === 6) {
    if (src >>> 22 === 0x3fa || dst >>> 22 === 0x3fa) return true;
    if (dst >>> 24 === 0xff && ((dst >>> 16) & 0xf) <= 2) return true;
    if (b.proto[i] !== 58) return false;
    const type = b.sport[i];
    return (type >= 130 && type <= 137) || type === 143;
  }
  return src >>> 16 === 0xa9fe || dst >>> 16 === 0xa9fe || dst >>> 8 === 0xe00000;
}

/**
 * Steer every slot of b with tables t. Chain traffic is looked up in the flow state; a known flow
 * takes steerKnown's straight line, anything else steerChain's general steps (which insert a new
 * flow with the hash of this lookup).
 */
export function steerBatch(t: Tables, b: Batch, s: SteerState, c: Counters): void {
  const n = b.count;
  const flows = s.flows;
  s.slotRule.fill(-1, 0, n);
  s.slotInst.fill(-1, 0, n);
  s.slotFrom.fill(-1, 0, n);
  s.slotHasMacs.fill(0, 0, n);
  const tunnel = t.underlayIface;
  if (tunnel >= 0) decapBatch(t, b, c);
  let hits = 0;
  let misses = 0;
  // Hash every IP slot's flow key first and warm the lines its lookup reads, so that the batch's
  // cache misses overlap (the flow table outgrows the caches at ~100k flows). Dropped and non-IP
  // slots never reach the flow table.
  const slotHash = s.slotHash;
  for (let i = 0; i < n; i++) {
    if (b.drop[i] !== 0 || b.ipVer[i] === 0) {
      s.slotOrient[i] = 0;
      slotHash[i] = 0;
      continue;
    }
    const swap = endpointsReversed(b, i);
    s.slotOrient[i] = swap ? 1 : 0;
    slotHash[i] = flows.hashSlot(b, i, b.vlan[i], true, swap);
  }
  s.warmth = flows.warm(slotHash, n);
  for (let i = 0; i < n; i++) {
    if (b.drop[i] !== 0) {
      s.verdict[i] = V_DROP;
      b.out[i] = OUT_DROP;
      continue;
    }
    if (b.port[i] === tunnel) {
      steerTunnel(t, b, s, c, i);
      continue;
    }
    const L = logicalPort(t, b, i);
    if (L < 0 || b.ipVer[i] === 0 || (t.portEntry[L] === 0 && t.portSfCount[L] === 0) || isLinkLocal(b, i)) {
      if (L >= 0 && t.portIsTap[L] === 1) dropSlot(b, s, c, i, Drop.from_tap);
      else switchSlot(t, b, s, c, i, b.port[i]);
      continue;
    }
    // A health probe back from an SF (probe.ts): consumed here, never steered on.
    if (b.dport[i] === PROBE_PORT && t.portSfCount[L] !== 0 && consumeProbe(t, b, s, c, i, L)) continue;
    // Encapsulated frames: from an SF-aware hop (at an SF return port), else switched plainly.
    const encapsulated = b.encap[i] !== 0;
    if (encapsulated && t.portSfCount[L] === 0) {
      switchSlot(t, b, s, c, i, b.port[i]);
      continue;
    }
    let e = -1;
    let o = 0;
    if (b.frag[i] !== FRAG_LATER) {
      // (A later fragment has no ports: steerChain finds its flow through the fragment table.)
      o = s.slotOrient[i];
      e = flows.findHashed(slotHash[i], b, i, b.vlan[i], true, o === 1);
      b.flow[i] = e;
      if (e < 0) {
        misses++;
      } else {
        hits++;
        if (!encapsulated && steerKnown(t, b, s, c, i, L, e, o)) continue;
      }
    }
    if (encapsulated) steerEncap(t, b, s, c, i, b.port[i], L, e, o);
    else steerChain(t, b, s, c, i, b.port[i], L, e, o);
  }
  c.events[Ctr.flow_cache_hits] += hits;
  c.events[Ctr.flow_cache_misses] += misses;
}
