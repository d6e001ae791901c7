/*
 * Store: the one owner of the committed model (networking-sfc's plugin + database, in memory).
 *
 * Every write is a transaction over whole snapshots: check the per-resource limit (409 OverQuota),
 * validate the request against the current State and build the complete next State (validate.ts),
 * let the drivers veto it (precommit), make it durable (persist), and only then swap it in and let
 * the drivers apply it (postcommit). A write whose persist fails is therefore never visible, never
 * applied and never acknowledged: the store and the dataplane stay on the previous state, and a
 * retried POST creates one object. A failed postcommit swaps the previous snapshot back (and
 * persists it again), so the store, the state file and the dataplane never disagree.
 *
 * Group commit by batching: writes queue; the writes that arrived while the previous batch was
 * committing form the next batch. Each is validated and precommitted in order against the state
 * its predecessors left (a refused one is answered at once and skipped), then the batch is
 * persisted as ONE state (one journal record, one fdatasync), swapped in and postcommitted once,
 * and every write in it is answered. A batch succeeds or fails as a whole; concurrent writers
 * share one fdatasync and one dataplane publication. A rejected write changes nothing: ids,
 * group_id and chain_id are derived from the snapshot being built, so there is no allocator state
 * to roll back.
 *
 * Shared models (several API servers, control/etcd): the commit step is a Committer that commits
 * only if the durable model is still the state the batch was staged on. When another server got
 * there first it hands back the newer model: the store adopts it (swap + postcommit, as for a
 * local change) and stages the whole batch again on it, refusals included (a bounded number of
 * times, then 503), so concurrent writes never interleave and a refusal is only answered once
 * the state it was judged on is known to be current. adopt() brings in another server's change
 * between batches. The local journal (persist) is a committer that never sees a newer model.
 *
 * Committed snapshots are deep-frozen: readers share them freely. A next snapshot shares every
 * unchanged list and object with the previous one, so freezing it touches only what is new, and
 * lookups by id use the validator's per-list indexes. Port `status` is computed
 * (ACTIVE when admin_state_up and the bound interface exists and is up) each time a port is read.
 */
import { DriverManager, NoopDriver } from './driver.js';
import { NeutronError, conflict } from './errors.js';
import type { Collection, Port, Resource, ResourceOf, State } from './model.js';
import { COLLECTIONS, SINGULAR, emptyState } from './model.js';
import { planCreate, planDelete, planUpdate, type CreateOptions } from './validate.js';
import { findById } from './validate/indexes.js';
import { LINK_UP, sysfsLinkState } from '../dataplane/io/native.js';
import { UsageError } from '../util/args.js';

/** The commit step of every write batch (default: `persist`, a local write that never conflicts). */
export interface Committer {
  /**
   * Make `next` durable provided the durable model is still `prev` (the state the batch was staged
   * on; next === prev only checks that). Resolves undefined once done, or the newer durable model
   * when another writer changed it first (nothing written). Throws a NeutronError when the write
   * failed (nothing written).
   */
  commit(next: State, prev: State): Promise<State | undefined>;
  /** Most writes it takes as one commit (default MAX_BATCH). */
  readonly maxBatch?: number;
}

export interface StoreOptions {
  /** Default: a manager with the noop driver. */
  drivers?: DriverManager;
  /** Durable write of the next state, awaited before the change is visible, applied or acknowledged. */
  persist?: (next: State) => Promise<void> | void;
  /** Conditional commit to a shared model (replaces persist). */
  committer?: Committer;
  /** Owner of created resources that name none (default 'sfc'). */
  projectId?: string;
  /** Starting state, trusted as valid (copied). */
  initial?: State;
  /** Port status: the interface exists and is up (default: read /sys/class/net). */
  linkUp?: (ifname: string) => boolean;
  /** Most objects of each collection (default DEFAULT_LIMIT each); a create beyond is 409 OverQuota. */
  limits?: Partial<Record<Collection, number>>;
}

export const DEFAULT_PROJECT_ID = 'sfc';
/** Per-collection object limit: far above any lab, low enough that a runaway script cannot exhaust memory. */
export const DEFAULT_LIMIT = 10_000;
/** Most writes committed as one batch. */
const MAX_BATCH = 256;
/** Most times a batch is staged again on a newer shared model before it is refused (503). */
const MAX_ATTEMPTS = 32;

/** A write's outcome against one state: the next state, and its answer (read once it is committed). */
interface Staged<T> {
  next: State;
  answer: () => T;
}

