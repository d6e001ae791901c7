/*
 * UserspaceDriver: the driver seam (driver.ts) for the userspace dataplane.
 *
 * precommit compiles the proposed State: whatever cannot be rendered (compile.ts's NeutronError)
 * becomes the veto, so nothing the data path cannot run is ever stored. postcommit compiles again
 * (or reuses the precommit result for the same State object) against the generation in force, so
 * instance and interface indices stay stable, and hands it to `publish` (the worker runtime, or an
 * Engine directly). The driver remembers what was published last: `tables`, for metrics labels and
 * stats (instanceNames).
 */
import type { Driver } from './driver.js';
import { NeutronError } from './errors.js';
import type { State } from './model.js';
import { compileTables } from './compile.js';
import type { Tables } from '../dataplane/tables.js';

export class UserspaceDriver implements Driver {
  readonly name = 'userspace';
  private published: Tables | undefined;
  private staged: { state: State; tables: Tables } | undefined;

  constructor(private readonly publish: (t: Tables) => Promise<void> | void) {}

  /** The generation published last (undefined before the first postcommit). */
  get tables(): Tables | undefined {
    return this.published;
  }

  precommit(next: State): NeutronError[] {
    try {
      this.staged = { state: next, tables: compileTables(next, this.published) };
      return [];
    } catch (e) {
      this.staged = undefined;
      if (e instanceof NeutronError) return [e];
      throw e;
    }
  }

  async postcommit(next: State): Promise<void> {
    const staged = this.staged;
    this.staged = undefined;
    const t = staged && staged.state === next ? staged.tables : compileTables(next, this.published);
    await this.publish(t);
    this.published = t;
  }
}
