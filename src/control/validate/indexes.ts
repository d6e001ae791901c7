/*
 * Lookups for the validator: by id, and the few reverse relations the rules ask about (the groups
 * holding a pair, the chains using a classifier, the graph of a chain ...).
 *
 * A scan per reference made a chain write cost O(chains × classifiers × classifiers): the
 * classifier rules look up every classifier of every other chain. Instead a relation answers from
 * a hash index of the collection list once that list has been asked more than a few times, and
 * builds it at most once per list: the store's snapshots are deep-frozen and share every list a
 * write did not change (validate.ts copies only the changed one), so the lists a chain write
 * reads thousands of times keep their index from write to write. A list asked only a few times
 * (the one the previous write just replaced, typically asked once) is scanned, since building a
 * Map costs more than one scan. Lists that are not frozen may still change (a caller's own State),
 * so they are always scanned.
 *
 * Answers keep the collection's order, so `first` returns the object a scan of the whole
 * collection would: rules keep reporting the same culprit.
 */
import type { Collection, Port, PortChain, PortPair, PortPairGroup, ServiceGraph, State } from '../model.js';

/** Lookups of one list answered by scanning before its index is built. */
const SCANS_BEFORE_INDEX = 8;

type Keys = string | readonly string[];

const hasKey = (keys: Keys, key: string) => (typeof keys === 'string' ? keys === key : keys.includes(key));

const NONE: readonly never[] = Object.freeze([]);

export interface Relation<T> {
  /** The items under `key`, in list order. */
  all(items: readonly T[], key: string): readonly T[];
  first(items: readonly T[], key: string): T | undefined;
}

/** key → items, where keysOf names the keys an item sits under. */
function relation<T>(keysOf: (item: T) => Keys): Relation<T> {
  const lists = new WeakMap<readonly T[], number | Map<string, T[]>>();
  /** The list's index once it is worth building; undefined: scan this time. */
  const indexOf = (items: readonly T[]): Map<string, T[]> | undefined => {
    if (!Object.isFrozen(items)) return undefined;
    const known = lists.get(items) ?? 0;
    if (typeof known !== 'number') return known;
    if (known < SCANS_BEFORE_INDEX) {
      lists.set(items, known + 1);
      return undefined;
    }
    const index = new Map<string, T[]>();
    for (const item of items) {
      const keys = keysOf(item);
      for (const key of typeof keys === 'string' ? [keys] : keys) {
        const under = index.get(key);
        if (!under) index.set(key, [item]);
        else if (under[under.length - 1] !== item) under.push(item);
      }
    }
    lists.set(items, index);
    return index;
  };
  return {
    all(items, key) {
      const index = indexOf(items);
      return index ? (index.get(key) ?? NONE) : items.filter((item) => hasKey(keysOf(item), key));
    },
    first(items, key) {
      const index = indexOf(items);
      return index ? index.get(key)?.[0] : items.find((item) => hasKey(keysOf(item), key));
    },
  };
}

const byId = relation((r: { id: string }) => r.id);

export function findById<C extends Collection>(state: State, coll: C, id: string): State[C][number] | undefined {
  return byId.first(state[coll], id) as State[C][number] | undefined;
}

export const portsByMac = relation((p: Port) => p.mac_address);

export const pairsByIngress = relation((pp: PortPair) => pp.ingress);

export const groupsByPair = relation((g: PortPairGroup) => g.port_pairs);

export const chainsByClassifier = relation((pc: PortChain) => pc.flow_classifiers);

/** Key of an ordered group list: chains with the same list share it. */
export const groupListKey = (ids: readonly string[]) => JSON.stringify(ids);

export const chainsByGroupList = relation((pc: PortChain) => groupListKey(pc.port_pair_groups));

/** Every chain named in a graph, as source or destination. */
export function chainsOfGraph(g: Pick<ServiceGraph, 'port_chains'>): Set<string> {
  const ids = new Set<string>();
  for (const [src, dsts] of Object.entries(g.port_chains)) {
    ids.add(src);
    for (const d of dsts) ids.add(d);
  }
  return ids;
}

export const graphsByChain = relation((g: ServiceGraph) => [...chainsOfGraph(g)]);
