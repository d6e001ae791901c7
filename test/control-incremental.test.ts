/*
 * The control path's shortcuts give the answers of the slow path: the validator's relation
 * indexes answer like a scan of the list (in list order, never stale), and a compile against the
 * previous generation (reusing its Maglev slices, classifier tables and MACs) equals a compile
 * that has nothing to reuse.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileTables } from '../src/control/drivers/userspace/render.js';
import type { FlowClassifier, Port, PortChain, PortPair, PortPairGroup, State } from '../src/control/model.js';
import { REFERENCES, UPDATABLE } from '../src/control/validate.js';
import { chainsByClassifier, findById } from '../src/control/validate/indexes.js';
import { newStore, port, refused } from './store-fixture.js';

const KEYS = ['a', 'b', 'c', 'd', 'e'];

/** Chains reduced to what the relation reads: an id and classifier ids drawn from KEYS. */
const chainList = fc.array(
  fc.record({ id: fc.constantFrom(...KEYS), flow_classifiers: fc.uniqueArray(fc.constantFrom(...KEYS), { maxLength: 3 }) }),
  { maxLength: 12 },
);

describe('validator relations', () => {
  it('answer exactly like a scan, in list order, before and after the index is built', () => {
    fc.assert(
      fc.property(chainList, fc.array(fc.constantFrom(...KEYS, 'zz'), { minLength: 20, maxLength: 40 }), (raw, queries) => {
        const chains = Object.freeze(raw.map((c) => Object.freeze({ ...c }))) as unknown as PortChain[];
        const state = { port_chains: chains } as unknown as State;
        for (const key of queries) {
          const scan = chains.filter((pc) => pc.flow_classifiers.includes(key));
          expect(chainsByClassifier.all(chains, key)).toEqual(scan);
          expect(chainsByClassifier.first(chains, key)).toBe(scan[0]);
          expect(findById(state, 'port_chains', key)).toBe(chains.find((pc) => pc.id === key));
        }
      }),
      { numRuns: 60 },
    );
  });

  it('never cache a list that is not frozen (it may still change)', () => {
    const chains = [{ id: 'x', flow_classifiers: ['a'] }] as unknown as PortChain[];
    const state = { port_chains: chains } as unknown as State;
    for (let i = 0; i < 20; i++) expect(findById(state, 'port_chains', 'y')).toBeUndefined();
    chains.push({ id: 'y', flow_classifiers: ['b'] } as unknown as PortChain);
    expect(findById(state, 'port_chains', 'y')).toBe(chains[1]);
    expect(chainsByClassifier.first(chains, 'b')).toBe(chains[1]);
  });

  it('keep the first culprit once the store has indexed its lists', async () => {
    const store = newStore();
    const ports: Port[] = [];
    for (let i = 0; i < 12; i++) ports.push(await port(store, `p${i}`));
    const pairs: PortPair[] = [];
    for (let i = 0; i < 6; i++) {
      pairs.push(await store.create('port_pairs', { name: `pp${i}`, ingress: ports[2 * i]!.id, egress: ports[2 * i + 1]!.id }));
    }
    const groups: PortPairGroup[] = [];
    for (let i = 0; i < 6; i++) groups.push(await store.create('port_pair_groups', { port_pairs: [pairs[i]!.id] }));
    const fcs: FlowClassifier[] = [];
    for (let i = 0; i < 12; i++) {
      const body = { protocol: 'tcp', destination_ip_prefix: `10.0.${i}.0/24`, logical_source_port: ports[0]!.id };
      fcs.push(await store.create('flow_classifiers', body));
    }
    for (let i = 0; i < 5; i++) {
      await store.create('port_chains', { port_pair_groups: [groups[i]!.id], flow_classifiers: [fcs[2 * i]!.id, fcs[2 * i + 1]!.id] });
    }
    const inUse = await refused(
      store,
      () => store.create('port_chains', { port_pair_groups: [groups[5]!.id], flow_classifiers: [fcs[10]!.id, fcs[7]!.id] }),
      409,
      'FlowClassifierInUse',
    );
    expect(inUse.message).toContain(fcs[7]!.id);
    const overlap = await store.create('flow_classifiers', {
      protocol: 'tcp',
      destination_ip_prefix: '10.0.0.0/16',
      logical_source_port: ports[1]!.id,
    });
    const conflict = await refused(
      store,
      () => store.create('port_chains', { port_pair_groups: [groups[5]!.id], flow_classifiers: [overlap.id] }),
      400,
      'PortChainFlowClassifierInConflict',
    );
    expect(conflict.message).toContain(`Flow Classifier ${fcs[0]!.id} of Port Chain`);
    const twin = await refused(
      store,
      () => store.create('port_chains', { port_pair_groups: [groups[3]!.id], flow_classifiers: [] }),
      409,
      'InvalidPortPairGroups',
    );
    expect(twin.message).toContain(store.state.port_chains[3]!.id);
    await refused(store, () => store.delete('port_pairs', pairs[2]!.id), 409, 'PortPairInUse');
    const mac = ports[5]!.mac_address;
    await refused(store, () => port(store, 'dup', { mac_address: mac }), 409, 'MacAddressInUse');
  });
});

