//! Secret settings at rest: AES-256-GCM (aws-lc-rs) under the key in
//! `LATCHKEY_ENCRYPTION_KEY`, a random 96-bit nonce per write, and the setting's key bound as
//! associated data, so a ciphertext copied to another setting does not decrypt.
//!
//! A sealed value is stored as JSON text in the settings table:
//! `{"enc":"v1","kid":"<8 hex>","nonce":"<base64url>","ct":"<base64url ciphertext+tag>"}`.
//! `kid` names the key (the first 8 hex characters of a SHA-256 over it), so an operator can
//! tell "encrypted with another key" from "altered". Decryption fails closed: a sealed value
//! that cannot be opened is an error, never used as it is.

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::{
    STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD as B64,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The variable holding the key of the running server and of every CLI command.
pub const KEY_ENV: &str = "LATCHKEY_ENCRYPTION_KEY";
/// The variable `settings rotate-encryption-key` reads the new key from (or stdin).
pub const NEW_KEY_ENV: &str = "LATCHKEY_NEW_ENCRYPTION_KEY";

const VERSION: &str = "v1";
const KEY_LEN: usize = 32;

/// How to make a key, for messages.
pub const KEY_FORMAT: &str =
    "32 random bytes written as 64 hex characters or as base64 (e.g. `openssl rand -hex 32`)";

/// A 256-bit settings encryption key. Its bytes never appear in `Debug` output.
#[derive(Clone)]
pub struct EncryptionKey {
    key: [u8; KEY_LEN],
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey(kid {})", self.id())
    }
}

impl EncryptionKey {
    /// 64 hex characters, or base64 (standard or URL-safe, padded or not) of exactly 32
    /// bytes; surrounding whitespace is ignored. The error never repeats the input.
    pub fn parse(text: &str) -> Result<EncryptionKey, String> {
        let text = text.trim();
        let decoded = if text.len() == 2 * KEY_LEN && text.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &B64]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
        };
        match decoded {
            Some(bytes) if bytes.len() == KEY_LEN => {
                let mut key = [0u8; KEY_LEN];
                key.copy_from_slice(&bytes);
                Ok(EncryptionKey { key })
            }
            Some(bytes) => Err(format!(
                "it decodes to {} bytes, not {KEY_LEN}; expected {KEY_FORMAT}",
                bytes.len()
            )),
            None => Err(format!(
                "it is neither hex nor base64 ({} characters); expected {KEY_FORMAT}",
                text.chars().count()
            )),
        }
    }

    /// A fresh random key (tests, and the message that tells an operator how to make one).
    pub fn generate() -> EncryptionKey {
        let mut key = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut key).expect("the system random generator works");
        EncryptionKey { key }
    }

    /// The key as 64 lower-case hex characters (what `generate` hands to an operator).
    pub fn to_hex(&self) -> String {
        hex::encode(self.key)
    }

    /// A short public name for the key: the first 8 hex characters of
    /// SHA-256("latchkey settings key id" || key). It reveals nothing usable about the key.
    pub fn id(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"latchkey settings key id\0")
            .chain_update(self.key)
            .finalize();
        hex::encode(&digest[..4])
    }

    /// Reads `var` through `lookup`: `Ok(None)` when it is not set, an error naming the
    /// variable when it is set to anything but a valid key (an empty value included).
    pub fn from_lookup(
        var: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<EncryptionKey>> {
        match lookup(var) {
            None => Ok(None),
            Some(text) => EncryptionKey::parse(&text)
                .map(Some)
                .map_err(|m| anyhow::anyhow!("{var} is not a valid encryption key: {m}")),
        }
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.key).expect("a 32-byte key fits AES-256-GCM"),
        )
    }
}

/// The associated data of a setting's ciphertext: the setting's key, namespaced.
fn aad(setting: &str) -> Vec<u8> {
    format!("latchkey setting {VERSION}\0{setting}").into_bytes()
}

