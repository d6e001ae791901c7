import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Batch } from '../src/packet/batch.js';
import type { FlowClassifier } from '../src/control/model.js';
import {
  formatAddress,
  maskWords,
  parseAddress,
  parsePrefix,
  ruleFromClassifier,
  type Rule,
} from '../src/classifier/rule.js';
import { classify, compileClassifier, describeRule } from '../src/classifier/lookup.js';

// ---------------------------------------------------------------------------------------------
// Reference matcher: a linear scan written with BigInt arithmetic, independent of the compiler.

interface Pkt {
  ipVer: number;
  proto: number;
  src: number[];
  dst: number[];
  sport: number;
  dport: number;
  inPort: number;
}

function big(words: number[], ver: number): bigint {
  let v = 0n;
  for (let k = 0; k < (ver === 4 ? 1 : 4); k++) v = (v << 32n) | BigInt(words[k] >>> 0);
  return v;
}

function inPrefix(addr: number[], pfx: number[], len: number, ver: number): boolean {
  const shift = BigInt((ver === 4 ? 32 : 128) - len);
  return big(addr, ver) >> shift === big(pfx, ver) >> shift;
}

function reference(rules: Rule[], p: Pkt, ignorePorts: boolean): number {
  return rules.findIndex(
    (r) =>
      r.ipVer === p.ipVer &&
      (r.inPort < 0 || r.inPort === p.inPort) &&
      (r.proto < 0 || r.proto === p.proto) &&
      inPrefix(p.src, r.src, r.srcLen, r.ipVer) &&
      inPrefix(p.dst, r.dst, r.dstLen, r.ipVer) &&
      (ignorePorts || (p.sport >= r.sportMin && p.sport <= r.sportMax)) &&
      (ignorePorts || (p.dport >= r.dportMin && p.dport <= r.dportMax)),
  );
}

// ---------------------------------------------------------------------------------------------
// Seeded generators.

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PORTS = 6;

class Gen {
  readonly rnd: () => number;
  /** Small pools of addresses so that prefixes nest and overlap. */
  readonly pool4: number[][];
  readonly pool6: number[][];

  /** `wild`: chance that a rule leaves a dimension (prefix, protocol, port range, in-port) open. */
  constructor(seed: number, readonly wild = 0.3) {
    this.rnd = prng(seed);
    this.pool4 = Array.from({ length: 6 }, () => [this.u32(), 0, 0, 0]);
    this.pool6 = Array.from({ length: 6 }, () => [0x20010db8, this.u32(), this.u32(), this.u32()]);
  }

  int(n: number): number {
    return Math.floor(this.rnd() * n);
  }
  u32(): number {
    return Math.floor(this.rnd() * 4294967296) >>> 0;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }

  /** An address near the pool: a pool entry with some low bits randomised. */
  address(ver: 4 | 6): number[] {
    const base = [...this.pick(ver === 4 ? this.pool4 : this.pool6)];
    const total = ver === 4 ? 32 : 128;
    const keep = this.pick([0, total / 4, total / 2, total - 8, total]);
    const rand = ver === 4 ? [this.u32(), 0, 0, 0] : [this.u32(), this.u32(), this.u32(), this.u32()];
    const hi = maskWords(base, keep);
    const host = maskWords([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], keep).map((m) => ~m >>> 0);
    const a = hi.map((w, k) => (w | (rand[k] & host[k])) >>> 0);
    return ver === 4 ? [a[0], 0, 0, 0] : a;
  }

  prefixLen(ver: 4 | 6): number {
    const total = ver === 4 ? 32 : 128;
    if (this.rnd() < this.wild) return 0;
    return this.pick([total, total, this.int(total + 1), this.int(total + 1), 8, 16, 24]);
  }

  range(): [number, number] {
    if (this.rnd() < this.wild) return [0, 65535];
    switch (this.int(4)) {
      case 0:
        return [this.int(65536), 65535]; // min only
      case 1:
        return [0, this.int(65536)]; // max only
      case 2: {
        const p = this.int(2000);
        return [p, p];
      }
      default: {
        const a = this.int(4000);
        return [a, a + this.int(3000)];
      }
    }
  }

