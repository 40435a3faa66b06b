//! Latchkey: self-hosted JWT single sign-on, compatible with Metabase's JWT SSO.

pub mod alloc;
pub mod app;
pub mod auth;
pub mod clock;
pub mod commands;
pub mod doctor;
pub mod domain;
pub mod error;
pub mod example_idp;
pub mod http;
pub mod metrics;
pub mod settings;
pub mod sso;
pub mod store;
pub mod telemetry;
