-- Alert state per (series, rule), keyed by a stable fingerprint. Updated in the same transaction as the snapshot
-- that caused the change.
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    series_id INTEGER NOT NULL REFERENCES series (id),
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    since BIGINT,
    breach_started BIGINT,
    ok_since BIGINT,
    last_notified_at BIGINT,
    acked BOOLEAN NOT NULL DEFAULT FALSE,
    ack_comment TEXT,
    summary TEXT NOT NULL DEFAULT '',
    value TEXT NOT NULL DEFAULT '',
    -- the snapshot this state was last evaluated on: evaluation never runs twice for one snapshot
    evaluated_snapshot_id BIGINT
);
CREATE INDEX alerts_state ON alerts (state);

-- Every transition, in order. No foreign key to snapshots: retention may prune the snapshot, the log stays.
CREATE TABLE alert_transitions (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    snapshot_id BIGINT,
    at BIGINT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    event TEXT,
    summary TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX alert_transitions_alert ON alert_transitions (alert_id, at);

-- Silences: label matchers (JSON object of label -> glob) over a time range.
CREATE TABLE silences (
    id INTEGER PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX silences_ends ON silences (ends_at);
