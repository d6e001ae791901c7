/*
 * HealthMonitor: finds service function instances (port pairs in chains) down and up again, and
 * hands the drivers the new HealthView (health.ts) once per change.
 *
 * Every `intervalMs` each instance is checked:
 *  - the link state of its interfaces (ingress and egress; an SF whose interface went down, or
 *    whose end of a veth did, fails at the next check);
 *  - a probe crossing it (dataplane/probe.ts: UDP between its chain's endpoint addresses, sent by
 *    a dataplane worker into its ingress port, consumed when it comes back at its egress), one
 *    per check: a probe not back within `timeoutMs` is a failed check, one back a good check
 *    (its round trip is recorded); this catches an SF that stopped forwarding with its links up.
 *    (The timeout is several intervals: a busy worker reports a return up to 100 ms late.) A
 *    probe lost while the SF kept returning traffic (at least VOUCH_FRAMES frames on its egress
 *    since the previous check) is not held against it: a saturated SF path may drop a probe, a
 *    dead SF returns nothing. When every probed instance lost its probe in the same check the
 *    dataplane stalled (all SFs rarely die together, and link state still catches dead links):
 *    that check judges none of them by probes. Probed: instances of SF-unaware groups on a chain
 *    with an IP classifier (its source and destination prefixes' addresses); others (SF-aware
 *    hops, classifiers without addresses) are judged by link state alone. While the dataplane
 *    cannot send (a worker restarting) probes are not judged.
 * `downAfter` failed checks in a row turn an up instance down, `upAfter` good ones turn a down
 * instance up (defaults 100 ms, 2, 3, probe timeout 400 ms: a dead link is acted on within
 * ~200-300 ms, an SF that stops forwarding within ~500-600 ms; a flapping one returns only after
 * 300 ms of good checks). A change is logged once, counted, and applied
 * through `apply` (Driver.health of every driver); changes found while an apply runs are applied
 * right after it, as one.
 *
 * The instances are the plan in force's members, so the monitor follows every model change
 * without being told; an instance new to it starts up (its first checks decide).
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { HealthReport } from './api.js';
import type { DataplaneHealth } from '../dataplane/runtime.js';
import { healthView, type HealthPolicy } from './health.js';
import type { Plan } from './plan.js';
import { buildProbe, stampProbe, type ProbeSpec } from '../dataplane/probe.js';

export interface HealthOptions {
  intervalMs: number;
  /** A probe not back after this is lost. */
  timeoutMs: number;
  /** Failed checks in a row before an instance is down. */
  downAfter: number;
  /** Good checks in a row before a down instance is up again. */
  upAfter: number;
}

export const DEFAULT_HEALTH: Readonly<HealthOptions> = Object.freeze({ intervalMs: 100, timeoutMs: 400, downAfter: 2, upAfter: 3 });

export interface InstanceHealth {
  portPair: string;
  portPairId: string;
  group: string;
  up: boolean;
  /** Why it is down ('' when up). */
  reason: string;
  /** ms since the epoch of the last change (or of when it was first checked). */
  since: number;
  transitions: number;
  /** Round-trip time of the last probe back (ms), null when not probed. */
  rttMs: number | null;
}

interface Tracked extends InstanceHealth {
  misses: number;
  goods: number;
  /** Probes in flight, oldest first: sequence number and when sent (Date.now). */
  pending: { seq: number; sentAt: number }[];
  /** Frames received on its egress interface at the previous check. */
  egressRx: number;
}

/** The dataplane side of probing (runtime.ts Dataplane.probe / probeReturn / rxFrames). */
export interface Prober {
  /** Send the frames (copied before it returns: the monitor stamps them again next check). */
  probe(frames: { iface: string; frame: Uint8Array }[]): boolean;
  probeReturn(instance: number): { seq: number; at: number };
  /** Frames received on an interface so far. */
  rxFrames(iface: string): number;
}

/** Frames back from an SF between two checks that vouch for it when a probe is lost. */
const VOUCH_FRAMES = 10;

export interface HealthDeps {
  /** The plan in force (DriverManager.plan). */
  plan: () => Plan;
  /** Whether interface `name` is up (this process's namespace). */
  linkUp: (name: string) => boolean;
  /** Apply a new view (every driver's health()). */
  apply: (view: ReturnType<typeof healthView>) => Promise<void>;
  log: (message: string) => void;
  policies?: ReadonlyMap<string, HealthPolicy>;
  registry?: Registry;
  /** Probes through the dataplane (none: link state only). */
  prober?: Prober;
}

export class HealthMonitor {
  private readonly tracked = new Map<string, Tracked>();
  private timer: NodeJS.Timeout | null = null;
  private applying: Promise<void> | null = null;
  private dirty = false;
  private readonly policies: ReadonlyMap<string, HealthPolicy>;
  private seq = 0;
  /** The plan's probe targets and each member's probe, built once per plan and stamped per check. */
  private probing: { plan: Plan; targets: ReturnType<typeof probeTargets>; frames: Map<number, Uint8Array> } | null = null;

