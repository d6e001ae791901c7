/*
 * `sfc serve`: the control plane process. Opens (and locks) the durable state file, builds the
 * driver (userspace dataplane, ovs bridge or noop), restores the saved state through Store.replace so the
 * dataplane is rebuilt, seeds an empty state from --config, then serves the REST API until
 * SIGINT/SIGTERM, when it stops accepting, lets in-flight requests finish and closes everything.
 * With --store etcd://... the model lives in etcd instead (control/etcd): several servers share it,
 * each write commits conditionally there, and the others' writes reach this one through a watch
 * (adopted by the Store and applied to the driver like local ones).
 *
 * The dataplane runtime is imported only for --driver userspace, so the API runs with --driver
 * noop on machines where the dataplane cannot start (the backend registry, which checks --backend,
 * loads nothing native). The ovs driver (control/drivers/ovs) is imported only for --driver ovs.
 */
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { Counter } from 'prom-client';
import { DEFAULT_SERVER_LIMITS, startApiServer } from '../control/api.js';
import { DriverManager, NoopDriver } from '../control/driver.js';
import { parseHealthPolicies } from '../control/health.js';
import { DEFAULT_HEALTH, HealthMonitor, healthReport } from '../control/health-monitor.js';
import { isLoopbackHost } from '../control/http.js';
import { Metrics } from '../control/metrics.js';
import { COLLECTIONS, type State } from '../control/model.js';
import { StateFile, defaultStatePath } from '../control/persist.js';
import { DEFAULT_LIMIT, Store, parseLimits, type StoreOptions } from '../control/store.js';
import { EtcdUrlError, connectEtcd, parseEtcdUrl } from '../control/etcd/client.js';
import { EtcdModel, followModel } from '../control/etcd/model.js';
import { oneHostGuard } from '../control/slice.js';
import { isHostName } from '../control/validate/ports.js';
import { resolveToken } from '../control/token.js';
import type { UserspaceDriver } from '../control/drivers/userspace/driver.js';
import type { OvsDriver } from '../control/drivers/ovs/driver.js';
import { BACKEND_NAMES, DEFAULT_BACKEND, backendChoices, parseBackend, parseBusyPoll, type BackendName } from '../dataplane/io/registry.js';
import type { Dataplane } from '../dataplane/runtime.js';
import { LINK_UP, nativeAvailable, nativeLinkUp, sysfsLinkState } from '../dataplane/io/native.js';
import { UsageError, parseHostPort, parseOptions, positiveInt, untilSignal, type Command } from '../util/args.js';

const DEFAULT_OVS_BRIDGE = 'br-sfc';

const log = (message: string) => console.error(`sfc serve: ${message}`);

/** The userspace driver publishing to a worker-thread dataplane (modules loaded only here). */
async function startUserspace(
  backend: BackendName,
  workers: number,
  busyPollUs: number,
  framesInPlace: boolean,
): Promise<{ driver: UserspaceDriver; dataplane: Dataplane }> {
  const [runtime, userspace] = await Promise.all([import('../dataplane/runtime.js'), import('../control/drivers/userspace/driver.js')]);
  const dataplane = new runtime.Dataplane({ backend, workers, log, busyPollUs, framesInPlace });
  return { driver: new userspace.UserspaceDriver((t) => dataplane.publish(t)), dataplane };
}

const objectCount = (s: State) => COLLECTIONS.reduce((n, c) => n + s[c].length, 0);

/** Seed an empty model from --config (a model with content ignores it). */
async function seed(store: Store, where: string, config: string | undefined): Promise<void> {
  if (config === undefined) return;
  if (objectCount(store.state) > 0) return log(`--config ${config} ignored: ${where} already holds ${objectCount(store.state)} objects`);
  const { loadConfigFile } = await import('../control/config.js');
  await store.replace(await loadConfigFile(config)).catch((e: Error) => {
    throw new Error(`cannot apply ${config}: ${e.message}`);
  });
}

/** Where the model is kept: the local journal, or the shared model in etcd. */
interface ModelHome {
  /** The Store's commit step. */
  commit: Pick<StoreOptions, 'persist' | 'committer'>;
  name: string;
  /** Revision shown in /metrics. */
  revision(store: Store): number;
  /** Bring the saved model into `store` (and the drivers), then keep it current with other servers' writes (etcd). */
  load(store: Store): Promise<void>;
  close(): Promise<void>;
}

