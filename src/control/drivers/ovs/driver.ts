/*
 * OvsDriver: the driver seam (driver.ts) for the OVS-backed mode. One bridge is sfc's alone: its
 * ports are the plan's interfaces (`system` type; the netdev datapath reads them with AF_PACKET),
 * its flows carry sfc's cookie, its groups are all sfc's.
 *
 * precommit: the renderer's `unsupported` refusals (400s naming the object), and a trial render.
 * postcommit: add the new interfaces to the bridge, render with their OpenFlow port numbers, diff
 * against what the bridge holds and apply the difference as ONE OpenFlow bundle (ofctl.ts), then
 * drop the ports no longer used. An untouched chain's flows and groups are not in the diff, so its
 * traffic never notices another chain's change; a failed bundle changes nothing and is reported.
 * What the bridge holds is read back from the switch when the driver starts (`installed`), so the
 * first postcommit after a restart of sfc (the saved state) reconciles the bridge: stale flows and
 * groups are removed, missing ones added. After a restart of ovs-vswitchd under a running sfc, a
 * watch (flow and group counts every 2 s) finds the rendering gone and `reconcile()` puts it back.
 * Postcommits, health views (health()) and reconciliations run one at a time.
 *
 * Statistics come from OVS's own counters (flow, group and port statistics), mapped onto
 * the userspace mode's metric names (stats()).
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Driver } from '../../driver.js';
import { NeutronError } from '../../errors.js';
import type { DataplaneStats } from '../../metrics.js';
import { ALL_UP, type HealthView } from '../../health.js';
import type { Plan } from '../../plan.js';
import type { InstanceName } from '../../../dataplane/tables.js';
import { COUNTERS, DROP_REASONS } from '../../../packet/counters.js';
import { checkOvsInstalled, OvsDaemon } from './daemon.js';
import { mirrorCapture } from './mirror.js';
import { diff, emptyBridgeState, exec, Ofctl, parseFlowLine, type BridgeState } from './ofctl.js';
import { renderBridge, T_L2, unsupported, type Rendered } from './render.js';
import { readMemberFlows } from './flowcount.js';
import { ovsExplain } from './trace.js';
import type { StepView } from '../../journey.js';
import type { State } from '../../model.js';

export interface OvsDriverOptions {
  bridge: string;
  /** A running Open vSwitch's database (unix:PATH); none: start a private one in `dir`. */
  ovsdb?: string;
  /** Directory for the private OVS and scratch files. */
  dir: string;
  log?: (message: string) => void;
  /** How often to check that the bridge still holds the rendering (default 2000 ms). */
  watchMs?: number;
}

/**
 * A shared Open vSwitch's ovs-vswitchd control socket: <rundir>/ovs-vswitchd.<pid>.ctl, or
 * <rundir>/ovs-vswitchd.ctl as OvsDaemon names it ('' if not found).
 */
async function sharedCtl(rundir: string): Promise<string> {
  const named = join(rundir, 'ovs-vswitchd.ctl');
  try {
    const pid = (await readFile(join(rundir, 'ovs-vswitchd.pid'), 'utf8')).trim();
    const ctl = join(rundir, `ovs-vswitchd.${pid}.ctl`);
    return existsSync(ctl) ? ctl : '';
  } catch {
    return existsSync(named) ? named : '';
  }
}

export class OvsDriver implements Driver {
  readonly name = 'ovs';
  private installed: BridgeState = emptyBridgeState();
  private rendered: Rendered | undefined;
  private plan: Plan | undefined;
  /** The health view in force (Driver.health): applied to every rendering. */
  private view: HealthView = ALL_UP;
  private ports = new Set<string>();
  /**
   * OpenFlow port numbers of the bridge's interfaces, read once per interface (OVS keeps an
   * interface's number in its database, across restarts): a change that adds no interface spawns
   * no ovs-vsctl.
   */
  private ofportOf = new Map<string, number>();
  private queue: Promise<void> = Promise.resolve();
  private watchTimer: NodeJS.Timeout | undefined;
  private log: ((message: string) => void) | undefined;
  /** Renderings applied (the userspace mode's table generation). */
  generation = 0;

  private constructor(
    readonly bridge: string,
    readonly db: string,
    readonly ofctl: Ofctl,
    private readonly daemon: OvsDaemon | undefined,
    /** ovs-vswitchd's control socket ('' when unknown). */
    private readonly ctl: string,
  ) {}