  rule(): Rule {
    const ipVer = this.rnd() < 0.6 ? 4 : 6;
    const proto = this.rnd() < this.wild ? -1 : this.pick([6, 17, ipVer === 4 ? 1 : 58]);
    const srcLen = this.prefixLen(ipVer);
    const dstLen = this.prefixLen(ipVer);
    const [sportMin, sportMax] = proto === 6 || proto === 17 ? this.range() : [0, 65535];
    const [dportMin, dportMax] = proto === 6 || proto === 17 ? this.range() : [0, 65535];
    return {
      ipVer,
      proto,
      src: maskWords(this.address(ipVer), srcLen),
      srcLen,
      dst: maskWords(this.address(ipVer), dstLen),
      dstLen,
      sportMin,
      sportMax,
      dportMin,
      dportMax,
      inPort: this.rnd() < this.wild ? -1 : this.int(PORTS),
    };
  }

  /** A packet inside rule r (its prefixes, ranges, protocol and port). */
  packetIn(r: Rule): Pkt {
    const fill = (pfx: number[], len: number) => {
      const a = this.address(r.ipVer);
      const m = maskWords([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], len);
      return a.map((w, k) => ((pfx[k] & m[k]) | (w & ~m[k])) >>> 0);
    };
    const inRange = (lo: number, hi: number) => lo + this.int(hi - lo + 1);
    return {
      ipVer: r.ipVer,
      proto: r.proto >= 0 ? r.proto : this.pick([6, 17, 1, 58, 132]),
      src: fill(r.src, r.srcLen),
      dst: fill(r.dst, r.dstLen),
      sport: inRange(r.sportMin, r.sportMax),
      dport: inRange(r.dportMin, r.dportMax),
      inPort: r.inPort >= 0 ? r.inPort : this.int(PORTS + 2),
    };
  }

  packetRandom(): Pkt {
    const ipVer = this.rnd() < 0.5 ? 4 : 6;
    return {
      ipVer,
      proto: this.pick([6, 17, 1, 58, 132]),
      src: this.address(ipVer),
      dst: this.address(ipVer),
      sport: this.rnd() < 0.5 ? this.int(5000) : this.int(65536),
      dport: this.rnd() < 0.5 ? this.int(5000) : this.int(65536),
      inPort: this.int(PORTS + 2),
    };
  }
}

function load(b: Batch, i: number, p: Pkt): void {
  b.ipVer[i] = p.ipVer;
  b.proto[i] = p.proto;
  b.sport[i] = p.sport;
  b.dport[i] = p.dport;
  for (let k = 0; k < 4; k++) {
    b.src[i * 4 + k] = p.src[k];
    b.dst[i * 4 + k] = p.dst[k];
  }
}

// ---------------------------------------------------------------------------------------------

