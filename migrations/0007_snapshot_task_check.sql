-- What a poll learned of the series' latest finished scan task (scan_failures): the task and its failed clusters or
-- files, as JSON; NULL when the poll did not check. Stored with the snapshot so replay sees exactly what live saw.
ALTER TABLE snapshots ADD COLUMN task_json TEXT;
-- A series' latest check, found without walking its history (a process that starts reads it once per series).
CREATE INDEX snapshots_task_checks ON snapshots (series_id, polled_at) WHERE task_json IS NOT NULL;
