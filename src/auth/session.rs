//! Session tokens and the cookie. A token is 8 bytes of its issue time and 256 random bits;
//! the database keeps the issue time and the SHA-256 of the token (`SessionKey`), never the
//! token itself.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::settings::Effective;

pub const COOKIE_NAME: &str = "latchkey.session";
pub const HEADER_NAME: &str = "x-latchkey-session";

/// A token's bytes: the issue time (microseconds since 1970, big-endian), then 32 random.
const TOKEN_BYTES: usize = 8 + 32;
/// A token in base64url without padding.
const TOKEN_CHARS: usize = 54;
/// The first 12 characters of a token decode to 9 bytes: the issue time and one more.
const STAMP_CHARS: usize = 12;

/// How a session is stored and found: the 8 bytes of its token's issue time, then the
/// SHA-256 of the whole token. Keys made this way grow with time, so every new session
/// goes to the end of the sessions index instead of a random page of it
/// (`docs/decisions.md`). Tokens without an issue time (43 characters, issued by earlier
/// versions) are found by their SHA-256 alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKey {
    bytes: [u8; TOKEN_BYTES],
    len: usize,
}

impl SessionKey {
    /// The key as stored in the sessions table (40 bytes, or 32 for an older token).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A new session token (54 base64url characters) and its stored key.
pub fn new_token() -> (String, SessionKey) {
    let mut bytes = [0u8; TOKEN_BYTES];
    bytes[..8].copy_from_slice(&issue_time().to_be_bytes());
    rand::rng().fill_bytes(&mut bytes[8..]);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let key = session_key(&token);
    (token, key)
}

/// The stored key of the session behind `token`. A token that is not one of ours gives a
/// key that no session has.
pub fn session_key(token: &str) -> SessionKey {
    let digest = token_digest(token);
    let mut bytes = [0u8; TOKEN_BYTES];
    let len = match issue_stamp(token) {
        Some(stamp) => {
            bytes[..8].copy_from_slice(&stamp);
            bytes[8..].copy_from_slice(&digest);
            TOKEN_BYTES
        }
        None => {
            bytes[..32].copy_from_slice(&digest);
            32
        }
    };
    SessionKey { bytes, len }
}

/// The issue time's 8 bytes at the start of a token of today's length.
fn issue_stamp(token: &str) -> Option<[u8; 8]> {
    if token.len() != TOKEN_CHARS {
        return None;
    }
    let mut head = [0u8; 9];
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode_slice(token.get(..STAMP_CHARS)?, &mut head)
        .ok()?;
    (n == head.len()).then(|| {
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&head[..8]);
        stamp
    })
}

/// Microseconds since 1970, never less than the last value this process gave, so that
/// the keys of one instance only grow even if the clock steps back.
fn issue_time() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let last = LAST.fetch_max(now, Ordering::Relaxed);
    now.max(last)
}

/// The SHA-256 of a token as 64 lower-case hex characters: how setup tokens are stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(token_digest(token))
}

/// The SHA-256 of a token as bytes: the session cache's key, and the end of the stored key.
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
    let max_age = eff.int("session-max-age-minutes").unwrap_or(20_160) * 60;
    cookie(token, max_age, eff, request_https)
}

pub fn clear_cookie(eff: &Effective, request_https: bool) -> String {
    cookie("", 0, eff, request_https)
}

/// The session cookie with this value and lifetime, and the attributes the settings ask for.
/// Joined rather than `format!`ed: one is made per login (`core::fmt` was 0.7 % of one).
fn cookie(value: &str, max_age: i64, eff: &Effective, request_https: bool) -> String {
    let same_site = eff.str("session-cookie-samesite").unwrap_or("Lax");
    let secure = if cookie_secure(eff, request_https) {
        "; Secure"
    } else {
        ""
    };
    [
        COOKIE_NAME,
        "=",
        value,
        "; HttpOnly; Path=/; SameSite=",
        same_site,
        "; Max-Age=",
        itoa::Buffer::new().format(max_age),
        secure,
    ]
    .concat()
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
    fn tokens_are_random_and_stored_as_their_time_and_hash() {
        let (a, ka) = new_token();
        let (b, kb) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_CHARS);
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&a)
            .unwrap();
        assert_eq!(raw.len(), TOKEN_BYTES);
        let digest: [u8; 32] = Sha256::digest(a.as_bytes()).into();
        // The key is the token's first 8 bytes, then its SHA-256: no random bit of the token.
        assert_eq!(&ka.as_bytes()[..8], &raw[..8]);
        assert_eq!(&ka.as_bytes()[8..], &digest);
        assert_eq!(token_digest(&a), digest);
        assert_eq!(session_key(&a), ka);
        assert_ne!(&ka.as_bytes()[8..], &kb.as_bytes()[8..]);
        // Issued later, stored later in the index.
        assert!(kb.as_bytes() > ka.as_bytes());
        let micros = u64::from_be_bytes(raw[..8].try_into().unwrap());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert!(
            micros <= now && now - micros < 60_000_000,
            "{micros} vs {now}"
        );
        assert_eq!(hash_token(&a), hex::encode(digest));
        assert_eq!(random_hex_token().len(), 64);
    }

    #[test]
    fn an_older_token_is_found_by_its_hash_alone() {
        // 43 characters: 256 random bits, as issued before the keys had a time.
        let old = "q2yzzQv6vYJ3lH0v2dC1Jw1m8bKqk4r2s0PZc7eZ0aA";
        assert_eq!(old.len(), 43);
        let digest: [u8; 32] = Sha256::digest(old.as_bytes()).into();
        assert_eq!(session_key(old).as_bytes(), &digest);
        assert_eq!(token_digest(old), digest);
        // Anything else that is not 54 characters of base64url: the same.
        for odd in [
            "",
            "x",
            &"!".repeat(54),
            &"é".repeat(27),
            &format!("a{}a", "é".repeat(26)),
        ] {
            let d: [u8; 32] = Sha256::digest(odd.as_bytes()).into();
            assert_eq!(session_key(odd).as_bytes(), &d, "{odd}");
        }
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
