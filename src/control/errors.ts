/*
 * NeutronError: the one error type of the control path. It carries the HTTP status and the
 * networking-sfc exception class name (`type`), and renders as Neutron's error body
 * {"NeutronError": {"type", "message", "detail"}} (detail is always present: the openstack client
 * needs it). Config loading wraps it with the file/object/field it came from.
 */
export class NeutronError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly detail = '',
  ) {
    super(message);
    this.name = 'NeutronError';
  }

  body(): { NeutronError: { type: string; message: string; detail: string } } {
    return { NeutronError: { type: this.type, message: this.message, detail: this.detail } };
  }
}

export const badRequest = (type: string, message: string) => new NeutronError(400, type, message);
export const notFound = (type: string, message: string) => new NeutronError(404, type, message);
export const conflict = (type: string, message: string) => new NeutronError(409, type, message);
