/*
 * The forwarders bench/e2e compares, each started inside L-dp (pinned to CPU 1 when it is a
 * process) and stopped after its round:
 *   sfc-afpacket, sfc-cap  `sfc serve` with the lab's chain config (chain) or a ports-only config
 *                          (one hop: the dataplane as a plain L2 forwarder)
 *   ovs                    ovsdb-server + ovs-vswitchd (datapath_type=netdev) with run directory in
 *                          the bench's temp folder; one-hop port-to-port flows, or the chain as
 *                          select groups (dp_hash over the L4 five-tuple) rewriting eth_dst to the
 *                          instance, re-classified on SF egress, delivered to the server with the
 *                          client's source MAC restored
 *   ovs-tso                the same hand-written flows on an ovs-vswitchd set up as sfc's own
 *                          (userspace-tso-enable=true: AF_PACKET with virtio-net headers), so
 *                          that sfc-ovs against it compares the renderings alone
 *   sfc-ovs                `sfc serve --driver ovs`: the same config rendered by the ovs driver
 *                          into its private ovs-vswitchd (dp_hash select groups, flows pinned in conntrack)
 *   netsniff-ng            its AF_PACKET ring forwarder, cli0 -> srv0 (one hop)
 *   tc                     clsact ingress u32 match-all + mirred egress redirect cli0 -> srv0 (one
 *                          hop; runs in softirq on the sender's CPU, so no process CPU figure)
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { CLIENT, SERVER, netnsExec, netnsSpawn, run, type Lab } from '../../src/lab/topology.js';
import { stopGroup } from './measure.js';

export type Topology = 'one-hop' | 'chain';

export interface BenchEnv {
  lab: Lab;
  /** Temporary directory for configs, state files and OVS's run directory. */
  dir: string;
  /** Ports-only config (client, server) for the one-hop topology. */
  oneHopConfig: string;
}

