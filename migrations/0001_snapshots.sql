-- One row per polled series (a target and one task type). Names are the operator's handle; the other columns are
-- refreshed from the config on every start.
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    task_type TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    project_id TEXT NOT NULL,
    enterprise_project_id TEXT,
    UNIQUE (target, task_type)
);

-- One row per poll, success or failure. Times are milliseconds since the epoch (UTC).
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL REFERENCES series (id),
    polled_at BIGINT NOT NULL,
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
    -- false for a poll scanwatch recorded without calling HSS (an account backing off after rejected credentials)
    sent BOOLEAN NOT NULL DEFAULT TRUE
);

-- "latest N for a series" and "range for a series"
CREATE INDEX snapshots_series_time ON snapshots (series_id, polled_at);
-- "all series, last hour" and retention pruning
CREATE INDEX snapshots_time ON snapshots (polled_at);
