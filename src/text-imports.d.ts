// Files imported `with { type: "text" }` (Bun and Deno both support it, and `bun build --compile`
// embeds them). Deno types these imports itself; this tells tsc.
declare module "*.sql" {
  const text: string;
  export default text;
}
declare module "swagger-ui-dist/swagger-ui.css" {
  const text: string;
  export default text;
}
declare module "swagger-ui-dist/swagger-ui-bundle.js" {
  const text: string;
  export default text;
}
declare module "*/docs-page.js" {
  const text: string;
  export default text;
}