interface Job {
  stage(state: State): Staged<unknown>;
  resolve(value: unknown): void;
  reject(e: unknown): void;
}

/** A queued adopt(): the shared model's state, read when its turn comes. */
interface Adoption {
  read(): State;
  resolve(value: unknown): void;
  reject(e: unknown): void;
}

export class Store {
  readonly #drivers: DriverManager;
  readonly #committer: Committer;
  readonly #projectId: string;
  readonly #linkUp: (ifname: string) => boolean;
  readonly #limits: Record<Collection, number>;
  #state: State;
  #revision = 0;
  #queue: (Job | Adoption)[] = [];
  #draining = false;

  constructor(opts: StoreOptions = {}) {
    this.#drivers = opts.drivers ?? new DriverManager([new NoopDriver()]);
    this.#committer = opts.committer ?? localCommitter(opts.persist ?? (() => undefined));
    this.#projectId = opts.projectId ?? DEFAULT_PROJECT_ID;
    this.#linkUp = opts.linkUp ?? sysfsLinkUp;
    this.#limits = Object.fromEntries(COLLECTIONS.map((c) => [c, opts.limits?.[c] ?? DEFAULT_LIMIT])) as Record<Collection, number>;
    this.#state = deepFreeze(structuredClone(opts.initial ?? emptyState()));
  }

  /** The committed snapshot (deep-frozen). Port status here is the one computed at write time. */
  get state(): State {
    return this.#state;
  }

  /** Number of committed changes. */
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
    return this.#submit((state) => {
      if (state[coll].length >= this.#limits[coll]) throw overQuota(coll);
      const plan = planCreate(state, coll, body, { projectId: this.#projectId, linkUp: this.#linkUp }, opts);
      return { next: plan.next, answer: () => this.#shown(coll, plan.created as ResourceOf<C>) };
    });
  }

  update<C extends Collection>(coll: C, id: string, body: unknown): Promise<ResourceOf<C>> {
    return this.#submit((state) => {
      const next = planUpdate(state, coll, id, body, { projectId: this.#projectId, linkUp: this.#linkUp });
      const updated = findById(next, coll, id);
      if (!updated) throw new NeutronError(500, 'SfcStoreError', `${coll} ${id} vanished from its own update`);
      return { next, answer: () => this.#shown(coll, updated) };
    });
  }

  delete(coll: Collection, id: string): Promise<void> {
    return this.#submit((state) => ({ next: planDelete(state, coll, id), answer: () => undefined }));
  }

  /** Swap in a whole State without validation (start-up, restore), still through the drivers. */
  replace(next: State): Promise<void> {
    return this.#submit(() => ({ next: structuredClone(next), answer: () => undefined }));
  }

  /**
   * Bring in a change another server committed to the shared model: when its turn in the write
   * queue comes, `read()` gives the model's current state; if it differs from ours it is swapped
   * in and applied to the drivers. A driver failure is reported (the drivers stay on the plan in
   * force) but the store follows the model.
   */
  adopt(read: () => State): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ read, resolve: resolve as (v: unknown) => void, reject });
      if (!this.#draining) void this.#drain();
    });
  }

  #submit<T>(stage: (state: State) => Staged<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ stage, resolve: resolve as (v: unknown) => void, reject });
      if (!this.#draining) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      while (this.#queue.length > 0) {
        const head = this.#queue[0]!;
        if ('read' in head) {
          this.#queue.shift();
          await this.#adopt(head.read()).then(head.resolve, head.reject);
          continue;
        }
        const end = this.#queue.findIndex((j) => 'read' in j);
        const jobs = this.#queue.splice(0, Math.min(end < 0 ? this.#queue.length : end, this.#committer.maxBatch ?? MAX_BATCH)) as Job[];
        await this.#commitBatch(jobs);
      }
    } finally {
      this.#draining = false;
    }
  }

  /** Swap in a state the shared model already holds and apply it. */
  async #adopt(next: State): Promise<void> {
    const prev = this.#state;
    if (next === prev) return;
    this.#state = deepFreeze(next);
    this.#revision++;
    await this.#drivers.postcommit(next, prev);
  }

  /** Stage each job on its predecessors' state, then commit, swap in and apply the survivors as one. */
  async #commitBatch(jobs: Job[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const prev = this.#state;
      const { next, accepted, refused } = await this.#stage(jobs, prev);
      let newer: State | undefined;
      try {
        newer = await this.#committer.commit(next, prev);
      } catch (e) {
        accepted.forEach((a) => a.job.reject(e));
        refused.forEach((r) => r.job.reject(r.error));
        return;
      }
      if (newer === undefined) {
        refused.forEach((r) => r.job.reject(r.error));
        return this.#apply(prev, next, accepted);
      }
      await this.#adopt(newer).catch(() => undefined); // the drivers keep their plan; the next change re-renders
      if (attempt === MAX_ATTEMPTS) {
        const busy = new NeutronError(503, 'ServiceUnavailable', `The change was not applied: the shared model changed under it ${MAX_ATTEMPTS} times in a row. Retry.`);
        return jobs.forEach((j) => j.reject(busy));
      }
    }
  }

  /** Each job on its predecessors' state (validated and precommitted): the resulting state, what it accepted and what it refused. */
  async #stage(jobs: Job[], prev: State): Promise<{ next: State; accepted: { job: Job; answer: () => unknown }[]; refused: { job: Job; error: unknown }[] }> {
    let next = prev;
    const accepted: { job: Job; answer: () => unknown }[] = [];
    const refused: { job: Job; error: unknown }[] = [];
    for (const job of jobs) {
      try {
        const staged = job.stage(next);
        const candidate = deepFreeze(staged.next);
        await this.#drivers.precommit(candidate, next);
        next = candidate;
        accepted.push({ job, answer: staged.answer });
      } catch (error) {
        refused.push({ job, error });
      }
    }
    return { next, accepted, refused };
  }

  /** The committed batch: swap it in, apply it, answer it (a failed apply is undone and committed back). */
  async #apply(prev: State, next: State, accepted: { job: Job; answer: () => unknown }[]): Promise<void> {
    if (accepted.length === 0) return;
    const fail = (e: unknown) => accepted.forEach((a) => a.job.reject(e));
    const prevRevision = this.#revision;
    this.#state = next;
    this.#revision = prevRevision + accepted.length;
    try {
      await this.#drivers.postcommit(next, prev);
    } catch (e) {
      this.#state = prev;
      this.#revision = prevRevision;
      try {
        await this.#committer.commit(prev, next);
      } catch (p) {
        const why = e instanceof Error ? e.message : String(e);
        return fail(new NeutronError(500, 'SfcDriverError', `${why}; restoring the state file also failed: ${p instanceof Error ? p.message : String(p)}`));
      }
      return fail(e);
    }
    for (const a of accepted) {
      try {
        a.job.resolve(a.answer());
      } catch (e) {
        a.job.reject(e);
      }
    }
  }

  /** As readers see it: ports with live status. */
  #shown<C extends Collection>(coll: C, r: ResourceOf<C>): ResourceOf<C> {
    return (coll === 'ports' ? this.#withStatus(r as Port) : r) as ResourceOf<C>;
  }

  #withStatus(p: Port): Port {
    const status = p.admin_state_up && this.#linkUp(p['binding:profile'].interface) ? 'ACTIVE' : 'DOWN';
    return status === p.status ? p : { ...p, status };
  }
}

