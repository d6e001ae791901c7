/*
 * Store: transactions (persist, precommit veto, postcommit restore, serialisation, frozen
 * snapshots), the generic attribute rules (spec A.1), ports (A.2) and port pairs (A.3, C.1).
 */
import { describe, expect, it } from 'vitest';
import { DriverManager, type Driver } from '../src/control/driver.js';
import type { Plan } from '../src/control/plan.js';
import { NeutronError, badRequest } from '../src/control/errors.js';
import { emptyState, type Port, type State } from '../src/control/model.js';
import { Store } from '../src/control/store.js';
import { UNKNOWN, group, newStore, pair, port, refused } from './store-fixture.js';

class FakeDriver implements Driver {
  readonly name = 'fake';
  readonly calls: string[] = [];
  veto: NeutronError | undefined;
  failPostcommit = false;
  delayMs = 0;
  inFlight = 0;
  maxInFlight = 0;

  precommit(next: Plan): NeutronError[] {
    this.calls.push(`pre:${next.ports.length}`);
    return this.veto ? [this.veto] : [];
  }

  async postcommit(next: Plan): Promise<void> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    this.calls.push(`post:${next.ports.length}`);
    await new Promise((r) => setTimeout(r, this.delayMs));
    this.inFlight--;
    if (this.failPostcommit && next.ports.length > 1) throw new Error('switch unreachable');
  }
}

