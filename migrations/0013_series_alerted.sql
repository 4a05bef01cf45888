-- Whether a series may have alert rows (issue 13): a poll reads the series' alerts only when `alerted` is true, so a
-- healthy series — most of a fleet — costs one statement less per poll. Exact from here on: a poll sets it from what
-- it read and saved (alert rows are never deleted), this migration from the rows stored so far, and a change of a
-- series' HSS coordinates (whose alerts are found by fingerprint) sets it again, by the trigger below.
ALTER TABLE series_state ADD COLUMN alerted BOOLEAN NOT NULL DEFAULT TRUE;

-- A series' alerts, for the poll that reads them (`fingerprint IN (…) OR series_id = ?`) and for this migration.
CREATE INDEX alerts_series ON alerts (series_id);

UPDATE series_state SET alerted = EXISTS (SELECT 1 FROM alerts a WHERE a.series_id = series_state.series_id);

-- Alerts are identified by the series' coordinates, not its row: a series moved to other coordinates may find alert
-- rows under its new fingerprints that another series left, so it reads its alerts again.
CREATE TRIGGER series_coordinates_changed AFTER UPDATE OF account, region, project_id, enterprise_project_id ON series
WHEN old.account IS NOT new.account OR old.region IS NOT new.region OR old.project_id IS NOT new.project_id
    OR old.enterprise_project_id IS NOT new.enterprise_project_id
BEGIN
    UPDATE series_state SET alerted = TRUE WHERE series_id = new.id;
END;
