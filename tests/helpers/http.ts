import { request as httpRequest } from "node:http";

/**
 * A POST with a bearer token and an Idempotency-Key on a new connection (node:http never sends a
 * request twice, as fetch may); a network error is status 0.
 */
export function postKeyed(url: string, token: string, key: string, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = httpRequest(url, {
      method: "POST", agent: false,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json", "idempotency-key": key },
    }, (res) => {
      let text = "";
      res.on("data", (chunk) => (text += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on("error", () => resolve({ status: 0, body: "" }));
    });
    req.on("error", () => resolve({ status: 0, body: "" }));
    req.end(body);
  });
}
