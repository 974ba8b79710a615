// The ML-DSA verifier thread that signatures.ts starts: one reply per request, in order.
import { verifyMlDsa, type VerifyReply, type VerifyRequest } from "./signatures.ts";

// Typed by hand: the worker's global scope is typed neither by bun-types nor by Deno's window lib.
const scope = globalThis as unknown as {
  onmessage: ((event: MessageEvent<VerifyRequest>) => void) | null;
  postMessage(reply: VerifyReply): void;
};

scope.onmessage = ({ data: { id, set, publicKey, messages, signatures } }) => {
  const valid = messages.map((message, i) => verifyMlDsa(set, publicKey, message, signatures[i] ?? new Uint8Array()));
  scope.postMessage({ id, valid });
};
