/*
 * The chain model in etcd: several API servers and every agent share it.
 *
 * Layout: one key per resource, `/sfc/v1/model/<collection>/<id>`, holding {"seq":n,"resource":{...}}
 * (seq keeps the collection's creation order, which the API lists in), plus the guard key
 * `/sfc/v1/model/rev` whose value counts model changes. Every model change is ONE etcd transaction
 * `If(mod_revision(guard) == R) Then(put/delete the changed keys, put guard)`, where R is the
 * revision of the state the change was validated against: a writer staged on an older state
 * fails the compare and writes nothing (Else returns the guard, so it knows how far to catch up).
 * Before proposing, the guard is read linearizably: a cluster without a quorum cannot answer, so
 * the write is refused (503) before a proposal exists that might still commit once the quorum
 * returns (etcd's outcome of a timed-out proposal is unknown; only a quorum lost between that read
 * and the transaction leaves that window).
 * A model's revision is therefore the guard's mod_revision, the same number on every reader.
 *
 * EtcdModel keeps a mirror of the model: read whole at open, then kept current by a watch on the
 * prefix from the next revision on (events at or below the mirror's revision are the mirror's
 * own commits, skipped). Unchanged resources keep their object identity from one state to the
 * next, so consumers diff cheaply. commit(next, prev) is the Store's committer (store.ts): it
 * refuses at once when prev is not the mirror's state, otherwise runs the transaction; on a lost
 * compare it waits for the watch to reach the winner's revision (or re-reads everything when the
 * watch lags beyond a call timeout) and hands the newer state back for the Store to re-validate.
 * A call etcd does not answer (no quorum, timeout) is a 503 NeutronError; nothing is written.
 * A watch that fails (compaction, lost stream beyond the client's retries) is replaced after a
 * full re-read, so the mirror never skips a change.
 */
import type { Etcd3, IKeyValue, IOperation, IWatchResponse, Watcher } from 'etcd3';
import { COLLECTIONS, emptyState, type Collection, type Resource, type State } from '../model.js';
import { diffList, type Item } from '../persist.js';
import type { Store } from '../store.js';
import { DEFAULT_CALL_TIMEOUT_MS, connectEtcd, errorText, unavailable, type EtcdOptions } from './client.js';

export const MODEL_PREFIX = '/sfc/v1/model/';
export const GUARD_KEY = `${MODEL_PREFIX}rev`;
/**
 * Writes per transaction: each is one put or delete, plus the guard, under etcd's default
 * --max-txn-ops (128). A whole-State replace (a config seed) is one transaction of one operation
 * per object: clusters meant for large seeds need a higher --max-txn-ops (the lab's: 4096).
 */
const MAX_BATCH = 100;

const resourceKey = (coll: Collection, id: string) => `${MODEL_PREFIX}${coll}/${id}`;

/** The model as a reader sees it (what agents get from openModel). */
export interface ModelView {
  /** The model at revision(). */
  state(): State;
  /** etcd revision of state() (the guard's mod_revision; 0 for a model never written). */
  revision(): number;
  /** Called after every change of state() (remote or local), with the new state and revision. Returns an unsubscribe. */
  onChange(cb: (state: State, revision: number) => void): () => void;
  close(): Promise<void>;
}

export interface ModelOptions extends EtcdOptions {
  /** Problems that do not stop the model (an undecodable key, a watch restarted). */
  log?: (message: string) => void;
}

type Entry = { seq: number; resource: Resource };

export class EtcdModel implements ModelView {
  readonly maxBatch = MAX_BATCH;
  readonly #client: Etcd3;
  readonly #endpoints: string[];
  readonly #log: (message: string) => void;
  readonly #callTimeoutMs: number;
  /** Per collection: id -> entry; the state built from it; its revision; the guard's mod_revision (0: absent) and count. */
  #entries = emptyEntries();
  #lastSeq = zeroSeqs();
  #state: State = emptyState();
  #revision = 0;
  #guardRevision = 0;
  #count = 0;
  #watcher: Watcher | undefined;
  #listeners = new Set<(state: State, revision: number) => void>();
  #waiters: { revision: number; wake: () => void }[] = [];
  #resyncing: Promise<void> | undefined;
  #closed = false;