/// Encrypts `plaintext` (a setting's JSON text) for `setting` with a fresh random nonce.
pub fn seal(key: &EncryptionKey, setting: &str, plaintext: &str) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).expect("the system random generator works");
    seal_with_nonce(key, setting, plaintext, nonce)
}

fn seal_with_nonce(
    key: &EncryptionKey,
    setting: &str,
    plaintext: &str,
    nonce: [u8; NONCE_LEN],
) -> String {
    let mut buf = plaintext.as_bytes().to_vec();
    key.aead()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(setting)),
            &mut buf,
        )
        .expect("AES-GCM sealing of a small value cannot fail");
    json!({
        "enc": VERSION,
        "kid": key.id(),
        "nonce": B64.encode(nonce),
        "ct": B64.encode(&buf),
    })
    .to_string()
}

/// The parts of a sealed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub version: String,
    pub kid: Option<String>,
    nonce: Vec<u8>,
    ct: Vec<u8>,
}

/// Reads a stored text as an envelope: `None` when it is not one (a plain value). An
/// object with an `enc` member counts as an envelope even when the rest is broken, so a
/// damaged envelope is reported, never mistaken for a plain value.
pub fn envelope(stored: &str) -> Option<Result<Envelope, OpenError>> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(stored) else {
        return None;
    };
    let version = map.get("enc")?;
    let parse = || {
        let version = version.as_str().ok_or(OpenError::Malformed)?.to_owned();
        let field = |name: &str| {
            map.get(name)
                .and_then(Value::as_str)
                .and_then(|s| B64.decode(s).ok())
                .ok_or(OpenError::Malformed)
        };
        Ok(Envelope {
            kid: map.get("kid").and_then(Value::as_str).map(str::to_owned),
            nonce: field("nonce")?,
            ct: field("ct")?,
            version,
        })
    };
    Some(parse())
}

/// Whether a stored text is a sealed value (well-formed or not).
pub fn is_sealed(stored: &str) -> bool {
    envelope(stored).is_some()
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Not an envelope at all.
    NotSealed,
    /// An envelope with missing or undecodable parts.
    Malformed,
    /// An envelope of a format this version does not know.
    UnknownVersion(String),
    /// Sealed under another key (the ids differ).
    OtherKey { stored: String, configured: String },
    /// The tag did not verify: altered, moved from another setting, or another key
    /// without an id.
    Rejected,
}

/// Decrypts a sealed value of `setting`.
pub fn open(key: &EncryptionKey, setting: &str, stored: &str) -> Result<String, OpenError> {
    let env = envelope(stored).ok_or(OpenError::NotSealed)??;
    if env.version != VERSION {
        return Err(OpenError::UnknownVersion(env.version));
    }
    if let Some(kid) = &env.kid
        && *kid != key.id()
    {
        return Err(OpenError::OtherKey {
            stored: kid.clone(),
            configured: key.id(),
        });
    }
    let nonce = Nonce::try_assume_unique_for_key(&env.nonce).map_err(|_| OpenError::Malformed)?;
    let mut buf = env.ct;
    let plain = key
        .aead()
        .open_in_place(nonce, Aad::from(aad(setting)), &mut buf)
        .map_err(|_| OpenError::Rejected)?;
    String::from_utf8(plain.to_vec()).map_err(|_| OpenError::Rejected)
}

/// A stored secret that stops the settings from loading, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableSecret {
    pub setting: String,
    pub reason: UnreadableReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnreadableReason {
    NoKey,
    Open(OpenError),
}

impl UnreadableSecret {
    /// What is wrong, in a sentence without its final full stop.
    pub fn problem(&self) -> String {
        let s = &self.setting;
        match &self.reason {
            UnreadableReason::NoKey => {
                format!("the setting {s} is stored encrypted, but {KEY_ENV} is not set")
            }
            UnreadableReason::Open(OpenError::OtherKey { stored, configured }) => format!(
                "the setting {s} was encrypted with another key (key id {stored}; {KEY_ENV} has key id {configured})"
            ),
            UnreadableReason::Open(OpenError::UnknownVersion(v)) => format!(
                "the setting {s} is encrypted in a format this version of Latchkey does not know ({v:?})"
            ),
            UnreadableReason::Open(_) => format!(
                "the setting {s} does not decrypt with {KEY_ENV}: the stored value was altered, copied from \
                 another setting, or encrypted with another key"
            ),
        }
    }

