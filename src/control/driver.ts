/*
 * The driver seam (ARCHITECTURE.md §5-6, networking-sfc's plugin -> driver manager -> drivers).
 *
 * Every accepted change produces a complete next State; the manager turns it into the next Plan
 * (plan.ts: driver-neutral, member indices kept stable against the plan in force) and asks each
 * driver, in order, to precommit(next, prev): a driver vetoes by returning problems (its renderer
 * says what it cannot render; the first becomes the API's NeutronError, nothing is stored). After
 * the store commits, postcommit(next, prev) applies the change (userspace: render and publish
 * tables; ovs: flows and groups). If any postcommit fails the store restores its previous State,
 * the manager calls postcommit(prev, next) on the drivers that already applied, and reports the
 * failure: the store and the dataplane never disagree.
 */
import { emptyState, type State } from './model.js';
import { NeutronError } from './errors.js';
import type { HealthView } from './health.js';
import { buildPlan, type Plan } from './plan.js';

export interface Driver {
  readonly name: string;
  /** false for a driver that renders nothing (noop): the manager then builds no plans for it and hands it the empty plan. */
  readonly usesPlan?: boolean;
  precommit(next: Plan, prev: Plan): NeutronError[] | Promise<NeutronError[]>;
  postcommit(next: Plan, prev: Plan): Promise<void>;
  /**
   * Health checks changed what is up (control/health.ts): apply `view` to the plan in force and
   * to every later one, without a model change (userspace: re-render and publish; ovs: the down
   * members' buckets out of their select groups in one bundle, and per hop with none left the
   * group's policy: skip or drop).
   */
  health?(view: HealthView): Promise<void>;
  close?(): Promise<void>;
}

/** Accepts everything, applies nothing: for API-only use and tests. */
export class NoopDriver implements Driver {
  readonly name = 'noop';
  readonly usesPlan = false;
  precommit(): NeutronError[] {
    return [];
  }
  async postcommit(): Promise<void> {}
}

const EMPTY_PLAN = buildPlan(emptyState());

export class DriverManager {
  /** The plan in force (applied by every driver), and the one precommit built for a proposed State. */
  #plan: Plan = EMPTY_PLAN;
  #staged: { state: State; plan: Plan } | undefined;
  /** Whether any driver renders plans (else every plan is the empty one: the API-only server builds none). */
  readonly #planned: boolean;

  constructor(readonly drivers: Driver[]) {
    this.#planned = drivers.some((d) => d.usesPlan !== false);
  }

  /** The plan in force. */
  get plan(): Plan {
    return this.#plan;
  }

  #planFor(state: State): Plan {
    if (!this.#planned) return EMPTY_PLAN;
    const staged = this.#staged;
    if (staged && staged.state === state) return staged.plan;
    const plan = buildPlan(state, this.#plan);
    this.#staged = { state, plan };
    return plan;
  }

  async precommit(next: State, _prev: State): Promise<void> {
    const plan = this.#planFor(next);
    for (const d of this.drivers) {
      const problems = await d.precommit(plan, this.#plan);
      if (problems.length > 0) throw problems[0];
    }
  }

  /** Apply next; on failure undo the drivers that already applied and throw SfcDriverError (500). */
  async postcommit(next: State, _prev: State): Promise<void> {
    const plan = this.#planFor(next);
    const prev = this.#plan;
    this.#staged = undefined;
    const done: Driver[] = [];
    for (const d of this.drivers) {
      try {
        await d.postcommit(plan, prev);
        done.push(d);
      } catch (e) {
        for (const u of done.reverse()) await u.postcommit(prev, plan).catch(() => undefined);
        if (e instanceof NeutronError) throw e;
        throw new NeutronError(500, 'SfcDriverError', `${d.name} driver failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    this.#plan = plan;
  }

  /** Whether some driver applies health views (Driver.health). */
  get appliesHealth(): boolean {
    return this.drivers.some((d) => d.health !== undefined);
  }

  /** Hand a new health view (health.ts) to every driver that applies one; the plan in force is unchanged. */
  async health(view: HealthView): Promise<void> {
    for (const d of this.drivers) await d.health?.(view);
  }

  async close(): Promise<void> {
    for (const d of this.drivers) await d.close?.();
  }
}
