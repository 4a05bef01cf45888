-- The outbox. A transition writes one notice per matching channel in the same transaction as its snapshot and
-- alert state; sealing groups a channel's unsent notices into one notification (one message); the dispatcher
-- delivers notifications at least once and records every attempt.
CREATE TABLE notices (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    event TEXT NOT NULL,
    -- the AlertNotice as JSON: what the message says, frozen at the transition
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- set when a silence matched at the transition: recorded, never sent
    suppressed BOOLEAN NOT NULL DEFAULT FALSE,
    notification_id BIGINT REFERENCES notifications (id)
);
CREATE INDEX notices_unsealed ON notices (notification_id, channel);

CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    -- stable across retries: the Standard Webhooks webhook-id, the email Message-ID seed
    uid TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    fingerprints TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    delivered_at BIGINT,
    last_error TEXT
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);

CREATE TABLE delivery_attempts (
    id INTEGER PRIMARY KEY,
    notification_id BIGINT NOT NULL REFERENCES notifications (id),
    at BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    duration_ms BIGINT NOT NULL
);
CREATE INDEX delivery_attempts_notification ON delivery_attempts (notification_id);

-- A firing notice that a silence suppressed: when the silence ends and the alert still fires, it goes out then.
ALTER TABLE alerts ADD COLUMN firing_suppressed BOOLEAN NOT NULL DEFAULT FALSE;
