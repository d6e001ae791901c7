/*
 * The driver seam (ARCHITECTURE.md §5-6, networking-sfc's plugin -> driver manager -> drivers).
 *
 * Every accepted change produces a complete next State. The manager asks each driver, in order, to
 * precommit(next, prev): a driver vetoes by returning problems (the first becomes the API's
 * NeutronError, nothing is stored). After the store commits, postcommit(next, prev) applies the
 * change (userspace: compile and publish tables; ovs: flows and groups). If any postcommit fails
 * the store restores prev, calls postcommit(prev, next) on the drivers that already applied, and
 * reports the failure: the store and the dataplane never disagree.
 */
import type { State } from './model.js';
import { NeutronError } from './errors.js';

export interface Driver {
  readonly name: string;
  precommit(next: State, prev: State): NeutronError[] | Promise<NeutronError[]>;
  postcommit(next: State, prev: State): Promise<void>;
  close?(): Promise<void>;
}

/** Accepts everything, applies nothing: for API-only use and tests. */
export class NoopDriver implements Driver {
  readonly name = 'noop';
  precommit(): NeutronError[] {
    return [];
  }
  async postcommit(): Promise<void> {}
}

export class DriverManager {
  constructor(readonly drivers: Driver[]) {}

  async precommit(next: State, prev: State): Promise<void> {
    for (const d of this.drivers) {
      const problems = await d.precommit(next, prev);
      if (problems.length > 0) throw problems[0];
    }
  }

  /** Apply next; on failure undo the drivers that already applied and throw SfcDriverError (500). */
  async postcommit(next: State, prev: State): Promise<void> {
    const done: Driver[] = [];
    for (const d of this.drivers) {
      try {
        await d.postcommit(next, prev);
        done.push(d);
      } catch (e) {
        for (const u of done.reverse()) await u.postcommit(prev, next).catch(() => undefined);
        if (e instanceof NeutronError) throw e;
        throw new NeutronError(500, 'SfcDriverError', `${d.name} driver failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }

  async close(): Promise<void> {
    for (const d of this.drivers) await d.close?.();
  }
}
