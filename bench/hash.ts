/*
 * Flow-hash micro-benchmark: the JS int32 hash against xxhash-wasm, same key, same semantics
 * (src/hash/flowhash.ts). 256 prepared slots (IPv4 and IPv6 TCP/UDP 5-tuples) are hashed over and
 * over with the default 5-tuple mask for about one second per hasher, after a warm-up.
 * Prints one JSON line per hasher: {hash, ns_per_hash, flows, hashes}.
 *
 *   npm run build && node dist/bench/hash.js [seconds]
 */
import { Batch, BATCH } from '../src/packet/batch.js';
import { createXxhFlowHasher, DEFAULT_LB_MASK, hashFlow, type FlowHasher } from '../src/hash/flowhash.js';
import { mulberry32 } from '../src/dataplane/frames.js';

function prepareBatch(): Batch {
  const b = new Batch();
  const random = mulberry32(0x1234567);
  const next = () => (random() * 0x100000000) >>> 0;
  const frame = new Uint8Array(64);
  for (let i = 0; i < BATCH; i++) {
    for (let k = 0; k < 12; k++) frame[k] = next() & 0xff;
    b.push(frame, 0);
    const v6 = (i & 7) === 0;
    b.ipVer[i] = v6 ? 6 : 4;
    for (let w = 0; w < (v6 ? 4 : 1); w++) {
      b.src[i * 4 + w] = next();
      b.dst[i * 4 + w] = next();
    }
    b.proto[i] = i & 1 ? 6 : 17;
    b.sport[i] = next() & 0xffff;
    b.dport[i] = next() & 0xffff;
  }
  return b;
}

function run(name: string, hash: FlowHasher, b: Batch, seconds: number): void {
  let sink = 0;
  const round = (): void => {
    for (let i = 0; i < BATCH; i++) sink = (sink + hash(b, i, DEFAULT_LB_MASK, (i & 1) === 1, b.data, b.start[i])) | 0;
  };
  for (let r = 0; r < 2000; r++) round(); // warm-up: let the optimising compiler settle
  const budget = BigInt(Math.round(seconds * 1e9));
  const t0 = process.hrtime.bigint();
  let rounds = 0;
  let elapsed = 0n;
  while (elapsed < budget) {
    for (let r = 0; r < 100; r++) round();
    rounds += 100;
    elapsed = process.hrtime.bigint() - t0;
  }
  const hashes = rounds * BATCH;
  const line = { hash: name, ns_per_hash: Number(elapsed) / hashes, flows: BATCH, hashes, sink: sink >>> 0 };
  console.log(JSON.stringify(line));
}

const seconds = Number(process.argv[2] ?? 1);
const b = prepareBatch();
run('js-int32', hashFlow, b, seconds);
run('xxhash-wasm', await createXxhFlowHasher(), b, seconds);
