/** The part of a postgres.js query this needs. */
interface Cancellable {
  cancel(): unknown;
  then(onSettled: () => void, onFailed: () => void): unknown;
}

/**
 * Asks PostgreSQL to cancel `query` once it is the statement running on its connection. postgres.js
 * (3.4) mishandles a cancel at any other moment (tests/postgres-js.test.ts): a statement
 * cancelled while it waits pipelined behind another is forgotten though PostgreSQL still answers
 * it, so that answer, and every later one on the connection, goes to the wrong statement; and a
 * statement cancelled before it is sent, while its connection is still being opened (PostgreSQL
 * away, or a multi-host URL looking for the primary), leaves that connection stuck forever, and
 * with it the pool. So a statement not yet running is cancelled when it starts (its deadline has
 * passed: the caller treats whatever it returns as a late finish), and one that has settled is
 * left alone. A cancel request names a backend, not a statement: one that arrives just after its
 * statement finished can stop the next statement on that connection, which then fails 57014 (a
 * 503, rolled back: nothing served twice or lost, one request answered "retry").
 */
export function cancelAtDatabase(query: Cancellable): void {
  const state = query as unknown as { state: unknown; active: boolean };
  let settled = false;
  const done = () => {
    settled = true;
  };
  query.then(done, done);
  const attempt = () => {
    if (settled) return;
    if (!state.state || !state.active) {
      setTimeout(attempt, 10); // not sent yet, or sent behind the statement running on its connection
      return;
    }
    // (postgres.js drops the promise of the cancel request itself; a refused one reaches
    // stray-errors.ts as an unhandled rejection)
    query.cancel();
  };
  attempt();
}
