-- claimed_key kept each claim's time to the microsecond for the purge age, which with a request
-- log (requester + time) tied coins to their claimers. A day is all the purge needs.
ALTER TABLE claimed_key ADD COLUMN claimed_on date;
UPDATE claimed_key SET claimed_on = (claimed_at AT TIME ZONE 'UTC')::date;
ALTER TABLE claimed_key ALTER COLUMN claimed_on SET NOT NULL;
DROP INDEX IF EXISTS claimed_key_claimed_at;
ALTER TABLE claimed_key DROP COLUMN claimed_at;
CREATE INDEX claimed_key_claimed_on ON claimed_key (claimed_on);
