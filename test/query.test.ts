/*
 * List queries as pure functions: parameter checks, filter conversion, sort order, Neutron's
 * emulated pagination and its links (a property: walking `next` from the first page, or
 * `previous` from the last, visits every item exactly once, in order).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NeutronError } from '../src/control/errors.js';
import { pageLinks, pageOf, parseListQuery, pickFields, selectItems, type ListQuery } from '../src/control/query.js';
import type { Resource } from '../src/control/model.js';

const q = (coll: Parameters<typeof parseListQuery>[0], qs: string) => parseListQuery(coll, new URLSearchParams(qs));

function status(f: () => unknown): number | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    return e instanceof NeutronError ? e.status : -1;
  }
}

const chain = (id: string, name: string, chain_id: number) =>
  ({ id, name, description: '', tenant_id: 't', project_id: 't', chain_id, port_pair_groups: [`g-${id}`], flow_classifiers: [], chain_parameters: { correlation: 'mpls', symmetric: false } }) as unknown as Resource;

const classifier = (id: string, protocol: string | null, min: number | null) =>
  ({ id, name: id, protocol, ethertype: 'IPv4', source_port_range_min: min }) as unknown as Resource;

describe('parseListQuery', () => {
  it('keeps filters on known attributes only', () => {
    expect(q('port_pairs', 'name=a&name=b&hello=x&limit=2').filters).toEqual([{ attr: 'name', values: ['a', 'b'] }]);
    expect(q('port_chains', 'port_pair_groups=x').filters).toEqual([{ attr: 'port_pair_groups', values: ['x'] }]);
    expect(q('ports', 'port_pair_groups=x').filters).toEqual([]);
  });

  it('refuses bad sort and page parameters with 400', () => {
    expect(status(() => q('ports', 'sort_key=name&sort_key=id&sort_dir=asc'))).toBe(400);
    expect(status(() => q('ports', 'sort_dir=asc'))).toBe(400);
    expect(status(() => q('ports', 'sort_key=name&sort_dir=ASC'))).toBe(400);
    expect(status(() => q('port_chains', 'sort_key=chain_parameters&sort_dir=asc'))).toBe(400);
    expect(status(() => q('port_chains', 'sort_key=nonexistent&sort_dir=asc'))).toBe(400);
    expect(status(() => q('ports', 'limit=1.5'))).toBe(400);
    expect(status(() => q('ports', 'page_reverse=perhaps'))).toBe(400);
    expect(q('ports', 'limit=7&page_reverse=TRUE&marker=m').limit).toBe(7);
    expect(q('ports', 'page_reverse=TRUE').pageReverse).toBe(true);
    expect(q('ports', 'sort_key=name&sort_dir=desc&sort_key=id&sort_dir=asc').sort).toEqual([
      { key: 'name', desc: true },
      { key: 'id', desc: false },
    ]);
  });
});

describe('selectItems', () => {
  const chains = [chain('c1', 'b', 3), chain('c2', 'a', 10), chain('c3', 'b', 2)];

  it('converts filter values like the attribute (integers, case-folded enums)', () => {
    expect(selectItems(chains, q('port_chains', 'chain_id=10')).map((r) => r.id)).toEqual(['c2']);
    expect(selectItems(chains, q('port_chains', 'chain_id=+3&chain_id=2')).map((r) => r.id)).toEqual(['c1', 'c3']);
    expect(status(() => selectItems(chains, q('port_chains', 'chain_id=ten')))).toBe(400);
    const fcs = [classifier('f1', 'tcp', 80), classifier('f2', null, null), classifier('f3', 'udp', 80)];
    expect(selectItems(fcs, q('flow_classifiers', 'protocol=TCP')).map((r) => r.id)).toEqual(['f1']);
    expect(selectItems(fcs, q('flow_classifiers', 'source_port_range_min=80')).map((r) => r.id)).toEqual(['f1', 'f3']);
    expect(selectItems(fcs, q('flow_classifiers', 'ethertype=IPV4')).length).toBe(3);
  });

  it('matches membership on id lists', () => {
    expect(selectItems(chains, q('port_chains', 'port_pair_groups=G-C3')).map((r) => r.id)).toEqual(['c3']);
  });

  it('sorts stably, nulls first ascending, by several keys', () => {
    expect(selectItems(chains, q('port_chains', 'sort_key=name&sort_dir=asc')).map((r) => r.id)).toEqual(['c2', 'c1', 'c3']);
    expect(selectItems(chains, q('port_chains', 'sort_key=name&sort_dir=asc&sort_key=chain_id&sort_dir=asc')).map((r) => r.id)).toEqual(['c2', 'c3', 'c1']);
    expect(selectItems(chains, q('port_chains', 'sort_key=chain_id&sort_dir=desc')).map((r) => r.id)).toEqual(['c2', 'c1', 'c3']);
    const fcs = [classifier('f1', 'tcp', 80), classifier('f2', null, null), classifier('f3', 'icmp', null)];
    expect(selectItems(fcs, q('flow_classifiers', 'sort_key=protocol&sort_dir=asc')).map((r) => r.id)).toEqual(['f2', 'f3', 'f1']);
    expect(selectItems(fcs, q('flow_classifiers', 'sort_key=source_port_range_min&sort_dir=desc')).map((r) => r.id)).toEqual(['f1', 'f2', 'f3']);
  });
});

describe('pagination', () => {
  const items = Array.from({ length: 5 }, (_, i) => chain(`c${i}`, `n${i}`, i + 1));
  const ids = (rs: Resource[]) => rs.map((r) => r.id);

  it('pages after the marker, before it when reversed; unknown marker → empty', () => {
    expect(ids(pageOf(items, q('port_chains', 'limit=2')))).toEqual(['c0', 'c1']);
    expect(ids(pageOf(items, q('port_chains', 'limit=2&marker=c1')))).toEqual(['c2', 'c3']);
    expect(ids(pageOf(items, q('port_chains', 'limit=2&marker=c3&page_reverse=true')))).toEqual(['c1', 'c2']);
    expect(ids(pageOf(items, q('port_chains', 'limit=2&page_reverse=true')))).toEqual(['c3', 'c4']);
    expect(ids(pageOf(items, q('port_chains', 'limit=2&marker=c1&page_reverse=true')))).toEqual(['c0']);
    expect(pageOf(items, q('port_chains', 'limit=2&marker=nope'))).toEqual([]);
    expect(ids(pageOf(items, q('port_chains', 'limit=0&marker=c1')))).toEqual(ids(items));
  });

  it('links: next omitted only for a short forward page, previous only for a short reversed page', () => {
    const links = (qs: string) => {
      const query = q('port_chains', qs);
      return pageLinks(pageOf(items, query), query, 'http://h/v2.0/sfc/port_chains', new URLSearchParams(qs));
    };
    const first = links('limit=2&name=x');
    expect(first.map((l) => l.rel)).toEqual(['next', 'previous']);
    const next = new URL(first[0]!.href);
    expect(next.pathname).toBe('/v2.0/sfc/port_chains');
    expect(next.searchParams.get('marker')).toBe('c1');
    expect(next.searchParams.get('name')).toBe('x');
    expect(next.searchParams.get('page_reverse')).toBeNull();
    const prev = new URL(first[1]!.href);
    expect(prev.searchParams.get('marker')).toBe('c0');
    expect(prev.searchParams.get('page_reverse')).toBe('True');
    expect(links('limit=2&marker=c3').map((l) => l.rel)).toEqual(['previous']);
    expect(links('limit=2&marker=c1&page_reverse=true').map((l) => l.rel)).toEqual(['next']);
    expect(links('limit=0')).toEqual([]);
  });

  it('property: following next (or previous) visits every item once, in order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 23 }), fc.integer({ min: 1, max: 9 }), fc.boolean(), (n, limit, backwards) => {
        const all = Array.from({ length: n }, (_, i) => chain(`id${i}`, `n${i}`, i + 1));
        let params = new URLSearchParams(`limit=${limit}${backwards ? '&page_reverse=True' : ''}`);
        const pages: string[][] = [];
        for (let guard = 0; guard <= n + 1; guard++) {
          const query: ListQuery = parseListQuery('port_chains', params);
          const page = pageOf(all, query);
          pages.push(ids(page));
          const link = pageLinks(page, query, 'http://h/x', params).find((l) => l.rel === (backwards ? 'previous' : 'next'));
          if (!link) break;
          params = new URL(link.href).searchParams;
        }
        const seen = (backwards ? [...pages].reverse() : pages).flat();
        expect(seen).toEqual(ids(all));
        for (const p of pages.slice(0, -1)) expect(p.length).toBe(limit);
      }),
    );
  });
});

describe('pickFields', () => {
  it('keeps only the named attributes that exist', () => {
    expect(pickFields(chain('c1', 'n', 1), ['name', 'nope', 'chain_id'])).toEqual({ name: 'n', chain_id: 1 });
    expect(pickFields(chain('c1', 'n', 1), null)).toMatchObject({ id: 'c1', name: 'n' });
  });
});
