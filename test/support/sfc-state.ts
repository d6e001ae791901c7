/*
 * Hand-built chain States for dataplane tests (compile, steer, replay), without the Store: ids are
 * deterministic UUID-shaped strings, every resource fully defaulted as the API would store it.
 * `twoHop()` mirrors examples/two-hop.yaml (the lab topology).
 */
import {
  emptyState,
  type FlowClassifier,
  type LbField,
  type Port,
  type PortChain,
  type PortPair,
  type PortPairGroup,
  type State,
} from '../../src/control/model.js';

const owner = { tenant_id: 'sfc', project_id: 'sfc', description: '' };

export class StateBuilder {
  readonly state: State = emptyState();
  private n = 0;

  private id(): string {
    this.n++;
    return `00000000-0000-4000-8000-${this.n.toString(16).padStart(12, '0')}`;
  }

  byName<K extends keyof State>(coll: K, name: string): State[K][number] {
    const o = (this.state[coll] as { name: string }[]).find((x) => x.name === name);
    if (!o) throw new Error(`no ${coll} named ${name}`);
    return o as State[K][number];
  }

  port(name: string, iface: string, mac: string): Port {
    const p: Port = { id: this.id(), name, ...owner, mac_address: mac, 'binding:profile': { interface: iface }, status: 'ACTIVE', admin_state_up: true };
    this.state.ports.push(p);
    return p;
  }

  pair(name: string, ingress: string, egress: string, weight = 1, correlation: 'mpls' | 'nsh' | null = null): PortPair {
    const pp: PortPair = {
      id: this.id(),
      name,
      ...owner,
      ingress: this.byName('ports', ingress).id,
      egress: this.byName('ports', egress).id,
      service_function_parameters: { correlation, weight },
    };
    this.state.port_pairs.push(pp);
    return pp;
  }

  group(name: string, pairs: string[], opts: { lbFields?: LbField[]; tap?: boolean } = {}): PortPairGroup {
    const g: PortPairGroup = {
      id: this.id(),
      name,
      ...owner,
      group_id: this.state.port_pair_groups.length + 1,
      port_pairs: pairs.map((p) => this.byName('port_pairs', p).id),
      port_pair_group_parameters: { lb_fields: opts.lbFields ?? [], ppg_n_tuple_mapping: { ingress_n_tuple: {}, egress_n_tuple: {} } },
      tap_enabled: opts.tap ?? false,
    };
    this.state.port_pair_groups.push(g);
    return g;
  }

  classifier(name: string, fields: Partial<Omit<FlowClassifier, 'logical_source_port' | 'logical_destination_port'>> & { src: string; dst?: string }): FlowClassifier {
    const { src, dst, ...rest } = fields;
    const fc: FlowClassifier = {
      id: this.id(),
      name,
      ...owner,
      ethertype: 'IPv4',
      protocol: null,
      source_port_range_min: null,
      source_port_range_max: null,
      destination_port_range_min: null,
      destination_port_range_max: null,
      source_ip_prefix: null,
      destination_ip_prefix: null,
      l7_parameters: {},
      ...rest,
      logical_source_port: this.byName('ports', src).id,
      logical_destination_port: dst ? this.byName('ports', dst).id : null,
    };
    this.state.flow_classifiers.push(fc);
    return fc;
  }

  chain(
    name: string,
    groups: string[],
    classifiers: string[],
    opts: { symmetric?: boolean; chainId?: number; correlation?: 'mpls' | 'nsh' } = {},
  ): PortChain {
    const c: PortChain = {
      id: this.id(),
      name,
      ...owner,
      chain_id: opts.chainId ?? this.state.port_chains.length + 1,
      port_pair_groups: groups.map((g) => this.byName('port_pair_groups', g).id),
      flow_classifiers: classifiers.map((f) => this.byName('flow_classifiers', f).id),
      chain_parameters: { correlation: opts.correlation ?? 'mpls', symmetric: opts.symmetric ?? false },
    };
    this.state.port_chains.push(c);
    return c;
  }
}

export const CLIENT_MAC = '02:00:00:00:00:01';
export const SERVER_MAC = '02:00:00:00:00:02';
export const sfMac = (h: number, k: number, side: 'in' | 'out') => `02:00:00:00:${h}${k}:0${side === 'in' ? 1 : 2}`;

/**
 * The lab topology: client (cli0), server (srv0), `hops` hops of `perHop` instances (sf<h><k>i /
 * sf<h><k>e), one chain pc1 over groups ppg1..ppgN with a TCP and a UDP classifier client -> server.
 */
export function twoHop(opts: { symmetric?: boolean; hops?: number; perHop?: number; weights?: number[][]; dport?: number } = {}): StateBuilder {
  const s = new StateBuilder();
  s.port('client', 'cli0', CLIENT_MAC);
  s.port('server', 'srv0', SERVER_MAC);
  const hops = opts.hops ?? 2;
  const perHop = opts.perHop ?? 2;
  for (let h = 1; h <= hops; h++) {
    for (let k = 1; k <= perHop; k++) {
      s.port(`sf${h}${k}-in`, `sf${h}${k}i`, sfMac(h, k, 'in'));
      s.port(`sf${h}${k}-out`, `sf${h}${k}e`, sfMac(h, k, 'out'));
      s.pair(`pp${h}${k}`, `sf${h}${k}-in`, `sf${h}${k}-out`, opts.weights?.[h - 1]?.[k - 1] ?? 1);
    }
    s.group(`ppg${h}`, Array.from({ length: perHop }, (_, k) => `pp${h}${k + 1}`));
  }
  const ports = opts.dport === undefined ? {} : { destination_port_range_min: opts.dport, destination_port_range_max: opts.dport };
  s.classifier('fc-tcp', { protocol: 'tcp', source_ip_prefix: '10.0.0.1/32', destination_ip_prefix: '10.0.0.2/32', src: 'client', dst: 'server', ...ports });
  s.classifier('fc-udp', { protocol: 'udp', source_ip_prefix: '10.0.0.1/32', destination_ip_prefix: '10.0.0.2/32', src: 'client', dst: 'server', ...ports });
  s.chain('pc1', Array.from({ length: hops }, (_, h) => `ppg${h + 1}`), ['fc-tcp', 'fc-udp'], { symmetric: opts.symmetric });
  return s;
}
