/*
 * Rewrite: apply steer's decisions to the frame bytes, in place (spec B.4 "MAC handling").
 *
 *  - A hop: the destination MAC becomes the chosen instance's ingress port MAC (its egress port MAC
 *    on a reverse path), as networking-sfc's select-group buckets do (mod_dl_dst). The source MAC is
 *    left alone.
 *  - The end of a chain: both MACs are put back to what the frame carried at chain entry (steer
 *    copied them into its per-slot row), so plain hosts at both ends need no special routes.
 *  - Everything else is forwarded unchanged.
 * The bytes come from precompiled arrays (Click's EtherRewrite: precompute what to write); no
 * per-packet allocation. The seam for pushing / popping MPLS or NSH is here too (moving
 * b.start[i] into the headroom); no correlation is rendered yet. A frame that would leave larger
 * than a slot allows is dropped as 'frame_too_big'.
 */
import { MAX_FRAME, OUT_DROP, type Batch } from './batch.js';
import { Ctr, Drop, type Counters } from './counters.js';
import { copyMacs, V_DROP, V_END, V_HOP, type SteerState } from './steer.js';
import { INST_MAC_STRIDE, type Tables } from './tables.js';

export function rewriteBatch(t: Tables, b: Batch, s: SteerState, c: Counters): void {
  const d = b.data;
  for (let i = 0; i < b.count; i++) {
    const v = s.verdict[i];
    if (v === V_DROP) continue;
    const at = b.start[i];
    if (v === V_HOP) {
      const m = s.slotInst[i] * INST_MAC_STRIDE + (t.pathReverse[b.path[i]] === 1 ? 6 : 0);
      const mac = t.instMac;
      d[at] = mac[m];
      d[at + 1] = mac[m + 1];
      d[at + 2] = mac[m + 2];
      d[at + 3] = mac[m + 3];
      d[at + 4] = mac[m + 4];
      d[at + 5] = mac[m + 5];
    } else if (v === V_END && s.slotHasMacs[i] === 1) {
      copyMacs(s.slotMacs, i * 12, d, at);
    }
    if (b.len[i] > MAX_FRAME) {
      b.drop[i] = Drop.frame_too_big;
      b.out[i] = OUT_DROP;
      s.verdict[i] = V_DROP;
      c.drops[Drop.frame_too_big]++;
      c.events[Ctr.dropped]++;
    }
  }
}
