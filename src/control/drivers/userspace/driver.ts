/*
 * UserspaceDriver: the driver seam (driver.ts) for the userspace dataplane.
 *
 * precommit asks the renderer what it cannot render (render.ts `unsupported`), then renders the
 * proposed plan against the generation in force (so interface indices stay stable); a render
 * error (a bad MAC or prefix) is a veto too, so nothing the data path cannot run is ever stored.
 * postcommit publishes that result (or renders again for another plan) through `publish` (the
 * worker runtime, or an Engine directly). The driver remembers what was published last: `tables`,
 * for metrics labels and stats (instanceNames).
 */
import type { Driver } from '../../driver.js';
import { NeutronError } from '../../errors.js';
import type { Plan } from '../../plan.js';
import { renderTables, unsupported } from './render.js';
import type { Tables } from '../../../dataplane/tables.js';

export class UserspaceDriver implements Driver {
  readonly name = 'userspace';
  private published: Tables | undefined;
  private staged: { plan: Plan; tables: Tables } | undefined;

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
      this.staged = { plan: next, tables: renderTables(next, this.published) };
      return [];
    } catch (e) {
      if (e instanceof NeutronError) return [e];
      throw e;
    }
  }

  async postcommit(next: Plan): Promise<void> {
    const staged = this.staged;
    this.staged = undefined;
    const t = staged && staged.plan === next ? staged.tables : renderTables(next, this.published);
    await this.publish(t);
    this.published = t;
  }
}
