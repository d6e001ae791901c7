/*
 * Prerequisites for tests that need root, namespaces, OVS or other system tools.
 * Outside CI a missing prerequisite skips the suite and prints why; with CI=true it fails.
 */
import { execFileSync } from 'node:child_process';

export const IN_CI = process.env.CI === 'true';

function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Returns null when everything is there, else the reason. */
export function missing(needs: { root?: boolean; commands?: string[]; check?: () => string | null }): string | null {
  if (needs.root && process.getuid?.() !== 0) return 'needs root';
  for (const c of needs.commands ?? []) if (!hasCommand(c)) return `needs '${c}' on PATH`;
  return needs.check ? needs.check() : null;
}

/**
 * Decide whether a suite runs: returns true to run. Outside CI a missing prerequisite prints the
 * reason and returns false (use with describe.skipIf(!run)); in CI it throws, failing the run.
 */
export function prerequisites(suite: string, needs: Parameters<typeof missing>[0]): boolean {
  const why = missing(needs);
  if (!why) return true;
  if (IN_CI) throw new Error(`${suite}: prerequisite missing in CI: ${why}`);
  console.warn(`[skip] ${suite}: ${why}`);
  return false;
}