describe('classify against the linear reference', () => {
  const sizes = [10, 37, 100, 300, 1000];
  for (const n of sizes) {
    it(`${n} random rules, v4 and v6, with and without ignorePorts`, () => {
      // Larger sets get fewer open dimensions, or nearly every packet would hit some wildcard.
      const g = new Gen(1000 + n, n >= 300 ? 0.1 : 0.3);
      const rules = Array.from({ length: n }, () => g.rule());
      const t = compileClassifier(rules);
      const b = new Batch();
      let hits = 0;
      let lookups = 0;
      const packets = n >= 1000 ? 1500 : 3000;
      for (let k = 0; k < packets; k++) {
        const p = k % 2 === 0 ? g.packetIn(g.pick(rules)) : g.packetRandom();
        load(b, 0, p);
        for (const ignorePorts of [false, true]) {
          const want = reference(rules, p, ignorePorts);
          const got = classify(t, b, 0, p.inPort, ignorePorts);
          if (got !== want) {
            throw new Error(`packet ${JSON.stringify(p)} ignorePorts=${ignorePorts}: got ${got}, want ${want}`);
          }
          if (want >= 0) hits++;
          lookups++;
        }
      }
      // The generator must exercise both outcomes, or the comparison proves little.
      expect(hits).toBeGreaterThan(lookups / 2);
      expect(hits).toBeLessThan(lookups * 0.95);
    });
  }

  it('one partition over 1,024 rules (several summary words): late rules are still found', () => {
    const g = new Gen(5, 0.05);
    const rules = Array.from({ length: 1200 }, () => ({ ...g.rule(), ipVer: 4 as const, inPort: 0 }));
    // The top source bit separates the first 1,024 rules from the later ones, so that later rules
    // (local bits in the second summary word) are the answer for packets drawn from them.
    rules.forEach((r, j) => {
      r.srcLen = Math.max(1, Math.min(r.srcLen, 32));
      r.src = [j < 1024 ? r.src[0] & 0x7fffffff : (r.src[0] | 0x80000000) >>> 0, 0, 0, 0];
      r.dstLen = Math.min(r.dstLen, 32);
      r.dst = maskWords([r.dst[0], 0, 0, 0], r.dstLen);
      if (r.proto === 58) r.proto = 1;
    });
    const t = compileClassifier(rules);
    const b = new Batch();
    let late = 0;
    for (let k = 0; k < 1500; k++) {
      const p = k % 2 === 0 ? g.packetIn(rules[1024 + g.int(176)]) : g.packetIn(g.pick(rules));
      if (k % 5 === 0) p.sport = g.int(65536);
      load(b, 0, p);
      const want = reference(rules, p, false);
      expect(classify(t, b, 0, p.inPort, false)).toBe(want);
      if (want >= 1024) late++;
    }
    expect(late).toBeGreaterThan(50);
  });

  it('random rule sets from fast-check (shrinks to a minimal failing set)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 60 }), fc.integer(), (n, seed) => {
        const g = new Gen(seed);
        const rules = Array.from({ length: n }, () => g.rule());
        const t = compileClassifier(rules);
        const b = new Batch();
        for (let k = 0; k < 100; k++) {
          const p = k % 2 === 0 ? g.packetIn(g.pick(rules)) : g.packetRandom();
          load(b, 3, p);
          const ig = k % 3 === 0;
          if (classify(t, b, 3, p.inPort, ig) !== reference(rules, p, ig)) return false;
        }
        return true;
      }),
      { numRuns: 60, seed: 42 },
    );
  });

  it('returns the lowest index among overlapping rules, across port and any-port partitions', () => {
    const any: Rule = {
      ipVer: 4, proto: -1, src: [0, 0, 0, 0], srcLen: 0, dst: [0, 0, 0, 0], dstLen: 0,
      sportMin: 0, sportMax: 65535, dportMin: 0, dportMax: 65535, inPort: -1,
    };
    const tcp80: Rule = { ...any, proto: 6, dportMin: 80, dportMax: 80, inPort: 2 };
    const b = new Batch();
    load(b, 0, { ipVer: 4, proto: 6, src: [1, 0, 0, 0], dst: [2, 0, 0, 0], sport: 5, dport: 80, inPort: 2 });
    expect(classify(compileClassifier([tcp80, any]), b, 0, 2, false)).toBe(0);
    expect(classify(compileClassifier([any, tcp80]), b, 0, 2, false)).toBe(0);
    expect(classify(compileClassifier([tcp80, any]), b, 0, 1, false)).toBe(1);
    b.dport[0] = 81;
    expect(classify(compileClassifier([tcp80, any]), b, 0, 2, false)).toBe(1);
    expect(classify(compileClassifier([tcp80]), b, 0, 2, false)).toBe(-1);
    expect(classify(compileClassifier([tcp80]), b, 0, 2, true)).toBe(0);
  });

  it('range and prefix edges: 0, the top value and its neighbour', () => {
    const top4 = 0xffffffff;
    const base: Rule = {
      ipVer: 4, proto: 17, src: [0, 0, 0, 0], srcLen: 0, dst: [0, 0, 0, 0], dstLen: 0,
      sportMin: 0, sportMax: 65535, dportMin: 0, dportMax: 65535, inPort: -1,
    };
    const v6top = [top4, top4, top4, top4];
    const rules: Rule[] = [
      { ...base, sportMin: 65535 },
      { ...base, sportMax: 65534, sportMin: 65534 },
      { ...base, dportMax: 0 },
      { ...base, src: [top4 - 1, 0, 0, 0], srcLen: 32 },
      { ...base, dst: [top4, 0, 0, 0], dstLen: 32 },
      { ...base, src: [0, 0, 0, 0], srcLen: 32, dst: [0x80000000, 0, 0, 0], dstLen: 1 },
      { ...base, ipVer: 6, src: [top4, top4, top4, top4 - 1], srcLen: 128 },
      { ...base, ipVer: 6, dst: v6top, dstLen: 128, sportMin: 1, sportMax: 1 },
      { ...base, ipVer: 6, src: [top4, top4, 0x80000000, 0], srcLen: 65 },
    ];
    const t = compileClassifier(rules);
    const b = new Batch();
    const addrs4 = [0, 1, 0x7fffffff, 0x80000000, top4 - 1, top4];
    const words6 = [0, 0x7fffffff, 0x80000000, top4 - 1, top4];
    const ports = [0, 1, 65534, 65535];
    let hits = 0;
    for (const ipVer of [4, 6]) {
      const addrs = ipVer === 4 ? addrs4.map((a) => [a, 0, 0, 0]) : words6.flatMap((w) => [[top4, top4, top4, w], [top4, top4, w, 0]]);
      for (const src of addrs) for (const dst of addrs) for (const sport of ports) for (const dport of ports) {
        const p: Pkt = { ipVer, proto: 17, src, dst, sport, dport, inPort: 0 };
        load(b, 0, p);
        expect(classify(t, b, 0, 0, false)).toBe(reference(rules, p, false));
        if (reference(rules, p, false) >= 0) hits++;
      }
    }
    expect(hits).toBeGreaterThan(0);
  });

  it('a non-IP slot matches nothing, even a full wildcard', () => {
    const g = new Gen(7);
    const wild: Rule = {
      ipVer: 4, proto: -1, src: [0, 0, 0, 0], srcLen: 0, dst: [0, 0, 0, 0], dstLen: 0,
      sportMin: 0, sportMax: 65535, dportMin: 0, dportMax: 65535, inPort: -1,
    };
    const t = compileClassifier([wild, { ...wild, ipVer: 6 }]);
    const b = new Batch();
    load(b, 0, g.packetRandom());
    b.ipVer[0] = 0;
    expect(classify(t, b, 0, 0, false)).toBe(-1);
    b.ipVer[0] = 4;
    expect(classify(t, b, 0, 0, false)).toBe(0);
    b.ipVer[0] = 6;
    expect(classify(t, b, 0, 0, false)).toBe(1);
  });

  it('an empty rule set and unknown ports give -1', () => {
    const b = new Batch();
    load(b, 0, new Gen(1).packetRandom());
    expect(classify(compileClassifier([]), b, 0, 0, false)).toBe(-1);
    const r = new Gen(2).rule();
    const t = compileClassifier([{ ...r, inPort: 3 }]);
    expect(classify(t, b, 0, 99, false)).toBe(-1);
    expect(classify(t, b, 0, -1, false)).toBe(-1);
  });

  it('the table survives structured cloning (it is posted to workers)', () => {
    const g = new Gen(99);
    const rules = Array.from({ length: 200 }, () => g.rule());
    const t = compileClassifier(rules);
    const copy = structuredClone(t);
    const b = new Batch();
    for (let k = 0; k < 500; k++) {
      const p = k % 2 ? g.packetIn(g.pick(rules)) : g.packetRandom();
      load(b, 0, p);
      expect(classify(copy, b, 0, p.inPort, false)).toBe(reference(rules, p, false));
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('address and prefix parsing', () => {
  it('IPv4: canonical dotted form only', () => {
    expect(parseAddress('10.1.2.3')).toEqual({ ver: 4, words: [0x0a010203, 0, 0, 0] });
    expect(parseAddress('255.255.255.255')?.words[0]).toBe(0xffffffff);
    for (const bad of ['10.0.0.0.0', '256.0.0.0', '10.0.0', '10.0.0.01', '1.2.3.-4', '', 'a.b.c.d', '1..2.3']) {
      expect(parseAddress(bad), bad).toBeNull();
    }
  });

  it('prefixes: slash required, length bounded, host bits kept as written', () => {
    expect(parsePrefix('10.0.0.1/8')).toEqual({ ver: 4, words: [0x0a000001, 0, 0, 0], len: 8 });
    expect(parsePrefix('::/0')).toEqual({ ver: 6, words: [0, 0, 0, 0], len: 0 });
    for (const bad of ['10.0.0.0/34', '10.0.0.0/33', '10.0.0.0.0/8', '256.0.0.0/8', '10.0.0.0', '10.0.0.0/', '::/129', '::1/-1', '1::/a']) {
      expect(parsePrefix(bad), bad).toBeNull();
    }
    expect(parsePrefix('10.0.0.0/32')?.len).toBe(32);
    expect(parsePrefix('2001:db8::/128')?.len).toBe(128);
  });

  it('IPv6 forms: ::, embedded IPv4, malformed', () => {
    expect(parseAddress('::1')?.words).toEqual([0, 0, 0, 1]);
    expect(parseAddress('1::')?.words).toEqual([0x00010000, 0, 0, 0]);
    expect(parseAddress('::ffff:10.1.2.3')?.words).toEqual([0, 0, 0xffff, 0x0a010203]);
    expect(parseAddress('1:2:3:4:5:6:7:8')?.words).toEqual([0x00010002, 0x00030004, 0x00050006, 0x00070008]);
    expect(parseAddress('FF::0')?.ver).toBe(6);
    for (const bad of ['1::2::3', ':1::2', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8::', '12345::', '::g', '1.2.3.4::', ':::', '::1.2.3']) {
      expect(parseAddress(bad), bad).toBeNull();
    }
  });

  it('IPv6 parse and format agree with the WHATWG URL host serializer on random addresses', () => {
    // Groups drawn mostly from {0, small, large} so that zero runs of every length occur.
    const group = fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff }));
    fc.assert(
      fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), fc.boolean(), (g, upper) => {
        const full = g.map((x) => x.toString(16)).join(':');
        const text = upper ? full.toUpperCase() : full;
        const canon = new URL(`http://[${text}]/`).hostname.slice(1, -1);
        const parsed = parseAddress(text);
        const reparsed = parseAddress(canon);
        expect(parsed).not.toBeNull();
        expect(reparsed?.words).toEqual(parsed?.words);
        expect(formatAddress(6, parsed!.words)).toBe(canon);
      }),
      { numRuns: 500, seed: 7 },
    );
  });

  it('maskWords clears host bits across word boundaries', () => {
    const ones = [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff];
    expect(maskWords(ones, 0)).toEqual([0, 0, 0, 0]);
    expect(maskWords(ones, 33)).toEqual([0xffffffff, 0x80000000, 0, 0]);
    expect(maskWords(ones, 128)).toEqual(ones);
    expect(maskWords([0x0a0b0c0d, 0, 0, 0], 12)).toEqual([0x0a000000, 0, 0, 0]);
  });
});

