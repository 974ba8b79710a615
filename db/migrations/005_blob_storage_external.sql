-- Keys and signatures are random bytes: PostgreSQL's attempt to compress them before storing a
-- GOLD row's signature out of line always fails and only burns CPU. EXTERNAL keeps out-of-line
-- storage and skips the compression attempt.
ALTER TABLE coin_inventory
    ALTER COLUMN public_key_blob SET STORAGE EXTERNAL,
    ALTER COLUMN signature_blob SET STORAGE EXTERNAL;