  /** Connect to (or start) Open vSwitch, make sure the bridge exists, read what it holds. */
  static async start(opts: OvsDriverOptions): Promise<OvsDriver> {
    checkOvsInstalled();
    await mkdir(opts.dir, { recursive: true }); // (Ofctl's bundle files; with --ovsdb nothing else makes it)
    let daemon: OvsDaemon | undefined;
    let db = opts.ovsdb;
    if (db === undefined) {
      daemon = await OvsDaemon.start({ dir: join(opts.dir, 'ovs') });
      db = daemon.db;
    }
    if (!db.startsWith('unix:')) throw new Error(`--ovsdb must be unix:PATH, got '${db}'`);
    const rundir = dirname(db.slice('unix:'.length));
    const ctl = daemon?.vswitchdCtl ?? (await sharedCtl(rundir));
    const driver = new OvsDriver(opts.bridge, db, new Ofctl(`unix:${join(rundir, `${opts.bridge}.mgmt`)}`, opts.dir), daemon, ctl);
    try {
      await driver.vsctl(
        ['--may-exist', 'add-br', opts.bridge],
        ['set', 'bridge', opts.bridge, 'datapath_type=netdev', 'fail-mode=secure', 'protocols=OpenFlow15', 'other-config:disable-in-band=true'],
      );
      await driver.waitForSwitch();
      driver.ports = new Set(await driver.bridgePorts());
      driver.installed = await driver.ofctl.dump();
      driver.log = opts.log;
      driver.watch(opts.watchMs ?? 2000);
      opts.log?.(`ovs: bridge ${opts.bridge} (${db}${daemon ? ', private ovs-vswitchd' : ''}): ${driver.installed.flows.size} flows, ${driver.installed.groups.size} groups installed`);
      return driver;
    } catch (e) {
      await daemon?.stop();
      throw e;
    }
  }

  /**
   * sfc capture (operator.ts): the frames `iface` receives and sends, through an OVS mirror
   * (mirror.ts); `match` keeps those a trace filter matches.
   */
  capture(iface: string, limit: number, onFrame: (frame: Uint8Array, dir: 'rx' | 'tx', timeNs: number) => void, match?: string): () => void {
    return mirrorCapture({ bridge: this.bridge, vsctl: (...c) => this.vsctl(...c), log: this.log }, iface, limit, onFrame, match);
  }

  /**
   * sfc explain (operator.ts): the journey of `frame` arriving on `iface` through the bridge's
   * pipeline (ofproto/trace, trace.ts). Like the first packet of the flow, it pins the flow.
   */
  async explain(iface: string, frame: Uint8Array, state: State): Promise<StepView[]> {
    const { plan, rendered } = this;
    // (A shared ovs-vswitchd may have made its socket after this driver started.)
    const ctl = this.ctl || (await sharedCtl(dirname(this.db.slice('unix:'.length))));
    if (!ctl) throw new NeutronError(501, 'OvsExplainUnsupported', "explain needs ovs-vswitchd's control socket, which was not found next to the Open vSwitch database.");
    if (!plan || !rendered) throw new NeutronError(409, 'Conflict', 'Nothing is rendered on the bridge yet.');
    return ovsExplain({ ctl, bridge: this.bridge, plan, rendered, state }, iface, frame);
  }

  /** Live packet trace (sfc trace) follows frames through the userspace workers; Open vSwitch has no such tap. */
  trace(): () => void {
    throw new NeutronError(501, 'HTTPNotImplemented', 'Live trace needs the userspace dataplane (sfc serve --driver userspace); sfc capture works on the ovs driver.');
  }

  /** One ovs-vsctl transaction of several commands. */
  private vsctl(...commands: string[][]): Promise<string> {
    return exec(['ovs-vsctl', `--db=${this.db}`, '--timeout=30', ...commands.flatMap((c) => ['--', ...c])]);
  }

