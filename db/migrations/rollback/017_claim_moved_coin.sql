DROP FUNCTION IF EXISTS aqm_claim_moved(bigint);
