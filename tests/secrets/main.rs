//! Secrets at rest and `latchkey doctor`: the shared secret is stored sealed under
//! `LATCHKEY_ENCRYPTION_KEY` and SSO keeps working; a server without the key, or with
//! another one, refuses to start; `settings rotate-encryption-key` re-encrypts (and switches
//! encryption on); `doctor` reports each finding of a healthy and a broken deployment with
//! the right exit code. In-process tests on both backends, and the real binary as operators
//! run it.

#[path = "../support/mod.rs"]
mod support;

// The real-binary harness of tests/cli (this binary uses only part of it).
#[allow(dead_code)]
#[macro_use]
#[path = "../cli/harness.rs"]
mod harness;

mod at_rest;
mod doctor;
mod helpers;
mod rotation;
