/** Polls `condition` until it holds (returns its value) or `timeoutMs` passes (throws, naming `what`). */
export async function waitFor<T>(condition: () => T | Promise<T>, what = "condition", timeoutMs = 10_000, everyMs = 10): Promise<NonNullable<T>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value as NonNullable<T>;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
