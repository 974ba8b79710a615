// Every migration, embedded in the program: db/migrations/ stays the source, and these text imports
// carry the files into `bun build --compile` executables and Deno alike (nothing is read from disk at
// run time). A new migration is its file, its rollback and one line below; tests/migrate.test.ts fails
// when this list and the directory disagree.
import up001 from "../../db/migrations/001_create_coin_inventory.sql" with { type: "text" };
import down001 from "../../db/migrations/rollback/001_create_coin_inventory.sql" with { type: "text" };
import up002 from "../../db/migrations/002_create_claim_quota.sql" with { type: "text" };
import down002 from "../../db/migrations/rollback/002_create_claim_quota.sql" with { type: "text" };
import up003 from "../../db/migrations/003_create_maintenance_tick.sql" with { type: "text" };
import down003 from "../../db/migrations/rollback/003_create_maintenance_tick.sql" with { type: "text" };
import up004 from "../../db/migrations/004_coin_inventory_autovacuum.sql" with { type: "text" };
import down004 from "../../db/migrations/rollback/004_coin_inventory_autovacuum.sql" with { type: "text" };
import up005 from "../../db/migrations/005_blob_storage_external.sql" with { type: "text" };
import down005 from "../../db/migrations/rollback/005_blob_storage_external.sql" with { type: "text" };
import up006 from "../../db/migrations/006_create_claimed_key.sql" with { type: "text" };
import down006 from "../../db/migrations/rollback/006_create_claimed_key.sql" with { type: "text" };
import up007 from "../../db/migrations/007_keyed_pair_quota.sql" with { type: "text" };
import down007 from "../../db/migrations/rollback/007_keyed_pair_quota.sql" with { type: "text" };
import up008 from "../../db/migrations/008_idempotent_claims.sql" with { type: "text" };
import down008 from "../../db/migrations/rollback/008_idempotent_claims.sql" with { type: "text" };
import up009 from "../../db/migrations/009_create_last_resort_coin.sql" with { type: "text" };
import down009 from "../../db/migrations/rollback/009_create_last_resort_coin.sql" with { type: "text" };
import up010 from "../../db/migrations/010_claimed_key_by_day.sql" with { type: "text" };
import down010 from "../../db/migrations/rollback/010_claimed_key_by_day.sql" with { type: "text" };
import up011 from "../../db/migrations/011_upload_key_conflict.sql" with { type: "text" };
import down011 from "../../db/migrations/rollback/011_upload_key_conflict.sql" with { type: "text" };
import up012 from "../../db/migrations/012_create_stock_watch.sql" with { type: "text" };
import down012 from "../../db/migrations/rollback/012_create_stock_watch.sql" with { type: "text" };
import up013 from "../../db/migrations/013_create_claim_refund.sql" with { type: "text" };
import down013 from "../../db/migrations/rollback/013_create_claim_refund.sql" with { type: "text" };
import up014 from "../../db/migrations/014_owner_keyed_tables.sql" with { type: "text" };
import down014 from "../../db/migrations/rollback/014_owner_keyed_tables.sql" with { type: "text" };
import up015 from "../../db/migrations/015_create_claim_key.sql" with { type: "text" };
import down015 from "../../db/migrations/rollback/015_create_claim_key.sql" with { type: "text" };
import up016 from "../../db/migrations/016_devices.sql" with { type: "text" };
import down016 from "../../db/migrations/rollback/016_devices.sql" with { type: "text" };
import up017 from "../../db/migrations/017_claim_moved_coin.sql" with { type: "text" };
import down017 from "../../db/migrations/rollback/017_claim_moved_coin.sql" with { type: "text" };

export interface Migration {
  version: number;
  description: string;
  /** The SQL that applies it, and the SQL that reverts it. */
  up: string;
  down: string;
}

/** `name` is the file name without `.sql`: NNN_description. */
const migration = (name: string, up: string, down: string): Migration =>
  ({ version: Number(name.slice(0, 3)), description: name.slice(4), up, down });

/** In version order. */
export const migrations: readonly Migration[] = [
  migration("001_create_coin_inventory", up001, down001),
  migration("002_create_claim_quota", up002, down002),
  migration("003_create_maintenance_tick", up003, down003),
  migration("004_coin_inventory_autovacuum", up004, down004),
  migration("005_blob_storage_external", up005, down005),
  migration("006_create_claimed_key", up006, down006),
  migration("007_keyed_pair_quota", up007, down007),
  migration("008_idempotent_claims", up008, down008),
  migration("009_create_last_resort_coin", up009, down009),
  migration("010_claimed_key_by_day", up010, down010),
  migration("011_upload_key_conflict", up011, down011),
  migration("012_create_stock_watch", up012, down012),
  migration("013_create_claim_refund", up013, down013),
  migration("014_owner_keyed_tables", up014, down014),
  migration("015_create_claim_key", up015, down015),
  migration("016_devices", up016, down016),
  migration("017_claim_moved_coin", up017, down017),
];
