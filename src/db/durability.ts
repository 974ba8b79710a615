import { citusInstalled } from "./distribution.ts";
import { createPool, type PoolConfig, type Sql } from "./pool.ts";

/** What a node's sessions commit with: synchronous_commit and synchronous_standby_names. */
export interface CommitSettings {
  commit: string;
  standbys: string;
}

const fix = "set synchronous_commit = on (postgresql.conf, or ALTER ROLE/DATABASE … SET); docs/runbook.md, \"synchronous_commit and exactly once\"";

/**
 * Why a claim answered 200 could be lost on a node whose sessions commit with `settings`, so that
 * its coins would be handed out again — or undefined. With synchronous_commit off PostgreSQL
 * confirms a commit before its WAL is written: a crash loses it, and so does a Citus shard move
 * (its final catch-up waits for the WAL position *written* on the source, pg_current_wal_lsn(),
 * which a commit answered just before the move blocked writes may still lie past: reproduced,
 * tests/citus/commit.citus.ts). With local and a synchronous standby a failover loses it.
 */
export function commitRisk(node: string, { commit, standbys }: CommitSettings): string | undefined {
  if (commit === "off") {
    return `synchronous_commit is off on ${node}: PostgreSQL confirms a commit before writing it, so a crash (on a Citus worker `
      + `also a shard move) can lose a claim already answered 200 and hand its coins out again; ${fix}`;
  }
  if (commit === "local" && standbys.trim() !== "") {
    return `synchronous_commit is local on ${node}, which has a synchronous standby (synchronous_standby_names = '${standbys}'): `
      + `a commit does not wait for it, so a failover can lose a claim already answered 200 and hand its coins out again; ${fix}`;
  }
  return undefined;
}

const settingsOf = async (sql: Sql) => (await sql<CommitSettings[]>`
  SELECT current_setting('synchronous_commit') AS commit, current_setting('synchronous_standby_names') AS standbys`)[0]!;

/**
 * Reads what the server's claims commit with, on `probe` (a connection to DATABASE_URL, as the
 * claims' own role and database): its own sessions and, on Citus, every active worker's sessions
 * of that role and database (run_command_on_workers opens such a session on each, as the claims'
 * statements do). Returns the risks: `refuse`, one line each, and `unread`, the workers that could
 * not be asked (down: their claims answer 503 meanwhile). A worker that does not accept a
 * connection within a second is unread; the others are still read.
 */
async function commitRisks(probe: Sql): Promise<{ refuse: string[]; unread: string[] }> {
  const refuse: string[] = [];
  const unread: string[] = [];
  const own = commitRisk("the server's own sessions (DATABASE_URL)", await settingsOf(probe));
  if (own) refuse.push(own);
  if (!(await citusInstalled(probe))[0]!.citus) return { refuse, unread };
  // (a failure of the whole query stops the start, with what it was: refusing blind is safer than starting blind)
  const workers = await probe.begin(async (tx) => {
    await tx`SET LOCAL citus.node_connection_timeout = 1000`;
    await tx`SET LOCAL statement_timeout = 10000`;
    return tx<{ node: string; success: boolean; result: string }[]>`
      SELECT nodename || ':' || nodeport AS node, success, result FROM run_command_on_workers(
        $$SELECT current_setting('synchronous_commit') || '|' || current_setting('synchronous_standby_names')$$)
      ORDER BY nodename, nodeport`;
  }).catch((error: Error) => {
    error.message = `reading synchronous_commit on the Citus workers: ${error.message}`;
    throw error;
  });
  for (const { node, success, result } of workers) {
    if (!success) {
      unread.push(`${node} (${result})`);
      continue;
    }
    const [commit = "", ...rest] = result.split("|");
    const risk = commitRisk(`Citus worker ${node}`, { commit, standbys: rest.join("|") });
    if (risk) refuse.push(risk);
  }
  return { refuse, unread };
}

/** The start's refusal: every line of commitRisks' `refuse`. */
export class LosableCommits extends Error {
  constructor(risks: string[]) {
    super(`refusing to start: ${risks.join("; ")}`);
    this.name = "LosableCommits";
  }
}

/**
 * Throws LosableCommits when a claim's commit could be lost (commitRisks); warns of workers it
 * could not ask. Asked on a connection of its own to `url` (DATABASE_URL: the claims' role, even
 * when sessions use AQM_DATABASE_DIRECT_URL) that sends no startup parameter but its
 * application_name and the URL's own, so that it also gets through a pooler the start has yet to
 * detect (poolerBehind). Checked at start only: a setting changed later, a worker added later, is
 * not seen (docs/runbook.md has the query to run then).
 */
export async function refuseLosableCommits(url: string, config: Partial<PoolConfig>): Promise<void> {
  // (never given up for silence: the Citus workers' read below may take its 10 s)
  const probe = createPool(url, { ...config, AQM_DB_POOLER: "transaction", AQM_DB_POOL_MAX: 1, AQM_DB_UNRESPONSIVE_S: 0 }, "aqm-coin-server start check");
  const { refuse, unread } = await commitRisks(probe).finally(() => probe.end({ timeout: 1 }));
  for (const node of unread) console.warn(`aqm: WARNING: cannot read synchronous_commit on Citus worker ${node}; it must be on`);
  if (refuse.length) throw new LosableCommits(refuse);
}
