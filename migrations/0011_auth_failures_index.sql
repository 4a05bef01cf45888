-- The account's rejected-credential calls (error_kind 'auth', sent to HSS), by time: a credential backoff can only
-- be running if one of them is younger than the longest backoff (1 h), which this index answers by a short range
-- instead of merging the latest calls of each of the account's series (12 ms for 1,000 series).
CREATE INDEX snapshots_auth_failures ON snapshots (polled_at) WHERE error_kind = 'auth' AND sent;
