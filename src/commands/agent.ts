/*
 * `sfc agent`: one host's dataplane, driven by the shared model in etcd (issue 14). The API servers
 * (`sfc serve --store etcd://`) write the model; every host runs one agent that watches it and
 * renders only its slice (control/slice.ts): the chains with a port on this host
 * (`binding:host_id`), nodes on other hosts reached through VXLAN tunnels (dataplane/vxlan.ts) from
 * this host's underlay interface.
 *
 * The agent publishes, under a lease (control/etcd/agents.ts), its underlay address and MAC, the
 * model revision it has live, and which of its own SF instances its health checks find down.
 * Every agent's health view (control/health.ts, the renderer's second input) is its own checks,
 * the other agents' published down sets, and every instance on a host whose record is gone (a dead
 * agent's lease expired): those leave selection with the same policies as on one host.
 *
 * Headless: the dataplane keeps its last tables whatever etcd does; a failed publication is logged
 * once per outage, and the watches (control/etcd) reconcile when etcd returns. The last model and
 * agent set are cached in --state, so an agent restarted while etcd is unreachable forwards from
 * them, and one restarted with etcd reads the model again: a restart loses no configuration.
 *
 * With --metrics it serves sfc serve's dataplane metrics (control/metrics.ts) on /metrics, each
 * series labelled with the agent's host; sfc_state_revision is the model revision live here.
 *
 * Only the userspace driver renders slices; `--driver ovs` is refused (it has no tunnels between
 * hosts).
 */
import { createServer, type Server } from 'node:http';
import { networkInterfaces } from 'node:os';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { connectEtcd, errorText, parseEtcdUrl } from '../control/etcd/client.js';
import { publishAgent, watchAgents, type AgentInfo, type AgentPublication, type AgentSet } from '../control/etcd/agents.js';
import { openModel, type ModelView } from '../control/etcd/model.js';
import { healthView, parseHealthPolicies, type HealthPolicy } from '../control/health.js';
import { DEFAULT_HEALTH, HealthMonitor } from '../control/health-monitor.js';
import { Metrics } from '../control/metrics.js';
import { emptyState, type State } from '../control/model.js';
import { defaultStatePath } from '../control/persist.js';
import { buildPlan, type Plan } from '../control/plan.js';
import { hostsDown, hostState, localMembers, slicePlan, type UnderlayAddress } from '../control/slice.js';
import { UserspaceDriver } from '../control/drivers/userspace/driver.js';
import { BACKEND_NAMES, parseBackend } from '../dataplane/io/registry.js';
import { LINK_UP, nativeAvailable, nativeLinkUp, sysfsLinkState } from '../dataplane/io/native.js';
import { UsageError, parseHostPort, parseOptions, positiveInt, untilSignal, type Command } from '../util/args.js';

/** Packet I/O that leaves the host's stack its copy of every frame (the underlay is shared with etcd). */
const AGENT_BACKEND = 'afpacket';
/** Lease TTL of the agent record (s): a dead agent's instances leave selection within about this. */
const DEFAULT_LEASE_TTL = 5;
const RETRY_MS = 2000;

/** What an agent publishes (control/etcd/agents.ts AgentInfo). */
interface AgentRecord extends AgentInfo {
  mac: string;
  iface: string;
  /** Model revision live in this agent's dataplane. */
  revision: number;
  /** Port pair ids of this host's instances its health checks find down. */
  down: string[];
}

interface Underlay {
  iface: string;
  ip: string;
  mac: string;
}

/** The underlay interface from --underlay (an interface name or one of its IPv4 addresses), or the only one with an IPv4 address. */
export function resolveUnderlay(spec: string | undefined): Underlay {
  const found: Underlay[] = [];
  for (const [iface, addrs] of Object.entries(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) found.push({ iface, ip: a.address, mac: a.mac });
  }
  const match = spec === undefined ? found : found.filter((u) => u.iface === spec || u.ip === spec);
  if (match.length === 1 || (spec !== undefined && match.length > 1 && match.every((u) => u.iface === match[0].iface))) return match[0];
  const have = found.map((u) => `${u.iface} ${u.ip}`).join(', ') || 'none';
  if (spec === undefined) throw new UsageError(`--underlay: name the interface or IPv4 address tunnels use (interfaces with one: ${have})`);
  throw new UsageError(`--underlay ${spec}: no interface of that name or with that IPv4 address (interfaces with one: ${have})`);
}

