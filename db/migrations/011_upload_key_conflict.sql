-- Raised by the upload statement when a key_id is already stored (or arrives twice in the
-- batch) with other content: the whole statement, and so the whole upload, is rolled back.
-- The statement reads the committed row it conflicts with (ON CONFLICT DO UPDATE locks it), so
-- of two concurrent uploads of one key_id with different content exactly one is stored.
-- SQLSTATE AQ409; DETAIL lists the key_ids, comma-separated.
CREATE FUNCTION aqm_key_conflict(key_ids text[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'key_id already used with other content'
        USING ERRCODE = 'AQ409', DETAIL = array_to_string(key_ids, ',');
END
$$;
