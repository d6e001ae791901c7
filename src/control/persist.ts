/*
 * The durable state file: a change is on disk before it is visible or acknowledged.
 *
 * Format: JSON lines. The first line is a snapshot {"sfc_state":1,"seq":n,"state":{...}}; each
 * later line is one committed change as a delta {"seq":n+1,"put":{coll:[objects]},"del":{coll:[ids]}}
 * (new objects are appended to their list, changed ones replaced in place, deleted ones removed),
 * so a change costs one small append whatever the size of the model. When the deltas outweigh the
 * snapshot, or a change cannot be expressed as a delta (a whole-State replace that reorders a
 * list), the file is compacted: the full snapshot is written to a temporary file in the same
 * directory (created O_EXCL|O_NOFOLLOW, mode 0600), fsynced, renamed over the file, and the
 * directory fsynced — the classic atomic replace, so a crash leaves either the old or the new file.
 *
 * write(next) is the Store's persist hook (the Store serialises calls and commits a whole batch of
 * queued API writes as one `next`: group commit by batching, one record and one fdatasync per
 * batch). It returns once the record is fdatasync'd; only then does the Store make the change
 * visible and apply it to the drivers.
 *
 * Failure (EIO, ENOSPC, ...): write() throws a NeutronError (507 SfcStorageFull for ENOSPC/EDQUOT,
 * else 500 SfcStateWriteFailed) and the file's durable content is still the previous state: a
 * failed append is truncated away, a failed snapshot's temporary file is removed. After a failed
 * fdatasync the unsynced tail is in an unknown state (Linux may have dropped the dirty pages and
 * will not report it twice), so that descriptor is never trusted again: the next write rewrites
 * the whole file by compaction from the in-memory state, which never held the failed change.
 *
 * Crash safety (kill -9 at any moment): a record is acknowledged only after its fdatasync, and a
 * record is one append ending in "\n", so the only damage a crash can leave is an unterminated
 * last line, which was never acknowledged and is dropped on load. Anything else that does not
 * parse (a bad line in the middle, a gap in seq, a wrong shape) is corruption: loading stops with
 * an error naming the file and line — never a silent empty state. A lock file (pid) keeps a second
 * server off the same state file. Directories the file needs are created 0700.
 */
import { constants } from 'node:fs';
import { chmod, mkdir, open, readFile, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { NeutronError } from './errors.js';
import { COLLECTIONS, emptyState, type Collection, type State } from './model.js';

const FORMAT = 1;
/** Compaction threshold floor: below this the journal is never worth compacting. */
const MIN_COMPACT_BYTES = 256 * 1024;

export type Item = { id: string };
type Delta = { put: Partial<Record<Collection, Item[]>>; del: Partial<Record<Collection, string[]>> };

export class StateFileError extends Error {}

/** `${XDG_STATE_HOME:-~/.local/state}/sfc/state.json`. */
export function defaultStatePath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(base, 'sfc', 'state.json');
}

export class StateFile {
  #journal: FileHandle | null = null;
  /** What the file holds (durably), and its last record's seq. */
  #last: State;
  #seq: number;
  #snapshotBytes = 0;
  #journalBytes = 0;
  /** The journal cannot be trusted (a failed append or fdatasync): rewrite the file before appending. */
  #mustCompact = false;

  private constructor(
    readonly path: string,
    loaded: { state: State; seq: number },
  ) {
    this.#last = loaded.state;
    this.#seq = loaded.seq;
  }

