//! Session tokens and the cookie. The cookie carries 256 random bits; the database keeps
//! only their SHA-256 (as 32 bytes).

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::settings::Effective;

pub const COOKIE_NAME: &str = "latchkey.session";
pub const HEADER_NAME: &str = "x-latchkey-session";

/// A new random session token (43 base64url characters) and its stored hash.
pub fn new_token() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_digest(&token);
    (token, hash)
}

/// The SHA-256 of a token as 64 lower-case hex characters: how setup tokens are stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(token_digest(token))
}

/// The SHA-256 of a token as bytes: how sessions are stored, and the session cache's key.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 64 lower-case hex characters from 32 random bytes ("Generate key").
pub fn random_hex_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether cookies must be `Secure`: https site, https request, or SameSite=None.
pub fn cookie_secure(eff: &Effective, request_https: bool) -> bool {
    let site_https = eff.site_url.as_ref().is_some_and(|u| u.scheme() == "https");
    site_https || request_https || eff.str("session-cookie-samesite") == Some("None")
}

pub fn session_cookie(token: &str, eff: &Effective, request_https: bool) -> String {
    let same_site = eff.str("session-cookie-samesite").unwrap_or("Lax");
    let max_age = eff.int("session-max-age-minutes").unwrap_or(20_160) * 60;
    let secure = if cookie_secure(eff, request_https) {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{COOKIE_NAME}={token}; HttpOnly; Path=/; SameSite={same_site}; Max-Age={max_age}{secure}"
    )
}

pub fn clear_cookie(eff: &Effective, request_https: bool) -> String {
    let same_site = eff.str("session-cookie-samesite").unwrap_or("Lax");
    let secure = if cookie_secure(eff, request_https) {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE_NAME}=; HttpOnly; Path=/; SameSite={same_site}; Max-Age=0{secure}")
}

/// The session token from a `Cookie` header value, if any.
pub fn token_from_cookie_header(header: &str) -> Option<&str> {
    header.split(';').map(str::trim).find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == COOKIE_NAME && !value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, ha) = new_token();
        let (b, hb) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        let digest: [u8; 32] = Sha256::digest(a.as_bytes()).into();
        assert_eq!(ha, digest);
        assert_eq!(hash_token(&a), hex::encode(digest));
        assert_ne!(ha, hb);
        assert_eq!(random_hex_token().len(), 64);
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        assert_eq!(
            token_from_cookie_header("a=1; latchkey.session=xyz; b=2"),
            Some("xyz")
        );
        assert_eq!(token_from_cookie_header("latchkey.sessionx=1"), None);
        assert_eq!(token_from_cookie_header("latchkey.session="), None);
    }
}
