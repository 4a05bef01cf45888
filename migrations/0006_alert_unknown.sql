-- When a rule began answering unknown while an alert's pending_for or resolve_after clock was running: the unknown
-- stretch counts toward neither, so the clock moves forward by it once the rule is known again. NULL when no such
-- stretch is in progress (every existing row).
ALTER TABLE alerts ADD COLUMN unknown_since BIGINT;
