// `bun run test:browser`: the Swagger page in a real browser (Debian's chromium, headless, driven
// by puppeteer-core), as a new user would use it: authorize with a token, then run the pre-filled
// examples top to bottom — register the example identity key, upload (twice: verified, the page
// signs each fresh key_id again), count, fetch, claim of one device and of all devices (the
// sender then verifies every coin against the keys served with it), list the example user's
// devices, check the device's digest, reset — and see each answer's status on the page. No request
// may leave the server. Run by .ci/run; CHROMIUM_PATH overrides /usr/bin/chromium.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer, { type Page } from "puppeteer-core";
import { exampleCoin, exampleUserId } from "../../src/coins/model.ts";
import { exampleEd25519 } from "../../src/devices/model.ts";
import { coinMessage, verifyCoins } from "../../src/devices/signatures.ts";
import { startLiveServer, type LiveServer } from "./live-server.ts";

const STEP_TIMEOUT_MS = 30_000;
const WHOLE_RUN_MS = 180_000;

/** The page's document, in functions that run in the browser (this project's TypeScript has no DOM types). */
type PageDocument = { querySelector(s: string): { textContent: string | null } | null; body: { innerText: string } };

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

async function click(page: Page, selector: string) {
  await page.waitForSelector(selector, { visible: true });
  await page.click(selector);
}

const blockOf = (operationId: string) => `[id^="operations-"][id$="-${operationId}"]`;

/**
 * Expands an operation, switches on "Try it out" (unless it is open already), clears the previous
 * answer, clicks Execute and returns what the server answered and what the page shows of it.
 */
async function execute(page: Page, operationId: string, method: string, path: string, { open = true, example }: { open?: boolean; example?: { name: string; shows: string } } = {}) {
  const block = blockOf(operationId);
  if (open) {
    await click(page, `${block} .opblock-summary-control`);
    await click(page, `${block} .try-out__btn`);
  } else if (await page.$(`${block} .btn-clear`)) {
    await click(page, `${block} .btn-clear`);
    await page.waitForSelector(`${block} .live-responses-table`, { hidden: true });
  }
  if (example !== undefined) {
    // a named request body example, chosen in the page's list as a user would
    const select = `${block} .opblock-section-request-body .examples-select-element`;
    await page.waitForSelector(select, { visible: true });
    await page.select(select, example.name);
    await page.waitForFunction((selector, shows) => {
      const doc = (globalThis as unknown as { document: { querySelector(s: string): { value: string } | null } }).document;
      return doc.querySelector(`${selector} .opblock-section-request-body textarea`)?.value.includes(shows);
    }, {}, block, example.shows);
  }
  const [response] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === path && r.request().method() === method),
    click(page, `${block} .execute`),
  ]);
  const shown = await page.waitForFunction(
    (selector) => (globalThis as unknown as { document: PageDocument }).document
      .querySelector(`${selector} .live-responses-table tbody .response-col_status`)?.textContent?.trim(),
    {}, block,
  );
  return { status: response.status(), shown: await shown.jsonValue(), body: await response.json(), sent: response.request().postData() };
}

type Answer = Awaited<ReturnType<typeof execute>>;

/** The step's status, as answered and as shown on the page. */
function expectStatus(answer: Answer, status: number, step: string) {
  check(answer.status === status && answer.shown === String(status), `${step} answered ${answer.status} (page shows ${answer.shown}): ${JSON.stringify(answer.body)}`);
}

// RFC 8032, 7.1, TEST 1: the example identity key's private half (published in the RFC).
const exampleSeed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const b64 = (bytes: ArrayBuffer | Uint8Array) => Buffer.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).toString("base64");
const bytes = (base64: string) => new Uint8Array(Buffer.from(base64, "base64"));

/** A device identity that signs BRONZE coins: the example key, or a new one. */
async function identity(seedHex?: string) {
  const pair = seedHex
    ? { privateKey: await crypto.subtle.importKey("pkcs8", Buffer.from(`302e020100300506032b657004220420${seedHex}`, "hex"), { name: "Ed25519" }, true, ["sign"]) }
    : await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]) as unknown as CryptoKeyPair;
  const { x } = await crypto.subtle.exportKey("jwk", pair.privateKey);
  return {
    ed25519_b64: Buffer.from(x!, "base64url").toString("base64"),
    async coin() {
      const key_id = randomUUID();
      const publicKey = crypto.getRandomValues(new Uint8Array(32));
      return { key_id, coin_category: "BRONZE" as const, public_key_b64: b64(publicKey), signature_b64: b64(await crypto.subtle.sign("Ed25519", pair.privateKey, new Uint8Array(coinMessage("BRONZE", key_id, publicKey)))) };
    },
  };
}

/**
 * The example target (the user the claim examples name) as a client would provision it, outside
 * the page: device 1 with the example identity key and 6 BRONZE coins, device 2 with a key of its
 * own and 2. Then the page's claims serve real coins, and an all-devices claim two devices.
 */
