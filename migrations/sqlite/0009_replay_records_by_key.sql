-- The replay records are one B-tree, ordered by their key, instead of three: the table by row
-- id, its index by key, and the index by expiry.
--
-- Each SSO login inserts one record, and each of those B-trees took a page of every batch of
-- logins that the commit wrote to the log and a checkpoint later copied: a tenth of a batch's
-- pages in the benchmark of returning logins (docs/performance.md). The key is what a login
-- looks a record up by; the index by expiry served only the sweep of expired records, which
-- now reads the table in the key's order instead, a range at a time, once an hour instead of
-- every minute (`queries.rs::sweep_replay_records`, docs/decisions.md). PostgreSQL keeps its
-- index.
CREATE TABLE replay_records_by_key (
    token_key  TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
) WITHOUT ROWID;
INSERT INTO replay_records_by_key (token_key, expires_at)
    SELECT token_key, expires_at FROM replay_records WHERE token_key IS NOT NULL ORDER BY token_key;
DROP TABLE replay_records;
ALTER TABLE replay_records_by_key RENAME TO replay_records;
