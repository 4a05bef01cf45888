-- Each series' snapshots stored together: the table is clustered by (series_id, polled_at), so a target's week is
-- ~60 consecutive pages instead of ~4,000 pages shared with every other series' rows (they were written interleaved
-- in time). Migrated in place: a new table, the rows copied, the old one dropped, the new one renamed, the indexes
-- made again. Snapshot ids stay what they were (alerts and transitions name them); new ones are the largest id + 1,
-- which the unique index finds at once.
CREATE TABLE snapshots_by_series (
    series_id INTEGER NOT NULL REFERENCES series (id),
    polled_at BIGINT NOT NULL,
    id INTEGER NOT NULL,
    ok BOOLEAN NOT NULL,
    total_num BIGINT,
    running_num BIGINT,
    last_task_start_time BIGINT,
    latency_ms BIGINT NOT NULL,
    http_status INTEGER,
    error_kind TEXT,
    error_code TEXT,
    error_message TEXT,
    request_id TEXT,
    sent BOOLEAN NOT NULL DEFAULT TRUE,
    task_json TEXT,
    PRIMARY KEY (series_id, polled_at, id)
) WITHOUT ROWID;

INSERT INTO snapshots_by_series (series_id, polled_at, id, ok, total_num, running_num, last_task_start_time,
                                 latency_ms, http_status, error_kind, error_code, error_message, request_id, sent,
                                 task_json)
SELECT series_id, polled_at, id, ok, total_num, running_num, last_task_start_time, latency_ms, http_status,
       error_kind, error_code, error_message, request_id, sent, task_json
FROM snapshots ORDER BY series_id, polled_at, id;

DROP TABLE snapshots;
ALTER TABLE snapshots_by_series RENAME TO snapshots;

-- `snapshots_series_time` is the primary key now.
CREATE UNIQUE INDEX snapshots_id ON snapshots (id);
CREATE INDEX snapshots_time ON snapshots (polled_at);
CREATE INDEX snapshots_task_checks ON snapshots (series_id, polled_at) WHERE task_json IS NOT NULL;
CREATE INDEX snapshots_auth_failures ON snapshots (polled_at) WHERE error_kind = 'auth' AND sent;