  /**
   * Lock and load the file (a missing file is an empty state), then compact it so appends start
   * from a clean snapshot. `existed` tells whether the file held any state.
   */
  static async open(path: string): Promise<{ file: StateFile; state: State; existed: boolean }> {
    await makePrivateDirs(dirname(path));
    await lock(path);
    try {
      const loaded = await load(path);
      const file = new StateFile(path, loaded ?? { state: emptyState(), seq: 0 });
      await file.#compact(file.#last).catch((e: unknown) => {
        throw new StateFileError(writeFailure(path, e).message);
      });
      return { file, state: file.#last, existed: loaded !== null };
    } catch (e) {
      await unlock(path);
      throw e;
    }
  }

  /**
   * Make `next` durable (the Store's persist hook; calls must not overlap). Resolves once it is on
   * disk; throws a NeutronError (507/500) and leaves the durable content at the previous state.
   */
  async write(next: State): Promise<void> {
    if (next === this.#last) return;
    try {
      const delta = this.#mustCompact || this.#journalBytes > Math.max(this.#snapshotBytes, MIN_COMPACT_BYTES) ? null : diff(this.#last, next);
      if (delta === null) await this.#compact(next);
      else if (Object.keys(delta.put).length + Object.keys(delta.del).length > 0) await this.#append(delta);
    } catch (e) {
      throw writeFailure(this.path, e);
    }
    this.#last = next;
  }

  async close(): Promise<void> {
    try {
      await this.#journal?.close();
    } finally {
      this.#journal = null;
      await unlock(this.path);
    }
  }

  /** One record, appended and fdatasync'd; on failure cut back to the last good length. */
  async #append(delta: Delta): Promise<void> {
    const journal = this.#journal!;
    const record: Record<string, unknown> = { seq: this.#seq + 1 };
    if (Object.keys(delta.put).length > 0) record.put = delta.put;
    if (Object.keys(delta.del).length > 0) record.del = delta.del;
    const line = Buffer.from(JSON.stringify(record) + '\n');
    try {
      await journal.appendFile(line);
      await journal.datasync();
    } catch (e) {
      this.#mustCompact = true;
      await journal.truncate(this.#snapshotBytes + this.#journalBytes).catch(() => undefined);
      throw e;
    }
    this.#seq++;
    this.#journalBytes += line.length;
  }

  /** Snapshot `state` atomically (temporary file, fsync, rename, fsync the directory). */
  async #compact(state: State): Promise<void> {
    const text = Buffer.from(JSON.stringify({ sfc_state: FORMAT, seq: this.#seq, state }) + '\n');
    const dir = dirname(this.path);
    const tmp = join(dir, `.${basename(this.path)}.tmp`);
    this.#mustCompact = true;
    try {
      await rm(tmp, { force: true }); // left by a crash during an earlier compaction (rm never follows a link)
      const f = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      try {
        await f.writeFile(text);
        await f.sync();
      } finally {
        await f.close();
      }
      await rename(tmp, this.path);
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw e;
    }
    await syncDir(dir);
    await this.#journal?.close().catch(() => undefined); // a descriptor whose fdatasync failed may report that again
    this.#journal = null;
    this.#journal = await open(this.path, 'a');
    this.#snapshotBytes = text.length;
    this.#journalBytes = 0;
    this.#mustCompact = false;
  }
}

/**
 * The API's answer to a failed write of the state file. ENOSPC/EDQUOT: 507 Insufficient Storage
 * (Neutron has none; 507 tells the client the request was fine and can be retried once space is
 * freed, where a 500 would read as a server bug); anything else (EIO, EROFS...): 500.
 */
function writeFailure(path: string, e: unknown): NeutronError {
  if (e instanceof NeutronError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new NeutronError(507, 'SfcStorageFull', `The change was not applied: no space left to write the state file ${path} (${code}). Free space and retry.`);
  }
  return new NeutronError(500, 'SfcStateWriteFailed', `The change was not applied: writing the state file ${path} failed (${(e as Error).message}).`);
}

/** mkdir -p, each directory it creates mode 0700 (whatever the umask); existing ones are left alone. */
async function makePrivateDirs(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode: 0o700 });
  if (first === undefined) return;
  for (let d = dir; d.length >= first.length; d = dirname(d)) await chmod(d, 0o700);
}

async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/**
 * The change from prev to next as a delta, or null when next's order is not "prev's survivors in
 * place, new objects at the end" (then only a snapshot reproduces it).
 */
function diff(prev: State, next: State): Delta | null {
  const delta: Delta = { put: {}, del: {} };
  for (const coll of COLLECTIONS) {
    if (prev[coll] === next[coll]) continue;
    const change = diffList(prev[coll], next[coll]);
    if (change === null) return null;
    if (change.put.length > 0) delta.put[coll] = change.put;
    if (change.del.length > 0) delta.del[coll] = change.del;
  }
  return delta;
}

/**
 * One merge walk. Snapshots share unchanged objects, so the common case is pointer compares only;
 * an id set is built only when something disappeared (to tell a delete from a move).
 */
export function diffList(before: readonly Item[], after: readonly Item[]): { put: Item[]; del: string[] } | null {
  const put: Item[] = [];
  const del: string[] = [];
  let afterIds: Set<string> | undefined;
  let j = 0;
  for (const was of before) {
    const now = after[j];
    if (now === was) {
      j++;
    } else if (now !== undefined && now.id === was.id) {
      if (JSON.stringify(now) !== JSON.stringify(was)) put.push(now);
      j++;
    } else {
      afterIds ??= new Set(after.map((r) => r.id));
      if (afterIds.has(was.id)) return null; // still there, elsewhere: a reorder
      del.push(was.id);
    }
  }
  put.push(...after.slice(j)); // the rest is new: every id of `before` was matched or is gone
  return { put, del };
}

function applyDelta(state: State, delta: Delta): void {
  for (const coll of COLLECTIONS) {
    let items: Item[] = state[coll];
    const del = new Set(delta.del[coll] ?? []);
    if (del.size > 0) items = items.filter((r) => !del.has(r.id));
    for (const obj of delta.put[coll] ?? []) {
      const at = items.findIndex((r) => r.id === obj.id);
      if (at >= 0) items[at] = obj;
      else items.push(obj);
    }
    (state as unknown as Record<Collection, Item[]>)[coll] = items;
  }
}

/** Parse the file; null when it does not exist. */
async function load(path: string): Promise<{ state: State; seq: number } | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new StateFileError(`cannot read state file ${path}: ${(e as Error).message}`);
  }
  const bad = (line: number, why: string) =>
    new StateFileError(`state file ${path} is corrupt (line ${line}: ${why}); fix or move it away to start from an empty state`);
  const lines = text.split('\n');
  lines.pop(); // after the last "\n": empty, or an unterminated record a crash interrupted (never acknowledged)
  if (lines.length === 0) throw bad(1, 'no snapshot record');
  const head = parseRecord(lines[0]!);
  if (!isObject(head) || head.sfc_state !== FORMAT || typeof head.seq !== 'number' || !isState(head.state)) {
    throw bad(1, 'not an sfc state snapshot');
  }
  const state = head.state;
  let seq = head.seq;
  for (let i = 1; i < lines.length; i++) {
    const rec = parseRecord(lines[i]!);
    if (!isObject(rec) || rec.seq !== seq + 1 || !isObject(rec.put ?? {}) || !isObject(rec.del ?? {})) {
      throw bad(i + 1, `not change record ${seq + 1}`);
    }
    const delta = { put: rec.put ?? {}, del: rec.del ?? {} } as Delta;
    if (!validDelta(delta)) throw bad(i + 1, 'malformed change record');
    applyDelta(state, delta);
    seq++;
  }
  return { state, seq };
}

