//! Reliability and security proofs that need more than a unit test (SPEC §8,
//! research/security.md §2 and §5):
//!
//! * `redirect_diff` — differential test of `return_to` validation against Node's WHATWG
//!   `URL` (what browsers do with a `Location`), ≥ 10,000 generated inputs plus every
//!   payload of security.md §2.3;
//! * `crash_sqlite` — the real binary on SQLite under a login storm, SIGKILLed at random
//!   moments ≥ 20 times: integrity, durability of every acknowledged login, no partial rows;
//! * `pg_faults` — PostgreSQL stopped and started under load (a dedicated cluster): every
//!   answer is a success or 503 `database_unavailable`, no hang, recovery without restart;
//!   and the same cluster reached through its Unix socket;
//! * `load` — 30 s of mixed traffic over 256 connections against the real binary: no 5xx,
//!   bounded memory.
//!
//! Each test prints its figures straight to stderr (visible without `--nocapture`); the
//! heavy ones run one at a time (see [`harness::heavy`]) so they do not distort each other
//! on a 2-core CI machine.

#[path = "../support/mod.rs"]
mod support;

mod harness;

mod crash_sqlite;
mod load;
mod pg_faults;
mod redirect_diff;
