/*
 * `sfc demo`: the first command to run. It builds the namespace lab (client, server, two hops of
 * two SF instances, a symmetric chain), starts the dataplane inside L-dp, runs real TCP and UDP
 * flows between client and server while a live table shows what each SF instance carries, then
 * shows, from evidence recorded inside the SF namespaces (flowlog.ts), that every flow stayed on
 * one instance per hop and that replies crossed the same instances in reverse, and ends with a
 * verdict. The end of the run, an error or Ctrl-C removes everything it started (the end keeps
 * the lab with --keep). Exit code 0 when every check passed, 1 otherwise, 130 when interrupted.
 */
import type { ChildProcess } from 'node:child_process';
import { BACKEND_NAMES, DEFAULT_BACKEND, backendChoices, parseBackend, type RegisteredBackend } from '../dataplane/io/registry.js';
import { installFlowLog, readFlowLog, repliesRetraced, stayedOnOnePath, traceFlows, type FlowTrace } from '../lab/flowlog.js';
import { buildFrame, count, LiveView, renderFlowMap, renderVerdict, type Check, type Frame, type Snapshot } from '../lab/demo-view.js';
import { checkOvsInstalled } from '../control/drivers/ovs/daemon.js';
import { LabDataplane, labUpFor, labUpForOvs, metric, startTraffic, stopProcess, type LabInfo } from '../lab/harness.js';
import { detachHostsLab, hostsLabRunning } from '../lab/hosts.js';
import { CLIENT, SERVER, describeLab, labDown, run } from '../lab/topology.js';
import type { TcpClientResult, TcpServerResult, UdpRecvResult, UdpSendResult } from '../lab/traffic.js';
import { parseOptions, UsageError, type Command } from '../util/args.js';

const TCP_FLOWS = 10;
const TCP_BYTES = 10_000_000;
const TCP_PORT = 5001;
const UDP_FLOWS = 8;
const UDP_PPS = 2000;
const UDP_SPORT = 20000;
const UDP_PORT = 5002;
/** UDP loss the verdict tolerates (datagrams through userspace on a shared 2-core machine). */
const UDP_LOSS_OK = 0.01;

class Interrupted extends Error {}

const say = (line = '') => process.stdout.write(line + '\n');

interface DemoOptions {
  name: string;
  /** userspace: the sfc dataplane on `backend`; ovs: a private Open vSwitch renders the chain. */
  driver: 'userspace' | 'ovs';
  backend: RegisteredBackend;
  seconds: number;
  keep: boolean;
  /** Spread the chain over this many hosts (src/lab/hosts.ts: one sfc agent each, VXLAN between them); 0: one dataplane. */
  hosts: number;
}

/** What runs the chain, in words. */
const dataplaneWords = (o: DemoOptions) => (o.driver === 'ovs' ? 'Open vSwitch (sfc serve --driver ovs: flows and select groups)' : `the sfc dataplane (backend ${o.backend.name})`);

function intro(lab: LabInfo, o: DemoOptions): void {
  const hop = (h: number) => lab.sfs.filter((s) => s.hop === h).map((s) => s.ns).join(', ');
  const link = lab.dpLink === 'tap' ? 'TAP devices bridged to veth pairs' : 'veth pairs';
  say('sfc demo: a service function chain on this machine, with real TCP and UDP.');
  say();
  say(`It builds lab '${lab.name}' out of network namespaces:`);
  say(`  ${lab.clientNs} (${CLIENT.ip}) and ${lab.serverNs} (${SERVER.ip})   real Linux TCP/IP stacks`);
  say(`  hop 1: ${hop(1)}`);
  say(`  hop 2: ${hop(2)}   service functions: namespaces that route packets, like SF VMs`);
  say(`  ${lab.dpNs}   ${dataplaneWords(o)}, wired to all of them by ${link}`);
  say('and loads chain pc1: every packet from client to server crosses hop 1 then hop 2, with one');
  say('instance per hop chosen per flow; the chain is symmetric, so the server\'s replies cross the');
  say('same two instances in reverse.');
  say();
}

