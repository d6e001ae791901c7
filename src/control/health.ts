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
