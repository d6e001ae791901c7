/*
 * Where the API token comes from, without putting it in argv (visible to every user in `ps`):
 * `--token-file FILE` (a regular file, not a link, owned by this user and readable by no one else:
 * mode 0600 or 0400; surrounding whitespace ignored) or the SFC_TOKEN environment variable.
 * `--token T` is still accepted, for scripts on a single-user lab host.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { UsageError } from '../util/args.js';

export class TokenFileError extends Error {}

/** The token in `path`; refuses a file others may read or write, or that is not ours. */
export async function readTokenFile(path: string, uid = process.getuid?.()): Promise<string> {
  let text: string;
  try {
    const f = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const st = await f.stat();
      if (!st.isFile()) throw new TokenFileError(`token file ${path} is not a regular file`);
      if ((st.mode & 0o077) !== 0) {
        const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
        throw new TokenFileError(`token file ${path} has mode ${mode}: group and others must have no access (chmod 600 ${path})`);
      }
      if (uid !== undefined && st.uid !== uid) throw new TokenFileError(`token file ${path} is owned by uid ${st.uid}, not by this user (uid ${uid})`);
      text = await f.readFile('utf8');
    } finally {
      await f.close();
    }
  } catch (e) {
    if (e instanceof TokenFileError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new TokenFileError(`cannot read token file ${path}: ${code === 'ELOOP' ? 'it is a symbolic link' : (e as Error).message}`);
  }
  const token = text.trim();
  if (token === '') throw new TokenFileError(`token file ${path} is empty`);
  if (/\s/.test(token)) throw new TokenFileError(`token file ${path} holds more than one word: the token is its only content`);
  return token;
}

/** --token, else --token-file, else $SFC_TOKEN; undefined = no token. Both options at once: usage error. */
export async function resolveToken(opts: { token?: string; tokenFile?: string }, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  if (opts.token !== undefined && opts.tokenFile !== undefined) throw new UsageError('give --token or --token-file, not both');
  if (opts.token !== undefined) {
    if (opts.token.trim() === '') throw new UsageError('the token must not be empty');
    return opts.token;
  }
  if (opts.tokenFile !== undefined) return readTokenFile(opts.tokenFile);
  return env.SFC_TOKEN || undefined;
}
