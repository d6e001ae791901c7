/*
 * Store: the one owner of the committed model (networking-sfc's plugin + database, in memory).
 *
 * Every write is a transaction over whole snapshots: validate the request against the current
 * State and build the complete next State (validate.ts), let the drivers veto it (precommit),
 * make it durable (persist), swap it in, then let the drivers apply it (postcommit). A failed
 * postcommit swaps the previous snapshot back (and persists it again), so the store, the state
 * file and the dataplane never disagree. Writes run one at a time through a promise queue, so
 * concurrent API calls never interleave and each one validates against the state left by the
 * previous. A rejected write changes nothing: ids, group_id and chain_id are derived from the
 * snapshot being built, so there is no allocator state to roll back.
 *
 * Committed snapshots are deep-frozen: readers share them freely. A next snapshot shares every
 * unchanged list and object with the previous one, so freezing it touches only what is new, and
 * lookups by id use the validator's per-list indexes. Port `status` is computed
 * (ACTIVE when admin_state_up and the bound interface exists and is up) each time a port is read.
 */
import { DriverManager, NoopDriver } from './driver.js';
import { NeutronError } from './errors.js';
import type { Collection, Port, Resource, ResourceOf, State } from './model.js';
import { emptyState } from './model.js';
import { planCreate, planDelete, planUpdate, type CreateOptions } from './validate.js';
import { findById } from './validate/indexes.js';
import { LINK_UP, sysfsLinkState } from '../dataplane/io/native.js';

export interface StoreOptions {
  /** Default: a manager with the noop driver. */
  drivers?: DriverManager;
  /** Durable write of the next state, awaited before the write is acknowledged. */
  persist?: (next: State) => Promise<void> | void;
  /** Owner of created resources that name none (default 'sfc'). */
  projectId?: string;
  /** Starting state, trusted as valid (copied). */
  initial?: State;
  /** Port status: the interface exists and is up (default: read /sys/class/net). */
  linkUp?: (ifname: string) => boolean;
}

export const DEFAULT_PROJECT_ID = 'sfc';

export class Store {
  readonly #drivers: DriverManager;
  readonly #persist: (next: State) => Promise<void> | void;
  readonly #projectId: string;
  readonly #linkUp: (ifname: string) => boolean;
  #state: State;
  #revision = 0;
  #tail: Promise<unknown> = Promise.resolve();

  constructor(opts: StoreOptions = {}) {
    this.#drivers = opts.drivers ?? new DriverManager([new NoopDriver()]);
    this.#persist = opts.persist ?? (() => undefined);
    this.#projectId = opts.projectId ?? DEFAULT_PROJECT_ID;
    this.#linkUp = opts.linkUp ?? sysfsLinkUp;
    this.#state = deepFreeze(structuredClone(opts.initial ?? emptyState()));
  }

  /** The committed snapshot (deep-frozen). Port status here is the one computed at write time. */
  get state(): State {
    return this.#state;
  }

  get revision(): number {
    return this.#revision;
  }

  /** Creation order; ports with live status. */
  list<C extends Collection>(coll: C): ResourceOf<C>[] {
    const items: readonly Resource[] = this.#state[coll];
    return (coll === 'ports' ? items.map((p) => this.#withStatus(p as Port)) : [...items]) as ResourceOf<C>[];
  }

  get<C extends Collection>(coll: C, id: string): ResourceOf<C> | undefined {
    const found = findById(this.#state, coll, id);
    return found && this.#shown(coll, found);
  }

  /** body is the inner object (no envelope). opts.id / opts.group_id are for config replay only. */
  create<C extends Collection>(coll: C, body: unknown, opts: CreateOptions = {}): Promise<ResourceOf<C>> {
    return this.#serialise(async () => {
      const plan = planCreate(this.#state, coll, body, { projectId: this.#projectId, linkUp: this.#linkUp }, opts);
      await this.#commit(plan.next);
      return this.#shown(coll, plan.created as ResourceOf<C>);
    });
  }

  update<C extends Collection>(coll: C, id: string, body: unknown): Promise<ResourceOf<C>> {
    return this.#serialise(async () => {
      const next = planUpdate(this.#state, coll, id, body, { projectId: this.#projectId, linkUp: this.#linkUp });
      await this.#commit(next);
      return this.#read(coll, id);
    });
  }

  delete(coll: Collection, id: string): Promise<void> {
    return this.#serialise(() => this.#commit(planDelete(this.#state, coll, id)));
  }

  /** Swap in a whole State without validation (start-up, restore), still through the drivers. */
  replace(next: State): Promise<void> {
    return this.#serialise(() => this.#commit(structuredClone(next)));
  }

  #serialise<T>(job: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(job);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async #commit(nextState: State): Promise<void> {
    const prev = this.#state;
    const prevRevision = this.#revision;
    const next = deepFreeze(nextState);
    await this.#drivers.precommit(next, prev);
    await this.#persist(next);
    this.#state = next;
    this.#revision = prevRevision + 1;
    try {
      await this.#drivers.postcommit(next, prev);
    } catch (e) {
      this.#state = prev;
      this.#revision = prevRevision;
      try {
        await this.#persist(prev);
      } catch (p) {
        const why = e instanceof Error ? e.message : String(e);
        throw new NeutronError(500, 'SfcDriverError', `${why}; restoring the state file also failed: ${String(p)}`);
      }
      throw e;
    }
  }

  /** As readers see it: ports with live status. */
  #shown<C extends Collection>(coll: C, r: ResourceOf<C>): ResourceOf<C> {
    return (coll === 'ports' ? this.#withStatus(r as Port) : r) as ResourceOf<C>;
  }

  #read<C extends Collection>(coll: C, id: string): ResourceOf<C> {
    const r = this.get(coll, id);
    if (!r) throw new NeutronError(500, 'SfcStoreError', `${coll} ${id} vanished after commit`);
    return r;
  }

  #withStatus(p: Port): Port {
    const status = p.admin_state_up && this.#linkUp(p['binding:profile'].interface) ? 'ACTIVE' : 'DOWN';
    return status === p.status ? p : { ...p, status };
  }
}

/** Linux: the interface exists and is administratively and operationally up. */
export function sysfsLinkUp(ifname: string): boolean {
  return sysfsLinkState(ifname) === LINK_UP;
}

/** Freeze what is new; parts shared with the previous snapshot are frozen already and skipped. */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    if (Array.isArray(value)) for (const v of value) deepFreeze(v);
    else for (const key in value) deepFreeze(value[key]);
  }
  return value;
}
