import { OptionalKind } from "@sinclair/typebox";
import type { AppError } from "../errors.ts";
import { problemOf, problemTypes } from "./problems.ts";

/* The corrections applied to what @elysiajs/openapi generates, so the document says exactly what the server does. */

type Schema = Record<string, any>;
/** What the document needs of a route: Elysia's route records carry the hooks with the original schemas. */
interface Route {
  method: string;
  path: string;
  hooks?: Schema;
}

/** Keys under which a schema holds further schemas. */
const schemaMaps = ["properties", "patternProperties", "$defs"] as const;
const schemaLists = ["anyOf", "oneOf", "allOf", "prefixItems"] as const;
const schemaValues = ["items", "additionalProperties", "not", "contains"] as const;

/** Applies `fix` to a schema and every schema inside it, innermost first. */
function mapSchema(schema: Schema, fix: (s: Schema) => Schema): Schema {
  if (!schema || typeof schema !== "object") return schema;
  const out: Schema = { ...schema };
  for (const key of schemaMaps) {
    if (out[key]) out[key] = Object.fromEntries(Object.entries(out[key] as Schema).map(([k, v]) => [k, mapSchema(v, fix)]));
  }
  for (const key of schemaLists) if (Array.isArray(out[key])) out[key] = out[key].map((s: Schema) => mapSchema(s, fix));
  for (const key of schemaValues) if (out[key] && typeof out[key] === "object") out[key] = mapSchema(out[key], fix);
  return fix(out);
}

/**
 * Elysia's t.Integer also accepts a numeric string (for query strings): the generator shows it as
 * `anyOf: [string, integer]`. On the wire of this API every such number is a JSON integer.
 */
function collapseNumericString(schema: Schema): Schema {
  const variants = schema.anyOf as Schema[] | undefined;
  if (variants?.length !== 2) return schema;
  const text = variants.find((v) => v.type === "string" && (v.format === "integer" || v.format === "numeric"));
  const number = variants.find((v) => v.type === "integer" || v.type === "number");
  if (!text || !number) return schema;
  const { anyOf: _, ...outer } = schema;
  return { ...outer, ...number };
}

/** `error: { message, field }` is the server's own keyword for field messages (http/problems.ts), not JSON Schema. */
function withoutErrorKeyword(schema: Schema): Schema {
  const { error: _, ...rest } = schema;
  return rest;
}

const cleanSchema = (schema: Schema) => mapSchema(schema, (s) => collapseNumericString(withoutErrorKeyword(s)));

/**
 * The generator turns a union of literals into `{ type, enum }` and drops its description and
 * default: they are copied back from the route's own schema.
 */
function restoreEnumAnnotations(original: Schema | undefined, generated: Schema | undefined): void {
  if (!original || !generated) return;
  if (Array.isArray(generated.enum) && Array.isArray(original.anyOf)) {
    for (const key of ["description", "default", "examples"]) {
      if (original[key] !== undefined && generated[key] === undefined) generated[key] = original[key];
    }
  }
  for (const [name, child] of Object.entries((generated.properties ?? {}) as Schema)) restoreEnumAnnotations(original.properties?.[name], child);
  if (generated.items) restoreEnumAnnotations(original.items, generated.items);
}

/** Schema key under which namedExamples() (openapi.ts) gives the names of a schema's `examples`, in order. */
export const exampleNames = "x-example-names";

/** Response schema key under which problemExample() (openapi.ts) carries a route's own example of an error status. */
export const routeProblemExample = Symbol.for("aqm.problemExample");

const named = (entries: [string, { summary?: string; value: unknown }][]) => Object.fromEntries(entries);

/**
 * A media type object with the schema's examples as the media type's (what Swagger UI shows and
 * Redocly checks): its first example as `example`; named ones (namedExamples) as `examples`, by
 * name; and a union (anyOf) without examples of its own gets one named example per variant, named
 * by the variant's title, summarised by its description.
 */
