/*
 * Frames of a pcap as Debian's tshark dissects them (an independent reading of our encapsulations:
 * no hand-decoding in the tests): outer MACs, the MPLS or NSH header if any, and the inner IPv4/TCP.
 */
import { execFileSync } from 'node:child_process';

export type Encapsulation =
  | { kind: 'none' }
  | { kind: 'mpls'; label: number; ttl: number; bottom: number }
  | { kind: 'nsh'; version: number; mdType: number; length: number; nextProto: number; spi: number; si: number };

export interface Dissected {
  ethDst: string;
  ethSrc: string;
  encap: Encapsulation;
  innerIp: { src: string; dst: string; ttl: number; tcpDst: number };
}

/** The tshark fields `dissect` reads. */
export const DISSECT_FIELDS = [
  'eth.dst', 'eth.src',
  'mpls.label', 'mpls.ttl', 'mpls.bottom',
  'nsh.version', 'nsh.mdtype', 'nsh.length', 'nsh.nextproto', 'nsh.spi', 'nsh.si',
  'ip.src', 'ip.dst', 'ip.ttl', 'tcp.dstport',
];

/**
 * One record per frame of `pcap`: each of `fields` as tshark prints it ('' when absent), the
 * first occurrence (the outermost header) or the last (`occurrence` l).
 */
export function tsharkFields(pcap: string, fields: string[], occurrence: 'f' | 'l' = 'f'): Record<string, string>[] {
  const out = execFileSync('tshark', ['-r', pcap, '-T', 'fields', '-E', 'separator=\t', '-E', `occurrence=${occurrence}`, ...fields.flatMap((f) => ['-e', f])], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return out
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => Object.fromEntries(line.split('\t').map((x, k) => [fields[k], x])));
}

export function encapsulationOf(pcap: string): Dissected[] {
  return tsharkFields(pcap, DISSECT_FIELDS).map(dissect);
}

/** One frame's record of DISSECT_FIELDS (and any others) as a Dissected. */
export function dissect(v: Record<string, string>): Dissected {
  const n = (f: string) => Number(v[f]);
  let encap: Encapsulation = { kind: 'none' };
  if (v['mpls.label']) encap = { kind: 'mpls', label: n('mpls.label'), ttl: n('mpls.ttl'), bottom: n('mpls.bottom') };
  else if (v['nsh.spi']) {
    encap = { kind: 'nsh', version: n('nsh.version'), mdType: n('nsh.mdtype'), length: n('nsh.length'), nextProto: n('nsh.nextproto'), spi: n('nsh.spi'), si: n('nsh.si') };
  }
  return {
    ethDst: v['eth.dst'],
    ethSrc: v['eth.src'],
    encap,
    innerIp: { src: v['ip.src'], dst: v['ip.dst'], ttl: n('ip.ttl'), tcpDst: n('tcp.dstport') },
  };
}

/** ICMP "fragmentation needed" / ICMPv6 "packet too big" messages of a pcap, with tshark's checksum verdict. */
export function icmpTooBig(pcap: string) {
  const fields = ['eth.dst', 'eth.src', 'icmp.type', 'icmp.code', 'icmp.mtu', 'icmp.checksum.status', 'icmpv6.type', 'icmpv6.code', 'icmpv6.mtu', 'icmpv6.checksum.status', 'ip.dst', 'ipv6.dst'];
  return tsharkFields(pcap, fields, 'l').map((v) => {
    const six = v['icmpv6.type'] !== '';
    const p = six ? 'icmpv6' : 'icmp';
    return {
      ethDst: v['eth.dst'],
      ethSrc: v['eth.src'],
      type: Number(v[`${p}.type`]),
      code: Number(v[`${p}.code`]),
      mtu: Number(v[`${p}.mtu`]),
      checksumGood: v[`${p}.checksum.status`] === '1', // Wireshark: 0 bad, 1 good, 2 unverified
      quotedDst: six ? v['ipv6.dst'] : v['ip.dst'],
    };
  });
}
