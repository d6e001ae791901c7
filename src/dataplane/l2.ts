/*
 * MacTable: the learning switch's MAC -> interface table (what OVS's NORMAL action and a Linux
 * bridge keep), for traffic that enters no chain: ARP, unmatched flows, chain ends delivered by
 * learning.
 *
 * Open addressing in typed arrays, sized once: a key (VLAN, MAC) hashes to a home slot and lives
 * within the PROBE slots after it. Learning refreshes an existing entry, else takes an empty or
 * aged-out slot of the window, else evicts the window's least recently seen entry, so the table
 * never fills up and never allocates; learning the same source again within one batch (same clock
 * reading) is skipped, since a burst from one host repeats its MAC. Entries older than `ageMs` (by the caller's coarse clock
 * `now`, set once per batch) are ignored by lookups, like a bridge's ageing time. The data path
 * passes MACs as two integers (bytes 0-1 and bytes 2-5) read straight from the frame.
 */

const PROBE = 8;
const TAG = 1 << 28;

export const DEFAULT_MAC_CAPACITY = 1 << 12;
export const DEFAULT_MAC_AGE_MS = 300_000;

export class MacTable {
  readonly capacity: number;
  readonly ageMs: number;
  /** Coarse clock in ms, set by the engine once per batch. */
  now = 0;
  private readonly mask: number;
  private readonly keyHi: Int32Array;
  private readonly keyLo: Int32Array;
  private readonly iface: Int32Array;
  private readonly seen: Float64Array;
  /** The last (key, interface) learned at `now`: repeats within one batch cost four compares. */
  private lastHi = 0;
  private lastLo = 0;
  private lastIface = -1;
  private lastNow = -1;

  constructor(capacityPow2 = DEFAULT_MAC_CAPACITY, ageMs = DEFAULT_MAC_AGE_MS) {
    if (!Number.isInteger(capacityPow2) || capacityPow2 < PROBE || (capacityPow2 & (capacityPow2 - 1)) !== 0) {
      throw new RangeError(`MAC table capacity must be a power of two >= ${PROBE}, got ${capacityPow2}`);
    }
    this.capacity = capacityPow2;
    this.ageMs = ageMs;
    this.mask = capacityPow2 - 1;
    this.keyHi = new Int32Array(capacityPow2);
    this.keyLo = new Int32Array(capacityPow2);
    this.iface = new Int32Array(capacityPow2);
    this.seen = new Float64Array(capacityPow2);
  }

  private home(hi: number, lo: number): number {
    let h = Math.imul(hi ^ 0x2c1b3c6d, 0x297a2d39) ^ lo;
    h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
    h ^= h >>> 13;
    return h & this.mask;
  }

  /** Remember that (vlan, MAC hi:lo) was seen on interface `iface`. */
  learn(vlan: number, macHi: number, macLo: number, iface: number): void {
    const hi = TAG | (vlan << 16) | macHi;
    const lo = macLo | 0;
    // Small enough for V8 to inline into the data path; the table work stays out of line.
    if (hi !== this.lastHi || lo !== this.lastLo || iface !== this.lastIface || this.now !== this.lastNow) this.store(hi, lo, iface);
  }

  private store(hi: number, lo: number, iface: number): void {
    this.lastHi = hi;
    this.lastLo = lo;
    this.lastIface = iface;
    this.lastNow = this.now;
    let s = this.home(hi, lo);
    let victim = -1;
    let oldest = Infinity;
    for (let p = 0; p < PROBE; p++, s = (s + 1) & this.mask) {
      if (this.keyHi[s] === hi && this.keyLo[s] === lo) {
        this.iface[s] = iface;
        this.seen[s] = this.now;
        return;
      }
      const age = this.keyHi[s] === 0 ? -Infinity : this.seen[s];
      if (age < oldest) {
        oldest = age;
        victim = s;
      }
    }
    this.keyHi[victim] = hi;
    this.keyLo[victim] = lo;
    this.iface[victim] = iface;
    this.seen[victim] = this.now;
  }

  /** Interface where (vlan, MAC) was last seen within the ageing time, or -1. */
  lookup(vlan: number, macHi: number, macLo: number): number {
    const hi = TAG | (vlan << 16) | macHi;
    const lo = macLo | 0;
    let s = this.home(hi, lo);
    for (let p = 0; p < PROBE; p++, s = (s + 1) & this.mask) {
      if (this.keyHi[s] === hi && this.keyLo[s] === lo) {
        return this.now - this.seen[s] <= this.ageMs ? this.iface[s] : -1;
      }
    }
    return -1;
  }

  /** Forget everything learned (interface indices changed meaning). */
  clear(): void {
    this.keyHi.fill(0);
    this.keyLo.fill(0);
    this.lastNow = -1;
  }

  /** Number of entries not aged out (O(capacity): for stats and tests). */
  size(): number {
    let n = 0;
    for (let s = 0; s < this.capacity; s++) if (this.keyHi[s] !== 0 && this.now - this.seen[s] <= this.ageMs) n++;
    return n;
  }
}