function parseRecord(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const isItem = (v: unknown): v is Item => isObject(v) && typeof v.id === 'string';

function isState(v: unknown): v is State {
  return isObject(v) && COLLECTIONS.every((c) => Array.isArray(v[c]) && (v[c] as unknown[]).every(isItem));
}

function validDelta(d: Delta): boolean {
  const known = (o: object) => Object.keys(o).every((k) => (COLLECTIONS as readonly string[]).includes(k));
  return (
    known(d.put) &&
    known(d.del) &&
    Object.values(d.put).every((l) => Array.isArray(l) && l.every(isItem)) &&
    Object.values(d.del).every((l) => Array.isArray(l) && l.every((id) => typeof id === 'string'))
  );
}

// ---- single writer ----------------------------------------------------------------------

const lockPath = (path: string) => `${path}.lock`;

/** Take `<file>.lock` (our pid); a lock left by a dead process is taken over. */
async function lock(path: string): Promise<void> {
  for (;;) {
    try {
      await writeFile(lockPath(path), `${process.pid}\n`, { flag: 'wx' });
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new StateFileError(`cannot lock state file ${path}: ${(e as Error).message}`);
      }
    }
    const owner = Number((await readFile(lockPath(path), 'utf8').catch(() => '')).trim());
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
      throw new StateFileError(`state file ${path} is in use by process ${owner} (lock ${lockPath(path)})`);
    }
    await rm(lockPath(path), { force: true });
  }
}

async function unlock(path: string): Promise<void> {
  await rm(lockPath(path), { force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
