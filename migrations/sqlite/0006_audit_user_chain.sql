-- The audit events of one user are found through a chain instead of an index by user.
--
-- The `(user_id, id)` index put each new event next to the same user's older ones, so every
-- returning login changed one page of it per user in the batch, a page the commit then wrote
-- to the log and a checkpoint later copied: left out, returning logins ran at 1.5 times the
-- rate. Instead each event names the same user's previous one (`user_prev`, 0 for the first)
-- and each user names their newest (`users.last_event_id`). Both are written on pages a login
-- changes anyway: the new event's, which is the table's last, and the user's own row. Listing
-- a user's events follows the chain from the newest one, a look-up by id for each event,
-- so it costs what reading through the index did.
--
-- Every insert of an event about a user writes both (the SSO login's writer and
-- `queries.rs::insert_audit`). Not a trigger: a table with a row trigger makes SQLite gather
-- a multi-row insert's rows in a temporary table first, and that alone cost the login more
-- than the index did.
ALTER TABLE users ADD COLUMN last_event_id BIGINT;
ALTER TABLE audit_events ADD COLUMN user_prev BIGINT;

UPDATE audit_events SET user_prev = chained.prev
    FROM (SELECT id, COALESCE(lag(id) OVER (PARTITION BY user_id ORDER BY id), 0) AS prev
          FROM audit_events WHERE user_id IS NOT NULL) AS chained
    WHERE audit_events.id = chained.id;
UPDATE users SET last_event_id = (SELECT max(id) FROM audit_events WHERE user_id = users.id);

DROP INDEX audit_events_user;
