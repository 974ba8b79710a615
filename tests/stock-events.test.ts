import { afterEach, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { StockEvents } from "../src/coins/stock-events.ts";
import { listen } from "../src/db/notifications.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { closingHost, silentHost } from "./helpers/proxy.ts";
import { waitFor } from "./helpers/wait.ts";

// Waiters (claims with wait_ms, long-polled counts) are woken by PostgreSQL notifications on
// aqm_stock, and all of them when LISTEN is established again after its connection dropped. The
// first LISTEN wakes nobody: every waiter subscribed before it still waits for it before looking.

const db = useTestDatabase();
let events: StockEvents | undefined;
afterEach(async () => {
  await events?.close();
  events = undefined;
});

const open = () => (events = new StockEvents((message, ready) => listen(db.directUrl, "aqm_stock", message, ready)));
const wokenAt = (promise: Promise<void>) => promise.then(() => performance.now());

test("the first LISTEN wakes nobody: a waiter subscribed before it was established waits until its deadline", async () => {
  const stock = open();
  const subscriptions = await Promise.all([stock.subscribe(randomUUID()), stock.subscribe(randomUUID())]); // both before LISTEN is up
  const started = performance.now();
  const woken = await Promise.all(subscriptions.map((s) => wokenAt(s.next(started + 600))));
  for (const at of woken) expect(at - started).toBeGreaterThanOrEqual(590);
});

test("a notification wakes the waiters of its user only", async () => {
  const stock = open();
  const [alice, bob] = [randomUUID(), randomUUID()];
  const [a, b] = await Promise.all([stock.subscribe(alice), stock.subscribe(bob)]);
  const started = performance.now();
  const [aliceWoken, bobWoken] = [wokenAt(a.next(started + 10_000)), wokenAt(b.next(started + 1_000))];
  await db.sql`SELECT pg_notify('aqm_stock', ${alice})`;
  expect((await aliceWoken) - started).toBeLessThan(5_000);
  expect((await bobWoken) - started).toBeGreaterThanOrEqual(990);
});

test("after the listener's connection is terminated, LISTEN is established again and every waiter wakes; notifications arrive again", async () => {
  const stock = open();
  const users = [randomUUID(), randomUUID()];
  const subscriptions = await Promise.all(users.map((u) => stock.subscribe(u)));
  const started = performance.now();
  const woken = subscriptions.map((s) => wokenAt(s.next(started + 20_000)));
  const [terminated] = await db.sql<{ n: number }[]>`
    SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
    WHERE application_name = 'aqm-coin-server listen' AND datname = current_database()`;
  expect(terminated!.n).toBe(1);
  for (const at of await Promise.all(woken)) expect(at - started).toBeLessThan(10_000);
  // listening again: a notification reaches the waiter (sent until it does: LISTEN may still be on its way)
  const again = await stock.subscribe(users[0]!);
  let done = false;
  void again.next(performance.now() + 60_000).then(() => (done = true)); // (woken by close() at the end otherwise)
  for (let i = 0; i < 50 && !done; i++) {
    await db.sql`SELECT pg_notify('aqm_stock', ${users[0]!})`;
    await Bun.sleep(100);
  }
  expect(done).toBe(true);
});

test("through an outage of the database the listener's retries do not pile up: once LISTEN is established again, `ready` is called once", async () => {
  // the primary's address refuses openings (closes them cleanly) while `down`; the other host never answers
  let down = false;
  const primary = await closingHost(new URL(db.directUrl), () => down);
  const nowhere = await closingHost(new URL(db.directUrl), () => true);
  const { username, password, pathname } = new URL(db.directUrl);
  const url = `postgres://${username}:${password}@127.0.0.1:${nowhere.port},127.0.0.1:${primary.port}${pathname}`;
  let readies = 0;
  const listener = listen(url, "aqm_stock_outage", () => {}, () => readies++);
  try {
    await waitFor(() => readies === 1, "the first LISTEN");
    down = true;
    await db.sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'aqm-coin-server listen' AND datname = current_database()`;
    await Bun.sleep(5_000); // a few of the listener's 2 s openings fail meanwhile
    down = false;
    await waitFor(() => readies >= 2, "LISTEN established again", 10_000);
    await Bun.sleep(1_500); // any retry left behind would call it again within its 250 ms and an opening
    expect(readies).toBe(2);
  } finally {
    await listener.close();
    primary.close();
    nowhere.close();
  }
}, 30_000);

test("a first LISTEN later than the 2 s a waiter waits for it wakes that waiter: it looked without it, and may have missed a change", async () => {
  // the real listener, its first `ready` held back past the bound
  const stock = (events = new StockEvents((message, ready) => listen(db.directUrl, "aqm_stock", message, () => setTimeout(ready, 2_500))));
  const started = performance.now();
  const subscription = await stock.subscribe(randomUUID());
  expect(performance.now() - started).toBeGreaterThanOrEqual(1_990); // subscribe() gave up waiting for LISTEN
  const at = await wokenAt(subscription.next(started + 20_000));
  expect(at - started).toBeGreaterThanOrEqual(2_490);
  expect(at - started).toBeLessThan(10_000);
});

test("a listener whose host goes silent (its connection open, nothing answered) is given up and LISTENs again on the next host: `ready` is called again and notifications arrive", async () => {
  const direct = new URL(db.directUrl);
  const host = await silentHost(direct);
  const url = `postgres://${direct.username}:${direct.password}@127.0.0.1:${host.port},127.0.0.1:${direct.port}${direct.pathname}`;
  let readies = 0;
  const messages: string[] = [];
  const listener = listen(url, "aqm_stock_silent", (m) => messages.push(m), () => readies++, { aliveEveryS: 1 });
  try {
    await waitFor(() => readies === 1, "the first LISTEN");
    host.silence();
    await waitFor(() => readies === 2, "LISTEN again, on the next host", 10_000);
    for (let i = 0; i < 50 && messages.length === 0; i++) {
      await db.sql`SELECT pg_notify('aqm_stock_silent', 'after')`;
      await Bun.sleep(100);
    }
    expect(messages[0]).toBe("after");
    expect(host.accepted()).toBe(1); // never opened on the silent host again
  } finally {
    await listener.close();
    host.close();
  }
}, 30_000);
