-- The same indexes as SQLite's migration 0005: the four partial indexes of migration 0003
-- (failures, and skipped events, each by id and by kind and id) become two keyed by the outcome
-- first, so that each audit row an SSO login writes is checked against two conditions instead
-- of four. The list adds `outcome <> 'success'` to its SQL for the other outcomes. (The table's
-- ids come from a sequence here, and stay as they are.)
DROP INDEX audit_events_failures;
DROP INDEX audit_events_kind_failures;
DROP INDEX audit_events_skipped;
DROP INDEX audit_events_kind_skipped;
CREATE INDEX audit_events_outcome ON audit_events (outcome, id) WHERE outcome <> 'success';
CREATE INDEX audit_events_outcome_kind ON audit_events (outcome, kind, id) WHERE outcome <> 'success';
