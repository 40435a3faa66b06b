//! Forward-auth (`/auth/verify`) and `/metrics`: API-level tests on both backends, and an
//! end-to-end test with a real nginx (`auth_request`) in front of a small upstream.

#[path = "../support/mod.rs"]
mod support;

mod helpers;
mod metrics;
mod nginx;
mod nginx_harness;
mod verify;
