/*
 * `sfc get <resource> [name|id]`: list a collection or show one resource of a running server.
 * Human tables by default (references shown by name), --json for scripts (the API's objects).
 */
import { ApiError, REFERENCES, collectionOf, connect, mapReferences, type SfcClient } from '../control/client.js';
import type { Collection, FlowClassifier, Port, PortChain, PortPair, PortPairGroup, ServiceGraph } from '../control/model.js';
import type { Resource } from '../control/model.js';
import type { InstanceHealth } from '../control/health-monitor.js';
import { parsePrometheus, type Sample } from '../lab/harness.js';
import { UsageError, parseOptions, type Command } from '../util/args.js';
import { Server } from './live.js';
import { histogramQuantile, latencyBuckets, micros } from './top.js';

export const RESOURCE_HELP = 'resource: port, port-pair, port-pair-group, flow-classifier, port-chain, service-graph';
const HEALTH_HELP = 'health: every SF instance up or down (why, since, probe round trip) and the dataplane (extension sfc-health)';
export const CLIENT_OPTIONS = { url: { type: 'string' }, token: { type: 'string' } } as const;
export const CLIENT_HELP = `  --url URL           API endpoint (default $SFC_URL or http://127.0.0.1:9696)
  --token T           auth token (default $SFC_TOKEN)`;

/** The collection a command-line word names, or a usage error. */
export function resourceArg(word: string | undefined): Collection {
  if (word === undefined) throw new UsageError(`missing resource (${RESOURCE_HELP})`);
  const coll = collectionOf(word);
  if (!coll) throw new UsageError(`unknown resource '${word}' (${RESOURCE_HELP})`);
  return coll;
}

type Names = (id: string, to: Collection) => string;

/** id → name for every collection `coll` refers to (the id itself when unnamed or unknown). */
async function referenceNames(client: SfcClient, coll: Collection): Promise<Names> {
  const names = new Map<string, string>();
  for (const to of new Set(REFERENCES[coll].map((r) => r.to))) {
    for (const r of await client.list(to)) if (r.name !== '') names.set(r.id, r.name);
  }
  return (id) => names.get(id) ?? id;
}

const range = (min: number | null, max: number | null) => (min === null && max === null ? '' : `:${min ?? 0}-${max ?? 65535}`);
const joined = (ids: string[], names: Names, to: Collection) => ids.map((id) => names(id, to)).join(',');

