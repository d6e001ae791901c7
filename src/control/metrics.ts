/*
 * Prometheus metrics (prom-client). The data path never touches prom-client: its counters are
 * plain Float64Arrays (counters.ts) and this registry copies them at scrape time, in each metric's
 * collect(). Only the API request counter is incremented live, once per response.
 *
 *   sfc_packets_total{event}                                  dataplane event counters
 *   sfc_drops_total{reason}                                   drops by reason
 *   sfc_instance_packets_total{chain,hop,port_pair}           packets sent to each SF instance (port pair)
 *   sfc_instance_bytes_total{chain,hop,port_pair}             their bytes (as received, before any encapsulation)
 *   sfc_hop_packets_total{chain,hop}, sfc_hop_bytes_total     the same summed over a hop's instances
 *   sfc_instance_flows{chain,hop,port_pair}                   gauge: flows through each SF instance (userspace: used within
 *                                                             the last 60 s, flowcount.ts; ovs: its conntrack pins)
 *   sfc_worker_batches_total{worker}                          batches each data path worker processed
 *   sfc_worker_packets_total{worker}                          frames it received (/ batches: mean batch size)
 *   sfc_worker_busy_seconds_total{worker}                     CPU time its thread spent out of epoll
 *   sfc_interface_packets_total{interface,direction}          rx/tx per interface
 *   sfc_interface_io_total{interface,counter}                 the packet I/O backend's own counters per interface
 *                                                             (native/port.h: kernel drops, tx_busy, tx_in_place...)
 *   sfc_sf_latency_seconds{chain,hop,port_pair}               histogram: time sampled frames spent inside each SF instance
 *                                                             (sf-latency.ts; buckets 8 per octave from 8 µs to ~1 s)
 *   sfc_sf_latency_lost_total{chain,hop,port_pair}            sampled frames that did not come back within 1 s
 * (`chain` names the chains sharing the instance's port pair group, comma-separated; `hop` is
 * 1-based in the first of them. The instance's label is `port_pair`, not `instance`: Prometheus
 * gives every scraped series its target's `instance` label and would rename ours away.)
 *   sfc_api_requests_total{method,status}                     REST requests answered
 *   sfc_state_revision                                        committed model revision
 *   sfc_table_generation                                      dataplane table generation live
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { COUNTERS, Ctr, DROP_REASONS } from '../packet/counters.js';
import { bucketUpperUs, HIST_BUCKETS, HIST_LOST, HIST_STRIDE, HIST_SUM } from '../dataplane/sf-latency.js';
import { FLOW_IDLE_MS } from '../dataplane/flowcount.js';
import type { InstanceName } from '../dataplane/tables.js';

/** What the dataplane reports (Dataplane.stats() of the runtime), summed over workers. */
export interface DataplaneStats {
  events: Float64Array;
  drops: Float64Array;
  instancePackets: Float64Array;
  instanceBytes: Float64Array;
  /** Live flows per instance (absent: the driver cannot count them). */
  instanceFlows?: Float64Array;
  /** `io`: the backend's per-interface I/O counters by name (absent: it has none). */
  interfaces: { name: string; rxPackets: number; txPackets: number; io?: Record<string, number> }[];
  /** Per data path worker (userspace driver only): its event counters and busy CPU seconds. */
  workers?: { events: Float64Array; busySeconds: number }[];
  /** Time inside each SF (userspace driver only): per instance a histogram (sf-latency.ts). */
  sfLatency?: Float64Array;
}

export interface DataplaneView {
  stats: DataplaneStats;
  instances: readonly InstanceName[];
}

export interface MetricsSource {
  revision(): number;
  /** Generation of the tables live in the dataplane (0 when there is none). */
  generation(): number;
  /**
   * Counters and the live tables' instanceNames (labels of instance i), or undefined without a
   * dataplane; a promise when they must be fetched (the ovs driver reads OVS's statistics).
   */
  dataplane(): DataplaneView | undefined | Promise<DataplaneView | undefined>;
}

const METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE']);

/** The `le` label of each SF latency bucket (seconds; the last is +Inf). */
const LATENCY_LE = Array.from({ length: HIST_BUCKETS }, (_, k) => (k === HIST_BUCKETS - 1 ? '+Inf' : String(Number((bucketUpperUs(k) / 1e6).toPrecision(6)))));

/** A Prometheus histogram whose buckets are copied from the SF latency histograms at scrape time (prom-client's Histogram only observes). */
function sfLatencyHistogram(source: MetricsSource, registry: Registry): void {
  const name = 'sfc_sf_latency_seconds';
  const help = 'Time sampled frames spent inside each service function instance (port pair), from leaving the dataplane to coming back';
  registry.registerMetric({
    name,
    async get() {
      const dp = await source.dataplane();
      const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
      const h = dp?.stats.sfLatency;
      dp?.instances.forEach((n, i) => {
        if (n.portPair === '' || h === undefined || (i + 1) * HIST_STRIDE > h.length) return;
        const labels = { chain: n.chain, hop: n.hop, port_pair: n.portPair };
        const at = i * HIST_STRIDE;
        let count = 0;
        for (let k = 0; k < HIST_BUCKETS; k++) {
          count += h[at + k];
          values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: LATENCY_LE[k] }, value: count });
        }
        values.push({ metricName: `${name}_sum`, labels, value: h[at + HIST_SUM] / 1e6 }, { metricName: `${name}_count`, labels, value: count });
      });
      return { name, help, type: 'histogram', values, aggregator: 'sum' };
    },
  } as unknown as Parameters<Registry['registerMetric']>[0]);
}

