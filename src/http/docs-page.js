// Starts Swagger UI on /docs (served by http/openapi.ts, which sets the data-* attributes below).
// The upload example is static JSON: sent twice, its key_id would only count as a duplicate.
// So the page gives each example key_id a fresh UUID as the request leaves, and the example
// stores new coins every time it is executed. A coin's signature covers its key_id, so the page
// signs the freshly keyed coin again with the example identity key, whose private key is public:
// RFC 8032's first Ed25519 test vector (the key the PUT /v1/devices example registers). Without
// WebCrypto's Ed25519 (an old browser, or a page over plain HTTP on another host than localhost,
// which is no secure context) the example is sent as written: stored the first time, a duplicate
// after. Key ids a user typed are sent as typed.
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

  const fromHex = (hex) => Uint8Array.from(hex.match(/../g), (h) => parseInt(h, 16));
  const fromBase64 = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const toBase64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));

  // RFC 8032, section 7.1, TEST 1: the secret key (published), as PKCS #8 (RFC 8410's prefix, then the seed).
  const exampleSeed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
  let exampleKey;
  const exampleSigningKey = () => (exampleKey ??= crypto.subtle
    ? crypto.subtle.importKey("pkcs8", fromHex(`302e020100300506032b657004220420${exampleSeed}`), { name: "Ed25519" }, false, ["sign"]).catch(() => null)
    : Promise.resolve(null));

  // What a SILVER or BRONZE coin's Ed25519 signature covers (src/devices/signatures.ts, coinMessage).
  const coinMessage = (coin) => {
    const head = new TextEncoder().encode(`aqm-coin-v1:${coin.coin_category}:${coin.key_id}:`);
    const publicKey = fromBase64(coin.public_key_b64);
    const message = new Uint8Array(head.length + publicKey.length);
    message.set(head);
    message.set(publicKey, head.length);
    return message;
  };

  const freshExampleKeyIds = async (request) => {
    if (request.method !== "POST" || typeof request.body !== "string") return request;
    if (new URL(request.url, location.href).pathname !== config.uploadPath) return request;
    try {
      const body = JSON.parse(request.body);
      if (!Array.isArray(body?.coins)) return request;
      const examples = body.coins.filter((coin) => exampleKeyIds.has(coin?.key_id) && ["SILVER", "BRONZE"].includes(coin.coin_category));
      const key = examples.length > 0 ? await exampleSigningKey() : null;
      if (!key) return request;
      for (const coin of examples) {
        coin.key_id = randomUuid();
        coin.signature_b64 = toBase64(await crypto.subtle.sign("Ed25519", key, coinMessage(coin)));
      }
      request.body = JSON.stringify(body);
    } catch {
      // not JSON, or a public key that is not base64: sent as typed, and the server says what is wrong with it
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
