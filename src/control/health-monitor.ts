/*
 * HealthMonitor: finds service function instances (port pairs in chains) down and up again, and
 * hands the drivers the new HealthView (health.ts) once per change.
 *
 * Every `intervalMs` each instance is checked: the link state of its interfaces (ingress and
 * egress; an SF whose interface went down, or whose end of a veth did, fails at once at the next
 * check). `downAfter` failed checks in a row turn an up instance down, `upAfter` good ones turn a
 * down instance up (defaults 100 ms, 2, 3: a dead link is acted on within ~200-300 ms, a flapping
 * one returns only after 300 ms of good checks). A change is logged once, counted, and applied
 * through `apply` (Driver.health of every driver); changes found while an apply runs are applied
 * right after it, as one.
 *
 * The instances are the plan in force's members, so the monitor follows every model change
 * without being told; an instance new to it starts up (its first checks decide).
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { HealthReport } from './api.js';
import type { DataplaneHealth } from '../dataplane/runtime.js';
import { healthView, type HealthPolicy } from './health.js';
import type { Plan } from './plan.js';

export interface HealthOptions {
  intervalMs: number;
  /** Failed checks in a row before an instance is down. */
  downAfter: number;
  /** Good checks in a row before a down instance is up again. */
  upAfter: number;
}

export const DEFAULT_HEALTH: Readonly<HealthOptions> = Object.freeze({ intervalMs: 100, downAfter: 2, upAfter: 3 });

export interface InstanceHealth {
  portPair: string;
  portPairId: string;
  group: string;
  up: boolean;
  /** Why it is down ('' when up). */
  reason: string;
  /** ms since the epoch of the last change (or of when it was first checked). */
  since: number;
  transitions: number;
}

interface Tracked extends InstanceHealth {
  misses: number;
  goods: number;
}

export interface HealthDeps {
  /** The plan in force (DriverManager.plan). */
  plan: () => Plan;
  /** Whether interface `name` is up (this process's namespace). */
  linkUp: (name: string) => boolean;
  /** Apply a new view (every driver's health()). */
  apply: (view: ReturnType<typeof healthView>) => Promise<void>;
  log: (message: string) => void;
  policies?: ReadonlyMap<string, HealthPolicy>;
  registry?: Registry;
}

export class HealthMonitor {
  private readonly tracked = new Map<string, Tracked>();
  private timer: NodeJS.Timeout | null = null;
  private applying: Promise<void> | null = null;
  private dirty = false;
  private readonly policies: ReadonlyMap<string, HealthPolicy>;

  constructor(
    private readonly opts: HealthOptions,
    private readonly deps: HealthDeps,
  ) {
    this.policies = deps.policies ?? new Map();
    const registers = deps.registry ? [deps.registry] : [];
    const self = this;
    new Gauge({
      name: 'sfc_instance_up',
      help: 'Health of each SF instance (port pair): 1 up, 0 down',
      labelNames: ['group', 'instance'],
      registers,
      collect() {
        this.reset();
        for (const h of self.tracked.values()) this.set({ group: h.group, instance: h.portPair }, h.up ? 1 : 0);
      },
    });
    new Counter({
      name: 'sfc_instance_health_transitions_total',
      help: 'Changes of health state of each SF instance (up to down and back)',
      labelNames: ['group', 'instance'],
      registers,
      collect() {
        this.reset();
        for (const h of self.tracked.values()) this.inc({ group: h.group, instance: h.portPair }, h.transitions);
      },
    });
  }

  start(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => this.check(), this.opts.intervalMs);
    this.timer.unref();
  }

  /** Stop checking; resolves when an apply in flight is done. */
  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.applying;
  }

  /** Every instance's health, in plan order. */
  states(): InstanceHealth[] {
    return [...this.tracked.values()].map(({ misses: _m, goods: _g, ...h }) => h);
  }

  /** One round of checks (the timer's; tests may call it). Returns whether any instance changed. */
  check(): boolean {
    const plan = this.deps.plan();
    const seen = new Set<string>();
    let changed = false;
    for (const m of plan.members) {
      if (m.group < 0) continue;
      seen.add(m.id);
      let h = this.tracked.get(m.id);
      if (h === undefined) {
        h = { portPair: m.name, portPairId: m.id, group: plan.groups[m.group].name, up: true, reason: '', since: Date.now(), transitions: 0, misses: 0, goods: 0 };
        this.tracked.set(m.id, h);
      }
      h.portPair = m.name;
      h.group = plan.groups[m.group].name;
      const bad = [plan.ports[m.ingress].iface, plan.ports[m.egress].iface].filter((name) => !this.deps.linkUp(name));
      if (bad.length > 0) {
        h.goods = 0;
        if (h.up && ++h.misses >= this.opts.downAfter) changed = this.flip(h, `link ${[...new Set(bad)].join(', ')} down`) || changed;
      } else {
        h.misses = 0;
        if (!h.up && ++h.goods >= this.opts.upAfter) changed = this.flip(h, '') || changed;
      }
    }
    for (const id of [...this.tracked.keys()]) {
      if (seen.has(id)) continue;
      // Gone from the model: its down state no longer matters to any renderer.
      if (!this.tracked.get(id)!.up) changed = true;
      this.tracked.delete(id);
    }
    if (changed) this.push();
    return changed;
  }

  private flip(h: Tracked, reason: string): boolean {
    h.up = reason === '';
    h.reason = reason;
    h.since = Date.now();
    h.transitions++;
    h.misses = h.goods = 0;
    this.deps.log(`instance ${h.portPair} (group ${h.group}) ${h.up ? 'up' : `down: ${reason}`}`);
    return true;
  }

  /** Apply the current view; one apply at a time, the latest state wins. */
  private push(): void {
    if (this.applying !== null) {
      this.dirty = true;
      return;
    }
    const down = new Set([...this.tracked.values()].filter((h) => !h.up).map((h) => h.portPairId));
    this.applying = this.deps
      .apply(healthView(down, this.policies))
      .catch((e: Error) => this.deps.log(`applying health failed: ${e.message}`))
      .finally(() => {
        this.applying = null;
        if (this.dirty) {
          this.dirty = false;
          this.push();
        }
      });
  }
}

/**
 * What GET /v2.0/sfc/health answers and /healthz summarises: the dataplane supervisor's view
 * (degraded while a worker is being restarted) and every instance's health. A down SF instance
 * does not make the server unhealthy: traffic is steered around it.
 */
export function healthReport(dataplane: { health(): DataplaneHealth } | undefined, monitor: HealthMonitor | undefined): HealthReport {
  const dp = dataplane?.health();
  const degraded: Record<string, unknown> = {};
  if (dp && !dp.ok) degraded.dataplane = { workers_restarting: dp.degraded };
  return { ok: dp?.ok ?? true, degraded, instances: monitor?.states() ?? [], dataplane: dp ?? null };
}
