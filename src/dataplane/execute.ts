/*
 * Execute: run, for every slot, the action list of the node it is going into (a hop's, or the
 * rule's chain-end list), on the frame bytes in place (ARCHITECTURE.md §4, spec B.4 "MAC
 * handling"). The lists come from the plan (control/plan.ts) through the userspace renderer as
 * (opcode, operand) pairs (tables.ts ACT_*); steer has already chosen where the slot leaves.
 *
 *  - ACT_SET_DST_MAC: the destination MAC becomes the selected instance's ingress port MAC (its
 *    egress port MAC on a reverse path), as networking-sfc's select-group buckets do (mod_dl_dst).
 *  - ACT_SET_END_MACS(port): at chain end with a far port, the destination MAC becomes that port's
 *    MAC and the source MAC the one the frame carried at chain entry (the entry port's MAC when the
 *    flow state has not seen it), so a sender that addressed its gateway still reaches the host.
 *  - ACT_RESTORE_MACS: at chain end without one, both MACs go back to what the frame carried at
 *    chain entry (when seen).
 *  - ACT_PUSH_MPLS / ACT_PUSH_NSH / ACT_POP_MPLS / ACT_POP_NSH: the chain's encapsulation for an
 *    SF-aware hop (encap.ts), in the order the plan's proxy rules put them (before set_dst_mac,
 *    which then addresses the outermost header).
 *  - ACT_COPY_TAP: a copy of the frame as it is at that point goes to a tap instance, in a new slot
 *    of the batch, with the tap node's own list run on it (its encapsulation, its MAC).
 * At chain end the path's end list (copies, decapsulation) runs, then the rule's delivery list; a
 * frame handed off by a service graph runs its source path's end list before its new hop's.
 * Everything else is forwarded unchanged. What to write for a hop is precomputed (Click's
 * EtherRewrite): per table generation, each instance's two MACs as the 16-bit and 32-bit words a
 * hop stores through the batch's DataView (two stores instead of six byte copies); no per-packet
 * allocation. A frame a push made larger than the egress MTU allows (what follows the outer
 * Ethernet header) is dropped as 'frame_too_big' and, for IPv4 with DF and for IPv6, answered with
 * ICMP "too big" to its sender carrying the MTU that fits (icmp.ts); a frame larger than a slot is
 * dropped likewise. (We answer rather than fragment: MPLS and NSH frames cannot be fragmented by
 * the SF, and a sender that learns the path MTU stops sending frames that would be lost.)
 */
import { ABSENT, BATCH, ENCAP_NSH, MAX_FRAME, OUT_DROP, type Batch } from '../packet/batch.js';
import { Ctr, Drop, type Counters } from '../packet/counters.js';
import { B_MACS, copyMacs, dropSlot, MACS, R_FLAGS, recordAt, V_DROP, V_END, V_HOP, V_L2, type SteerState } from './flowstate.js';
import { popMpls, popNsh, pushMpls, pushNsh } from './encap.js';
import { packetTooBig } from './icmp.js';
import { FROM_TUNNEL, pushVxlan } from './vxlan.js';
import { DEFAULT_MTU } from './io/native.js';
import {
  ACT_COPY_TAP,
  ACT_POP_MPLS,
  ACT_POP_NSH,
  ACT_PUSH_MPLS,
  ACT_PUSH_NSH,
  ACT_RESTORE_MACS,
  ACT_SET_DST_MAC,
  ACT_SET_END_MACS,
  ACT_TUNNEL,
  INST_MAC_STRIDE,
  RULE_ENDS_STRIDE,
  type Tables,
} from './tables.js';

/** Words per instance in the MAC word table: ingress MAC bytes 0-1, 2-5, then egress MAC likewise. */
const MAC_WORDS = 4;

/** MAC word tables by table generation (built on a generation's first batch). */
const macWordTables = new WeakMap<Tables, Int32Array>();

function macWords(t: Tables): Int32Array {
  let w = macWordTables.get(t);
  if (w === undefined) {
    const m = t.instMac;
    w = new Int32Array(t.instanceCount * MAC_WORDS);
    for (let k = 0; k < t.instanceCount; k++) {
      for (let side = 0; side < 2; side++) {
        const at = k * INST_MAC_STRIDE + side * 6;
        w[k * MAC_WORDS + side * 2] = (m[at] << 8) | m[at + 1];
        w[k * MAC_WORDS + side * 2 + 1] = (m[at + 2] << 24) | (m[at + 3] << 16) | (m[at + 4] << 8) | m[at + 5];
      }
    }
    macWordTables.set(t, w);
  }
  return w;
}

