DROP TABLE IF EXISTS claim_quota;