  /** Until the bridge answers OpenFlow (ovs-vswitchd just started, or was restarted). */
  private async waitForSwitch(): Promise<void> {
    let last: unknown;
    for (let i = 0; i < 100; i++) {
      try {
        await exec(['ovs-ofctl', '-O', 'OpenFlow15', 'show', this.ofctl.target]);
        return;
      } catch (e) {
        last = e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error(`bridge ${this.bridge} does not answer OpenFlow: ${last instanceof Error ? last.message : String(last)}`);
  }

  private async bridgePorts(): Promise<string[]> {
    const out = await this.vsctl(['list-ports', this.bridge]);
    return out.split('\n').filter(Boolean);
  }

  /** OpenFlow port numbers of the bridge's interfaces; an interface OVS could not open is an error naming it. */
  private async ofports(names: string[]): Promise<Map<string, number>> {
    const out = await exec(['ovs-vsctl', `--db=${this.db}`, '--format=json', '--columns=name,ofport,error', 'list', 'Interface', ...names]);
    const rows = (JSON.parse(out) as { data: [string, number | [string, unknown[]], string | [string, unknown[]]][] }).data;
    const map = new Map<string, number>();
    for (const [name, ofport, error] of rows) {
      if (typeof ofport !== 'number' || ofport < 0) {
        throw new Error(`interface ${name} could not be added to bridge ${this.bridge}${typeof error === 'string' ? `: ${error}` : ''}`);
      }
      map.set(name, ofport);
    }
    return map;
  }

  precommit(next: Plan): NeutronError[] {
    const problems = unsupported(next);
    if (problems.length > 0) return problems;
    const trial = new Map([...new Set(next.ports.map((p) => p.iface))].map((name, k) => [name, k + 1]));
    try {
      renderBridge(next, (name) => trial.get(name)!);
      return [];
    } catch (e) {
      return [new NeutronError(400, 'SfcBadRequest', e instanceof Error ? e.message : String(e))];
    }
  }

  /** Run `fn` after every earlier postcommit/reconcile (they must not interleave). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  postcommit(next: Plan): Promise<void> {
    return this.serial(() => this.apply(next));
  }

  private async apply(next: Plan): Promise<void> {
    const wanted = [...new Set(next.ports.map((p) => p.iface))];
    const added = wanted.filter((i) => !this.ports.has(i));
    if (added.length > 0) {
      await this.vsctl(...added.map((i) => ['--may-exist', 'add-port', this.bridge, i]));
      for (const i of added) this.ports.add(i);
    }
    const unknown = wanted.filter((i) => !this.ofportOf.has(i));
    if (unknown.length > 0) for (const [name, n] of await this.ofports(unknown)) this.ofportOf.set(name, n);
    const ofport = this.ofportOf;
    const rendered = renderBridge(next, (name) => ofport.get(name)!, this.view);
    await this.ofctl.applyBundle(diff(this.installed, rendered));
    this.installed = { flows: rendered.flows, groups: rendered.groups };
    this.rendered = rendered;
    this.plan = next;
    this.generation++;
    const gone = [...this.ports].filter((i) => !wanted.includes(i));
    if (gone.length > 0) {
      await this.vsctl(...gone.map((i) => ['--if-exists', 'del-port', this.bridge, i]));
      for (const i of gone) {
        this.ports.delete(i);
        this.ofportOf.delete(i);
      }
    }
  }

  /**
   * Health checks changed what is up: re-render the plan in force with `view` and apply the
   * difference in one bundle (a down instance's buckets leave its groups and its pins are deleted,
   * so only its flows are hashed again; a hop with none left is skipped or dropped by its policy).
   */
  health(view: HealthView): Promise<void> {
    return this.serial(async () => {
      this.view = view;
      if (this.plan) await this.apply(this.plan);
    });
  }

  /**
   * Re-read the bridge and apply what differs from the last rendering (after ovs-vswitchd
   * restarted, or someone else changed sfc's flows); returns the number of mods applied.
   */
  reconcile(): Promise<number> {
    return this.serial(async () => {
      if (!this.rendered) return 0;
      await this.waitForSwitch();
      const mods = diff(await this.ofctl.dump(), this.rendered);
      await this.ofctl.applyBundle(mods);
      if (mods.length > 0) this.log?.(`ovs: reconciled bridge ${this.bridge}: ${mods.length} flow/group mods`);
      return mods.length;
    });
  }

  /**
   * Every `ms`, compare the number of sfc's flows and groups on the bridge with the last rendering
   * (one dump-aggregate, one dump-groups); when they differ (ovs-vswitchd restarted with an empty
   * table, someone deleted flows), reconcile. Errors (the switch restarting) wait for the next round.
   */
  private watch(ms: number): void {
    const tick = async () => {
      const r = this.rendered;
      if (!r) return;
      const [agg, groups] = await Promise.all([this.ofctl.aggregate(), this.ofctl.groupCount()]);
      if (agg !== r.flows.size || groups !== r.groups.size) await this.reconcile();
    };
    this.watchTimer = setInterval(() => void tick().catch(() => undefined), ms);
    this.watchTimer.unref();
  }

  /** Labels of instance i (as the userspace tables' instanceNames). */
  get instanceNames(): InstanceName[] {
    const plan = this.plan;
    if (!plan) return [];
    return plan.members.map((m): InstanceName => {
      if (m.group < 0) return { chain: '', hop: 0, portPair: '', ingress: '', egress: '' };
      const g = plan.groups[m.group];
      return { chain: g.chains.join(','), hop: g.hop, portPair: m.name, ingress: plan.ports[m.ingress].name, egress: plan.ports[m.egress].name };
    });
  }

  private statsInFlight: Promise<DataplaneStats> | undefined;

  /** OVS's counters under the userspace mode's names (concurrent callers share one read). */
  stats(): Promise<DataplaneStats> {
    this.statsInFlight ??= this.readStats().finally(() => (this.statsInFlight = undefined));
    return this.statsInFlight;
  }

  private async readStats(): Promise<DataplaneStats> {
    const rendered = this.rendered;
    const events = new Float64Array(COUNTERS.length);
    const drops = new Float64Array(DROP_REASONS.length);
    const instancePackets = new Float64Array(this.plan?.members.length ?? 0);
    const instanceBytes = new Float64Array(instancePackets.length);
    // OVS moves datapath counters into flow and group statistics in revalidator rounds (about
    // every 500 ms): wait for a full round, so a read right after traffic sees that traffic.
    if (this.ctl) await exec(['ovs-appctl', '-t', this.ctl, 'revalidator/wait']);
    const [flowText, groupText, portText, ifaceText, livePins] = await Promise.all([
      this.ofctl.flowStats(),
      this.ofctl.groupStats(),
      this.ofctl.portStats(),
      exec(['ovs-vsctl', `--db=${this.db}`, '--format=json', '--columns=name,ofport', 'list', 'Interface']),
      // (live flows per member: its conntrack pins; unknown, not an error, when the datapath will not list them)
      this.plan ? readMemberFlows(this.ctl, this.plan).catch(() => undefined) : undefined,
    ]);
    const ev = (name: (typeof COUNTERS)[number], n: number) => (events[COUNTERS.indexOf(name)] += n);
    for (const line of flowText.split('\n')) {
      const packets = Number(/n_packets=(\d+)/.exec(line)?.[1] ?? 0);
      const f = parseFlowLine(line.replace(/ (duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*,/g, ''));
      if (!f || !rendered || packets === 0) continue;
      const event = rendered.eventFlows.get(f.key);
      if (event !== undefined) ev(event, packets);
      if (f.key.startsWith(`table=${T_L2}, `)) ev('unclassified', packets);
      const reason = rendered.dropFlows.get(f.key);
      if (reason !== undefined) drops[DROP_REASONS.indexOf(reason)] += packets;
      const tap = rendered.tapFlows.get(f.key);
      if (tap !== undefined) ev('tap_copies', packets);
      const k = tap ?? rendered.instanceFlows.get(f.key);
      if (k !== undefined) {
        instancePackets[k] += packets;
        instanceBytes[k] += Number(/n_bytes=(\d+)/.exec(line)?.[1] ?? 0);
      }
    }
    for (const line of groupText.split('\n')) {
      const id = Number(/group_id=(\d+)/.exec(line)?.[1]);
      // (Instances are counted by their OpenFlow flows, rendered.instanceFlows; a group without buckets drops.)
      const info = rendered?.groupInfo.get(id);
      if (info && info.buckets.size === 0) drops[DROP_REASONS.indexOf('no_instance')] += Number(/,packet_count=(\d+)/.exec(line)?.[1] ?? 0);
    }
    const names = new Map<number, string>();
    for (const [name, ofport] of (JSON.parse(ifaceText) as { data: [string, unknown][] }).data) if (typeof ofport === 'number') names.set(ofport, name);
    const interfaces: DataplaneStats['interfaces'] = [];
    for (const m of portText.matchAll(/port\s+(\d+): rx pkts=(\d+).*\n\s+tx pkts=(\d+)/g)) {
      const name = names.get(Number(m[1]));
      if (!name || !this.ports.has(name)) continue;
      interfaces.push({ name, rxPackets: Number(m[2]), txPackets: Number(m[3]) });
      ev('rx_packets', Number(m[2]));
      ev('tx_packets', Number(m[3]));
    }
    return { events, drops, instancePackets, instanceBytes, instanceFlows: livePins, interfaces };
  }

  async close(): Promise<void> {
    clearInterval(this.watchTimer);
    await this.queue;
    if (!this.daemon) return; // a shared Open vSwitch keeps the bridge and its flows (reconciled on the next start)
    await this.vsctl(['--if-exists', 'del-br', this.bridge]).catch(() => undefined);
    await this.daemon.stop();
  }
}
