/*
 * Port pair groups (spec A.4, C.2).
 */
import { describe, expect, it } from 'vitest';
import { UNKNOWN, chain, graph, group, newStore, pair, refused } from './store-fixture.js';

const DEFAULT_PARAMS = { lb_fields: [], ppg_n_tuple_mapping: { ingress_n_tuple: {}, egress_n_tuple: {} } };

describe('port pair groups: create', () => {
  it('C.2.1: {} gives the defaults and group_id 1', async () => {
    const store = newStore();
    const g = await group(store);
    expect(g).toMatchObject({
      name: '',
      description: '',
      port_pairs: [],
      port_pair_group_parameters: DEFAULT_PARAMS,
      tap_enabled: false,
      group_id: 1,
    });
  });

  it('C.2.2-4: parameters echoed, null/{} → defaults, one missing key filled, tap with defaults', async () => {
    const store = newStore();
    const params = {
      lb_fields: ['ip_src', 'ip_dst'],
      ppg_n_tuple_mapping: { ingress_n_tuple: { source_ip_prefix: null }, egress_n_tuple: { destination_ip_prefix: null } },
    };
    const g = await group(store, [], { name: 'g', description: 'd', port_pair_group_parameters: params, tap_enabled: false });
    expect(g.port_pair_group_parameters).toEqual(params);
    for (const p of [null, {}]) {
      expect((await group(store, [], { port_pair_group_parameters: p })).port_pair_group_parameters).toEqual(DEFAULT_PARAMS);
    }
    const partial = await group(store, [], { port_pair_group_parameters: { lb_fields: [], ppg_n_tuple_mapping: {} } });
    expect(partial.port_pair_group_parameters).toEqual(DEFAULT_PARAMS);
    const lbOnly = await group(store, [], { port_pair_group_parameters: { lb_fields: ['eth_src', 'eth_src'] } });
    expect(lbOnly.port_pair_group_parameters).toEqual({ ...DEFAULT_PARAMS, lb_fields: ['eth_src', 'eth_src'] });
    const tap = await group(store, [], { tap_enabled: 'true', port_pair_group_parameters: {} });
    expect(tap).toMatchObject({ tap_enabled: true, port_pair_group_parameters: DEFAULT_PARAMS });
  });

  it('n-tuple mapping values are validated and converted like classifier fields', async () => {
    const store = newStore();
    const g = await group(store, [], {
      port_pair_group_parameters: {
        ppg_n_tuple_mapping: { egress_n_tuple: { source_ip_prefix: '10.0.0.0/8', destination_port_range_min: '80' } },
      },
    });
    expect(g.port_pair_group_parameters.ppg_n_tuple_mapping).toEqual({
      ingress_n_tuple: {},
      egress_n_tuple: { source_ip_prefix: '10.0.0.0/8', destination_port_range_min: 80 },
    });
    const mapping = (m: unknown) => group(store, [], { port_pair_group_parameters: { ppg_n_tuple_mapping: m } });
    await refused(store, () => mapping({ ingress_n_tuple: { source_ip_prefix: '10.300.0.10/16' } }), 400, 'HTTPBadRequest');
    await refused(store, () => mapping({ ingress_n_tuple: { source_port_range_min: 70000 } }), 400, 'FlowClassifierInvalidPortValue');
    await refused(store, () => mapping({ ingress_n_tuple: { sssource_ip_prefix: '10.0.0.0/8' } }), 400, 'PPGParametersInvalidNTupleMappingParameter');
    await refused(store, () => mapping({ egress_n_tuple: { protool: 'tcp' } }), 400, 'PPGParametersInvalidNTupleMappingParameter');
    await refused(store, () => mapping({ sideways_n_tuple: {} }), 400, 'PPGParametersInvalidNTupleMappingParameter');
    await refused(store, () => mapping({ ingress_n_tuple: 'x' }), 400, 'PPGParametersInvalidNTupleMappingParameter');
  });

  it('C.2.5-6: several pairs; tap with one pair ok, two 400; correlations must agree', async () => {
    const store = newStore();
    const [p1, p2] = [await pair(store, 'p1'), await pair(store, 'p2')];
    expect((await group(store, [p1, p2])).port_pairs).toEqual([p1.id, p2.id]);
    const [t1, t2] = [await pair(store, 't1'), await pair(store, 't2')];
    await refused(store, () => group(store, [t1, t2], { tap_enabled: true }), 400, 'MultiplePortPairsInTapPPGNotSupported');
    expect((await group(store, [t1], { tap_enabled: true })).tap_enabled).toBe(true);
    const mpls = { service_function_parameters: { correlation: 'mpls' } };
    const [m1, m2] = [await pair(store, 'm1', mpls), await pair(store, 'm2', mpls)];
    const n1 = await pair(store, 'n1');
    const ns = await pair(store, 'ns', { service_function_parameters: { correlation: 'nsh' } });
    await refused(store, () => group(store, [m1, n1]), 400, 'InconsistentCorrelations');
    await refused(store, () => group(store, [n1, m1]), 400, 'InconsistentCorrelations');
    await refused(store, () => group(store, [m1, ns]), 400, 'InconsistentCorrelations');
    expect((await group(store, [m1, m2])).port_pairs).toHaveLength(2);
  });

  it('C.2.7-9: bad pair ids, unknown pair 404, pair in another group 409, bad parameters', async () => {
    const store = newStore();
    const pp = await pair(store, 'pp');
    await refused(store, () => store.create('port_pair_groups', { port_pairs: ['unknown'] }), 400, 'HTTPBadRequest');
    await refused(store, () => store.create('port_pair_groups', { port_pairs: [pp.id, pp.id] }), 400, 'HTTPBadRequest');
    await refused(store, () => store.create('port_pair_groups', { port_pairs: [UNKNOWN] }), 404, 'PortPairNotFound');
    await group(store, [pp]);
    const e = await refused(store, () => group(store, [pp]), 409, 'PortPairInUse');
    expect(e.message).toBe(`Port Pair ${pp.id} in use.`);
    const params = (p: unknown) => store.create('port_pair_groups', { port_pair_group_parameters: p });
    await refused(store, () => params({ abc: 'def' }), 400, 'HTTPBadRequest');
    await refused(store, () => params({ service_type: 'x' }), 400, 'HTTPBadRequest');
    await refused(store, () => params({ lb_fields: 'ip_src' }), 400, 'HTTPBadRequest');
    const lb = await refused(store, () => params({ lb_fields: ['bogus'] }), 400, 'HTTPBadRequest');
    expect(lb.message).toBe('Invalid input for port_pair_group_parameters. Reason: Illegal values in a list: bogus.');
    await refused(store, () => params(['ip_src']), 400, 'HTTPBadRequest');
    await refused(store, () => store.create('port_pair_groups', { tap_enabled: 'two' }), 400, 'InvalidInput');
    await refused(store, () => store.create('port_pair_groups', { port_pairs: 'x' }), 400, 'HTTPBadRequest');
  });

  it('port_pairs null → []; group_id is the lowest unused', async () => {
    const store = newStore();
    const g1 = await group(store, [], { port_pairs: null });
    expect(g1.port_pairs).toEqual([]);
    const g2 = await group(store);
    const g3 = await group(store);
    expect([g1.group_id, g2.group_id, g3.group_id]).toEqual([1, 2, 3]);
    await store.delete('port_pair_groups', g2.id);
    expect((await group(store)).group_id).toBe(2);
    expect((await group(store)).group_id).toBe(4);
  });
});