describe('one reference table', () => {
  it('marks as updatable exactly the references a PUT may change', () => {
    const put = Object.entries(REFERENCES).flatMap(([coll, refs]) => refs.filter((r) => r.put).map((r) => `${coll}.${r.attr}`));
    expect(put.sort()).toEqual(['port_chains.flow_classifiers', 'port_chains.port_pair_groups', 'port_pair_groups.port_pairs']);
    expect([...UPDATABLE.port_pairs].sort()).toEqual(['description', 'name']);
    expect(UPDATABLE.ports.has('binding:profile')).toBe(true);
  });
});

/** A State built through the store: 2 groups of 2 pairs, 6 classifiers, 3 chains (one symmetric), a spare port. */
async function model() {
  const store = newStore();
  const p = async (name: string, iface: string) => store.create('ports', { name, 'binding:profile': { interface: iface } });
  const spare = await p('spare', 'cl0');
  const pairs: PortPair[] = [];
  for (let i = 0; i < 5; i++) {
    const a = await p(`sf${i}a`, `sfb${i % 3}`);
    const b = await p(`sf${i}b`, `sfb${i % 3}`);
    const weight = i + 1;
    pairs.push(await store.create('port_pairs', { name: `pp${i}`, ingress: a.id, egress: b.id, service_function_parameters: { weight } }));
  }
  const g1 = await store.create('port_pair_groups', { name: 'g1', port_pairs: [pairs[0]!.id, pairs[1]!.id] });
  const g2 = await store.create('port_pair_groups', { name: 'g2', port_pairs: [pairs[2]!.id, pairs[3]!.id] });
  const src = await p('src', 'cl0');
  const dst = await p('dst', 'cl1');
  const fcs: FlowClassifier[] = [];
  for (let i = 0; i < 6; i++) {
    const body = { name: `fc${i}`, protocol: 'tcp', destination_ip_prefix: `10.1.${i}.0/24`, logical_source_port: src.id, logical_destination_port: dst.id };
    fcs.push(await store.create('flow_classifiers', body));
  }
  const c1 = await store.create('port_chains', { name: 'c1', port_pair_groups: [g1.id], flow_classifiers: [fcs[0]!.id, fcs[1]!.id] });
  await store.create('port_chains', { name: 'c2', port_pair_groups: [g2.id], flow_classifiers: [fcs[2]!.id], chain_parameters: { symmetric: true } });
  const c3 = await store.create('port_chains', { name: 'c3', port_pair_groups: [g1.id, g2.id], flow_classifiers: [fcs[3]!.id] });
  return { store, pairs, g1, g2, c1, c3, fcs, src, spare };
}

describe('incremental compile', () => {
  it('equals a compile with nothing to reuse, across a sequence of changes', async () => {
    const m = await model();
    const changes: (() => Promise<unknown>)[] = [
      () => m.store.update('port_chains', m.c1.id, { flow_classifiers: [m.fcs[0]!.id] }),
      () => m.store.update('port_pair_groups', m.g1.id, { port_pairs: [m.pairs[0]!.id, m.pairs[1]!.id, m.pairs[4]!.id] }),
      () => {
        // a weight changes only by replacing the pair (same id): a whole-State replace does it
        const next = structuredClone(m.store.state);
        next.port_pairs[1]!.service_function_parameters.weight = 7;
        return m.store.replace(next);
      },
      () => m.store.create('ports', { name: 'late', 'binding:profile': { interface: 'cl0' } }),
      () => m.store.update('ports', m.src.id, { mac_address: '02:aa:00:00:00:01' }),
      () => m.store.delete('ports', m.spare.id),
      () => m.store.update('port_chains', m.c1.id, { flow_classifiers: [m.fcs[4]!.id, m.fcs[5]!.id] }),
      () => m.store.delete('port_chains', m.c3.id),
      () => m.store.update('port_pair_groups', m.g1.id, { port_pairs: [m.pairs[1]!.id] }),
    ];
    let t = compileTables(m.store.state);
    for (const change of changes) {
      await change();
      const fresh = compileTables(m.store.state, structuredClone(t));
      const next = compileTables(m.store.state, t);
      expect(next).toEqual(fresh);
      t = next;
    }
  });

  it('reuses the previous generation when the inputs are unchanged', async () => {
    const m = await model();
    const t1 = compileTables(m.store.state);
    await m.store.update('port_chains', m.c1.id, { name: 'renamed' });
    const t2 = compileTables(m.store.state, t1);
    expect(t2.generation).toBe(t1.generation + 1);
    expect(t2.entryTable).toBe(t1.entryTable);
    expect(t2.sfTables).toEqual(t1.sfTables);
    expect(t2.sfTables.every((table, i) => table === t1.sfTables[i])).toBe(true);
    expect(t2.maglev).toEqual(t1.maglev);
    expect(t2.chainNames).toContain('renamed');
    // a structured clone carries no memo: the same compile rebuilds everything
    expect(compileTables(m.store.state, structuredClone(t1)).entryTable).not.toBe(t1.entryTable);
  });
});
