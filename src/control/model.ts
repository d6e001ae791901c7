/*
 * The chain model: networking-sfc's six resources with their exact attribute names.
 *
 * These are the stored, fully-defaulted shapes (what the API returns and the state file holds).
 * Validation, defaults and cross-resource rules live in validate.ts; the compiler (compile.ts)
 * turns a State into dataplane tables. Every resource carries both tenant_id and project_id,
 * equal, as Neutron does.
 */
import { LB_FIELDS, type LbField } from '../hash/flowhash.js';
export { LB_FIELDS, type LbField };

export interface Owned {
  id: string;
  name: string;
  description: string;
  tenant_id: string;
  project_id: string;
}

/** A logical port bound to a Linux interface; several ports may share one interface (told apart by MAC). */
export interface Port extends Owned {
  mac_address: string;
  'binding:profile': { interface: string; [key: string]: unknown };
  /** Neutron's binding:host_id: the host (agent) the port is on; '' = the only host. */
  'binding:host_id': string;
  status: 'ACTIVE' | 'DOWN';
  admin_state_up: boolean;
}

export type Correlation = 'mpls' | 'nsh' | null;

export interface PortPair extends Owned {
  ingress: string;
  egress: string;
  service_function_parameters: { correlation: Correlation; weight: number };
}


export const N_TUPLE_KEYS = [
  'source_ip_prefix',
  'destination_ip_prefix',
  'source_port_range_min',
  'source_port_range_max',
  'destination_port_range_min',
  'destination_port_range_max',
] as const;
export type NTuple = Partial<Record<(typeof N_TUPLE_KEYS)[number], string | number | null>>;

export interface PortPairGroup extends Owned {
  group_id: number;
  port_pairs: string[];
  port_pair_group_parameters: {
    lb_fields: LbField[];
    ppg_n_tuple_mapping: { ingress_n_tuple?: NTuple; egress_n_tuple?: NTuple };
  };
  tap_enabled: boolean;
}

export interface FlowClassifier extends Owned {
  ethertype: 'IPv4' | 'IPv6';
  protocol: 'tcp' | 'udp' | 'icmp' | null;
  source_port_range_min: number | null;
  source_port_range_max: number | null;
  destination_port_range_min: number | null;
  destination_port_range_max: number | null;
  source_ip_prefix: string | null;
  destination_ip_prefix: string | null;
  logical_source_port: string | null;
  logical_destination_port: string | null;
  l7_parameters: Record<string, never>;
}

export interface PortChain extends Owned {
  chain_id: number;
  port_pair_groups: string[];
  flow_classifiers: string[];
  chain_parameters: { correlation: 'mpls' | 'nsh'; symmetric: boolean };
}

export interface ServiceGraph extends Owned {
  port_chains: Record<string, string[]>;
}

/** The whole model at one revision. Lists keep creation order (Neutron's storage order). */
export interface State {
  ports: Port[];
  port_pairs: PortPair[];
  port_pair_groups: PortPairGroup[];
  flow_classifiers: FlowClassifier[];
  port_chains: PortChain[];
  service_graphs: ServiceGraph[];
}

export type Collection = keyof State;

/** Any one stored resource, and the resource type of one collection. */
export type Resource = Port | PortPair | PortPairGroup | FlowClassifier | PortChain | ServiceGraph;
export type ResourceOf<C extends Collection> = State[C][number];

export const COLLECTIONS: readonly Collection[] = [
  'ports',
  'port_pairs',
  'port_pair_groups',
  'flow_classifiers',
  'port_chains',
  'service_graphs',
];

/** Singular JSON key for each collection (the API envelope). */
export const SINGULAR: Record<Collection, string> = {
  ports: 'port',
  port_pairs: 'port_pair',
  port_pair_groups: 'port_pair_group',
  flow_classifiers: 'flow_classifier',
  port_chains: 'port_chain',
  service_graphs: 'service_graph',
};

export function emptyState(): State {
  return { ports: [], port_pairs: [], port_pair_groups: [], flow_classifiers: [], port_chains: [], service_graphs: [] };
}