export interface Running {
  /** The process whose CPU time is charged to the forwarder, or null (in-kernel). */
  pid: number | null;
  /** Extra facts for the result row, read just before stop (e.g. per-instance shares). */
  detail?(): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

export interface Forwarder {
  name: string;
  topologies: Topology[];
  /** Also measured with TCP (iperf3 through the chain, endpoints' offloads on). */
  tcp?: boolean;
  start(env: BenchEnv, topology: Topology): Promise<Running>;
}

const FORWARDER_CPU = 1;
const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

/** Resolve when `pattern` shows up on the child's stdout or stderr; reject on exit or timeout. */
function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => fail(`no '${pattern.source}' within ${timeoutMs} ms`), timeoutMs);
    const onData = (d: Buffer) => {
      seen = (seen + d.toString()).slice(-4000);
      if (pattern.test(seen)) done();
    };
    const onExit = (code: number | null) => fail(`exited (${code}) before it was ready`);
    const cleanup = () => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      // keep draining so a chatty child never blocks on a full pipe
      child.stdout?.resume();
      child.stderr?.resume();
    };
    const done = () => {
      cleanup();
      resolve();
    };
    const fail = (why: string) => {
      cleanup();
      reject(new Error(`${what}: ${why}${seen.trim() ? `: ${seen.trim().split('\n').slice(-5).join(' | ')}` : ''}`));
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

/**
 * `sfc serve --backend <backend>`; `variant` names a row with extra environment or arguments (e.g.
 * afxdp with need_wakeup on, or without SF health checks, whose probes and timer share the
 * forwarder's CPU). The afxdp rows check the log: a silent fallback to AF_PACKET would be mislabelled.
 */
function sfc(backend: 'afpacket' | 'cap' | 'afxdp', variant?: { suffix: string; env?: Record<string, string>; args?: string[] }): Forwarder {
  let serial = 0;
  const name = `sfc-${backend}${variant ? `-${variant.suffix}` : ''}`;
  return {
    name,
    topologies: ['one-hop', 'chain'],
    tcp: backend !== 'cap',
    async start(env, topology) {
      const config = topology === 'chain' ? env.lab.configPath : env.oneHopConfig;
      const state = join(env.dir, `sfc-state-${name}-${++serial}.json`); // fresh: --config seeds an empty state only
      const argv = [process.execPath, CLI, 'serve', '--config', config, '--state', state, '--backend', backend];
      argv.push('--driver', 'userspace', '--listen', '127.0.0.1:0', ...(variant?.args ?? []));
      const spawnEnv = variant?.env ? { ...process.env, ...variant.env } : undefined;
      const child = await netnsSpawn(env.lab.name, env.lab.dpNs, argv, { cpu: FORWARDER_CPU, detached: true, env: spawnEnv });
      try {
        await waitForOutput(child, backend === 'afxdp' ? /attached \(AF_XDP[^]*listening on http:\/\/\S+|listening on http:\/\/\S+[^]*attached \(AF_XDP/ : /listening on http:\/\/\S+/, 30_000, `sfc serve --backend ${backend}`);
      } catch (e) {
        await stopGroup(child, 'SIGTERM');
        throw e;
      }
      return { pid: child.pid!, stop: () => stopGroup(child, 'SIGTERM', 5000) };
    },
  };
}

/**
 * `sfc serve --driver ovs`: the lab's config rendered by the ovs driver into its private
 * ovs-vswitchd (started by sfc inside L-dp, inheriting the CPU pin); the forwarder's CPU time is
 * ovs-vswitchd's (sfc itself idles once the rendering is applied).
 */
const sfcOvs: Forwarder = {
  name: 'sfc-ovs',
  topologies: ['one-hop', 'chain'],
  tcp: true,
  async start(env, topology) {
    const config = topology === 'chain' ? env.lab.configPath : env.oneHopConfig;
    const state = join(env.dir, `sfc-ovs-${Date.now()}`, 'state.json'); // fresh: its private OVS lives beside it
    const argv = [process.execPath, CLI, 'serve', '--config', config, '--state', state, '--driver', 'ovs', '--listen', '127.0.0.1:0'];
    const child = await netnsSpawn(env.lab.name, env.lab.dpNs, argv, { cpu: FORWARDER_CPU, detached: true });
    try {
      await waitForOutput(child, /listening on http:\/\/\S+/, 60_000, 'sfc serve --driver ovs');
    } catch (e) {
      await stopGroup(child, 'SIGTERM');
      throw e;
    }
    const { stdout } = await run(['pgrep', '-P', String(child.pid), '-x', 'ovs-vswitchd']);
    return { pid: Number(stdout.trim()), stop: () => stopGroup(child, 'SIGTERM', 10_000) };
  },
};

/** OpenFlow 1.5 groups and flows equivalent to the lab's chain (or one hop: port to port). */
export function ovsRules(lab: Lab, topology: Topology, ofport: (ifname: string) => number): { groups: string[]; flows: string[] } {
  const flows = [
    `priority=10,in_port=${ofport(CLIENT.dpIf)},actions=output:${ofport(SERVER.dpIf)}`,
    `priority=10,in_port=${ofport(SERVER.dpIf)},actions=output:${ofport(CLIENT.dpIf)}`,
  ];
  const groups: string[] = [];
  if (topology === 'one-hop' || lab.hops === 0) return { groups, flows };
  for (let h = 1; h <= lab.hops; h++) {
    const buckets = lab.sfs
      .filter((s) => s.hop === h)
      .map((s, i) => `bucket=bucket_id:${i},actions=set_field:${s.ingressMac}->eth_dst,output:${ofport(s.ingressIf)}`);
    groups.push(`group_id=${h},type=select,selection_method=dp_hash,selection_method_param=0,${buckets.join(',')}`);
  }
  flows.push(`priority=100,ip,in_port=${ofport(CLIENT.dpIf)},nw_dst=${SERVER.ip},actions=group:1`);
  for (const s of lab.sfs) {
    const next =
      s.hop < lab.hops
        ? `group:${s.hop + 1}`
        : `set_field:${CLIENT.mac}->eth_src,set_field:${SERVER.mac}->eth_dst,output:${ofport(SERVER.dpIf)}`;
    flows.push(`priority=100,ip,in_port=${ofport(s.egressIf)},actions=${next}`);
  }
  return { groups, flows };
}

/**
 * OVS netdev with `system` ports (raw sockets), or with `afxdp` ports (native XDP, need_wakeup off,
 * the PMD thread on the forwarder's CPU; ovs-vswitchd in a private mount namespace with its own
 * bpffs, which libxdp needs). `tso`: userspace TSO on, as sfc's own OVS daemon sets it.
 */
function ovs(ports: 'system' | 'afxdp', tso = false): Forwarder {
  return {
    name: ports === 'afxdp' ? 'ovs-afxdp' : tso ? 'ovs-tso' : 'ovs',
    topologies: ['one-hop', 'chain'],
    async start(env, topology) {
      const { lab } = env;
      const dir = join(env.dir, `ovs-${Date.now()}`);
      await mkdir(dir, { recursive: true });
      const ovsEnv = { ...process.env, OVS_RUNDIR: dir, OVS_DBDIR: dir, OVS_LOGDIR: dir };
      const db = `unix:${join(dir, 'db.sock')}`;
      await run(['ovsdb-tool', 'create', join(dir, 'conf.db'), '/usr/share/openvswitch/vswitch.ovsschema']);
      const common = ['--no-chdir', '-vconsole:off', '-vfile:info'];
      const children: ChildProcess[] = [];
      const stop = async () => {
        for (const c of [...children].reverse()) await stopGroup(c, 'SIGTERM', 5000);
        await netnsExec(lab.dpNs, ['ip', 'link', 'del', 'br0'], { check: false }); // the bridge's internal tap
      };
      try {
        const dbArgs = [join(dir, 'conf.db'), `--remote=p${db}`, `--unixctl=${join(dir, 'ovsdb-server.ctl')}`];
        dbArgs.push(`--log-file=${join(dir, 'ovsdb-server.log')}`, ...common);
        children.push(await netnsSpawn(lab.name, lab.dpNs, ['ovsdb-server', ...dbArgs], { env: ovsEnv, detached: true, stdio: 'ignore' }));
        const tsoConfig = tso ? ['--', 'set', 'Open_vSwitch', '.', 'other_config:userspace-tso-enable=true'] : [];
        await run(['ovs-vsctl', `--db=${db}`, '--retry', '--timeout=20', '--no-wait', 'init', ...tsoConfig], { env: ovsEnv });
        const vsArgs = [db, `--unixctl=${join(dir, 'ovs-vswitchd.ctl')}`, `--log-file=${join(dir, 'ovs-vswitchd.log')}`, ...common];
        const withBpffs = ['unshare', '-m', 'sh', '-c', 'mount -t bpf bpf /sys/fs/bpf && exec "$0" "$@"'];
        const vswitchd = await netnsSpawn(lab.name, lab.dpNs, [...(ports === 'afxdp' ? withBpffs : []), 'ovs-vswitchd', ...vsArgs], {
          env: ovsEnv,
          cpu: FORWARDER_CPU,
          detached: true,
          stdio: 'ignore',
        });
        children.push(vswitchd);
        const ifaces = topology === 'chain' ? lab.dpInterfaces : [CLIENT.dpIf, SERVER.dpIf];
        const ofport = (ifname: string) => lab.dpInterfaces.indexOf(ifname) + 1;
        const vsctl = ['ovs-vsctl', `--db=${db}`, '--timeout=30', 'add-br', 'br0'];
        vsctl.push('--', 'set', 'bridge', 'br0', 'datapath_type=netdev', 'fail-mode=secure', 'protocols=OpenFlow15');
        if (ports === 'afxdp') vsctl.push('--', 'set', 'Open_vSwitch', '.', `other_config:pmd-cpu-mask=${(1 << FORWARDER_CPU).toString(16)}`);
        const portType = ports === 'afxdp' ? ['type=afxdp', 'options:xdp-mode=native', 'options:use-need-wakeup=false'] : [];
        for (const p of ifaces) vsctl.push('--', 'add-port', 'br0', p, '--', 'set', 'interface', p, `ofport_request=${ofport(p)}`, ...portType);
        await run(vsctl, { env: ovsEnv });
        const rules = ovsRules(lab, topology, ofport);
        const ofctl = (cmd: string, lines: string[]) => {
          const file = join(dir, `${cmd}.txt`);
          return writeFile(file, lines.join('\n') + '\n').then(() =>
            run(['ovs-ofctl', '-O', 'OpenFlow15', cmd, 'br0', file], { env: ovsEnv }),
          );
        };
        if (rules.groups.length) await ofctl('add-groups', rules.groups);
        await ofctl('add-flows', rules.flows);
        return {
          pid: vswitchd.pid!,
          async detail() {
            if (!rules.groups.length) return {};
            const { stdout } = await run(['ovs-ofctl', '-O', 'OpenFlow15', 'dump-group-stats', 'br0'], { env: ovsEnv });
            return { instance_share: groupShares(stdout) };
          },
          stop,
        };
      } catch (e) {
        await stop();
        throw e;
      }
    },
  };
}

/** Per group, each bucket's share of the group's packets (from ovs-ofctl dump-group-stats). */
export function groupShares(text: string): Record<string, number[]> {
  const shares: Record<string, number[]> = {};
  for (const line of text.split('\n')) {
    const id = /group_id=(\d+)/.exec(line)?.[1];
    if (!id) continue;
    const counts = [...line.matchAll(/bucket\d+:packet_count=(\d+)/g)].map((m) => Number(m[1]));
    const total = counts.reduce((a, b) => a + b, 0);
    shares[`group${id}`] = counts.map((c) => (total ? Math.round((c / total) * 1000) / 1000 : 0));
  }
  return shares;
}

const netsniff: Forwarder = {
  name: 'netsniff-ng',
  topologies: ['one-hop'],
  async start(env) {
    const argv = ['netsniff-ng', '--in', CLIENT.dpIf, '--out', SERVER.dpIf, '--silent', '--no-sock-mem', '--notouch-irq'];
    argv.push('--ring-size', '32MiB'); // its default, sized from the 10 Gbit/s veth speed, cannot be allocated
    const child = await netnsSpawn(env.lab.name, env.lab.dpNs, argv, { cpu: FORWARDER_CPU, detached: true });
    try {
      await waitForOutput(child, /Running/, 10_000, 'netsniff-ng');
    } catch (e) {
      await stopGroup(child, 'SIGINT');
      throw e;
    }
    await sleep(200); // rings set up: "Running" is printed just before the loop
    return { pid: child.pid!, stop: () => stopGroup(child, 'SIGINT') };
  },
};

const tc: Forwarder = {
  name: 'tc',
  topologies: ['one-hop'],
  async start(env) {
    const ns = env.lab.dpNs;
    const tcIn = (...args: string[]) => netnsExec(ns, ['tc', ...args]);
    await tcIn('qdisc', 'add', 'dev', CLIENT.dpIf, 'clsact');
    const matchAll = ['protocol', 'all', 'u32', 'match', 'u32', '0', '0']; // cls_matchall may not be built
    await tcIn('filter', 'add', 'dev', CLIENT.dpIf, 'ingress', ...matchAll, 'action', 'mirred', 'egress', 'redirect', 'dev', SERVER.dpIf);
    return {
      pid: null,
      stop: async () => {
        await netnsExec(ns, ['tc', 'qdisc', 'del', 'dev', CLIENT.dpIf, 'clsact'], { check: false });
      },
    };
  },
};

export const FORWARDERS: Forwarder[] = [
  sfc('afpacket'),
  sfc('afxdp'),
  sfc('afxdp', { suffix: 'wakeup', env: { SFC_AFXDP_NEED_WAKEUP: '1' } }),
  // Native XDP: the kernel turns TSO off on the veth peers, whose stacks then segment TCP themselves.
  sfc('afxdp', { suffix: 'nogso', env: { SFC_AFXDP_GSO: '0' } }),
  sfc('afxdp', { suffix: 'inplace', args: ['--frames-in-place'] }),
  sfc('afxdp', { suffix: 'nohealth', args: ['--health-interval', '0'] }),
  // Polls 2 ms after each frame: at the latency run's 1,000 pps it never sleeps (like OVS's PMD
  // thread). The main thread shares its CPU: SF health checks every 100 ms (default) cost it ~0.7 ms
  // of CPU each; every 1 s or none, it hardly runs.
  sfc('afxdp', { suffix: 'busypoll', args: ['--busy-poll-us', '2000'] }),
  sfc('afxdp', { suffix: 'busypoll-nogso', args: ['--busy-poll-us', '2000'], env: { SFC_AFXDP_GSO: '0' } }),
  sfc('afxdp', { suffix: 'busypoll-h1000', args: ['--busy-poll-us', '2000', '--health-interval', '1000'] }),
  sfc('afxdp', { suffix: 'busypoll-nohealth', args: ['--busy-poll-us', '2000', '--health-interval', '0'] }),
  sfc('cap'),
  sfcOvs,
  ovs('system'),
  ovs('system', true),
  ovs('afxdp'),
  netsniff,
  tc,
];
