/*
 * Classifier and flow-cache micro-benchmark: one JSON line per rule count (1, 100, 1,000).
 *
 * Rules are random classifiers (IPv4 and IPv6, tcp/udp, prefixes /8../32 or /32../128, port
 * ranges), all bound to one logical port: the worst case, one partition holding every rule.
 * Fields:
 *  - ns_per_lookup: classify() on random traffic (mostly misses: the flow cache miss path);
 *  - ns_per_lookup_v6: the same with IPv6 traffic only;
 *  - ns_per_lookup_hit: traffic drawn from inside random rules;
 *  - miss_path_ns / miss_path_mpps: new flows: FlowCache.lookup (miss) + classify + FlowCache.insert;
 *  - ns_per_cache_hit: FlowCache.lookup of known flows;
 *  - compile_ms, table_bytes, hit_ratio (of the random traffic).
 * Times are CPU time of this process (process.cpuUsage), so other load on the machine inflates
 * them less than wall time would; cache and frequency effects of that load remain.
 * Run: npm run build && node dist/bench/classify.js   (about 5 s of CPU)
 */
import { Batch, BATCH } from '../src/packet/batch.js';
import { FlowCache } from '../src/classifier/flowcache.js';
import { classify, compileClassifier, type ClassifierTable } from '../src/classifier/lookup.js';
import { maskWords, type Rule } from '../src/classifier/rule.js';

let seed = 0x2545f491;
function rnd(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 4294967296;
}
const int = (n: number) => Math.floor(rnd() * n);
const u32 = () => int(4294967296) >>> 0;

function randomRule(): Rule {
  const ipVer = rnd() < 0.7 ? 4 : 6;
  const bits = ipVer === 4 ? 32 : 128;
  const srcLen = bits - int(bits - 7);
  const dstLen = bits - int(bits - 7);
  const words = () => (ipVer === 4 ? [u32(), 0, 0, 0] : [u32(), u32(), u32(), u32()]);
  const range = (): [number, number] => {
    const k = int(3);
    if (k === 0) return [0, 65535];
    const lo = int(60000);
    return [lo, k === 1 ? lo : lo + int(5000)];
  };
  const [sportMin, sportMax] = range();
  const [dportMin, dportMax] = range();
  return {
    ipVer, proto: rnd() < 0.5 ? 6 : 17,
    src: maskWords(words(), srcLen), srcLen, dst: maskWords(words(), dstLen), dstLen,
    sportMin, sportMax, dportMin, dportMax, inPort: 0,
  };
}

/** Fill a batch: random packets, or (fromRules) packets inside random rules. */
function fill(b: Batch, rules: Rule[], mode: 'random' | 'v6' | 'rules'): void {
  for (let i = 0; i < BATCH; i++) {
    const r = rules[int(rules.length)];
    const ipVer = mode === 'v6' ? 6 : mode === 'rules' ? r.ipVer : rnd() < 0.7 ? 4 : 6;
    b.ipVer[i] = ipVer;
    b.proto[i] = mode === 'rules' ? r.proto : rnd() < 0.5 ? 6 : 17;
    b.sport[i] = mode === 'rules' ? r.sportMin + int(r.sportMax - r.sportMin + 1) : int(65536);
    b.dport[i] = mode === 'rules' ? r.dportMin + int(r.dportMax - r.dportMin + 1) : int(65536);
    for (let k = 0; k < 4; k++) {
      const inV4 = ipVer === 4 && k > 0;
      const pick = (w: number[], len: number) => {
        const m = maskWords([-1, -1, -1, -1], len)[k];
        return mode === 'rules' ? ((w[k] & m) | (u32() & ~m)) >>> 0 : u32();
      };
      b.src[i * 4 + k] = inV4 ? 0 : pick(r.src, r.srcLen);
      b.dst[i * 4 + k] = inV4 ? 0 : pick(r.dst, r.dstLen);
    }
  }
  b.count = BATCH;
}

let sink = 0;

/** CPU time of this process in ns (the machine is shared: wall time would measure the neighbours). */
function cpuNs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1e3;
}

/** CPU ns per call of `body(batch, slot)` over the batches, run for about `ms` ms of CPU time. */
function time(batches: Batch[], ms: number, body: (b: Batch, i: number) => number): number {
  let calls = 0;
  const t0 = cpuNs();
  const end = t0 + ms * 1e6;
  let now = t0;
  do {
    for (const b of batches) for (let i = 0; i < BATCH; i++) sink = (sink + body(b, i)) | 0;
    calls += batches.length * BATCH;
    now = cpuNs();
  } while (now < end);
  return (now - t0) / calls;
}

function tableBytes(t: ClassifierTable): number {
  return [t.part4, t.part6, t.meta, t.dims, t.ruleIds, t.starts, t.blocks, t.protoMap, t.bits].reduce((s, a) => s + a.byteLength, 0);
}

const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

for (const n of [1, 100, 1000]) {
  const rules = Array.from({ length: n }, randomRule);
  const c0 = cpuNs();
  const t = compileClassifier(rules);
  const compileMs = (cpuNs() - c0) / 1e6;
  const make = (mode: 'random' | 'v6' | 'rules') =>
    Array.from({ length: 16 }, () => {
      const b = new Batch();
      fill(b, rules, mode);
      return b;
    });
  const random = make('random');
  const v6 = make('v6');
  const inside = make('rules');
  let hits = 0;
  for (const b of random) for (let i = 0; i < BATCH; i++) if (classify(t, b, i, 0, false) >= 0) hits++;

  const lookup = (b: Batch, i: number) => classify(t, b, i, 0, false);
  time(random, 100, lookup); // warm-up
  const nsRandom = time(random, 300, lookup);
  const nsV6 = time(v6, 200, lookup);
  const nsHit = time(inside, 200, lookup);

  // Miss path: every packet is a new flow (the source port changes each call).
  const cache = new FlowCache(1 << 16);
  let flowSeq = 0;
  const missPath = (b: Batch, i: number) => {
    b.sport[i] = flowSeq++ & 0xffff;
    if (cache.lookup(b, i, 0, false) >= 0) return 0;
    const r = classify(t, b, i, 0, false);
    return cache.insert(b, i, 0, false) + r;
  };
  time(random, 50, missPath);
  const nsMiss = time(random, 300, missPath);

  const hitCache = new FlowCache(1 << 16);
  for (const b of random) for (let i = 0; i < BATCH; i++) hitCache.insert(b, i, 0, false);
  const cacheHit = (b: Batch, i: number) => hitCache.lookup(b, i, 0, false);
  time(random, 50, cacheHit);
  const nsCacheHit = time(random, 200, cacheHit);

  console.log(
    JSON.stringify({
      bench: 'classify',
      rules: n,
      ns_per_lookup: round(nsRandom),
      ns_per_lookup_v6: round(nsV6),
      ns_per_lookup_hit: round(nsHit),
      hit_ratio: round(hits / (random.length * BATCH), 3),
      miss_path_ns: round(nsMiss),
      miss_path_mpps: round(1e3 / nsMiss, 2),
      ns_per_cache_hit: round(nsCacheHit),
      compile_ms: round(compileMs),
      table_bytes: tableBytes(t),
    }),
  );
}
if (sink === 0x7fffffff) console.log(sink); // keeps the measured calls observable
