/*
 * Rewrite: apply steer's decisions to the frame bytes, in place (spec B.4 "MAC handling").
 *
 *  - A hop: the destination MAC becomes the chosen instance's ingress port MAC (its egress port MAC
 *    on a reverse path), as networking-sfc's select-group buckets do (mod_dl_dst). The source MAC is
 *    left alone.
 *  - The end of a chain: both MACs are put back to what the frame carried at chain entry (steer
 *    copied them into its per-slot row), so plain hosts at both ends need no special routes.
 *  - Everything else is forwarded unchanged.
 * What to write is precomputed (Click's EtherRewrite): per table generation, each instance's two
 * MACs as the 16-bit and 32-bit words a hop stores through the batch's DataView (two stores instead
 * of six byte copies); no per-packet allocation. The seam for pushing / popping MPLS or NSH is here
 * too (moving b.start[i] into the headroom); no correlation is rendered yet. A frame that would
 * leave larger than a slot allows is dropped as 'frame_too_big'.
 */
import { MAX_FRAME, type Batch } from '../packet/batch.js';
import { Drop, type Counters } from '../packet/counters.js';
import { copyMacs, dropSlot, V_DROP, V_END, V_HOP, type SteerState } from './steer.js';
import { INST_MAC_STRIDE, type Tables } from './tables.js';

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

export function rewriteBatch(t: Tables, b: Batch, s: SteerState, c: Counters): void {
  const d = b.data;
  const view = b.view;
  const macs = macWords(t);
  for (let i = 0; i < b.count; i++) {
    const v = s.verdict[i];
    if (v === V_DROP) continue;
    const at = b.start[i];
    if (v === V_HOP) {
      const m = s.slotInst[i] * MAC_WORDS + (t.pathReverse[b.path[i]] === 1 ? 2 : 0);
      view.setUint16(at, macs[m]);
      view.setInt32(at + 2, macs[m + 1]);
    } else if (v === V_END && s.slotHasMacs[i] === 1) {
      copyMacs(s.slotMacs, i * 12, d, at);
    }
    if (b.len[i] > MAX_FRAME) dropSlot(b, s, c, i, Drop.frame_too_big);
  }
}
