-- Alertmanager-style grouping: a notification is one group of a channel (its `group_by` labels, `{}` for one group
-- per channel), and lists the group's alerts that still fire beside the ones that changed. Those are found from the
-- latest notice each alert had on the channel, hence the index.
ALTER TABLE notifications ADD COLUMN group_labels TEXT NOT NULL DEFAULT '{}';
CREATE INDEX notices_channel_fingerprint ON notices (channel, fingerprint, id);