async function provisionExampleTarget(server: LiveServer): Promise<{ device2: string }> {
  const send = async (method: string, path: string, device: number, body: unknown) => {
    const res = await fetch(`${server.url}${path}`, {
      method, body: JSON.stringify(body),
      headers: { authorization: `Bearer ${await server.token(exampleUserId, { device })}`, "content-type": "application/json" },
    });
    check(res.status === 200, `provisioning the example target: ${method} ${path} (device ${device}) answered ${res.status}: ${await res.text()}`);
  };
  const devices = [[1, await identity(exampleSeed), 6], [2, await identity(), 2]] as const;
  check(devices[0][1].ed25519_b64 === exampleEd25519, "the example seed is not the example key's");
  for (const [device, id, n] of devices) {
    await send("PUT", `/v1/devices/${device}`, device, { ed25519_b64: id.ed25519_b64 });
    await send("POST", "/v1/coins/upload", device, { coins: await Promise.all(Array.from({ length: n }, () => id.coin())) });
  }
  return { device2: devices[1][1].ed25519_b64 };
}

type ServedDevice = { device_id: number; ed25519_b64?: string; coins: { key_id: string; coin_category: "BRONZE"; public_key_b64: string; signature_b64: string }[]; short: { bronze: number } };

/** The sender's side of an all-devices claim: every coin verifies against the identity key served with its device. */
async function verifiedBySender(devices: ServedDevice[]): Promise<boolean> {
  for (const device of devices) {
    if (!device.ed25519_b64) return false;
    const keys = { ed25519: bytes(device.ed25519_b64), mlDsa: null, mlDsaSet: null };
    const coins = device.coins.map((c) => ({ key_id: c.key_id, coin_category: c.coin_category, publicKey: bytes(c.public_key_b64), signature: bytes(c.signature_b64) }));
    if ((await verifyCoins(keys, coins)).length > 0) return false;
  }
  return true;
}

