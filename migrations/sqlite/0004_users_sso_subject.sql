-- Back-channel logout by `sub` (POST /auth/sso/logout) finds the accounts whose last SSO
-- login carried that subject through this index instead of reading every user. Only
-- accounts that have a subject are in it, so users created without one cost nothing.
CREATE INDEX users_sso_subject ON users (sso_subject) WHERE sso_subject IS NOT NULL;
