//! One error enum for the whole service. Every variant has a stable machine-readable code
//! and an HTTP status; `http::respond` turns it into JSON for API clients or an HTML page
//! for browsers. Internals (SQL text, I/O errors) are logged with the request id and never
//! sent to clients.

use axum::http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Single sign-on is not set up yet. Ask an administrator to enable and configure JWT SSO."
    )]
    SsoNotConfigured,
    #[error(
        "The redirect target is not allowed. Only paths on this site and allowed origins can be used."
    )]
    InvalidRedirect,
    #[error("{message}")]
    Validation { field: String, message: String },
    #[error("{0}")]
    Token(TokenFailure),
    #[error("That email address and password do not match an account that can sign in.")]
    InvalidCredentials,
    #[error("Password sign-in is turned off. Use \"Sign in with SSO\" instead.")]
    PasswordLoginDisabled,
    #[error("You need to sign in first.")]
    Unauthenticated,
    #[error(
        "This account does not exist yet and automatic account creation is turned off. Ask an administrator to create it."
    )]
    UserNotProvisioned,
    #[error("This account has been deactivated. Ask an administrator to reactivate it.")]
    UserDeactivated,
    #[error("{0}")]
    Forbidden(String),
    #[error(
        "This request did not come from this site, so it was refused. Reload the page and try again."
    )]
    CsrfFailed,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    LockoutRisk(String),
    #[error(
        "The setting {key} is fixed by the environment variable {env_var} and cannot be changed here. Change or remove the variable and restart."
    )]
    SettingLocked { key: String, env_var: String },
    #[error("{0}")]
    LastAdmin(String),
    #[error("{0}")]
    Conflict(String),
    #[error("The request body is larger than 1 MiB.")]
    BodyTooLarge,
    #[error("Too many failed sign-in attempts. Wait a while and try again.")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("The database cannot be reached right now. Try again in a moment.")]
    DatabaseUnavailable,
    #[error("Something went wrong on the server. The request id identifies it in the logs.")]
    Internal(#[source] anyhow::Error),
}

/// The token and claim failures of SPEC §4.3–4.4: each is a 401 with its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    Malformed,
    TooLarge,
    AlgNotAllowed,
    HeaderNotAllowed,
    BadSignature,
    Expired,
    NotYetValid,
    TooOld,
    IssuedInFuture,
    NeverExpires,
    ClaimInvalid,
    IssuerMismatch,
    AudienceMismatch,
    Replayed,
    MissingEmail,
    InvalidEmail,
    ClaimsTooLarge,
}

impl TokenFailure {
    /// Every failure, in declaration order (the OpenAPI document lists each code).
    pub const ALL: [TokenFailure; 17] = [
        TokenFailure::Malformed,
        TokenFailure::TooLarge,
        TokenFailure::AlgNotAllowed,
        TokenFailure::HeaderNotAllowed,
        TokenFailure::BadSignature,
        TokenFailure::Expired,
        TokenFailure::NotYetValid,
        TokenFailure::TooOld,
        TokenFailure::IssuedInFuture,
        TokenFailure::NeverExpires,
        TokenFailure::ClaimInvalid,
        TokenFailure::IssuerMismatch,
        TokenFailure::AudienceMismatch,
        TokenFailure::Replayed,
        TokenFailure::MissingEmail,
        TokenFailure::InvalidEmail,
        TokenFailure::ClaimsTooLarge,
    ];

    pub fn code(self) -> &'static str {
        match self {
            TokenFailure::Malformed => "token_malformed",
            TokenFailure::TooLarge => "token_too_large",
            TokenFailure::AlgNotAllowed => "alg_not_allowed",
            TokenFailure::HeaderNotAllowed => "header_not_allowed",
            TokenFailure::BadSignature => "bad_signature",
            TokenFailure::Expired => "token_expired",
            TokenFailure::NotYetValid => "token_not_yet_valid",
            TokenFailure::TooOld => "token_too_old",
            TokenFailure::IssuedInFuture => "token_issued_in_future",
            TokenFailure::NeverExpires => "token_never_expires",
            TokenFailure::ClaimInvalid => "claim_invalid",
            TokenFailure::IssuerMismatch => "issuer_mismatch",
            TokenFailure::AudienceMismatch => "audience_mismatch",
            TokenFailure::Replayed => "token_replayed",
            TokenFailure::MissingEmail => "missing_email",
            TokenFailure::InvalidEmail => "invalid_email",
            TokenFailure::ClaimsTooLarge => "claims_too_large",
        }
    }

    pub fn sentence(self) -> &'static str {
        match self {
            TokenFailure::Malformed => "The sign-in token is not a well-formed signed JWT.",
            TokenFailure::TooLarge => "The sign-in token is larger than 8 KiB.",
            TokenFailure::AlgNotAllowed => {
                "The sign-in token uses a signing algorithm that is not allowed or has no configured key."
            }
            TokenFailure::HeaderNotAllowed => {
                "The sign-in token has a header that is not allowed (keys come only from the settings)."
            }
            TokenFailure::BadSignature => {
                "The sign-in token's signature does not match the configured key. Check that the identity provider and Latchkey use the same key."
            }
            TokenFailure::Expired => "The sign-in token has expired. Sign in again.",
            TokenFailure::NotYetValid => {
                "The sign-in token is not valid yet. Check the clocks of the identity provider and this server."
            }
            TokenFailure::TooOld => "The sign-in token was issued too long ago. Sign in again.",
            TokenFailure::IssuedInFuture => {
                "The sign-in token claims to be issued in the future. Check the clocks of the identity provider and this server."
            }
            TokenFailure::NeverExpires => {
                "The sign-in token has neither an iat nor an exp claim, so it would be valid forever."
            }
            TokenFailure::ClaimInvalid => {
                "The sign-in token has a claim of the wrong type or a claim that is not allowed here."
            }
            TokenFailure::IssuerMismatch => {
                "The sign-in token was issued by an issuer that is not configured."
            }
            TokenFailure::AudienceMismatch => "The sign-in token is meant for another audience.",
            TokenFailure::Replayed => "This sign-in token has already been used. Sign in again.",
            TokenFailure::MissingEmail => "The sign-in token does not carry an email address.",
            TokenFailure::InvalidEmail => {
                "The email address in the sign-in token is not a valid address."
            }
            TokenFailure::ClaimsTooLarge => {
                "The sign-in token carries too many or too large attributes (at most 100, each at most 1 KiB)."
            }
        }
    }
}

