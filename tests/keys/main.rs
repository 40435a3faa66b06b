//! Integration tests of the asymmetric algorithms and JWKS (SPEC §3 `jwt-algorithms`,
//! `jwt-public-keys`, `jwt-jwks-uri`; §4.3): every algorithm signs in with its key, key
//! confusion and key-injection attempts fail, JWKS rotation, outage and unknown-`kid` floods
//! against a loopback JWKS server, and the Wycheproof ECDSA/EdDSA vectors through the
//! verifier's signature step. Tests that touch a database run on SQLite and PostgreSQL.
//!
//! The keys are the test-only keys of `tests/fixtures/keys`.

#[path = "../support/mod.rs"]
mod support;

mod helpers;

mod algorithms;
mod confusion;
mod jwks;
mod wycheproof_vectors;
