/*
 * A private Open vSwitch: ovsdb-server and ovs-vswitchd from Debian's openvswitch-switch, with the
 * database, sockets, pid files and logs in one directory, in the caller's network namespace.
 * `sfc serve --driver ovs` starts one under its state directory when no --ovsdb is given, and
 * bench/e2e starts one for the hand-written baseline; both stop it (by the pids they started) on
 * exit. There is no OVS kernel module here: bridges use datapath_type=netdev (the userspace
 * datapath), which opens `system` interfaces with AF_PACKET sockets.
 *
 * `spawnPrefix` runs the daemons through a wrapper (e.g. `ip netns exec NS taskset -c 1`); the
 * wrapper must exec, so the child's pid is the daemon's.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { exec, OVS_PACKAGE } from './ofctl.js';

const SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';
const DAEMONS = ['/usr/sbin/ovsdb-server', '/usr/sbin/ovs-vswitchd'];

export interface OvsDaemonOptions {
  /** Directory for conf.db, sockets, pid files and logs (created). */
  dir: string;
  /** argv prefix for both daemons (namespace, CPU pinning); it must exec. */
  spawnPrefix?: string[];
  /** Extra argv prefix for ovs-vswitchd only (e.g. taskset). */
  vswitchdPrefix?: string[];
  /** Called with each daemon's pid (e.g. to record it for a lab's cleanup). */
  onSpawn?: (pid: number, what: string) => void | Promise<void>;
}

/** Why Open vSwitch cannot be started here (names the package), or null. */
export function ovsMissing(): string | null {
  const absent = [SCHEMA, ...DAEMONS].find((f) => !existsSync(f));
  return absent ? `Open vSwitch is not installed (${absent} is missing): install the Debian package ${OVS_PACKAGE}` : null;
}

/** A clear error when Open vSwitch is not installed. */
export function checkOvsInstalled(): void {
  const why = ovsMissing();
  if (why) throw new Error(why);
}

export class OvsDaemon {
  /** The database socket, as ovs-vsctl's --db wants it. */
  readonly db: string;
  private constructor(
    readonly dir: string,
    private readonly children: ChildProcess[],
    private readonly launchVswitchd: () => Promise<ChildProcess>,
  ) {
    this.db = `unix:${join(dir, 'db.sock')}`;
  }

  /** ovs-vswitchd's control socket (ovs-appctl -t). */
  get vswitchdCtl(): string {
    return join(this.dir, 'ovs-vswitchd.ctl');
  }

  /** The ovs-vswitchd process (its CPU time is the forwarder's in the benchmark). */
  get vswitchdPid(): number {
    return this.children[1].pid!;
  }

  static async start(opts: OvsDaemonOptions): Promise<OvsDaemon> {
    checkOvsInstalled();
    const { dir } = opts;
    await mkdir(dir, { recursive: true });
    await rm(join(dir, 'conf.db'), { force: true });
    await exec(['ovsdb-tool', 'create', join(dir, 'conf.db'), SCHEMA]);
    const env = { ...process.env, OVS_RUNDIR: dir, OVS_DBDIR: dir, OVS_LOGDIR: dir };
    const common = ['--no-chdir', '-vconsole:off', '-vfile:info'];
    const prefix = opts.spawnPrefix ?? [];
    const children: ChildProcess[] = [];
    const launch = async (argv: string[], what: string): Promise<ChildProcess> => {
      const child = spawn(argv[0], argv.slice(1), { env, stdio: 'ignore', detached: true });
      if (child.pid === undefined) {
        const e = await new Promise<Error>((resolve) => child.once('error', resolve));
        throw new Error(`${what}: ${e.message}`);
      }
      await opts.onSpawn?.(child.pid, what);
      return child;
    };
    const daemon: OvsDaemon = new OvsDaemon(dir, children, (): Promise<ChildProcess> =>
      launch(
        [...prefix, ...(opts.vswitchdPrefix ?? []), DAEMONS[1], daemon.db, `--unixctl=${daemon.vswitchdCtl}`, `--log-file=${join(dir, 'ovs-vswitchd.log')}`, ...common],
        'ovs-vswitchd',
      ),
    );
    try {
      children.push(await launch(
        [...prefix, DAEMONS[0], join(dir, 'conf.db'), `--remote=p${daemon.db}`, `--unixctl=${join(dir, 'ovsdb-server.ctl')}`, `--log-file=${join(dir, 'ovsdb-server.log')}`, ...common],
        'ovsdb-server',
      ));
      // TSO on: the netdev datapath then reads and writes its AF_PACKET sockets with a virtio-net
      // header, so the veth stacks' TCP super-frames and partial checksums cross it intact.
      await exec(['ovs-vsctl', `--db=${daemon.db}`, '--retry', '--timeout=20', '--no-wait', 'init', '--', 'set', 'Open_vSwitch', '.', 'other_config:userspace-tso-enable=true'], { env });
      children.push(await daemon.launchVswitchd());
      return daemon;
    } catch (e) {
      await daemon.stop();
      throw e;
    }
  }

  /** Kill ovs-vswitchd (SIGKILL: a crash, its flow tables lost) and start a new one on the same database. */
  async restartVswitchd(): Promise<void> {
    await stopChild(this.children[1], 0);
    this.children[1] = await this.launchVswitchd();
  }

  /** SIGTERM both daemons (vswitchd first), SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    for (const c of [...this.children].reverse()) await stopChild(c, graceMs);
  }
}

async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(child.pid!, sig);
    } catch {
      // already gone
    }
  };
  signal('SIGTERM');
  const timer = setTimeout(() => signal('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}
