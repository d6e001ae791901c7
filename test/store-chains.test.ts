/*
 * Port chains (spec A.6, C.4).
 */
import { describe, expect, it } from 'vitest';
import { UNKNOWN, chain, classifier, graph, group, newStore, pair, port, refused } from './store-fixture.js';

const mpls = { service_function_parameters: { correlation: 'mpls' } };
const nsh = { service_function_parameters: { correlation: 'nsh' } };

describe('port chains: create', () => {
  it('C.4.1-2: defaults with an allocated chain_id; all fields echoed', async () => {
    const store = newStore();
    const g = await group(store);
    const pc = await chain(store, [g]);
    expect(pc).toMatchObject({
      name: '',
      description: '',
      port_pair_groups: [g.id],
      flow_classifiers: [],
      chain_parameters: { correlation: 'mpls', symmetric: false },
      chain_id: 1,
    });
    const g2 = await group(store);
    const dst = await port(store, 'dst');
    const fc = await classifier(store, { logical_destination_port: dst.id });
    const full = await chain(store, [g2], {
      name: 'pc',
      description: 'd',
      chain_id: 99,
      flow_classifiers: [fc.id],
      chain_parameters: { correlation: 'mpls', symmetric: true },
    });
    expect(full).toMatchObject({ name: 'pc', description: 'd', chain_id: 99, flow_classifiers: [fc.id], chain_parameters: { symmetric: true } });
  });

  it('C.4.3: several groups; shared groups in other lists; same groups reversed', async () => {
    const store = newStore();
    const [g1, g2, g3] = [await group(store), await group(store), await group(store)];
    const a = await chain(store, [g1, g2]);
    expect(a.port_pair_groups).toEqual([g1.id, g2.id]);
    await chain(store, [g1, g3]);
    await chain(store, [g2, g1]);
    await chain(store, [g1]);
  });

  it('C.4.4, 12: chain_parameters defaults, completion and client strings; invalid values', async () => {
    const store = newStore();
    const g = () => group(store);
    for (const params of [{}, null, { correlation: 'mpls', symmetric: false }]) {
      expect((await chain(store, [await g()], { chain_parameters: params })).chain_parameters).toEqual({ correlation: 'mpls', symmetric: false });
    }
    expect((await chain(store, [await g()], { chain_parameters: { symmetric: 'true' } })).chain_parameters).toEqual({ correlation: 'mpls', symmetric: true });
    expect((await chain(store, [await g()], { chain_parameters: { correlation: 'nsh', symmetric: 'False' } })).chain_parameters).toEqual({ correlation: 'nsh', symmetric: false });
    const gx = await g();
    await refused(store, () => chain(store, [gx], { chain_parameters: { correlation: 'unknown' } }), 400, 'HTTPBadRequest');
    await refused(store, () => chain(store, [gx], { chain_parameters: { correlation: null } }), 400, 'HTTPBadRequest');
    await refused(store, () => chain(store, [gx], { chain_parameters: { symmetric: 'abc' } }), 400, 'InvalidInput');
    await refused(store, () => chain(store, [gx], { chain_parameters: { abc: 'def' } }), 400, 'HTTPBadRequest');
  });

  it('chain_id: client strings, range, explicit conflict (C.4.6), lowest unused allocation', async () => {
    const store = newStore();
    const g = () => group(store);
    expect((await chain(store, [await g()], { chain_id: '5' })).chain_id).toBe(5);
    expect((await chain(store, [await g()])).chain_id).toBe(1);
    expect((await chain(store, [await g()], { chain_id: 88 })).chain_id).toBe(88);
    const gx = await g();
    await refused(store, () => chain(store, [gx], { chain_id: 88 }), 400, 'PortChainChainIdInConflict');
    await refused(store, () => chain(store, [gx], { chain_id: 'abc' }), 400, 'InvalidInput');
    await refused(store, () => chain(store, [gx], { chain_id: null }), 400, 'InvalidInput');
    await refused(store, () => chain(store, [gx], { chain_id: -1 }), 400, 'HTTPBadRequest');
    await refused(store, () => chain(store, [gx], { chain_id: 65536 }), 400, 'HTTPBadRequest');
    expect((await chain(store, [gx], { chain_id: 65535, chain_parameters: { correlation: 'nsh' } })).chain_id).toBe(65535);
    expect((await chain(store, [await g()])).chain_id).toBe(2);
  });

  it('mpls chains cannot use chain_id > 4095 (20-bit label); nsh can', async () => {
    const store = newStore();
    const g = await group(store);
    const e = await refused(store, () => chain(store, [g], { chain_id: 4096 }), 400, 'SfcBadRequest');
    expect(e.message).toMatch(/20 bits/);
    expect((await chain(store, [g], { chain_id: 4095 })).chain_id).toBe(4095);
    expect((await chain(store, [await group(store)], { chain_id: 4096, chain_parameters: { correlation: 'nsh' } })).chain_id).toBe(4096);
  });

  it('C.4.5: nsh chain with an mpls pair is refused; uncorrelated pairs are fine', async () => {
    const store = newStore();
    const gm = await group(store, [await pair(store, 'm', mpls)]);
    const gn = await group(store, [await pair(store, 'n', nsh)]);
    const gu = await group(store, [await pair(store, 'u')]);
    await refused(store, () => chain(store, [gu, gm], { chain_parameters: { correlation: 'nsh' } }), 400, 'PortChainInconsistentCorrelations');
    await refused(store, () => chain(store, [gn]), 400, 'PortChainInconsistentCorrelations');
    await chain(store, [gn, gu], { chain_parameters: { correlation: 'nsh' } });
    await chain(store, [gm, gu]);
  });

  it('C.4.7-8: classifiers null/[]/one/two; same classifier 409; basic conflict with another chain 400', async () => {
    const store = newStore();
    for (const fcs of [null, []]) expect((await chain(store, [await group(store)], { flow_classifiers: fcs })).flow_classifiers).toEqual([]);
    const tcp = { protocol: 'tcp', source_ip_prefix: '10.0.0.0/24' };
    const a = await classifier(store, tcp);
    const b = await classifier(store, tcp); // same match, other logical source port
    const pc = await chain(store, [await group(store)], { flow_classifiers: [a.id, b.id] });
    expect(pc.flow_classifiers).toEqual([a.id, b.id]);
    const disjoint = await classifier(store, { protocol: 'udp' });
    await chain(store, [await group(store)], { flow_classifiers: disjoint.id }); // scalar → list
    const gx = await group(store);
    const e = await refused(store, () => chain(store, [gx], { flow_classifiers: [a.id] }), 409, 'FlowClassifierInUse');
    expect(e.message).toBe(`Flow Classifier ${a.id} in use.`);
    const c = await classifier(store, tcp);
    const conflictErr = await refused(store, () => chain(store, [gx], { flow_classifiers: [c.id] }), 400, 'PortChainFlowClassifierInConflict');
    expect(conflictErr.message).toContain(pc.id);
  });

  it('C.4.9: chain over groups with real pairs', async () => {
    const store = newStore();
    const g1 = await group(store, [await pair(store, 'a'), await pair(store, 'b')]);
    const g2 = await group(store, [await pair(store, 'c')]);
    expect((await chain(store, [g1, g2], { flow_classifiers: [(await classifier(store)).id] })).port_pair_groups).toEqual([g1.id, g2.id]);
  });

  it('C.4.10, 13: group and classifier list errors', async () => {
    const store = newStore();
    const g = await group(store);
    const create = (body: Record<string, unknown>) => store.create('port_chains', body);
    await refused(store, () => create({ port_pair_groups: [] }), 400, 'PortPairGroupNotSpecified');
    await refused(store, () => create({ port_pair_groups: null }), 400, 'PortPairGroupNotSpecified');
    await refused(store, () => create({}), 400, 'HTTPBadRequest');
    await refused(store, () => create({ port_pair_groups: ['unknown'] }), 400, 'HTTPBadRequest');
    await refused(store, () => create({ port_pair_groups: [g.id, g.id] }), 400, 'HTTPBadRequest');
    await refused(store, () => create({ port_pair_groups: [UNKNOWN] }), 404, 'PortPairGroupNotFound');
    await refused(store, () => create({ port_pair_groups: [g.id], flow_classifiers: [UNKNOWN] }), 404, 'FlowClassifierNotFound');
    await refused(store, () => create({ port_pair_groups: [g.id], flow_classifiers: ['unknown'] }), 400, 'HTTPBadRequest');
    const pc = await create({ port_pair_groups: g.id });
    const e = await refused(store, () => create({ port_pair_groups: [g.id] }), 409, 'InvalidPortPairGroups');
    expect(e.message).toContain(pc.id);
  });

  it('C.4.11: two consecutive tap groups 400; tap, default, tap fine', async () => {
    const store = newStore();
    const t1 = await group(store, [], { tap_enabled: true });
    const t2 = await group(store, [], { tap_enabled: true });
    const d = await group(store);
    await refused(store, () => chain(store, [d, t1, t2]), 400, 'ConsecutiveTapPPGNotSupported');
    await chain(store, [t1, d, t2]);
  });

  it('C.4.21: symmetric needs logical_destination_port on every classifier (SfcBadRequest)', async () => {
    const store = newStore();
    const fc = await classifier(store);
    const g = await group(store);
    await refused(store, () => chain(store, [g], { flow_classifiers: [fc.id], chain_parameters: { symmetric: 'true' } }), 400, 'SfcBadRequest');
    const pc = await chain(store, [g], { chain_parameters: { symmetric: true } });
    await refused(store, () => store.update('port_chains', pc.id, { flow_classifiers: [fc.id] }), 400, 'SfcBadRequest');
  });
});

