-- Each SSO login writes one to three audit rows in one statement, and that statement paid for
-- two things no row needed:
--
-- * `AUTOINCREMENT`, which reads and rewrites the table's `sqlite_sequence` row at every
--   insert. It only matters when the newest rows are deleted (their ids would be given again),
--   and audit rows are never deleted. Without it a new row takes the largest id plus one, as
--   before. SQLite cannot drop `AUTOINCREMENT` from a table, so the table is copied into a new
--   one with the same columns and ids, and its indexes are made again.
-- * four partial indexes of migration 0003 (failures, and skipped events, each by id and by
--   kind and id), each evaluated and opened at every insert though successes go into none of
--   them. Two partial indexes keyed by the outcome first serve the same queries: the list
--   adds `outcome <> 'success'` to its SQL for the other outcomes, since a planner only
--   chooses a partial index whose condition the query's text implies.
CREATE TABLE audit_events_new (
    id         INTEGER PRIMARY KEY,
    at         BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    outcome    TEXT   NOT NULL,
    reason     TEXT,
    actor_id   BIGINT,
    user_id    BIGINT,
    email      TEXT,
    ip         TEXT,
    request_id TEXT,
    details    TEXT   NOT NULL DEFAULT '{}'
);
INSERT INTO audit_events_new (id, at, kind, outcome, reason, actor_id, user_id, email, ip, request_id, details)
    SELECT id, at, kind, outcome, reason, actor_id, user_id, email, ip, request_id, details
    FROM audit_events ORDER BY id;
DROP TABLE audit_events;
ALTER TABLE audit_events_new RENAME TO audit_events;
CREATE INDEX audit_events_kind ON audit_events (kind, id);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
CREATE INDEX audit_events_outcome ON audit_events (outcome, id) WHERE outcome <> 'success';
CREATE INDEX audit_events_outcome_kind ON audit_events (outcome, kind, id) WHERE outcome <> 'success';
