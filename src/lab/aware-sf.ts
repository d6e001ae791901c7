/*
 * SF-aware service functions for the lab: a real NSH / MPLS implementation inside an SF namespace.
 * Open vSwitch (ovsdb-server + ovs-vswitchd, the userspace "netdev" datapath) with its own run
 * directory <runDir>/ovs-<ns>, one bridge `sf` holding in0 (OpenFlow port 1) and out0 (port 2),
 * and flows doing what an SF-aware function does with the chain's encapsulation (spec B.2):
 *   forward   in_port=in0, SPI / label of the SF's chain (LabSf.chain: the lab's chain, or in a
 *             graph lab each hop's own) and the index the dataplane hands hop h (the
 *             previous node's, 256 - h) -> the hop's own index (one less), source MAC = out0's,
 *             out0
 *   reverse   (symmetric chains) in_port=out0 with the reverse path's index for this hop -> in0,
 *             source MAC = in0's
 *   NSH       dl_type 0x894f, MD type 1, nsh_spi = chain id, nsh_si; set_field nsh_si
 *   MPLS      label (chain id << 8) | SI, bottom of stack; set_mpls_label and dec_mpls_ttl
 *             (the dataplane pushes TTL = SI)
 *   NAT-like  (LabSf.udpSourceTo: the graph lab's branching point) the forward flow takes the
 *             encapsulation off (MPLS: pop_mpls; NSH: decap() the outer Ethernet and the NSH) and
 *             resubmits to table 1, which writes the UDP source port (OVS fixes the checksum) and
 *             puts the hop's own label (TTL = that index) / NSH MD1 and an outer Ethernet back on
 * Anything else is dropped (fail_mode secure and a priority-0 drop), so a frame with the wrong
 * encapsulation or index never comes back: it shows up as loss, not as a silent pass.
 *
 * The daemons run OVS's own --detach inside the namespace (`ip netns exec`): each is ready when
 * its starter returns, and they outlive `sfc lab up`. Their pids (from their pid files) go to the
 * lab's pid file, so labDown stops them. (control/drivers/ovs/daemon.ts's OvsDaemon keeps child
 * handles to its daemons, which would keep `sfc lab up` from exiting; its install check is reused.)
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkOvsInstalled } from '../control/drivers/ovs/daemon.js';
import { netnsExec, recordPid, run } from './process.js';
import type { LabSf } from './topology.js';

export type SfCorrelation = 'mpls' | 'nsh';
export const SF_CORRELATIONS: readonly SfCorrelation[] = ['mpls', 'nsh'];

const SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';
const BRIDGE = 'sf';
const IN_PORT = 1;
const OUT_PORT = 2;
const OF = ['-O', 'OpenFlow15'];

/** The lab around an aware SF: where its run directory lives, and whether its chain is symmetric. */
export interface AwareChain {
  name: string;
  runDir: string;
  symmetric: boolean;
}

/**
 * The service index the dataplane hands hop `hop` (1-based) of an `hops`-hop chain: the previous
 * node's (the classifier's 255, then 254 - i for node i); the SF answers with one less. On the
 * reverse path of a symmetric chain the hops come in the opposite order.
 */
function deliveredIndex(hop: number, hops: number, direction: 'forward' | 'reverse'): number {
  const node = direction === 'forward' ? hop - 1 : hops - hop;
  return 255 - node;
}

/** One direction's flow: match what the dataplane delivers on `from`, return it decremented on `to`. */
function returnFlow(correlation: SfCorrelation, chainId: number, si: number, from: number, to: number, srcMac: string): string {
  const back = `set_field:${srcMac}->eth_src,output:${to}`;
  if (correlation === 'nsh') {
    return `priority=10,in_port=${from},dl_type=0x894f,nsh_mdtype=1,nsh_spi=${chainId},nsh_si=${si},actions=set_field:${si - 1}->nsh_si,${back}`;
  }
  const label = (chainId << 8) | si;
  return `priority=10,in_port=${from},mpls,mpls_label=${label},mpls_bos=1,actions=set_mpls_label:${label - 1},dec_mpls_ttl,${back}`;
}

/** The NAT-like forward flows: in_port=in0's (chain, si) -> UDP source `port`, (chain, si - 1), out0. */
function translateFlows(correlation: SfCorrelation, chainId: number, si: number, port: number, sf: LabSf): string[] {
  if (correlation === 'nsh') {
    // Outer Ethernet and NSH off (the inner frame is Ethernet: next protocol 3), the port written,
    // NSH MD type 1 and an outer Ethernet back on.
    return [
      `priority=10,in_port=${IN_PORT},dl_type=0x894f,nsh_mdtype=1,nsh_spi=${chainId},nsh_si=${si},actions=decap(),decap(),resubmit(,1)`,
      `table=1,priority=10,udp,actions=set_field:${port}->udp_src,encap(nsh(md_type=1)),set_field:${chainId}->nsh_spi,` +
        `set_field:${si - 1}->nsh_si,encap(ethernet),set_field:${sf.ingressMac}->eth_dst,set_field:${sf.egressMac}->eth_src,output:${OUT_PORT}`,
    ];
  }
  const label = (chainId << 8) | si;
  const srcMac = sf.egressMac;
  return [
    `priority=10,in_port=${IN_PORT},mpls,mpls_label=${label},mpls_bos=1,actions=pop_mpls:0x0800,resubmit(,1)`,
    `table=1,priority=10,udp,actions=set_field:${port}->udp_src,push_mpls:0x8847,set_field:${label - 1}->mpls_label,` +
      `set_field:${si - 1}->mpls_ttl,set_field:${srcMac}->eth_src,output:${OUT_PORT}`,
  ];
}

