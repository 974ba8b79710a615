DROP TABLE IF EXISTS claim_refund;
