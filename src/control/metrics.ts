/*
 * Prometheus metrics (prom-client). The data path never touches prom-client: its counters are
 * plain Float64Arrays (counters.ts) and this registry copies them at scrape time, in each metric's
 * collect(). Only the API request counter is incremented live, once per response.
 *
 *   sfc_packets_total{event}                                  dataplane event counters
 *   sfc_drops_total{reason}                                   drops by reason
 *   sfc_instance_packets_total{port_chain,hop,port_pair}      packets sent to each SF instance
 *   sfc_interface_packets_total{interface,direction}          rx/tx per interface
 *   sfc_api_requests_total{method,status}                     REST requests answered
 *   sfc_state_revision                                        committed model revision
 *   sfc_table_generation                                      dataplane table generation live
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { COUNTERS, DROP_REASONS } from '../packet/counters.js';
import type { InstanceName } from '../dataplane/tables.js';

/** What the dataplane reports (Dataplane.stats() of the runtime), summed over workers. */
export interface DataplaneStats {
  events: Float64Array;
  drops: Float64Array;
  instancePackets: Float64Array;
  interfaces: { name: string; rxPackets: number; txPackets: number }[];
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
    const instanceLabels: ('port_chain' | 'hop' | 'port_pair')[] = ['port_chain', 'hop', 'port_pair'];
    copied('sfc_instance_packets_total', 'Packets steered to each service function instance', instanceLabels, (set, s, names) =>
      names.forEach((n, i) => set({ port_chain: n.chain, hop: n.hop, port_pair: n.portPair }, s.instancePackets[i] ?? 0)),
    );
    copied('sfc_interface_packets_total', 'Frames received and sent per interface', ['interface', 'direction'], (set, s) => {
      for (const itf of s.interfaces) {
        set({ interface: itf.name, direction: 'rx' }, itf.rxPackets);
        set({ interface: itf.name, direction: 'tx' }, itf.txPackets);
      }
    });
  }

  /** One answered API request (methods outside the API's four are counted as OTHER). */
  countRequest(method: string, status: number): void {
    this.#requests.inc({ method: METHODS.has(method) ? method : 'OTHER', status: String(status) });
  }
}
