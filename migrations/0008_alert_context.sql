-- The task behind an alert as its latest notification carried it (which task, which clusters failed and why), for
-- `alerts --format json` and /api/v1/alerts; NULL when none was fetched.
ALTER TABLE alerts ADD COLUMN context_json TEXT;