async function run(page: Page, url: string, token: string, target: { device2: string }): Promise<string[]> {
  const results: string[] = [];
  await page.goto(`${url}/docs`, { waitUntil: "networkidle0" });
  await page.waitForSelector(".opblock");
  const text = await page.evaluate(() => (globalThis as unknown as { document: PageDocument }).document.body.innerText);
  check(text.includes("bun run token <your-user-uuid>") && text.includes("without Bearer"), "the page does not say how to get a token");

  await click(page, ".auth-wrapper button.authorize");
  await page.waitForSelector(".modal-ux .auth-container input", { visible: true });
  await page.type(".modal-ux .auth-container input", token);
  await click(page, ".modal-ux .auth-btn-wrapper button.authorize");
  await click(page, ".modal-ux .auth-btn-wrapper button.btn-done");

  // 1. the example identity key, registered for device 1 (the path's pre-filled example)
  const register = await execute(page, "putV1DevicesByDevice_id", "PUT", "/v1/devices/1");
  expectStatus(register, 200, "PUT /v1/devices/1");
  check(JSON.stringify(register.body) === JSON.stringify({ device_id: 1, replaced: false, coins_deleted: 0 }), `register: ${JSON.stringify(register.body)}`);
  results.push("register keys 200");

  // 2. the upload example, twice: a fresh key_id each time, signed again with the example key, verified by the server
  const first = await execute(page, "postV1CoinsUpload", "POST", "/v1/coins/upload");
  const again = await execute(page, "postV1CoinsUpload", "POST", "/v1/coins/upload", { open: false });
  for (const upload of [first, again]) {
    expectStatus(upload, 200, "upload");
    check(upload.body.inserted === 1, `the upload example stored no new coin: ${JSON.stringify(upload.body)}`);
  }
  const sent = [first, again].map((u) => JSON.parse(u.sent ?? "{}").coins?.[0]);
  check(sent[0].key_id !== sent[1].key_id && !sent.some((c) => c.key_id === exampleCoin.key_id), `the uploads sent key_ids ${sent.map((c) => c.key_id)}`);
  check(sent[0].signature_b64 !== exampleCoin.signature_b64, "the page did not sign the freshly keyed coin again");
  results.push(`upload 200 twice (verified, inserted 1 each, key_ids ${sent.map((c) => c.key_id).join(", ")})`);

  const count = await execute(page, "getV1CoinsCount", "GET", "/v1/coins/count");
  expectStatus(count, 200, "count");
  check(count.body.bronze === 2 && count.body.devices === undefined, `count: ${JSON.stringify(count.body)}`);
  results.push(`count 200 (${JSON.stringify(count.body)})`);

  // 3. the example target's coins: fetch 2 of device 1's 6, claim 3 (BRONZE 2, SILVER's shortfall from BRONZE)
  for (const [operationId, method, path, n] of [["getV1CoinsFetch", "GET", "/v1/coins/fetch", 2], ["postV1CoinsClaim", "POST", "/v1/coins/claim", 3]] as const) {
    const claim = await execute(page, operationId, method, path);
    expectStatus(claim, 200, `${method} ${path}`);
    check(Array.isArray(claim.body.coins) && claim.body.coins.length === n, `${method} ${path}: ${JSON.stringify(claim.body)}`);
    results.push(`${path.split("/").pop()} 200 (${claim.body.coins.length} coins)`);
  }

  // 4. the all-devices example, chosen in the claim's list of examples: device 1's last coin (1 short), device 2's two
  const all = await execute(page, "postV1CoinsClaim", "POST", "/v1/coins/claim", { open: false, example: { name: "all devices", shows: '"devices": "all"' } });
  expectStatus(all, 200, "claim of all devices");
  const devices = all.body.devices as ServedDevice[];
  check(JSON.parse(all.sent ?? "{}").devices === "all", `the all-devices example sent ${all.sent}`);
  check(JSON.stringify(devices?.map((d) => [d.device_id, d.ed25519_b64, d.coins.length, d.short.bronze]))
    === JSON.stringify([[1, exampleEd25519, 1, 1], [2, target.device2, 2, 0]]), `claim of all devices: ${JSON.stringify(all.body)}`);
  check(await verifiedBySender(devices), "a coin of the all-devices claim does not verify against its device's served key");
  results.push("claim of all devices 200 (2 devices, every coin verified against its device's key)");

  // 5. the example target's devices and public keys
  const list = await execute(page, "getV1UsersByUser_idDevices", "GET", `/v1/users/${exampleUserId}/devices`);
  expectStatus(list, 200, "GET devices");
  check(JSON.stringify(list.body) === JSON.stringify({ devices: [{ device_id: 1, ed25519_b64: exampleEd25519 }, { device_id: 2, ed25519_b64: target.device2 }] }),
    `GET devices: ${JSON.stringify(list.body)}`);
  results.push("devices 200 (2)");

  // 6. the digest check: the first example is what the flow left the device holding (the example key, no last-resort coin)
  const digest = await execute(page, "postV1DevicesByDevice_idCheck", "POST", "/v1/devices/1/check");
  expectStatus(digest, 200, "digest check");
  check(digest.body.match === true, `digest check: ${JSON.stringify(digest.body)}`);
  results.push("digest check 200 (match)");

  // 7. reset: the device's two coins go, its keys stay
  const reset = await execute(page, "deleteV1Coins", "DELETE", "/v1/coins");
  expectStatus(reset, 200, "DELETE /v1/coins");
  check(reset.body.deleted === 2, `reset: ${JSON.stringify(reset.body)}`);
  const after = await execute(page, "getV1CoinsCount", "GET", "/v1/coins/count", { open: false });
  expectStatus(after, 200, "count after the reset");
  check(after.body.bronze === 0, `count after the reset: ${JSON.stringify(after.body)}`);
  const still = await execute(page, "postV1DevicesByDevice_idCheck", "POST", "/v1/devices/1/check", { open: false });
  expectStatus(still, 200, "digest check after the reset");
  results.push("reset 200 (2 deleted; count 0; digest still matches)");

  // With a trailing slash the page loads the same document.
  await page.goto(`${url}/docs/`, { waitUntil: "networkidle0" });
  await page.waitForSelector('[id$="-postV1CoinsUpload"]');
  results.push("/docs/ renders the operations");
  return results;
}

const server = await startLiveServer();
const profile = mkdtempSync(join(tmpdir(), "aqm-chromium-"));
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  headless: true,
  userDataDir: profile,
  // As root without a sandbox, and nothing that reaches out to Google's services.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const watchdog = setTimeout(() => {
  console.error(`docs page: gave up after ${WHOLE_RUN_MS / 1000} s`);
  process.exit(1);
}, WHOLE_RUN_MS);
let failed = false;
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const origin = new URL(server.url).origin;
  const requested: string[] = [];
  const offSite: string[] = [];
  await page.setRequestInterception(true);
  page.on("request", (request) => {
    const target = new URL(request.url());
    requested.push(request.url());
    if (target.origin === origin || target.protocol === "data:" || target.protocol === "blob:") return void request.continue();
    offSite.push(request.url());
    void request.abort();
  });
  try {
    const target = await provisionExampleTarget(server);
    const results = await run(page, server.url, await server.token(randomUUID()), target);
    check(offSite.length === 0, `requests left the server: ${offSite.join(", ")}`);
    console.log(`docs page: ${results.join("; ")}; ${requested.length} requests, all to ${origin}`);
  } catch (error) {
    const shot = join(tmpdir(), `aqm-docs-page-${Date.now()}.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    console.error(`docs page: FAILED: ${(error as Error).message}\n(screenshot: ${shot}; off-site requests: ${offSite.length})`);
    failed = true;
  }
} finally {
  clearTimeout(watchdog);
  await browser.close();
  await server.stop();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