/** The OpenFlow flows (ovs-ofctl text) of aware SF instance `sf` (of its chain: sf.chain). */
export function awareSfFlows(chain: AwareChain, sf: LabSf, correlation: SfCorrelation): string[] {
  const { id, hop, hops } = sf.chain;
  const si = deliveredIndex(hop, hops, 'forward');
  const flows = sf.udpSourceTo === null ? [returnFlow(correlation, id, si, IN_PORT, OUT_PORT, sf.egressMac)] : translateFlows(correlation, id, si, sf.udpSourceTo, sf);
  if (chain.symmetric) {
    flows.push(returnFlow(correlation, id, deliveredIndex(hop, hops, 'reverse'), OUT_PORT, IN_PORT, sf.ingressMac));
  }
  flows.push('priority=0,actions=drop');
  return flows;
}

function ovsDir(chain: AwareChain, sf: LabSf): string {
  return join(chain.runDir, `ovs-${sf.ns}`);
}

/** `ovs-ofctl <command>` against the SF's bridge (its management socket needs no namespace). */
function ofctl(chain: AwareChain, sf: LabSf, command: string, args: string[] = [], input?: string) {
  return run(['ovs-ofctl', ...OF, '--no-names', command, `unix:${join(ovsDir(chain, sf), `${BRIDGE}.mgmt`)}`, ...args], { input });
}

/** Replace every flow of the SF's bridge with `flows` (ovs-ofctl text). */
export async function setAwareSfFlows(chain: AwareChain, sf: LabSf, flows: string[]): Promise<void> {
  await ofctl(chain, sf, 'replace-flows', ['-'], flows.join('\n') + '\n');
}

/** Packets the SF's return flows matched so far, by the direction they carry. */
export async function awareSfPackets(chain: AwareChain, sf: LabSf): Promise<{ forward: number; reverse: number }> {
  const { stdout } = await ofctl(chain, sf, 'dump-flows');
  const counts = { forward: 0, reverse: 0 };
  for (const line of stdout.split('\n')) {
    if (/\btable=1,/.test(line)) continue; // the NAT-like SF's second step (counted by its first)
    const port = /\bin_port=(\d+)/.exec(line)?.[1];
    const packets = Number(/\bn_packets=(\d+)/.exec(line)?.[1] ?? 0);
    if (port === String(IN_PORT)) counts.forward += packets;
    else if (port === String(OUT_PORT)) counts.reverse += packets;
  }
  return counts;
}

/** Start the SF's Open vSwitch in its namespace, with in0 and out0 on bridge `sf` and the return flows. */
export async function startAwareSf(chain: AwareChain, sf: LabSf, correlation: SfCorrelation): Promise<void> {
  checkOvsInstalled();
  const dir = ovsDir(chain, sf);
  await mkdir(dir, { recursive: true });
  const env = { ...process.env, OVS_RUNDIR: dir, OVS_DBDIR: dir, OVS_LOGDIR: dir };
  const db = `unix:${join(dir, 'db.sock')}`;
  const daemon = async (argv: string[], what: string) => {
    const pidfile = join(dir, `${what}.pid`);
    const common = [`--pidfile=${pidfile}`, '--detach', '--no-chdir', `--unixctl=${join(dir, `${what}.ctl`)}`, `--log-file=${join(dir, `${what}.log`)}`, '-vconsole:off'];
    await netnsExec(sf.ns, [...argv, ...common], { env });
    await recordPid(chain.name, Number((await readFile(pidfile, 'utf8')).trim()), `${what}@${sf.ns}`);
  };
  await run(['ovsdb-tool', 'create', join(dir, 'conf.db'), SCHEMA]);
  await daemon(['ovsdb-server', join(dir, 'conf.db'), `--remote=p${db}`], 'ovsdb-server');
  const vsctl = (args: string[]) => run(['ovs-vsctl', `--db=${db}`, '--timeout=20', ...args], { env });
  await vsctl(['--no-wait', 'init']);
  await daemon(['ovs-vswitchd', db], 'ovs-vswitchd');
  await vsctl([
    '--', 'add-br', BRIDGE,
    '--', 'set', 'bridge', BRIDGE, 'datapath_type=netdev', 'fail_mode=secure', 'protocols=OpenFlow15', 'other-config:disable-in-band=true',
    '--', 'add-port', BRIDGE, 'in0', '--', 'set', 'interface', 'in0', `ofport_request=${IN_PORT}`,
    '--', 'add-port', BRIDGE, 'out0', '--', 'set', 'interface', 'out0', `ofport_request=${OUT_PORT}`,
  ]);
  await setAwareSfFlows(chain, sf, awareSfFlows(chain, sf, correlation));
}
