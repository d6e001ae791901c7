/*
 * What the operator commands (top, trace, capture, explain --server) share: the --server/--token
 * options and plain requests to a running `sfc serve` (text, JSON, or a byte stream such as pcap).
 */
import { DEFAULT_URL } from '../control/client.js';

export const SERVER_OPTIONS = { server: { type: 'string' }, token: { type: 'string' } } as const;
export const SERVER_HELP = `  --server URL        the running 'sfc serve' (default $SFC_URL or ${DEFAULT_URL})
  --token T           auth token (default $SFC_TOKEN)`;

export class Server {
  readonly url: string;
  private readonly token: string | undefined;

  constructor(opts: { server?: string; token?: string }, env: NodeJS.ProcessEnv = process.env) {
    this.url = (opts.server ?? (env.SFC_URL || DEFAULT_URL)).replace(/\/+$/, '');
    this.token = opts.token ?? (env.SFC_TOKEN || undefined);
  }

  /** GET `path`; a non-2xx answer throws with the server's NeutronError message. */
  async get(path: string, signal?: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.token !== undefined) headers['X-Auth-Token'] = this.token;
    let res: Response;
    try {
      res = await fetch(this.url + path, { headers, signal });
    } catch (e) {
      if (signal?.aborted) throw e;
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(`cannot reach the sfc API at ${this.url}: ${cause?.code ?? cause?.message ?? String(e)} (is 'sfc serve' running?)`);
    }
    if (res.ok) return res;
    const text = await res.text();
    let message = text || res.statusText;
    try {
      message = (JSON.parse(text) as { NeutronError?: { message?: string } }).NeutronError?.message ?? message;
    } catch {
      // not JSON: the text itself
    }
    throw new Error(`${path}: ${res.status} ${message}`);
  }

  async text(path: string): Promise<string> {
    return (await this.get(path)).text();
  }

  async json<T>(path: string, signal?: AbortSignal): Promise<T> {
    return (await (await this.get(path, signal)).json()) as T;
  }
}
