/*
 * Flow classifiers (spec A.5, C.3), including the full conflict matrix, and the prefix parser.
 */
import { describe, expect, it } from 'vitest';
import type { FlowClassifier } from '../src/control/model.js';
import { UNKNOWN, chain, classifier, group, newStore, port, refused } from './store-fixture.js';

const FULL = {
  name: 'fc',
  description: 'all fields',
  ethertype: 'IPv4',
  protocol: 'tcp',
  source_port_range_min: 100,
  source_port_range_max: 200,
  destination_port_range_min: 101,
  destination_port_range_max: 201,
  source_ip_prefix: '10.100.0.0/16',
  destination_ip_prefix: '10.200.0.0/16',
  l7_parameters: {},
};

describe('flow classifiers: create', () => {
  it('C.3.1-3: defaults; logical destination port; all fields echoed', async () => {
    const store = newStore();
    const src = await port(store, 'src');
    const fc = await classifier(store, { logical_source_port: src.id });
    expect(fc).toEqual({
      id: fc.id,
      name: '',
      description: '',
      ethertype: 'IPv4',
      protocol: null,
      source_port_range_min: null,
      source_port_range_max: null,
      destination_port_range_min: null,
      destination_port_range_max: null,
      source_ip_prefix: null,
      destination_ip_prefix: null,
      logical_source_port: src.id,
      logical_destination_port: null,
      l7_parameters: {},
      tenant_id: 'sfc',
      project_id: 'sfc',
    });
    const dst = await port(store, 'dst');
    const other = await port(store, 'src2');
    expect((await classifier(store, { logical_source_port: other.id, logical_destination_port: dst.id })).logical_destination_port).toBe(dst.id);
    const full = await classifier(store, FULL);
    expect(full).toMatchObject(FULL);
  });

  it('C.3.4-6: ethertype / protocol normalised; port strings converted; null names → ""', async () => {
    const store = newStore();
    const cases: [Record<string, unknown>, Partial<FlowClassifier>][] = [
      [{ ethertype: null }, { ethertype: 'IPv4' }],
      [{ ethertype: 'ipv6' }, { ethertype: 'IPv6' }],
      [{ ethertype: 'IPv6', protocol: 'TCP' }, { ethertype: 'IPv6', protocol: 'tcp' }],
      [{ protocol: 'Udp', source_port_range_min: '100', source_port_range_max: '200' }, { protocol: 'udp', source_port_range_min: 100, source_port_range_max: 200 }],
      [{ protocol: 'icmp' }, { protocol: 'icmp' }],
      [{ protocol: 'tcp', destination_port_range_min: 100, destination_port_range_max: 100 }, { destination_port_range_min: 100 }],
      [{ name: null, description: null }, { name: '', description: '' }],
    ];
    for (const [body, want] of cases) {
      // a separate source port each time keeps them from conflicting
      expect(await classifier(store, body)).toMatchObject(want);
    }
  });

  it('C.3.4-5, 7-11: invalid values', async () => {
    const store = newStore();
    const src = (await port(store, 'src')).id;
    const create = (body: Record<string, unknown>) => store.create('flow_classifiers', { logical_source_port: src, ...body });
    await refused(store, () => create({ ethertype: 'unsupported' }), 400, 'FlowClassifierInvalidEthertype');
    await refused(store, () => create({ protocol: 'unsupported' }), 400, 'FlowClassifierInvalidProtocol');
    await refused(store, () => create({ protocol: 6 }), 400, 'FlowClassifierInvalidProtocol');
    await refused(store, () => create({ source_ip_prefix: '192.168.100.0/24', ethertype: 'IPv6' }), 400, 'FlowClassifierIpPrefixFormatConflictWithEthertype');
    await refused(store, () => create({ destination_ip_prefix: 'ff::0/24' }), 400, 'FlowClassifierIpPrefixFormatConflictWithEthertype');
    for (const field of ['source_port_range_min', 'source_port_range_max', 'destination_port_range_min', 'destination_port_range_max']) {
      for (const v of ['abc', 65536, -1, 1.5]) {
        await refused(store, () => create({ protocol: 'tcp', [field]: v }), 400, 'FlowClassifierInvalidPortValue');
      }
      await refused(store, () => create({ [field]: 80 }), 400, 'FlowClassifierProtocolRequiredWithPorts');
      await refused(store, () => create({ protocol: 'icmp', [field]: 80 }), 400, 'FlowClassifierProtocolRequiredWithPorts');
    }
    await refused(store, () => create({ protocol: 'tcp', source_port_range_min: 200, source_port_range_max: 100 }), 400, 'FlowClassifierInvalidPortRange');
    await refused(store, () => create({ protocol: 'udp', destination_port_range_min: 2, destination_port_range_max: 1 }), 400, 'FlowClassifierInvalidPortRange');
    for (const prefix of ['10.0.0.0/34', '10.0.0.0.0/8', '256.0.0.0/8', '10.0.0.0', '10.0.0.0/33', '010.0.0.0/8', 'abc', 5]) {
      await refused(store, () => create({ source_ip_prefix: prefix }), 400, 'HTTPBadRequest');
      await refused(store, () => create({ destination_ip_prefix: prefix }), 400, 'HTTPBadRequest');
    }
    await refused(store, () => create({ l7_parameters: { abc: 'def' } }), 400, 'FlowClassifierInvalidL7Parameter');
    await refused(store, () => create({ l7_parameters: 'url=x' }), 400, 'FlowClassifierInvalidL7Parameter');
    await refused(store, () => create({ logical_source_port: 'abc' }), 400, 'HTTPBadRequest');
    await refused(store, () => create({ logical_destination_port: 'abc' }), 400, 'HTTPBadRequest');
    await refused(store, () => create({ logical_source_port: UNKNOWN }), 404, 'FlowClassifierPortNotFound');
    await refused(store, () => create({ logical_destination_port: UNKNOWN }), 404, 'FlowClassifierPortNotFound');
    expect((await create({ l7_parameters: null, source_ip_prefix: '10.0.0.1/8' })).l7_parameters).toEqual({});
  });

  it('C.3.18: logical_source_port is required (400 FlowClassifierBadRequest)', async () => {
    const store = newStore();
    await refused(store, () => store.create('flow_classifiers', {}), 400, 'FlowClassifierBadRequest');
    await refused(store, () => store.create('flow_classifiers', { logical_source_port: null }), 400, 'FlowClassifierBadRequest');
  });
});