export class Metrics {
  readonly registry = new Registry();
  readonly #requests: Counter<'method' | 'status'>;

  constructor(source: MetricsSource) {
    const registers = [this.registry];
    this.#requests = new Counter({
      name: 'sfc_api_requests_total',
      help: 'REST API requests answered, by method and status code',
      labelNames: ['method', 'status'],
      registers,
    });
    new Gauge({
      name: 'sfc_state_revision',
      help: 'Revision of the committed model (one per accepted write)',
      registers,
      collect() {
        this.set(source.revision());
      },
    });
    new Gauge({
      name: 'sfc_table_generation',
      help: 'Generation of the dataplane tables currently live',
      registers,
      collect() {
        this.set(source.generation());
      },
    });
    const copied = <L extends string>(
      name: string,
      help: string,
      labelNames: L[],
      fill: (
        set: (labels: Record<L, string | number>, value: number) => void,
        stats: DataplaneStats,
        instances: readonly InstanceName[],
      ) => void,
    ) =>
      new Counter({
        name,
        help,
        labelNames,
        registers,
        async collect() {
          this.reset();
          const dp = await source.dataplane();
          if (dp) fill((labels, value) => this.inc(labels, value), dp.stats, dp.instances);
        },
      });
    copied('sfc_packets_total', 'Dataplane events (packets, bytes, cache hits ...)', ['event'], (set, s) =>
      COUNTERS.forEach((event, i) => set({ event }, s.events[i] ?? 0)),
    );
    copied('sfc_drops_total', 'Frames dropped, by reason', ['reason'], (set, s) =>
      DROP_REASONS.forEach((reason, i) => {
        if (i > 0) set({ reason }, s.drops[i] ?? 0);
      }),
    );
    const perInstance = (what: 'packets' | 'bytes', of: (s: DataplaneStats) => Float64Array) => {
      copied(`sfc_instance_${what}_total`, `${what} steered to each service function instance (port pair)`, ['chain', 'hop', 'port_pair'], (set, s, names) =>
        names.forEach((n, i) => n.portPair !== '' && set({ chain: n.chain, hop: n.hop, port_pair: n.portPair }, of(s)[i] ?? 0)),
      );
      copied(`sfc_hop_${what}_total`, `${what} steered to each chain hop (its instances summed)`, ['chain', 'hop'], (set, s, names) => {
        const hops = new Map<string, { chain: string; hop: number; n: number }>();
        names.forEach((n, i) => {
          if (n.portPair === '') return;
          const key = `${n.hop} ${n.chain}`;
          const h = hops.get(key) ?? hops.set(key, { chain: n.chain, hop: n.hop, n: 0 }).get(key)!;
          h.n += of(s)[i] ?? 0;
        });
        for (const h of hops.values()) set({ chain: h.chain, hop: h.hop }, h.n);
      });
    };
    new Gauge({
      name: 'sfc_instance_flows',
      help: `Flows going through each service function instance (port pair): used within the last ${FLOW_IDLE_MS / 1000} s (ovs driver: its conntrack pins)`,
      labelNames: ['chain', 'hop', 'port_pair'],
      registers,
      async collect() {
        this.reset();
        const dp = await source.dataplane();
        const flows = dp?.stats.instanceFlows;
        if (flows !== undefined) dp!.instances.forEach((n, i) => n.portPair !== '' && this.set({ chain: n.chain, hop: n.hop, port_pair: n.portPair }, flows[i] ?? 0));
      },
    });
    perInstance('packets', (s) => s.instancePackets);
    perInstance('bytes', (s) => s.instanceBytes);
    const perWorker = (name: string, help: string, value: (w: { events: Float64Array; busySeconds: number }) => number) =>
      copied(name, help, ['worker'], (set, s) => s.workers?.forEach((w, worker) => set({ worker }, value(w))));
    perWorker('sfc_worker_batches_total', 'Batches each data path worker processed', (w) => w.events[Ctr.batches]);
    perWorker('sfc_worker_packets_total', 'Frames each data path worker received', (w) => w.events[Ctr.rx_packets]);
    perWorker('sfc_worker_busy_seconds_total', 'CPU seconds each data path worker thread spent processing (not waiting)', (w) => w.busySeconds);
    sfLatencyHistogram(source, this.registry);
    copied('sfc_sf_latency_lost_total', 'Sampled frames that did not come back from a service function instance within 1 s', ['chain', 'hop', 'port_pair'], (set, s, names) =>
      names.forEach((n, i) => n.portPair !== '' && s.sfLatency !== undefined && (i + 1) * HIST_STRIDE <= s.sfLatency.length && set({ chain: n.chain, hop: n.hop, port_pair: n.portPair }, s.sfLatency[i * HIST_STRIDE + HIST_LOST])),
    );
    copied('sfc_interface_packets_total', 'Frames received and sent per interface', ['interface', 'direction'], (set, s) => {
      for (const itf of s.interfaces) {
        set({ interface: itf.name, direction: 'rx' }, itf.rxPackets);
        set({ interface: itf.name, direction: 'tx' }, itf.txPackets);
      }
    });
    copied('sfc_interface_io_total', "The packet I/O backend's own counters per interface (kernel drops, tx_busy, tx_in_place...)", ['interface', 'counter'], (set, s) => {
      for (const itf of s.interfaces) for (const [counter, n] of Object.entries(itf.io ?? {})) set({ interface: itf.name, counter }, n);
    });
  }

  /** One answered API request (methods outside the API's four are counted as OTHER). */
  countRequest(method: string, status: number): void {
    this.#requests.inc({ method: METHODS.has(method) ? method : 'OTHER', status: String(status) });
  }
}
