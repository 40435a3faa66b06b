//! End-to-end tests of the real `latchkey` binary: each test starts it as a child process
//! (server, example IdP, one-shot commands) on a throwaway SQLite or PostgreSQL database and
//! talks to it over loopback HTTP, as scripts and operators do (SPEC §1, §5, §7).

#[path = "../support/mod.rs"]
mod support;

#[macro_use]
mod harness;

mod admin;
mod idp;
mod misc;
mod serve;
mod settings;
mod token;
