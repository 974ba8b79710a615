import { PayloadTooLargeError, ValidationError, type FieldError } from "../errors.ts";
import { decodedLength, type Coin } from "./model.ts";
import { tierShapes, wireLimits } from "./tiers.ts";

export type TierSizes = "strict" | "loose";

const list = (sizes: readonly number[]) => sizes.length === 1 ? `${sizes[0]}` : `${sizes.slice(0, -1).join(", ")} or ${sizes.at(-1)}`;

/**
 * Checks every blob's decoded size. Past the absolute limits it is 413 (with any setting);
 * with `strict` sizes a blob must also measure exactly what its tier's algorithm produces (422,
 * naming the field and the sizes expected). Nothing is written when either fails.
 */
export function checkShapes(coins: Coin[], sizes: TierSizes, prefix = "coins"): void {
  const tooLarge: FieldError[] = [];
  const wrong: FieldError[] = [];
  coins.forEach((coin, i) => {
    const shape = tierShapes[coin.coin_category];
    const blobs = [
      ["public_key_b64", decodedLength(coin.public_key_b64), wireLimits.publicKeyBytes, shape.publicKey, "public key"],
      ["signature_b64", decodedLength(coin.signature_b64), wireLimits.signatureBytes, shape.signature, "signature"],
    ] as const;
    for (const [field, bytes, max, expected, what] of blobs) {
      const name = `${prefix}[${i}].${field}`;
      if (bytes > max) tooLarge.push({ field: name, message: `decodes to more than ${max} bytes` });
      else if (sizes === "strict" && !expected.includes(bytes)) {
        wrong.push({ field: name, message: `decodes to ${bytes} bytes; a ${coin.coin_category} ${what} has ${list(expected)} bytes (${shape.names})` });
      }
    }
  });
  if (tooLarge.length) throw new PayloadTooLargeError(`${tooLarge.length} blob(s) are too large; nothing was written`, tooLarge);
  if (wrong.length) throw new ValidationError(`${wrong.length} blob(s) do not have their tier's size; nothing was written`, wrong);
}
