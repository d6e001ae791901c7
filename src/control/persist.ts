/*
 * The durable state file: every acknowledged change is on disk before the API answers.
 *
 * Format: JSON lines. The first line is a snapshot {"sfc_state":1,"seq":n,"state":{...}}; each
 * later line is one committed change as a delta {"seq":n+1,"put":{coll:[objects]},"del":{coll:[ids]}}
 * (new objects are appended to their list, changed ones replaced in place, deleted ones removed),
 * so a change costs one small append whatever the size of the model. When the deltas outweigh the
 * snapshot, or a change cannot be expressed as a delta (a whole-State replace that reorders a
 * list), the file is compacted: the full snapshot is written to a temporary file in the same
 * directory, fsynced, renamed over the file, and the directory fsynced — the classic atomic
 * replace, so a crash leaves either the old or the new file.
 *
 * Group commit: write() (the Store's persist hook, serialised by the Store) appends the record;
 * sync() resolves once everything appended so far is on disk, sharing one fdatasync among all the
 * changes appended while the previous one ran. The API awaits sync() before answering a write, so
 * concurrent writers do not queue behind one fdatasync each. (A reader may see a change a few
 * hundred microseconds before it is durable; it is acknowledged only after.)
 *
 * Crash safety (kill -9 at any moment): a record is acknowledged only after its fdatasync, and a
 * record is one append ending in "\n", so the only damage a crash can leave is an unterminated
 * last line, which was never acknowledged and is dropped on load. Anything else that does not
 * parse (a bad line in the middle, a gap in seq, a wrong shape) is corruption: loading stops with
 * an error naming the file and line — never a silent empty state. A failed append is truncated
 * away; a failed append or fdatasync forces a compaction on the next write. A lock file (pid)
 * keeps a second server off the same state file.
 */
import { mkdir, open, readFile, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { COLLECTIONS, emptyState, type Collection, type State } from './model.js';

const FORMAT = 1;
/** Compaction threshold floor: below this the journal is never worth compacting. */
const MIN_COMPACT_BYTES = 256 * 1024;

type Item = { id: string };
type Delta = { put: Partial<Record<Collection, Item[]>>; del: Partial<Record<Collection, string[]>> };

export class StateFileError extends Error {}

/** `${XDG_STATE_HOME:-~/.local/state}/sfc/state.json`. */
export function defaultStatePath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(base, 'sfc', 'state.json');
}

export class StateFile {
  #journal: FileHandle | null = null;
  #last: State;
  /** Last record appended, and last one known to be on disk. */
  #seq: number;
  #durableSeq: number;
  #syncing: Promise<void> | null = null;
  #compacting: Promise<void> | null = null;
  #snapshotBytes = 0;
  #journalBytes = 0;
  #mustCompact = false;

  private constructor(
    readonly path: string,
    loaded: { state: State; seq: number },
  ) {
    this.#last = loaded.state;
    this.#seq = this.#durableSeq = loaded.seq;
  }

  /**
   * Lock and load the file (a missing file is an empty state), then compact it so appends start
   * from a clean snapshot. `existed` tells whether the file held any state.
   */
  static async open(path: string): Promise<{ file: StateFile; state: State; existed: boolean }> {
    await mkdir(dirname(path), { recursive: true });
    await lock(path);
    try {
      const loaded = await load(path);
      const file = new StateFile(path, loaded ?? { state: emptyState(), seq: 0 });
      await file.#compact(file.#last);
      return { file, state: file.#last, existed: loaded !== null };
    } catch (e) {
      await unlock(path);
      throw e;
    }
  }

  /** Record `next` (the Store's persist hook). Durable once a later sync() resolves. */
  async write(next: State): Promise<void> {
    if (next === this.#last) return;
    const delta = this.#mustCompact || this.#journalBytes > Math.max(this.#snapshotBytes, MIN_COMPACT_BYTES) ? null : diff(this.#last, next);
    if (delta === null) await this.#compact(next);
    else if (Object.keys(delta.put).length + Object.keys(delta.del).length > 0) await this.#append(delta);
    this.#last = next;
  }

  /** Resolve when every change written so far is on disk (one fdatasync serves many callers). */
  async sync(): Promise<void> {
    const target = this.#seq;
    while (this.#durableSeq < target) {
      if (this.#compacting) await this.#compacting.catch(() => undefined);
      else await (this.#syncing ??= this.#datasync());
    }
  }

  async close(): Promise<void> {
    try {
      await this.sync();
    } finally {
      await this.#journal?.close();
      this.#journal = null;
      await unlock(this.path);
    }
  }

  async #append(delta: Delta): Promise<void> {
    const journal = this.#journal!;
    const record: Record<string, unknown> = { seq: this.#seq + 1 };
    if (Object.keys(delta.put).length > 0) record.put = delta.put;
    if (Object.keys(delta.del).length > 0) record.del = delta.del;
    const line = Buffer.from(JSON.stringify(record) + '\n');
    try {
      await journal.appendFile(line);
    } catch (e) {
      this.#mustCompact = true;
      await journal.truncate(this.#snapshotBytes + this.#journalBytes).catch(() => undefined);
      throw this.#failure(e);
    }
    this.#seq++;
    this.#journalBytes += line.length;
  }

  async #datasync(): Promise<void> {
    const upTo = this.#seq;
    try {
      await this.#journal!.datasync();
      this.#durableSeq = Math.max(this.#durableSeq, upTo);
    } catch (e) {
      this.#mustCompact = true;
      throw this.#failure(e);
    } finally {
      this.#syncing = null;
    }
  }

  /** Snapshot `state` atomically; everything up to it is then durable. */
  async #compact(state: State): Promise<void> {
    const text = Buffer.from(JSON.stringify({ sfc_state: FORMAT, seq: this.#seq, state }) + '\n');
    const tmp = join(dirname(this.path), `.${basename(this.path)}.tmp`);
    const run = async () => {
      const f = await open(tmp, 'w', 0o600);
      try {
        await f.writeFile(text);
        await f.sync();
      } finally {
        await f.close();
      }
      await rename(tmp, this.path);
      await syncDir(dirname(this.path));
      await this.#syncing?.catch(() => undefined); // never close the journal under a running fdatasync
      await this.#journal?.close();
      this.#journal = null;
      this.#journal = await open(this.path, 'a');
      this.#durableSeq = this.#seq;
    };
    this.#compacting = run();
    try {
      await this.#compacting;
    } catch (e) {
      this.#mustCompact = true;
      throw this.#failure(e);
    } finally {
      this.#compacting = null;
    }
    this.#snapshotBytes = text.length;
    this.#journalBytes = 0;
    this.#mustCompact = false;
  }

  #failure(e: unknown): StateFileError {
    return new StateFileError(`cannot write state file ${this.path}: ${(e as Error).message}`);
  }
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
function diffList(before: readonly Item[], after: readonly Item[]): { put: Item[]; del: string[] } | null {
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