/** What of the agents' records a slice depends on (who is there, their underlay ends, their down sets), as a string to compare. */
function sliceInputs(agents: ReadonlyMap<string, AgentInfo>): string {
  const rows = [...agents].map(([h, a]) => [h, a.underlay, a.mac ?? '', Array.isArray(a.down) ? a.down : []]);
  return JSON.stringify(rows.sort((x, y) => (x[0] < y[0] ? -1 : 1)));
}

/** GET /metrics (Prometheus text) on host:port; anything else is a 404. */
function serveMetrics(metrics: Metrics, at: { host: string; port: number }): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/metrics') return void res.writeHead(404).end();
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      (e: Error) => res.writeHead(500).end(e.message),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new UsageError(`--metrics ${at.host}:${at.port}: ${e.message}`)));
    server.listen(at.port, at.host.replace(/^\[|\]$/g, ''), () => resolve(server));
  });
}

/** The last model and agent set, kept on disk for a restart without etcd. */
interface Cached {
  revision: number;
  state: State;
  agents: [string, AgentInfo][];
}

async function readCache(path: string): Promise<Cached | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Cached;
  } catch {
    return null;
  }
}

async function writeCache(path: string, c: Cached): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(`${path}.tmp`, JSON.stringify(c));
  await rename(`${path}.tmp`, path);
}