impl std::fmt::Display for TokenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.sentence())
    }
}

impl Error {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Error::Internal(e.into())
    }

    pub fn not_found(what: &str) -> Self {
        Error::NotFound(format!("{what} was not found."))
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::SsoNotConfigured => "sso_not_configured",
            Error::InvalidRedirect => "invalid_redirect",
            Error::Validation { .. } => "validation_failed",
            Error::Token(t) => t.code(),
            Error::InvalidCredentials => "invalid_credentials",
            Error::PasswordLoginDisabled => "password_login_disabled",
            Error::Unauthenticated => "unauthenticated",
            Error::UserNotProvisioned => "user_not_provisioned",
            Error::UserDeactivated => "user_deactivated",
            Error::Forbidden(_) => "forbidden",
            Error::CsrfFailed => "csrf_failed",
            Error::NotFound(_) => "not_found",
            Error::LockoutRisk(_) => "lockout_risk",
            Error::SettingLocked { .. } => "setting_locked",
            Error::LastAdmin(_) => "last_admin",
            Error::Conflict(_) => "conflict",
            Error::BodyTooLarge => "body_too_large",
            Error::TooManyAttempts { .. } => "too_many_attempts",
            Error::DatabaseUnavailable => "database_unavailable",
            Error::Internal(_) => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::SsoNotConfigured | Error::InvalidRedirect | Error::Validation { .. } => {
                StatusCode::BAD_REQUEST
            }
            Error::Token(_)
            | Error::InvalidCredentials
            | Error::PasswordLoginDisabled
            | Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::UserNotProvisioned
            | Error::UserDeactivated
            | Error::Forbidden(_)
            | Error::CsrfFailed => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::LockoutRisk(_)
            | Error::SettingLocked { .. }
            | Error::LastAdmin(_)
            | Error::Conflict(_) => StatusCode::CONFLICT,
            Error::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The field a validation error names (SPEC §6).
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Validation { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if crate::store::is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            Error::DatabaseUnavailable
        } else {
            Error::Internal(e.into())
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_failure_is_listed_once() {
        let codes: std::collections::BTreeSet<_> =
            TokenFailure::ALL.iter().map(|f| f.code()).collect();
        assert_eq!(codes.len(), TokenFailure::ALL.len());
    }

    #[test]
    fn every_variant_maps_to_the_status_of_the_spec_table() {
        let table: Vec<(Error, u16, &str)> = vec![
            (Error::SsoNotConfigured, 400, "sso_not_configured"),
            (Error::InvalidRedirect, 400, "invalid_redirect"),
            (Error::validation("x", "bad"), 400, "validation_failed"),
            (Error::Token(TokenFailure::Expired), 401, "token_expired"),
            (Error::Token(TokenFailure::Replayed), 401, "token_replayed"),
            (
                Error::Token(TokenFailure::ClaimsTooLarge),
                401,
                "claims_too_large",
            ),
            (Error::InvalidCredentials, 401, "invalid_credentials"),
            (Error::PasswordLoginDisabled, 401, "password_login_disabled"),
            (Error::Unauthenticated, 401, "unauthenticated"),
            (Error::UserNotProvisioned, 403, "user_not_provisioned"),
            (Error::UserDeactivated, 403, "user_deactivated"),
            (Error::Forbidden("no".into()), 403, "forbidden"),
            (Error::CsrfFailed, 403, "csrf_failed"),
            (Error::not_found("User"), 404, "not_found"),
            (Error::LockoutRisk("x".into()), 409, "lockout_risk"),
            (
                Error::SettingLocked {
                    key: "k".into(),
                    env_var: "E".into(),
                },
                409,
                "setting_locked",
            ),
            (Error::LastAdmin("x".into()), 409, "last_admin"),
            (Error::Conflict("x".into()), 409, "conflict"),
            (Error::BodyTooLarge, 413, "body_too_large"),
            (
                Error::TooManyAttempts {
                    retry_after_secs: 5,
                },
                429,
                "too_many_attempts",
            ),
            (Error::DatabaseUnavailable, 503, "database_unavailable"),
        ];
        for (err, status, code) in table {
            assert_eq!(err.status().as_u16(), status, "{code}");
            assert_eq!(err.code(), code);
        }
    }
}
