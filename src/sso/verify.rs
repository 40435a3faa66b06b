//! The JWT verification policy for SSO login tokens and back-channel logout tokens.
//!
//! This module is pure: it takes the token text, the verification settings and the current
//! time, and answers with the verified claims or a stable [`Reason`]. It does no I/O, keeps
//! no state and never reads a clock, so every rule can be tested with a fixed `now`.
//! Single use (the replay table) is the caller's job; this module only computes the
//! [`VerifiedToken::replay_key`] and how long it must be remembered.
//!
//! # Why not simply `jsonwebtoken::decode`?
//!
//! The library is used for the asymmetric signature step only (`jsonwebtoken::crypto::verify`:
//! the RSA/ECDSA/EdDSA checks of its aws-lc backend); the HMAC is aws-lc's own, compared in
//! constant time, with keys made once per settings load ([`SharedSecret`]).
//! Everything around it is done here, because the library accepts things the spec refuses
//! (SPEC §4.3, research/security.md §1): `crit`, `cty`, any `typ`, duplicate JSON keys in
//! claims (kept last-wins by `serde_json::Value`), tokens of any size, and it does not look
//! at `iat` at all.
//!
//! # Check order
//!
//! When several rules are broken, the first failing step decides the [`Reason`]:
//!
//! 1. **size**: more than [`MAX_TOKEN_BYTES`] bytes → `token_too_large` (before any decoding,
//!    so a huge token costs nothing).
//! 2. **structure**: exactly three non-empty `.`-separated segments (five = JWE), each strict
//!    canonical unpadded base64url; header and payload are UTF-8 JSON objects without
//!    duplicate keys at any depth → else `token_malformed`. Nothing is trimmed.
//! 3. **algorithm and key**: `alg` missing → `token_malformed`; not a string, not one of the
//!    exact (case-sensitive) supported names, not in `jwt-algorithms`, or no usable key of
//!    its family → `alg_not_allowed`. The families: HS* use only the shared secret (a secret
//!    shorter than [`MIN_SECRET_BYTES`] is no key; `kid` is ignored); RS*/PS* only RSA keys,
//!    ES256 only P-256 keys, ES384 only P-384 keys, EdDSA only Ed25519 keys, from the
//!    [`KeySet`] (PEM keys of `jwt-public-keys` and JWKS keys). A string `kid` selects the
//!    JWKS keys with that `kid`; if those keys cannot verify `alg` (an RS256 token naming an
//!    EC key) → `alg_not_allowed`; if no JWKS key has that `kid`, the PEM keys of the family
//!    are tried in order (PEM keys have no `kid`). Without a `kid`, every key of the family
//!    is tried, PEM keys first.
//! 4. **header**: `jku jwk x5u x5c crit b64 zip enc cty` → `header_not_allowed` (SPEC §4.3;
//!    the certificate thumbprints `x5t` and `x5t#S256`, which neither carry nor point to a
//!    key, are ignored like `kid` for the shared secret: Entra ID and AD FS always send them);
//!    `typ` absent or `JWT` / `application/jwt` (any case; logout tokens also `logout+jwt` /
//!    `application/logout+jwt`) → else `header_not_allowed`.
//! 5. **signature**: HMAC compared in constant time, or the signature checked with each
//!    candidate key until one matches → else `bad_signature` (also when a `kid` matched no
//!    key and no PEM key of the family exists). No claim is interpreted before this step
//!    (ASVS 9.1.1).
//! 6. **time**, in SPEC §4.3's order: `exp` (`token_expired`), `nbf`
//!    (`token_not_yet_valid`), `iat` in the future (`token_issued_in_future`), `iat` too old
//!    (`token_too_old`), each when it is a number; neither `iat` nor `exp`
//!    (`token_never_expires`); then `exp`/`nbf`/`iat` that are not JSON numbers
//!    (`claim_invalid`).
//! 7. **issuer** then **audience**, only when configured (`issuer_mismatch`,
//!    `audience_mismatch`).
//! 8. **purpose**: a login token must not carry `events`; a logout token must carry the
//!    back-channel-logout event and no `nonce` (`claim_invalid`).
//! 9. **jti**: when present it must be a string (`claim_invalid`). `jti` and `sub` strings
//!    must not contain NUL (`claim_invalid`): they are stored (replay key, user subject)
//!    and PostgreSQL text cannot hold NUL, so refusing here keeps the answer a 401 on both
//!    backends instead of a database error. A `sub` string longer than 255 characters is
//!    `claim_invalid` too: the user keeps it whole, and a logout matches it whole.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::keys::{KeySet, SharedSecret, VerifyingKey, shown_kid};

/// Largest accepted token, in bytes (SPEC §4.3: "at most 8 KiB").
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Shortest usable HMAC shared secret, in bytes. RFC 7518 §3.2 requires a key at least as
/// long as the hash output for HS256, and SPEC §3 sets the setting's minimum to 32
/// characters. A shorter (or empty) secret is treated as "no key", so nothing verifies.
pub const MIN_SECRET_BYTES: usize = 32;

/// The longest `sub` a token may carry, in characters (OpenID Connect Core §2: at most 255
/// ASCII characters).
pub const MAX_SUB_CHARS: usize = 255;

/// The longest `jti` (in bytes) kept as it is in the replay key; a longer one is hashed.
const MAX_JTI_KEY_BYTES: usize = 256;

/// The largest `jwt-max-age-seconds` an administrator may set.
pub const MAX_TOKEN_AGE_SECONDS: i64 = 86_400;
/// The largest `jwt-clock-skew-seconds` an administrator may set.
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 300;

/// The exact, case-sensitive algorithm names `jwt-algorithms` may contain (SPEC §3).
/// Anything else, including every spelling of `none`, is never accepted.
pub const KNOWN_ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// The event a back-channel logout token must carry (OpenID Connect Back-Channel Logout 1.0
/// §2.4), and that a login token must not carry (so a logout token can never log anyone in).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Header parameters that carry or point to keys (keys come only from settings), or change
/// how the token is processed (`crit`, `b64`, `zip`, `enc`, `cty`): refused outright rather
/// than half-understood (RFC 8725 §3.10, RFC 7515 §4.1.11, RFC 7519 §7.2 step 8). The
/// certificate thumbprints `x5t` and `x5t#S256` are only hints, like `kid`, and are ignored.
const FORBIDDEN_HEADERS: [&str; 9] = [
    "jku", "jwk", "x5u", "x5c", "crit", "b64", "zip", "enc", "cty",
];

/// Strict base64url: unpadded, URL-safe alphabet only, canonical trailing bits. Tokens are
/// not malleable through their encoding (RFC 7515 §2), so two spellings of the same bytes
/// can never both verify.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// What a token is being verified for. The two kinds are mutually exclusive (RFC 8725
/// §3.12): a logout token is refused as a login token and the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// `/auth/sso` login token.
    Login,
    /// `/auth/sso/logout` back-channel logout token.
    Logout,
}

/// Verification settings, borrowed from the effective settings.
pub struct VerifyPolicy<'a> {
    /// `jwt-algorithms`, e.g. `["HS256"]`; only the exact names in [`KNOWN_ALGORITHMS`]
    /// mean anything.
    pub algorithms: &'a [String],
    /// The HMAC keys of `jwt-shared-secret` (its UTF-8 bytes, never hex-decoded); `None`
    /// when unset.
    pub shared_secret: Option<&'a SharedSecret>,
    /// The asymmetric keys (PEM and JWKS), built by the caller: this module never fetches.
    pub keys: &'a KeySet,
    /// `jwt-issuer`: when set, `iss` must be a string equal to it.
    pub issuer: Option<&'a str>,
    /// `jwt-audience`: when set, `aud` must be it or an array of strings containing it.
    pub audience: Option<&'a str>,
    /// `jwt-max-age-seconds` (default 180): how long after `iat` a token is accepted.
    pub max_age_seconds: i64,
    /// `jwt-clock-skew-seconds` (default 30): leeway for `exp`, `nbf` and future `iat`.
    pub clock_skew_seconds: i64,
    /// Login or logout token.
    pub purpose: TokenPurpose,
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The parsed payload, in the token's key order.
    pub claims: Map<String, Value>,
    /// `"jti:" + jti` when a non-empty string `jti` claim of at most 256 bytes is present
    /// (`"jti-sha256:" +` the lowercase hex SHA-256 of a longer one), else `"sha256:" +`
    /// lowercase hex SHA-256 of the signing input `header.payload`. The signing input, not
    /// the signature, because ECDSA signatures can be re-formed by anyone (SPEC §4.3).
    pub replay_key: String,
    /// Unix seconds after which the token can no longer pass the time checks under any
    /// settings, so its replay record may be forgotten: the smaller of `exp + 300` and
    /// `iat + 86,400 + 300` (whichever claims are present; fractional values are rounded up),
    /// with the largest skew and maximum age an administrator may set.
    pub replay_expires_at: i64,
}

/// Why a token was refused. Each has a stable code (SPEC §4.8), answered with 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not a compact JWS: segments, base64url, JSON, duplicate keys, or no `alg`.
    TokenMalformed,
    /// Longer than [`MAX_TOKEN_BYTES`].
    TokenTooLarge,
    /// `alg` is not exactly an allowed name, or no usable key of its family exists.
    AlgNotAllowed,
    /// A key-carrying or processing header, or an unexpected `typ`.
    HeaderNotAllowed,
    /// The signature matches neither the shared secret nor any candidate key.
    BadSignature,
    /// `exp` is at or before now − skew.
    TokenExpired,
    /// `nbf` is after now + skew.
    TokenNotYetValid,
    /// `iat` is more than max-age + skew ago.
    TokenTooOld,
    /// `iat` is after now + skew.
    TokenIssuedInFuture,
    /// Neither `iat` nor `exp`: the token would be valid forever.
    TokenNeverExpires,
    /// A claim has the wrong type, or the token is for the other purpose.
    ClaimInvalid,
    /// `iss` is not the configured issuer.
    IssuerMismatch,
    /// `aud` does not contain the configured audience.
    AudienceMismatch,
}

impl Reason {
    /// The stable machine-readable code of SPEC §4.8.
    pub fn code(self) -> &'static str {
        match self {
            Reason::TokenMalformed => "token_malformed",
            Reason::TokenTooLarge => "token_too_large",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::HeaderNotAllowed => "header_not_allowed",
            Reason::BadSignature => "bad_signature",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::TokenTooOld => "token_too_old",
            Reason::TokenIssuedInFuture => "token_issued_in_future",
            Reason::TokenNeverExpires => "token_never_expires",
            Reason::ClaimInvalid => "claim_invalid",
            Reason::IssuerMismatch => "issuer_mismatch",
            Reason::AudienceMismatch => "audience_mismatch",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for Reason {}

/// One line of the dry-run report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// Step name: `size`, `structure`, `algorithm`, `header`, `signature`, `exp`, `nbf`,
    /// `iat`, `lifetime`, `issuer`, `audience`, `purpose`, `jti`, `sub` (only when it fails).
    pub name: &'static str,
    /// Whether the step passed.
    pub ok: bool,
    /// What was found, for a human; on failure it ends with the reason code.
    pub detail: String,
}

/// Verifies `token` against `policy` at unix time `now`. See the module docs for the order.
pub fn verify(token: &str, policy: &VerifyPolicy<'_>, now: i64) -> Result<VerifiedToken, Reason> {
    run(token, policy, now, &mut Tracer { out: None })
}

/// Same as [`verify`], and appends one [`Check`] per step performed (the step that fails is
/// the last one, with `ok = false`). Used for the admin "test a token" dry run. Details
/// never contain the token, the secret or signature bytes; attacker-chosen strings that are
/// echoed (such as `alg`) are escaped and truncated.
pub fn verify_traced(
    token: &str,
    policy: &VerifyPolicy<'_>,
    now: i64,
    trace: &mut Vec<Check>,
) -> Result<VerifiedToken, Reason> {
    run(token, policy, now, &mut Tracer { out: Some(trace) })
}

/// Signs `claims` with HS256/HS384/HS512 and `secret`; header `{"alg":…,"typ":"JWT"}`.
/// Used by the CLI `token sign`, the example IdP and tests.
///
/// Refuses (`alg_not_allowed`) any other algorithm and a secret shorter than
/// [`MIN_SECRET_BYTES`], and refuses (`token_too_large`) a result over [`MAX_TOKEN_BYTES`]:
/// it never produces a token that [`verify`] would refuse for those reasons.
pub fn sign_hmac(alg: &str, claims: &Map<String, Value>, secret: &[u8]) -> Result<String, Reason> {
    let algorithm = match alg {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        _ => return Err(Reason::AlgNotAllowed),
    };
    if secret.len() < MIN_SECRET_BYTES {
        return Err(Reason::AlgNotAllowed);
    }
    let mut header = Map::new();
    header.insert("alg".to_owned(), Value::String(alg.to_owned()));
    header.insert("typ".to_owned(), Value::String("JWT".to_owned()));
    let header = serde_json::to_vec(&header).map_err(|_| Reason::TokenMalformed)?;
    let payload = serde_json::to_vec(claims).map_err(|_| Reason::TokenMalformed)?;
    let signing_input = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(secret),
        algorithm,
    )
    .map_err(|_| Reason::BadSignature)?;
    let token = format!("{signing_input}.{signature}");
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Reason::TokenTooLarge);
    }
    Ok(token)
}

/// What the key source needs to know about a token before it is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHint {
    /// The token's asymmetric `alg` (allowed by the policy).
    pub alg: Algorithm,
    /// The token's `kid`, when it is a string.
    pub kid: Option<String>,
}

/// Reads just enough of a token's header to decide whether JWKS keys are needed: `Some`
/// only for a token that could reach the key lookup at all — within the size limit, three
/// segments, a strict header without duplicate keys, an asymmetric `alg` listed in
/// `algorithms`, and none of the key-carrying or processing headers. So a token with
/// `jku`, `x5u` or `jwk`, an HMAC token or a malformed one never causes a JWKS fetch.
/// Pure, like [`verify`], which checks everything again.
pub fn key_hint(token: &str, algorithms: &[String]) -> Option<KeyHint> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let Ok([header_b64, _, _]) = segments(token) else {
        return None;
    };
    let header = parse_object(&B64.decode(header_b64).ok()?).ok()?;
    let name = header.member("alg")?.as_str()?;
    let alg = algorithm_from_name(name)?;
    if is_hmac(alg) || !algorithms.iter().any(|a| a == name) {
        return None;
    }
    if FORBIDDEN_HEADERS.iter().any(|n| header.has_member(n)) {
        return None;
    }
    let kid = header
        .member("kid")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some(KeyHint { alg, kid })
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

// ---------------------------------------------------------------------------------------
// The pipeline
// ---------------------------------------------------------------------------------------

/// Collects the dry-run report when asked to; the plain [`verify`] path builds no strings.
struct Tracer<'t> {
    out: Option<&'t mut Vec<Check>>,
}

impl Tracer<'_> {
    fn pass(&mut self, name: &'static str, detail: impl FnOnce() -> String) {
        if let Some(out) = self.out.as_deref_mut() {
            out.push(Check {
                name,
                ok: true,
                detail: detail(),
            });
        }
    }

    /// Records the failing step and hands back its reason, for `return Err(t.fail(…))`.
    fn fail(
        &mut self,
        name: &'static str,
        reason: Reason,
        detail: impl FnOnce() -> String,
    ) -> Reason {
        if let Some(out) = self.out.as_deref_mut() {
            out.push(Check {
                name,
                ok: false,
                detail: format!("{} ({})", detail(), reason.code()),
            });
        }
        reason
    }
}

