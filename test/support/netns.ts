/*
 * Throwaway network namespaces for the packet I/O backend tests (afpacket, afxdp): a namespace the
 * test process enters (enterNetns) so the sockets it opens live there, holding veth pairs or the
 * dataplane ends of links to Linux hosts in namespaces of their own. Each set-up returns the
 * function that leaves the namespace and deletes what it created.
 */
import { execFileSync } from 'node:child_process';
import { enterNetns, loadNative, type NativePort } from '../../src/dataplane/io/native.js';

export function sh(cmd: string): string {
  return execFileSync('sh', ['-c', cmd], { encoding: 'utf8' });
}

/** (Re)create namespace `ns` with IPv6 off (no router solicitations in the rings). */
function freshNamespace(ns: string): void {
  sh(`ip netns del ${ns} 2>/dev/null; ip netns add ${ns}`);
  sh(`ip netns exec ${ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1`);
}

/** A veth pair x/y inside `ns`, both up. */
export function vethPair(ns: string, x: string, y: string): void {
  sh(`ip -n ${ns} link add ${x} type veth peer name ${y} && ip -n ${ns} link set ${x} up && ip -n ${ns} link set ${y} up`);
}

/** Namespace `ns` holding the veth `pairs`, entered by this process until the returned function runs. */
export function enterVethNamespace(ns: string, pairs: [string, string][]): () => void {
  freshNamespace(ns);
  for (const [x, y] of pairs) vethPair(ns, x, y);
  const leave = enterNetns(ns);
  return () => {
    leave();
    sh(`ip netns del ${ns} 2>/dev/null || true`);
  };
}

export interface Host {
  /** The host's own namespace. */
  ns: string;
  /** The link's end inside the entered namespace. */
  dp: string;
  /** IPv4 address of the host's eth0 (/24). */
  ip: string;
}

/**
 * Namespace `ns` linked to Linux hosts, each in its own namespace with eth0 (default offloads,
 * receive checksum offload off so its kernel verifies every checksum it gets); this process
 * enters `ns` until the returned function runs, which also deletes the hosts.
 */
export function enterHostsNamespace(ns: string, hosts: Host[]): () => void {
  freshNamespace(ns);
  for (const h of hosts) {
    // (IPv4 hosts: IPv6 off before eth0 arrives, so no neighbour discovery or MLD report of theirs crosses the ports under test)
    sh(`ip netns del ${h.ns} 2>/dev/null; ip netns add ${h.ns} && ip netns exec ${h.ns} sysctl -qw net.ipv6.conf.default.disable_ipv6=1`);
    sh(`ip -n ${ns} link add ${h.dp} type veth peer name eth0 netns ${h.ns}`);
    sh(`ip -n ${ns} link set ${h.dp} up && ip -n ${h.ns} link set eth0 up && ip -n ${h.ns} addr add ${h.ip}/24 dev eth0`);
    sh(`ip netns exec ${h.ns} ethtool -K eth0 rx off`);
  }
  const leave = enterNetns(ns);
  return () => {
    leave();
    sh(`for n in ${ns} ${hosts.map((h) => h.ns).join(' ')}; do ip netns del $n 2>/dev/null; done; true`);
  };
}

/** A native port's counter by name. */
export function nativeCounter(p: NativePort, name: string): number {
  const k = loadNative().counterNames.indexOf(name);
  if (k < 0) throw new Error(`no native counter named ${name}`);
  return p.counters[k];
}

/** A counter of /proc/net/snmp in namespace ns, e.g. snmpCounter(ns, 'Tcp', 'InCsumErrors'). */
export function snmpCounter(ns: string, proto: 'Ip' | 'Icmp' | 'Tcp' | 'Udp', name: string): number {
  const lines = sh(`ip netns exec ${ns} cat /proc/net/snmp`).split('\n').filter((l) => l.startsWith(`${proto}:`));
  return Number(lines[1].split(/\s+/)[lines[0].split(/\s+/).indexOf(name)]);
}
