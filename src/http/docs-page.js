// Starts Swagger UI on /docs (served by http/openapi.ts, which sets the data-* attributes below).
// The upload example is static JSON: sent twice, its key_id would only count as a duplicate.
// So the page gives each example key_id a fresh UUID as the request leaves, and the example
// stores new coins every time it is executed. Key ids a user typed are sent as typed.
(() => {
  const config = document.currentScript.dataset;
  const exampleKeyIds = new Set(JSON.parse(config.exampleKeyIds));

  // crypto.randomUUID() exists only in secure contexts; a page on http://host:3000 is not one.
  const randomUuid = () => {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  };

  const freshExampleKeyIds = (request) => {
    if (request.method !== "POST" || typeof request.body !== "string") return request;
    if (new URL(request.url, location.href).pathname !== config.uploadPath) return request;
    try {
      const body = JSON.parse(request.body);
      if (!Array.isArray(body?.coins)) return request;
      for (const coin of body.coins) if (exampleKeyIds.has(coin?.key_id)) coin.key_id = randomUuid();
      request.body = JSON.stringify(body);
    } catch {
      // not JSON: sent as typed, and the server says what is wrong with it
    }
    return request;
  };

  window.ui = SwaggerUIBundle({
    url: config.spec,
    dom_id: "#swagger-ui",
    persistAuthorization: true,
    validatorUrl: null,
    requestInterceptor: freshExampleKeyIds,
  });
})();
