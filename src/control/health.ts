/*
 * Health: the second input of a renderer beside the plan (ARCHITECTURE.md §5). Which port pairs
 * health checks found down, and per port pair group what happens when none of its instances is
 * left (HealthPolicy). Health is not part of the model: a change re-renders the plan in force with
 * the new view (Driver.health), it never rebuilds the plan.
 *
 *  - A down instance leaves its group's selection (the Maglev table is rebuilt without it, so only
 *    its slots move) and its flows' sticky choices stop holding: only ITS flows pick again, among
 *    the live instances, and they stay there when it returns (new flows use it again).
 *  - When a hop has no usable instance (all down, all weight 0, or an empty group):
 *      reroute (default)  frames are dropped as 'no_instance' (as without health checks)
 *      fail-open          frames skip the hop and continue along the chain (networking-sfc's
 *                         behaviour for a chain through an empty group); an SF-aware hop, or one
 *                         right after an aware hop, cannot be skipped (the encapsulation would be
 *                         wrong for the next node) and is dropped as for fail-closed
 *      fail-closed        frames are dropped, counted as 'hop_down'
 */
import type { PlanGroup, PlanMember, PlanPath } from './plan.js';

export const HEALTH_POLICIES = ['reroute', 'fail-open', 'fail-closed'] as const;
export type HealthPolicy = (typeof HEALTH_POLICIES)[number];

export interface HealthView {
  /** Port pair ids found down. */
  down: ReadonlySet<string>;
  /** The group's policy (by id, or by name for configuration written by hand). */
  policy(group: { id: string; name: string }): HealthPolicy;
}

export const ALL_UP: HealthView = { down: new Set(), policy: () => 'reroute' };

/** A HealthView over per-group policies keyed by group id or name (unlisted: reroute). */
export function healthView(down: ReadonlySet<string>, policies: ReadonlyMap<string, HealthPolicy>): HealthView {
  return { down, policy: (g) => policies.get(g.id) ?? policies.get(g.name) ?? 'reroute' };
}

/** "name=policy,..." (serve's --health-policy) into a map; throws a message naming the bad entry. */
export function parseHealthPolicies(text: string): Map<string, HealthPolicy> {
  const out = new Map<string, HealthPolicy>();
  for (const entry of text.split(',').filter((x) => x.trim() !== '')) {
    const m = /^\s*([^=\s]+)\s*=\s*(\S+)\s*$/.exec(entry);
    const policy = m?.[2] as HealthPolicy | undefined;
    if (!m || !HEALTH_POLICIES.includes(policy!)) {
      throw new Error(`health policy '${entry}': expected GROUP=${HEALTH_POLICIES.join('|')}`);
    }
    out.set(m[1], policy!);
  }
  return out;
}

/**
 * Per steered hop of path p, the hop a frame due there enters (both renderers: the userspace
 * Tables.hopLive, the ovs skip and drop flows): itself while the group has a usable instance (up,
 * weight > 0) or its policy is reroute; else for fail-open the next hop's choice (p.sfHops: the
 * chain's end) when the hop and the node before it are SF-unaware (skipping keeps the
 * encapsulation right), -1 (drop) otherwise.
 */
export function liveHops(p: PlanPath, groups: PlanGroup[], members: PlanMember[], up: (k: number) => boolean, policy: HealthView['policy']): number[] {
  const out = new Array<number>(p.sfHops);
  for (let h = p.sfHops - 1; h >= 0; h--) {
    const g = groups[p.hops[h].group];
    const rule = policy(g);
    if (rule === 'reroute' || g.members.some((k) => up(k) && members[k].weight > 0)) out[h] = h;
    else if (rule === 'fail-open' && p.hops[h].correlation === null && (h === 0 || p.hops[h - 1].correlation === null)) {
      out[h] = h + 1 < p.sfHops ? out[h + 1] : p.sfHops;
    } else out[h] = -1;
  }
  return out;
}
