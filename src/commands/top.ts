/*
 * `sfc top`: a live view of a running server, refreshed every second (Snabb's `snabb top`, VPP's
 * `show runtime`). It reads /metrics — the same counters Prometheus scrapes — and shows the rate
 * of each between two reads: per chain, hop and instance packets/s and bits/s (with the totals
 * since start), the flows going through it (sfc_instance_flows; per hop their sum), the instance's health state (per hop: how many of its instances are up) and the
 * time frames spend inside it (median and 99th percentile of the sampled frames over the
 * interval, or since start when none was sampled in it); drops per reason; per data path worker
 * batches/s, mean batch size and the CPU its thread used. On a terminal it takes the alternate
 * screen and gives it back on Ctrl-C; not on a terminal it prints one plain block per refresh;
 * --json prints one snapshot and exits.
 */
import { metric, parsePrometheus, type Sample } from '../lab/harness.js';
import { parseOptions, UsageError, type Command } from '../util/args.js';
import { Server, SERVER_HELP, SERVER_OPTIONS } from './live.js';

export interface Rate {
  /** Counter value at the second read. */
  total: number;
  /** Its increase per second between the reads. */
  perSecond: number;
}

/** Time sampled frames spent inside an SF instance (sfc_sf_latency_seconds). */
export interface SfTime {
  /** Samples the figures are over: those of the interval, or when there were none all since start. */
  samples: number;
  window: 'interval' | 'total';
  p50Us: number | null;
  p99Us: number | null;
}

export interface InstanceRow {
  instance: string;
  packets: Rate;
  bytes: Rate;
  /** sfc_instance_flows: its flows used within the dataplane's idle time (null: the driver does not count them). */
  flows: number | null;
  /** sfc_instance_up (null: health checks off). */
  up: boolean | null;
  /** null: the dataplane does not sample (e.g. the ovs driver). */
  sfTime: SfTime | null;
}

export interface HopRow {
  hop: number;
  packets: Rate;
  bytes: Rate;
  /** Its instances' flows summed (null: none counted). */
  flows: number | null;
  instances: InstanceRow[];
}

export interface TopView {
  server: string;
  /** When the second read was taken (ms since the epoch) and the seconds between the reads. */
  at: number;
  seconds: number;
  rx: Rate;
  tx: Rate;
  dropped: Rate;
  chains: { chain: string; hops: HopRow[] }[];
  drops: { reason: string; count: Rate }[];
  workers: { worker: number; batchesPerSecond: number; meanBatch: number; cpuPercent: number }[];
}

export interface Scrape {
  at: number;
  samples: Sample[];
}