  constructor(
    private readonly opts: HealthOptions,
    private readonly deps: HealthDeps,
  ) {
    this.policies = deps.policies ?? new Map();
    const registers = deps.registry ? [deps.registry] : [];
    const self = this;
    new Gauge({
      name: 'sfc_instance_up',
      help: 'Health of each SF instance (port pair): 1 up, 0 down',
      labelNames: ['group', 'instance'],
      registers,
      collect() {
        this.reset();
        for (const h of self.tracked.values()) this.set({ group: h.group, instance: h.portPair }, h.up ? 1 : 0);
      },
    });
    new Gauge({
      name: 'sfc_instance_probe_rtt_seconds',
      help: 'Round-trip time of the last health probe back through each SF instance',
      labelNames: ['group', 'instance'],
      registers,
      collect() {
        this.reset();
        for (const h of self.tracked.values()) if (h.rttMs !== null) this.set({ group: h.group, instance: h.portPair }, h.rttMs / 1000);
      },
    });
    new Counter({
      name: 'sfc_instance_health_transitions_total',
      help: 'Changes of health state of each SF instance (up to down and back)',
      labelNames: ['group', 'instance'],
      registers,
      collect() {
        this.reset();
        for (const h of self.tracked.values()) this.inc({ group: h.group, instance: h.portPair }, h.transitions);
      },
    });
  }

  start(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => this.check(), this.opts.intervalMs);
    this.timer.unref();
  }

  /** Stop checking; resolves when an apply in flight is done. */
  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.applying;
  }

  /** Every instance's health, in plan order. */
  states(): InstanceHealth[] {
    return [...this.tracked.values()].map(({ misses: _m, goods: _g, pending: _p, ...h }) => h);
  }

  /** One round of checks (the timer's; tests may call it). Returns whether any instance changed. */
  check(): boolean {
    const plan = this.deps.plan();
    const seen = new Set<string>();
    if (this.probing?.plan !== plan) this.probing = { plan, targets: probeTargets(plan), frames: new Map() };
    const { targets, frames } = this.probing;
    const probes: { iface: string; frame: Uint8Array }[] = [];
    const sent: Tracked[] = [];
    const now = Date.now();
    let changed = false;
    const verdicts: { h: Tracked; why: string }[] = [];
    for (const [k, m] of plan.members.entries()) {
      if (m.group < 0) continue;
      seen.add(m.id);
      let h = this.tracked.get(m.id);
      if (h === undefined) {
        h = { portPair: m.name, portPairId: m.id, group: plan.groups[m.group].name, up: true, reason: '', since: now, transitions: 0, rttMs: null, misses: 0, goods: 0, pending: [], egressRx: 0 };
        this.tracked.set(m.id, h);
      }
      h.portPair = m.name;
      h.group = plan.groups[m.group].name;
      const bad = [plan.ports[m.ingress].iface, plan.ports[m.egress].iface].filter((name) => !this.deps.linkUp(name));
      const why = bad.length > 0 ? `link ${[...new Set(bad)].join(', ')} down` : this.probeVerdict(h, k, plan.ports[m.egress].iface);
      const target = targets.get(k);
      const prober = this.deps.prober;
      if (prober && target && bad.length === 0) {
        const seq = ++this.seq;
        let frame = frames.get(k);
        if (frame === undefined) frames.set(k, (frame = buildProbe({ ...target.spec, instance: k, seq })));
        else stampProbe(frame, seq); // the prober copies it before this returns
        probes.push({ iface: target.iface, frame });
        h.pending.push({ seq, sentAt: now });
        sent.push(h);
      } else if (bad.length > 0) h.pending = [];
      verdicts.push({ h, why });
    }
    // Every probed instance's probe lost at once: the dataplane stalled, not every SF; judge none by probes.
    const probed = verdicts.filter((v) => v.why === 'probe lost' || (v.why === '' && v.h.rttMs !== null)).length;
    const lost = verdicts.filter((v) => v.why === 'probe lost').length;
    const stalled = lost >= 2 && lost === probed;
    for (const { h, why } of verdicts) {
      if (why === 'wait' || (stalled && why === 'probe lost')) {
        // a probe still on its way (or the dataplane stalled): no verdict this time
      } else if (why !== '') {
        h.goods = 0;
        if (h.up && ++h.misses >= this.opts.downAfter) changed = this.flip(h, why) || changed;
      } else {
        h.misses = 0;
        if (!h.up && ++h.goods >= this.opts.upAfter) changed = this.flip(h, '') || changed;
      }
    }
    // No worker to send them (one restarting): nothing is pending, nothing judged next time.
    if (probes.length > 0 && !this.deps.prober!.probe(probes)) for (const h of sent) h.pending.pop();
    for (const id of [...this.tracked.keys()]) {
      if (seen.has(id)) continue;
      // Gone from the model: its down state no longer matters to any renderer.
      if (!this.tracked.get(id)!.up) changed = true;
      this.tracked.delete(id);
    }
    if (changed) this.push();
    return changed;
  }

  /** Instance k's probes: '' (one came back: good), 'probe lost' (one timed out), 'wait' (in flight, none decided). */
  private probeVerdict(h: Tracked, k: number, egress: string): string {
    const prober = this.deps.prober;
    if (!prober) return '';
    const rx = prober.rxFrames(egress);
    const vouched = rx - h.egressRx >= VOUCH_FRAMES;
    h.egressRx = rx;
    if (h.pending.length === 0) return '';
    const back = prober.probeReturn(k);
    const done = h.pending.filter((p) => p.seq <= back.seq);
    h.pending = h.pending.filter((p) => p.seq > back.seq);
    if (done.length > 0) {
      h.rttMs = Math.max(0, back.at - done[done.length - 1].sentAt);
      return '';
    }
    const now = Date.now();
    const lost = h.pending.filter((p) => now - p.sentAt >= this.opts.timeoutMs);
    if (lost.length === 0) return 'wait';
    h.pending = h.pending.filter((p) => now - p.sentAt < this.opts.timeoutMs);
    return vouched ? 'wait' : 'probe lost';
  }

  private flip(h: Tracked, reason: string): boolean {
    h.up = reason === '';
    h.reason = reason;
    h.since = Date.now();
    h.transitions++;
    h.misses = h.goods = 0;
    this.deps.log(`instance ${h.portPair} (group ${h.group}) ${h.up ? 'up' : `down: ${reason}`}`);
    return true;
  }

  /** Apply the current view; one apply at a time, the latest state wins. */
  private push(): void {
    if (this.applying !== null) {
      this.dirty = true;
      return;
    }
    const down = new Set([...this.tracked.values()].filter((h) => !h.up).map((h) => h.portPairId));
    this.applying = this.deps
      .apply(healthView(down, this.policies))
      .catch((e: Error) => this.deps.log(`applying health failed: ${e.message}`))
      .finally(() => {
        this.applying = null;
        if (this.dirty) {
          this.dirty = false;
          this.push();
        }
      });
  }
}

