//! Integration tests of the foundation: setup, users, groups, sessions, settings, audit.
//! Every test runs on SQLite and on PostgreSQL.

#[path = "../support/mod.rs"]
mod support;

mod foundation;
mod races;
