/*
 * Live flows per member on the ovs driver, counted the way the driver pins them (render.ts): a hop
 * commits each new flow to conntrack in the hop's zone (zoneOf(chain_id, hop)) with
 * ct_mark = member + 1, and the flow's later frames, replies too, follow that entry. A member's
 * flows are therefore the conntrack entries of the driver's zones carrying its mark, as
 * `ovs-appctl dpctl/dump-conntrack` lists them. They count while conntrack keeps the entry (its
 * protocol's timeout in the datapath, e.g. 30 s for UDP, hours for an established TCP connection)
 * rather than the userspace dataplane's idle time.
 */
import type { Plan } from '../../plan.js';
import { exec } from './ofctl.js';
import { zoneOf } from './render.js';

/** The conntrack zones the plan's steered hops pin their flows in. */
export function pinZones(plan: Plan): Set<number> {
  const zones = new Set<number>();
  for (const p of plan.paths) for (const hop of p.hops.slice(0, p.sfHops)) zones.add(zoneOf(plan.chains[p.chain].chainId, hop.chainHop));
  return zones;
}

/** Entries per member (index = mark - 1) among the dump's lines in `zones`. */
export function flowsPerMember(dump: string, zones: ReadonlySet<number>, members: number): Float64Array {
  const out = new Float64Array(members);
  for (const line of dump.split('\n')) {
    const zone = /,zone=(\d+)/.exec(line);
    const mark = /,mark=(\d+)/.exec(line);
    if (zone === null || mark === null || !zones.has(Number(zone[1]))) continue;
    const k = Number(mark[1]) - 1;
    if (k >= 0 && k < members) out[k]++;
  }
  return out;
}

/** The live flows of each of the plan's members from the datapath's conntrack (`ctl`: ovs-vswitchd's control socket, '' for the default). */
export async function readMemberFlows(ctl: string, plan: Plan): Promise<Float64Array> {
  const dump = await exec(['ovs-appctl', ...(ctl ? ['-t', ctl] : []), 'dpctl/dump-conntrack']);
  return flowsPerMember(dump, pinZones(plan), plan.members.length);
}