export const command: Command = {
  summary: "run one host's dataplane from the shared model in etcd (its slice of every chain, VXLAN to the others)",
  usage: `--host NAME --store etcd://HOST:PORT[,...] [--underlay IFACE|IP] [--driver userspace]
           [--backend ${BACKEND_NAMES.join('|')}] [--workers N] [--state FILE] [--lease-ttl S] [--metrics HOST:PORT]
  --host NAME         this host's name: the binding:host_id of the ports it serves
  --store etcd://...  the etcd cluster holding the model (sfc serve --store writes it)
  --underlay X        the interface (or one of its IPv4 addresses) tunnels to other hosts leave by
                      (default: the only interface with an IPv4 address); its address and MAC are
                      published for the other agents
  --driver userspace  the only driver that renders per-host slices (ovs has no tunnels between hosts)
  --backend B         packet I/O: ${AGENT_BACKEND} (default), cap or tap (the multi-host tests run
                      ${AGENT_BACKEND} only); not afxdp, whose XDP program would take the underlay's
                      frames (etcd, ARP) from the host's stack
  --workers N         dataplane worker threads (default 1)
  --state FILE        the last model seen, for a restart while etcd is unreachable
                      (default: agent-NAME.json beside sfc serve's default state)
  --lease-ttl S       seconds the agent record outlives the agent (default ${DEFAULT_LEASE_TTL})
  --metrics HOST:PORT serve Prometheus /metrics there: sfc serve's dataplane metrics, each with a host label
                      (sfc_state_revision: the model revision live here)
  --health-policy G=P,... --health-interval MS --health-timeout MS --health-down N --health-up N
                      SF health checks of this host's instances, as for sfc serve`,

  async run(argv) {
    const { values } = parseOptions(argv, {
      host: { type: 'string' },
      store: { type: 'string' },
      underlay: { type: 'string' },
      driver: { type: 'string', default: 'userspace' },
      backend: { type: 'string', default: AGENT_BACKEND },
      workers: { type: 'string', default: '1' },
      state: { type: 'string' },
      'lease-ttl': { type: 'string', default: String(DEFAULT_LEASE_TTL) },
      metrics: { type: 'string' },
      'health-policy': { type: 'string', default: '' },
      'health-interval': { type: 'string', default: String(DEFAULT_HEALTH.intervalMs) },
      'health-timeout': { type: 'string', default: String(DEFAULT_HEALTH.timeoutMs) },
      'health-down': { type: 'string', default: String(DEFAULT_HEALTH.downAfter) },
      'health-up': { type: 'string', default: String(DEFAULT_HEALTH.upAfter) },
    });
    const host = values.host;
    if (host === undefined) throw new UsageError('--host NAME is required');
    if (values.store === undefined) throw new UsageError('--store etcd://HOST:PORT[,...] is required');
    if (values.driver !== 'userspace') {
      throw new UsageError(`--driver ${values.driver}: an agent renders its host's slice with the userspace driver only (the ${values.driver} driver has no tunnels between hosts)`);
    }
    let endpoints: string[];
    try {
      endpoints = parseEtcdUrl(values.store);
    } catch (e) {
      throw new UsageError(`--store: ${(e as Error).message}`);
    }
    const backend = parseBackend(values.backend).name;
    if (backend === 'afxdp') {
      throw new UsageError(`--backend afxdp: its XDP program takes every frame of an interface from the host's stack, and the underlay carries the host's own traffic too (etcd, ARP): use ${AGENT_BACKEND}`);
    }
    const workers = positiveInt(values.workers, '--workers');
    const ttl = positiveInt(values['lease-ttl'], '--lease-ttl');
    const healthInterval = values['health-interval'] === '0' ? 0 : positiveInt(values['health-interval'], '--health-interval');
    let policies: Map<string, HealthPolicy>;
    try {
      policies = parseHealthPolicies(values['health-policy']);
    } catch (e) {
      throw new UsageError(`--health-policy: ${(e as Error).message}`);
    }
    const metricsAt = values.metrics === undefined ? undefined : parseHostPort(values.metrics, '--metrics');
    const underlay = resolveUnderlay(values.underlay);
    const cachePath = values.state ?? join(dirname(defaultStatePath()), `agent-${host}.json`);
    const log = (message: string) => console.error(`sfc agent ${host}: ${message}`);

    const { Dataplane } = await import('../dataplane/runtime.js');
    const dataplane = new Dataplane({ backend, workers, log });
    const driver = new UserspaceDriver((t) => dataplane.publish(t));

    // What the agent renders from: the model, the agents' records, its own health checks.
    let state: State | null = null;
    let revision = 0;
    let agents: ReadonlyMap<string, AgentInfo> = new Map();
    let agentsKey = '';
    let localDown: ReadonlySet<string> = new Set();
    let plan: Plan | undefined;
    let live = -1;
    let downKey = '';
    let failedAt = -1;
    let publication: AgentPublication | null = null;
    let unreachable = false;

    const publish = async () => {
      const record: AgentRecord = { underlay: underlay.ip, mac: underlay.mac, iface: underlay.iface, revision: live, down: [...localDown].sort() };
      try {
        await publication?.update(record);
        if (unreachable) log('etcd answers again');
        unreachable = false;
      } catch (e) {
        if (!unreachable) log(`etcd unreachable (${errorText(e)}): forwarding with model revision ${live}`);
        unreachable = true;
      }
    };

    /** Render this host's slice of the current inputs and make it live (one at a time; a change during one queues one more). */
    const render = async (): Promise<void> => {
      if (state === null) return;
      const at = revision;
      const next = buildPlan(hostState(state, host), plan);
      let sliced: Plan;
      try {
        sliced = slicePlan(next, { host, ...underlay }, new Map([...agents].map(([h, a]): [string, UnderlayAddress] => [h, { ip: a.underlay, mac: a.mac ?? '' }])));
      } catch (e) {
        if (failedAt !== at) log(`model revision ${at}: ${(e as Error).message}; forwarding with revision ${live}`);
        failedAt = at;
        return;
      }
      const down = hostsDown(sliced, host, localDown, agents);
      const key = [...down].sort().join(',');
      if (key !== downKey) {
        downKey = key;
        await driver.health(healthView(down, policies));
      }
      const problems = driver.precommit(sliced);
      if (problems.length > 0) {
        if (failedAt !== at) log(`model revision ${at} cannot be rendered here: ${problems.map((p) => p.message).join('; ')}; forwarding with revision ${live}`);
        failedAt = at;
        return;
      }
      await driver.postcommit(sliced);
      plan = sliced;
      if (live !== at) {
        live = at;
        await publish();
        await writeCache(cachePath, { revision: at, state, agents: [...agents] }).catch((e: Error) => log(`cannot write ${cachePath}: ${e.message}`));
      }
    };
    let running: Promise<void> | null = null;
    let again = false;
    let rerender: NodeJS.Timeout | undefined;
    let stopped = false;
    const reconcile = (): void => {
      if (running) {
        again = true;
        return;
      }
      running = render()
        .catch((e: Error) => {
          // (e.g. a starved worker missed its publication deadline): nothing else would render
          // this revision again, so try again shortly.
          log(`render failed: ${e.message}; trying again in ${RETRY_MS} ms`);
          clearTimeout(rerender);
          rerender = setTimeout(() => !stopped && reconcile(), RETRY_MS);
        })
        .finally(() => {
          running = null;
          if (again) {
            again = false;
            reconcile();
          }
        });
    };

    const metrics = new Metrics({
      revision: () => live,
      generation: () => driver.tables?.generation ?? 0,
      dataplane: () => (driver.tables ? { stats: dataplane.stats(), instances: driver.tables.instanceNames } : undefined),
    });
    metrics.registry.setDefaultLabels({ host });
    const health =
      healthInterval > 0
        ? new HealthMonitor(
            {
              intervalMs: healthInterval,
              timeoutMs: positiveInt(values['health-timeout'], '--health-timeout'),
              downAfter: positiveInt(values['health-down'], '--health-down'),
              upAfter: positiveInt(values['health-up'], '--health-up'),
            },
            {
              plan: () => localMembers(plan ?? buildPlan(emptyState()), host),
              linkUp: (name) => (nativeAvailable() ? nativeLinkUp(name) : sysfsLinkState(name) === LINK_UP),
              apply: async (view) => {
                localDown = view.down;
                await publish();
                reconcile();
              },
              log,
              policies,
              registry: metrics.registry,
              prober: dataplane,
            },
          )
        : null;

    // Connect, or start from the cache and keep trying.
    let client: Etcd3 | null = null;
    let model: ModelView | null = null;
    let agentSet: AgentSet | null = null;
    /** Model, agent records and our own record, all or nothing (a half-made connection is closed again). */
    const connect = async (): Promise<void> => {
      const m = await openModel(endpoints, { log });
      let c: Etcd3 | null = null;
      let set: AgentSet | null = null;
      try {
        c = await connectEtcd(endpoints);
        set = await watchAgents(c, (all) => {
          agents = new Map(all);
          // Other agents' live revisions change on every write: re-render only for what a slice uses
          // (else N agents render N times per write).
          const key = sliceInputs(agents);
          if (key === agentsKey) return;
          agentsKey = key;
          reconcile();
        });
        publication = await publishAgent(c, host, { underlay: underlay.ip, mac: underlay.mac, iface: underlay.iface, revision: live, down: [] }, ttl, log);
      } catch (e) {
        await set?.close().catch(() => undefined);
        c?.close();
        await m.close().catch(() => undefined);
        throw e;
      }
      [model, client, agentSet] = [m, c, set];
      agents = new Map(set.agents());
      agentsKey = sliceInputs(agents);
      m.onChange((s, r) => {
        state = s;
        revision = r;
        reconcile();
      });
      state = m.state();
      revision = m.revision();
      reconcile();
    };
    let retry: NodeJS.Timeout | undefined;
    let exporter: Server | undefined;
    const keepTrying = (): void => {
      retry = setTimeout(() => {
        if (stopped) return;
        connect().then(
          () => log(`connected to etcd at ${endpoints.join(', ')}`),
          () => keepTrying(),
        );
      }, RETRY_MS);
    };
    try {
      try {
        await connect();
      } catch (e) {
        // etcd unreachable (or too slow) at start: the cached model if there is one, and keep trying.
        const cached = await readCache(cachePath);
        log(`${(e as Error).message}; ${cached ? `forwarding with the cached model of revision ${cached.revision} (${cachePath})` : 'no cached model yet'} until etcd answers`);
        if (cached) {
          state = cached.state;
          revision = cached.revision;
          agents = new Map(cached.agents);
          reconcile();
        }
        keepTrying();
      }
      health?.start();
      if (metricsAt) {
        exporter = await serveMetrics(metrics, metricsAt);
        log(`metrics on http://${metricsAt.host}:${(exporter.address() as { port: number }).port}/metrics`);
      }
      log(`host ${host}, underlay ${underlay.iface} ${underlay.ip} ${underlay.mac}, etcd ${endpoints.join(', ')}`);
      log(`${await untilSignal()}: shutting down`);
    } finally {
      stopped = true;
      clearTimeout(retry);
      clearTimeout(rerender);
      exporter?.close();
      await health?.stop();
      await running;
      await (publication as AgentPublication | null)?.close().catch(() => undefined);
      await (agentSet as AgentSet | null)?.close().catch(() => undefined);
      await (model as ModelView | null)?.close().catch(() => undefined);
      (client as Etcd3 | null)?.close();
      await dataplane.close();
    }
    return 0;
  },
};
