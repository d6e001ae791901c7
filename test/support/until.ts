/** Poll `probe` every `everyMs` until it returns a value (an observable condition, not a fixed sleep); throws after `ms`. */
export async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 15_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