/// The three segments of a compact JWS after step 2.
struct Parsed<'t> {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    /// `header.payload`, exactly as received: what the MAC covers and the replay digest.
    signing_input: &'t str,
    /// The signature segment as received (already checked to be canonical base64url).
    signature_b64: &'t str,
    /// The signature segment decoded.
    signature: Vec<u8>,
}

fn run(
    token: &str,
    policy: &VerifyPolicy<'_>,
    now: i64,
    t: &mut Tracer<'_>,
) -> Result<VerifiedToken, Reason> {
    // 1. Size, before any decoding work.
    if token.len() > MAX_TOKEN_BYTES {
        return Err(t.fail("size", Reason::TokenTooLarge, || {
            format!(
                "token is {} bytes; the limit is {MAX_TOKEN_BYTES}",
                token.len()
            )
        }));
    }
    t.pass("size", || {
        format!("token is {} bytes (limit {MAX_TOKEN_BYTES})", token.len())
    });

    // 2. Structure.
    let parsed = match parse_compact(token) {
        Ok(parsed) => parsed,
        Err(why) => return Err(t.fail("structure", Reason::TokenMalformed, || why.to_owned())),
    };
    t.pass("structure", || {
        "compact JWS: three canonical base64url segments; header and payload are JSON \
         objects without duplicate keys"
            .to_owned()
    });

    // 3. Algorithm and key.
    let (algorithm, key) = check_algorithm(&parsed.header, policy, t)?;

    // 4. Header parameters.
    check_header(&parsed.header, policy.purpose, t)?;

    // 5. Signature. The key family and algorithm are pinned by the checks above, never
    // taken from the token alone.
    check_signature(&parsed, algorithm, &key, t)?;

    // 6. Time claims.
    let claims = &parsed.claims;
    let times = check_times(claims, policy, now, t)?;

    // 7. Issuer and audience.
    check_issuer_audience(claims, policy, t)?;

    // 8. Purpose.
    check_purpose(claims, policy.purpose, t)?;

    // 9. jti.
    let jti = match claims.member("jti") {
        None => {
            t.pass("jti", || {
                "no jti; the replay key is the SHA-256 of the signing input".to_owned()
            });
            None
        }
        Some(Value::String(jti)) if jti.is_empty() => {
            // An empty jti identifies nothing; keying on "jti:" would make every such token
            // collide with every other. Fall back to the digest, which is always unique.
            t.pass("jti", || {
                "jti is empty; the replay key is the SHA-256 of the signing input".to_owned()
            });
            None
        }
        Some(Value::String(jti)) if jti.contains('\0') => {
            return Err(t.fail("jti", Reason::ClaimInvalid, || {
                "jti contains a NUL character".to_owned()
            }));
        }
        Some(Value::String(jti)) => {
            t.pass("jti", || "jti is a string; it is the replay key".to_owned());
            Some(jti.as_str())
        }
        Some(other) => {
            return Err(t.fail("jti", Reason::ClaimInvalid, || {
                format!("jti must be a string, not {}", json_type(other))
            }));
        }
    };

    if let Some(sub) = claims.member("sub").and_then(Value::as_str) {
        if sub.contains('\0') {
            return Err(t.fail("sub", Reason::ClaimInvalid, || {
                "sub contains a NUL character".to_owned()
            }));
        }
        // Stored on the user whole, and matched whole by a logout: a longer one cut short
        // could name someone else's account.
        if sub.chars().count() > MAX_SUB_CHARS {
            return Err(t.fail("sub", Reason::ClaimInvalid, || {
                format!("sub is longer than {MAX_SUB_CHARS} characters")
            }));
        }
    }

    let replay_key = match jti {
        Some(jti) if jti.len() <= MAX_JTI_KEY_BYTES => ["jti:", jti].concat(),
        // A longer jti is keyed by its SHA-256, so that any jti fits the key column's index
        // (PostgreSQL's B-tree entries hold at most about 2.7 KB).
        Some(jti) => format!("jti-sha256:{}", hex::encode(Sha256::digest(jti.as_bytes()))),
        None => format!(
            "sha256:{}",
            hex::encode(Sha256::digest(parsed.signing_input.as_bytes()))
        ),
    };
    Ok(VerifiedToken {
        claims: parsed.claims,
        replay_key,
        replay_expires_at: times.replay_expires_at,
    })
}

/// A compact token's three dot-separated segments, or how many it has. The dots are found with
/// `memchr`: `str::split` took about 750 instructions to search a 450-byte token, this about 300.
fn segments(token: &str) -> Result<[&str; 3], usize> {
    let mut dots = memchr::memchr_iter(b'.', token.as_bytes());
    match [dots.next(), dots.next(), dots.next()] {
        // A dot is one byte in UTF-8: either side of it is a character boundary.
        [Some(first), Some(second), None] => Ok([
            &token[..first],
            &token[first + 1..second],
            &token[second + 1..],
        ]),
        found => Err(1 + found.iter().flatten().count() + dots.count()),
    }
}

/// Step 2: split, decode and parse. The error is a fixed sentence for the dry-run report.
fn parse_compact(token: &str) -> Result<Parsed<'_>, &'static str> {
    let [header_b64, payload_b64, signature_b64] = segments(token).map_err(|n| match n {
        5 => "five segments: an encrypted JWE, not a signed JWS",
        _ => "a compact JWS has exactly three dot-separated segments",
    })?;
    if header_b64.is_empty() || payload_b64.is_empty() || signature_b64.is_empty() {
        return Err("a segment is empty (an unsigned or truncated token)");
    }
    let header = B64
        .decode(header_b64)
        .map_err(|_| "header is not canonical unpadded base64url")?;
    let payload = B64
        .decode(payload_b64)
        .map_err(|_| "payload is not canonical unpadded base64url")?;
    // Strict decoding also proves it canonical (a signature must have exactly one spelling);
    // the HMAC step compares these bytes.
    let signature = B64
        .decode(signature_b64)
        .map_err(|_| "signature is not canonical unpadded base64url")?;

    let header = parse_object(&header).map_err(|e| match e {
        JsonError::Utf8 => "header is not UTF-8",
        JsonError::Syntax => "header is not valid JSON",
        JsonError::Duplicate => "header has a duplicate key",
        JsonError::NotObject => "header is not a JSON object",
    })?;
    let claims = parse_object(&payload).map_err(|e| match e {
        JsonError::Utf8 => "payload is not UTF-8",
        JsonError::Syntax => "payload is not valid JSON",
        JsonError::Duplicate => "payload has a duplicate key",
        JsonError::NotObject => "payload is not a JSON object",
    })?;

    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    Ok(Parsed {
        header,
        claims,
        signing_input,
        signature_b64,
        signature,
    })
}

/// The key (or keys) step 3 chose for the signature step.
enum KeyChoice<'p> {
    /// The HMAC shared secret.
    Secret(&'p SharedSecret),
    /// Asymmetric keys of the alg's family, tried in order. Empty when a `kid` matched no
    /// key and no PEM key of the family exists (then the signature step fails).
    Public {
        candidates: Vec<&'p VerifyingKey>,
        unknown_kid: Option<&'p str>,
    },
}

/// Step 3: `alg` is exactly a known name, allowed by the policy, and has a usable key.
fn check_algorithm<'p>(
    header: &'p Map<String, Value>,
    policy: &VerifyPolicy<'p>,
    t: &mut Tracer<'_>,
) -> Result<(Algorithm, KeyChoice<'p>), Reason> {
    const STEP: &str = "algorithm";
    let name = match header.member("alg") {
        None => {
            return Err(t.fail(STEP, Reason::TokenMalformed, || {
                "header has no alg".to_owned()
            }));
        }
        Some(Value::String(name)) => name.as_str(),
        Some(other) => {
            return Err(t.fail(STEP, Reason::AlgNotAllowed, || {
                format!("alg must be a string, not {}", json_type(other))
            }));
        }
    };
    let Some(algorithm) = algorithm_from_name(name) else {
        return Err(t.fail(STEP, Reason::AlgNotAllowed, || {
            format!(
                "alg {} is not a supported algorithm name (names are case-sensitive; \
                 \"none\" is never accepted)",
                shown(name)
            )
        }));
    };
    if !policy.algorithms.iter().any(|allowed| allowed == name) {
        return Err(t.fail(STEP, Reason::AlgNotAllowed, || {
            format!("alg {name} is not in jwt-algorithms")
        }));
    }
    // Keys are typed per family: the shared secret is only ever an HMAC key and public keys
    // are never HMAC keys, so an asymmetric alg can never be "verified" with the secret and
    // a public key can never serve as an HMAC secret (HS/RS confusion, CVE-2016-10555).
    if !is_hmac(algorithm) {
        return choose_public_keys(header, policy.keys, algorithm, name, t)
            .map(|choice| (algorithm, choice));
    }
    match policy.shared_secret {
        Some(secret) if secret.byte_len() >= MIN_SECRET_BYTES => {
            t.pass(STEP, || {
                format!("alg {name} is allowed and the shared secret is configured")
            });
            Ok((algorithm, KeyChoice::Secret(secret)))
        }
        Some(_) => Err(t.fail(STEP, Reason::AlgNotAllowed, || {
            format!("the shared secret is shorter than {MIN_SECRET_BYTES} bytes and is never used")
        })),
        None => Err(t.fail(STEP, Reason::AlgNotAllowed, || {
            format!("alg {name} needs the shared secret, which is not set")
        })),
    }
}

/// Step 3 for an asymmetric alg: the family rule, then `kid` selection (module docs).
fn choose_public_keys<'p>(
    header: &'p Map<String, Value>,
    keys: &'p KeySet,
    algorithm: Algorithm,
    name: &str,
    t: &mut Tracer<'_>,
) -> Result<KeyChoice<'p>, Reason> {
    const STEP: &str = "algorithm";
    let family: Vec<&VerifyingKey> = keys.iter().filter(|k| k.can_verify(algorithm)).collect();
    if family.is_empty() {
        return Err(t.fail(STEP, Reason::AlgNotAllowed, || {
            format!("alg {name} is allowed but no key of its family is configured")
        }));
    }
    // A kid that is not a string selects nothing: the token is treated as having none.
    let Some(kid) = header.member("kid").and_then(Value::as_str) else {
        let n = family.len();
        t.pass(STEP, || {
            format!(
                "alg {name} is allowed; no kid, so each of the {n} key(s) of its family is tried"
            )
        });
        return Ok(KeyChoice::Public {
            candidates: family,
            unknown_kid: None,
        });
    };
    let named: Vec<&VerifyingKey> = keys
        .jwks()
        .iter()
        .filter(|k| k.kid() == Some(kid))
        .collect();
    if !named.is_empty() {
        let usable: Vec<&VerifyingKey> = named
            .iter()
            .copied()
            .filter(|k| k.can_verify(algorithm))
            .collect();
        if usable.is_empty() {
            return Err(t.fail(STEP, Reason::AlgNotAllowed, || {
                format!(
                    "kid {} names a {} key, which cannot verify alg {name}",
                    shown_kid(kid),
                    named[0].kind().name()
                )
            }));
        }
        t.pass(STEP, || {
            format!(
                "alg {name} is allowed; kid {} selects {}",
                shown_kid(kid),
                usable[0].describe()
            )
        });
        return Ok(KeyChoice::Public {
            candidates: usable,
            unknown_kid: None,
        });
    }
    let pem: Vec<&VerifyingKey> = keys
        .pem()
        .iter()
        .filter(|k| k.can_verify(algorithm))
        .collect();
    let n = pem.len();
    t.pass(STEP, || {
        format!(
            "alg {name} is allowed; kid {} matches no JWKS key, so the {n} PEM key(s) of its family are tried",
            shown_kid(kid)
        )
    });
    Ok(KeyChoice::Public {
        candidates: pem,
        unknown_kid: Some(kid),
    })
}

/// Step 5. For HMAC, the settings' key recomputes the MAC and aws-lc's `hmac::verify`
/// compares it in constant time. For the others, each candidate key is tried in order.
fn check_signature(
    parsed: &Parsed<'_>,
    algorithm: Algorithm,
    key: &KeyChoice<'_>,
    t: &mut Tracer<'_>,
) -> Result<(), Reason> {
    const STEP: &str = "signature";
    let input = parsed.signing_input.as_bytes();
    match key {
        KeyChoice::Secret(secret) => {
            if secret.verify(algorithm, input, &parsed.signature) {
                t.pass(STEP, || {
                    format!("{algorithm:?} signature matches the shared secret")
                });
                Ok(())
            } else {
                Err(t.fail(STEP, Reason::BadSignature, || {
                    format!("{algorithm:?} signature does not match the shared secret")
                }))
            }
        }
        KeyChoice::Public {
            candidates,
            unknown_kid,
        } => {
            if candidates.is_empty() {
                return Err(t.fail(STEP, Reason::BadSignature, || {
                    format!(
                        "no configured key has kid {} and there is no PEM key of its family",
                        shown_kid(unknown_kid.unwrap_or_default())
                    )
                }));
            }
            match candidates
                .iter()
                .find(|k| k.verify_signature(algorithm, input, parsed.signature_b64))
            {
                Some(k) => {
                    t.pass(STEP, || {
                        format!("{algorithm:?} signature matches {}", k.describe())
                    });
                    Ok(())
                }
                None => Err(t.fail(STEP, Reason::BadSignature, || {
                    format!(
                        "{algorithm:?} signature matches none of the {} candidate key(s)",
                        candidates.len()
                    )
                })),
            }
        }
    }
}

/// The algorithm of an exact, case-sensitive name in [`KNOWN_ALGORITHMS`].
pub fn algorithm_from_name(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Step 4: no key-carrying or processing-changing parameters; an expected `typ`.
fn check_header(
    header: &Map<String, Value>,
    purpose: TokenPurpose,
    t: &mut Tracer<'_>,
) -> Result<(), Reason> {
    const STEP: &str = "header";
    // The list is searched in its order, so that the report names the same parameter
    // whatever the header's order.
    if let Some(name) = FORBIDDEN_HEADERS.iter().find(|n| header.has_member(n)) {
        return Err(t.fail(STEP, Reason::HeaderNotAllowed, || {
            format!("header parameter {name} is not allowed (keys come only from settings)")
        }));
    }
    match header.member("typ") {
        None => {}
        Some(Value::String(typ)) if typ_allowed(typ, purpose) => {}
        Some(Value::String(typ)) => {
            return Err(t.fail(STEP, Reason::HeaderNotAllowed, || {
                format!(
                    "typ {} is not allowed for a {} token",
                    shown(typ),
                    purpose_name(purpose)
                )
            }));
        }
        Some(other) => {
            return Err(t.fail(STEP, Reason::HeaderNotAllowed, || {
                format!("typ must be a string, not {}", json_type(other))
            }));
        }
    }
    t.pass(STEP, || {
        "no key-carrying or processing headers; typ is absent or expected".to_owned()
    });
    Ok(())
}

/// Explicit typing (RFC 8725 §3.11): a login token may not claim to be a logout token.
fn typ_allowed(typ: &str, purpose: TokenPurpose) -> bool {
    let plain = ["JWT", "application/jwt"];
    let logout = ["logout+jwt", "application/logout+jwt"];
    plain.iter().any(|v| typ.eq_ignore_ascii_case(v))
        || (purpose == TokenPurpose::Logout && logout.iter().any(|v| typ.eq_ignore_ascii_case(v)))
}

struct Times {
    replay_expires_at: i64,
}

/// Reads a numeric-date claim: absent → `None`; a JSON number → its value; anything else
/// (a string, bool, null, array, object) → the reason it is not one, for `claim_invalid`
/// (CVE-2026-25537: a string `exp` must not count as "absent").
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, String> {
    match claims.member(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(format!("{name} is not a finite number")),
        },
        Some(other) => Err(format!(
            "{name} must be a JSON number, not {}",
            json_type(other)
        )),
    }
}

