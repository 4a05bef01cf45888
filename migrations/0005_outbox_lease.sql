-- A claim on a pending notification: the process named by `lease_owner` is sending it until `lease_until` (ms
-- since the epoch), and every other dispatcher on this database leaves it alone until then — or until that process
-- is gone. Two processes on one database (`run` and a timer's `poll`) used to send the same notification twice.
-- Recording the attempt, giving up or deferring clears the claim.
ALTER TABLE notifications ADD COLUMN lease_until BIGINT;
ALTER TABLE notifications ADD COLUMN lease_owner TEXT;