const MEANING = [
  'What the table shows:',
  '  packets steered   frames the dataplane sent to that SF instance (both directions)',
  '  pkt/s             the same per second, since the previous refresh',
  '  flows the SF saw  distinct TCP/UDP flows recorded by nftables inside the SF namespace itself:',
  '                    forward = arriving from the client side, replies = from the server side',
];

class Demo {
  private readonly o: DemoOptions;
  /** Traffic tools started, stopped at the end. */
  private readonly children: ChildProcess[] = [];
  private dataplane: LabDataplane | null = null;
  private multi: Awaited<ReturnType<typeof hostsLabRunning>> | null = null;
  private built = false;
  private stopRequested = false;
  private interrupt: () => void = () => {};
  private readonly interrupted = new Promise<never>((_, reject) => (this.interrupt = () => reject(new Interrupted())));

  constructor(o: DemoOptions) {
    this.o = o;
    this.interrupted.catch(() => {});
  }

  async run(): Promise<number> {
    let signals = 0;
    const onSignal = () => {
      if (++signals > 1) {
        process.stderr.write(`\nsfc demo: still cleaning up; if it hangs, run: sfc lab down --name ${this.o.name}\n`);
        process.exit(130);
      }
      process.stderr.write('\nsfc demo: interrupted; tearing the lab down\n');
      this.stopRequested = true;
      this.interrupt();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    let code = 1;
    try {
      code = await this.steps();
    } catch (e) {
      if (!(e instanceof Interrupted)) throw e;
      code = 130;
    } finally {
      await this.cleanup();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    return code;
  }

  /** Throws Interrupted if Ctrl-C came meanwhile (after a step that cannot stop half-way). */
  private check(): void {
    if (this.stopRequested) throw new Interrupted();
  }

  /** Waits for `p` unless Ctrl-C comes first (then p may still settle; its failure is ignored). */
  private until<T>(p: Promise<T>): Promise<T> {
    p.catch(() => {});
    return Promise.race([p, this.interrupted]);
  }

  private async steps(): Promise<number> {
    const { o } = this;
    const shape = { name: o.name, hops: 2, instances: 2, symmetric: true };
    intro(describeLab({ ...shape, dpLink: o.backend.lab.link }), o);

    let t = performance.now();
    process.stdout.write('[1/4] building the lab ... ');
    // Building and starting are not interrupted half-way: a signal is acted on right after them.
    const multi = o.hosts > 0 ? await hostsLabRunning({ ...shape, hosts: o.hosts }) : null;
    const lab = multi?.lab ?? (o.driver === 'ovs' ? await labUpForOvs(shape) : await labUpFor(o.backend, shape));
    this.built = true;
    this.multi = multi;
    await installFlowLog(lab);
    say(`done (${seconds(t)}, chain config ${lab.configPath})`);
    if (o.driver === 'userspace' && o.backend.lab.offloadsOff) {
      say(`      (${o.backend.name} backend: endpoint and SF offloads off, so their stacks finish checksums themselves)`);
    }
    this.check();

    t = performance.now();
    let dp: LabDataplane;
    if (multi) {
      dp = multi.api;
      const where = multi.lab.hosts.map((h) => `${h.name}: ${h.interfaces.join(' ')}`).join('; ');
      say(`[2/4] ${multi.lab.hosts.length} hosts, one sfc agent each over etcd ${multi.lab.store} (${where}), the API (sfc serve --store) at ${dp.url} inside ${lab.dpNs}; VXLAN between the hosts`);
      say('      (the table counts what the SFs saw: the agents publish no per-instance packet counts to the API)');
    } else {
      const serve = o.driver === 'ovs' ? '--driver ovs' : `--backend ${o.backend.name}`;
      process.stdout.write(`[2/4] starting the dataplane (sfc serve ${serve}, inside ${lab.dpNs}) ... `);
      dp = await LabDataplane.start(lab, o.driver === 'ovs' ? { driver: 'ovs', config: lab.configPath } : { backend: o.backend.name, config: lab.configPath });
      say(`API at ${dp.url} (pid ${dp.pid}, ${seconds(t)})`);
    }
    this.dataplane = dp;
    this.check();

    say(`[3/4] traffic: ${TCP_FLOWS} concurrent TCP flows of ${TCP_BYTES / 1e6} MB each (checked byte for byte by the server),`);
    say(`      then ${UDP_FLOWS} UDP flows (source ports ${UDP_SPORT}-${UDP_SPORT + UDP_FLOWS - 1}) at ${count(UDP_PPS)} datagrams/s for ${o.seconds} s`);
    say();
    for (const line of MEANING) say(line);
    say();
    const outcome = await this.traffic(lab, dp);

    say();
    say('[4/4] where each flow went, as recorded inside the SF namespaces (sf<hop><instance>):');
    const log = await readFlowLog(lab);
    const traces = traceFlows(lab, log);
    for (const line of renderFlowMap(traces)) say(line);
    say();
    const checks = verdictChecks(outcome, traces, multi !== null);
    for (const line of renderVerdict(checks)) say(line);
    return checks.every((c) => c.ok) ? 0 : 1;
  }

  /**
   * Two phases under one live view: the TCP transfers (bulk, as fast as the path allows), then
   * the UDP flows at a steady rate. One after the other, so that the UDP figures show the path,
   * not its congestion by the TCP transfers (the cap backend's libpcap rings are small).
   */
  private async traffic(lab: LabInfo, dp: LabDataplane): Promise<TrafficOutcome> {
    const { o } = this;
    const start = async <R>(ns: string, argv: string[]) => {
      const r = await startTraffic<R>(lab, ns, argv);
      this.children.push(r.child);
      return r;
    };
    // undefined while running, null when the tool ended without a result.
    const got: Results = {};
    let poke = () => {};
    const collect = <K extends keyof Results>(k: K, p: Promise<NonNullable<Results[K]>>) =>
      void p.then((r) => (got[k] = r), () => (got[k] = null)).then(() => poke());

    const tcpServer = await start<TcpServerResult>(lab.serverNs, ['tcp-server', '--listen', `${SERVER.ip}:${TCP_PORT}`, '--flows', String(TCP_FLOWS), '--timeout', '120']);
    await this.until(tcpServer.listening);
    const began = performance.now();
    const tcpClient = await start<TcpClientResult>(lab.clientNs, [
      'tcp-client', '--connect', `${SERVER.ip}:${TCP_PORT}`, '--flows', String(TCP_FLOWS), '--bytes', String(TCP_BYTES), '--timeout', '120',
    ]);
    collect('tcpServer', tcpServer.result);
    collect('tcpClient', tcpClient.result);
    let udpStarted = false;

    const tty = process.stdout.isTTY === true;
    const view = new LiveView(process.stdout, tty);
    const title = `lab '${lab.name}' · ${o.driver === 'ovs' ? 'driver ovs' : `backend ${o.backend.name}`}`;
    let prev: Snapshot | null = null;
    for (;;) {
      if (!udpStarted && got.tcpServer !== undefined && got.tcpClient !== undefined) {
        udpStarted = true;
        const udpRecv = await start<UdpRecvResult>(lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:${UDP_PORT}`, '--seconds', String(o.seconds + 30), '--idle', '2']);
        await this.until(udpRecv.listening);
        const udpSend = await start<UdpSendResult>(lab.clientNs, [
          'udp-send', '--connect', `${SERVER.ip}:${UDP_PORT}`, '--flows', String(UDP_FLOWS), '--sport', String(UDP_SPORT),
          '--pps', String(UDP_PPS), '--seconds', String(o.seconds),
        ]);
        collect('udpRecv', udpRecv.result);
        collect('udpSend', udpSend.result);
      }
      const cur: Snapshot = { at: performance.now(), samples: await this.until(dp.metrics()), log: await this.until(readFlowLog(lab)) };
      const frame = buildFrame(lab, title, began, prev, cur, trafficStatus(got, o));
      view.show(frame);
      prev = cur;
      if (got.udpSend !== undefined && got.udpRecv !== undefined) return { ...got, frame, drops: metric(cur.samples, 'sfc_drops_total') };
      if (!dp.running) throw new Error(`the dataplane exited:\n${dp.logTail()}`);
      await this.until(Promise.race([sleep(tty ? 1000 : 2000), new Promise<void>((r) => (poke = r))]));
    }
  }

  private async cleanup(): Promise<void> {
    await Promise.all(this.children.map((c) => stopProcess(c, 2000)));
    if (!this.built) return;
    if (this.o.keep && !this.stopRequested && this.dataplane?.running) {
      if (this.multi) detachHostsLab(this.multi);
      else this.dataplane.detach();
      say();
      say(`lab '${this.o.name}' kept; the dataplane (pid ${this.dataplane.pid}) still runs in ${this.o.name}-dp. Try:`);
      say(`  ip netns exec ${this.o.name}-client ping -c 3 ${SERVER.ip}`);
      say(`  ip netns exec ${this.o.name}-dp curl -s ${this.dataplane.url}/metrics | grep sfc_instance`);
      say(`  sfc lab down --name ${this.o.name}      (removes the lab and stops the dataplane)`);
      return;
    }
    process.stdout.write(`\ntearing lab '${this.o.name}' down ... `);
    await this.dataplane?.stop();
    await labDown(this.o.name);
    say('done');
  }
}

interface Results {
  tcpClient?: TcpClientResult | null;
  tcpServer?: TcpServerResult | null;
  udpSend?: UdpSendResult | null;
  udpRecv?: UdpRecvResult | null;
}

interface TrafficOutcome extends Results {
  /** The last refresh. */
  frame: Frame;
  drops: number;
}

function trafficStatus(got: Results, o: DemoOptions): string[] {
  const tcp =
    got.tcpServer === undefined
      ? 'running'
      : `${got.tcpServer?.flows.filter((f) => f.ok).length ?? 0}/${TCP_FLOWS} flows arrived byte-exact` +
        (got.tcpClient ? `, slowest ${(Math.max(...got.tcpClient.flows.map((f) => f.ms)) / 1000).toFixed(1)} s` : '');
  const udp =
    got.udpRecv !== undefined
      ? `${count(got.udpRecv?.received ?? 0)} of ${count(got.udpSend?.sent ?? 0)} datagrams received`
      : got.udpSend !== undefined
        ? `${count(got.udpSend?.sent ?? 0)} sent, receiver finishing`
        : got.tcpServer !== undefined
          ? `running (${o.seconds} s)`
          : 'starts when the TCP transfers are done';
  return [`TCP: ${tcp}`, `UDP: ${udp}`];
}

function verdictChecks(t: TrafficOutcome, traces: FlowTrace[], multiHost: boolean): Check[] {
  const exact = t.tcpServer?.flows.filter((f) => f.ok).length ?? 0;
  const sent = t.udpSend?.sent ?? 0;
  const received = t.udpRecv?.received ?? 0;
  const udpFlows = t.udpRecv?.flows.filter((f) => f.received > 0).length ?? 0;
  const lost = sent > 0 ? (sent - received) / sent : 1;
  const rows = t.frame.rows;
  const tcpTraces = traces.filter((x) => x.flow.startsWith('tcp/'));
  const stayed = traces.filter(stayedOnOnePath).length;
  const retraced = tcpTraces.filter(repliesRetraced).length;
  return [
    {
      ok: exact === TCP_FLOWS && t.tcpClient?.ok === true,
      text: `${exact}/${TCP_FLOWS} TCP flows byte-exact (${TCP_BYTES / 1e6} MB each, SHA-256 compared by the server)`,
    },
    {
      ok: udpFlows === UDP_FLOWS && lost <= UDP_LOSS_OK,
      text: `${udpFlows}/${UDP_FLOWS} UDP flows arrived: ${count(received)} of ${count(sent)} datagrams (${(Math.max(0, lost) * 100).toFixed(2)}% lost)`,
    },
    {
      ok: rows.every((r) => (multiHost || r.packets > 0) && r.flowsIn > 0),
      text: `every instance carried traffic: ${rows.map((r) => `${r.portPair} ${count(r.packets)} packets / ${r.flowsIn} flows`).join(', ')}`,
    },
    {
      ok: traces.length === TCP_FLOWS + UDP_FLOWS && stayed === traces.length,
      text: `${stayed}/${traces.length} flows stayed on one instance per hop, handed from their hop-1 instance to their hop-2 instance`,
    },
    {
      ok: tcpTraces.length === TCP_FLOWS && retraced === tcpTraces.length,
      text: `replies of ${retraced}/${tcpTraces.length} TCP flows crossed the same instances in reverse (hop 2, then hop 1)`,
    },
    { ok: true, text: `the dataplane dropped ${count(t.drops)} frames (sfc_drops_total)` },
  ];
}

/** The system tools the run needs, with the Debian package that has each. */
async function requireTools(backend: RegisteredBackend, driver: DemoOptions['driver']): Promise<void> {
  const tools: [string, string][] = [['ip', 'iproute2'], ['nft', 'nftables']];
  if (backend.lab.offloadsOff) tools.push(['ethtool', 'ethtool']);
  if (driver === 'ovs') checkOvsInstalled();
  for (const [tool, pkg] of tools) {
    const { code } = await run(['sh', '-c', `command -v ${tool}`], { check: false });
    if (code !== 0) throw new Error(`needs '${tool}' (Debian package ${pkg}; scripts/setup.sh installs everything)`);
  }
}

const seconds = (since: number) => `${((performance.now() - since) / 1000).toFixed(1)} s`;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export const command: Command = {
  summary: 'build the lab, run real TCP and UDP through a two-hop chain, show where flows go, tear it down',
  usage: `[--name L] [--driver userspace|ovs] [--backend ${BACKEND_NAMES.join('|')}] [--seconds S] [--keep]
  --name L       lab name: namespaces L-dp, L-client, L-server, L-sf11 ... (default demo)
  --driver D     userspace (default): the sfc dataplane; ovs: sfc serve --driver ovs renders the chain
                 into a private Open vSwitch (Debian's openvswitch-switch) instead
  --backend B    the dataplane's packet I/O: ${backendChoices()}
  --seconds S    how long the UDP flows run (default 10); the TCP transfers run alongside
  --keep         at the end, leave the lab and the dataplane running (remove: sfc lab down --name L)
  --hosts N      the chain over N hosts (sfc lab up --hosts: client and server on h1, hop 1 on h2,
                 hop 2 on h3 ..., an sfc agent per host, etcd, VXLAN between them; AF_PACKET)
Needs root (network namespaces). Ctrl-C stops and removes everything it started.`,
  async run(argv) {
    const { values } = parseOptions(argv, {
      name: { type: 'string', default: 'demo' },
      driver: { type: 'string', default: 'userspace' },
      backend: { type: 'string', default: DEFAULT_BACKEND },
      seconds: { type: 'string', default: '10' },
      keep: { type: 'boolean', default: false },
      hosts: { type: 'string' },
    });
    const hosts = values.hosts === undefined ? 0 : Number(values.hosts);
    if (values.hosts !== undefined && (!Number.isInteger(hosts) || hosts < 2 || hosts > 9)) throw new UsageError(`--hosts must be 2..9, got '${values.hosts}'`);
    const backend = parseBackend(values.backend);
    const driver = values.driver;
    if (driver !== 'userspace' && driver !== 'ovs') throw new UsageError(`--driver must be userspace or ovs, got '${driver}'`);
    if (driver === 'ovs' && hosts > 0) throw new UsageError('--hosts runs sfc agents (userspace): not with --driver ovs');
    const secs = Number(values.seconds);
    if (!Number.isInteger(secs) || secs < 1 || secs > 3600) throw new UsageError(`--seconds must be 1..3600, got '${values.seconds}'`);
    if (process.getuid?.() !== 0) throw new Error('needs root: it creates network namespaces (run it with sudo)');
    await requireTools(backend, driver);
    try {
      describeLab({ name: values.name });
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    return new Demo({ name: values.name, driver, backend, seconds: secs, keep: values.keep, hosts }).run();
  },
};
