-- (PostgreSQL's 0003 also puts the membership id into its memberships_group index; SQLite's
-- index on group_id already ends with the row id, which is the membership id.)

-- The audit log filtered by outcome (GET /api/audit?outcome=, with or without kind=) reads a
-- range of an index instead of the whole table. Only failures and skipped events are indexed:
-- successes are nearly every row (each SSO login writes one to three), so they are found by
-- reading from the newest row on, and indexing them would cost every login. The list writes
-- the outcome into its SQL so that these partial indexes can be chosen.
CREATE INDEX audit_events_failures ON audit_events (id) WHERE outcome = 'failure';
CREATE INDEX audit_events_kind_failures ON audit_events (kind, id) WHERE outcome = 'failure';
CREATE INDEX audit_events_skipped ON audit_events (id) WHERE outcome = 'skipped';
CREATE INDEX audit_events_kind_skipped ON audit_events (kind, id) WHERE outcome = 'skipped';
