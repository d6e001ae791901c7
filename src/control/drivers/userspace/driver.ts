/*
 * UserspaceDriver: the driver seam (driver.ts) for the userspace dataplane.
 *
 * precommit asks the renderer what it cannot render (render.ts `unsupported`), then renders the
 * proposed plan against the generation in force (so interface indices stay stable); a render
 * error (a bad MAC or prefix) is a veto too, so nothing the data path cannot run is ever stored.
 * postcommit publishes that result (or renders again for another plan, or when a health change
 * published in between) through `publish` (the worker runtime, or an Engine directly). The driver
 * remembers what was published last: `tables`, for metrics labels and stats (instanceNames).
 *
 * Health (control/health.ts) is the renderer's second input: `health(view)` re-renders the plan in
 * force with the new view and publishes it; every later render uses it too. Publications are
 * serialised, so generations never interleave.
 */
import type { Driver } from '../../driver.js';
import { NeutronError } from '../../errors.js';
import { ALL_UP, type HealthView } from '../../health.js';
import type { Plan } from '../../plan.js';
import { renderTables, unsupported } from './render.js';
import type { Tables } from '../../../dataplane/tables.js';

export class UserspaceDriver implements Driver {
  readonly name = 'userspace';
  private published: Tables | undefined;
  private plan: Plan | undefined;
  private view: HealthView = ALL_UP;
  private staged: { plan: Plan; prev: Tables | undefined; tables: Tables } | undefined;
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly publish: (t: Tables) => Promise<void> | void) {}

  /** The generation published last (undefined before the first postcommit). */
  get tables(): Tables | undefined {
    return this.published;
  }

  precommit(next: Plan): NeutronError[] {
    this.staged = undefined;
    const problems = unsupported(next);
    if (problems.length > 0) return problems;
    try {
      const prev = this.published;
      this.staged = { plan: next, prev, tables: renderTables(next, prev, this.view) };
      return [];
    } catch (e) {
      if (e instanceof NeutronError) return [e];
      throw e;
    }
  }

  postcommit(next: Plan): Promise<void> {
    const staged = this.staged;
    this.staged = undefined;
    return this.serially(async () => {
      const fresh = staged && staged.plan === next && staged.prev === this.published;
      await this.install(next, fresh ? staged.tables : renderTables(next, this.published, this.view));
    });
  }

  health(view: HealthView): Promise<void> {
    return this.serially(async () => {
      this.view = view;
      if (this.plan !== undefined) await this.install(this.plan, renderTables(this.plan, this.published, view));
    });
  }

  private async install(plan: Plan, t: Tables): Promise<void> {
    await this.publish(t);
    this.published = t;
    this.plan = plan;
  }

  /** Run `step` after every publication already queued (a failure fails only its own caller). */
  private serially(step: () => Promise<void>): Promise<void> {
    const run = this.queue.then(step);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
