/*
 * Service graphs (spec A.7, C.5).
 */
import { describe, expect, it } from 'vitest';
import type { PortChain } from '../src/control/model.js';
import type { Store } from '../src/control/store.js';
import { UNKNOWN, chain, classifier, graph, group, newStore, pair, refused } from './store-fixture.js';

/** n chains over empty groups (rules on correlated pairs pass trivially). */
async function chains(store: Store, n: number, extra: Record<string, unknown> = {}): Promise<PortChain[]> {
  const out: PortChain[] = [];
  for (let i = 0; i < n; i++) out.push(await chain(store, [await group(store)], extra));
  return out;
}

describe('service graphs', () => {
  it('C.5.1: branch ends must be explicitly correlated', async () => {
    const store = newStore();
    const mpls = { service_function_parameters: { correlation: 'mpls' } };
    const corr = async () => group(store, [await pair(store, 'c', mpls)]);
    const plain = async () => group(store, [await pair(store, 'p')]);
    // source chain's last group uncorrelated
    const [s1, d1] = [await chain(store, [await corr(), await plain()]), await chain(store, [await corr()])];
    await refused(store, () => graph(store, { [s1.id]: [d1.id] }), 400, 'ServiceGraphImpossibleBranching');
    // destination chain's first group uncorrelated
    const [s2, d2] = [await chain(store, [await plain(), await corr()]), await chain(store, [await plain(), await corr()])];
    await refused(store, () => graph(store, { [s2.id]: [d2.id] }), 400, 'ServiceGraphImpossibleBranching');
    // both mpls (the uncorrelated groups are elsewhere in the chains)
    const sg = await graph(store, { [s2.id]: [d1.id] });
    expect(sg.port_chains).toEqual({ [s2.id]: [d1.id] });
  });

  it('all chains share one correlation (ServiceGraphInconsistentEncapsulation)', async () => {
    const store = newStore();
    const [m] = await chains(store, 1);
    const [n1, n2] = await chains(store, 2, { chain_parameters: { correlation: 'nsh' } });
    await refused(store, () => graph(store, { [m!.id]: [n1!.id] }), 400, 'ServiceGraphInconsistentEncapsulation');
    await refused(store, () => graph(store, { [n1!.id]: [n2!.id], [m!.id]: [n2!.id] }), 400, 'ServiceGraphInconsistentEncapsulation');
    await graph(store, { [n1!.id]: [n2!.id] });
  });

  it('C.5.2-3, 5, 9: linear, branching, several initial chains, joins; duplicated destination 400', async () => {
    const store = newStore();
    const [pc1, pc2, pc3, pc4] = await chains(store, 4);
    const sg = await graph(store, { [pc1!.id]: [pc2!.id, pc3!.id] });
    expect(sg).toMatchObject({ name: '', description: '', port_chains: { [pc1!.id]: [pc2!.id, pc3!.id] } });
    await store.delete('service_graphs', sg.id);
    await refused(store, () => graph(store, { [pc1!.id]: [pc2!.id, pc2!.id] }), 400, 'ServiceGraphPortChainInConflict');
    await graph(store, { [pc1!.id]: [pc2!.id], [pc3!.id]: [pc4!.id], [pc4!.id]: [pc2!.id] });
    const [a, b, c, d] = await chains(store, 4);
    await graph(store, { [a!.id]: [b!.id], [b!.id]: [c!.id, d!.id], [c!.id]: [d!.id] });
  });

  it('C.5.4: a chain already in a graph 409 (checked before existence)', async () => {
    const store = newStore();
    const [pc1, pc2, pc3] = await chains(store, 3);
    await graph(store, { [pc1!.id]: [pc2!.id] });
    await refused(store, () => graph(store, { [pc3!.id]: [pc2!.id] }), 409, 'ServiceGraphInvalidPortChains');
    await refused(store, () => graph(store, { [pc2!.id]: [UNKNOWN] }), 409, 'ServiceGraphInvalidPortChains');
  });

  it('C.5.6 and rule 4: destination classifiers of one source must not basically conflict', async () => {
    const store = newStore();
    const [src] = await chains(store, 1);
    const tcp4 = await classifier(store, { protocol: 'tcp' });
    const udp4 = await classifier(store, { protocol: 'udp' });
    const v6 = await classifier(store, { ethertype: 'IPv6' });
    const d1 = await chain(store, [await group(store)], { flow_classifiers: [tcp4.id] });
    const d2 = await chain(store, [await group(store)], { flow_classifiers: [udp4.id, v6.id] });
    await graph(store, { [src!.id]: [d1.id, d2.id] });

    const store2 = newStore();
    const [s] = await chains(store2, 1);
    // differ only in logical source port: fine in one chain, a conflict on a branch point
    const [a, b] = [await classifier(store2, { protocol: 'tcp' }), await classifier(store2, { protocol: 'tcp' })];
    const same = await chain(store2, [await group(store2)], { flow_classifiers: [a.id, b.id] });
    await refused(store2, () => graph(store2, { [s!.id]: [same.id] }), 400, 'ServiceGraphFlowClassifierInConflict');
  });

  it('C.5.7: direct and indirect loops', async () => {
    const store = newStore();
    const [pc1, pc2, pc3, pc4] = await chains(store, 4);
    await refused(store, () => graph(store, { [pc2!.id]: [pc2!.id] }), 400, 'ServiceGraphLoopDetected');
    await refused(store, () => graph(store, { [pc1!.id]: [pc2!.id], [pc2!.id]: [pc3!.id], [pc3!.id]: [pc4!.id], [pc4!.id]: [pc2!.id] }), 400, 'ServiceGraphLoopDetected');
  });

  it('C.5.8: unknown source or destination 404; invalid UUIDs 400 InvalidUUID; port_chains required', async () => {
    const store = newStore();
    const [pc1] = await chains(store, 1);
    await refused(store, () => graph(store, { [pc1!.id]: [UNKNOWN] }), 404, 'PortChainNotFound');
    await refused(store, () => graph(store, { [UNKNOWN]: [pc1!.id] }), 404, 'PortChainNotFound');
    await refused(store, () => graph(store, { abc: [pc1!.id] }), 400, 'InvalidUUID');
    await refused(store, () => graph(store, { [pc1!.id]: ['abc'] }), 400, 'InvalidUUID');
    await refused(store, () => store.create('service_graphs', { port_chains: { [pc1!.id]: pc1!.id } }), 400, 'HTTPBadRequest');
    await refused(store, () => store.create('service_graphs', { port_chains: [pc1!.id] }), 400, 'HTTPBadRequest');
    await refused(store, () => store.create('service_graphs', {}), 400, 'HTTPBadRequest');
  });

  it('C.5.10-11: update name/description only; delete frees the chains', async () => {
    const store = newStore();
    const [pc1, pc2] = await chains(store, 2);
    const sg = await graph(store, { [pc1!.id]: [pc2!.id] });
    expect(await store.update('service_graphs', sg.id, { name: 'n', description: 'd' })).toMatchObject({ name: 'n', description: 'd' });
    await refused(store, () => store.update('service_graphs', sg.id, { port_chains: {} }), 400, 'HTTPBadRequest');
    await store.delete('service_graphs', sg.id);
    expect(store.get('service_graphs', sg.id)).toBeUndefined();
    await refused(store, () => store.delete('service_graphs', sg.id), 404, 'ServiceGraphNotFound');
    expect(store.get('port_chains', pc1!.id)).toBeDefined();
    await store.update('port_chains', pc1!.id, { port_pair_groups: [(await group(store)).id] });
  });
});
