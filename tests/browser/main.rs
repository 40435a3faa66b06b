//! The web UI: HTTP-level checks of every page (headers, redirects, assets; always run) and
//! end-to-end scenarios in real Chromium driven through chromedriver (skipped loudly when
//! Chromium is missing, a failure with LATCHKEY_TEST_REQUIRE_ALL=1).
//!
//! `LATCHKEY_SCREENSHOTS=1 cargo test --test browser` also rewrites docs/screenshots/*.png.

#[path = "../support/mod.rs"]
mod support;

mod harness;
mod helpers;

mod admin_flow;
mod directory;
mod errors;
mod pages;
