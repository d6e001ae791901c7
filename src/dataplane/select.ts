/*
 * Select: for every slot steer sent to a hop, pick the instance (port pair) of the hop's group
 * (ARCHITECTURE.md §4) and the interface it leaves by.
 *
 *  - Sticky first: the flow's remembered choice for this hop (flowstate.ts) is reused while it is
 *    still a LIVE member of the hop's group (tables.instLiveGroup), so adding an instance moves no
 *    flow, removing one or health checks finding it down moves only its flows (they pick again
 *    and keep the new choice when it returns), and weight 0 drains (the Maglev table, used only
 *    for new choices, skips it). After
 *    a chain update the group's choice may sit at another position of the record: it is found and
 *    swapped into place.
 *  - Else weighted Maglev: table[hash(lb_fields) & mask]. The hash is SYMMETRIC by construction: a
 *    reverse path hashes with swapped fields (ip_src forward = ip_dst reverse, ports likewise), so
 *    both directions of a flow pick the same instance at every hop by hash alone — after a restart,
 *    on another worker, in another process, with no shared state. The Ethernet fields are the
 *    path's endpoint MACs (the rule's far port and entry port, tables.ruleEnds), not the frame's
 *    current MACs, which SFs rewrite hop by hop and which differ between directions.
 *  - Non-first fragments carry no ports: they hash on L3 fields only (steer makes them follow their
 *    first fragment's record when it has one).
 * A hop whose group has no usable instance drops the slot ('no_instance').
 */
import { LB_PORT_BITS } from '../hash/flowhash.js';
import { FRAG_LATER, type Batch } from '../packet/batch.js';
import { Drop, type Counters } from '../packet/counters.js';
import { dropSlot, F_KEPT, H_INST, R_FLAGS, recordAt, takeInstance, V_HOP, type SteerState } from './flowstate.js';
import { MAX_HOPS, RULE_ENDS_STRIDE, type Tables } from './tables.js';

/** Instance for slot i at hop `hop` (global hop index) of path p: the flow's sticky choice if still valid, else Maglev. */
function chooseInstance(t: Tables, b: Batch, s: SteerState, i: number, e: number, p: number, hop: number): number {
  const g = t.hopGroup[hop];
  const inst = s.rec16;
  const base = recordAt(e) * 2 + H_INST;
  const at = base + t.hopChainHop[hop];
  const moved = e >= 0 && (s.rec[recordAt(e) + R_FLAGS] & F_KEPT) !== 0;
  if (e >= 0) {
    const k = inst[at];
    if (k >= 0 && t.instLiveGroup[k] === g) return k;
    // After a chain update this group's choice may sit at another position: swap it here.
    if (moved) {
      for (let h = base; h < base + MAX_HOPS; h++) {
        const x = inst[h];
        if (x >= 0 && t.instLiveGroup[x] === g) {
          inst[h] = k;
          inst[at] = x;
          return x;
        }
      }
    }
  }
  let mask = t.groupLbMask[g];
  if (b.frag[i] === FRAG_LATER) mask &= ~LB_PORT_BITS;
  const h = s.hash(b, i, mask, t.pathReverse[p] === 1, t.ruleEnds, s.slotRule[i] * RULE_ENDS_STRIDE);
  const k = t.maglev[t.groupMaglevBase[g] + (h & t.groupMaglevMask[g])];
  if (k >= 0 && e >= 0) {
    // Keep another group's remembered choice that occupies this position (a later hop needs it).
    const old = inst[at];
    if (moved && old >= 0) {
      for (let x = base; x < base + MAX_HOPS; x++) {
        if (inst[x] === -1) {
          inst[x] = old;
          break;
        }
      }
    }
    inst[at] = k;
  }
  return k;
}

export function selectBatch(t: Tables, b: Batch, s: SteerState, c: Counters): void {
  const { verdict, slotInst } = s;
  const n = b.count;
  for (let i = 0; i < n; i++) {
    if (verdict[i] !== V_HOP || slotInst[i] >= 0) continue; // (steer took a known flow's sticky choice)
    const p = b.path[i];
    const inst = chooseInstance(t, b, s, i, b.flow[i], p, t.pathHopBase[p] + b.hop[i]);
    if (inst < 0) dropSlot(b, s, c, i, Drop.no_instance);
    else takeInstance(t, b, s, i, p, inst);
  }
}
