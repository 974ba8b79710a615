DROP TABLE IF EXISTS claimed_key;
