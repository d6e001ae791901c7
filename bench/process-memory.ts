/*
 * process-memory: where a process's memory is, for the soak (bench/soak-server.ts), seen from
 * inside the process without any hook in the production code.
 *
 * - WorkerMemory: every worker thread's own process.memoryUsage() (its V8 heap: heapUsed,
 *   heapTotal, external, arrayBuffers; and the committed size of each heap space), and a full GC of each on request, through the in-process
 *   inspector's NodeWorker domain (attached workers, Runtime.evaluate, HeapProfiler.collectGarbage).
 *   A worker the supervisor restarts is attached when it starts.
 * - rollup(): /proc/self/smaps_rollup (Rss, Anonymous, Shared) and the number of mappings in
 *   /proc/self/maps (a leaked mmap, such as a packet ring, shows there).
 * - mappings() / grownMappings(): /proc/self/smaps by mapping, and which mappings grew (or
 *   appeared) between two snapshots, largest growth first.
 */
import { readFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { getHeapSpaceStatistics } from 'node:v8';

export interface HeapFigures {
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  /** Committed bytes of each V8 heap space that has any (new_space, old_space, code_space, large_object_space...). */
  spaces: Record<string, number>;
}

/** This thread's committed bytes per V8 heap space (the ones that have any). */
export function heapSpaces(): Record<string, number> {
  return Object.fromEntries(getHeapSpaceStatistics().filter((s) => s.space_size > 0).map((s) => [s.space_name, s.space_size]));
}

/** Evaluated in a worker (the inspector's command-line API provides require): its memoryUsage() and heapSpaces(). */
const HEAP_FIGURES = `(() => {
  const { getHeapSpaceStatistics } = require('node:v8');
  return JSON.stringify({ ...process.memoryUsage(), spaces: (${heapSpaces.toString()})() });
})()`;

interface InspectorReply {
  id?: number;
  result?: { result?: { value?: string } };
  error?: { message: string };
}

const CALL_TIMEOUT_MS = 2000;

export class WorkerMemory {
  private readonly session = new Session();
  private readonly workers = new Map<string, string>(); // sessionId -> title
  private readonly pending = new Map<number, (r: InspectorReply) => void>();
  private nextId = 1;

  async start(): Promise<void> {
    this.session.connect();
    this.session.on('NodeWorker.attachedToWorker', (m) => this.workers.set(m.params.sessionId, m.params.workerInfo.url));
    this.session.on('NodeWorker.detachedFromWorker', (m) => this.workers.delete(m.params.sessionId));
    this.session.on('NodeWorker.receivedMessageFromWorker', (m) => {
      const reply = JSON.parse(m.params.message) as InspectorReply;
      if (reply.id !== undefined) this.pending.get(reply.id)?.(reply);
      this.pending.delete(reply.id ?? -1);
    });
    await this.session.post('NodeWorker.enable', { waitForDebuggerOnStart: false });
  }

  /** Each attached worker's heap figures; with gc, after a full collection of its heap. */
  async sample(gc: boolean): Promise<HeapFigures[]> {
    const out: HeapFigures[] = [];
    for (const sessionId of this.workers.keys()) {
      try {
        if (gc) await this.call(sessionId, 'HeapProfiler.collectGarbage');
        const r = await this.call(sessionId, 'Runtime.evaluate', { expression: HEAP_FIGURES, returnByValue: true, includeCommandLineAPI: true });
        const m = JSON.parse(r.result?.result?.value ?? '{}') as HeapFigures;
        out.push({ heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, spaces: m.spaces });
      } catch {
        // a worker that exits meanwhile (restart) is left out of this sample
      }
    }
    return out;
  }

  close(): void {
    this.session.disconnect();
  }

  private call(sessionId: string, method: string, params: object = {}): Promise<InspectorReply> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => (this.pending.delete(id), reject(new Error(`${method}: no answer`))), CALL_TIMEOUT_MS);
      this.pending.set(id, (r) => (clearTimeout(timer), r.error ? reject(new Error(r.error.message)) : resolve(r)));
      void this.session.post('NodeWorker.sendMessageToWorker', { sessionId, message: JSON.stringify({ id, method, params }) });
    });
  }
}

export interface Rollup {
  /** Bytes (smaps_rollup Rss, Anonymous, Shared_Clean + Shared_Dirty). */
  rss: number;
  anonymous: number;
  shared: number;
  /** Lines of /proc/self/maps. */
  mappings: number;
}

export function rollup(): Rollup {
  const text = readFileSync('/proc/self/smaps_rollup', 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  const mappings = readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l !== '').length;
  return { rss: kb('Rss'), anonymous: kb('Anonymous'), shared: kb('Shared_Clean') + kb('Shared_Dirty'), mappings };
}

export interface Mapping {
  start: string;
  size: number;
  rss: number;
  name: string;
}

/** /proc/self/smaps, one entry per mapping (by start address). */
export function mappings(): Map<string, Mapping> {
  const out = new Map<string, Mapping>();
  let cur: Mapping | null = null;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      cur = { start: head[1], size: Number.parseInt(head[2], 16) - Number.parseInt(head[1], 16), rss: 0, name: head[3] };
      out.set(cur.start, cur);
    } else if (cur && line.startsWith('Rss:')) {
      cur.rss = Number(/(\d+) kB/.exec(line)?.[1] ?? 0) * 1024;
    }
  }
  return out;
}

/** Mappings whose RSS grew from `before` to `after` (new ones included), largest growth first; and the ones gone. */
export function grownMappings(before: Map<string, Mapping>, after: Map<string, Mapping>, top: number) {
  const grown = [...after.values()]
    .map((m) => ({ ...m, was: before.get(m.start)?.rss ?? null, wasSize: before.get(m.start)?.size ?? null }))
    .filter((m) => m.rss - (m.was ?? 0) > 0 || m.was === null)
    .sort((a, b) => b.rss - (b.was ?? 0) - (a.rss - (a.was ?? 0)));
  const gone = [...before.values()].filter((m) => !after.has(m.start));
  const mb = (n: number) => Math.round(n / 1e5) / 10;
  return {
    grown: grown.slice(0, top).map((m) => ({ start: m.start, name: m.name, size_mb: mb(m.size), was_size_mb: m.wasSize === null ? null : mb(m.wasSize), rss_mb: mb(m.rss), was_rss_mb: m.was === null ? null : mb(m.was) })),
    new_count: grown.filter((m) => m.was === null).length,
    gone_count: gone.length,
    gone_rss_mb: mb(gone.reduce((a, m) => a + m.rss, 0)),
  };
}
