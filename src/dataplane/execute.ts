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
 * Everything else is forwarded unchanged. What to write for a hop is precomputed (Click's
 * EtherRewrite): per table generation, each instance's two MACs as the 16-bit and 32-bit words a
 * hop stores through the batch's DataView (two stores instead of six byte copies); no per-packet
 * allocation. A frame that would leave larger than a slot allows is dropped as 'frame_too_big'.
 */
import { MAX_FRAME, type Batch } from '../packet/batch.js';
import { Drop, type Counters } from '../packet/counters.js';
import { copyMacs, dropSlot, MACS, V_DROP, V_END, V_HOP, type SteerState } from './flowstate.js';
import { popMpls, popNsh, pushMpls, pushNsh } from './encap.js';
import {
  ACT_POP_MPLS,
  ACT_POP_NSH,
  ACT_PUSH_MPLS,
  ACT_PUSH_NSH,
  ACT_RESTORE_MACS,
  ACT_SET_DST_MAC,
  ACT_SET_END_MACS,
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
function run(t: Tables, b: Batch, s: SteerState, i: number, from: number, n: number, macs: Int32Array): number {
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
    }
  }
  return 0;
}

export function executeBatch(t: Tables, b: Batch, s: SteerState, c: Counters): void {
  const macs = macWords(t);
  const { verdict, slotInst, slotRule } = s;
  const { path, hop: hopOf, start, len, view } = b;
  const { pathHopBase, hopActBase, hopActCount, actOp, pathReverse, ruleActBase, ruleActCount } = t;
  const n = b.count;
  for (let i = 0; i < n; i++) {
    const v = verdict[i];
    if (v === V_DROP) continue;
    if (v === V_HOP) {
      const p = path[i];
      const hop = pathHopBase[p] + hopOf[i];
      const a = hopActBase[hop];
      if (hopActCount[hop] === 1 && actOp[a] === ACT_SET_DST_MAC) {
        // The common case inline: an SF-unaware hop only sets the destination MAC.
        const m = slotInst[i] * MAC_WORDS + (pathReverse[p] === 1 ? 2 : 0);
        view.setUint16(start[i], macs[m]);
        view.setInt32(start[i] + 2, macs[m + 1]);
      } else {
        const why = run(t, b, s, i, a, hopActCount[hop], macs);
        if (why !== 0) dropSlot(b, s, c, i, why);
      }
    } else if (v === V_END) {
      const r = slotRule[i];
      const why = run(t, b, s, i, ruleActBase[r], ruleActCount[r], macs);
      if (why !== 0) dropSlot(b, s, c, i, why);
    }
    if (len[i] > MAX_FRAME && verdict[i] !== V_DROP) dropSlot(b, s, c, i, Drop.frame_too_big);
  }
}