/// Step 6, in SPEC §4.3's order: the rules on `exp`, `nbf` and `iat`, then "carries `iat` or
/// `exp`", then the claims' types. So a well-typed claim that fails its rule decides the
/// code before another claim's type does (an expired `exp` next to a string `iat` is
/// `token_expired`). Comparisons are done in `f64` so fractional dates work; unix times are
/// far below 2^53, where every integer is exact.
fn check_times(
    claims: &Map<String, Value>,
    policy: &VerifyPolicy<'_>,
    now: i64,
    t: &mut Tracer<'_>,
) -> Result<Times, Reason> {
    let skew = policy.clock_skew_seconds;
    let max_age = policy.max_age_seconds;
    let read = [
        ("exp", numeric_date(claims, "exp")),
        ("nbf", numeric_date(claims, "nbf")),
        ("iat", numeric_date(claims, "iat")),
    ];
    let valid = |i: usize| read[i].1.as_ref().ok().copied().flatten();
    let (exp, nbf, iat) = (valid(0), valid(1), valid(2));

    if let Some(exp) = exp {
        if exp <= now.saturating_sub(skew) as f64 {
            return Err(t.fail("exp", Reason::TokenExpired, || {
                format!(
                    "exp {} is not after now {now} minus the skew of {skew} s",
                    num(exp)
                )
            }));
        }
        t.pass("exp", || {
            format!(
                "exp {} is after now {now} minus the skew of {skew} s",
                num(exp)
            )
        });
    }
    if let Some(nbf) = nbf {
        if nbf > now.saturating_add(skew) as f64 {
            return Err(t.fail("nbf", Reason::TokenNotYetValid, || {
                format!(
                    "nbf {} is later than now {now} plus the skew of {skew} s",
                    num(nbf)
                )
            }));
        }
        t.pass("nbf", || {
            format!(
                "nbf {} is not later than now {now} plus the skew of {skew} s",
                num(nbf)
            )
        });
    }
    if let Some(iat) = iat {
        if iat > now.saturating_add(skew) as f64 {
            return Err(t.fail("iat", Reason::TokenIssuedInFuture, || {
                format!(
                    "iat {} is later than now {now} plus the skew of {skew} s",
                    num(iat)
                )
            }));
        }
        let limit = max_age.saturating_add(skew);
        if now as f64 - iat > limit as f64 {
            return Err(t.fail("iat", Reason::TokenTooOld, || {
                format!(
                    "iat {} is more than {max_age} s (+{skew} s skew) before now {now}",
                    num(iat)
                )
            }));
        }
        t.pass("iat", || {
            format!(
                "iat {} is within {max_age} s (+{skew} s skew) of now {now}",
                num(iat)
            )
        });
    }
    let absent = |i: usize| matches!(read[i].1, Ok(None));
    if absent(0) && absent(2) {
        return Err(t.fail("lifetime", Reason::TokenNeverExpires, || {
            "the token has neither iat nor exp, so it would be valid forever".to_owned()
        }));
    }
    for (name, result) in &read {
        if let Err(why) = result {
            return Err(t.fail(name, Reason::ClaimInvalid, || why.clone()));
        }
    }

    // The token stops passing the exp check at exp + skew and the iat check after
    // iat + max_age + skew: it is usable until the earlier of the two.
    let usable_until = |skew: i64, max_age: i64| {
        let by_exp = exp.map(|exp| ceil_secs(exp).saturating_add(skew));
        let by_iat = iat.map(|iat| ceil_secs(iat).saturating_add(max_age).saturating_add(skew));
        match (by_exp, by_iat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    };
    // Here `iat` or `exp` is present and every time claim is a number, so `until` is known;
    // the `else` only keeps the function total.
    let Some(until) = usable_until(skew, max_age) else {
        return Err(t.fail("lifetime", Reason::TokenNeverExpires, || {
            "the token has neither iat nor exp, so it would be valid forever".to_owned()
        }));
    };
    t.pass("lifetime", || {
        format!("the token can be used until {until} at the latest")
    });
    // The replay record lives as long as the token could pass these checks under any skew
    // and maximum age an administrator may set later: raising either must not make a token
    // that was used once usable again.
    let replay_expires_at =
        usable_until(MAX_CLOCK_SKEW_SECONDS, MAX_TOKEN_AGE_SECONDS).unwrap_or(until);
    Ok(Times { replay_expires_at })
}

/// Rounds a numeric date up to whole seconds; `as` saturates at the `i64` bounds.
fn ceil_secs(v: f64) -> i64 {
    v.ceil() as i64
}

/// Step 7.
fn check_issuer_audience(
    claims: &Map<String, Value>,
    policy: &VerifyPolicy<'_>,
    t: &mut Tracer<'_>,
) -> Result<(), Reason> {
    match policy.issuer {
        None => t.pass("issuer", || {
            "jwt-issuer is not set; iss is not checked".to_owned()
        }),
        Some(want) => match claims.member("iss") {
            Some(Value::String(iss)) if iss == want => {
                t.pass("issuer", || "iss equals jwt-issuer".to_owned());
            }
            Some(Value::String(iss)) => {
                return Err(t.fail("issuer", Reason::IssuerMismatch, || {
                    format!("iss {} does not equal jwt-issuer", shown(iss))
                }));
            }
            None => {
                return Err(t.fail("issuer", Reason::IssuerMismatch, || {
                    "jwt-issuer is set but the token has no iss".to_owned()
                }));
            }
            Some(other) => {
                return Err(t.fail("issuer", Reason::IssuerMismatch, || {
                    format!("iss must be a string, not {}", json_type(other))
                }));
            }
        },
    }

    match policy.audience {
        None => t.pass("audience", || {
            "jwt-audience is not set; aud is not checked".to_owned()
        }),
        Some(want) => {
            let ok = match claims.member("aud") {
                Some(Value::String(aud)) => aud == want,
                Some(Value::Array(items)) => {
                    items.iter().all(Value::is_string)
                        && items.iter().any(|v| v.as_str() == Some(want))
                }
                _ => false,
            };
            if !ok {
                return Err(t.fail("audience", Reason::AudienceMismatch, || {
                    "aud is missing, or is not jwt-audience nor an array of strings containing it"
                        .to_owned()
                }));
            }
            t.pass("audience", || "aud contains jwt-audience".to_owned());
        }
    }
    Ok(())
}

/// Step 8: login and logout tokens are mutually exclusive (RFC 8725 §3.12).
fn check_purpose(
    claims: &Map<String, Value>,
    purpose: TokenPurpose,
    t: &mut Tracer<'_>,
) -> Result<(), Reason> {
    const STEP: &str = "purpose";
    match purpose {
        TokenPurpose::Login => {
            if claims.has_member("events") {
                return Err(t.fail(STEP, Reason::ClaimInvalid, || {
                    "a login token must not carry an events claim (it is a logout token)".to_owned()
                }));
            }
            t.pass(STEP, || "login token without an events claim".to_owned());
        }
        TokenPurpose::Logout => {
            let has_event = claims
                .member("events")
                .and_then(Value::as_object)
                .and_then(|events| events.member(BACKCHANNEL_LOGOUT_EVENT))
                .is_some_and(Value::is_object);
            if !has_event {
                return Err(t.fail(STEP, Reason::ClaimInvalid, || {
                    format!("a logout token needs events: {{\"{BACKCHANNEL_LOGOUT_EVENT}\": {{}}}}")
                }));
            }
            // OIDC Back-Channel Logout §2.4: a nonce means an ID token is being replayed
            // as a logout token.
            if claims.has_member("nonce") {
                return Err(t.fail(STEP, Reason::ClaimInvalid, || {
                    "a logout token must not carry a nonce claim".to_owned()
                }));
            }
            t.pass(STEP, || {
                "logout token with the back-channel-logout event and no nonce".to_owned()
            });
        }
    }
    Ok(())
}

fn purpose_name(purpose: TokenPurpose) -> &'static str {
    match purpose {
        TokenPurpose::Login => "login",
        TokenPurpose::Logout => "logout",
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Formats a numeric date without a spurious `.0` for whole numbers.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Echoes an attacker-chosen string into a dry-run detail: quoted, escaped, at most 40
/// characters.
fn shown(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
    }
}

// ---------------------------------------------------------------------------------------
// Duplicate-key-rejecting JSON
// ---------------------------------------------------------------------------------------

/// Why a segment is not an acceptable JSON object.
enum JsonError {
    Utf8,
    Syntax,
    Duplicate,
    NotObject,
}

/// The marker our visitor puts in its error, to tell a duplicate key from a syntax error.
const DUPLICATE_KEY: &str = "duplicate key";

/// Parses a UTF-8 JSON object, refusing duplicate names at any depth (RFC 7515 §4,
/// RFC 7519 §4, RFC 8725 §2.6). `serde_json::Value` keeps the last duplicate silently, so
/// `{"email":"victim","email":"attacker"}` would otherwise verify as whichever the
/// attacker put last. serde_json's recursion limit (128) bounds nesting, so a deeply nested
/// payload is an error, not a stack overflow.
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, JsonError> {
    let text = std::str::from_utf8(bytes).map_err(|_| JsonError::Utf8)?;
    // As `serde_json::from_str::<StrictValue>`, with room for `TOP_CAPACITY` names made at once
    // in the top-level object.
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = Deserializer::deserialize_any(
        &mut de,
        StrictVisitor {
            capacity: TOP_CAPACITY,
        },
    )
    .and_then(|value| de.end().map(|()| value));
    match parsed {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(JsonError::NotObject),
        Err(e) if e.is_data() && e.to_string().starts_with(DUPLICATE_KEY) => {
            Err(JsonError::Duplicate)
        }
        Err(_) => Err(JsonError::Syntax),
    }
}

/// A token's header or claims, as [`parse_object`] leaves them, read by name.
///
/// The names are compared one by one: a token has a few of them (the harness's carry nine
/// between the two), and `serde_json`'s map hashes a name with SipHash before it looks, which
/// costs more than a dozen comparisons of short strings (the lengths differ for most). Past
/// `LINEAR_MEMBERS` (32) names, the map's own lookup.
pub trait Members {
    fn member(&self, name: &str) -> Option<&Value>;

    fn has_member(&self, name: &str) -> bool {
        self.member(name).is_some()
    }
}

/// The most names [`Members`] looks through one by one.
const LINEAR_MEMBERS: usize = 32;

impl Members for Map<String, Value> {
    fn member(&self, name: &str) -> Option<&Value> {
        if self.len() > LINEAR_MEMBERS {
            return self.get(name);
        }
        self.iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v)
    }
}

/// A `serde_json::Value` whose objects were checked for duplicate names while parsing.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(StrictVisitor { capacity: 0 })
            .map(StrictValue)
    }
}

/// The names a token's header or claims ([`parse_object`]) have room for before the map grows.
/// Grown from empty, its map was allocated and rehashed twice for a token's seven claims.
/// Nested objects start empty: a token of many small objects must not cost a map of that
/// size each.
const TOP_CAPACITY: usize = 8;

/// Makes a [`Value`], refusing duplicate names; an object's map starts with room for
/// `capacity` names.
struct StrictVisitor {
    capacity: usize,
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::with_capacity(self.capacity);
        // Keys are compared after unescaping, so "alg" and "\u0061lg" are the same name.
        // One hash per name: the entry both finds a duplicate and is where the value goes.
        while let Some(key) = access.next_key::<String>()? {
            let serde_json::map::Entry::Vacant(slot) = map.entry(key) else {
                return Err(de::Error::custom(DUPLICATE_KEY));
            };
            let StrictValue(value) = access.next_value()?;
            slot.insert(value);
        }
        Ok(Value::Object(map))
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;
    /// 64 lower-case hex characters used as UTF-8 bytes, like a generated `jwt-shared-secret`.
    const SECRET: &str = "3f1c9a7e5b2d4f60819a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70";
    const OTHER_SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn algs(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    static NO_KEYS: std::sync::LazyLock<KeySet> = std::sync::LazyLock::new(KeySet::default);
    static SECRET_KEYS: std::sync::LazyLock<SharedSecret> =
        std::sync::LazyLock::new(|| SharedSecret::new(SECRET.as_bytes()));

    fn policy(algorithms: &[String]) -> VerifyPolicy<'_> {
        VerifyPolicy {
            algorithms,
            shared_secret: Some(&SECRET_KEYS),
            keys: &NO_KEYS,
            issuer: None,
            audience: None,
            max_age_seconds: 180,
            clock_skew_seconds: 30,
            purpose: TokenPurpose::Login,
        }
    }

    fn b64(bytes: &[u8]) -> String {
        B64.encode(bytes)
    }

    fn jwt_alg(name: &str) -> Algorithm {
        algorithm_from_name(name).unwrap()
    }

