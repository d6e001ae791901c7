/*
 * The operator's tools against a real server carrying lab traffic: `sfc top` in a real terminal
 * (tmux), read back from the pane and compared with the server's counters; `sfc trace` journeys
 * compared with `sfc explain --server` for the same packets; `sfc capture` read by tcpdump and
 * tshark; Debian's Prometheus scraping the server, queried for per-instance rates.
 */
import type { ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendNamed } from '../src/dataplane/io/registry.js';
import { distFile, LabDataplane, labUpFor, metric, startTraffic, stopProcess, type Sample, type TrafficRun } from '../src/lab/harness.js';
import { labDown, netnsExec, netnsSpawn, SERVER, type Lab } from '../src/lab/topology.js';
import type { LiveJourney } from '../src/control/journey.js';
import type { UdpRecvResult, UdpSendResult } from '../src/lab/traffic.js';
import { PROBE_PORT } from '../src/dataplane/probe.js';
import { prerequisites } from './support/prereq.js';
import { until } from './support/until.js';

const exec = promisify(execFile);
const LAB = `sfct-op${process.pid}`;
const PPS = 2000;
/** Flows udp-send spreads its packets over (source ports): each hop's FLOWS in sfc top. */
const FLOWS = 16;
const backend = backendNamed('afpacket');
const run = prerequisites('operator tools', { root: true, commands: ['ip', 'nft', 'tmux', 'tcpdump', 'tshark', 'prometheus'] });

const tmux = async (...args: string[]) => (await exec('tmux', ['-L', LAB, ...args])).stdout;