async function openLocal(statePath: string): Promise<ModelHome> {
  const { file, state } = await StateFile.open(statePath);
  return {
    commit: { persist: (next) => file.write(next) },
    name: `state ${statePath}`,
    revision: (store) => store.revision,
    load: (store) => store.replace(state),
    close: () => file.close(),
  };
}

async function openEtcd(spec: string): Promise<ModelHome> {
  let endpoints: string[];
  try {
    endpoints = parseEtcdUrl(spec);
  } catch (e) {
    if (e instanceof EtcdUrlError) throw new UsageError(`--store: ${e.message}`);
    throw e;
  }
  const client = await connectEtcd(endpoints);
  const model = await EtcdModel.open(client, endpoints, { log }).catch((e: unknown) => {
    client.close();
    throw e;
  });
  let unfollow = () => undefined as unknown;
  return {
    commit: { committer: model },
    name: `store ${spec}`,
    revision: () => model.revision(),
    async load(store) {
      unfollow = await followModel(model, store, log);
    },
    async close() {
      unfollow();
      await model.close();
      client.close();
    },
  };
}

export const command: Command = {
  summary: 'serve the networking-sfc REST API and run the dataplane',
  usage: `[--config FILE] [--state FILE | --store etcd://HOST:PORT[,...]] [--listen HOST:PORT] [--driver userspace|ovs|noop] [--token T]
           [--workers N] [--backend ${BACKEND_NAMES.join('|')}] [--busy-poll-us N] [--frames-in-place]
  --config FILE       chain file (YAML/JSON) that seeds an EMPTY state (ignored once the state has content)
  --state FILE        durable state (default \${XDG_STATE_HOME:-~/.local/state}/sfc/state.json)
  --store etcd://HOST:PORT[,HOST:PORT...]  keep the model in this etcd cluster instead, shared with
                      every server and agent using it (each write: one conditional etcd transaction)
  --listen HOST:PORT  default 127.0.0.1:9696; port 0 picks a free port (printed as 'listening on URL')
  --driver D          userspace (default: steer packets in this process), ovs (render into an Open
                      vSwitch bridge: flows and select groups) or noop (API only)
  --host NAME         userspace/ovs: the host this server's dataplane is (default: the hostname); ports
                      whose binding:host_id names another host are refused (400: those need sfc agent)
  --ovs-bridge NAME   ovs: the bridge sfc owns (default ${DEFAULT_OVS_BRIDGE}); its ports are the ports' interfaces
  --ovsdb unix:PATH   ovs: a running Open vSwitch's database; without it sfc starts its own ovsdb-server
                      and ovs-vswitchd (datapath_type=netdev) under the state directory and stops them on exit
  --token-file FILE   require X-Auth-Token: T or Authorization: Bearer T, T read from FILE (mode 0600,
                      owned by this user); or env SFC_TOKEN; or --token T (visible in ps). Without a
                      token only loopback addresses may be listened on and named in Host
  --limits C=N,...    most objects per collection (default ${DEFAULT_LIMIT} each; e.g. ports=20000)
  --max-connections N concurrent API connections (default ${DEFAULT_SERVER_LIMITS.maxConnections})
  --workers N         dataplane worker threads (default 1)
  --backend B         packet I/O: ${backendChoices()}
  --busy-poll-us N    each dataplane worker keeps polling for N µs after the last frame it received
                      before it sleeps, at nice -20 (default 0: sleep at once). Trades CPU for latency:
                      a sleeping worker is woken by an interrupt, which an idle (virtual) CPU may take
                      a millisecond or more to take. Not with --backend cap (no worker threads)
  --frames-in-place   afxdp: each worker's sockets share one UMEM that is also its batch, so a frame is
                      parsed, rewritten and sent where the kernel received it, never copied by sfc
                      (64.5 MiB per worker). On veth the kernel copies in and out of the UMEM anyway,
                      and this measured level with the default (copying), so it is off by default
                      (GSO super-frames are then cut by the veth peer's kernel, as with SFC_AFXDP_GSO=0)
  environment         afxdp on a veth receives the peer's GSO super-frames (TCP, UDP) whole through an
                      AF_PACKET socket beside it and cuts them; SFC_AFXDP_GSO=0 attaches natively
                      instead (the kernel turns the peer's TSO/USO off and it segments in software);
                      SFC_AFXDP_NEED_WAKEUP=1 turns need_wakeup on
  --health-policy G=P,...  per port pair group (name or id) what happens when none of its instances is
                      up: reroute (default: dropped as no_instance), fail-open (the hop is skipped) or
                      fail-closed (dropped as hop_down); while any is up a down one's flows move to the others
                      (also the --config file's 'health: {policies: {G: P}}', read at every start; these win)
  --health-interval MS  SF health check interval (default ${DEFAULT_HEALTH.intervalMs}; 0: no health checks)
  --health-timeout MS a health probe not back after this is lost (default ${DEFAULT_HEALTH.timeoutMs})
  --health-down N     failed checks in a row before an instance is down (default ${DEFAULT_HEALTH.downAfter})
  --health-up N       good checks in a row before it is up again (default ${DEFAULT_HEALTH.upAfter})`,

  async run(argv) {
    const { values } = parseOptions(argv, {
      config: { type: 'string' },
      state: { type: 'string' },
      store: { type: 'string' },
      listen: { type: 'string', default: '127.0.0.1:9696' },
      driver: { type: 'string', default: 'userspace' },
      host: { type: 'string', default: hostname() },
      'ovs-bridge': { type: 'string', default: DEFAULT_OVS_BRIDGE },
      ovsdb: { type: 'string' },
      token: { type: 'string' },
      'token-file': { type: 'string' },
      limits: { type: 'string' },
      'max-connections': { type: 'string', default: String(DEFAULT_SERVER_LIMITS.maxConnections) },
      workers: { type: 'string', default: '1' },
      'busy-poll-us': { type: 'string', default: '0' },
      'frames-in-place': { type: 'boolean', default: false },
      backend: { type: 'string', default: DEFAULT_BACKEND },
      'health-policy': { type: 'string', default: '' },
      'health-interval': { type: 'string', default: String(DEFAULT_HEALTH.intervalMs) },
      'health-timeout': { type: 'string', default: String(DEFAULT_HEALTH.timeoutMs) },
      'health-down': { type: 'string', default: String(DEFAULT_HEALTH.downAfter) },
      'health-up': { type: 'string', default: String(DEFAULT_HEALTH.upAfter) },
    });
    const { host, port } = parseHostPort(values.listen, '--listen');
    const token = await resolveToken({ token: values.token, tokenFile: values['token-file'] });
    if (token === undefined && !isLoopbackHost(host)) {
      throw new UsageError(
        `refusing to listen on ${host} without a token: set --token-file, SFC_TOKEN or --token, or listen on a loopback address (127.0.0.1, ::1)`,
      );
    }
    if (values.driver !== 'userspace' && values.driver !== 'ovs' && values.driver !== 'noop') {
      throw new UsageError(`--driver must be userspace, ovs or noop, got '${values.driver}'`);
    }
    if (!isHostName(values.host)) throw new UsageError(`--host must be a host name (A-Z a-z 0-9 . _ -, starting with a letter or digit), got '${values.host}'`);
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(values['ovs-bridge'])) throw new UsageError(`--ovs-bridge must be an interface name (1-15 of A-Z a-z 0-9 _ . -), got '${values['ovs-bridge']}'`);
    if (values.ovsdb !== undefined && !/^unix:.+/.test(values.ovsdb)) throw new UsageError(`--ovsdb must be unix:PATH, got '${values.ovsdb}'`);
    const registered = parseBackend(values.backend);
    const backend = registered.name;
    const workers = positiveInt(values.workers, '--workers');
    const busyPollUs = parseBusyPoll(values['busy-poll-us'], backend);
    if (busyPollUs > 0 && values.driver !== 'userspace') throw new UsageError('--busy-poll-us is for the userspace driver (its dataplane workers)');
    const framesInPlace = values['frames-in-place'];
    if (framesInPlace && (values.driver !== 'userspace' || registered.threads?.arenas === undefined)) {
      throw new UsageError(`--frames-in-place is for the userspace driver on --backend afxdp (its sockets share the batch's memory), not --driver ${values.driver} --backend ${backend}`);
    }
    const limits = values.limits === undefined ? {} : parseLimits(values.limits);
    const maxConnections = positiveInt(values['max-connections'], '--max-connections');
    const healthInterval = values['health-interval'] === '0' ? 0 : positiveInt(values['health-interval'], '--health-interval');
    const healthOptions = {
      intervalMs: healthInterval,
      timeoutMs: positiveInt(values['health-timeout'], '--health-timeout'),
      downAfter: positiveInt(values['health-down'], '--health-down'),
      upAfter: positiveInt(values['health-up'], '--health-up'),
    };
    let policies;
    try {
      policies = parseHealthPolicies(values['health-policy']);
    } catch (e) {
      throw new UsageError(`--health-policy: ${(e as Error).message}`);
    }
    // the config file's health section, whenever the server starts (--health-policy entries win)
    if (values.config !== undefined) {
      const { loadHealthPolicies } = await import('../control/config.js');
      policies = new Map([...(await loadHealthPolicies(values.config)), ...policies]);
    }

    if (values.store !== undefined && values.state !== undefined) throw new UsageError('--state and --store exclude each other');
    const statePath = values.state ?? defaultStatePath();
    const home = values.store === undefined ? await openLocal(statePath) : await openEtcd(values.store);
    let userspace: { driver: UserspaceDriver; dataplane: Dataplane } | undefined;
    let ovs: OvsDriver | undefined;
    let health: HealthMonitor | undefined;
    let drivers = new DriverManager([new NoopDriver()]);
    try {
      if (values.driver === 'userspace') {
        userspace = await startUserspace(backend, workers, busyPollUs, framesInPlace);
        drivers = new DriverManager([oneHostGuard(values.host), userspace.driver]);
      } else if (values.driver === 'ovs') {
        const { OvsDriver } = await import('../control/drivers/ovs/driver.js');
        const dir = join(dirname(statePath), `ovs-${values['ovs-bridge']}`);
        ovs = await OvsDriver.start({ bridge: values['ovs-bridge'], ovsdb: values.ovsdb, dir, log });
        drivers = new DriverManager([oneHostGuard(values.host), ovs]);
      }
      const store = new Store({ drivers, ...home.commit, limits });
      await home.load(store).catch((e: Error) => {
        throw new Error(`cannot apply ${home.name}: ${e.message}`);
      });
      await seed(store, home.name, values.config);
      const metrics = new Metrics({
        revision: () => home.revision(store),
        generation: () => userspace?.driver.tables?.generation ?? ovs?.generation ?? 0,
        dataplane: () => {
          if (ovs) return ovs.stats().then((stats) => ({ stats, instances: ovs!.instanceNames }));
          const tables = userspace?.driver.tables;
          return userspace && tables ? { stats: userspace.dataplane.stats(), instances: tables.instanceNames } : undefined;
        },
      });
      if (drivers.appliesHealth && healthInterval > 0) {
        health = new HealthMonitor(healthOptions, {
          plan: () => drivers.plan,
          linkUp: (name) => (nativeAvailable() ? nativeLinkUp(name) : sysfsLinkState(name) === LINK_UP),
          apply: (view) => drivers.health(view),
          log,
          policies,
          registry: metrics.registry,
          prober: userspace?.dataplane,
        });
        health.start();
      }
      const stopping = new AbortController();
      const operator = {
        dataplane: userspace?.dataplane ?? ovs,
        tables: () => userspace?.driver.tables ?? null,
        state: () => store.state,
        explain: ovs && ((iface: string, frame: Uint8Array) => ovs!.explain(iface, frame, store.state)),
        stopping: stopping.signal,
      };
      const dataplane = userspace?.dataplane;
      if (dataplane) {
        new Counter({
          name: 'sfc_worker_restarts_total',
          help: 'Dataplane worker threads that died and were restarted',
          registers: [metrics.registry],
          collect() {
            this.reset();
            this.inc(dataplane.health().restarts);
          },
        });
      }
      const report = () => healthReport(dataplane, health);
      const api = await startApiServer({ store, token, metrics, operator, health: report, log, host, port, limits: { maxConnections } });
      console.log(`listening on ${api.url}`);
      log(`${home.name} (revision ${home.revision(store)}, ${objectCount(store.state)} objects), driver ${values.driver}`);
      log(`${await untilSignal()}: shutting down`);
      stopping.abort(); // ends live traces and captures
      await api.close();
    } finally {
      await health?.stop();
      await drivers.close();
      await userspace?.dataplane.close();
      await home.close();
    }
    return 0;
  },
};
