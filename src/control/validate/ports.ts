/*
 * Ports (spec A.2, the project's model of a Neutron port): a logical port bound to a Linux
 * interface (`binding:profile.interface`) with the MAC of the endpoint behind it, on the host
 * `binding:host_id` names ('' when there is only one).
 *
 * mac_address is validated and stored lower-case with colons; when omitted one is generated the
 * way Neutron does (fa:16:3e:xx:xx:xx). Two ports on the same interface with the same MAC could
 * not be told apart by the dataplane: 409 MacAddressInUse. `status` is computed (ACTIVE when
 * admin_state_up and the interface exists and is up); DELETE of a port a port pair or flow
 * classifier references is 409 PortInUse (the reference fails with a 500 there).
 */
import { randomBytes } from 'node:crypto';
import { conflict } from '../errors.js';
import type { Port, State } from '../model.js';
import {
  DESCRIPTION,
  NAME,
  invalidAttr,
  isObject,
  parseCreate,
  parseUpdate,
  show,
  toBool,
  updatableAttrs,
  type ResourceSpec,
} from './attrs.js';
import { portNotFound, type ResourceOps, type WriteContext } from './common.js';
import { portsByMac } from './indexes.js';

type PortInput = Pick<Port, 'name' | 'description' | 'mac_address' | 'binding:profile' | 'binding:host_id' | 'admin_state_up'>;

const MAC_RE = /^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$/i;

function macAttr(value: unknown, attr: string): string {
  if (typeof value !== 'string' || !MAC_RE.test(value)) {
    throw invalidAttr(attr, `'${show(value)}' is not a valid MAC address`);
  }
  const mac = value.toLowerCase().replaceAll('-', ':');
  const first = Number.parseInt(mac.slice(0, 2), 16);
  if ((first & 1) === 1 || mac === '00:00:00:00:00:00') {
    throw invalidAttr(attr, `'${value}' is not a unicast MAC address`);
  }
  return mac;
}

/** Linux dev_valid_name: 1..15 bytes, not "." or "..", no '/', ':' or whitespace. */
function isIfname(name: string): boolean {
  return name.length > 0 && name.length < 16 && name !== '.' && name !== '..' && !/[/:\s]/.test(name);
}

function profileAttr(value: unknown, attr: string): Port['binding:profile'] {
  if (!isObject(value)) throw invalidAttr(attr, `'${show(value)}' is not a dictionary`);
  const ifname = value.interface;
  if (typeof ifname !== 'string') throw invalidAttr(attr, "it must carry the Linux interface name as a string 'interface'");
  if (!isIfname(ifname)) throw invalidAttr(attr, `'${ifname}' is not a valid Linux interface name`);
  return { ...value, interface: ifname };
}

/** A host name as ports and agents use it (`sfc agent --host`, the key of its record in the shared store). */
export function isHostName(host: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/.test(host);
}

/**
 * binding:host_id: '' (the only host) or a host name as agents publish it (`sfc agent --host`):
 * letters, digits, '.', '_', '-', up to 255, so it can name the agent's key in the shared store.
 */
function hostAttr(value: unknown, attr: string): string {
  const host = value === null ? '' : value;
  if (typeof host !== 'string' || (host !== '' && !isHostName(host))) {
    throw invalidAttr(attr, `'${show(value)}' is not a valid host name`);
  }
  return host;
}

function generatedMac(): string {
  return ['fa', '16', '3e', ...[...randomBytes(3)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

const SPEC: ResourceSpec<PortInput> = {
  attrs: {
    name: NAME,
    description: DESCRIPTION,
    mac_address: { put: true, default: generatedMac, convert: macAttr },
    'binding:profile': { required: true, put: true, convert: profileAttr },
    'binding:host_id': { put: true, default: () => '', convert: hostAttr },
    admin_state_up: { put: true, default: () => true, convert: (v) => toBool(v) },
  },
  readOnly: ['id', 'status'],
};

function statusOf(p: PortInput, ctx: WriteContext): Port['status'] {
  return p.admin_state_up && ctx.linkUp(p['binding:profile'].interface) ? 'ACTIVE' : 'DOWN';
}

function checkMacUnique(state: State, port: Port): void {
  const twin = portsByMac.all(state.ports, port.mac_address).find(
    (p) => p.id !== port.id && p['binding:profile'].interface === port['binding:profile'].interface,
  );
  if (twin) {
    throw conflict(
      'MacAddressInUse',
      `Unable to complete operation for interface ${port['binding:profile'].interface}. ` +
        `The mac address ${port.mac_address} is in use by port ${twin.id}.`,
    );
  }
}

export const portOps: ResourceOps<Port> = {
  notFound: portNotFound,
  updatable: updatableAttrs(SPEC),

  create(state, body, ctx, id) {
    const input = parseCreate(SPEC, body, ctx.projectId);
    const port: Port = { id, ...input, status: statusOf(input, ctx) };
    checkMacUnique(state, port);
    return port;
  },

  parseUpdate(body) {
    const patch = parseUpdate(SPEC, body);
    return (state, current, ctx) => {
      const merged = { ...current, ...patch };
      const port: Port = { ...merged, status: statusOf(merged, ctx) };
      checkMacUnique(state, port);
      return port;
    };
  },

  checkDelete(state, port) {
    const pair = state.port_pairs.find((pp) => pp.ingress === port.id || pp.egress === port.id);
    if (pair) throw conflict('PortInUse', `Port ${port.id} in use by port pair ${pair.id}.`);
    const fc = state.flow_classifiers.find(
      (f) => f.logical_source_port === port.id || f.logical_destination_port === port.id,
    );
    if (fc) throw conflict('PortInUse', `Port ${port.id} in use by flow classifier ${fc.id}.`);
  },
};
