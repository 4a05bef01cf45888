-- What the rules need of each series' history (rules::SeriesState), updated by every snapshot's own transaction, so
-- evaluating a poll reads this one row instead of the rule windows' snapshots. A series without a row, or whose row
-- is behind its stored snapshots (a clock that went back), has it rebuilt from its snapshots when next needed: the
-- first poll of each series after this migration folds the history stored so far. Times are ms since the epoch.
CREATE TABLE series_state (
    series_id INTEGER PRIMARY KEY REFERENCES series (id),
    -- the newest polled_at among the series' stored snapshots; the state is current when it is last_polled_at
    max_polled_at BIGINT NOT NULL,
    first_polled_at BIGINT NOT NULL,
    last_polled_at BIGINT NOT NULL,
    first_ok_at BIGINT,
    last_ok_at BIGINT,
    -- the latest successful poll's numbers
    total_num BIGINT,
    running_num BIGINT,
    last_task_start_time BIGINT,
    -- failed polls in a row up to the newest one, and why the newest one failed
    failures BIGINT NOT NULL,
    error_kind TEXT,
    http_status INTEGER,
    error_code TEXT,
    error_message TEXT,
    -- stuck_running: when the current run began, and whether it reaches back to the first successful poll
    running_since BIGINT,
    running_from_first BOOLEAN NOT NULL,
    -- total_stalled: the first success after the total last grew, and the latest drop since
    grew_at BIGINT,
    dropped_from BIGINT,
    dropped_to BIGINT,
    -- scan_failures: the latest task check, as in snapshots.task_json
    task_json TEXT
);