/** Run actions [from, from + n) on slot i; returns a drop reason, or 0. */
function run(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, from: number, n: number, macs: Int32Array): number {
  const d = b.data;
  for (let a = from; a < from + n; a++) {
    const at = b.start[i];
    const arg = t.actArg[a];
    switch (t.actOp[a]) {
      case ACT_PUSH_MPLS:
        if (!pushMpls(b, i, arg, arg & 0xff)) return Drop.frame_too_big;
        break;
      case ACT_PUSH_NSH:
        if (!pushNsh(b, i, arg >>> 8, arg & 0xff)) return Drop.frame_too_big;
        break;
      case ACT_POP_MPLS:
        if (!popMpls(b, i)) return Drop.bad_encap;
        break;
      case ACT_POP_NSH:
        if (!popNsh(b, i)) return Drop.bad_encap;
        break;
      case ACT_COPY_TAP:
        copyToTap(t, b, s, c, i, arg, macs);
        break;
      case ACT_SET_DST_MAC: {
        const m = s.slotInst[i] * MAC_WORDS + (t.pathReverse[b.path[i]] === 1 ? 2 : 0);
        b.view.setUint16(at, macs[m]);
        b.view.setInt32(at + 2, macs[m + 1]);
        break;
      }
      case ACT_SET_END_MACS: {
        const port = arg;
        for (let k = 0; k < 6; k++) d[at + k] = t.portMac[port * 6 + k];
        const src = s.slotHasMacs[i] === 1 ? s.slotMacs : t.ruleEnds;
        const from6 = s.slotHasMacs[i] === 1 ? i * MACS + 6 : s.slotRule[i] * RULE_ENDS_STRIDE + 6;
        for (let k = 0; k < 6; k++) d[at + 6 + k] = src[from6 + k];
        break;
      }
      case ACT_RESTORE_MACS:
        if (s.slotHasMacs[i] === 1) copyMacs(s.slotMacs, i * MACS, d, at);
        break;
      case ACT_TUNNEL: {
        const why = pushVxlan(t, b, i, arg >= 0 ? arg : t.instPeer[s.slotInst[i]], c);
        if (why !== 0) return why;
        break;
      }
    }
  }
  return 0;
}

/** Copy slot i to tap node `tap`: a new slot, the tap's action list run on it, out to the tap instance. */
function copyToTap(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, tap: number, macs: Int32Array): void {
  const k = b.copySlot(i);
  if (k < 0) {
    c.events[Ctr.tap_copies_lost]++;
    return;
  }
  const inst = t.tapInst[tap];
  s.verdict[k] = V_HOP;
  s.slotInst[k] = inst;
  s.slotRule[k] = s.slotRule[i];
  s.slotFrom[k] = -1;
  b.hop[k] = -1;
  if (run(t, b, s, c, k, t.tapActBase[tap], t.tapActCount[tap], macs) !== 0) {
    b.out[k] = OUT_DROP;
    s.verdict[k] = V_DROP;
    c.events[Ctr.tap_copies_lost]++;
    return;
  }
  b.out[k] = t.pathReverse[b.path[k]] === 1 ? t.instIfOut[inst] : t.instIfIn[inst];
  s.instancePackets[inst]++;
  s.instanceBytes[inst] += b.len[k];
  c.events[Ctr.tap_copies]++;
}

/**
 * Slot i grew past the egress MTU: drop it ('frame_too_big') and, for IPv4 with DF and IPv6, send
 * the sender ICMP "too big" with the MTU that fits, from a free slot of the batch (icmp.ts).
 */
