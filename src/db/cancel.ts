/** The part of a postgres.js query this needs. */
interface Cancellable {
  cancel(): unknown;
  then(onSettled: () => void, onFailed: () => void): unknown;
}

/**
 * Asks PostgreSQL to cancel `query`. postgres.js (3.4) forgets a statement cancelled while it
 * waits pipelined behind another on its connection, though PostgreSQL still answers it: that
 * answer, and every later one on the connection, then goes to the wrong statement. So a waiting
 * statement is cancelled once it is the one running, and one that has settled is left alone.
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
    if (state.state && !state.active) {
      setTimeout(attempt, 10); // sent, behind the statement running on its connection
      return;
    }
    // (postgres.js drops the promise of the cancel request itself; a refused one reaches
    // stray-errors.ts as an unhandled rejection)
    query.cancel();
  };
  attempt();
}