/**
 * What GET /v2.0/sfc/health answers and /healthz summarises: the dataplane supervisor's view
 * (degraded while a worker is being restarted) and every instance's health. A down SF instance
 * does not make the server unhealthy: traffic is steered around it.
 */
export function healthReport(dataplane: { health(): DataplaneHealth } | undefined, monitor: HealthMonitor | undefined): HealthReport {
  const dp = dataplane?.health();
  const degraded: Record<string, unknown> = {};
  if (dp && !dp.ok) degraded.dataplane = { workers_restarting: dp.degraded };
  return { ok: dp?.ok ?? true, degraded, instances: monitor?.states() ?? [], dataplane: dp ?? null };
}

/**
 * Per member index, how to probe it: its ingress interface, the SF's ingress MAC and a chain's
 * endpoint addresses (the first forward rule through its group with both prefixes), and for an
 * SF-aware group the encapsulation its hop receives (the hop's push action).
 */
export function probeTargets(plan: Plan): Map<number, { iface: string; spec: Omit<ProbeSpec, 'instance' | 'seq'> }> {
  const out = new Map<number, { iface: string; spec: Omit<ProbeSpec, 'instance' | 'seq'> }>();
  const endpoints = new Map<number, { src: string; dst: string; mac: string; encap?: ProbeSpec['encap'] }>(); // group -> addresses
  for (const r of plan.rules) {
    const src = r.match.source_ip_prefix?.split('/')[0];
    const dst = r.match.destination_ip_prefix?.split('/')[0];
    if (r.reverse || r.at < 0 || !src || !dst) continue;
    for (const hop of plan.paths[r.path].hops) {
      if (hop.kind !== 'sf' || endpoints.has(hop.group)) continue;
      // An aware hop receives the chain's encapsulation: the probe carries what its push carries.
      const push = hop.actions.find((a) => a.op === 'push');
      const encap = push?.op === 'push' ? { kind: push.encap, spi: push.spi, si: push.si } : undefined;
      if (hop.correlation === null || encap !== undefined) endpoints.set(hop.group, { src, dst, mac: plan.ports[r.at].mac, encap });
    }
  }
  plan.members.forEach((m, k) => {
    const e = m.group >= 0 ? endpoints.get(m.group) : undefined;
    if (e === undefined) return;
    const ingress = plan.ports[m.ingress];
    out.set(k, { iface: ingress.iface, spec: { ethDst: ingress.mac, ethSrc: e.mac, src: e.src, dst: e.dst, ...(e.encap ? { encap: e.encap } : {}) } });
  });
  return out;
}