    /// Builds a token from raw header and payload JSON text (so tests can write duplicate
    /// keys and odd headers), MAC'd over `header.payload` with `secret` and `mac_alg`.
    fn raw(header: &str, payload: &str, secret: &[u8], mac_alg: Algorithm) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(secret),
            mac_alg,
        )
        .unwrap();
        format!("{input}.{sig}")
    }

    /// `raw` with the test secret and HS256.
    fn hs256(header: &str, payload: &str) -> String {
        raw(header, payload, SECRET.as_bytes(), Algorithm::HS256)
    }

    fn valid_claims() -> String {
        format!(r#"{{"email":"u@example.com","first_name":"U","last_name":"Ser","iat":{NOW}}}"#)
    }

    fn claims_map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn check(token: &str, p: &VerifyPolicy<'_>) -> Result<VerifiedToken, Reason> {
        verify(token, p, NOW)
    }

    fn reason(token: &str, p: &VerifyPolicy<'_>) -> Reason {
        match check(token, p) {
            Ok(_) => panic!("token unexpectedly accepted"),
            Err(r) => r,
        }
    }

    fn valid_token() -> String {
        hs256(r#"{"alg":"HS256","typ":"JWT"}"#, &valid_claims())
    }

    // --- the happy path ------------------------------------------------------------------

    #[test]
    fn valid_hs256_token_passes_with_digest_replay_key() {
        let a = algs(&["HS256"]);
        let token = valid_token();
        let ok = check(&token, &policy(&a)).unwrap();
        assert_eq!(ok.claims["email"], json!("u@example.com"));
        assert_eq!(ok.claims["iat"], json!(NOW));
        let dot = token.rfind('.').unwrap();
        let expected = hex::encode(Sha256::digest(&token.as_bytes()[..dot]));
        assert_eq!(ok.replay_key, format!("sha256:{expected}"));
        assert_eq!(ok.replay_expires_at, NOW + 86_400 + 300);
    }

    #[test]
    fn valid_token_with_jti_uses_jti_replay_key() {
        let a = algs(&["HS256"]);
        let token = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"email":"u@example.com","iat":{NOW},"jti":"abc-123"}}"#),
        );
        let ok = check(&token, &policy(&a)).unwrap();
        assert_eq!(ok.replay_key, "jti:abc-123");
    }

    #[test]
    fn empty_jti_falls_back_to_digest_replay_key() {
        let a = algs(&["HS256"]);
        let token = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"iat":{NOW},"jti":""}}"#),
        );
        let ok = check(&token, &policy(&a)).unwrap();
        assert!(ok.replay_key.starts_with("sha256:"));
    }

    #[test]
    fn replay_key_ignores_signature_and_differs_per_signing_input() {
        let a = algs(&["HS256"]);
        let t1 = hs256(r#"{"alg":"HS256"}"#, &format!(r#"{{"iat":{NOW}}}"#));
        let t2 = hs256(r#"{"alg":"HS256"}"#, &format!(r#"{{"iat":{NOW},"x":1}}"#));
        let k1 = check(&t1, &policy(&a)).unwrap().replay_key;
        let k2 = check(&t2, &policy(&a)).unwrap().replay_key;
        assert_ne!(k1, k2);
        assert_eq!(k1, check(&t1, &policy(&a)).unwrap().replay_key);
    }

    #[test]
    fn claims_keep_token_key_order() {
        let a = algs(&["HS256"]);
        let token = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"z":1,"a":2,"iat":{NOW}}}"#),
        );
        let ok = check(&token, &policy(&a)).unwrap();
        let keys: Vec<&str> = ok.claims.keys().map(String::as_str).collect();
        assert_eq!(keys, ["z", "a", "iat"]);
    }

    #[test]
    fn replay_expiry_is_min_of_exp_and_iat_bounds_under_the_largest_skew_and_max_age() {
        // The policy has a skew of 30 s and a maximum age of 180 s; the record must outlive
        // the token under 300 s and 86,400 s, which an administrator may set later.
        let a = algs(&["HS256"]);
        let only_exp = hs256(r#"{"alg":"HS256"}"#, &format!(r#"{{"exp":{}}}"#, NOW + 60));
        assert_eq!(
            check(&only_exp, &policy(&a)).unwrap().replay_expires_at,
            NOW + 360
        );
        let both = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"iat":{NOW},"exp":{}}}"#, NOW + 3600),
        );
        assert_eq!(
            check(&both, &policy(&a)).unwrap().replay_expires_at,
            NOW + 3900
        );
        let long = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"iat":{NOW},"exp":{}}}"#, NOW + 10 * 86_400),
        );
        assert_eq!(
            check(&long, &policy(&a)).unwrap().replay_expires_at,
            NOW + 86_700
        );
        let frac = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"exp":{}.2}}"#, NOW + 10),
        );
        assert_eq!(
            check(&frac, &policy(&a)).unwrap().replay_expires_at,
            NOW + 311
        );
    }

    #[test]
    fn a_long_jti_is_keyed_by_its_sha256() {
        let a = algs(&["HS256"]);
        let key = |jti: &str| {
            let token = hs256(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{{"iat":{NOW},"jti":"{jti}"}}"#),
            );
            check(&token, &policy(&a)).unwrap().replay_key
        };
        let at_limit = "j".repeat(256);
        assert_eq!(key(&at_limit), format!("jti:{at_limit}"));
        let long = "j".repeat(3000);
        assert_eq!(
            key(&long),
            format!(
                "jti-sha256:{}",
                hex::encode(Sha256::digest(long.as_bytes()))
            )
        );
        assert_ne!(key(&long), key(&"j".repeat(3001)));
    }

    #[test]
    fn sign_hmac_round_trips_all_hmac_algs() {
        let a = algs(&["HS256", "HS384", "HS512"]);
        let claims = claims_map(json!({"email": "u@example.com", "iat": NOW}));
        for alg in ["HS256", "HS384", "HS512"] {
            let token = sign_hmac(alg, &claims, SECRET.as_bytes()).unwrap();
            let header: Value =
                serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap())
                    .unwrap();
            assert_eq!(header, json!({"alg": alg, "typ": "JWT"}));
            let ok = check(&token, &policy(&a)).unwrap();
            assert_eq!(ok.claims, claims);
        }
    }

    #[test]
    fn sign_hmac_refuses_other_algs_short_secrets_and_huge_claims() {
        let claims = claims_map(json!({"iat": NOW}));
        for alg in ["RS256", "none", "hs256", ""] {
            assert_eq!(
                sign_hmac(alg, &claims, SECRET.as_bytes()),
                Err(Reason::AlgNotAllowed)
            );
        }
        assert_eq!(
            sign_hmac("HS256", &claims, b"short"),
            Err(Reason::AlgNotAllowed)
        );
        let big = claims_map(json!({"iat": NOW, "blob": "x".repeat(MAX_TOKEN_BYTES)}));
        assert_eq!(
            sign_hmac("HS256", &big, SECRET.as_bytes()),
            Err(Reason::TokenTooLarge)
        );
    }

    #[test]
    fn reason_codes_are_the_spec_codes() {
        let all = [
            (Reason::TokenMalformed, "token_malformed"),
            (Reason::TokenTooLarge, "token_too_large"),
            (Reason::AlgNotAllowed, "alg_not_allowed"),
            (Reason::HeaderNotAllowed, "header_not_allowed"),
            (Reason::BadSignature, "bad_signature"),
            (Reason::TokenExpired, "token_expired"),
            (Reason::TokenNotYetValid, "token_not_yet_valid"),
            (Reason::TokenTooOld, "token_too_old"),
            (Reason::TokenIssuedInFuture, "token_issued_in_future"),
            (Reason::TokenNeverExpires, "token_never_expires"),
            (Reason::ClaimInvalid, "claim_invalid"),
            (Reason::IssuerMismatch, "issuer_mismatch"),
            (Reason::AudienceMismatch, "audience_mismatch"),
        ];
        for (r, code) in all {
            assert_eq!(r.code(), code);
            assert_eq!(r.to_string(), code);
        }
    }

    // --- size and structure ----------------------------------------------------------------

    #[test]
    fn token_over_8_kib_is_too_large() {
        let a = algs(&["HS256"]);
        let token = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"iat":{NOW},"pad":"{}"}}"#, "x".repeat(7000)),
        );
        assert!(token.len() > MAX_TOKEN_BYTES);
        assert_eq!(reason(&token, &policy(&a)), Reason::TokenTooLarge);
        // Size wins over everything, even garbage.
        assert_eq!(
            reason(&"!".repeat(MAX_TOKEN_BYTES + 1), &policy(&a)),
            Reason::TokenTooLarge
        );
        assert_eq!(
            reason(&"a.".repeat(16 * 1024), &policy(&a)),
            Reason::TokenTooLarge
        );
    }

    #[test]
    fn token_of_exactly_8_kib_is_not_too_large() {
        let a = algs(&["HS256"]);
        let base = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"iat":{NOW},"pad":""}}"#),
        );
        // Each 3 bytes of padding add 4 base64 characters; find a length that lands <= 8192.
        let mut n = (MAX_TOKEN_BYTES - base.len()) / 4 * 3;
        let token = loop {
            let t = hs256(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{{"iat":{NOW},"pad":"{}"}}"#, "x".repeat(n)),
            );
            if t.len() <= MAX_TOKEN_BYTES {
                break t;
            }
            n -= 1;
        };
        assert!(token.len() > MAX_TOKEN_BYTES - 4);
        assert!(check(&token, &policy(&a)).is_ok());
    }

    #[test]
    fn wrong_segment_counts_are_malformed() {
        let a = algs(&["HS256"]);
        let token = valid_token();
        let mut parts = token.split('.');
        let (h, p, s) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        for bad in [
            String::new(),
            h.to_owned(),
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}.{s}"),
            format!("{h}.{p}.{s}."),
            format!("{h}..{p}.{s}.{s}"),
            // JWE compact serialisation (5 parts).
            "eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4R0NNIn0..AAAA.BBBB.CCCC".to_owned(),
            format!("{h}.{p}.{s}.{s}.{s}"),
        ] {
            assert_eq!(reason(&bad, &policy(&a)), Reason::TokenMalformed, "{bad}");
        }
    }

    #[test]
    fn segments_are_what_split_on_dots_gives() {
        let token = valid_token();
        for t in [
            token.as_str(),
            "",
            ".",
            "..",
            "...",
            "a.b.c",
            "a.b",
            "a.b.c.d.e",
            "é.ü.€",
            "é.ü.€.",
            ".é.",
            "a\u{2024}b.c.d",
        ] {
            let split: Vec<&str> = t.split('.').collect();
            match segments(t) {
                Ok(three) => assert_eq!(three.to_vec(), split, "{t:?}"),
                Err(n) => {
                    assert_ne!(split.len(), 3, "{t:?}");
                    assert_eq!(n, split.len(), "{t:?}");
                }
            }
        }
    }

    #[test]
    fn empty_segments_are_malformed() {
        let a = algs(&["HS256"]);
        let token = valid_token();
        let mut parts = token.split('.');
        let (h, p, s) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        for bad in [
            format!("{h}.{p}."),
            format!("{h}..{s}"),
            format!(".{p}.{s}"),
            "..".to_owned(),
        ] {
            assert_eq!(reason(&bad, &policy(&a)), Reason::TokenMalformed, "{bad}");
        }
    }

    #[test]
    fn surrounding_whitespace_is_malformed() {
        let a = algs(&["HS256"]);
        let token = valid_token();
        for bad in [
            format!(" {token}"),
            format!("{token}\n"),
            format!("{token} "),
            format!("\t{token}"),
        ] {
            assert_eq!(reason(&bad, &policy(&a)), Reason::TokenMalformed);
        }
    }

    #[test]
    fn padding_and_non_url_safe_base64_are_malformed() {
        let a = algs(&["HS256"]);
        // A header whose encoding needs padding: `{"alg":"HS256"}` is 15 bytes → 20 chars,
        // no padding; add a space to make it 16 bytes → 22 chars + "==".
        let header = r#"{"alg":"HS256"} "#;
        let token = hs256(header, &valid_claims());
        assert!(check(&token, &policy(&a)).is_ok());
        let mut parts = token.split('.');
        let (h, p, s) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        for bad in [
            format!("{h}==.{p}.{s}"),
            format!("{h}.{p}=.{s}"),
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}.{s}%3D"),
            format!("{h}.{p} .{s}"),
            format!("{h}.{}\n{}.{s}", &p[..4], &p[4..]),
        ] {
            assert_eq!(reason(&bad, &policy(&a)), Reason::TokenMalformed, "{bad}");
        }
        // Standard-alphabet characters where url-safe ones belong.
        let std_sig = "+/".repeat(21) + "A";
        assert_eq!(
            reason(&format!("{h}.{p}.{std_sig}"), &policy(&a)),
            Reason::TokenMalformed
        );
    }

    #[test]
    fn non_canonical_trailing_bits_are_malformed() {
        let a = algs(&["HS256"]);
        let token = valid_token();
        let (rest, sig) = token.rsplit_once('.').unwrap();
        // A 32-byte MAC is 43 chars; the last one carries 4 data bits and 2 zero bits.
        // Flipping a trailing bit keeps the bytes but changes the spelling.
        let last = sig.chars().last().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let idx = alphabet.find(last).unwrap();
        let tweaked = alphabet.as_bytes()[idx ^ 1] as char;
        let bad = format!("{rest}.{}{tweaked}", &sig[..sig.len() - 1]);
        assert_eq!(reason(&bad, &policy(&a)), Reason::TokenMalformed);
        // Same trick on the payload segment (its length is not a multiple of 4).
        let (h, p) = rest.split_once('.').unwrap();
        assert_ne!(p.len() % 4, 0);
        let last = p.chars().last().unwrap();
        let idx = alphabet.find(last).unwrap();
        let tweaked = alphabet.as_bytes()[idx ^ 1] as char;
        let bad = format!("{h}.{}{tweaked}.{sig}", &p[..p.len() - 1]);
        assert_eq!(reason(&bad, &policy(&a)), Reason::TokenMalformed);
    }

    #[test]
    fn header_and_payload_must_be_utf8_json_objects() {
        let a = algs(&["HS256"]);
        let cases = [
            (r#"{"alg":"HS256"}"#.to_owned(), "[1,2]".to_owned()),
            (r#"{"alg":"HS256"}"#.to_owned(), r#""a string""#.to_owned()),
            (r#"{"alg":"HS256"}"#.to_owned(), "null".to_owned()),
            (r#"{"alg":"HS256"}"#.to_owned(), "{".to_owned()),
            (
                r#"{"alg":"HS256"}"#.to_owned(),
                format!(r#"{{"iat":{NOW}}} x"#),
            ),
            (r#"["HS256"]"#.to_owned(), valid_claims()),
            (r#"{"alg":"HS256""#.to_owned(), valid_claims()),
            (r#"{"alg":"HS256",}"#.to_owned(), valid_claims()),
        ];
        for (h, p) in cases {
            assert_eq!(
                reason(&hs256(&h, &p), &policy(&a)),
                Reason::TokenMalformed,
                "{h} {p}"
            );
        }
        // Invalid UTF-8 bytes in the payload and a lone surrogate escape.
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256"}"#),
            b64(b"{\"a\":\"\xff\"}")
        );
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        assert_eq!(
            reason(&format!("{input}.{sig}"), &policy(&a)),
            Reason::TokenMalformed
        );
        let lone = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"iat":{NOW},"a":"\ud800"}}"#),
        );
        assert_eq!(reason(&lone, &policy(&a)), Reason::TokenMalformed);
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_crash() {
        let a = algs(&["HS256"]);
        let deep = format!(
            r#"{{"iat":{NOW},"x":{}{}}}"#,
            "[".repeat(2000),
            "]".repeat(2000)
        );
        let token = hs256(r#"{"alg":"HS256"}"#, &deep);
        assert_eq!(reason(&token, &policy(&a)), Reason::TokenMalformed);
    }

    #[test]
    fn duplicate_keys_in_header_are_malformed() {
        let a = algs(&["HS256"]);
        for h in [
            r#"{"alg":"none","alg":"HS256"}"#,
            r#"{"alg":"HS256","alg":"none"}"#,
            r#"{"alg":"HS256","alg":"HS256"}"#,
            r#"{"alg":"HS256","\u0061lg":"HS256"}"#,
            r#"{"alg":"HS256","kid":{"a":1,"a":2}}"#,
        ] {
            assert_eq!(
                reason(&hs256(h, &valid_claims()), &policy(&a)),
                Reason::TokenMalformed,
                "{h}"
            );
        }
    }

    #[test]
    fn duplicate_keys_in_claims_are_malformed_top_level_and_nested() {
        let a = algs(&["HS256"]);
        for p in [
            format!(r#"{{"email":"victim@x","email":"attacker@x","iat":{NOW}}}"#),
            format!(r#"{{"groups":["Users"],"groups":["Administrators"],"iat":{NOW}}}"#),
            format!(r#"{{"iat":1,"iat":{NOW}}}"#),
            format!(r#"{{"iat":{NOW},"attrs":{{"team":"a","team":"b"}}}}"#),
            format!(r#"{{"iat":{NOW},"list":[{{"k":1}},{{"k":1,"k":2}}]}}"#),
            format!(r#"{{"iat":{NOW},"deep":{{"a":{{"b":{{"c":1,"c":1}}}}}}}}"#),
        ] {
            assert_eq!(
                reason(&hs256(r#"{"alg":"HS256"}"#, &p), &policy(&a)),
                Reason::TokenMalformed,
                "{p}"
            );
        }
    }

    #[test]
    fn a_duplicate_is_found_past_the_room_made_at_first() {
        let a = algs(&["HS256"]);
        // Past the room made at first, and past the names compared one by one.
        let names: String = (0..TOP_CAPACITY * 5)
            .map(|i| format!(r#","c{i}":{i}"#))
            .collect();
        let fine = format!(r#"{{"email":"u@example.com","iat":{NOW}{names}}}"#);
        assert!(check(&hs256(r#"{"alg":"HS256"}"#, &fine), &policy(&a)).is_ok());
        for again in ["c0", "c23", "c39", "email"] {
            let p = format!(r#"{{"email":"u@example.com","iat":{NOW}{names},"{again}":1}}"#);
            assert_eq!(
                reason(&hs256(r#"{"alg":"HS256"}"#, &p), &policy(&a)),
                Reason::TokenMalformed,
                "{again}"
            );
        }
    }

    #[test]
    fn members_are_found_as_the_map_finds_them() {
        for n in [0, 1, 7, LINEAR_MEMBERS, 100] {
            let map: Map<String, Value> = (0..n).map(|i| (format!("m{i}"), json!(i))).collect();
            assert_eq!(map.len() > LINEAR_MEMBERS, n == 100);
            for i in 0..=n {
                let name = format!("m{i}");
                assert_eq!(map.member(&name), map.get(&name), "{n} {name}");
                assert_eq!(map.has_member(&name), i < n, "{n} {name}");
            }
            for absent in ["", "m", "m00", "M1", "m1 "] {
                assert_eq!(map.member(absent), None, "{n} {absent}");
            }
        }
        // Names are compared as the parser left them: unescaped.
        let Ok(parsed) = parse_object(br#"{"\u0061lg":"HS256"}"#) else {
            panic!("not parsed");
        };
        assert_eq!(parsed.member("alg"), Some(&json!("HS256")));
    }

    #[test]
    fn malformed_wins_over_bad_alg_and_bad_signature() {
        let a = algs(&["HS256"]);
        let token = raw(
            r#"{"alg":"none"}"#,
            r#"{"a":1,"a":2}"#,
            OTHER_SECRET.as_bytes(),
            Algorithm::HS256,
        );
        assert_eq!(reason(&token, &policy(&a)), Reason::TokenMalformed);
    }

    // --- alg ------------------------------------------------------------------------------

    #[test]
    fn alg_none_in_every_case_variant_is_refused() {
        // Policies that even list the spellings cannot enable them.
        let a = algs(&["HS256", "none", "None", "NONE", "nOnE"]);
        let claims = valid_claims();
        for variant in ["none", "None", "NONE", "nOnE"] {
            let header = format!(r#"{{"alg":"{variant}"}}"#);
            let real = hs256(&header, &claims);
            let (h_p, _) = real.rsplit_once('.').unwrap();
            for token in [format!("{h_p}."), format!("{h_p}.AAAA"), real.clone()] {
                let r = reason(&token, &policy(&a));
                if token.ends_with('.') {
                    // Empty signature segment: structure fails first.
                    assert_eq!(r, Reason::TokenMalformed, "{variant}");
                } else {
                    assert_eq!(r, Reason::AlgNotAllowed, "{variant}");
                }
            }
        }
        // The well-known literal J-01 header spellings.
        for h in [
            "eyJhbGciOiJub25lIn0",
            "eyJhbGciOiJOb25lIn0",
            "eyJhbGciOiJOT05FIn0",
            "eyJhbGciOiJuT25FIn0",
        ] {
            let p = b64(valid_claims().as_bytes());
            assert_eq!(
                reason(&format!("{h}.{p}.AAAA"), &policy(&a)),
                Reason::AlgNotAllowed
            );
        }
    }

    #[test]
    fn missing_alg_is_malformed_and_odd_alg_is_not_allowed() {
        let a = algs(&["HS256"]);
        for h in ["{}", r#"{"typ":"JWT"}"#] {
            assert_eq!(
                reason(&hs256(h, &valid_claims()), &policy(&a)),
                Reason::TokenMalformed
            );
        }
        for h in [
            r#"{"alg":""}"#,
            r#"{"alg":null}"#,
            r#"{"alg":123}"#,
            r#"{"alg":["HS256"]}"#,
            r#"{"alg":{"name":"HS256"}}"#,
        ] {
            assert_eq!(
                reason(&hs256(h, &valid_claims()), &policy(&a)),
                Reason::AlgNotAllowed,
                "{h}"
            );
        }
    }

    #[test]
    fn alg_case_and_whitespace_variants_are_refused() {
        // Even when the policy (wrongly) lists the variant spelling.
        let a = algs(&["HS256", "hs256", "HS256 "]);
        for alg in [
            "hs256",
            "Hs256",
            "HS256 ",
            " HS256",
            "HS256\u{0}",
            "HS 256",
            "hS256",
        ] {
            let header = json!({ "alg": alg }).to_string();
            assert_eq!(
                reason(&hs256(&header, &valid_claims()), &policy(&a)),
                Reason::AlgNotAllowed,
                "{alg:?}"
            );
        }
    }

    #[test]
    fn other_hmac_algs_are_refused_when_only_hs256_is_allowed() {
        let a = algs(&["HS256"]);
        for alg in ["HS384", "HS512"] {
            let token = raw(
                &format!(r#"{{"alg":"{alg}"}}"#),
                &valid_claims(),
                SECRET.as_bytes(),
                jwt_alg(alg),
            );
            assert_eq!(reason(&token, &policy(&a)), Reason::AlgNotAllowed);
        }
        // HS384 header but an HS256 MAC: still refused at the alg step.
        let mixed = raw(
            r#"{"alg":"HS384"}"#,
            &valid_claims(),
            SECRET.as_bytes(),
            Algorithm::HS256,
        );
        assert_eq!(reason(&mixed, &policy(&a)), Reason::AlgNotAllowed);
    }

    #[test]
    fn hs512_token_passes_when_allowed() {
        let a = algs(&["HS256", "HS512"]);
        let token = raw(
            r#"{"alg":"HS512"}"#,
            &valid_claims(),
            SECRET.as_bytes(),
            Algorithm::HS512,
        );
        assert!(check(&token, &policy(&a)).is_ok());
        // An HS512 header over an HS256 MAC does not verify.
        let mixed = raw(
            r#"{"alg":"HS512"}"#,
            &valid_claims(),
            SECRET.as_bytes(),
            Algorithm::HS256,
        );
        assert_eq!(reason(&mixed, &policy(&a)), Reason::BadSignature);
    }

    #[test]
    fn asymmetric_algs_over_the_shared_secret_are_refused() {
        let all = algs(&KNOWN_ALGORITHMS);
        for alg in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
        ] {
            let header = format!(r#"{{"alg":"{alg}"}}"#);
            // MAC'd with the shared secret (HS/RS key confusion) and with garbage.
            let token = raw(
                &header,
                &valid_claims(),
                SECRET.as_bytes(),
                Algorithm::HS256,
            );
            assert_eq!(
                reason(&token, &policy(&all)),
                Reason::AlgNotAllowed,
                "{alg}"
            );
            assert_eq!(
                reason(&token, &policy(&algs(&["HS256"]))),
                Reason::AlgNotAllowed
            );
        }
        // J-06 "psychic signature": ES256 with an all-zero signature.
        let token = format!(
            "eyJhbGciOiJFUzI1NiJ9.{}.{}",
            b64(valid_claims().as_bytes()),
            b64(&[0u8; 64])
        );
        assert_eq!(reason(&token, &policy(&all)), Reason::AlgNotAllowed);
    }

    #[test]
    fn secret_shorter_than_32_bytes_is_refused() {
        let a = algs(&["HS256"]);
        for secret in ["", "secret", "0123456789abcdef0123456789abcde"] {
            let token = raw(
                r#"{"alg":"HS256"}"#,
                &valid_claims(),
                secret.as_bytes(),
                Algorithm::HS256,
            );
            let keys = SharedSecret::new(secret.as_bytes());
            let p = VerifyPolicy {
                shared_secret: Some(&keys),
                ..policy(&a)
            };
            assert_eq!(
                reason(&token, &p),
                Reason::AlgNotAllowed,
                "{} bytes",
                secret.len()
            );
        }
        // Exactly 32 bytes is enough.
        let secret = "0123456789abcdef0123456789abcdef";
        let token = raw(
            r#"{"alg":"HS256"}"#,
            &valid_claims(),
            secret.as_bytes(),
            Algorithm::HS256,
        );
        let keys = SharedSecret::new(secret.as_bytes());
        let p = VerifyPolicy {
            shared_secret: Some(&keys),
            ..policy(&a)
        };
        assert!(check(&token, &p).is_ok());
    }

    #[test]
    fn unset_secret_refuses_every_alg() {
        let a = algs(&["HS256"]);
        let p = VerifyPolicy {
            shared_secret: None,
            ..policy(&a)
        };
        assert_eq!(reason(&valid_token(), &p), Reason::AlgNotAllowed);
    }

    #[test]
    fn alg_not_allowed_wins_over_forbidden_headers() {
        let a = algs(&["HS256"]);
        let token = hs256(
            r#"{"alg":"none","jku":"http://127.0.0.1/"}"#,
            &valid_claims(),
        );
        assert_eq!(reason(&token, &policy(&a)), Reason::AlgNotAllowed);
    }

    // --- headers --------------------------------------------------------------------------

    #[test]
    fn key_carrying_and_processing_headers_are_refused() {
        let a = algs(&["HS256"]);
        let headers = [
            r#"{"alg":"HS256","crit":["exp"]}"#,
            r#"{"alg":"HS256","crit":[]}"#,
            r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#,
            r#"{"alg":"HS256","cty":"JWT"}"#,
            r#"{"alg":"HS256","jku":"http://127.0.0.1:9/jwks.json"}"#,
            r#"{"alg":"HS256","x5u":"http://127.0.0.1:9/cert.pem"}"#,
            r#"{"alg":"HS256","jwk":{"kty":"oct","k":"AAAA"}}"#,
            r#"{"alg":"HS256","x5c":["MIIB"]}"#,
            r#"{"alg":"HS256","zip":"DEF"}"#,
            r#"{"alg":"HS256","enc":"A128GCM"}"#,
            r#"{"alg":"HS256","jku":null}"#,
            // Names are compared as parsed: unescaped.
            r#"{"alg":"HS256","\u006aku":"http://127.0.0.1:9/jwks.json"}"#,
        ];
        for h in headers {
            assert_eq!(
                reason(&hs256(h, &valid_claims()), &policy(&a)),
                Reason::HeaderNotAllowed,
                "{h}"
            );
        }
        // Past the names compared one by one (`LINEAR_MEMBERS`), the map's own look-up.
        let many: String = (0..40).map(|i| format!(r#","h{i}":{i}"#)).collect();
        let long = format!(r#"{{"alg":"HS256"{many}}}"#);
        assert!(check(&hs256(&long, &valid_claims()), &policy(&a)).is_ok());
        let long = format!(r#"{{"alg":"HS256"{many},"crit":["exp"]}}"#);
        assert_eq!(
            reason(&hs256(&long, &valid_claims()), &policy(&a)),
            Reason::HeaderNotAllowed
        );
        // Certificate thumbprints point to nothing and are ignored (Entra ID and AD FS send
        // `x5t` with every token), as SPEC §4.3's list leaves them out.
        for h in [
            r#"{"alg":"HS256","x5t":"AAAA"}"#,
            r#"{"alg":"HS256","x5t#S256":"AAAA","kid":"k1"}"#,
        ] {
            assert!(
                check(&hs256(h, &valid_claims()), &policy(&a)).is_ok(),
                "{h} is accepted"
            );
        }
        // The literal J-13/J-14 headers.
        for h in [
            "eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl19",
            "eyJhbGciOiJIUzI1NiIsImN0eSI6IkpXVCJ9",
        ] {
            let input = format!("{h}.{}", b64(valid_claims().as_bytes()));
            let sig = jsonwebtoken::crypto::sign(
                input.as_bytes(),
                &EncodingKey::from_secret(SECRET.as_bytes()),
                Algorithm::HS256,
            )
            .unwrap();
            assert_eq!(
                reason(&format!("{input}.{sig}"), &policy(&a)),
                Reason::HeaderNotAllowed
            );
        }
    }

    #[test]
    fn typ_must_be_jwt_in_any_case() {
        let a = algs(&["HS256"]);
        for typ in ["JWT", "jwt", "Jwt", "application/jwt", "APPLICATION/JWT"] {
            let h = json!({"alg": "HS256", "typ": typ}).to_string();
            assert!(
                check(&hs256(&h, &valid_claims()), &policy(&a)).is_ok(),
                "{typ}"
            );
        }
        for typ in [
            json!("at+jwt"),
            json!("secevent+jwt"),
            json!("JOSE"),
            json!("logout+jwt"),
            json!("application/logout+jwt"),
            json!(" JWT"),
            json!(""),
            json!(null),
            json!(["JWT"]),
        ] {
            let h = json!({"alg": "HS256", "typ": typ}).to_string();
            assert_eq!(
                reason(&hs256(&h, &valid_claims()), &policy(&a)),
                Reason::HeaderNotAllowed,
                "{typ}"
            );
        }
    }

    #[test]
    fn kid_is_ignored_for_the_shared_secret() {
        let a = algs(&["HS256"]);
        for kid in [
            json!("../../../../../../dev/null"),
            json!("x' UNION SELECT '1';--"),
            json!(7),
        ] {
            let h = json!({"alg": "HS256", "kid": kid}).to_string();
            assert!(check(&hs256(&h, &valid_claims()), &policy(&a)).is_ok());
        }
        // kid path traversal with the empty key still fails.
        let h = r#"{"alg":"HS256","kid":"/dev/null"}"#;
        let token = raw(h, &valid_claims(), b"", Algorithm::HS256);
        assert_eq!(reason(&token, &policy(&a)), Reason::BadSignature);
    }

    #[test]
    fn forbidden_header_wins_over_bad_signature() {
        let a = algs(&["HS256"]);
        let token = raw(
            r#"{"alg":"HS256","jwk":{"kty":"oct","k":"QUFB"}}"#,
            &valid_claims(),
            b"AAA",
            Algorithm::HS256,
        );
        assert_eq!(reason(&token, &policy(&a)), Reason::HeaderNotAllowed);
    }

    // --- signature ------------------------------------------------------------------------

    #[test]
    fn token_signed_with_another_secret_is_bad_signature() {
        let a = algs(&["HS256"]);
        let token = raw(
            r#"{"alg":"HS256"}"#,
            &valid_claims(),
            OTHER_SECRET.as_bytes(),
            Algorithm::HS256,
        );
        assert_eq!(reason(&token, &policy(&a)), Reason::BadSignature);
        // The secret's hex decoding is a different key (the secret is used as UTF-8 bytes).
        let decoded = hex::decode(SECRET).unwrap();
        let token = raw(
            r#"{"alg":"HS256"}"#,
            &valid_claims(),
            &decoded,
            Algorithm::HS256,
        );
        assert_eq!(reason(&token, &policy(&a)), Reason::BadSignature);
    }

    #[test]
    fn tampered_signature_or_payload_is_bad_signature() {
        let a = algs(&["HS256"]);
        let token = valid_token();
        let (rest, sig) = token.rsplit_once('.').unwrap();
        // Change the first character (full 6 data bits), keeping the encoding canonical.
        let first = if sig.starts_with('A') { "B" } else { "A" };
        let bad = format!("{rest}.{first}{}", &sig[1..]);
        assert_eq!(reason(&bad, &policy(&a)), Reason::BadSignature);
        // Truncated, 1-byte and 33-byte MACs.
        let mac = B64.decode(sig).unwrap();
        for len in [31, 1, 33] {
            let mut m = mac.clone();
            m.resize(len, 0);
            assert_eq!(
                reason(&format!("{rest}.{}", b64(&m)), &policy(&a)),
                Reason::BadSignature
            );
        }
        // A payload swapped under the original signature.
        let (h, _) = rest.split_once('.').unwrap();
        let other = b64(format!(r#"{{"email":"admin@example.com","iat":{NOW}}}"#).as_bytes());
        assert_eq!(
            reason(&format!("{h}.{other}.{sig}"), &policy(&a)),
            Reason::BadSignature
        );
    }

    #[test]
    fn bad_signature_wins_over_claim_failures() {
        let a = algs(&["HS256"]);
        let token = raw(
            r#"{"alg":"HS256"}"#,
            r#"{"exp":"soon","events":{}}"#,
            OTHER_SECRET.as_bytes(),
            Algorithm::HS256,
        );
        assert_eq!(reason(&token, &policy(&a)), Reason::BadSignature);
    }

    // --- time -----------------------------------------------------------------------------

    fn with_claims(payload: &str) -> String {
        hs256(r#"{"alg":"HS256"}"#, payload)
    }

    #[test]
    fn numeric_dates_must_be_numbers() {
        let a = algs(&["HS256"]);
        for p in [
            format!(r#"{{"iat":"{NOW}"}}"#),
            format!(r#"{{"exp":"{NOW}"}}"#),
            format!(r#"{{"iat":{NOW},"exp":"{}"}}"#, NOW + 60),
            format!(r#"{{"iat":{NOW},"nbf":"{NOW}"}}"#),
            r#"{"iat":null}"#.to_owned(),
            r#"{"iat":true}"#.to_owned(),
            format!(r#"{{"iat":[{NOW}]}}"#),
            format!(r#"{{"exp":{{"t":{NOW}}}}}"#),
        ] {
            assert_eq!(
                reason(&with_claims(&p), &policy(&a)),
                Reason::ClaimInvalid,
                "{p}"
            );
        }
    }

    #[test]
    fn a_time_rule_decides_before_another_claims_type() {
        // SPEC §4.3 lists the time rules, then "carries iat or exp", then the types.
        let a = algs(&["HS256"]);
        for (p, want) in [
            (
                format!(r#"{{"exp":{},"iat":"x"}}"#, NOW - 1000),
                Reason::TokenExpired,
            ),
            (
                format!(r#"{{"iat":{},"exp":"x"}}"#, NOW - 10_000),
                Reason::TokenTooOld,
            ),
            (
                format!(r#"{{"iat":{NOW},"nbf":{},"exp":null}}"#, NOW + 1000),
                Reason::TokenNotYetValid,
            ),
            (r#"{"nbf":"x"}"#.to_owned(), Reason::TokenNeverExpires),
            (r#"{"exp":"x"}"#.to_owned(), Reason::ClaimInvalid),
            (
                format!(r#"{{"iat":{NOW},"nbf":"x"}}"#),
                Reason::ClaimInvalid,
            ),
        ] {
            assert_eq!(reason(&with_claims(&p), &policy(&a)), want, "{p}");
        }
    }

    #[test]
    fn fractional_numeric_dates_are_accepted() {
        let a = algs(&["HS256"]);
        let p = format!(
            r#"{{"iat":{NOW}.5,"nbf":{}.25,"exp":{}.75}}"#,
            NOW - 1,
            NOW + 60
        );
        assert!(check(&with_claims(&p), &policy(&a)).is_ok());
    }

    #[test]
    fn exp_in_the_past_beyond_skew_is_expired() {
        let a = algs(&["HS256"]);
        let p = format!(r#"{{"exp":{}}}"#, NOW - 31);
        assert_eq!(reason(&with_claims(&p), &policy(&a)), Reason::TokenExpired);
        let p = format!(r#"{{"exp":{}}}"#, NOW - 30);
        assert_eq!(reason(&with_claims(&p), &policy(&a)), Reason::TokenExpired);
        let p = format!(r#"{{"exp":{}}}"#, NOW - 29);
        assert!(check(&with_claims(&p), &policy(&a)).is_ok());
    }

    #[test]
    fn nbf_beyond_skew_is_not_yet_valid() {
        let a = algs(&["HS256"]);
        let p = format!(r#"{{"iat":{NOW},"nbf":{}}}"#, NOW + 3600);
        assert_eq!(
            reason(&with_claims(&p), &policy(&a)),
            Reason::TokenNotYetValid
        );
        let p = format!(r#"{{"iat":{NOW},"nbf":{}}}"#, NOW + 30);
        assert!(check(&with_claims(&p), &policy(&a)).is_ok());
    }

    #[test]
    fn iat_beyond_skew_in_the_future_is_refused() {
        let a = algs(&["HS256"]);
        for iat in [NOW + 31, NOW + 3600] {
            let p = format!(r#"{{"iat":{iat}}}"#);
            assert_eq!(
                reason(&with_claims(&p), &policy(&a)),
                Reason::TokenIssuedInFuture
            );
        }
        assert_eq!(
            reason(&with_claims(r#"{"iat":1e300}"#), &policy(&a)),
            Reason::TokenIssuedInFuture
        );
        let p = format!(r#"{{"iat":{}}}"#, NOW + 30);
        assert!(check(&with_claims(&p), &policy(&a)).is_ok());
    }

    #[test]
    fn iat_older_than_max_age_is_too_old() {
        let a = algs(&["HS256"]);
        for iat in [NOW - 211, NOW - 100_000, -1, 0] {
            let p = format!(r#"{{"iat":{iat}}}"#);
            assert_eq!(
                reason(&with_claims(&p), &policy(&a)),
                Reason::TokenTooOld,
                "{iat}"
            );
        }
        // Up to max_age + skew is still fine (J-20 e: now-179; and the boundary now-210).
        for iat in [NOW - 179, NOW - 181, NOW - 210] {
            let p = format!(r#"{{"iat":{iat}}}"#);
            assert!(check(&with_claims(&p), &policy(&a)).is_ok(), "{iat}");
        }
        // A long exp does not rescue an old iat.
        let p = format!(r#"{{"iat":{},"exp":{}}}"#, NOW - 1000, NOW + 1000);
        assert_eq!(reason(&with_claims(&p), &policy(&a)), Reason::TokenTooOld);
    }

    #[test]
    fn max_age_and_skew_come_from_the_policy() {
        let a = algs(&["HS256"]);
        let p = VerifyPolicy {
            max_age_seconds: 10,
            clock_skew_seconds: 0,
            ..policy(&a)
        };
        assert!(check(&with_claims(&format!(r#"{{"iat":{}}}"#, NOW - 10)), &p).is_ok());
        assert_eq!(
            reason(&with_claims(&format!(r#"{{"iat":{}}}"#, NOW - 11)), &p),
            Reason::TokenTooOld
        );
        assert_eq!(
            reason(&with_claims(&format!(r#"{{"iat":{}}}"#, NOW + 1)), &p),
            Reason::TokenIssuedInFuture
        );
    }

    #[test]
    fn neither_iat_nor_exp_never_expires() {
        let a = algs(&["HS256"]);
        assert_eq!(
            reason(&with_claims(r#"{"email":"u@example.com"}"#), &policy(&a)),
            Reason::TokenNeverExpires
        );
        let p = format!(r#"{{"nbf":{NOW}}}"#);
        assert_eq!(
            reason(&with_claims(&p), &policy(&a)),
            Reason::TokenNeverExpires
        );
        // exp alone is fine (Metabase-compatible IdPs may omit iat).
        let p = format!(r#"{{"exp":{}}}"#, NOW + 60);
        assert!(check(&with_claims(&p), &policy(&a)).is_ok());
    }

    // --- issuer and audience ----------------------------------------------------------------

    #[test]
    fn issuer_must_match_when_configured() {
        let a = algs(&["HS256"]);
        let p = VerifyPolicy {
            issuer: Some("https://idp.example.com"),
            ..policy(&a)
        };
        let good = format!(r#"{{"iat":{NOW},"iss":"https://idp.example.com"}}"#);
        assert!(check(&with_claims(&good), &p).is_ok());
        for bad in [
            format!(r#"{{"iat":{NOW},"iss":"https://evil.example.com"}}"#),
            format!(r#"{{"iat":{NOW},"iss":"HTTPS://IDP.EXAMPLE.COM"}}"#),
            format!(r#"{{"iat":{NOW},"iss":["https://idp.example.com"]}}"#),
            format!(r#"{{"iat":{NOW}}}"#),
        ] {
            assert_eq!(
                reason(&with_claims(&bad), &p),
                Reason::IssuerMismatch,
                "{bad}"
            );
        }
        // Not configured: anything goes.
        let any = format!(r#"{{"iat":{NOW},"iss":42}}"#);
        assert!(check(&with_claims(&any), &policy(&a)).is_ok());
    }

    #[test]
    fn audience_must_match_when_configured_string_and_array() {
        let a = algs(&["HS256"]);
        let p = VerifyPolicy {
            audience: Some("latchkey"),
            ..policy(&a)
        };
        for good in [
            format!(r#"{{"iat":{NOW},"aud":"latchkey"}}"#),
            format!(r#"{{"iat":{NOW},"aud":["other","latchkey"]}}"#),
            format!(r#"{{"iat":{NOW},"aud":["latchkey"]}}"#),
        ] {
            assert!(check(&with_claims(&good), &p).is_ok(), "{good}");
        }
        for bad in [
            format!(r#"{{"iat":{NOW}}}"#),
            format!(r#"{{"iat":{NOW},"aud":"other-svc"}}"#),
            format!(r#"{{"iat":{NOW},"aud":["other"]}}"#),
            format!(r#"{{"iat":{NOW},"aud":[]}}"#),
            format!(r#"{{"iat":{NOW},"aud":["latchkey",1]}}"#),
            format!(r#"{{"iat":{NOW},"aud":null}}"#),
            format!(r#"{{"iat":{NOW},"aud":"Latchkey"}}"#),
        ] {
            assert_eq!(
                reason(&with_claims(&bad), &p),
                Reason::AudienceMismatch,
                "{bad}"
            );
        }
    }

    #[test]
    fn audience_not_configured_ignores_aud() {
        let a = algs(&["HS256"]);
        let p = format!(r#"{{"iat":{NOW},"aud":"whatever"}}"#);
        assert!(check(&with_claims(&p), &policy(&a)).is_ok());
    }

    #[test]
    fn issuer_is_checked_before_audience() {
        let a = algs(&["HS256"]);
        let p = VerifyPolicy {
            issuer: Some("i"),
            audience: Some("a"),
            ..policy(&a)
        };
        let bad = format!(r#"{{"iat":{NOW},"iss":"x","aud":"y"}}"#);
        assert_eq!(reason(&with_claims(&bad), &p), Reason::IssuerMismatch);
    }

    // --- purpose ----------------------------------------------------------------------------

    fn logout_policy(a: &[String]) -> VerifyPolicy<'_> {
        VerifyPolicy {
            purpose: TokenPurpose::Logout,
            ..policy(a)
        }
    }

    fn logout_claims() -> String {
        format!(
            r#"{{"iat":{NOW},"sub":"u1","jti":"lo-1","events":{{"{BACKCHANNEL_LOGOUT_EVENT}":{{}}}}}}"#
        )
    }

    #[test]
    fn events_claim_in_a_login_token_is_refused() {
        let a = algs(&["HS256"]);
        assert_eq!(
            reason(&with_claims(&logout_claims()), &policy(&a)),
            Reason::ClaimInvalid
        );
        let p = format!(r#"{{"iat":{NOW},"events":null}}"#);
        assert_eq!(reason(&with_claims(&p), &policy(&a)), Reason::ClaimInvalid);
    }

    #[test]
    fn logout_token_with_the_event_passes() {
        let a = algs(&["HS256"]);
        let ok = check(&with_claims(&logout_claims()), &logout_policy(&a)).unwrap();
        assert_eq!(ok.replay_key, "jti:lo-1");
        for typ in ["logout+jwt", "application/logout+jwt", "JWT", "Logout+JWT"] {
            let h = json!({"alg": "HS256", "typ": typ}).to_string();
            assert!(
                check(&hs256(&h, &logout_claims()), &logout_policy(&a)).is_ok(),
                "{typ}"
            );
        }
    }

    #[test]
    fn logout_token_rules() {
        let a = algs(&["HS256"]);
        let bad = [
            format!(r#"{{"iat":{NOW},"sub":"u1"}}"#),
            format!(r#"{{"iat":{NOW},"sub":"u1","events":{{}}}}"#),
            format!(r#"{{"iat":{NOW},"sub":"u1","events":["{BACKCHANNEL_LOGOUT_EVENT}"]}}"#),
            format!(r#"{{"iat":{NOW},"sub":"u1","events":{{"{BACKCHANNEL_LOGOUT_EVENT}":true}}}}"#),
            format!(r#"{{"iat":{NOW},"sub":"u1","events":{{"{BACKCHANNEL_LOGOUT_EVENT}":"x"}}}}"#),
            format!(r#"{{"iat":{NOW},"sub":"u1","events":{{"http://other/event":{{}}}}}}"#),
            format!(
                r#"{{"iat":{NOW},"sub":"u1","nonce":"n","events":{{"{BACKCHANNEL_LOGOUT_EVENT}":{{}}}}}}"#
            ),
        ];
        for p in bad {
            assert_eq!(
                reason(&with_claims(&p), &logout_policy(&a)),
                Reason::ClaimInvalid,
                "{p}"
            );
        }
        // A login-typed logout token is still checked against the logout time rules.
        let old = format!(
            r#"{{"iat":{},"events":{{"{BACKCHANNEL_LOGOUT_EVENT}":{{}}}}}}"#,
            NOW - 1000
        );
        assert_eq!(
            reason(&with_claims(&old), &logout_policy(&a)),
            Reason::TokenTooOld
        );
    }

    #[test]
    fn logout_typ_is_refused_for_login_tokens() {
        let a = algs(&["HS256"]);
        let h = r#"{"alg":"HS256","typ":"logout+jwt"}"#;
        assert_eq!(
            reason(&hs256(h, &valid_claims()), &policy(&a)),
            Reason::HeaderNotAllowed
        );
    }

    // --- jti ------------------------------------------------------------------------------

    #[test]
    fn non_string_jti_is_claim_invalid() {
        let a = algs(&["HS256"]);
        for jti in ["1", "null", "[\"a\"]", "{}", "true"] {
            let p = format!(r#"{{"iat":{NOW},"jti":{jti}}}"#);
            assert_eq!(
                reason(&with_claims(&p), &policy(&a)),
                Reason::ClaimInvalid,
                "{jti}"
            );
        }
    }

    #[test]
    fn nul_in_jti_or_sub_is_claim_invalid() {
        let a = algs(&["HS256"]);
        for p in [
            format!(r#"{{"iat":{NOW},"jti":"a\u0000b"}}"#),
            format!(r#"{{"iat":{NOW},"sub":"a\u0000b"}}"#),
        ] {
            assert_eq!(
                reason(&with_claims(&p), &policy(&a)),
                Reason::ClaimInvalid,
                "{p}"
            );
        }
        // A non-string sub is not the verifier's business (it is simply not used).
        let p = format!(r#"{{"iat":{NOW},"sub":7}}"#);
        assert!(check(&with_claims(&p), &policy(&a)).is_ok());
    }

    #[test]
    fn sub_is_at_most_255_characters() {
        let a = algs(&["HS256"]);
        // Characters, not bytes: 255 two-byte characters pass.
        for (sub, ok) in [
            ("s".repeat(255), true),
            ("é".repeat(255), true),
            ("s".repeat(256), false),
            ("é".repeat(256), false),
        ] {
            let p = format!(r#"{{"iat":{NOW},"sub":"{sub}"}}"#);
            let got = check(&with_claims(&p), &policy(&a)).map(|_| ());
            if ok {
                assert!(got.is_ok(), "{} characters", sub.chars().count());
            } else {
                assert_eq!(reason(&with_claims(&p), &policy(&a)), Reason::ClaimInvalid);
            }
        }
    }

    // --- dry-run trace ----------------------------------------------------------------------

    #[test]
    fn trace_lists_every_step_on_success() {
        let a = algs(&["HS256"]);
        let mut trace = Vec::new();
        let token = valid_token();
        assert!(verify_traced(&token, &policy(&a), NOW, &mut trace).is_ok());
        let names: Vec<&str> = trace.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "size",
                "structure",
                "algorithm",
                "header",
                "signature",
                "iat",
                "lifetime",
                "issuer",
                "audience",
                "purpose",
                "jti"
            ]
        );
        assert!(trace.iter().all(|c| c.ok));
    }

    #[test]
    fn trace_ends_with_the_failing_step_and_never_leaks_secrets() {
        let a = algs(&["HS256"]);
        let cases = [
            raw(
                r#"{"alg":"HS256"}"#,
                &valid_claims(),
                OTHER_SECRET.as_bytes(),
                Algorithm::HS256,
            ),
            hs256(r#"{"alg":"none"}"#, &valid_claims()),
            hs256(r#"{"alg":"HS256","jku":"http://x"}"#, &valid_claims()),
            with_claims(&format!(r#"{{"iat":{}}}"#, NOW - 1000)),
            with_claims(r#"{"email":"u@example.com"}"#),
            "not-a-token".to_owned(),
        ];
        for token in cases {
            let mut trace = Vec::new();
            let err = verify_traced(&token, &policy(&a), NOW, &mut trace).unwrap_err();
            assert_eq!(err, verify(&token, &policy(&a), NOW).unwrap_err());
            let last = trace.last().unwrap();
            assert!(!last.ok);
            assert!(last.detail.contains(err.code()));
            assert!(trace[..trace.len() - 1].iter().all(|c| c.ok));
            let sig = token.rsplit('.').next().unwrap();
            for c in &trace {
                assert!(!c.detail.contains(SECRET));
                assert!(!c.detail.contains(OTHER_SECRET));
                assert!(!c.detail.contains(&token));
                assert!(sig.len() < 8 || !c.detail.contains(sig));
                assert!(serde_json::to_string(c).is_ok());
            }
        }
    }

    #[test]
    fn the_report_names_the_first_forbidden_parameter_of_the_list() {
        let a = algs(&["HS256"]);
        for header in [
            r#"{"alg":"HS256","cty":"JWT","jwk":{},"x5t":"t"}"#,
            r#"{"cty":"JWT","alg":"HS256","jwk":{}}"#,
            r#"{"jwk":{},"cty":"JWT","alg":"HS256"}"#,
        ] {
            let mut trace = Vec::new();
            let token = hs256(header, &valid_claims());
            let err = verify_traced(&token, &policy(&a), NOW, &mut trace).unwrap_err();
            assert_eq!(err, Reason::HeaderNotAllowed, "{header}");
            let last = trace.last().unwrap();
            assert!(last.detail.contains("header parameter jwk "), "{header}");
        }
        // The thumbprints alone are no forbidden parameter.
        let token = hs256(
            r#"{"alg":"HS256","x5t":"t","x5t#S256":"u"}"#,
            &valid_claims(),
        );
        assert!(check(&token, &policy(&a)).is_ok());
    }

    #[test]
    fn trace_truncates_echoed_alg() {
        let a = algs(&["HS256"]);
        let long = "A".repeat(500);
        let h = json!({"alg": long}).to_string();
        let mut trace = Vec::new();
        let _ = verify_traced(&hs256(&h, &valid_claims()), &policy(&a), NOW, &mut trace);
        assert!(trace.last().unwrap().detail.len() < 200);
    }

    // --- asymmetric keys ---------------------------------------------------------------------

    mod asymmetric {
        use super::*;
        use crate::sso::keys::{KeySet, parse_jwk, parse_pem};

        macro_rules! fixture {
            ($name:literal) => {
                include_str!(concat!("../../tests/fixtures/keys/", $name))
            };
        }

        const RSA_A: (&str, &str) = (fixture!("rsa-a.pub.pem"), fixture!("rsa-a.key.pem"));
        const RSA_B: (&str, &str) = (fixture!("rsa-b.pub.pem"), fixture!("rsa-b.key.pem"));
        const EC_A: (&str, &str) = (fixture!("ec-p256-a.pub.pem"), fixture!("ec-p256-a.key.pem"));
        const EC_B: (&str, &str) = (fixture!("ec-p256-b.pub.pem"), fixture!("ec-p256-b.key.pem"));
        const EC384: (&str, &str) = (fixture!("ec-p384.pub.pem"), fixture!("ec-p384.key.pem"));
        const ED: (&str, &str) = (fixture!("ed25519.pub.pem"), fixture!("ed25519.key.pem"));

        fn encoding_key(private_pem: &str, alg: Algorithm) -> EncodingKey {
            match alg {
                Algorithm::ES256 | Algorithm::ES384 => {
                    EncodingKey::from_ec_pem(private_pem.as_bytes())
                }
                Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem.as_bytes()),
                _ => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
            }
            .unwrap()
        }

        /// A token with this header text, signed with a private key.
        fn signed(header: &str, private_pem: &str, alg: Algorithm) -> String {
            let input = format!(
                "{}.{}",
                b64(header.as_bytes()),
                b64(valid_claims().as_bytes())
            );
            let sig =
                jsonwebtoken::crypto::sign(input.as_bytes(), &encoding_key(private_pem, alg), alg)
                    .unwrap();
            format!("{input}.{sig}")
        }

        fn pem_set(pems: &[&str]) -> KeySet {
            KeySet::from_pem(
                pems.iter()
                    .enumerate()
                    .map(|(i, p)| parse_pem(p, i + 1).unwrap())
                    .collect(),
            )
        }

        fn jwk(private_pem: &str, alg: Algorithm, kid: &str) -> Value {
            let key = encoding_key(private_pem, alg);
            let mut v =
                serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg).unwrap())
                    .unwrap();
            v.as_object_mut().unwrap().remove("alg");
            v["kid"] = json!(kid);
            v
        }

        fn jwks_set(pems: &[&str], jwks: &[Value]) -> KeySet {
            let pem: Vec<_> = pems
                .iter()
                .enumerate()
                .map(|(i, p)| parse_pem(p, i + 1).unwrap())
                .collect();
            let jwks: Vec<_> = jwks.iter().map(|j| parse_jwk(j).unwrap()).collect();
            KeySet::new(pem.into(), jwks.into())
        }

        fn policy_with<'a>(
            a: &'a [String],
            keys: &'a KeySet,
            secret: Option<&'a SharedSecret>,
        ) -> VerifyPolicy<'a> {
            VerifyPolicy {
                keys,
                shared_secret: secret,
                ..policy(a)
            }
        }

        #[test]
        fn every_asymmetric_alg_verifies_with_its_pem_key() {
            let all = algs(&KNOWN_ALGORITHMS);
            let keys = pem_set(&[RSA_A.0, EC_A.0, EC384.0, ED.0]);
            let p = policy_with(&all, &keys, None);
            for (alg, private) in [
                (Algorithm::RS256, RSA_A.1),
                (Algorithm::RS384, RSA_A.1),
                (Algorithm::RS512, RSA_A.1),
                (Algorithm::PS256, RSA_A.1),
                (Algorithm::PS384, RSA_A.1),
                (Algorithm::PS512, RSA_A.1),
                (Algorithm::ES256, EC_A.1),
                (Algorithm::ES384, EC384.1),
                (Algorithm::EdDSA, ED.1),
            ] {
                let h = json!({"alg": format!("{alg:?}"), "typ": "JWT"}).to_string();
                let token = signed(&h, private, alg);
                assert!(check(&token, &p).is_ok(), "{alg:?}");
                // The same header signed by another key of the family is a bad signature.
                let other = match alg {
                    Algorithm::ES256 => Some(EC_B.1),
                    Algorithm::ES384 | Algorithm::EdDSA => None,
                    _ => Some(RSA_B.1),
                };
                if let Some(other) = other {
                    assert_eq!(
                        reason(&signed(&h, other, alg), &p),
                        Reason::BadSignature,
                        "{alg:?}"
                    );
                }
            }
            // HMAC still works next to public keys when a secret is configured.
            let both = policy_with(&all, &keys, Some(&SECRET_KEYS));
            assert!(check(&valid_token(), &both).is_ok());
            assert_eq!(reason(&valid_token(), &p), Reason::AlgNotAllowed);
        }

        #[test]
        fn an_alg_without_a_key_of_its_family_is_not_allowed() {
            let all = algs(&KNOWN_ALGORITHMS);
            let keys = pem_set(&[EC_A.0]);
            let p = policy_with(&all, &keys, Some(&SECRET_KEYS));
            for (alg, private) in [
                (Algorithm::ES384, EC384.1),
                (Algorithm::RS256, RSA_A.1),
                (Algorithm::EdDSA, ED.1),
            ] {
                let h = json!({"alg": format!("{alg:?}")}).to_string();
                assert_eq!(
                    reason(&signed(&h, private, alg), &p),
                    Reason::AlgNotAllowed,
                    "{alg:?}"
                );
            }
            // Listed keys do not make an unlisted alg acceptable.
            let only_rs = algs(&["RS256"]);
            let keys = pem_set(&[RSA_A.0]);
            let p = policy_with(&only_rs, &keys, None);
            let token = signed(r#"{"alg":"PS256"}"#, RSA_A.1, Algorithm::PS256);
            assert_eq!(reason(&token, &p), Reason::AlgNotAllowed);
            assert!(check(&signed(r#"{"alg":"RS256"}"#, RSA_A.1, Algorithm::RS256), &p).is_ok());
        }

        /// J-05: the public key's encodings used as an HMAC secret.
        #[test]
        fn public_keys_are_never_hmac_secrets() {
            let all = algs(&KNOWN_ALGORITHMS);
            for (public, private, alg) in [
                (RSA_A.0, RSA_A.1, Algorithm::RS256),
                (EC_A.0, EC_A.1, Algorithm::ES256),
            ] {
                let keys = pem_set(&[public]);
                let der = pem::parse(public).unwrap().into_contents();
                let jwk_text = jwk(private, alg, "k").to_string();
                let encodings: [&[u8]; 4] = [
                    public.as_bytes(),
                    public.trim_end().as_bytes(),
                    &der,
                    jwk_text.as_bytes(),
                ];
                for (i, bytes) in encodings.iter().enumerate() {
                    for mac in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                        let h = json!({"alg": format!("{mac:?}")}).to_string();
                        let token = raw(&h, &valid_claims(), bytes, mac);
                        let only_key = policy_with(&all, &keys, None);
                        assert_eq!(
                            reason(&token, &only_key),
                            Reason::AlgNotAllowed,
                            "{alg:?} encoding {i}"
                        );
                        let with_secret = policy_with(&all, &keys, Some(&SECRET_KEYS));
                        assert_eq!(
                            reason(&token, &with_secret),
                            Reason::BadSignature,
                            "{alg:?} encoding {i}"
                        );
                        // The asymmetric alg over an HMAC made with the key bytes.
                        let h = json!({"alg": format!("{alg:?}")}).to_string();
                        let token = raw(&h, &valid_claims(), bytes, mac);
                        assert_eq!(
                            reason(&token, &with_secret),
                            Reason::BadSignature,
                            "{alg:?} encoding {i}"
                        );
                    }
                }
            }
        }

        /// J-06: "psychic signatures" (CVE-2022-21449) with a P-256 key configured.
        #[test]
        fn an_all_zero_ecdsa_signature_is_refused() {
            let all = algs(&KNOWN_ALGORITHMS);
            for (keys, alg, len) in [
                (pem_set(&[EC_A.0]), "ES256", 64),
                (pem_set(&[EC384.0]), "ES384", 96),
                (pem_set(&[ED.0]), "EdDSA", 64),
            ] {
                let p = policy_with(&all, &keys, None);
                let h = json!({"alg": alg}).to_string();
                for sig in [vec![0u8; len], vec![0u8; 1], vec![0xffu8; len]] {
                    let token = format!(
                        "{}.{}.{}",
                        b64(h.as_bytes()),
                        b64(valid_claims().as_bytes()),
                        b64(&sig)
                    );
                    assert_eq!(
                        reason(&token, &p),
                        Reason::BadSignature,
                        "{alg} {}",
                        sig.len()
                    );
                }
            }
        }

        #[test]
        fn kid_selects_jwks_keys_and_falls_back_to_pem_keys() {
            let all = algs(&KNOWN_ALGORITHMS);
            let keys = jwks_set(
                &[RSA_B.0],
                &[
                    jwk(RSA_A.1, Algorithm::RS256, "rsa-a"),
                    jwk(EC_A.1, Algorithm::ES256, "ec-a"),
                ],
            );
            let p = policy_with(&all, &keys, None);
            // The kid of the right key.
            assert!(
                check(
                    &signed(
                        r#"{"alg":"RS256","kid":"rsa-a"}"#,
                        RSA_A.1,
                        Algorithm::RS256
                    ),
                    &p
                )
                .is_ok()
            );
            assert!(
                check(
                    &signed(r#"{"alg":"ES256","kid":"ec-a"}"#, EC_A.1, Algorithm::ES256),
                    &p
                )
                .is_ok()
            );
            // A kid naming a JWKS key selects only that key: the PEM key is not tried.
            assert_eq!(
                reason(
                    &signed(
                        r#"{"alg":"RS256","kid":"rsa-a"}"#,
                        RSA_B.1,
                        Algorithm::RS256
                    ),
                    &p
                ),
                Reason::BadSignature
            );
            // RS256 with the kid of an EC key.
            assert_eq!(
                reason(
                    &signed(r#"{"alg":"RS256","kid":"ec-a"}"#, RSA_A.1, Algorithm::RS256),
                    &p
                ),
                Reason::AlgNotAllowed
            );
            // An unknown kid: the PEM keys of the family are tried.
            assert!(
                check(
                    &signed(r#"{"alg":"RS256","kid":"nope"}"#, RSA_B.1, Algorithm::RS256),
                    &p
                )
                .is_ok()
            );
            assert_eq!(
                reason(
                    &signed(r#"{"alg":"RS256","kid":"nope"}"#, RSA_A.1, Algorithm::RS256),
                    &p
                ),
                Reason::BadSignature
            );
            // An unknown kid with no PEM key of the family.
            assert_eq!(
                reason(
                    &signed(r#"{"alg":"ES256","kid":"nope"}"#, EC_A.1, Algorithm::ES256),
                    &p
                ),
                Reason::BadSignature
            );
            // No kid: every key of the family, PEM and JWKS.
            assert!(check(&signed(r#"{"alg":"RS256"}"#, RSA_A.1, Algorithm::RS256), &p).is_ok());
            assert!(check(&signed(r#"{"alg":"RS256"}"#, RSA_B.1, Algorithm::RS256), &p).is_ok());
            assert!(check(&signed(r#"{"alg":"ES256"}"#, EC_A.1, Algorithm::ES256), &p).is_ok());
            // A non-string kid counts as none.
            assert!(
                check(
                    &signed(r#"{"alg":"RS256","kid":7}"#, RSA_A.1, Algorithm::RS256),
                    &p
                )
                .is_ok()
            );
            // kid injection strings select nothing and are never a path or a query.
            for kid in [
                "../../../../../../dev/null",
                "x' UNION SELECT '1';--",
                "|sleep 10",
                "",
            ] {
                let h = json!({"alg": "ES256", "kid": kid}).to_string();
                assert_eq!(
                    reason(&signed(&h, EC_A.1, Algorithm::ES256), &p),
                    Reason::BadSignature,
                    "{kid}"
                );
            }
            // A forbidden header wins over an unknown kid.
            let token = signed(
                r#"{"alg":"ES256","kid":"nope","jku":"http://127.0.0.1:9/"}"#,
                EC_A.1,
                Algorithm::ES256,
            );
            assert_eq!(reason(&token, &p), Reason::HeaderNotAllowed);
        }

        #[test]
        fn a_jwk_with_its_own_alg_verifies_only_that_alg() {
            let all = algs(&KNOWN_ALGORITHMS);
            let mut k = jwk(RSA_A.1, Algorithm::RS256, "pinned");
            k["alg"] = json!("RS256");
            let keys = jwks_set(&[], &[k]);
            let p = policy_with(&all, &keys, None);
            assert!(
                check(
                    &signed(
                        r#"{"alg":"RS256","kid":"pinned"}"#,
                        RSA_A.1,
                        Algorithm::RS256
                    ),
                    &p
                )
                .is_ok()
            );
            assert_eq!(
                reason(
                    &signed(
                        r#"{"alg":"PS256","kid":"pinned"}"#,
                        RSA_A.1,
                        Algorithm::PS256
                    ),
                    &p
                ),
                Reason::AlgNotAllowed
            );
            assert_eq!(
                reason(&signed(r#"{"alg":"RS512"}"#, RSA_A.1, Algorithm::RS512), &p),
                Reason::AlgNotAllowed
            );
        }

        #[test]
        fn time_issuer_and_audience_rules_apply_to_asymmetric_tokens() {
            let all = algs(&KNOWN_ALGORITHMS);
            let keys = pem_set(&[EC_A.0]);
            let p = VerifyPolicy {
                issuer: Some("https://idp.example"),
                audience: Some("latchkey"),
                ..policy_with(&all, &keys, None)
            };
            let token = |claims: Value| {
                let input = format!(
                    "{}.{}",
                    b64(br#"{"alg":"ES256"}"#),
                    b64(claims.to_string().as_bytes())
                );
                let sig = jsonwebtoken::crypto::sign(
                    input.as_bytes(),
                    &encoding_key(EC_A.1, Algorithm::ES256),
                    Algorithm::ES256,
                )
                .unwrap();
                format!("{input}.{sig}")
            };
            let base = json!({"email": "u@example.com", "iat": NOW, "iss": "https://idp.example", "aud": ["x", "latchkey"]});
            assert!(check(&token(base.clone()), &p).is_ok());
            let with = |k: &str, v: Value| {
                let mut c = base.clone();
                c[k] = v;
                token(c)
            };
            assert_eq!(
                reason(&with("iss", json!("https://evil.example")), &p),
                Reason::IssuerMismatch
            );
            assert_eq!(
                reason(&with("aud", json!("other")), &p),
                Reason::AudienceMismatch
            );
            assert_eq!(
                reason(&with("iat", json!(NOW - 211)), &p),
                Reason::TokenTooOld
            );
            assert_eq!(
                reason(&with("iat", json!(NOW + 31)), &p),
                Reason::TokenIssuedInFuture
            );
            assert_eq!(
                reason(&with("exp", json!(NOW - 31)), &p),
                Reason::TokenExpired
            );
        }

        #[test]
        fn the_trace_names_the_key_that_matched() {
            let all = algs(&KNOWN_ALGORITHMS);
            let keys = jwks_set(&[EC_B.0], &[jwk(EC_A.1, Algorithm::ES256, "ec-a")]);
            let p = policy_with(&all, &keys, None);
            let mut trace = Vec::new();
            verify_traced(
                &signed(r#"{"alg":"ES256","kid":"ec-a"}"#, EC_A.1, Algorithm::ES256),
                &p,
                NOW,
                &mut trace,
            )
            .unwrap();
            let sig = trace.iter().find(|c| c.name == "signature").unwrap();
            assert_eq!(
                sig.detail,
                "ES256 signature matches JWKS key \"ec-a\" (EC P-256)"
            );
            let mut trace = Vec::new();
            verify_traced(
                &signed(r#"{"alg":"ES256"}"#, EC_B.1, Algorithm::ES256),
                &p,
                NOW,
                &mut trace,
            )
            .unwrap();
            let sig = trace.iter().find(|c| c.name == "signature").unwrap();
            assert_eq!(
                sig.detail,
                "ES256 signature matches public key 1 (EC P-256)"
            );
        }

        #[test]
        fn key_hint_only_for_tokens_that_can_reach_the_key_lookup() {
            let all = algs(&KNOWN_ALGORITHMS);
            let t = |h: &str| format!("{}.{}.AAAA", b64(h.as_bytes()), b64(b"{}"));
            assert_eq!(
                key_hint(&t(r#"{"alg":"RS256","kid":"k1"}"#), &all),
                Some(KeyHint {
                    alg: Algorithm::RS256,
                    kid: Some("k1".into())
                })
            );
            assert_eq!(
                key_hint(&t(r#"{"alg":"EdDSA","kid":5}"#), &all),
                Some(KeyHint {
                    alg: Algorithm::EdDSA,
                    kid: None
                })
            );
            for h in [
                r#"{"alg":"HS256","kid":"k1"}"#,
                r#"{"alg":"RS256","jku":"http://127.0.0.1:1/"}"#,
                r#"{"alg":"RS256","x5u":"http://127.0.0.1:1/"}"#,
                r#"{"alg":"RS256","jwk":{"kty":"RSA"}}"#,
                r#"{"alg":"RS256","\u006aku":"http://127.0.0.1:1/"}"#,
                r#"{"alg":"RS256","alg":"RS256"}"#,
                r#"{"alg":"rs256"}"#,
                r#"{"alg":"none"}"#,
                r#"{"kid":"k1"}"#,
            ] {
                assert_eq!(key_hint(&t(h), &all), None, "{h}");
            }
            assert_eq!(
                key_hint(&t(r#"{"alg":"RS256"}"#), &algs(&["HS256", "ES256"])),
                None
            );
            assert_eq!(key_hint("a.b", &all), None);
            assert_eq!(
                key_hint(&format!("{}.{}", t(r#"{"alg":"RS256"}"#), "x"), &all),
                None
            );
            let huge = format!("{}{}", t(r#"{"alg":"RS256"}"#), "A".repeat(MAX_TOKEN_BYTES));
            assert_eq!(key_hint(&huge, &all), None);
        }
    }

    // --- properties -------------------------------------------------------------------------

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::String),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_on_arbitrary_strings(s in "\\PC{0,200}") {
            let a = algs(&["HS256"]);
            let _ = verify(&s, &policy(&a), NOW);
            let mut trace = Vec::new();
            let _ = verify_traced(&s, &policy(&a), NOW, &mut trace);
        }

        #[test]
        fn never_panics_on_three_base64url_segments(
            h in "[A-Za-z0-9_-]{0,60}",
            p in "[A-Za-z0-9_-]{0,60}",
            s in "[A-Za-z0-9_-]{0,60}",
        ) {
            let a = algs(&["HS256"]);
            let _ = verify(&format!("{h}.{p}.{s}"), &policy(&a), NOW);
        }

        #[test]
        fn never_panics_on_encoded_arbitrary_bytes(
            h in proptest::collection::vec(any::<u8>(), 0..64),
            p in proptest::collection::vec(any::<u8>(), 0..64),
            s in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let a = algs(&["HS256"]);
            let token = format!("{}.{}.{}", b64(&h), b64(&p), b64(&s));
            let r = verify(&token, &policy(&a), NOW);
            prop_assert!(r.is_err());
        }

        #[test]
        fn any_single_character_change_to_a_valid_token_is_refused(
            pos in 0usize..10_000,
            replacement in prop_oneof![
                proptest::char::range('A', 'Z'),
                proptest::char::range('a', 'z'),
                proptest::char::range('0', '9'),
                Just('-'), Just('_'), Just('.'), Just('='), Just('+'), Just(' '),
            ],
        ) {
            let a = algs(&["HS256"]);
            let token = valid_token();
            let pos = pos % token.len();
            let mut chars: Vec<char> = token.chars().collect();
            prop_assume!(chars[pos] != replacement);
            chars[pos] = replacement;
            let mutated: String = chars.into_iter().collect();
            prop_assert!(verify(&mutated, &policy(&a), NOW).is_err());
        }

        #[test]
        fn never_accepts_a_token_signed_with_another_secret(
            claims in proptest::collection::btree_map("[a-z]{1,8}", json_leaf(), 0..8),
            other in proptest::collection::vec(any::<u8>(), 32..80),
            alg in prop_oneof![Just("HS256"), Just("HS384"), Just("HS512")],
        ) {
            prop_assume!(other != SECRET.as_bytes());
            let a = algs(&["HS256", "HS384", "HS512"]);
            let mut map: Map<String, Value> = claims.into_iter().collect();
            map.insert("iat".to_owned(), json!(NOW));
            let token = sign_hmac(alg, &map, &other).unwrap();
            prop_assert_eq!(verify(&token, &policy(&a), NOW).err(), Some(Reason::BadSignature));
            // And the same claims signed with the right secret are judged on their merits,
            // never by a panic.
            let good = sign_hmac(alg, &map, SECRET.as_bytes()).unwrap();
            let _ = verify(&good, &policy(&a), NOW);
        }
    }

    /// Forged, mangled and confused tokens (security.md §1): whatever the header says,
    /// whichever key and MAC made the signature, `verify` accepts a token only when its
    /// signature is the configured secret's MAC, by the very algorithm its header names,
    /// over its own signing input — and it never panics on the way.
    mod forgery {
        use super::*;

        fn header() -> impl Strategy<Value = String> {
            let hmac = prop::sample::select(vec![
                r#""alg":"HS256""#,
                r#""alg":"HS384""#,
                r#""alg":"HS512""#,
            ]);
            let other = prop::sample::select(vec![
                r#""alg":"hs256""#,
                r#""alg":"HS256 ""#,
                r#""alg":"none""#,
                r#""alg":"None""#,
                r#""alg":"RS256""#,
                r#""alg":"PS256""#,
                r#""alg":"ES256""#,
                r#""alg":"EdDSA""#,
                r#""alg":"""#,
                r#""alg":null"#,
                r#""alg":["HS256"]"#,
                "",
            ]);
            let alg = prop_oneof![hmac, other];
            let extras = prop::collection::vec(
                prop::sample::select(vec![
                    r#""typ":"JWT""#,
                    r#""typ":"jwt""#,
                    r#""typ":"at+jwt""#,
                    r#""typ":"logout+jwt""#,
                    r#""kid":"k1""#,
                    r#""kid":7"#,
                    r#""jku":"https://evil.example/jwks""#,
                    r#""jwk":{"kty":"oct","k":"c2VjcmV0"}"#,
                    r#""x5u":"https://evil.example/cert""#,
                    r#""crit":["exp"]"#,
                    r#""b64":false"#,
                    r#""zip":"DEF""#,
                    r#""cty":"JWT""#,
                    r#""alg":"HS256""#,
                ]),
                0..3,
            );
            (alg, extras).prop_map(|(alg, extras)| {
                let parts: Vec<&str> = std::iter::once(alg)
                    .filter(|a| !a.is_empty())
                    .chain(extras)
                    .collect();
                format!("{{{}}}", parts.join(","))
            })
        }

        fn payload() -> impl Strategy<Value = String> {
            let time = prop::sample::select(vec![
                format!(r#""iat":{NOW}"#),
                format!(r#""iat":{}"#, NOW - 10),
                format!(r#""iat":{},"exp":{}"#, NOW - 5, NOW + 60),
                format!(r#""exp":{}"#, NOW + 60),
                format!(r#""iat":"{NOW}""#),
                format!(r#""iat":{}"#, NOW - 100_000),
                String::new(),
            ]);
            let extra =
                proptest::collection::btree_map("[a-z]{1,6}", json_leaf(), 0..4).prop_map(|m| {
                    m.into_iter()
                        .map(|(k, v)| format!("{}:{v}", Value::String(k)))
                        .collect::<Vec<_>>()
                });
            (time, extra).prop_map(|(time, extra)| {
                let parts: Vec<String> = std::iter::once(r#""email":"u@example.com""#.to_owned())
                    .chain((!time.is_empty()).then_some(time))
                    .chain(extra)
                    .collect();
                format!("{{{}}}", parts.join(","))
            })
        }

        /// The keys a forger might try: ours, another, ours one byte off, ours
        /// upper-cased, ours hex-decoded (the key is the UTF-8 of the string, never
        /// hex-decoded), and nothing at all.
        fn signing_key(k: usize) -> Option<Vec<u8>> {
            match k {
                0 => Some(SECRET.as_bytes().to_vec()),
                1 => Some(OTHER_SECRET.as_bytes().to_vec()),
                2 => Some(format!("{SECRET}x").into_bytes()),
                3 => Some(SECRET.to_ascii_uppercase().into_bytes()),
                4 => Some(hex::decode(SECRET).unwrap()),
                _ => None,
            }
        }

        const MACS: [&str; 3] = ["HS256", "HS384", "HS512"];

        #[test]
        fn only_our_key_and_the_named_algorithm_verify() {
            let strategy = (
                header(),
                payload(),
                prop_oneof![3 => Just(0usize), 1 => 1usize..6],
                // `None`: the MAC the header names (when it names one), else a random one.
                prop_oneof![2 => Just(None), 1 => (0usize..3).prop_map(Some)],
                any::<bool>(),
                prop_oneof![6 => Just(None), 1 => (0usize..400).prop_map(Some)],
            );
            let accepted = std::cell::Cell::new(0usize);
            let mut runner =
                proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(3000));
            let result = runner.run(
                &strategy,
                |(header, payload, key, mac, all_algs, mangle)| {
                    let allowed = if all_algs {
                        algs(&KNOWN_ALGORITHMS)
                    } else {
                        algs(&MACS)
                    };
                    let p = policy(&allowed);
                    let named: Value = serde_json::from_str(&header).unwrap();
                    let named = named["alg"].as_str().unwrap_or_default().to_owned();
                    let mac = mac
                        .or_else(|| MACS.iter().position(|m| *m == named))
                        .unwrap_or(0);
                    let mut token = match signing_key(key) {
                        Some(k) => raw(&header, &payload, &k, jwt_alg(MACS[mac])),
                        None => format!("{}.{}.", b64(header.as_bytes()), b64(payload.as_bytes())),
                    };
                    if let Some(at) = mangle {
                        // Change one character anywhere in the token.
                        let at = at % token.len();
                        let mut bytes = token.into_bytes();
                        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                        token = String::from_utf8(bytes).unwrap();
                    }
                    let mut trace = Vec::new();
                    let traced = verify_traced(&token, &p, NOW, &mut trace);
                    let plain = verify(&token, &p, NOW);
                    prop_assert_eq!(plain.is_ok(), traced.is_ok());
                    if let Ok(ok) = plain {
                        accepted.set(accepted.get() + 1);
                        let (input, sig) = token.rsplit_once('.').unwrap();
                        prop_assert_eq!(key, 0, "accepted a token signed with key {}", key);
                        prop_assert_eq!(named.as_str(), MACS[mac], "alg/MAC mismatch accepted");
                        prop_assert!(mangle.is_none(), "accepted a token changed after signing");
                        let expected = jsonwebtoken::crypto::sign(
                            input.as_bytes(),
                            &EncodingKey::from_secret(SECRET.as_bytes()),
                            jwt_alg(&named),
                        )
                        .unwrap();
                        prop_assert_eq!(sig, expected.as_str());
                        let claims: Value = serde_json::from_str(&payload).unwrap();
                        prop_assert_eq!(Value::Object(ok.claims), claims);
                    }
                    Ok(())
                },
            );
            if let Err(e) = result {
                panic!("{e}");
            }
            // The property must not hold vacuously: plenty of the tokens were good ones.
            assert!(
                accepted.get() >= 100,
                "only {} tokens accepted",
                accepted.get()
            );
        }
    }
}
