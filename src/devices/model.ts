import { t, type Static } from "elysia";
import { MAX_DEVICE_ID } from "../auth/jwt.ts";
import { base64Pattern, exampleIdentityKey, Uuid } from "../coins/model.ts";
import { DeviceStateError, DigestMismatchError, ForbiddenError, NotFoundError, ValidationError } from "../errors.ts";
import { namedExamples } from "../http/openapi.ts";
import { ed25519Sizes, mlDsaSets, mlDsaSizes } from "./signatures.ts";

/**
 * The Ed25519 public key of RFC 8032, TEST 1: a real key, so the documented example registers as
 * shown; the documented coins are signed by it (coins/model.ts, exampleCoin).
 */
export const exampleEd25519 = exampleIdentityKey;
/** The digest of a device the server holds nothing for (digest.ts): what a fresh device sends. */
export const exampleDigest = "c/rtpcs1C7uX6JwzGsnp0XEn7G/iKa60ipjJKjS8s14=";
/**
 * The digest of a device holding the example key (exampleEd25519) and no ML-DSA key nor
 * last-resort coin: what the documented examples leave your device holding, register → upload →
 * claim (none of which stores a last-resort coin). tests/api.docs.test.ts computes it again.
 */
export const exampleKeyedDigest = "9WHWbhYOfzAIzA9xUnaDK9H7Ot3zQfTOIVzTqzs4unw=";

export const deviceIdMessage = `must be an integer from 1 to ${MAX_DEVICE_ID}`;

export const DeviceParams = t.Object({
  device_id: t.Integer({
    minimum: 1, maximum: MAX_DEVICE_ID, error: { message: deviceIdMessage }, examples: [1],
    description: "A device of the token's user (its `dev` claim names the token's own device; 1 when it has none)",
  }),
});

export const UserParams = t.Object({ user_id: Uuid });

const mlDsaSetMessage = `must be ${mlDsaSets.slice(0, -1).join(", ")} or ${mlDsaSets.at(-1)}`;
export const MlDsaSetSchema = t.Union([t.Literal(mlDsaSets[0]), t.Literal(mlDsaSets[1]), t.Literal(mlDsaSets[2])], {
  error: { message: mlDsaSetMessage },
  description: `The ML-DSA parameter set of ml_dsa_b64 (public keys of ${mlDsaSets.map((s) => `${mlDsaSizes[s].publicKey.toLocaleString("en")} B`).join(" / ")})`,
});

export const ed25519Message = `must be the ${ed25519Sizes.publicKey}-byte Ed25519 public key, standard base64 with padding`;
const mlDsaMaxChars = Math.ceil(Math.max(...mlDsaSets.map((s) => mlDsaSizes[s].publicKey)) / 3) * 4;

export const RegisterBody = t.Object({
  ed25519_b64: t.String({
    minLength: 4, maxLength: Math.ceil(ed25519Sizes.publicKey / 3) * 4, pattern: base64Pattern, error: { message: ed25519Message },
    description: "The device's Ed25519 identity key (32 B): SILVER and BRONZE coins it uploads are signed with it",
  }),
  ml_dsa_b64: t.Optional(t.String({
    minLength: 4, maxLength: mlDsaMaxChars, pattern: base64Pattern,
    error: { message: "must be an ML-DSA public key of the set named in ml_dsa, standard base64 with padding" },
    description: "The device's ML-DSA identity key: GOLD coins it uploads are signed with it. Sent with ml_dsa, or not at all",
  })),
  ml_dsa: t.Optional(MlDsaSetSchema),
}, {
  additionalProperties: false,
  description: "The device's public identity keys; coins it uploads are verified against them",
  examples: [{ ed25519_b64: exampleEd25519 }],
});

export const RegisterResult = t.Object({
  device_id: t.Integer({ minimum: 1, maximum: MAX_DEVICE_ID }),
  replaced: t.Boolean({ description: "Other keys were registered before (and are replaced)" }),
  coins_deleted: t.Integer({ minimum: 0, description: "Unclaimed and last-resort coins of the device deleted because its keys changed" }),
}, { examples: [{ device_id: 1, replaced: false, coins_deleted: 0 }] });

export const DeviceInfo = t.Object({
  device_id: t.Integer({ minimum: 1, maximum: MAX_DEVICE_ID }),
  // served as stored: validated on the way in
  ed25519_b64: t.Optional(t.String({ contentEncoding: "base64", description: "Ed25519 identity key, standard base64" })),
  ml_dsa_b64: t.Optional(t.String({ contentEncoding: "base64", description: "ML-DSA identity key, standard base64" })),
  ml_dsa: t.Optional(MlDsaSetSchema),
}, { description: "A device; without key fields while it has registered none" });

export const DeviceList = t.Object({
  devices: t.Array(DeviceInfo, { description: "The user's devices, by device_id; none for an unknown user" }),
}, { examples: [{ devices: [{ device_id: 1, ed25519_b64: exampleEd25519 }, { device_id: 2 }] }] });

export const DeleteResult = t.Object({
  coins_deleted: t.Integer({ minimum: 0, description: "Unclaimed and last-resort coins of the device deleted with it" }),
}, { examples: [{ coins_deleted: 16 }] });

export const ResetResult = t.Object({
  deleted: t.Integer({ minimum: 0, description: "Unclaimed and last-resort coins of the token's device deleted" }),
}, { examples: [{ deleted: 16 }] });

const digestMessage = "must be a 32-byte SHA-256 digest, standard base64 with padding (44 characters)";

export const CheckBody = t.Object({
  digest_b64: t.String({
    // 32 bytes: 43 characters and one '=', the last character's unused bits zero
    pattern: "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$",
    error: { message: digestMessage },
    description: "SHA-256 over what the device believes the server holds for it (see the route's description)",
  }),
}, {
  additionalProperties: false,
  ...namedExamples({
    "the example key registered": { digest_b64: exampleKeyedDigest },
    "nothing held (a new device)": { digest_b64: exampleDigest },
  }),
});

export const CheckResult = t.Object({ match: t.Literal(true) }, { examples: [{ match: true }] });

/** The documented examples of the errors only the device routes answer with (the others are the coin routes' and http/openapi.ts's). */
export const deviceProblemExamples = {
  notOwnDevice: new ForbiddenError("device_id must be the token's own device (1); a token acts for one device only"),
  deviceLimit: new DeviceStateError("This user already has 10 devices, the most this server allows (AQM_MAX_DEVICES=10); remove one with DELETE /v1/devices/{id} first"),
  badKey: new ValidationError("The request body is invalid: ed25519_b64", [{ field: "ed25519_b64", message: ed25519Message }]),
  badDeviceId: new ValidationError("The request params is invalid: device_id", [{ field: "device_id", message: deviceIdMessage }]),
  badUserId: new ValidationError("The request params is invalid: user_id", [{ field: "user_id", message: "must be a UUID" }]),
  noDevice: new NotFoundError("This user has no device 2"),
  mismatch: new DigestMismatchError(),
  badDigest: new ValidationError("The request body is invalid: digest_b64", [{ field: "digest_b64", message: digestMessage }]),
};

export type RegisterBody = Static<typeof RegisterBody>;
export type DeviceInfo = Static<typeof DeviceInfo>;
