//! Integration tests of JWT single sign-on (SPEC §4, §5, §6): the start step, the callback
//! over GET, form POST and JSON, every reason code, crafted attack tokens, single use,
//! provisioning, group sync, the password-login switch, logout (front and back channel),
//! the admin dry run and the audit trail. Every test runs on SQLite and on PostgreSQL and
//! checks the status, the error code and the state left behind.

#[path = "../support/mod.rs"]
mod support;

mod helpers;

mod attacks;
mod audit;
mod dry_run;
mod errors;
mod flow;
mod group_sync;
mod logout;
mod password_switch;
mod provisioning;
mod replay;
