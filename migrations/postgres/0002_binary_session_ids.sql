-- Session ids are stored as the 32 bytes of their SHA-256 instead of 64 hex characters: the
-- key of the sessions index is half as long, so each of its pages holds about twice as many
-- (docs/performance.md). Sessions issued before keep working.

ALTER TABLE sessions ALTER COLUMN id_hash TYPE BYTEA USING decode(id_hash, 'hex');
