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
 * Reads what the server's claims commit with — its own sessions (`sql`, on DATABASE_URL) and,
 * on Citus, every worker's sessions of this role and database (run_command_on_workers over
 * `session`, which opens such a session) — and returns the risks: `refuse`, one line each, and
 * `unread`, the workers that could not be asked (down: their claims answer 503 meanwhile).
 */
async function commitRisks(sql: Sql, session: Sql): Promise<{ refuse: string[]; unread: string[] }> {
  const refuse: string[] = [];
  const unread: string[] = [];
  const own = commitRisk("the server's own sessions (DATABASE_URL)", await settingsOf(sql));
  if (own) refuse.push(own);
  if (!(await citusInstalled(session))[0]!.citus) return { refuse, unread };
  const workers = await session<{ node: string; success: boolean; result: string }[]>`
    SELECT nodename || ':' || nodeport AS node, success, result FROM run_command_on_workers(
      $$SELECT current_setting('synchronous_commit') || '|' || current_setting('synchronous_standby_names')$$)
    ORDER BY nodename, nodeport`.catch((error: Error) => [{ node: "(every worker)", success: false, result: error.message }]);
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
  constructor(readonly risks: string[]) {
    super(`refusing to start: ${risks.join("; ")}`);
    this.name = "LosableCommits";
  }
}

/**
 * Throws LosableCommits when a claim's commit could be lost (commitRisks); warns of workers it
 * could not ask. The server's own sessions are asked on a connection of their own to `url`
 * (DATABASE_URL) that sends no startup parameters, so that it also gets through a pooler the
 * start has yet to detect (poolerBehind).
 */
export async function refuseLosableCommits(url: string, config: Partial<PoolConfig>, session: Sql): Promise<void> {
  const probe = createPool(url, { ...config, AQM_DB_POOLER: "transaction", AQM_DB_POOL_MAX: 1 }, "aqm-coin-server start check");
  const { refuse, unread } = await commitRisks(probe, session).finally(() => probe.end({ timeout: 1 }));
  for (const node of unread) console.warn(`aqm: WARNING: cannot read synchronous_commit on Citus worker ${node}; it must be on`);
  if (refuse.length) throw new LosableCommits(refuse);
}