/** `ports=20000,flow_classifiers=500` (--limits) → per-collection limits; a bad entry is a UsageError. */
export function parseLimits(spec: string): Partial<Record<Collection, number>> {
  const limits: Partial<Record<Collection, number>> = {};
  for (const entry of spec.split(',')) {
    const m = /^\s*([a-z_]+)\s*=\s*(\d+)\s*$/.exec(entry);
    const coll = COLLECTIONS.find((c) => c === m?.[1]);
    if (!m || !coll || Number(m[2]) < 1) {
      throw new UsageError(`--limits: '${entry}' is not COLLECTION=N with N >= 1 and COLLECTION one of ${COLLECTIONS.join(', ')}`);
    }
    limits[coll] = Number(m[2]);
  }
  return limits;
}

/** Neutron's quota refusal (neutron_lib.exceptions.OverQuota). */
function overQuota(coll: Collection): NeutronError {
  return conflict('OverQuota', `Quota exceeded for resources: ['${SINGULAR[coll]}'].`);
}

/** Linux: the interface exists and is administratively and operationally up. */
export function sysfsLinkUp(ifname: string): boolean {
  return sysfsLinkState(ifname) === LINK_UP;
}

/** The local journal as a committer: nothing else writes it, so it never sees a newer model. */
function localCommitter(persist: (next: State) => Promise<void> | void): Committer {
  return {
    async commit(next, prev) {
      if (next !== prev) await persist(next);
      return undefined;
    },
  };
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
