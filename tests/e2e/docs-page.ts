// `bun run test:browser`: the Swagger page in a real browser (Debian's chromium, headless, driven
// by puppeteer-core), as a new user would use it: authorize with a token, run the pre-filled
// upload (twice), count, fetch and claim examples, and see 200s. No request may leave the server.
// Run by .ci/run; CHROMIUM_PATH overrides /usr/bin/chromium.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer, { type Page } from "puppeteer-core";
import { startLiveServer } from "./live-server.ts";

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

/** Expands an operation, switches on "Try it out", clicks Execute and returns what the server answered. */
async function execute(page: Page, operationId: string, method: string, path: string, { open = true } = {}) {
  const block = `[id^="operations-"][id$="-${operationId}"]`;
  if (open) {
    await click(page, `${block} .opblock-summary-control`);
    await click(page, `${block} .try-out__btn`);
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

async function run(page: Page, url: string, token: string): Promise<string[]> {
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

  const first = await execute(page, "postV1CoinsUpload", "POST", "/v1/coins/upload");
  const again = await execute(page, "postV1CoinsUpload", "POST", "/v1/coins/upload", { open: false });
  for (const upload of [first, again]) {
    check(upload.status === 200 && upload.shown === "200", `upload answered ${upload.status} (page shows ${upload.shown}): ${JSON.stringify(upload.body)}`);
    check(upload.body.inserted === 1, `the upload example stored no new coin: ${JSON.stringify(upload.body)}`);
  }
  const keyIds = [first, again].map((u) => JSON.parse(u.sent ?? "{}").coins?.[0]?.key_id);
  check(keyIds[0] !== keyIds[1], `both uploads sent key_id ${keyIds[0]}`);
  results.push(`upload 200 twice (inserted 1 each, key_ids ${keyIds.join(", ")})`);

  const count = await execute(page, "getV1CoinsCount", "GET", "/v1/coins/count");
  check(count.status === 200 && count.shown === "200" && count.body.bronze === 2, `count answered ${count.status}: ${JSON.stringify(count.body)}`);
  results.push(`count 200 (${JSON.stringify(count.body)})`);

  for (const [operationId, method, path] of [["getV1CoinsFetch", "GET", "/v1/coins/fetch"], ["postV1CoinsClaim", "POST", "/v1/coins/claim"]] as const) {
    const claim = await execute(page, operationId, method, path);
    check(claim.status === 200 && claim.shown === "200" && Array.isArray(claim.body.coins), `${method} ${path} answered ${claim.status}: ${JSON.stringify(claim.body)}`);
    results.push(`${path.split("/").pop()} 200 (${claim.body.coins.length} coins)`);
  }

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
    const results = await run(page, server.url, await server.token(randomUUID()));
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
