ALTER TABLE claimed_key ADD COLUMN claimed_at timestamptz;
UPDATE claimed_key SET claimed_at = claimed_on::timestamp AT TIME ZONE 'UTC';
ALTER TABLE claimed_key ALTER COLUMN claimed_at SET NOT NULL;
DROP INDEX IF EXISTS claimed_key_claimed_on;
ALTER TABLE claimed_key DROP COLUMN claimed_on;
CREATE INDEX claimed_key_claimed_at ON claimed_key (claimed_at);
