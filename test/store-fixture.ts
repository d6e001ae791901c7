/*
 * Shared helpers for the store tests: a store with no real links, object builders, and
 * `refused`, which asserts a write fails with the given status and type AND left the store
 * untouched (same state, same revision).
 */
import { expect } from 'vitest';
import { NeutronError } from '../src/control/errors.js';
import type { FlowClassifier, Port, PortChain, PortPair, PortPairGroup, ServiceGraph } from '../src/control/model.js';
import { Store, type StoreOptions } from '../src/control/store.js';

export const UNKNOWN = '11111111-2222-4333-8444-555555555555';

export function newStore(opts: StoreOptions = {}): Store {
  return new Store({ linkUp: () => false, ...opts });
}

export async function refused(store: Store, write: () => Promise<unknown>, status: number, type: string): Promise<NeutronError> {
  const before = structuredClone(store.state);
  const revision = store.revision;
  const error = await write().then(
    (r) => {
      throw new Error(`expected ${status} ${type}, got success: ${JSON.stringify(r)}`);
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(NeutronError);
  const ne = error as NeutronError;
  expect({ status: ne.status, type: ne.type, message: ne.message }).toMatchObject({ status, type });
  expect(store.state).toEqual(before);
  expect(store.revision).toBe(revision);
  return ne;
}

let macCounter = 0;

export async function port(store: Store, name: string, extra: Record<string, unknown> = {}): Promise<Port> {
  macCounter++;
  const mac = `02:00:00:00:${(macCounter >> 8).toString(16).padStart(2, '0')}:${(macCounter & 255).toString(16).padStart(2, '0')}`;
  return store.create('ports', { name, mac_address: mac, 'binding:profile': { interface: 'veth0' }, ...extra });
}

export async function pair(store: Store, name: string, extra: Record<string, unknown> = {}): Promise<PortPair> {
  const a = await port(store, `${name}-in`);
  const b = await port(store, `${name}-out`);
  return store.create('port_pairs', { name, ingress: a.id, egress: b.id, ...extra });
}

export async function group(store: Store, pairs: PortPair[] = [], extra: Record<string, unknown> = {}): Promise<PortPairGroup> {
  return store.create('port_pair_groups', { port_pairs: pairs.map((p) => p.id), ...extra });
}

export async function classifier(store: Store, body: Record<string, unknown> = {}): Promise<FlowClassifier> {
  const src = body.logical_source_port ?? (await port(store, 'src')).id;
  return store.create('flow_classifiers', { ...body, logical_source_port: src });
}

export async function chain(store: Store, groups: PortPairGroup[], extra: Record<string, unknown> = {}): Promise<PortChain> {
  return store.create('port_chains', { port_pair_groups: groups.map((g) => g.id), ...extra });
}

export async function graph(store: Store, edges: Record<string, string[]>): Promise<ServiceGraph> {
  return store.create('service_graphs', { port_chains: edges });
}