/** List columns per collection: header → cell. */
const COLUMNS: { [C in Collection]: [string, (r: never, names: Names) => string][] } = {
  ports: [
    ['ID', (p: Port) => p.id],
    ['NAME', (p: Port) => p.name],
    ['MAC', (p: Port) => p.mac_address],
    ['INTERFACE', (p: Port) => p['binding:profile'].interface],
    ['STATUS', (p: Port) => p.status],
  ],
  port_pairs: [
    ['ID', (p: PortPair) => p.id],
    ['NAME', (p: PortPair) => p.name],
    ['INGRESS', (p: PortPair, n) => n(p.ingress, 'ports')],
    ['EGRESS', (p: PortPair, n) => n(p.egress, 'ports')],
    ['CORRELATION', (p: PortPair) => p.service_function_parameters.correlation ?? 'none'],
    ['WEIGHT', (p: PortPair) => String(p.service_function_parameters.weight)],
  ],
  port_pair_groups: [
    ['ID', (g: PortPairGroup) => g.id],
    ['NAME', (g: PortPairGroup) => g.name],
    ['GROUP', (g: PortPairGroup) => String(g.group_id)],
    ['PORT PAIRS', (g: PortPairGroup, n) => joined(g.port_pairs, n, 'port_pairs')],
    ['LB FIELDS', (g: PortPairGroup) => g.port_pair_group_parameters.lb_fields.join(',')],
    ['TAP', (g: PortPairGroup) => (g.tap_enabled ? 'yes' : 'no')],
  ],
  flow_classifiers: [
    ['ID', (f: FlowClassifier) => f.id],
    ['NAME', (f: FlowClassifier) => f.name],
    ['MATCH', (f: FlowClassifier) =>
      `${f.ethertype} ${f.protocol ?? 'any'} ${f.source_ip_prefix ?? '*'}${range(f.source_port_range_min, f.source_port_range_max)}` +
      ` -> ${f.destination_ip_prefix ?? '*'}${range(f.destination_port_range_min, f.destination_port_range_max)}`],
    ['SOURCE PORT', (f: FlowClassifier, n) => (f.logical_source_port ? n(f.logical_source_port, 'ports') : '')],
    ['DESTINATION PORT', (f: FlowClassifier, n) => (f.logical_destination_port ? n(f.logical_destination_port, 'ports') : '')],
  ],
  port_chains: [
    ['ID', (c: PortChain) => c.id],
    ['NAME', (c: PortChain) => c.name],
    ['CHAIN', (c: PortChain) => String(c.chain_id)],
    ['GROUPS', (c: PortChain, n) => joined(c.port_pair_groups, n, 'port_pair_groups')],
    ['CLASSIFIERS', (c: PortChain, n) => joined(c.flow_classifiers, n, 'flow_classifiers')],
    ['CORRELATION', (c: PortChain) => c.chain_parameters.correlation],
    ['SYMMETRIC', (c: PortChain) => (c.chain_parameters.symmetric ? 'yes' : 'no')],
  ],
  service_graphs: [
    ['ID', (g: ServiceGraph) => g.id],
    ['NAME', (g: ServiceGraph) => g.name],
    ['BRANCHES', (g: ServiceGraph, n) =>
      Object.entries(g.port_chains)
        .map(([src, dsts]) => `${n(src, 'port_chains')} -> ${joined(dsts, n, 'port_chains')}`)
        .join('; ')],
  ],
};