describe('transactions', () => {
  it('commits: revision, creation order, persist sees the next state before the ack', async () => {
    const persisted: State[] = [];
    const store = newStore({ persist: (s) => void persisted.push(s) });
    expect(store.revision).toBe(0);
    const a = await port(store, 'a');
    const b = await port(store, 'b');
    expect(store.revision).toBe(2);
    expect(store.list('ports').map((p) => p.id)).toEqual([a.id, b.id]);
    expect(persisted).toHaveLength(2);
    expect(persisted[1]!.ports.map((p) => p.name)).toEqual(['a', 'b']);
    expect(store.get('ports', a.id)).toEqual(a);
  });

  it('a failing persist changes nothing', async () => {
    const store = newStore({
      persist: () => {
        throw new Error('disk full');
      },
    });
    await expect(port(store, 'a')).rejects.toThrow('disk full');
    expect(store.state).toEqual(emptyState());
    expect(store.revision).toBe(0);
  });

  it('precommit veto: the driver error is returned and nothing is stored', async () => {
    const driver = new FakeDriver();
    const persisted: State[] = [];
    const store = newStore({ drivers: new DriverManager([driver]), persist: (s) => void persisted.push(s) });
    driver.veto = badRequest('SfcBadRequest', 'no room on the switch');
    const e = await refused(store, () => port(store, 'a'), 400, 'SfcBadRequest');
    expect(e.message).toBe('no room on the switch');
    expect(persisted).toHaveLength(0);
    expect(driver.calls).toEqual(['pre:1']);
  });

  it('postcommit failure restores the previous state, persists it again and reports SfcDriverError', async () => {
    const driver = new FakeDriver();
    const persisted: State[] = [];
    const store = newStore({ drivers: new DriverManager([driver]), persist: (s) => void persisted.push(s) });
    await port(store, 'kept');
    driver.failPostcommit = true;
    const e = await refused(store, () => port(store, 'lost'), 500, 'SfcDriverError');
    expect(e.message).toContain('switch unreachable');
    expect(persisted.map((s) => s.ports.length)).toEqual([1, 2, 1]);
    // the failing driver saw the change (only drivers that applied it are undone)
    expect(driver.calls).toEqual(['pre:1', 'post:1', 'pre:2', 'post:2']);
    expect(store.list('ports').map((p) => p.name)).toEqual(['kept']);
  });

  it('serialises concurrent writes: each validates against the previous one, postcommits never overlap', async () => {
    const driver = new FakeDriver();
    driver.delayMs = 2;
    const store = newStore({ drivers: new DriverManager([driver]) });
    const groups = await Promise.all(Array.from({ length: 8 }, () => store.create('port_pair_groups', {})));
    expect(groups.map((g) => g.group_id).sort((x, y) => x - y)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(driver.maxInFlight).toBe(1);
    expect(store.revision).toBe(8);

    // two identical port pairs racing: exactly one wins
    const [a, b] = [await port(store, 'a'), await port(store, 'b')];
    const results = await Promise.allSettled([
      store.create('port_pairs', { ingress: a.id, egress: b.id }),
      store.create('port_pairs', { ingress: a.id, egress: b.id }),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect((lost.reason as NeutronError).type).toBe('PortPairIngressEgressInUse');
  });

  it('a rejected write allocates nothing (group_id / chain_id stay free)', async () => {
    const store = newStore();
    await refused(store, () => store.create('port_pair_groups', { port_pairs: [UNKNOWN] }), 404, 'PortPairNotFound');
    const g = await group(store);
    expect(g.group_id).toBe(1);
    await refused(store, () => store.create('port_chains', { port_pair_groups: [g.id], chain_id: 'x' }), 400, 'InvalidInput');
    const pc = await store.create('port_chains', { port_pair_groups: [g.id] });
    expect(pc.chain_id).toBe(1);
  });

  it('committed snapshots are frozen', async () => {
    const store = newStore();
    const p = await port(store, 'a');
    expect(() => {
      (store.state.ports as Port[]).push(p);
    }).toThrow(TypeError);
    expect(() => {
      (store.state.ports[0] as { name: string }).name = 'x';
    }).toThrow(TypeError);
  });

  it('replace swaps a whole state through the drivers without validation', async () => {
    const driver = new FakeDriver();
    const store = newStore({ drivers: new DriverManager([driver]) });
    const next = emptyState();
    // a dangling reference: replace does not validate
    next.port_pairs.push({
      id: UNKNOWN,
      name: 'loaded',
      description: '',
      tenant_id: 'sfc',
      project_id: 'sfc',
      ingress: UNKNOWN,
      egress: UNKNOWN,
      service_function_parameters: { correlation: null, weight: 1 },
    });
    await store.replace(next);
    expect(store.revision).toBe(1);
    expect(store.list('port_pairs').map((p) => p.name)).toEqual(['loaded']);
    expect(driver.calls).toEqual(['pre:0', 'post:0']);
    next.port_pairs.length = 0; // the store took a copy
    expect(store.list('port_pairs')).toHaveLength(1);
  });

  it('initial state is used as given (copied, not frozen in place)', () => {
    const initial = emptyState();
    const store = new Store({ initial, linkUp: () => false });
    expect(store.state).toEqual(initial);
    expect(Object.isFrozen(initial)).toBe(false);
  });
});

describe('generic attribute rules (A.1)', () => {
  it('the body must be an object', async () => {
    const store = newStore();
    for (const body of [null, [], 'x', 3]) {
      await refused(store, () => store.create('port_pair_groups', body), 400, 'HTTPBadRequest');
    }
  });

  it('unknown attributes, id and read-only attributes on POST are 400', async () => {
    const store = newStore();
    const e = await refused(store, () => store.create('port_pair_groups', { hello: 1, bye: 2 }), 400, 'HTTPBadRequest');
    expect(e.message).toBe("Unrecognized attribute(s) 'hello, bye'");
    const id = await refused(store, () => store.create('port_pair_groups', { id: UNKNOWN }), 400, 'HTTPBadRequest');
    expect(id.message).toBe("Attribute 'id' not allowed in POST");
    await refused(store, () => store.create('port_pair_groups', { group_id: 3 }), 400, 'HTTPBadRequest');
  });

  it('tenant_id / project_id: default project, copied, mismatch 400, read-only on PUT', async () => {
    const store = newStore({ projectId: 'lab' });
    const g = await group(store);
    expect([g.tenant_id, g.project_id]).toEqual(['lab', 'lab']);
    const t = await group(store, [], { tenant_id: 'alice' });
    expect([t.tenant_id, t.project_id]).toEqual(['alice', 'alice']);
    const p = await group(store, [], { project_id: 'bob' });
    expect([p.tenant_id, p.project_id]).toEqual(['bob', 'bob']);
    await refused(store, () => group(store, [], { tenant_id: 'a', project_id: 'b' }), 400, 'HTTPBadRequest');
    await refused(store, () => group(store, [], { project_id: 'x'.repeat(256) }), 400, 'HTTPBadRequest');
    const e = await refused(store, () => store.update('port_pair_groups', g.id, { tenant_id: 'lab' }), 400, 'HTTPBadRequest');
    expect(e.message).toBe('Cannot update read-only attribute tenant_id');
  });

  it('PUT: invalid body on an unknown id is 400, valid body 404', async () => {
    const store = newStore();
    await refused(store, () => store.update('port_pairs', UNKNOWN, { ingress: UNKNOWN }), 400, 'HTTPBadRequest');
    await refused(store, () => store.update('port_pairs', UNKNOWN, { name: 'x' }), 404, 'PortPairNotFound');
    await refused(store, () => store.update('port_pairs', '1', { name: 'x' }), 404, 'PortPairNotFound');
  });

  it('name and description: strings of at most 255', async () => {
    const store = newStore();
    expect((await group(store, [], { name: 'n'.repeat(255) })).name).toHaveLength(255);
    await refused(store, () => group(store, [], { name: 'n'.repeat(256) }), 400, 'HTTPBadRequest');
    await refused(store, () => group(store, [], { description: 'd'.repeat(256) }), 400, 'HTTPBadRequest');
    await refused(store, () => group(store, [], { name: null }), 400, 'HTTPBadRequest');
    await refused(store, () => group(store, [], { name: 5 }), 400, 'HTTPBadRequest');
  });
});

describe('ports (A.2)', () => {
  it('create: defaults, MAC normalised, status from the link', async () => {
    let up = false;
    const store = newStore({ linkUp: (ifname) => up && ifname === 'sfct-a' });
    const p = await store.create('ports', {
      name: 'p1',
      mac_address: '0A-BC-DE-F0-12-34',
      'binding:profile': { interface: 'sfct-a', vlan: 5 },
    });
    expect(p).toMatchObject({
      name: 'p1',
      description: '',
      mac_address: '0a:bc:de:f0:12:34',
      'binding:profile': { interface: 'sfct-a', vlan: 5 },
      admin_state_up: true,
      status: 'DOWN',
      tenant_id: 'sfc',
      project_id: 'sfc',
    });
    expect(p.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    up = true;
    expect(store.get('ports', p.id)).toMatchObject({ status: 'ACTIVE' });
    expect(store.list('ports')[0]).toMatchObject({ status: 'ACTIVE' });
    await store.update('ports', p.id, { admin_state_up: 'false' });
    expect(store.get('ports', p.id)).toMatchObject({ status: 'DOWN', admin_state_up: false });
  });

  it('a missing MAC is generated the Neutron way', async () => {
    const store = newStore();
    const p = await store.create('ports', { 'binding:profile': { interface: 'eth0' } });
    expect(p.mac_address).toMatch(/^fa:16:3e(:[0-9a-f]{2}){3}$/);
  });

  it('refusals: MAC format, unicast, binding:profile shape, status is read-only', async () => {
    const store = newStore();
    const ok = { 'binding:profile': { interface: 'eth0' } };
    for (const mac of ['zz:00:00:00:00:01', '02:00:00:00:01', '0200.0000.0001', 5, null, '01:00:5e:00:00:01', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00']) {
      await refused(store, () => store.create('ports', { ...ok, mac_address: mac }), 400, 'HTTPBadRequest');
    }
    await refused(store, () => store.create('ports', { mac_address: '02:00:00:00:00:01' }), 400, 'HTTPBadRequest');
    for (const profile of [null, 'eth0', {}, { interface: 5 }, { interface: '' }, { interface: 'a/b' }, { interface: 'x'.repeat(16) }]) {
      await refused(store, () => store.create('ports', { 'binding:profile': profile }), 400, 'HTTPBadRequest');
    }
    await refused(store, () => store.create('ports', { ...ok, status: 'ACTIVE' }), 400, 'HTTPBadRequest');
    await refused(store, () => store.create('ports', { ...ok, admin_state_up: 'maybe' }), 400, 'InvalidInput');
  });

  it('two ports on one interface need different MACs (409 MacAddressInUse)', async () => {
    const store = newStore();
    const mac = '02:00:00:00:00:0a';
    const a = await store.create('ports', { mac_address: mac, 'binding:profile': { interface: 'eth0' } });
    await refused(
      store,
      () => store.create('ports', { mac_address: mac.toUpperCase(), 'binding:profile': { interface: 'eth0' } }),
      409,
      'MacAddressInUse',
    );
    const b = await store.create('ports', { mac_address: mac, 'binding:profile': { interface: 'eth1' } });
    await refused(store, () => store.update('ports', b.id, { 'binding:profile': { interface: 'eth0' } }), 409, 'MacAddressInUse');
    expect(a.id).not.toBe(b.id);
  });

  it('update: name, MAC, binding; id is read-only; unknown id 404', async () => {
    const store = newStore();
    const p = await port(store, 'p');
    const u = await store.update('ports', p.id, { name: 'q', mac_address: '02:AA:00:00:00:01', 'binding:profile': { interface: 'eth9' } });
    expect(u).toMatchObject({ name: 'q', mac_address: '02:aa:00:00:00:01', 'binding:profile': { interface: 'eth9' } });
    await refused(store, () => store.update('ports', p.id, { id: UNKNOWN }), 400, 'HTTPBadRequest');
    await refused(store, () => store.update('ports', UNKNOWN, { name: 'x' }), 404, 'PortNotFound');
  });

  it('delete: 404 for unknown, 409 PortInUse while a pair or classifier uses it (C.1.13)', async () => {
    const store = newStore();
    const pp = await pair(store, 'pp');
    await refused(store, () => store.delete('ports', pp.ingress), 409, 'PortInUse');
    await refused(store, () => store.delete('ports', pp.egress), 409, 'PortInUse');
    const src = await port(store, 'src');
    const dst = await port(store, 'dst');
    const fc = await store.create('flow_classifiers', { logical_source_port: src.id, logical_destination_port: dst.id });
    await refused(store, () => store.delete('ports', src.id), 409, 'PortInUse');
    await refused(store, () => store.delete('ports', dst.id), 409, 'PortInUse');
    await store.delete('flow_classifiers', fc.id);
    await store.delete('ports', dst.id);
    expect(store.get('ports', dst.id)).toBeUndefined();
    await refused(store, () => store.delete('ports', dst.id), 404, 'PortNotFound');
  });
});

describe('port pairs (A.3, C.1)', () => {
  it('C.1.1-4: defaults, echoed parameters, null/{} parameters, ingress = egress', async () => {
    const store = newStore();
    const [a, b] = [await port(store, 'a'), await port(store, 'b')];
    const pp = await store.create('port_pairs', { ingress: a.id, egress: b.id });
    expect(pp).toMatchObject({ name: '', description: '', service_function_parameters: { correlation: null, weight: 1 } });
    const full = await store.create('port_pairs', {
      name: 'n',
      description: 'd',
      ingress: b.id,
      egress: a.id,
      service_function_parameters: { correlation: null, weight: 2 },
    });
    expect(full).toMatchObject({ name: 'n', description: 'd', service_function_parameters: { correlation: null, weight: 2 } });
    for (const params of [null, {}]) {
      const c = await port(store, 'c');
      const p = await store.create('port_pairs', { ingress: c.id, egress: c.id, service_function_parameters: params });
      expect(p).toMatchObject({ ingress: c.id, egress: c.id, service_function_parameters: { correlation: null, weight: 1 } });
    }
  });

  it('client strings: weight "2" → 2; correlation null via None; partial parameters completed', async () => {
    const store = newStore();
    const pp = await pair(store, 'pp', { service_function_parameters: { correlation: 'mpls', weight: '2' } });
    expect(pp.service_function_parameters).toEqual({ correlation: 'mpls', weight: 2 });
    const partial = await pair(store, 'pp2', { service_function_parameters: { correlation: 'nsh' } });
    expect(partial.service_function_parameters).toEqual({ correlation: 'nsh', weight: 1 });
    const zero = await pair(store, 'pp3', { service_function_parameters: { weight: 0 } });
    expect(zero.service_function_parameters).toEqual({ correlation: null, weight: 0 });
  });

  it('C.1.5-6, 8: missing/invalid/unknown ports and parameters', async () => {
    const store = newStore();
    const [a, b] = [await port(store, 'a'), await port(store, 'b')];
    await refused(store, () => store.create('port_pairs', {}), 400, 'HTTPBadRequest');
    await refused(store, () => store.create('port_pairs', { ingress: a.id }), 400, 'HTTPBadRequest');
    await refused(store, () => store.create('port_pairs', { egress: a.id }), 400, 'HTTPBadRequest');
    for (const bad of ['1', 'abc', null]) {
      await refused(store, () => store.create('port_pairs', { ingress: bad, egress: b.id }), 400, 'HTTPBadRequest');
      await refused(store, () => store.create('port_pairs', { ingress: a.id, egress: bad }), 400, 'HTTPBadRequest');
    }
    await refused(store, () => store.create('port_pairs', { ingress: UNKNOWN, egress: b.id }), 404, 'PortPairPortNotFound');
    await refused(store, () => store.create('port_pairs', { ingress: a.id, egress: UNKNOWN }), 404, 'PortPairPortNotFound');
    const create = (params: unknown) =>
      store.create('port_pairs', { ingress: a.id, egress: b.id, service_function_parameters: params });
    await refused(store, () => create({ abc: 'def' }), 400, 'HTTPBadRequest');
    await refused(store, () => create({ correlation: 'def' }), 400, 'HTTPBadRequest');
    await refused(store, () => create({ correlation: 'None' }), 400, 'HTTPBadRequest');
    await refused(store, () => create({ weight: -1 }), 400, 'HTTPBadRequest');
    await refused(store, () => create({ weight: 'abc' }), 400, 'InvalidInput');
    await refused(store, () => create({ weight: 1.5 }), 400, 'InvalidInput');
    await refused(store, () => create('mpls'), 400, 'HTTPBadRequest');
  });

  it('(ingress, egress) is unique (400 PortPairIngressEgressInUse); reversed pairs are fine', async () => {
    const store = newStore();
    const pp = await pair(store, 'pp');
    const e = await refused(
      store,
      () => store.create('port_pairs', { ingress: pp.ingress, egress: pp.egress }),
      400,
      'PortPairIngressEgressInUse',
    );
    expect(e.message).toContain(pp.id);
    await store.create('port_pairs', { ingress: pp.egress, egress: pp.ingress });
    // uniqueness is checked before existence, as in the reference
    await refused(store, () => store.create('port_pairs', { ingress: pp.ingress, egress: pp.egress, name: 'x' }), 400, 'PortPairIngressEgressInUse');
  });

  it('C.1.10-12: show, update name/description only, delete', async () => {
    const store = newStore();
    const pp = await pair(store, 'pp');
    expect(store.get('port_pairs', pp.id)).toEqual(pp);
    expect(store.get('port_pairs', '1')).toBeUndefined();
    const u = await store.update('port_pairs', pp.id, { name: 'new', description: 'desc' });
    expect(u).toMatchObject({ name: 'new', description: 'desc', ingress: pp.ingress });
    expect(store.get('port_pairs', pp.id)).toMatchObject({ name: 'new', description: 'desc' });
    for (const body of [{ service_function_parameters: null }, { service_function_parameters: { weight: 2 } }, { ingress: pp.egress }, { egress: pp.ingress }]) {
      await refused(store, () => store.update('port_pairs', pp.id, body), 400, 'HTTPBadRequest');
    }
    const g = await group(store, [pp]);
    const e = await refused(store, () => store.delete('port_pairs', pp.id), 409, 'PortPairInUse');
    expect(e.message).toBe(`Port Pair ${pp.id} in use.`);
    await store.update('port_pair_groups', g.id, { port_pairs: [] });
    await store.delete('port_pairs', pp.id);
    expect(store.get('port_pairs', pp.id)).toBeUndefined();
    await refused(store, () => store.delete('port_pairs', pp.id), 404, 'PortPairNotFound');
    await refused(store, () => store.delete('port_pairs', '1'), 404, 'PortPairNotFound');
  });
});