/** An instance's latency buckets in a scrape: [upper bound s, cumulative count], ascending. */
export function latencyBuckets(samples: Sample[], labels: Record<string, string>): [number, number][] {
  const out: [number, number][] = [];
  for (const s of samples) {
    if (s.name !== 'sfc_sf_latency_seconds_bucket' || s.labels.port_pair !== labels.port_pair || s.labels.chain !== labels.chain || s.labels.hop !== labels.hop) continue;
    out.push([s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), s.value]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

/**
 * The q-quantile (seconds) of cumulative Prometheus buckets, as PromQL's histogram_quantile
 * computes it (linear within the bucket; the first bucket starts at 0; null without samples).
 */
export function histogramQuantile(buckets: [number, number][], q: number): number | null {
  const total = buckets.length > 0 ? buckets[buckets.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank && count > prevCount) {
      if (le === Infinity) return prevLe;
      return prevLe + (le - prevLe) * ((rank - prevCount) / (count - prevCount));
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/** An instance's SF time between two scrapes (since start when nothing was sampled in between). */
export function sfTime(prev: Sample[], cur: Sample[], labels: Record<string, string>): SfTime | null {
  const now = latencyBuckets(cur, labels);
  if (now.length === 0) return null;
  const before = new Map(latencyBuckets(prev, labels));
  const delta = now.map(([le, n]): [number, number] => [le, Math.max(0, n - (before.get(le) ?? 0))]);
  const inInterval = delta[delta.length - 1][1] > 0;
  const use = inInterval ? delta : now;
  const us = (q: number) => {
    const v = histogramQuantile(use, q);
    return v === null ? null : v * 1e6;
  };
  return { samples: use[use.length - 1][1], window: inInterval ? 'interval' : 'total', p50Us: us(0.5), p99Us: us(0.99) };
}

/** 85 -> "85 µs", 2104 -> "2.10 ms", 12345 -> "12.3 ms", 1.5e6 -> "1.50 s", null -> "-" (at most 7 columns: a cell keeps a space before it). */
export function micros(us: number | null): string {
  if (us === null) return '-';
  const [v, unit] = us < 999.5 ? [us, 'µs'] : us < 999_500 ? [us / 1000, 'ms'] : [us / 1e6, 's'];
  for (const digits of unit === 'µs' ? [0] : [2, 1, 0]) {
    const text = `${v.toFixed(digits)} ${unit}`;
    if (text.length <= 7) return text;
  }
  return `${Math.round(v)} ${unit}`;
}

/** The view between two reads of /metrics (a counter that went down was reset: counted from 0). */
export function topView(server: string, prev: Scrape, cur: Scrape): TopView {
  const seconds = Math.max((cur.at - prev.at) / 1000, 1e-3);
  const rate = (name: string, labels: Record<string, string> = {}): Rate => {
    const total = metric(cur.samples, name, labels);
    const before = metric(prev.samples, name, labels);
    return { total, perSecond: (total >= before ? total - before : total) / seconds };
  };
  const chains = new Map<string, Map<number, InstanceRow[]>>();
  for (const s of cur.samples) {
    if (s.name !== 'sfc_instance_packets_total') continue;
    const { chain, hop, port_pair: instance } = s.labels;
    const hops = chains.get(chain) ?? chains.set(chain, new Map()).get(chain)!;
    const rows = hops.get(Number(hop)) ?? hops.set(Number(hop), []).get(Number(hop))!;
    const labels = { chain, hop, port_pair: instance };
    const health = cur.samples.find((h) => h.name === 'sfc_instance_up' && h.labels.instance === instance);
    const flows = cur.samples.find((f) => f.name === 'sfc_instance_flows' && f.labels.port_pair === instance && f.labels.chain === chain && f.labels.hop === hop);
    rows.push({
      instance,
      packets: rate(s.name, labels),
      bytes: rate('sfc_instance_bytes_total', labels),
      flows: flows?.value ?? null,
      up: health === undefined ? null : health.value === 1,
      sfTime: sfTime(prev.samples, cur.samples, labels),
    });
  }
  const sum = (rows: Rate[]): Rate => ({ total: rows.reduce((n, r) => n + r.total, 0), perSecond: rows.reduce((n, r) => n + r.perSecond, 0) });
  const workers = cur.samples
    .filter((s) => s.name === 'sfc_worker_batches_total')
    .map((s) => {
      const w = { worker: s.labels.worker };
      const batches = rate('sfc_worker_batches_total', w).perSecond;
      const packets = rate('sfc_worker_packets_total', w).perSecond;
      const busy = rate('sfc_worker_busy_seconds_total', w).perSecond;
      return { worker: Number(w.worker), batchesPerSecond: batches, meanBatch: batches > 0 ? packets / batches : 0, cpuPercent: busy * 100 };
    });
  return {
    server,
    at: cur.at,
    seconds,
    rx: rate('sfc_packets_total', { event: 'rx_packets' }),
    tx: rate('sfc_packets_total', { event: 'tx_packets' }),
    dropped: rate('sfc_packets_total', { event: 'dropped' }),
    chains: [...chains]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([chain, hops]) => ({
        chain,
        hops: [...hops]
          .sort(([a], [b]) => a - b)
          .map(([hop, rows]) => {
            rows.sort((a, b) => a.instance.localeCompare(b.instance));
            const counted = rows.filter((r) => r.flows !== null);
            const flows = counted.length === 0 ? null : counted.reduce((n, r) => n + r.flows!, 0);
            return { hop, packets: sum(rows.map((r) => r.packets)), bytes: sum(rows.map((r) => r.bytes)), flows, instances: rows };
          }),
      })),
    drops: cur.samples
      .filter((s) => s.name === 'sfc_drops_total' && s.value > 0)
      .map((s) => ({ reason: s.labels.reason, count: rate(s.name, { reason: s.labels.reason }) }))
      .sort((a, b) => b.count.total - a.count.total),
    workers,
  };
}

/** 1234567 -> "1,234,567"; rates with one decimal below 100. */
export const num = (n: number) => (n < 100 && !Number.isInteger(n) ? n.toFixed(1) : Math.round(n).toLocaleString('en-US'));

/** Bits per second with an SI prefix: "512.0 kb/s". */
export function bits(bytesPerSecond: number): string {
  let v = bytesPerSecond * 8;
  for (const unit of ['b/s', 'kb/s', 'Mb/s', 'Gb/s']) {
    if (v < 1000 || unit === 'Gb/s') return `${v.toFixed(unit === 'b/s' ? 0 : 1)} ${unit}`;
    v /= 1000;
  }
  return '';
}

const WIDTHS = [20, 10, 11, 8, 14, 15, 6, 8, 8];

/** Cells padded to WIDTHS (the first left-aligned, cut to fit; the others right-aligned, a space before one too wide). */
function row(cells: string[], bold = false): string {
  const line = cells.map((c, i) => (i === 0 ? c.slice(0, WIDTHS[0] - 1).padEnd(WIDTHS[0]) : c.length < WIDTHS[i] ? c.padStart(WIDTHS[i]) : ` ${c}`)).join('').trimEnd();
  return bold ? `\x1b[1m${line}\x1b[0m` : line;
}

const flowsText = (n: number | null) => (n === null ? '-' : num(n));
const state = (up: boolean | null) => (up === null ? '-' : up ? 'up' : 'DOWN');

/** The view as lines of at most 100 columns (bold headers when `tty`). */
export function renderTop(v: TopView, tty: boolean): string[] {
  const clock = new Date(v.at).toISOString().slice(11, 19);
  const lines = [
    `sfc top  ${v.server}  ${clock} UTC  (rates over ${v.seconds.toFixed(1)} s; Ctrl-C quits)`.slice(0, 100),
    `rx ${num(v.rx.perSecond)} pkt/s   tx ${num(v.tx.perSecond)} pkt/s   dropped ${num(v.dropped.perSecond)} pkt/s` +
      `   (totals: rx ${num(v.rx.total)}, dropped ${num(v.dropped.total)})`,
    '',
    row(['CHAIN/HOP/INSTANCE', 'PACKETS/S', 'BITS/S', 'FLOWS', 'PACKETS', 'BYTES', 'STATE', 'SF P50', 'SF P99'], tty),
  ];
  if (v.chains.length === 0) lines.push('(no chain has an instance)');
  for (const c of v.chains) {
    lines.push(c.chain.slice(0, 100));
    for (const h of c.hops) {
      // the hop's state: how many of its instances are up (when health checks run)
      const known = h.instances.filter((i) => i.up !== null);
      const hopState = known.length === 0 ? '' : `${known.filter((i) => i.up).length}/${h.instances.length}`;
      lines.push(row([`  hop ${h.hop}`, num(h.packets.perSecond), bits(h.bytes.perSecond), flowsText(h.flows), num(h.packets.total), num(h.bytes.total), hopState]));
      for (const i of h.instances) {
        lines.push(
          row([
            `    ${i.instance}`,
            num(i.packets.perSecond),
            bits(i.bytes.perSecond),
            flowsText(i.flows),
            num(i.packets.total),
            num(i.bytes.total),
            state(i.up),
            micros(i.sfTime?.p50Us ?? null),
            micros(i.sfTime?.p99Us ?? null),
          ]),
        );
      }
    }
  }
  lines.push('', row(['DROP REASON', 'PER SECOND', '', '', 'TOTAL'], tty));
  if (v.drops.length === 0) lines.push('(none)');
  for (const d of v.drops) lines.push(row([d.reason, num(d.count.perSecond), '', '', num(d.count.total)]));
  if (v.workers.length > 0) {
    lines.push('', row(['WORKER', 'BATCHES/S', 'MEAN BATCH', 'CPU %'], tty));
    for (const w of v.workers) lines.push(row([String(w.worker), num(w.batchesPerSecond), w.meanBatch.toFixed(1), w.cpuPercent.toFixed(1)]));
  }
  return lines;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

export const command: Command = {
  summary: 'live per chain, hop and instance rates, drops and workers of a running server',
  usage: `[--server URL] [--token T] [--json] [--interval S] [--iterations N]
  --json              one snapshot (rates over one interval) as JSON, then exit
  --interval S        seconds between refreshes (default 1)
  --iterations N      stop after N refreshes (default: until Ctrl-C)
${SERVER_HELP}`,

  async run(argv) {
    const { values } = parseOptions(argv, {
      ...SERVER_OPTIONS,
      json: { type: 'boolean' },
      interval: { type: 'string', default: '1' },
      iterations: { type: 'string' },
    });
    const interval = Number(values.interval);
    if (!(interval >= 0.1 && interval <= 3600)) throw new UsageError(`--interval must be seconds between 0.1 and 3600, got '${values.interval}'`);
    const iterations = values.iterations === undefined ? Infinity : Number(values.iterations);
    if (!(Number.isInteger(iterations) || iterations === Infinity) || iterations < 1) throw new UsageError(`--iterations must be a positive integer, got '${values.iterations}'`);
    const server = new Server(values);
    const scrape = async (): Promise<Scrape> => ({ at: Date.now(), samples: parsePrometheus(await server.text('/metrics')) });

    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const tty = !values.json && process.stdout.isTTY === true;
    if (tty) process.stdout.write('\x1b[?1049h\x1b[?25l'); // alternate screen, cursor hidden
    try {
      let prev = await scrape();
      for (let n = 0; n < iterations && !stop.signal.aborted; n++) {
        await sleep(interval * 1000, stop.signal);
        if (stop.signal.aborted) break;
        const cur = await scrape();
        const view = topView(server.url, prev, cur);
        prev = cur;
        if (values.json) {
          console.log(JSON.stringify(view, null, 2));
          break;
        }
        const text = renderTop(view, tty).join('\n');
        process.stdout.write(tty ? `\x1b[H\x1b[2J${text}\n` : `${text}\n\n`);
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      if (tty) process.stdout.write('\x1b[?25h\x1b[?1049l'); // cursor back, main screen back
    }
    return 0;
  },
};
