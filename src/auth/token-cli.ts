// `bun run token <user-uuid> [--admin] [--ttl seconds] [--device id]`: a development token signed with the
// server's secret (AQM_JWT_SECRET, or the development secret in the data directory).
import { loadConfig } from "../config.ts";
import { MAX_DEVICE_ID, signToken } from "./jwt.ts";
import { loadAuthKeys } from "./keys.ts";

const args = process.argv.slice(2);
const userId = args.find((a) => !a.startsWith("--") && /^[0-9a-f-]{36}$/i.test(a));
const ttlIndex = args.indexOf("--ttl");
const ttlSeconds = ttlIndex >= 0 ? Number(args[ttlIndex + 1]) : 3600;
const deviceIndex = args.indexOf("--device");
const device = deviceIndex >= 0 ? Number(args[deviceIndex + 1]) : undefined;
if (!userId || !Number.isInteger(ttlSeconds) || ttlSeconds <= 0 || (device !== undefined && !(Number.isInteger(device) && device >= 1 && device <= MAX_DEVICE_ID))) {
  console.error("usage: bun run token <user-uuid> [--admin] [--ttl seconds] [--device 1-127]");
  process.exit(2);
}
const keys = await loadAuthKeys(loadConfig());
if (!keys.secret) {
  console.error("Only AQM_JWT_PUBLIC_KEY is configured: tokens come from your identity service.");
  process.exit(2);
}
console.log(await signToken(keys.secret, userId, { admin: args.includes("--admin"), ttlSeconds, device, issuer: keys.issuer, audience: keys.audience }));
