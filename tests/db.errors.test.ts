import { expect, test } from "bun:test";
import { conflictKind, isConflict, SQLSTATE, translate } from "../src/db/errors.ts";
import { InternalError, UnavailableError } from "../src/errors.ts";

const pgError = (code: string) => Object.assign(new Error(`postgres says ${code}`), { code });

test("PostgreSQL cannot serve right now → 503 with its SQLSTATE: down, shutting down, no longer the primary (a switchover), cancelled, locked, a conflict", () => {
  for (const code of ["08006", "57P01", "57P03", SQLSTATE.readOnly, SQLSTATE.queryCanceled, SQLSTATE.tooManyConnections,
    SQLSTATE.deadlock, SQLSTATE.serialization, SQLSTATE.lockNotAvailable, "ECONNREFUSED", "CONNECTION_CLOSED"]) {
    const e = translate(pgError(code));
    expect(e).toBeInstanceOf(UnavailableError);
    expect((e as UnavailableError).sqlstate).toBe(code);
  }
});

test("anything else is a 500 that carries its SQLSTATE for the log", () => {
  const e = translate(pgError(SQLSTATE.undefinedTable));
  expect(e).toBeInstanceOf(InternalError);
  expect((e as InternalError).code).toBe("42P01");
});

test("only a deadlock or a serialization failure is a conflict the claim queue runs again", () => {
  expect([SQLSTATE.deadlock, SQLSTATE.serialization, SQLSTATE.readOnly, SQLSTATE.queryCanceled].map((c) => isConflict(pgError(c)))).toEqual([true, true, false, false]);
});

test("a conflict says why, raw or translated: a deadlock, a serialization failure, or aqm_claim_moved's (a coin claimed and given back during the statement)", () => {
  const moved = Object.assign(new Error("a coin this claim picked changed after the claim began"), { code: SQLSTATE.serialization });
  for (const wrap of [(e: Error) => e, translate]) {
    expect([pgError(SQLSTATE.deadlock), pgError(SQLSTATE.serialization), moved].map((e) => conflictKind(wrap(e)))).toEqual(["deadlock", "serialization", "coin_moved"]);
  }
  expect(translate(moved).message).toBe("The request met a concurrent one; retry shortly"); // what a client may see: nothing of the database's
});
