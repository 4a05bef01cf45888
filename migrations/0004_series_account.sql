-- The rate budget and the credential backoff read an account's recent calls through its series: without this index
-- every account's lookup scanned the whole series table (10,000 series × 2,000 accounts at start-up).
CREATE INDEX series_account ON series (account);