describe('flow classifiers: conflicts on one logical source port (C.3.12-13)', () => {
  type Case = [string, Record<string, unknown>, Record<string, unknown>, boolean];
  const tcp = { protocol: 'tcp' };
  const range = (min: number | null, max: number | null) => ({ ...tcp, source_port_range_min: min, source_port_range_max: max });
  const cases: Case[] = [
    ['wildcard vs wildcard', {}, {}, true],
    ['wildcard vs IPv4', {}, { ethertype: 'IPv4' }, true],
    ['wildcard vs IPv6', {}, { ethertype: 'IPv6' }, false],
    ['wildcard vs tcp', {}, tcp, true],
    ['tcp vs tcp', tcp, tcp, true],
    ['tcp vs udp', tcp, { protocol: 'udp' }, false],
    ['src /16 vs same', { source_ip_prefix: '10.100.0.0/16' }, { source_ip_prefix: '10.100.0.0/16' }, true],
    ['src /16 vs inner /24', { source_ip_prefix: '10.100.0.0/16' }, { source_ip_prefix: '10.100.100.0/24' }, true],
    ['src /16 vs outer /8', { source_ip_prefix: '10.100.0.0/16' }, { source_ip_prefix: '10.0.0.0/8' }, true],
    ['src /16 vs sibling', { source_ip_prefix: '10.100.0.0/16' }, { source_ip_prefix: '10.101.0.0/16' }, false],
    ['dst /16 vs inner /24', { destination_ip_prefix: '10.100.0.0/16' }, { destination_ip_prefix: '10.100.100.0/24' }, true],
    ['dst /16 vs sibling', { destination_ip_prefix: '10.100.0.0/16' }, { destination_ip_prefix: '10.101.0.0/16' }, false],
    ['v6 /32 vs inner /48', { ethertype: 'IPv6', source_ip_prefix: '2001:db8::/32' }, { ethertype: 'IPv6', source_ip_prefix: '2001:db8:1::/48' }, true],
    ['v6 /32 vs sibling', { ethertype: 'IPv6', source_ip_prefix: '2001:db8::/32' }, { ethertype: 'IPv6', source_ip_prefix: '2001:db9::/32' }, false],
    ['v6 /33 halves', { ethertype: 'IPv6', source_ip_prefix: '2001:db8::/33' }, { ethertype: 'IPv6', source_ip_prefix: '2001:db8:8000::/33' }, false],
    ['v6 /31 vs inner /33', { ethertype: 'IPv6', source_ip_prefix: '2001:db8::/31' }, { ethertype: 'IPv6', source_ip_prefix: '2001:db9:8000::/33' }, true],
    ['v6 /96 in the last words', { ethertype: 'IPv6', source_ip_prefix: '::a:0:0/96' }, { ethertype: 'IPv6', source_ip_prefix: '::b:0:0/96' }, false],
    ['/0 vs host', { source_ip_prefix: '0.0.0.0/0' }, { source_ip_prefix: '192.168.1.1/32' }, true],
    ['two hosts', { source_ip_prefix: '192.168.1.1/32' }, { source_ip_prefix: '192.168.1.2/32' }, false],
    ['host bits set vs /16', { source_ip_prefix: '10.1.2.3/8' }, { source_ip_prefix: '10.200.0.0/16' }, true],
    ['100-200 vs 99-201', range(100, 200), range(99, 201), true],
    ['100-200 vs 101-199', range(100, 200), range(101, 199), true],
    ['100-200 vs min 99', range(100, 200), range(99, null), true],
    ['100-200 vs min 101', range(100, 200), range(101, null), true],
    ['100-200 vs max 199', range(100, 200), range(null, 199), true],
    ['100-200 vs max 201', range(100, 200), range(null, 201), true],
    ['100-200 vs no range', range(100, 200), tcp, true],
    ['100-200 vs min 201', range(100, 200), range(201, null), false],
    ['100-200 vs 201-300', range(100, 200), range(201, 300), false],
    ['100-200 vs max 99', range(100, 200), range(null, 99), false],
    ['100-200 vs 50-99', range(100, 200), range(50, 99), false],
    ['100-200 vs 200-300 (touching)', range(100, 200), range(200, 300), true],
    ['differs only in destination prefix', FULL, { ...FULL, destination_ip_prefix: '10.201.0.0/16' }, false],
    ['differs only in destination range', FULL, { ...FULL, destination_port_range_min: 300, destination_port_range_max: 400 }, false],
    ['differs only in source range', FULL, { ...FULL, source_port_range_min: 300, source_port_range_max: 400 }, false],
  ];

  it.each(cases)('%s', async (_label, existing, candidate, conflicts) => {
    const store = newStore();
    const src = (await port(store, 'src')).id;
    const first = await classifier(store, { ...existing, logical_source_port: src });
    const create = () => store.create('flow_classifiers', { ...candidate, logical_source_port: src });
    if (conflicts) {
      const e = await refused(store, create, 400, 'FlowClassifierInConflict');
      expect(e.message).toContain(first.id);
    } else {
      await create();
    }
  });

  it('different logical source ports never conflict; destination ports must be equal or either null', async () => {
    const store = newStore();
    await classifier(store, {});
    await classifier(store, {});
    const src = (await port(store, 'src')).id;
    const [d1, d2] = [(await port(store, 'd1')).id, (await port(store, 'd2')).id];
    await classifier(store, { logical_source_port: src, logical_destination_port: d1 });
    await classifier(store, { logical_source_port: src, logical_destination_port: d2 });
    await refused(store, () => store.create('flow_classifiers', { logical_source_port: src }), 400, 'FlowClassifierInConflict');
  });
});