    /// What to do about it, without the final full stop.
    pub fn fix(&self) -> String {
        let s = &self.setting;
        let lost = format!(
            "if that key is lost, replace the value with `latchkey settings set {s} <new value>` (or `null` to remove it)"
        );
        match &self.reason {
            UnreadableReason::NoKey => {
                format!("set {KEY_ENV} to the key it was encrypted with and try again; {lost}")
            }
            UnreadableReason::Open(OpenError::OtherKey { stored, .. }) => format!(
                "set {KEY_ENV} to the key with id {stored} (after `latchkey settings rotate-encryption-key`, \
                 the new key) and try again; {lost}"
            ),
            UnreadableReason::Open(OpenError::UnknownVersion(_)) => {
                format!("run the Latchkey version that wrote it; {lost}")
            }
            UnreadableReason::Open(_) => format!(
                "restore the value from a backup, or set {KEY_ENV} to the key it was encrypted with; {lost}"
            ),
        }
    }
}

impl fmt::Display for UnreadableSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}. To fix it: {}.", self.problem(), self.fix())
    }
}

impl std::error::Error for UnreadableSecret {}

/// Turns stored rows into plain texts: sealed values of the `secret` settings are opened
/// with `key`; plain values are kept as they are (encryption off, or not yet enabled).
/// Fails closed on the first sealed value that cannot be opened, unless its setting is
/// `discard` (it is then replaced by a text no setting accepts, so the caller can
/// overwrite or remove it).
pub fn open_stored(
    rows: Vec<(String, String)>,
    is_secret: impl Fn(&str) -> bool,
    key: Option<&EncryptionKey>,
    discard: Option<&str>,
) -> Result<HashMap<String, String>, UnreadableSecret> {
    let mut out = HashMap::with_capacity(rows.len());
    for (setting, text) in rows {
        let plain = if is_secret(&setting) && is_sealed(&text) {
            let opened = match key {
                None => Err(UnreadableReason::NoKey),
                Some(k) => open(k, &setting, &text).map_err(UnreadableReason::Open),
            };
            match opened {
                Ok(p) => p,
                Err(_) if discard == Some(setting.as_str()) => UNREADABLE.to_owned(),
                Err(reason) => return Err(UnreadableSecret { setting, reason }),
            }
        } else {
            text
        };
        out.insert(setting, plain);
    }
    Ok(out)
}

/// Stands for a discarded unreadable value: not JSON, so it never validates and the
/// setting reads as its default.
pub const UNREADABLE: &str = "\u{0}unreadable";

#[cfg(test)]
mod tests {
    use super::*;

    const SETTING: &str = "jwt-shared-secret";
    const VALUE: &str = "\"0123456789abcdef0123456789abcdef\"";