describe('port pair groups: update and delete', () => {
  it('C.2.12: name, description and port_pairs replaced; non-UUID pair 400; freed pairs reusable', async () => {
    const store = newStore();
    const [p1, p2, p3] = [await pair(store, 'p1'), await pair(store, 'p2'), await pair(store, 'p3')];
    const g = await group(store, [p1, p2]);
    const u = await store.update('port_pair_groups', g.id, { name: 'n', description: 'd', port_pairs: [p3.id, p1.id] });
    expect(u).toMatchObject({ name: 'n', description: 'd', port_pairs: [p3.id, p1.id], group_id: g.group_id });
    expect(store.get('port_pair_groups', g.id)).toEqual(u);
    await refused(store, () => store.update('port_pair_groups', g.id, { port_pairs: ['abc'] }), 400, 'HTTPBadRequest');
    await refused(store, () => store.update('port_pair_groups', g.id, { port_pairs: [UNKNOWN] }), 404, 'PortPairNotFound');
    const other = await group(store, [p2]);
    await refused(store, () => store.update('port_pair_groups', g.id, { port_pairs: [p2.id] }), 409, 'PortPairInUse');
    await store.delete('port_pair_groups', other.id);
    await store.update('port_pair_groups', g.id, { port_pairs: [p2.id] });
  });

  it('C.2.13: correlation re-checked on update', async () => {
    const store = newStore();
    const mpls = { service_function_parameters: { correlation: 'mpls' } };
    const [m1, m2] = [await pair(store, 'm1', mpls), await pair(store, 'm2', mpls)];
    const n1 = await pair(store, 'n1');
    const g = await group(store, [m1]);
    await refused(store, () => store.update('port_pair_groups', g.id, { port_pairs: [m1.id, n1.id] }), 400, 'InconsistentCorrelations');
    expect((await store.update('port_pair_groups', g.id, { port_pairs: [m1.id, m2.id] })).port_pairs).toHaveLength(2);
  });

  it('C.2.14 and read-only: tap_enabled, parameters, group_id, id on PUT are 400; tap group keeps ≤1 pair', async () => {
    const store = newStore();
    const [p1, p2] = [await pair(store, 'p1'), await pair(store, 'p2')];
    const g = await group(store, [p1], { tap_enabled: true });
    for (const body of [{ tap_enabled: false }, { port_pair_group_parameters: {} }, { group_id: 9 }, { id: UNKNOWN }]) {
      await refused(store, () => store.update('port_pair_groups', g.id, body), 400, 'HTTPBadRequest');
    }
    await refused(store, () => store.update('port_pair_groups', g.id, { port_pairs: [p1.id, p2.id] }), 400, 'MultiplePortPairsInTapPPGNotSupported');
  });

  it('update re-checks the correlation of chains and graphs using the group (beyond the reference)', async () => {
    const store = newStore();
    const mpls = { service_function_parameters: { correlation: 'mpls' } };
    const nsh = { service_function_parameters: { correlation: 'nsh' } };
    const g = await group(store, [await pair(store, 'm1', mpls)]);
    await chain(store, [g]);
    const ns = await pair(store, 'ns', nsh);
    await refused(store, () => store.update('port_pair_groups', g.id, { port_pairs: [ns.id] }), 400, 'PortChainInconsistentCorrelations');

    // a graph source's last group must stay explicitly correlated: an uncorrelated pair is refused
    const src = await group(store, [await pair(store, 's1', mpls)]);
    const dst = await group(store, [await pair(store, 'd1', mpls)]);
    const [pc1, pc2] = [await chain(store, [src]), await chain(store, [dst])];
    await graph(store, { [pc1.id]: [pc2.id] });
    const plain = await pair(store, 'plain');
    await refused(store, () => store.update('port_pair_groups', src.id, { port_pairs: [plain.id] }), 400, 'ServiceGraphImpossibleBranching');
    await refused(store, () => store.update('port_pair_groups', dst.id, { port_pairs: [plain.id] }), 400, 'ServiceGraphImpossibleBranching');
  });

  it('C.2.15: delete; in use by a chain 409; unknown 404', async () => {
    const store = newStore();
    const g = await group(store);
    const pc = await chain(store, [g]);
    const e = await refused(store, () => store.delete('port_pair_groups', g.id), 409, 'PortPairGroupInUse');
    expect(e.message).toBe(`Port Pair Group ${g.id} in use.`);
    await store.delete('port_chains', pc.id);
    await store.delete('port_pair_groups', g.id);
    expect(store.get('port_pair_groups', g.id)).toBeUndefined();
    await refused(store, () => store.delete('port_pair_groups', g.id), 404, 'PortPairGroupNotFound');
    await refused(store, () => store.delete('port_pair_groups', '1'), 404, 'PortPairGroupNotFound');
  });
});
