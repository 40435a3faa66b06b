-- The audit events of one kind are found through a chain instead of the `(kind, id)` index.
--
-- Each login appends its events to the ranges of their kinds in that index: ranges in the
-- middle of the index, where SQLite splits a full page in two and rebalances it with its
-- neighbours instead of starting a new one at the end. Of the pages a batch of returning logins
-- wrote to the log, about a quarter were that index's. Instead each event names the previous
-- event of the same kind (`kind_prev`, 0 for the first) and `audit_kinds` names the newest of
-- each kind, a table of a few rows on one page. Listing a kind's events follows the chain
-- from the newest one, a look-up by id for each event, as a user's events are listed
-- (migration 0006).
--
-- Every insert of an event writes both (the SSO login's writer and `queries.rs::insert_audit`).
-- The partial indexes by outcome and kind (migration 0005) stay: they hold only the events
-- that are not successes, and list those.
ALTER TABLE audit_events ADD COLUMN kind_prev BIGINT;

UPDATE audit_events SET kind_prev = chained.prev
    FROM (SELECT id, COALESCE(lag(id) OVER (PARTITION BY kind ORDER BY id), 0) AS prev
          FROM audit_events) AS chained
    WHERE audit_events.id = chained.id;

CREATE TABLE audit_kinds (
    kind    TEXT   PRIMARY KEY,
    last_id BIGINT NOT NULL
) WITHOUT ROWID;
INSERT INTO audit_kinds (kind, last_id) SELECT kind, max(id) FROM audit_events GROUP BY kind;

DROP INDEX audit_events_kind;
