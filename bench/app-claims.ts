// Claims through app.handle(), no HTTP server: what bench/in-process.ts and bench/ab-code.ts share.

/** The deployed configuration (rate limits and pair quota on, pool 4), the per-user buckets widened so the loops are never throttled. */
export const deployedEnv = (databaseUrl: string) => ({
  DATABASE_URL: databaseUrl, AQM_LOG: "off", AQM_CRON: "off", AQM_DB_POOL_MAX: "4", AQM_RATE_LIMITS: "on",
  AQM_RATE_FETCH_PER_MIN: "1000000", AQM_RATE_UPLOAD_PER_MIN: "1000000", AQM_RATE_COUNT_PER_MIN: "1000000",
});

/** The next GET /v1/coins/fetch each time: count=1, owners and tiers round robin, requesters' tokens spread. */
export function fetchRequests(owners: string[], tiers: readonly string[], tokens: string[]): () => Request {
  let i = 0;
  return () => {
    const n = i++;
    return new Request(
      `http://localhost/v1/coins/fetch?target_user_id=${owners[n % owners.length]}&coin_category=${tiers[Math.floor(n / owners.length) % tiers.length]}&count=1`,
      { headers: { authorization: `Bearer ${tokens[(n * 7919) % tokens.length]}` } },
    );
  };
}

/** `loops` closed loops hand `handle` the next request for `seconds`; the process's CPU over them, per claim. */
export async function driveClaims(handle: (request: Request) => Promise<Response>, next: () => Request, seconds: number, loops: number) {
  let claims = 0;
  let non200 = 0;
  const until = performance.now() + seconds * 1000;
  const cpu = process.cpuUsage();
  const started = performance.now();
  await Promise.all(Array.from({ length: loops }, async () => {
    while (performance.now() < until) {
      const res = await handle(next());
      await res.arrayBuffer();
      if (res.status !== 200) non200++;
      claims++;
    }
  }));
  const { user, system } = process.cpuUsage(cpu);
  return {
    claims, non200, claimsPerS: Math.round(claims / ((performance.now() - started) / 1000)),
    usCpuPerClaim: Math.round(((user + system) / claims) * 10) / 10, usSysPerClaim: Math.round((system / claims) * 10) / 10,
  };
}