/** Left-aligned columns separated by two spaces. */
function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows].map((cells) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

function listTable(coll: Collection, items: Resource[], names: Names): string {
  const cols = COLUMNS[coll] as [string, (r: Resource, names: Names) => string][];
  return formatTable(
    cols.map(([h]) => h),
    items.map((r) => cols.map(([, cell]) => cell(r, names))),
  );
}

function showTable(coll: Collection, item: Resource, names: Names, extra: [string, string][] = []): string {
  const shown = mapReferences(coll, item as unknown as Record<string, unknown>, (id, to) => {
    const name = names(id, to);
    return name === id ? id : `${name} (${id})`;
  });
  const text = (v: unknown) => (typeof v === 'string' ? v : v === null ? '-' : JSON.stringify(v));
  return formatTable(['FIELD', 'VALUE'], [...Object.entries(shown).map(([k, v]): [string, string] => [k, text(v)]), ...extra]);
}


/** Time sampled frames spent inside a port pair since the server started (sfc_sf_latency_seconds). */
export interface PairSfTime {
  samples: number;
  lost: number;
  mean_us: number | null;
  p50_us: number | null;
  p90_us: number | null;
  p99_us: number | null;
}

/** What a port pair shows of the running dataplane: SF time and live flows (each null when not reported, or /metrics is off). */
interface PairLive {
  sf_time: PairSfTime | null;
  /** sfc_instance_flows: flows through it used within the dataplane's idle time. */
  flows: number | null;
}

async function pairLive(client: SfcClient, token: string | undefined, pair: PortPair): Promise<PairLive> {
  let samples: Sample[];
  try {
    samples = parsePrometheus(await new Server({ server: client.url, token }).text('/metrics'));
  } catch {
    return { sf_time: null, flows: null };
  }
  const flows = samples.find((s) => s.name === 'sfc_instance_flows' && s.labels.port_pair === pair.name);
  return { sf_time: pairSfTime(samples, pair), flows: flows?.value ?? null };
}

/** The port pair's SF time in a scrape; null when its dataplane does not sample it. */
function pairSfTime(samples: Sample[], pair: PortPair): PairSfTime | null {
  const count = samples.find((s) => s.name === 'sfc_sf_latency_seconds_count' && s.labels.port_pair === pair.name);
  if (count === undefined) return null;
  const buckets = latencyBuckets(samples, count.labels);
  const sum = samples.find((s) => s.name === 'sfc_sf_latency_seconds_sum' && s.labels.port_pair === pair.name)?.value ?? 0;
  const lost = samples.find((s) => s.name === 'sfc_sf_latency_lost_total' && s.labels.port_pair === pair.name)?.value ?? 0;
  const us = (q: number) => {
    const v = histogramQuantile(buckets, q);
    return v === null ? null : Math.round(v * 1e7) / 10;
  };
  return { samples: count.value, lost, mean_us: count.value > 0 ? Math.round((sum / count.value) * 1e7) / 10 : null, p50_us: us(0.5), p90_us: us(0.9), p99_us: us(0.99) };
}

const sfTimeText = (t: PairSfTime | null) =>
  t === null ? '-' : `p50 ${micros(t.p50_us)}, p90 ${micros(t.p90_us)}, p99 ${micros(t.p99_us)}, mean ${micros(t.mean_us)} (${t.samples} samples, ${t.lost} lost)`;

/** `sfc get health`: the instances' health table and the dataplane's state. */
async function showHealth(client: SfcClient, json: boolean): Promise<void> {
  const { health } = (await client.request('GET', '/v2.0/sfc/health')) as { health: { ok: boolean; degraded: object; instances: InstanceHealth[] } };
  if (json) {
    console.log(JSON.stringify(health, null, 2));
    return;
  }
  console.log(
    formatTable(
      ['INSTANCE', 'GROUP', 'STATE', 'SINCE', 'PROBE RTT', 'CHANGES', 'WHY'],
      health.instances.map((h) => [
        h.portPair,
        h.group,
        h.up ? 'up' : 'down',
        new Date(h.since).toISOString(),
        h.rttMs === null ? '-' : `${h.rttMs} ms`,
        String(h.transitions),
        h.reason,
      ]),
    ),
  );
  console.log(`dataplane: ${health.ok ? 'ok' : `degraded ${JSON.stringify(health.degraded)}`}`);
}

export const command: Command = {
  summary: 'list or show resources of a running server',
  usage: `<resource> [NAME|ID] [--json] [--url URL] [--token T]
  ${RESOURCE_HELP} (plurals and underscores accepted)
  ${HEALTH_HELP}
  --json              print the API's JSON (a list, or one object)
${CLIENT_HELP}`,

  async run(argv) {
    const { values, positionals } = parseOptions(argv, { json: { type: 'boolean' }, ...CLIENT_OPTIONS }, true);
    if (positionals.length > 2) throw new UsageError(`unexpected argument '${positionals[2]}'`);
    const client = connect(values.url, values.token);
    try {
      if (positionals[0] === 'health') {
        if (positionals.length > 1) throw new UsageError(`unexpected argument '${positionals[1]}'`);
        await showHealth(client, values.json === true);
        return 0;
      }
      const coll = resourceArg(positionals[0]);
      const which = positionals[1];
      const result = which === undefined ? await client.list(coll) : await client.find(coll, which);
      // One port pair: with the time frames spend inside it (the dataplane's samples), as sf_time, and its live flows.
      const live = coll === 'port_pairs' && !Array.isArray(result) ? await pairLive(client, values.token, result as PortPair) : undefined;
      if (values.json) console.log(JSON.stringify(live === undefined ? result : { ...result, ...live }, null, 2));
      else {
        const names = await referenceNames(client, coll);
        const extra: [string, string][] = live === undefined ? [] : [['sf_time', sfTimeText(live.sf_time)], ['flows', live.flows === null ? '-' : String(live.flows)]];
        console.log(Array.isArray(result) ? listTable(coll, result, names) : showTable(coll, result, names, extra));
      }
      return 0;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      console.error(`sfc get: ${e.message}`);
      return 1;
    }
  },
};