  private constructor(client: Etcd3, endpoints: string[], opts: ModelOptions) {
    this.#client = client;
    this.#endpoints = endpoints;
    this.#log = opts.log ?? (() => undefined);
    this.#callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  }

  /** Read the model and follow it. `client` stays the caller's (closed by it, not by close()). */
  static async open(client: Etcd3, endpoints: string[], opts: ModelOptions = {}): Promise<EtcdModel> {
    const model = new EtcdModel(client, endpoints, opts);
    await model.#resync();
    return model;
  }

  state(): State {
    return this.#state;
  }

  revision(): number {
    return this.#revision;
  }

  onChange(cb: (state: State, revision: number) => void): () => void {
    this.#listeners.add(cb);
    return () => this.#listeners.delete(cb);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const watcher = this.#watcher;
    this.#watcher = undefined;
    await watcher?.cancel().catch(() => undefined);
    for (const w of this.#waiters.splice(0)) w.wake();
  }

  /**
   * The Store's committer: make `next` the model if it is still `prev`. Resolves undefined once
   * committed, or the newer model when another writer got there first (nothing written); throws
   * a 503 NeutronError when etcd did not answer (nothing written).
   */
  async commit(next: State, prev: State): Promise<State | undefined> {
    if (prev !== this.#state) return this.#state;
    const R = this.#guardRevision;
    const ops: IOperation[] = [];
    const seqs = new Map<Resource, number>();
    if (next !== prev) {
      for (const coll of COLLECTIONS) if (next[coll] !== prev[coll]) this.#changes(coll, prev[coll], next[coll], ops, seqs);
      ops.push(this.#client.put(GUARD_KEY).value(String(this.#count + 1)));
    }
    let res;
    try {
      // Read the guard first, linearizably: that needs a quorum, so a cluster without one refuses
      // here, before anything is proposed (a proposal that times out may still commit later).
      const current = await currentRevision(this.#client);
      if (current !== R) {
        await this.#catchUp(Math.max(current, this.#revision + 1));
        return this.#state;
      }
      res = await this.#client.if(GUARD_KEY, 'Mod', '==', R).then(...ops).else(this.#client.get(GUARD_KEY)).commit();
    } catch (e) {
      throw unavailable(this.#endpoints, e);
    }
    if (!res.succeeded) {
      const guard = res.responses[0]?.response_range?.kvs[0];
      await this.#catchUp(guard ? Number(guard.mod_revision) : this.#revision + 1);
      return this.#state;
    }
    if (next !== prev) this.#installLocal(next, seqs, Number(res.header.revision));
    return undefined;
  }

  /** Puts and deletes turning list `before` into `after`; the seq each put resource gets. */
  #changes(coll: Collection, before: readonly Item[], after: readonly Item[], ops: IOperation[], seqs: Map<Resource, number>): void {
    const known = this.#entries[coll];
    const change = diffList(before, after);
    let put: readonly Item[];
    let del: string[];
    let seq = this.#lastSeq[coll];
    if (change) {
      put = change.put;
      del = change.del;
    } else {
      // a reorder (a whole-State replace): renumber the collection
      put = after;
      const kept = new Set(after.map((r) => r.id));
      del = [...known.keys()].filter((id) => !kept.has(id));
    }
    for (const r of put) {
      const s = change && known.has(r.id) ? known.get(r.id)!.seq : ++seq;
      seqs.set(r as Resource, s);
      ops.push(this.#client.put(resourceKey(coll, r.id)).value(JSON.stringify({ seq: s, resource: r })));
    }
    for (const id of del) ops.push(this.#client.delete().key(resourceKey(coll, id)));
  }

  /** Our own transaction committed at `revision`: the mirror becomes `next` (unless the watch is already past it). */
  #installLocal(next: State, seqs: Map<Resource, number>, revision: number): void {
    if (revision < this.#revision) return;
    if (revision > this.#revision) {
      // (at equal revisions the watch has already brought these keys in: only the objects are swapped for next's)
      for (const coll of COLLECTIONS) {
        if (next[coll] === this.#state[coll]) continue;
        const entries = new Map<string, Entry>();
        for (const r of next[coll] as Resource[]) {
          const seq = seqs.get(r) ?? this.#entries[coll].get(r.id)!.seq;
          entries.set(r.id, { seq, resource: r });
          if (seq > this.#lastSeq[coll]) this.#lastSeq[coll] = seq;
        }
        this.#entries[coll] = entries;
      }
      this.#count++;
    }
    this.#guardRevision = revision;
    this.#publish(next, revision);
  }

  /** Apply a watch response: the events past the mirror's revision. */
  #applyWatch(res: IWatchResponse): void {
    const changed = new Set<Collection>();
    let revision = this.#revision;
    for (const ev of res.events) {
      const kvRev = Number(ev.kv.mod_revision);
      if (kvRev <= this.#revision) continue;
      revision = Math.max(revision, kvRev);
      const coll = this.#applyKv(ev.kv, ev.type === 'Delete');
      if (coll) changed.add(coll);
    }
    if (revision === this.#revision) return;
    this.#publish(this.#rebuild(changed), revision);
  }

  /** One key's new value (or deletion) into the entries; the collection it touched, if any. */
  #applyKv(kv: IKeyValue, deleted: boolean): Collection | undefined {
    const key = kv.key.toString();
    if (key === GUARD_KEY) {
      this.#count = deleted ? 0 : Number(kv.value.toString()) || 0;
      this.#guardRevision = deleted ? 0 : Number(kv.mod_revision);
      return undefined;
    }
    const [coll, id, ...rest] = key.slice(MODEL_PREFIX.length).split('/');
    const collection = COLLECTIONS.find((c) => c === coll);
    if (!collection || !id || rest.length > 0) {
      this.#log(`etcd: ignoring key ${key} (not a model resource)`);
      return undefined;
    }
    if (deleted) {
      this.#entries[collection].delete(id);
      return collection;
    }
    const entry = decodeEntry(kv.value.toString());
    if (!entry || entry.resource.id !== id) {
      this.#log(`etcd: ignoring key ${key} (its value is not {"seq":n,"resource":{"id":"${id}",...}})`);
      return undefined;
    }
    this.#entries[collection].set(id, entry);
    if (entry.seq > this.#lastSeq[collection]) this.#lastSeq[collection] = entry.seq;
    return collection;
  }

  /** The state with the changed collections' lists rebuilt in seq order (the others shared). */
  #rebuild(changed: Set<Collection>): State {
    const next = { ...this.#state };
    for (const coll of changed) {
      const sorted = [...this.#entries[coll].values()].sort((a, b) => a.seq - b.seq);
      (next as Record<Collection, Resource[]>)[coll] = sorted.map((e) => e.resource);
    }
    return next;
  }

  #publish(state: State, revision: number): void {
    this.#state = state;
    this.#revision = revision;
    for (const w of this.#waiters.filter((w) => w.revision <= revision)) w.wake();
    this.#waiters = this.#waiters.filter((w) => w.revision > revision);
    for (const cb of this.#listeners) {
      try {
        cb(state, revision);
      } catch (e) {
        this.#log(`etcd: a model listener failed: ${errorText(e)}`);
      }
    }
  }

  /** Until the mirror is at `revision`: the watch brings it, or a re-read after a call timeout. */
  async #catchUp(revision: number): Promise<void> {
    if (this.#revision >= revision) return;
    let timer: NodeJS.Timeout | undefined;
    const caught = new Promise<boolean>((resolve) => this.#waiters.push({ revision, wake: () => resolve(true) }));
    const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.#callTimeoutMs)));
    const inTime = await Promise.race([caught, late]);
    clearTimeout(timer);
    if (!inTime && !this.#closed) await this.#resync();
  }

  /** Read the whole model at one revision and (re)start the watch just after it (one re-read at a time). */
  #resync(): Promise<void> {
    this.#resyncing ??= this.#reread().finally(() => (this.#resyncing = undefined));
    return this.#resyncing;
  }

  async #reread(): Promise<void> {
    let res;
    try {
      res = await this.#client.getAll().prefix(MODEL_PREFIX).exec();
    } catch (e) {
      throw unavailable(this.#endpoints, e);
    }
    this.#entries = emptyEntries();
    this.#lastSeq = zeroSeqs();
    this.#count = 0;
    this.#guardRevision = 0;
    for (const kv of res.kvs) this.#applyKv(kv, false);
    this.#publish(this.#rebuild(new Set(COLLECTIONS)), Math.max(this.#guardRevision, ...res.kvs.map((kv) => Number(kv.mod_revision))));
    await this.#watch(Number(res.header.revision) + 1);
  }

  async #watch(fromRevision: number): Promise<void> {
    const old = this.#watcher;
    this.#watcher = undefined;
    await old?.cancel().catch(() => undefined);
    if (this.#closed) return;
    const watcher = await this.#client.watch().prefix(MODEL_PREFIX).startRevision(String(fromRevision)).create();
    this.#watcher = watcher;
    watcher.on('data', (res) => this.#applyWatch(res));
    watcher.on('error', (e) => {
      if (this.#watcher !== watcher || this.#closed) return;
      this.#log(`etcd: model watch failed (${errorText(e)}); re-reading the model`);
      this.#resync().catch((r: unknown) => this.#log(`etcd: re-reading the model failed (${errorText(r)}); keeping revision ${this.#revision}`));
    });
  }
}

/** The model's revision in etcd now (a linearizable read of the guard): what a write just acknowledged has reached. */
export async function currentRevision(client: Etcd3): Promise<number> {
  const res = await client.get(GUARD_KEY).exec();
  return Number(res.kvs[0]?.mod_revision ?? 0);
}

/**
 * Serve `model` through `store`: the store takes the model's current state (applied to its
 * drivers), then every later change (other servers' writes, through the watch). Returns the unfollow.
 * (The store must use the model as its committer.)
 */
export async function followModel(model: EtcdModel, store: Store, log: (message: string) => void): Promise<() => void> {
  await store.adopt(() => model.state());
  return model.onChange(() => {
    store.adopt(() => model.state()).catch((e: unknown) => log(`applying revision ${model.revision()} of the shared model failed: ${errorText(e)}`));
  });
}

/** A client and a model on it, for readers (agents): close() ends both. */
export async function openModel(endpoints: string[], opts: ModelOptions = {}): Promise<ModelView> {
  const client = await connectEtcd(endpoints, opts);
  try {
    const model = await EtcdModel.open(client, endpoints, opts);
    return {
      state: () => model.state(),
      revision: () => model.revision(),
      onChange: (cb) => model.onChange(cb),
      close: async () => {
        await model.close();
        client.close();
      },
    };
  } catch (e) {
    client.close();
    throw e;
  }
}

function emptyEntries(): Record<Collection, Map<string, Entry>> {
  return Object.fromEntries(COLLECTIONS.map((c) => [c, new Map<string, Entry>()])) as Record<Collection, Map<string, Entry>>;
}

function zeroSeqs(): Record<Collection, number> {
  return Object.fromEntries(COLLECTIONS.map((c) => [c, 0])) as Record<Collection, number>;
}

function decodeEntry(text: string): Entry | undefined {
  try {
    const v = JSON.parse(text) as { seq?: unknown; resource?: { id?: unknown } };
    if (typeof v.seq === 'number' && typeof v.resource?.id === 'string') return v as Entry;
  } catch {
    // not JSON: refused below
  }
  return undefined;
}