describe.skipIf(!run)('operator tools on a live server', () => {
  let lab: Lab;
  let dp: LabDataplane;
  let recv: TrafficRun<UdpRecvResult>;
  let send: TrafficRun<UdpSendResult>;
  let tmp: string;
  let prometheus: ChildProcess | undefined;
  /** `sfc ARGS` in the dataplane's namespace (where the API listens). */
  const sfc = (...args: string[]) => netnsExec(lab.dpNs, [process.execPath, distFile('cli.js'), ...args, '--server', dp.url]);

  beforeAll(async () => {
    await labDown(LAB);
    tmp = await mkdtemp(join(tmpdir(), 'sfct-op-'));
    lab = await labUpFor(backend, { name: LAB, hops: 2, instances: 2 });
    dp = await LabDataplane.start(lab, { backend: 'afpacket', config: lab.configPath });
    recv = await startTraffic<UdpRecvResult>(lab, lab.serverNs, ['udp-recv', '--listen', `${SERVER.ip}:5353`, '--seconds', '120', '--idle', '30']);
    await recv.listening;
    send = await startTraffic<UdpSendResult>(lab, lab.clientNs, ['udp-send', '--connect', `${SERVER.ip}:5353`, '--flows', String(FLOWS), '--pps', String(PPS), '--seconds', '120']);
    // traffic flows through both hops
    await until('traffic through the chain', async () => ((metric(await dp.metrics(), 'sfc_hop_packets_total', { hop: '2' }) > PPS) ? true : undefined));
  }, 60_000);

  afterAll(async () => {
    await tmux('kill-server').catch(() => undefined);
    if (prometheus) await stopProcess(prometheus);
    send?.child.kill();
    recv?.child.kill();
    await dp?.stop();
    await labDown(LAB);
    await rm(tmp, { recursive: true, force: true });
  });

  it('sfc trace follows live packets through both hops; sfc explain --server tells the same journey', async () => {
    const { stdout } = await sfc('trace', '--match', 'udp and dst port 5353 and src host 10.0.0.1', '--count', '3', '--json', '--timeout', '20');
    const journeys = stdout.trim().split('\n').map((l) => JSON.parse(l) as LiveJourney);
    expect(journeys).toHaveLength(3);
    for (const j of journeys) {
      expect(j.complete).toBe(true);
      expect(j.packet).toMatch(/^udp 10\.0\.0\.1:\d+ > 10\.0\.0\.2:5353 on cli0$/);
      expect(j.steps.map((s) => [s.in, s.verdict, s.hop])).toEqual([
        ['cli0', 'hop', 0],
        [expect.stringMatching(/^sf1\de$/), 'hop', 1],
        [expect.stringMatching(/^sf2\de$/), 'end', -1],
      ]);
      expect(j.steps[0].classifier).toMatch(/^client-server-v4: IPv4 any protocol from 10\.0\.0\.1\/32 to 10\.0\.0\.2\/32/);
      expect(j.steps[2].out).toEqual(['srv0']);
      // the same packet, synthetic, through the server's current state
      const packet = j.packet.replace(/ on cli0$/, '');
      const explained = await sfc('explain', '--in', 'cli0', '--packet', packet, '--dst-mac', SERVER.mac, '--json');
      const e = JSON.parse(explained.stdout) as { steps: LiveJourney['steps']; verdict: string; hops: string[]; out: string[] };
      expect(e.verdict).toBe('chain');
      expect(e.hops).toEqual(j.steps.slice(0, 2).map((s) => s.instance));
      expect(e.steps.map((s) => [s.verdict, s.hop, s.si, s.instance, s.out, s.dstMac])).toEqual(j.steps.map((s) => [s.verdict, s.hop, s.si, s.instance, s.out, s.dstMac]));
    }
    // the text form is explain's
    const text = await sfc('trace', '--match', 'udp dst port 5353', '--count', '1');
    expect(text.stdout).toMatch(/^packet: udp 10\.0\.0\.1:\d+ > 10\.0\.0\.2:5353 on cli0\n 1\. in cli0: classifier /);
    expect(text.stdout).toMatch(/^ {6}chain pc1, path SPI \d+ forward$/m);
    expect(text.stdout).toMatch(/^ 2\. in sf1\de \(from the SF\): hop 2 \(SI 253\): instance pp2\d -> out sf2\di, dst MAC 02:00:00:00:2\d:01$/m);
    expect(text.stdout, text.stdout).toMatch(/^verdict: chain \(chain pc1 via pp1\d, pp2\d\) -> srv0$/m);
    // nothing matches: no journey, and it says so
    const none = await sfc('trace', '--match', 'tcp port 9', '--count', '1', '--timeout', '2');
    expect(none.stdout).toBe('');
    expect(none.stderr).toMatch(/0 of 1 journeys seen within 2 s/);
  }, 60_000);

  it("Prometheus scrapes /metrics; its HTTP API gives each instance's rate, summing to the offered load", async () => {
    const target = new URL(dp.url).host;
    const config = join(tmp, 'prometheus.yml');
    await writeFile(config, `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sfc\n    static_configs:\n      - targets: ['${target}']\n`);
    const listen = '127.0.0.1:19090'; // inside the lab's dataplane namespace: nothing else listens there
    prometheus = await netnsSpawn(lab.name, lab.dpNs, [
      'prometheus', `--config.file=${config}`, `--storage.tsdb.path=${join(tmp, 'tsdb')}`, `--web.listen-address=${listen}`,
    ], { stdio: 'ignore' });
    type Vector = { result: { metric: Record<string, string>; value: [number, string] }[] };
    /** Instant queries through Prometheus's HTTP API (from inside the namespace; undefined: no answer yet). */
    const queries = async (qs: string[]): Promise<(Vector | undefined)[]> => {
      const urls = qs.map((q) => `http://${listen}/api/v1/query?query=${encodeURIComponent(q)}`);
      const script = `Promise.all(${JSON.stringify(urls)}.map((u) => fetch(u).then((r) => r.json()).then((j) => j.data, () => null), () => null)).then((a) => console.log(JSON.stringify(a)))`;
      const { stdout } = await netnsExec(lab.dpNs, [process.execPath, '-e', script]);
      return (JSON.parse(stdout) as (Vector | null)[]).map((v) => v ?? undefined);
    };
    const query = async (q: string) => (await queries([q]))[0];
    // a rate over 4 s once Prometheus holds 5 scrapes of the running counters
    await until('5 scrapes', async () => {
      const v = await query('count_over_time(up{job="sfc"}[10s]) >= 5');
      return v && v.result.length === 1 ? true : undefined;
    }, 30_000);
    const rates = await until('per-instance rates from Prometheus', async () => {
      const v = await query('rate(sfc_instance_packets_total{chain="pc1",hop="1"}[4s])');
      return v && v.result.length === 2 && v.result.every((r) => Number(r.value[1]) > 0) ? v.result : undefined;
    }, 30_000);
    expect(rates.map((r) => r.metric.port_pair).sort()).toEqual(['pp11', 'pp12']);
    expect(rates.map((r) => r.metric.instance)).toEqual([target, target]); // Prometheus's own target label
    const total = rates.reduce((n, r) => n + Number(r.value[1]), 0);
    expect(total, `hop 1 carries the ${PPS} pkt/s sent`).toBeGreaterThan(PPS * 0.8);
    expect(total).toBeLessThan(PPS * 1.2);
    const bytes = await query('sum(rate(sfc_instance_bytes_total{hop="2"}[4s])) / sum(rate(sfc_instance_packets_total{hop="2"}[4s]))');
    expect(Number(bytes?.result[0].value[1]), 'bytes per packet at hop 2').toBeCloseTo(60, -1); // 64-byte frames without FCS
    // every query of the Grafana dashboard answers with series
    const dashboard = JSON.parse(await readFile(new URL('../examples/grafana/sfc-dataplane.json', import.meta.url), 'utf8')) as {
      panels: { title: string; targets: { expr: string }[] }[];
    };
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => `${p.title}: ${t.expr}`));
    const answers = await queries(dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr.replaceAll('$__rate_interval', '4s'))));
    answers.forEach((v, k) => expect(v?.result.length, exprs[k]).toBeGreaterThan(0));
  }, 60_000);

  it('sfc capture writes what the port is sent, after the MAC rewrite, as pcap tcpdump and tshark read', async () => {
    const file = join(tmp, 'sf11-in.pcap');
    await sfc('capture', 'sf11-in', '-w', file, '-c', '20');
    const sf = lab.sfs.find((s) => s.hop === 1 && s.instance === 1)!;
    const { stdout } = await exec('tshark', ['-r', file, '-T', 'fields', '-e', 'eth.dst', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'udp.dstport']);
    const rows = stdout.trim().split('\n');
    expect(rows).toHaveLength(20);
    // the frames go to the SF: its MAC written by the data path; the packet inside unchanged
    for (const r of rows) expect(r.split('\t')).toEqual([sf.ingressMac, '10.0.0.1', '10.0.0.2', '5353']);
    // streamed to stdout into tcpdump
    // (the SF's health probes come back there too, dataplane/probe.ts: left out by tcpdump's filter)
    const piped = await netnsExec(lab.dpNs, ['sh', '-c', `${process.execPath} ${distFile('cli.js')} capture sf11-out -w - -c 20 --server ${dp.url} | tcpdump -nn -e -r - not udp port ${PROBE_PORT}`]);
    const lines = piped.stdout.trim().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(5);
    // what the SF sends back (rx on its egress port): from its out0 MAC, still addressed as it routed it
    for (const l of lines) expect(l).toMatch(new RegExp(`^[\\d:.]+ ${sf.egressMac} > [\\da-f:]+, .* 10\\.0\\.0\\.1\\.\\d+ > 10\\.0\\.0\\.2\\.5353: `));

    // --filter, applied in the workers: only the SF's health probes coming back (a few among the traffic), read by tshark unfiltered
    const probes = join(tmp, 'sf11-out-probes.pcap');
    await sfc('capture', 'sf11-out', '-w', probes, '-c', '3', '--filter', `udp port ${PROBE_PORT}`, '--timeout', '10');
    const got = (await exec('tshark', ['-r', probes, '-T', 'fields', '-e', 'eth.src', '-e', 'udp.srcport', '-e', 'udp.dstport'])).stdout.trim().split('\n');
    expect(got).toEqual(Array(3).fill([sf.egressMac, PROBE_PORT, PROBE_PORT].join('\t')));
    // and the traffic without them, through tcpdump without a filter of its own
    const traffic = await netnsExec(lab.dpNs, ['sh', '-c', `${process.execPath} ${distFile('cli.js')} capture sf11-out -w - -c 50 --filter 'udp and not port ${PROBE_PORT}' --server ${dp.url} | tcpdump -nn -r -`]);
    const shown = traffic.stdout.trim().split('\n');
    expect(shown).toHaveLength(50);
    for (const l of shown) expect(l).toMatch(/ IP 10\.0\.0\.1\.\d+ > 10\.0\.0\.2\.5353: /);
    // a filter that does not compile is a usage error, before any request
    const bad = await netnsExec(lab.dpNs, [process.execPath, distFile('cli.js'), 'capture', 'sf11-out', '-w', '-', '--filter', 'udp port x', '--server', dp.url], { check: false });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--filter: bad match/);
  }, 60_000);

  it('sfc top shows the rates the counters give, in a real terminal, and Ctrl-C leaves it sane', async () => {
    const cli = ['ip', 'netns', 'exec', lab.dpNs, process.execPath, distFile('cli.js'), 'top', '--server', dp.url];
    // an interactive shell in a 100x40 terminal, top started from it as an operator would
    await tmux('new-session', '-d', '-s', 'top', '-x', '100', '-y', '40', 'env PS1=$ bash --norc --noprofile -i');
    await tmux('send-keys', '-t', 'top', cli.join(' '), 'Enter');
    const pane = () => tmux('capture-pane', '-p', '-t', 'top');
    // Counter rates over the same stretch of time as the pane's refreshes.
    const before: Sample[] = await dp.metrics();
    const t0 = Date.now();
    const screen = await until('a refresh with both hops', async () => {
      const text = await pane();
      return /^ {2}hop 2 /m.test(text) && /rx [\d,]+ pkt\/s/.test(text) ? text : undefined;
    });
    const after: Sample[] = await dp.metrics();
    const seconds = (Date.now() - t0) / 1000;

    const shown = (label: string) => {
      // instance rows add: health state, SF time p50 and p99 ("85 µs", "2.10 ms", or "-")
      const time = '(\\d+ µs|[\\d.]+ m?s|-)';
      // hop rows add how many of their instances are up ("2/2")
      const m = new RegExp(`^\\s*${label}\\s+([\\d,.]+)\\s+([\\d.]+ [kMG]?b/s)\\s+([\\d,]+|-)\\s+([\\d,]+)\\s+([\\d,]+)(?:\\s+(up|DOWN|-)\\s+${time}\\s+${time}|\\s+(\\d+/\\d+))?\\s*$`, 'm').exec(screen);
      expect(m, `${label} row in:\n${screen}`).not.toBeNull();
      const n = (s: string) => Number(s.replaceAll(',', ''));
      return { pps: n(m![1]), flows: n(m![3]), packets: n(m![4]), bytes: n(m![5]), state: m![6], p50: m![7], up: m![9] };
    };
    for (const hop of ['1', '2']) {
      const row = shown(`hop ${hop}`);
      const counted = (metric(after, 'sfc_hop_packets_total', { hop }) - metric(before, 'sfc_hop_packets_total', { hop })) / seconds;
      expect(row.pps, `hop ${hop}: shown ${row.pps}/s, counters ${counted}/s`).toBeGreaterThan(counted * 0.75);
      expect(row.up, `hop ${hop}: instances up`).toBe('2/2');
      expect(row.flows, `hop ${hop}: the flows udp-send sends`).toBe(FLOWS);
      expect(row.pps).toBeLessThan(counted * 1.25);
    }
    for (const pp of ['pp11', 'pp12', 'pp21', 'pp22']) {
      const row = shown(pp);
      expect(row.packets).toBeGreaterThanOrEqual(metric(before, 'sfc_instance_packets_total', { port_pair: pp }));
      expect(row.packets).toBeLessThanOrEqual(metric(after, 'sfc_instance_packets_total', { port_pair: pp }));
      expect(row.bytes).toBeGreaterThanOrEqual(row.packets * 60); // 64-byte frames, minus the FCS
      expect(row.state, `${pp} health state`).toBe('up');
      expect(row.p50, `${pp} SF time (sampled with traffic flowing)`).toMatch(/µs|ms/);
      expect(row.flows, `${pp} flows, as /metrics gives them`).toBe(metric(after, 'sfc_instance_flows', { port_pair: pp }));
      expect(row.flows, `${pp} carries some of the ${FLOWS} flows`).toBeGreaterThan(0);
    }
    expect(Math.max(...screen.split('\n').map((l) => l.length))).toBeLessThanOrEqual(100);
    // sfc get port-pair shows the instance's flows too
    const pair = JSON.parse((await netnsExec(lab.dpNs, [process.execPath, distFile('cli.js'), 'get', 'port-pair', 'pp11', '--json', '--url', dp.url])).stdout) as { flows: number | null };
    expect(pair.flows).toBe(metric(await dp.metrics(), 'sfc_instance_flows', { port_pair: 'pp11' }));
    expect(pair.flows).toBeGreaterThan(0);
    expect(await tmux('display-message', '-p', '-t', 'top', '#{alternate_on}')).toBe('1\n');

    await tmux('send-keys', '-t', 'top', 'C-c');
    await until('top to exit', async () => ((await tmux('display-message', '-p', '-t', 'top', '#{pane_current_command}')) === 'bash\n' ? true : undefined));
    await tmux('send-keys', '-t', 'top', 'echo "exit=$?"; stty -a | grep -o -w -e -echo -e echo -e -icanon -e icanon', 'Enter');
    const shell = await until('the shell to answer', async () => {
      const text = await pane();
      return /^exit=\d+\n(-?echo\n|-?icanon\n){2}/m.test(text) ? text : undefined;
    });
    // exited 0 on Ctrl-C, the terminal echoes and is line-buffered again, main screen, cursor visible
    expect(shell).toMatch(/^exit=0\n(echo\nicanon|icanon\necho)\n/m);
    expect(await tmux('display-message', '-p', '-t', 'top', '#{alternate_on} #{cursor_flag}')).toBe('0 1\n');
  }, 60_000);
});
