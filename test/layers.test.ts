/*
 * Every import points down (ARCHITECTURE.md §6): a module may import from its own folder or from a
 * folder on a lower layer, never from a higher one or a sibling on the same layer.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = resolve(__dirname, '../src');

/** Folder (first path segment under src/) -> layer; higher layers may import lower ones. */
export const LAYERS: Record<string, number> = {
  util: 0,
  packet: 0,
  classifier: 1,
  hash: 1,
  dataplane: 2,
  control: 3,
  lab: 4,
  commands: 5,
  'cli.ts': 6,
};

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const folderOf = (file: string) => relative(SRC, file).split('/')[0];

/** Every relative import of every module under src/, as [importer, imported] folder pairs that break the rule. */
export function upwardImports(): string[] {
  const bad: string[] = [];
  for (const file of files(SRC)) {
    const from = folderOf(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/(?:from\s+|import\s*\(?\s*)['"](\.\.?\/[^'"]+)['"]/g)) {
      const to = folderOf(resolve(dirname(file), m[1]));
      if (to === from) continue;
      const ok = LAYERS[from] !== undefined && LAYERS[to] !== undefined && LAYERS[to] < LAYERS[from];
      if (!ok) bad.push(`${relative(SRC, file)} imports ${m[1]} (${from} -> ${to})`);
    }
  }
  return bad;
}

describe('layering', () => {
  it('every folder under src/ has a layer', () => {
    const folders = readdirSync(SRC).filter((n) => !n.startsWith('.'));
    expect(folders.filter((f) => LAYERS[f] === undefined)).toEqual([]);
  });

  it('no import points up or sideways', () => {
    expect(upwardImports()).toEqual([]);
  });
});
