/*
 * Talking to Open vSwitch through its own tools: ovs-vsctl for bridges and ports, ovs-ofctl
 * (OpenFlow 1.5) for flows, groups and statistics.
 *
 * Flows and groups are kept as TEXT in OVS's own normalised form (what `ovs-ofctl dump-flows
 * --no-stats` and `dump-groups` print; the renderer writes exactly that form, and the golden tests
 * hold it to it): a flow is identified by `table, priority, match` (its strict identity in OpenFlow)
 * and carries its actions; a group is identified by its id. `diff` turns the installed set and the
 * wanted set into one ordered list of flow and group mods, and `applyBundle` sends that list in ONE
 * OpenFlow bundle (`ovs-ofctl bundle`): the switch applies all of it or none, and no packet sees a
 * half-applied change. Order inside the bundle: groups added and modified first (so new flows find
 * them), then flows deleted, modified and added, then groups deleted (no flow points at them any
 * more).
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const OVS_PACKAGE = 'openvswitch-switch';
const OF = ['-O', 'OpenFlow15'];

export interface ExecOptions {
  env?: NodeJS.ProcessEnv;
  input?: string;
}

/** Run a command; reject with its stderr on failure (a missing tool names the OVS package). */
export function exec(argv: string[], opts: ExecOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(argv[0], argv.slice(1), { env: opts.env ?? process.env, maxBuffer: 256 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return reject(new Error(`${argv[0]} not found: install the Debian package ${OVS_PACKAGE}`));
      reject(new Error(`${argv.slice(0, 3).join(' ')}: ${(stderr.trim() || err.message).slice(0, 2000)}`));
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** One flow in normalised text: `key` = table,priority,match; `actions`. */
export interface FlowText {
  key: string;
  actions: string;
}

/** Wanted or installed state of a bridge: flows by key, groups by id (full group text). */
export interface BridgeState {
  flows: Map<string, string>;
  groups: Map<number, string>;
}

export const emptyBridgeState = (): BridgeState => ({ flows: new Map(), groups: new Map() });

/** Parse one line of `dump-flows --no-stats` (or the renderer's output) into key and actions. */
export function parseFlowLine(line: string): FlowText | null {
  const t = line.trim();
  const at = t.indexOf(' actions=');
  if (!t || at < 0) return null;
  let match = t.slice(0, at).replace(/^cookie=0x[0-9a-f]+, /, '');
  // dump-flows omits table 0; the renderer always writes it
  if (!/^table=\d+, /.test(match)) match = `table=0, ${match}`;
  return { key: match, actions: t.slice(at + ' actions='.length) };
}

export const flowLine = (f: FlowText): string => `${f.key} actions=${f.actions}`;

/** group_id of a group's text. */
export function groupId(text: string): number {
  const m = /^group_id=(\d+),/.exec(text.trim());
  if (!m) throw new Error(`not a group: ${text}`);
  return Number(m[1]);
}

/** The mods (bundle lines) taking `have` to `want`, in a safe order. */
export function diff(have: BridgeState, want: BridgeState): string[] {
  const out: string[] = [];
  for (const [id, text] of want.groups) {
    const old = have.groups.get(id);
    if (old === undefined) out.push(`group add ${text}`);
    else if (old !== text) out.push(`group modify ${text}`);
  }
  // The bundle's flow syntax wants `table=0,priority=...`: the key's ", " separators are fine.
  for (const key of have.flows.keys()) if (!want.flows.has(key)) out.push(`flow delete_strict ${key}`);
  for (const [key, actions] of want.flows) {
    const old = have.flows.get(key);
    if (old === undefined) out.push(`flow add ${COOKIE}, ${key} actions=${actions}`);
    else if (old !== actions) out.push(`flow modify_strict ${COOKIE}, ${key} actions=${actions}`);
  }
  for (const id of have.groups.keys()) if (!want.groups.has(id)) out.push(`group delete group_id=${id}`);
  return out;
}

/** The cookie on every flow sfc installs (reconciliation leaves flows without it alone). */
export const COOKIE = 'cookie=0x5fc0';
export const COOKIE_MATCH = 'cookie=0x5fc0/-1';

export class Ofctl {
  /** `target`: the bridge's management socket (unix:<rundir>/<bridge>.mgmt) or its name. */
  constructor(
    readonly target: string,
    private readonly scratchDir: string,
  ) {}

  /** The bridge's flows carrying sfc's cookie, and all its groups. */
  async dump(): Promise<BridgeState> {
    const [flows, groups] = await Promise.all([
      exec(['ovs-ofctl', ...OF, '--no-stats', 'dump-flows', this.target, COOKIE_MATCH]),
      exec(['ovs-ofctl', ...OF, 'dump-groups', this.target]),
    ]);
    const state = emptyBridgeState();
    for (const line of flows.split('\n')) {
      const f = parseFlowLine(line);
      if (f) state.flows.set(f.key, f.actions);
    }
    for (const line of groups.split('\n')) {
      if (line.trim().startsWith('group_id=')) state.groups.set(groupId(line), line.trim());
    }
    return state;
  }

  /** Apply `mods` (diff's lines) as one atomic bundle. */
  async applyBundle(mods: string[]): Promise<void> {
    if (mods.length === 0) return;
    const file = join(this.scratchDir, 'bundle.txt');
    await writeFile(file, mods.join('\n') + '\n');
    await exec(['ovs-ofctl', ...OF, 'bundle', this.target, file]);
  }

  /** Number of flows carrying sfc's cookie. */
  async aggregate(): Promise<number> {
    const out = await exec(['ovs-ofctl', ...OF, 'dump-aggregate', this.target, COOKIE_MATCH]);
    return Number(/flow_count=(\d+)/.exec(out)?.[1] ?? -1);
  }

  /** Number of groups on the bridge. */
  async groupCount(): Promise<number> {
    const out = await exec(['ovs-ofctl', ...OF, 'dump-groups', this.target]);
    return out.split('\n').filter((l) => l.trim().startsWith('group_id=')).length;
  }

  /** Raw statistics: dump-flows (with stats, sfc's cookie), dump-group-stats, dump-ports. */
  flowStats(): Promise<string> {
    return exec(['ovs-ofctl', ...OF, 'dump-flows', this.target, COOKIE_MATCH]);
  }

  groupStats(): Promise<string> {
    return exec(['ovs-ofctl', ...OF, 'dump-group-stats', this.target]);
  }

  portStats(): Promise<string> {
    return exec(['ovs-ofctl', ...OF, 'dump-ports', this.target]);
  }
}