describe('flow classifiers: update and delete', () => {
  it('C.3.15: only name/description change', async () => {
    const store = newStore();
    const fc = await classifier(store, FULL);
    const u = await store.update('flow_classifiers', fc.id, { name: 'n', description: null });
    expect(u).toMatchObject({ name: 'n', description: '', protocol: 'tcp' });
    for (const body of [
      { ethertype: 'IPv4' },
      { protocol: 'udp' },
      { source_port_range_min: 1 },
      { source_port_range_max: 1 },
      { destination_port_range_min: 1 },
      { destination_port_range_max: 1 },
      { source_ip_prefix: '10.0.0.0/8' },
      { destination_ip_prefix: '10.0.0.0/8' },
      { l7_parameters: {} },
      { logical_source_port: fc.logical_source_port },
      { logical_destination_port: null },
    ]) {
      await refused(store, () => store.update('flow_classifiers', fc.id, body), 400, 'HTTPBadRequest');
    }
  });

  it('C.3.16: delete; used by a chain 409; unknown 404', async () => {
    const store = newStore();
    const fc = await classifier(store);
    const pc = await chain(store, [await group(store)], { flow_classifiers: [fc.id] });
    const e = await refused(store, () => store.delete('flow_classifiers', fc.id), 409, 'FlowClassifierInUse');
    expect(e.message).toBe(`Flow Classifier ${fc.id} in use.`);
    await store.update('port_chains', pc.id, { flow_classifiers: [] });
    await store.delete('flow_classifiers', fc.id);
    await refused(store, () => store.delete('flow_classifiers', fc.id), 404, 'FlowClassifierNotFound');
    await refused(store, () => store.delete('flow_classifiers', '1'), 404, 'FlowClassifierNotFound');
  });
});

describe('prefix syntax (type:subnet_or_none)', () => {
  it('accepts canonical IPv4 (host bits kept) and IPv6 text forms', async () => {
    const store = newStore();
    const ok: [string, string][] = [
      ['IPv4', '10.0.0.1/8'],
      ['IPv4', '0.0.0.0/0'],
      ['IPv6', '::/0'],
      ['IPv6', '2001:DB8::1/128'],
      ['IPv6', '::ffff:10.1.2.3/96'],
      ['IPv6', '1:2:3:4:5:6:7:8/64'],
    ];
    for (const [ethertype, prefix] of ok) {
      expect((await classifier(store, { ethertype, destination_ip_prefix: prefix })).destination_ip_prefix).toBe(prefix);
    }
  });

  it('refuses malformed prefixes', async () => {
    const store = newStore();
    const src = (await port(store, 'src')).id;
    const bad = ['10.0.0.0/', '10.0.0.0/08', '10.0.0/8', '1.2.3.4.5/8', ' 10.0.0.0/8', '10.0.0.0/8/8', '1::2::3/64',
      '1:2:3:4:5:6:7:8:9/64', '1:2:3:4:5:6:7/64', '12345::/16', '::/129', 'fe80::1%eth0/64', '::1.2.3/96'];
    for (const prefix of bad) {
      await refused(store, () => store.create('flow_classifiers', { logical_source_port: src, source_ip_prefix: prefix }), 400, 'HTTPBadRequest');
    }
  });
});
