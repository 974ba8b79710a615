DROP FUNCTION IF EXISTS aqm_key_conflict(text[]);