// ---------------------------------------------------------------------------------------------

function classifier(over: Partial<FlowClassifier>): FlowClassifier {
  return {
    id: 'fc1', name: '', description: '', tenant_id: 't', project_id: 't',
    ethertype: 'IPv4', protocol: null,
    source_port_range_min: null, source_port_range_max: null,
    destination_port_range_min: null, destination_port_range_max: null,
    source_ip_prefix: null, destination_ip_prefix: null,
    logical_source_port: 'p-src', logical_destination_port: 'p-dst',
    l7_parameters: {},
    ...over,
  };
}

const portIndex = (id: string) => ({ 'p-src': 4, 'p-dst': 9 })[id] ?? -1;

describe('ruleFromClassifier', () => {
  it('defaults: any protocol, prefixes and ports, at the logical source port', () => {
    expect(ruleFromClassifier(classifier({}), portIndex)).toEqual({
      ipVer: 4, proto: -1, src: [0, 0, 0, 0], srcLen: 0, dst: [0, 0, 0, 0], dstLen: 0,
      sportMin: 0, sportMax: 65535, dportMin: 0, dportMax: 65535, inPort: 4,
    });
  });

  it('masks host bits, maps protocols per family, opens single bounds', () => {
    const r = ruleFromClassifier(
      classifier({
        protocol: 'tcp', source_ip_prefix: '10.1.2.3/8', destination_ip_prefix: '192.168.7.9/24',
        source_port_range_min: 100, destination_port_range_max: 200,
      }),
      portIndex,
    );
    expect(r.proto).toBe(6);
    expect(r.src).toEqual([0x0a000000, 0, 0, 0]);
    expect(r.dst).toEqual([0xc0a80700, 0, 0, 0]);
    expect([r.srcLen, r.dstLen]).toEqual([8, 24]);
    expect([r.sportMin, r.sportMax, r.dportMin, r.dportMax]).toEqual([100, 65535, 0, 200]);
    expect(ruleFromClassifier(classifier({ protocol: 'icmp' }), portIndex).proto).toBe(1);
    expect(ruleFromClassifier(classifier({ protocol: 'udp' }), portIndex).proto).toBe(17);
    const v6 = ruleFromClassifier(
      classifier({ ethertype: 'IPv6', protocol: 'icmp', source_ip_prefix: '2001:db8:ffff::1/33' }),
      portIndex,
    );
    expect(v6.proto).toBe(58);
    expect(v6.src).toEqual([0x20010db8, 0x80000000, 0, 0]);
  });

  it('reverse: at the logical destination port with prefixes and ranges swapped', () => {
    const f = classifier({
      protocol: 'udp', source_ip_prefix: '10.0.0.0/8', destination_ip_prefix: '20.0.0.0/16',
      source_port_range_min: 1, source_port_range_max: 2, destination_port_range_min: 3, destination_port_range_max: 4,
    });
    const fwd = ruleFromClassifier(f, portIndex);
    const rev = ruleFromClassifier(f, portIndex, { reverse: true });
    expect(rev.inPort).toBe(9);
    expect([rev.src, rev.srcLen, rev.dst, rev.dstLen]).toEqual([fwd.dst, fwd.dstLen, fwd.src, fwd.srcLen]);
    expect([rev.sportMin, rev.sportMax, rev.dportMin, rev.dportMax]).toEqual([3, 4, 1, 2]);
    // A reply packet of a forward flow matches the reverse rule, not the forward one.
    const t = compileClassifier([fwd, rev]);
    const b = new Batch();
    load(b, 0, { ipVer: 4, proto: 17, src: [0x14000001, 0, 0, 0], dst: [0x0a000001, 0, 0, 0], sport: 3, dport: 2, inPort: 9 });
    expect(classify(t, b, 0, 9, false)).toBe(1);
    expect(classify(t, b, 0, 4, false)).toBe(-1);
  });

  it('anyPort, null ports and errors', () => {
    expect(ruleFromClassifier(classifier({}), portIndex, { anyPort: true }).inPort).toBe(-1);
    expect(ruleFromClassifier(classifier({ logical_source_port: null }), portIndex).inPort).toBe(-1);
    expect(() => ruleFromClassifier(classifier({ logical_source_port: 'nope' }), portIndex)).toThrow(/unknown logical port/);
    expect(() => ruleFromClassifier(classifier({ source_ip_prefix: '::/0' }), portIndex)).toThrow(/not an IPv4 prefix/);
  });

  it('describeRule names what the rule matches', () => {
    const r = ruleFromClassifier(
      classifier({ protocol: 'tcp', source_ip_prefix: '10.1.2.3/8', destination_port_range_min: 80, destination_port_range_max: 80 }),
      portIndex,
    );
    expect(describeRule(r)).toBe('IPv4 tcp from 10.0.0.0/8 to any port 80 at port 4');
    expect(describeRule(r, (i) => `p${i}`)).toContain('at port p4');
    const v6 = ruleFromClassifier(
      classifier({ ethertype: 'IPv6', destination_ip_prefix: '2001:db8:0:0:1::/80' }),
      portIndex,
      { anyPort: true },
    );
    expect(describeRule(v6)).toBe('IPv6 any protocol from any to 2001:db8:0:0:1::/80 at any port');
  });
});