describe('port chains: update and delete', () => {
  it('C.4.15: add, remove, replace classifiers; swap for an overlapping one; conflict with another chain', async () => {
    const store = newStore();
    const src = (await port(store, 'src')).id;
    const fc1 = await classifier(store, { logical_source_port: src, protocol: 'tcp' });
    const fc2 = await classifier(store, { logical_source_port: src, protocol: 'udp' });
    const pc = await chain(store, [await group(store)], { flow_classifiers: [fc1.id] });
    let u = await store.update('port_chains', pc.id, { name: 'n', description: 'd', flow_classifiers: [fc1.id, fc2.id] });
    expect(u).toMatchObject({ name: 'n', description: 'd', flow_classifiers: [fc1.id, fc2.id] });
    u = await store.update('port_chains', pc.id, { flow_classifiers: [fc2.id] });
    expect(store.get('port_chains', pc.id)).toMatchObject({ flow_classifiers: [fc2.id] });
    // fc1 is free again: it can be attached elsewhere
    const other = await chain(store, [await group(store)], { flow_classifiers: [fc1.id] });
    // fc3 differs from fc2 only in logical source port: replacing fc2 by it is fine (the chain excludes itself)
    const fc3 = await classifier(store, { protocol: 'udp' });
    await store.update('port_chains', pc.id, { flow_classifiers: [fc3.id] });
    // fc4 basically conflicts with fc1 in the other chain
    const fc4 = await classifier(store, { protocol: 'tcp' });
    const e = await refused(store, () => store.update('port_chains', pc.id, { flow_classifiers: [fc4.id] }), 400, 'PortChainFlowClassifierInConflict');
    expect(e.message).toContain(other.id);
    await refused(store, () => store.update('port_chains', pc.id, { flow_classifiers: [fc1.id] }), 409, 'FlowClassifierInUse');
  });

  it('C.4.16, 19: add, remove, replace groups; identical list 409; consecutive taps 400', async () => {
    const store = newStore();
    const [g1, g2, g3] = [await group(store), await group(store), await group(store)];
    const pc = await chain(store, [g1]);
    expect((await store.update('port_chains', pc.id, { port_pair_groups: [g1.id, g2.id] })).port_pair_groups).toEqual([g1.id, g2.id]);
    expect((await store.update('port_chains', pc.id, { port_pair_groups: [g2.id] })).port_pair_groups).toEqual([g2.id]);
    expect((await store.update('port_chains', pc.id, { port_pair_groups: [g3.id, g1.id] })).port_pair_groups).toEqual([g3.id, g1.id]);
    await store.update('port_chains', pc.id, { port_pair_groups: [g3.id, g1.id] }); // itself is excluded
    const other = await chain(store, [g2]);
    await refused(store, () => store.update('port_chains', pc.id, { port_pair_groups: [g2.id] }), 409, 'InvalidPortPairGroups');
    await refused(store, () => store.update('port_chains', pc.id, { port_pair_groups: [] }), 400, 'PortPairGroupNotSpecified');
    await refused(store, () => store.update('port_chains', pc.id, { port_pair_groups: [UNKNOWN] }), 404, 'PortPairGroupNotFound');
    const [t1, t2] = [await group(store, [], { tap_enabled: true }), await group(store, [], { tap_enabled: true })];
    const tc = await chain(store, [t1]);
    await refused(store, () => store.update('port_chains', tc.id, { port_pair_groups: [t1.id, t2.id] }), 400, 'ConsecutiveTapPPGNotSupported');
    await store.update('port_chains', tc.id, { port_pair_groups: [t1.id, g3.id] });
    expect(other.id).not.toBe(pc.id);
  });

  it('C.4.17: read-only chain_parameters / chain_id; non-UUID lists 400; unknown chain 404', async () => {
    const store = newStore();
    const pc = await chain(store, [await group(store)]);
    for (const body of [{ chain_parameters: { correlation: 'mpls' } }, { chain_parameters: {} }, { chain_id: 5 }, { flow_classifiers: ['x'] }, { port_pair_groups: ['x'] }]) {
      await refused(store, () => store.update('port_chains', pc.id, body), 400, 'HTTPBadRequest');
    }
    await refused(store, () => store.update('port_chains', UNKNOWN, { name: 'x' }), 404, 'PortChainNotFound');
  });

  it('update re-checks correlation (beyond the reference)', async () => {
    const store = newStore();
    const pc = await chain(store, [await group(store)], { chain_parameters: { correlation: 'nsh' } });
    const gm = await group(store, [await pair(store, 'm', mpls)]);
    await refused(store, () => store.update('port_chains', pc.id, { port_pair_groups: [gm.id] }), 400, 'PortChainInconsistentCorrelations');
  });

  it('C.4.18, 20: chains in a graph: groups/classifiers 409, name 200; delete 409; delete frees, group survives', async () => {
    const store = newStore();
    const [g1, g2] = [await group(store), await group(store)];
    const [pc1, pc2] = [await chain(store, [g1]), await chain(store, [g2])];
    const sg = await graph(store, { [pc1.id]: [pc2.id] });
    for (const [id, g] of [[pc1.id, g1], [pc2.id, g2]] as const) {
      const e = await refused(store, () => store.update('port_chains', id, { port_pair_groups: [g.id] }), 409, 'ServiceGraphPortChainInUse');
      expect(e.message).toBe(`Port Chain ${id} in use.`);
      await refused(store, () => store.update('port_chains', id, { flow_classifiers: [] }), 409, 'ServiceGraphPortChainInUse');
      await refused(store, () => store.delete('port_chains', id), 409, 'ServiceGraphPortChainInUse');
    }
    expect(await store.update('port_chains', pc1.id, { name: 'n', description: 'd' })).toMatchObject({ name: 'n' });
    await store.delete('service_graphs', sg.id);
    await store.delete('port_chains', pc1.id);
    expect(store.get('port_chains', pc1.id)).toBeUndefined();
    expect(store.get('port_pair_groups', g1.id)).toBeDefined();
    await refused(store, () => store.delete('port_chains', pc1.id), 404, 'PortChainNotFound');
    await refused(store, () => store.delete('port_chains', '1'), 404, 'PortChainNotFound');
  });
});
