/*
 * registry: every packet I/O backend, by name (ARCHITECTURE.md §6). A backend is one object in its
 * own module (the Backend interface of backend.ts); adding one is that module plus one line in
 * BACKENDS. Importing the registry loads no native code: each backend loads its own on first use.
 *
 * The CLI's --backend choices, their help text and their check (parseBackend) come from here, and
 * so does --busy-poll-us (it needs a backend with worker threads).
 */
import { UsageError } from '../../util/args.js';
import { afpacketBackend } from './afpacket.js';
import { afxdpBackend } from './afxdp.js';
import { capBackend } from './cap.js';
import { tapBackend } from './tap.js';

export const BACKENDS = [afpacketBackend, afxdpBackend, capBackend, tapBackend] as const;

export type RegisteredBackend = (typeof BACKENDS)[number];
export type BackendName = RegisteredBackend['name'];
export const BACKEND_NAMES: readonly BackendName[] = BACKENDS.map((b) => b.name);
/**
 * AF_XDP: on veth it forwarded more 64-byte frames per second at less CPU per frame than AF_PACKET,
 * and TCP through the chain at the same rate (bench/e2e, README). Where it cannot attach, an
 * interface falls back to AF_PACKET and the attach log says why.
 */
export const DEFAULT_BACKEND: BackendName = 'afxdp';

function find(name: string): RegisteredBackend | undefined {
  return BACKENDS.find((b) => b.name === name);
}

/** The backend called `name`; throws for an unknown name (names also arrive untyped, in worker data). */
export function backendNamed(name: BackendName): RegisteredBackend {
  const backend = find(name);
  if (backend === undefined) throw new Error(`unknown packet I/O backend '${String(name)}' (expected ${BACKEND_NAMES.join(', ')})`);
  return backend;
}

/** The backend a --backend option names; a UsageError lists the names. */
export function parseBackend(value: string): RegisteredBackend {
  const backend = find(value);
  if (backend === undefined) throw new UsageError(`--backend must be one of ${BACKEND_NAMES.join(', ')}, got '${value}'`);
  return backend;
}

/** The names with their notes for option help: "afpacket (default), cap (libpcap) or tap". */
export function backendChoices(): string {
  const described = BACKENDS.map((b) => {
    const notes = [...(b.name === DEFAULT_BACKEND ? ['default'] : []), ...(b.note === undefined ? [] : [b.note])];
    return notes.length > 0 ? `${b.name} (${notes.join(', ')})` : b.name;
  });
  return `${described.slice(0, -1).join(', ')} or ${described[described.length - 1]}`;
}

/** `--busy-poll-us` (µs, 0 or more; 0 = off); a UsageError for a backend without worker threads. */
export function parseBusyPoll(value: string, backend: BackendName): number {
  const us = Number(value);
  if (!Number.isInteger(us) || us < 0 || us > 1_000_000) throw new UsageError(`--busy-poll-us must be an integer from 0 to 1000000, got '${value}'`);
  if (us > 0 && backendNamed(backend).threads === null) throw new UsageError(`--busy-poll-us needs worker threads; the ${backend} backend runs its data path on the main thread`);
  return us;
}