function tooBig(t: Tables, b: Batch, s: SteerState, c: Counters, i: number, mtu: number, grewBy: number): void {
  dropSlot(b, s, c, i, Drop.frame_too_big);
  const r = s.slotRule[i];
  const port = r >= 0 ? t.ruleAtPort[r] : -1;
  // (The sender must be on this host: an error is never sent raw onto the underlay.)
  if (port < 0 || t.portPeer[port] >= 0 || b.l3Off[i] === ABSENT || b.count >= BATCH) return;
  // To the sender's MAC from the one it addressed (as the flow's record saw them at chain entry,
  // else the rule's ports).
  const macs = new Uint8Array(12);
  const e = b.flow[i];
  const o = s.slotOrient[i];
  if (e >= 0 && (s.rec[recordAt(e) + R_FLAGS] & (1 << o)) !== 0) {
    const at = recordAt(e) * 4 + B_MACS + o * MACS;
    macs.set(s.rec8.subarray(at + 6, at + 12), 0);
    macs.set(s.rec8.subarray(at, at + 6), 6);
  } else {
    macs.set(t.ruleEnds.subarray(r * RULE_ENDS_STRIDE + 6, r * RULE_ENDS_STRIDE + 12), 0);
    macs.set(t.ruleEnds.subarray(r * RULE_ENDS_STRIDE, r * RULE_ENDS_STRIDE + 6), 6);
  }
  const ip = b.start[i] + b.l3Off[i];
  const ipLen = b.start[i] + b.len[i] - ip;
  const error = packetTooBig(b.data, ip, ipLen, b.ipVer[i], mtu - grewBy, macs, 0);
  if (error === null) return;
  const k = b.push(error, b.port[i]);
  if (k < 0) return;
  b.drop[k] = 0;
  b.out[k] = t.portIface[port];
  b.path[k] = -1;
  b.hop[k] = -1;
  s.verdict[k] = V_L2;
  s.slotInst[k] = -1;
  s.slotRule[k] = -1;
  c.events[Ctr.icmp_too_big]++;
}

export function executeBatch(t: Tables, b: Batch, s: SteerState, c: Counters, mtu: Int32Array): void {
  const macs = macWords(t);
  const { verdict, slotInst, slotRule, slotFrom } = s;
  const { path, hop: hopOf, start, len, view, out } = b;
  const { pathHopBase, hopActBase, hopActCount, hopPlain, pathReverse, ruleActBase, ruleActCount } = t;
  const n = b.count;
  for (let i = 0; i < n; i++) {
    const v = verdict[i];
    if (v === V_DROP) continue;
    const before = len[i];
    if (v === V_HOP) {
      const p = path[i];
      const hop = pathHopBase[p] + hopOf[i];
      const from = slotFrom[i];
      if (hopPlain[hop] === 1 && from === -1) {
        // The common case inline: an SF-unaware hop only sets the destination MAC.
        const m = slotInst[i] * MAC_WORDS + (pathReverse[p] === 1 ? 2 : 0);
        view.setUint16(start[i], macs[m]);
        view.setInt32(start[i] + 2, macs[m + 1]);
        continue;
      }
      // A graph hand-off runs the source path's end (decapsulation, copies) first.
      let why = from >= 0 ? run(t, b, s, c, i, t.pathEndActBase[from], t.pathEndActCount[from], macs) : 0;
      // Multi-host (control/slice.ts): a frame a tunnel brought runs the hop's arrive list; one
      // whose selected instance is on another host, the hop's remote list (ending in the tunnel).
      if (why === 0 && from === FROM_TUNNEL) why = run(t, b, s, c, i, t.hopArriveActBase[hop], t.hopArriveActCount[hop], macs);
      else if (why === 0 && t.instPeer[slotInst[i]] >= 0) why = run(t, b, s, c, i, t.hopRemoteActBase[hop], t.hopRemoteActCount[hop], macs);
      else if (why === 0) why = run(t, b, s, c, i, hopActBase[hop], hopActCount[hop], macs);
      if (why !== 0) dropSlot(b, s, c, i, why);
    } else if (v === V_END) {
      const p = path[i];
      const r = slotRule[i];
      let why =
        slotFrom[i] === FROM_TUNNEL
          ? run(t, b, s, c, i, t.pathArriveActBase[p], t.pathArriveActCount[p], macs)
          : run(t, b, s, c, i, t.pathEndActBase[p], t.pathEndActCount[p], macs);
      if (why === 0) why = run(t, b, s, c, i, ruleActBase[r], ruleActCount[r], macs);
      if (why !== 0) dropSlot(b, s, c, i, why);
    }
    if (len[i] > before && verdict[i] !== V_DROP && out[i] >= 0) {
      // An encapsulation was pushed: what follows the outer Ethernet header must fit the egress MTU.
      const l2 = b.encap[i] === ENCAP_NSH ? 14 : 14 + 4 * b.vlanCount[i];
      const limit = mtu[out[i]] ?? DEFAULT_MTU;
      if (len[i] - l2 > limit) tooBig(t, b, s, c, i, limit, len[i] - before);
    }
    if (len[i] > MAX_FRAME && verdict[i] !== V_DROP) dropSlot(b, s, c, i, Drop.frame_too_big);
  }
}
