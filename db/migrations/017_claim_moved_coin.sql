-- Raised by the claim statement when a coin it picked was not updated: the coin was claimed and
-- given back (return.ts) after the statement's snapshot, so FOR UPDATE SKIP LOCKED locked its
-- newest version (in stock again), which the statement's UPDATE, reading under that older
-- snapshot, cannot see. Counted but not taken, it would be charged to the pair quota and missing
-- from the answer. serialization_failure: the statement rolls back and its claims run again, as
-- for any other lost race. DETAIL: how many coins were picked and not taken.
CREATE FUNCTION aqm_claim_moved(missed bigint) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a coin this claim picked changed after the claim began'
        USING ERRCODE = 'serialization_failure', DETAIL = missed::text || ' picked, not taken';
END
$$;