function withExample(media: Schema): Schema {
  const { [exampleNames]: names, ...schema } = cleanSchema(media.schema);
  if (Array.isArray(schema.examples)) {
    const { examples, ...rest } = schema;
    if (!Array.isArray(names) || examples.length < 2) return { ...media, schema: rest, example: examples[0] };
    return { ...media, schema: rest, examples: named(examples.map((value: unknown, i: number) => [names[i] ?? `example ${i + 1}`, { value }])) };
  }
  const variants = schema.anyOf as Schema[] | undefined;
  if (variants?.length && variants.every((v) => Array.isArray(v.examples) && v.examples.length > 0)) {
    return {
      ...media, schema,
      examples: named(variants.map((v, i) => [v.title ?? `variant ${i + 1}`, { ...(v.description ? { summary: v.description } : {}), value: v.examples[0] }])),
    };
  }
  return { ...media, schema };
}

function problemResponse(status: number, examples: Record<number, AppError>, own?: AppError): Schema {
  const error = own ?? examples[status];
  if (!error) throw new Error(`no problem example for status ${status} (http/openapi.ts)`);
  if (problemTypes[error.kind]?.status !== status) throw new Error(`the example of status ${status} is a ${error.kind} problem, which is not answered with ${status}`);
  const { problem } = problemOf(error);
  return {
    description: problemTypes[error.kind]!.title,
    content: { "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" }, example: problem } },
  };
}

export interface DocumentOptions {
  /** The schema of every problem response (marked by its description). */
  problemSchema: Schema;
  /** One problem per status: the example each error response shows. */
  problemExamples: Record<number, AppError>;
}

/**
 * The generated document, corrected: integers are integers; errors are application/problem+json
 * with one example per status (the route's own, else the status's); every schema example becomes
 * its media type's example (named ones, and a union's per variant, its named examples); a required
 * parameter's example is pre-filled by Swagger UI; bodies the route accepts without are optional;
 * the Authorization header is not a parameter (OpenAPI ignores it; the security scheme covers it).
 */
export function exactDocument(generated: Schema, routes: readonly Route[], { problemSchema, problemExamples }: DocumentOptions): Schema {
  const doc = structuredClone(generated);
  for (const [path, operations] of Object.entries(doc.paths as Record<string, Record<string, Schema>>)) {
    for (const [method, operation] of Object.entries(operations)) {
      // (Elysia's `/v1/devices/:device_id` is the document's `/v1/devices/{device_id}`)
      const hooks = routes.find((r) => r.path.replace(/:(\w+)/g, "{$1}") === path && r.method.toLowerCase() === method)?.hooks ?? {};
      if (operation.parameters) {
        const parameters = (operation.parameters as Schema[])
          .filter((p) => !(p.in === "header" && String(p.name).toLowerCase() === "authorization"))
          .map((p) => {
            const schema = cleanSchema(p.schema);
            if (p.in === "query") restoreEnumAnnotations(hooks.query?.properties?.[p.name], schema);
            return p.required && Array.isArray(schema.examples) ? { ...p, schema, example: schema.examples[0] } : { ...p, schema };
          });
        if (parameters.length) operation.parameters = parameters;
        else delete operation.parameters;
      }
      if (operation.requestBody) {
        const body = operation.requestBody as Schema;
        for (const [type, media] of Object.entries(body.content as Record<string, Schema>)) {
          body.content[type] = withExample(media);
          restoreEnumAnnotations(hooks.body, body.content[type].schema);
        }
        if (hooks.body && OptionalKind in hooks.body) body.required = false;
      }
      for (const [status, response] of Object.entries((operation.responses ?? {}) as Record<string, Schema>)) {
        const json = response.content?.["application/json"];
        if (json?.schema?.description === problemSchema.description) {
          operation.responses[status] = problemResponse(Number(status), problemExamples, hooks.response?.[status]?.[routeProblemExample]);
          continue;
        }
        for (const [type, media] of Object.entries((response.content ?? {}) as Record<string, Schema>)) {
          response.content[type] = withExample(media);
          restoreEnumAnnotations(hooks.response?.[status], response.content[type].schema);
        }
      }
    }
  }
  doc.components = { ...doc.components, schemas: { ...doc.components?.schemas, Problem: cleanSchema(problemSchema) } };
  return doc;
}