    #[test]
    fn round_trip() {
        let key = EncryptionKey::generate();
        let sealed = seal(&key, SETTING, VALUE);
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("0123456789abcdef"), "{sealed}");
        let env: Value = serde_json::from_str(&sealed).unwrap();
        assert_eq!(env["enc"], "v1");
        assert_eq!(env["kid"], json!(key.id()));
        assert_eq!(open(&key, SETTING, &sealed), Ok(VALUE.to_owned()));
        // Empty and non-ASCII values too.
        for v in ["", "\"Grüße 🔑\""] {
            assert_eq!(
                open(&key, SETTING, &seal(&key, SETTING, v)).as_deref(),
                Ok(v)
            );
        }
    }

    #[test]
    fn wrong_key_is_refused_by_id_and_by_tag() {
        let key = EncryptionKey::generate();
        let other = EncryptionKey::generate();
        let sealed = seal(&key, SETTING, VALUE);
        assert_eq!(
            open(&other, SETTING, &sealed),
            Err(OpenError::OtherKey {
                stored: key.id(),
                configured: other.id()
            })
        );
        // Without the id (or with a forged one), the tag still refuses it.
        let mut env: Value = serde_json::from_str(&sealed).unwrap();
        env.as_object_mut().unwrap().remove("kid");
        assert_eq!(
            open(&other, SETTING, &env.to_string()),
            Err(OpenError::Rejected)
        );
        env["kid"] = json!(other.id());
        assert_eq!(
            open(&other, SETTING, &env.to_string()),
            Err(OpenError::Rejected)
        );
    }

    #[test]
    fn wrong_associated_data_is_refused() {
        let key = EncryptionKey::generate();
        let sealed = seal(&key, SETTING, VALUE);
        assert_eq!(
            open(&key, "jwt-issuer", &sealed),
            Err(OpenError::Rejected),
            "a ciphertext moved to another setting must not decrypt"
        );
    }

    #[test]
    fn tampering_is_refused() {
        let key = EncryptionKey::generate();
        let sealed = seal(&key, SETTING, VALUE);
        let env: Value = serde_json::from_str(&sealed).unwrap();
        let ct = B64.decode(env["ct"].as_str().unwrap()).unwrap();
        let nonce = B64.decode(env["nonce"].as_str().unwrap()).unwrap();
        // Every single-bit flip of the ciphertext, the tag or the nonce is refused.
        for i in 0..ct.len() * 8 {
            let mut bad = ct.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let mut e = env.clone();
            e["ct"] = json!(B64.encode(&bad));
            assert_eq!(
                open(&key, SETTING, &e.to_string()),
                Err(OpenError::Rejected),
                "ct bit {i}"
            );
        }
        for i in 0..nonce.len() * 8 {
            let mut bad = nonce.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let mut e = env.clone();
            e["nonce"] = json!(B64.encode(&bad));
            assert_eq!(
                open(&key, SETTING, &e.to_string()),
                Err(OpenError::Rejected),
                "nonce bit {i}"
            );
        }
        // Truncated, extended, malformed, unknown version.
        let mut e = env.clone();
        e["ct"] = json!(B64.encode(&ct[..ct.len() - 1]));
        assert_eq!(
            open(&key, SETTING, &e.to_string()),
            Err(OpenError::Rejected)
        );
        let mut longer = ct.clone();
        longer.push(0);
        e["ct"] = json!(B64.encode(&longer));
        assert_eq!(
            open(&key, SETTING, &e.to_string()),
            Err(OpenError::Rejected)
        );
        e["ct"] = json!("not base64!");
        assert_eq!(
            open(&key, SETTING, &e.to_string()),
            Err(OpenError::Malformed)
        );
        let mut e = env.clone();
        e["nonce"] = json!(B64.encode([0u8; 8]));
        assert_eq!(
            open(&key, SETTING, &e.to_string()),
            Err(OpenError::Malformed)
        );
        let mut e = env.clone();
        e["enc"] = json!("v2");
        assert_eq!(
            open(&key, SETTING, &e.to_string()),
            Err(OpenError::UnknownVersion("v2".into()))
        );
        assert_eq!(open(&key, SETTING, VALUE), Err(OpenError::NotSealed));
    }

    #[test]
    fn every_write_gets_a_fresh_nonce() {
        let key = EncryptionKey::generate();
        let mut nonces = std::collections::HashSet::new();
        let mut cts = std::collections::HashSet::new();
        for _ in 0..1000 {
            let env: Value = serde_json::from_str(&seal(&key, SETTING, VALUE)).unwrap();
            assert!(nonces.insert(env["nonce"].as_str().unwrap().to_owned()));
            assert!(cts.insert(env["ct"].as_str().unwrap().to_owned()));
        }
        // The same nonce would give the same ciphertext: the nonce is what differs.
        let n = [7u8; NONCE_LEN];
        assert_eq!(
            seal_with_nonce(&key, SETTING, VALUE, n),
            seal_with_nonce(&key, SETTING, VALUE, n)
        );
    }

    #[test]
    fn keys_parse_from_hex_and_base64_only() {
        let key = EncryptionKey::generate();
        let hex = key.to_hex();
        let id = key.id();
        let parsed = |s: &str| EncryptionKey::parse(s).map(|k| k.id());
        assert_eq!(parsed(&hex), Ok(id.clone()));
        assert_eq!(parsed(&hex.to_uppercase()), Ok(id.clone()));
        assert_eq!(parsed(&format!("  {hex}\n")), Ok(id.clone()));
        assert_eq!(parsed(&STANDARD.encode(key.key)), Ok(id.clone()));
        assert_eq!(parsed(&B64.encode(key.key)), Ok(id.clone()));
        assert_eq!(parsed(&URL_SAFE.encode(key.key)), Ok(id.clone()));
        for bad in [
            String::new(),
            "short".to_owned(),
            hex[..62].to_owned(),
            format!("{hex}00"),
            STANDARD.encode([1u8; 16]),
            STANDARD.encode([1u8; 48]),
            "correct horse battery staple correct horse battery".to_owned(),
        ] {
            let err = EncryptionKey::parse(&bad).unwrap_err();
            assert!(err.contains("64 hex characters or as base64"), "{err}");
            assert!(
                bad.len() < 8 || !err.contains(&bad),
                "the key is not echoed: {err}"
            );
        }
        assert!(!format!("{key:?}").contains(&hex));
    }

    #[test]
    fn keys_come_from_the_variable() {
        let key = EncryptionKey::generate();
        let hex = key.to_hex();
        let none = EncryptionKey::from_lookup(KEY_ENV, |_| None).unwrap();
        assert!(none.is_none());
        let some = EncryptionKey::from_lookup(KEY_ENV, |_| Some(hex.clone())).unwrap();
        assert_eq!(some.unwrap().id(), key.id());
        let err = EncryptionKey::from_lookup(KEY_ENV, |_| Some(String::new())).unwrap_err();
        assert!(err.to_string().starts_with(KEY_ENV), "{err}");
    }

    #[test]
    fn stored_rows_open_or_fail_closed() {
        let key = EncryptionKey::generate();
        let secret = |k: &str| k == SETTING;
        let sealed = seal(&key, SETTING, VALUE);
        let rows = vec![
            (SETTING.to_owned(), sealed.clone()),
            ("jwt-enabled".to_owned(), "true".to_owned()),
        ];
        let out = open_stored(rows.clone(), secret, Some(&key), None).unwrap();
        assert_eq!(out[SETTING], VALUE);
        assert_eq!(out["jwt-enabled"], "true");

        let err = open_stored(rows.clone(), secret, None, None).unwrap_err();
        assert_eq!(err.reason, UnreadableReason::NoKey);
        let msg = err.to_string();
        assert!(msg.contains(SETTING) && msg.contains(KEY_ENV), "{msg}");

        let other = EncryptionKey::generate();
        let err = open_stored(rows.clone(), secret, Some(&other), None).unwrap_err();
        assert!(err.to_string().contains(&key.id()), "{err}");

        // The one setting being replaced may be unreadable.
        let out = open_stored(rows, secret, None, Some(SETTING)).unwrap();
        assert_eq!(out[SETTING], UNREADABLE);

        // Plain values of secret settings load with or without a key; an envelope in a
        // setting that is not secret is not ours and stays as it is.
        let plain = vec![
            (SETTING.to_owned(), VALUE.to_owned()),
            ("jwt-issuer".to_owned(), sealed.clone()),
        ];
        let out = open_stored(plain.clone(), secret, Some(&key), None).unwrap();
        assert_eq!(out[SETTING], VALUE);
        assert_eq!(out["jwt-issuer"], sealed);
        assert_eq!(
            open_stored(plain, secret, None, None).unwrap()[SETTING],
            VALUE
        );
    }
}
