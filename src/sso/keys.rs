//! Verification keys for the asymmetric algorithms: PEM public keys from `jwt-public-keys`
//! and JWKs from `jwt-jwks-uri` (fetched and cached by [`super::jwks`]).
//!
//! This module is pure: it parses and checks keys and verifies one signature with one key.
//! Which keys a token may use is decided by the verifier ([`super::verify`]); this module
//! supplies the one rule it relies on, [`VerifyingKey::can_verify`]:
//!
//! | key | algorithms |
//! |---|---|
//! | RSA (2048–8192 bits) | RS256, RS384, RS512, PS256, PS384, PS512 |
//! | EC P-256 | ES256 only |
//! | EC P-384 | ES384 only |
//! | Ed25519 | EdDSA only |
//!
//! and, for a JWK that names its own `alg`, that algorithm only. The HMAC shared secret is
//! not a [`VerifyingKey`] at all, so a public key can never be used as an HMAC secret and
//! the secret can never verify an asymmetric signature (key confusion, CVE-2016-10555).

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self as lc, ParsedPublicKey};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

/// At most this many keys are taken from one JWKS document (the rest are ignored), so a
/// token without `kid` costs a bounded number of signature checks.
pub const MAX_JWKS_KEYS: usize = 64;

/// At most this many PEM keys in `jwt-public-keys`.
pub const MAX_PEM_KEYS: usize = 20;

/// Longest accepted PEM text of one key.
pub const MAX_PEM_BYTES: usize = 16 * 1024;

/// RSA modulus sizes the verifier accepts (aws-lc's `RSA_*_2048_8192_*` parameters).
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// JWK members are base64url; a stray `=` padding is tolerated (some IdPs send it).
const B64_JWK: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The type of an asymmetric key, which fixes the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind may verify `alg` (the family rule).
    pub fn allows(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::EcP256 => "EC P-256",
            KeyKind::EcP384 => "EC P-384",
            KeyKind::Ed25519 => "Ed25519",
        }
    }
}

/// Where a key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The n-th entry (1-based) of `jwt-public-keys`.
    Pem(usize),
    /// The `jwt-jwks-uri` document.
    Jwks,
}

/// One parsed, checked public key.
#[derive(Clone)]
pub struct VerifyingKey {
    kind: KeyKind,
    kid: Option<String>,
    alg: Option<Algorithm>,
    source: KeySource,
    key: DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kind", &self.kind)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The JWK's `kid`; PEM keys have none.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The JWK's own `alg`, which restricts the key to that one algorithm.
    pub fn alg(&self) -> Option<Algorithm> {
        self.alg
    }

    pub fn source(&self) -> KeySource {
        self.source
    }

    /// The family rule: this key may verify `alg` only if `alg` belongs to its kind (and is
    /// the key's own `alg` when it names one).
    pub fn can_verify(&self, alg: Algorithm) -> bool {
        self.kind.allows(alg) && self.alg.is_none_or(|own| own == alg)
    }

    /// The signature step of the verifier: `signature_b64` (unpadded base64url, as in the
    /// token) over `signing_input` with `alg`. ECDSA signatures are the raw `r || s` of JWS
    /// (RFC 7518 §3.4), checked by aws-lc through `jsonwebtoken::crypto::verify`, which also
    /// refuses a key of another family. False for any key this rule does not allow.
    pub fn verify_signature(
        &self,
        alg: Algorithm,
        signing_input: &[u8],
        signature_b64: &str,
    ) -> bool {
        self.can_verify(alg)
            && matches!(
                jsonwebtoken::crypto::verify(signature_b64, signing_input, &self.key, alg),
                Ok(true)
            )
    }

    /// "public key 2 (EC P-256)" or "JWKS key \"abc\" (RSA)", for the dry-run report.
    pub fn describe(&self) -> String {
        match (self.source, &self.kid) {
            (KeySource::Pem(n), _) => format!("public key {n} ({})", self.kind.name()),
            (KeySource::Jwks, Some(kid)) => {
                format!("JWKS key {} ({})", shown_kid(kid), self.kind.name())
            }
            (KeySource::Jwks, None) => format!("JWKS key without kid ({})", self.kind.name()),
        }
    }
}

/// The HMAC keys of `jwt-shared-secret`: its UTF-8 bytes (Metabase's encoding, never
/// hex-decoded), one key per HS algorithm, made once per settings load. Making an HMAC key
/// hashes the secret's padded inner and outer blocks: made per token, that was two of the
/// about ten SHA-256 blocks of an HS256 check. Not a [`VerifyingKey`], so it can never verify
/// an asymmetric signature.
pub struct SharedSecret {
    bytes: usize,
    hs256: hmac::Key,
    hs384: hmac::Key,
    hs512: hmac::Key,
}

impl fmt::Debug for SharedSecret {
    /// The length only: the secret never appears in a log or an error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedSecret({} bytes)", self.bytes)
    }
}

impl SharedSecret {
    pub fn new(secret: &[u8]) -> SharedSecret {
        SharedSecret {
            bytes: secret.len(),
            hs256: hmac::Key::new(hmac::HMAC_SHA256, secret),
            hs384: hmac::Key::new(hmac::HMAC_SHA384, secret),
            hs512: hmac::Key::new(hmac::HMAC_SHA512, secret),
        }
    }

    /// The secret's length in bytes (the verifier refuses to use one shorter than 32).
    pub fn byte_len(&self) -> usize {
        self.bytes
    }

    /// Whether `signature` (decoded) is the HS256/HS384/HS512 MAC of `signing_input`,
    /// compared in constant time by aws-lc's `hmac::verify`. False for any other `alg`.
    pub fn verify(&self, alg: Algorithm, signing_input: &[u8], signature: &[u8]) -> bool {
        let key = match alg {
            Algorithm::HS256 => &self.hs256,
            Algorithm::HS384 => &self.hs384,
            Algorithm::HS512 => &self.hs512,
            _ => return false,
        };
        hmac::verify(key, signing_input, signature).is_ok()
    }
}

/// Echoes a (remote, possibly odd) kid: quoted, escaped, at most 40 characters.
pub fn shown_kid(kid: &str) -> String {
    const MAX: usize = 40;
    match kid.char_indices().nth(MAX) {
        None => format!("{kid:?}"),
        Some((cut, _)) => format!("{:?}…", &kid[..cut]),
    }
}

/// The asymmetric keys in effect for one verification: the PEM keys of `jwt-public-keys`,
/// in order, and the current JWKS keys. Cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct KeySet {
    pem: Arc<[VerifyingKey]>,
    jwks: Arc<[VerifyingKey]>,
}

impl KeySet {
    pub fn new(pem: Arc<[VerifyingKey]>, jwks: Arc<[VerifyingKey]>) -> KeySet {
        KeySet { pem, jwks }
    }

    /// A set of PEM keys only (tests, the CLI).
    pub fn from_pem(keys: Vec<VerifyingKey>) -> KeySet {
        KeySet {
            pem: keys.into(),
            jwks: Arc::from(Vec::new()),
        }
    }

    pub fn pem(&self) -> &[VerifyingKey] {
        &self.pem
    }

    pub fn jwks(&self) -> &[VerifyingKey] {
        &self.jwks
    }

    /// PEM keys first, then JWKS keys.
    pub fn iter(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.pem.iter().chain(self.jwks.iter())
    }

    pub fn is_empty(&self) -> bool {
        self.pem.is_empty() && self.jwks.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// PEM
// ---------------------------------------------------------------------------------------

/// Parses one entry of `jwt-public-keys`: exactly one PEM block, `PUBLIC KEY`
/// (SubjectPublicKeyInfo: RSA, EC P-256/P-384 or Ed25519) or `RSA PUBLIC KEY` (PKCS#1).
/// Private keys, certificates, other curves and RSA keys outside 2048–8192 bits are
/// refused with a sentence saying why. `position` is the 1-based index, kept for the
/// dry-run report.
pub fn parse_pem(text: &str, position: usize) -> Result<VerifyingKey, String> {
    if text.len() > MAX_PEM_BYTES {
        return Err(format!("is longer than {MAX_PEM_BYTES} bytes"));
    }
    let blocks = pem::parse_many(text).map_err(|_| "is not valid PEM".to_string())?;
    let block = match blocks.as_slice() {
        [] => return Err("is not a PEM public key (no PEM block found)".into()),
        [one] => one,
        _ => return Err("must hold exactly one PEM block".into()),
    };
    let tag = block.tag();
    if tag.contains("PRIVATE") {
        return Err("is a private key; configure its public key (openssl pkey -pubout)".into());
    }
    let pem_key = |kind: KeyKind, key: DecodingKey| VerifyingKey {
        kind,
        kid: None,
        alg: None,
        source: KeySource::Pem(position),
        key,
    };
    match tag {
        "RSA PUBLIC KEY" => {
            let key = DecodingKey::from_rsa_pem(text.as_bytes())
                .map_err(|_| "is not a valid RSA public key".to_string())?;
            check_rsa_der(der_of(&key)?)?;
            Ok(pem_key(KeyKind::Rsa, key))
        }
        "PUBLIC KEY" => {
            let spki = block.contents();
            if let Ok(key) = DecodingKey::from_rsa_pem(text.as_bytes()) {
                check_rsa_der(der_of(&key)?)?;
                return Ok(pem_key(KeyKind::Rsa, key));
            }
            if let Ok(key) = DecodingKey::from_ec_pem(text.as_bytes()) {
                // The curve comes from the key's own parameters: aws-lc parses the whole
                // SubjectPublicKeyInfo for the named curve and checks the point is on it.
                let kind = if ParsedPublicKey::new(&lc::ECDSA_P256_SHA256_FIXED, spki).is_ok() {
                    KeyKind::EcP256
                } else if ParsedPublicKey::new(&lc::ECDSA_P384_SHA384_FIXED, spki).is_ok() {
                    KeyKind::EcP384
                } else {
                    return Err(
                        "is an EC key on an unsupported curve (only P-256 for ES256 and P-384 for ES384)"
                            .into(),
                    );
                };
                let point = der_of(&key)?;
                let want = if kind == KeyKind::EcP256 { 65 } else { 97 };
                if point.len() != want || point[0] != 0x04 {
                    return Err("must be an EC key with an uncompressed point".into());
                }
                let key = DecodingKey::from_ec_der(point);
                return Ok(pem_key(kind, key));
            }
            if let Ok(key) = DecodingKey::from_ed_pem(text.as_bytes()) {
                let raw = der_of(&key)?;
                if raw.len() != 32 || ParsedPublicKey::new(&lc::ED25519, raw).is_err() {
                    return Err("is not a valid Ed25519 public key".into());
                }
                let key = DecodingKey::from_ed_der(raw);
                return Ok(pem_key(KeyKind::Ed25519, key));
            }
            Err("is not a supported public key (RSA, EC P-256/P-384 or Ed25519)".into())
        }
        "CERTIFICATE" => {
            Err("is a certificate; configure its public key (openssl x509 -pubkey -noout)".into())
        }
        other => Err(format!(
            "is a PEM {other:?} block, not a PUBLIC KEY or RSA PUBLIC KEY"
        )),
    }
}

/// Parses every entry of `jwt-public-keys`; the first bad one is refused as "key N: why".
pub fn parse_pem_list(list: &[String]) -> Result<Vec<VerifyingKey>, String> {
    if list.len() > MAX_PEM_KEYS {
        return Err(format!("must hold at most {MAX_PEM_KEYS} keys"));
    }
    list.iter()
        .enumerate()
        .map(|(i, pem)| parse_pem(pem, i + 1).map_err(|e| format!("key {} {e}", i + 1)))
        .collect()
}

fn der_of(key: &DecodingKey) -> Result<&[u8], String> {
    key.try_get_as_bytes()
        .map_err(|_| "could not be read".to_string())
}

/// A PKCS#1 `RSAPublicKey` that aws-lc accepts, of a size the verifier can use.
fn check_rsa_der(der: &[u8]) -> Result<(), String> {
    let key = aws_lc_rs::rsa::PublicKey::from_der(der)
        .map_err(|_| "is not a valid RSA public key".to_string())?;
    let bits = bit_len(key.modulus().big_endian_without_leading_zero());
    check_rsa_bits(bits)
}

fn check_rsa_bits(bits: usize) -> Result<(), String> {
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(format!(
            "is a {bits}-bit RSA key; RSA keys must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits"
        ));
    }
    Ok(())
}

/// Bit length of a big-endian unsigned integer.
fn bit_len(be: &[u8]) -> usize {
    let be = match be.iter().position(|b| *b != 0) {
        Some(i) => &be[i..],
        None => return 0,
    };
    (be.len() - 1) * 8 + (8 - be[0].leading_zeros() as usize)
}

// ---------------------------------------------------------------------------------------
// JWK / JWKS
// ---------------------------------------------------------------------------------------

/// Parses one JWK of a JWKS (RFC 7517) into a verification key, or says why it is ignored:
/// `kty` RSA, EC (P-256/P-384) or OKP (Ed25519) only — never `oct`; `use` absent or `sig`;
/// `key_ops` absent or containing `verify`; `alg` absent or a supported algorithm of the
/// key's own family; no private members; a string `kid` when present.
pub fn parse_jwk(jwk: &Value) -> Result<VerifyingKey, String> {
    let obj = jwk.as_object().ok_or("is not a JSON object")?;
    let kty = str_member(obj, "kty")?.ok_or("has no kty")?;
    if kty == "oct" {
        return Err("is a symmetric (oct) key; keys from a JWKS are only ever public keys".into());
    }
    if let Some(u) = str_member(obj, "use")?
        && u != "sig"
    {
        return Err(format!("has use {} (not sig)", shown_kid(u)));
    }
    if let Some(ops) = obj.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err("has key_ops without verify".into());
        }
    }
    for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
        if obj.contains_key(private) {
            return Err(format!("carries private key material ({private})"));
        }
    }
    let alg = match str_member(obj, "alg")? {
        None => None,
        Some(name) => Some(super::verify::algorithm_from_name(name).ok_or_else(|| {
            format!(
                "has alg {} (not a supported signature algorithm)",
                shown_kid(name)
            )
        })?),
    };
    let kid = str_member(obj, "kid")?.map(str::to_owned);
    let (kind, key) = match kty {
        "RSA" => {
            let n = b64_member(obj, "n")?;
            let e = b64_member(obj, "e")?;
            check_rsa_bits(bit_len(&n))?;
            // What aws-lc accepts when it verifies (as the PEM keys are checked when parsed):
            // an odd exponent from 3 up to 33 bits. Anything else could verify nothing, yet
            // would count as a usable key.
            let e_len = e.iter().skip_while(|b| **b == 0).count();
            let e_value = e
                .iter()
                .skip_while(|b| **b == 0)
                .fold(0u64, |v, b| v.wrapping_shl(8) | u64::from(*b));
            if e_len == 0 || e_len > 5 || e_value < 3 || e_value % 2 == 0 || e_value >> 33 != 0 {
                return Err("has an RSA exponent out of range".into());
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let (kind, verification, len): (_, &'static lc::EcdsaVerificationAlgorithm, _) =
                match str_member(obj, "crv")? {
                    Some("P-256") => (KeyKind::EcP256, &lc::ECDSA_P256_SHA256_FIXED, 32),
                    Some("P-384") => (KeyKind::EcP384, &lc::ECDSA_P384_SHA384_FIXED, 48),
                    _ => return Err("is an EC key on an unsupported curve".into()),
                };
            let x = b64_member(obj, "x")?;
            let y = b64_member(obj, "y")?;
            if x.len() != len || y.len() != len {
                return Err("has EC coordinates of the wrong length".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            if ParsedPublicKey::new(verification, &point).is_err() {
                return Err("is not a point on its curve".into());
            }
            (kind, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            if str_member(obj, "crv")? != Some("Ed25519") {
                return Err("is an OKP key on an unsupported curve (only Ed25519)".into());
            }
            let x = b64_member(obj, "x")?;
            if x.len() != 32 || ParsedPublicKey::new(&lc::ED25519, &x).is_err() {
                return Err("is not a valid Ed25519 key".into());
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        other => return Err(format!("has unsupported kty {}", shown_kid(other))),
    };
    if let Some(alg) = alg
        && !kind.allows(alg)
    {
        return Err(format!(
            "has alg {alg:?}, which a {} key cannot verify",
            kind.name()
        ));
    }
    Ok(VerifyingKey {
        kind,
        kid,
        alg,
        source: KeySource::Jwks,
        key,
    })
}

/// What a JWKS document yielded.
#[derive(Debug)]
pub struct ParsedJwks {
    pub keys: Vec<VerifyingKey>,
    /// Keys skipped (unsupported, contradictory, private, or beyond [`MAX_JWKS_KEYS`]).
    pub ignored: usize,
}

/// Parses a JWK Set document `{"keys": [...]}`. Keys that cannot be used are skipped (and
/// counted), never fatal; a document that is not a JWK Set is an error.
pub fn parse_jwks(body: &[u8]) -> Result<ParsedJwks, String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_string())?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the body is not a JWK Set (no keys array)")?;
    let mut out = Vec::new();
    let mut ignored = 0;
    for jwk in keys {
        if out.len() == MAX_JWKS_KEYS {
            ignored += 1;
            continue;
        }
        match parse_jwk(jwk) {
            Ok(key) => out.push(key),
            Err(why) => {
                tracing::debug!(kid = ?jwk.get("kid"), why, "JWKS key ignored");
                ignored += 1;
            }
        }
    }
    Ok(ParsedJwks { keys: out, ignored })
}

fn str_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("has a non-string {name}")),
    }
}

fn b64_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = str_member(obj, name)?.ok_or_else(|| format!("has no {name}"))?;
    B64_JWK
        .decode(text)
        .map_err(|_| format!("has {name} that is not base64url"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/keys/", $name))
        };
    }

    const RSA_PUB: &str = fixture!("rsa-a.pub.pem");
    const RSA_PKCS1: &str = fixture!("rsa-a.rsapub.pem");
    const RSA_PRIV: &str = fixture!("rsa-a.key.pem");
    const EC256_PUB: &str = fixture!("ec-p256-a.pub.pem");
    const EC256_PRIV: &str = fixture!("ec-p256-a.key.pem");
    const EC384_PUB: &str = fixture!("ec-p384.pub.pem");
    const EC384_PRIV: &str = fixture!("ec-p384.key.pem");
    const ED_PUB: &str = fixture!("ed25519.pub.pem");
    const ED_PRIV: &str = fixture!("ed25519.key.pem");

    fn sign(alg: Algorithm, key: &EncodingKey, msg: &[u8]) -> String {
        jsonwebtoken::crypto::sign(msg, key, alg).unwrap()
    }

    #[test]
    fn shared_secret_verifies_each_hs_alg_only_with_its_own_mac() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let keys = SharedSecret::new(secret);
        let input = b"header.payload";
        let hs = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        for alg in hs {
            let mac = sign(alg, &EncodingKey::from_secret(secret), input);
            let mac = B64_JWK.decode(mac).unwrap();
            assert!(keys.verify(alg, input, &mac), "{alg:?}");
            assert!(
                !keys.verify(alg, b"header.payloaD", &mac),
                "{alg:?} other input"
            );
            assert!(!keys.verify(alg, input, &mac[1..]), "{alg:?} truncated");
            let mut flipped = mac.clone();
            flipped[0] ^= 1;
            assert!(!keys.verify(alg, input, &flipped), "{alg:?} one bit");
            for other in hs.into_iter().filter(|&o| o != alg) {
                assert!(!keys.verify(other, input, &mac), "{alg:?} as {other:?}");
            }
            for asymmetric in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
                assert!(!keys.verify(asymmetric, input, &mac), "{asymmetric:?}");
            }
            let other_secret = SharedSecret::new(b"0123456789abcdef0123456789abcdeF");
            assert!(
                !other_secret.verify(alg, input, &mac),
                "{alg:?} other secret"
            );
        }
        assert_eq!(keys.byte_len(), 32);
        assert_eq!(format!("{keys:?}"), "SharedSecret(32 bytes)");
    }

    #[test]
    fn pem_keys_parse_to_their_kind() {
        for (pem, kind) in [
            (RSA_PUB, KeyKind::Rsa),
            (RSA_PKCS1, KeyKind::Rsa),
            (EC256_PUB, KeyKind::EcP256),
            (EC384_PUB, KeyKind::EcP384),
            (ED_PUB, KeyKind::Ed25519),
        ] {
            let key = parse_pem(pem, 3).unwrap();
            assert_eq!(key.kind(), kind);
            assert_eq!(key.source(), KeySource::Pem(3));
            assert_eq!(key.kid(), None);
            // Surrounding whitespace and a missing final newline do not matter.
            assert_eq!(parse_pem(pem.trim(), 1).unwrap().kind(), kind);
        }
    }

    #[test]
    fn unusable_pem_text_is_refused_with_a_reason() {
        let cases: [(&str, &str); 11] = [
            (RSA_PRIV, "private key"),
            (EC256_PRIV, "private key"),
            (ED_PRIV, "private key"),
            (fixture!("ec-p256-a.cert.pem"), "certificate"),
            (fixture!("rsa-1024.pub.pem"), "1024-bit"),
            (fixture!("ec-p521.pub.pem"), "unsupported curve"),
            (fixture!("ec-secp256k1.pub.pem"), "unsupported curve"),
            (fixture!("ed448.pub.pem"), "not a supported public key"),
            ("hello", "not a PEM public key"),
            ("", "not a PEM public key"),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "not a supported",
            ),
        ];
        for (pem, why) in cases {
            let err = parse_pem(pem, 1).unwrap_err();
            assert!(err.contains(why), "{why}: got {err}");
        }
        let two = format!("{RSA_PUB}{EC256_PUB}");
        assert!(parse_pem(&two, 1).unwrap_err().contains("exactly one"));
        let long = format!("{RSA_PUB}{}", " ".repeat(MAX_PEM_BYTES));
        assert!(parse_pem(&long, 1).is_err());
        let err = parse_pem_list(&[RSA_PUB.into(), EC256_PRIV.into()]).unwrap_err();
        assert!(err.starts_with("key 2 is a private key"), "{err}");
        assert_eq!(
            parse_pem_list(&[RSA_PUB.into(), ED_PUB.into()])
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn each_key_verifies_only_its_own_family() {
        let msg = b"header.payload";
        let rsa = parse_pem(RSA_PUB, 1).unwrap();
        let rsa_key = EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap();
        for alg in [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ] {
            let sig = sign(alg, &rsa_key, msg);
            assert!(rsa.verify_signature(alg, msg, &sig), "{alg:?}");
            assert!(
                !rsa.verify_signature(alg, b"header.payloaD", &sig),
                "{alg:?}"
            );
        }
        let ec = parse_pem(EC256_PUB, 1).unwrap();
        let sig = sign(
            Algorithm::ES256,
            &EncodingKey::from_ec_pem(EC256_PRIV.as_bytes()).unwrap(),
            msg,
        );
        assert!(ec.verify_signature(Algorithm::ES256, msg, &sig));
        assert!(!ec.can_verify(Algorithm::ES384));
        assert!(!ec.can_verify(Algorithm::RS256));
        assert!(!ec.can_verify(Algorithm::HS256));
        let ec384 = parse_pem(EC384_PUB, 1).unwrap();
        let sig = sign(
            Algorithm::ES384,
            &EncodingKey::from_ec_pem(EC384_PRIV.as_bytes()).unwrap(),
            msg,
        );
        assert!(ec384.verify_signature(Algorithm::ES384, msg, &sig));
        assert!(!ec384.can_verify(Algorithm::ES256));
        let ed = parse_pem(ED_PUB, 1).unwrap();
        let sig = sign(
            Algorithm::EdDSA,
            &EncodingKey::from_ed_pem(ED_PRIV.as_bytes()).unwrap(),
            msg,
        );
        assert!(ed.verify_signature(Algorithm::EdDSA, msg, &sig));
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            for key in [&rsa, &ec, &ec384, &ed] {
                assert!(!key.can_verify(alg));
            }
        }
        // An ES256 signature of all zero bytes (r = s = 0) never verifies.
        let zero = B64_JWK.encode([0u8; 64]);
        assert!(!ec.verify_signature(Algorithm::ES256, msg, &zero));
    }

    fn jwk_of(private_pem: &str, alg: Algorithm) -> Value {
        let key = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(private_pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
        }
        .unwrap();
        let mut v =
            serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg).unwrap())
                .unwrap();
        v.as_object_mut().unwrap().remove("alg");
        v
    }

    #[test]
    fn jwks_keys_parse_and_verify() {
        let msg = b"a.b";
        let mut rsa = jwk_of(RSA_PRIV, Algorithm::RS256);
        rsa["kid"] = json!("r1");
        rsa["use"] = json!("sig");
        let mut ec = jwk_of(EC256_PRIV, Algorithm::ES256);
        ec["kid"] = json!("e1");
        ec["alg"] = json!("ES256");
        let mut ed = jwk_of(ED_PRIV, Algorithm::EdDSA);
        ed["key_ops"] = json!(["verify"]);
        let doc = json!({"keys": [rsa, ec, ed]});
        let parsed = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.ignored, 0);
        let kinds: Vec<_> = parsed
            .keys
            .iter()
            .map(|k| (k.kind(), k.kid().map(str::to_owned)))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (KeyKind::Rsa, Some("r1".into())),
                (KeyKind::EcP256, Some("e1".into())),
                (KeyKind::Ed25519, None)
            ]
        );
        let sig = sign(
            Algorithm::PS384,
            &EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap(),
            msg,
        );
        assert!(parsed.keys[0].verify_signature(Algorithm::PS384, msg, &sig));
        assert_eq!(parsed.keys[1].alg(), Some(Algorithm::ES256));
        assert_eq!(parsed.keys[0].describe(), "JWKS key \"r1\" (RSA)");
    }

    #[test]
    fn a_jwk_alg_restricts_the_key_to_that_algorithm() {
        let mut rsa = jwk_of(RSA_PRIV, Algorithm::RS256);
        rsa["alg"] = json!("RS256");
        let key = parse_jwk(&rsa).unwrap();
        assert!(key.can_verify(Algorithm::RS256));
        assert!(!key.can_verify(Algorithm::PS256));
        assert!(!key.can_verify(Algorithm::RS512));
    }

    #[test]
    fn unusable_jwks_keys_are_ignored_with_a_reason() {
        let rsa = jwk_of(RSA_PRIV, Algorithm::RS256);
        let ec = jwk_of(EC256_PRIV, Algorithm::ES256);
        let with = |base: &Value, k: &str, v: Value| {
            let mut j = base.clone();
            j[k] = v;
            j
        };
        let without = |base: &Value, k: &str| {
            let mut j = base.clone();
            j.as_object_mut().unwrap().remove(k);
            j
        };
        let cases = [
            (
                json!({"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}),
                "oct",
            ),
            (with(&rsa, "use", json!("enc")), "use"),
            (with(&rsa, "key_ops", json!(["encrypt"])), "key_ops"),
            (with(&rsa, "alg", json!("ES256")), "cannot verify"),
            (with(&rsa, "alg", json!("RSA-OAEP")), "not a supported"),
            (with(&rsa, "alg", json!("none")), "not a supported"),
            (with(&ec, "alg", json!("ES384")), "cannot verify"),
            (with(&rsa, "d", json!("AAAA")), "private"),
            (with(&ec, "crv", json!("P-521")), "unsupported curve"),
            (with(&ec, "crv", json!("secp256k1")), "unsupported curve"),
            (with(&ec, "x", json!("AAAA")), "wrong length"),
            (with(&ec, "y", ec["x"].clone()), "not a point"),
            (without(&rsa, "n"), "has no n"),
            (with(&rsa, "n", json!("AQAB")), "bits"),
            // e = 1 (a "signature" would be the padded digest itself), 2, 4: aws-lc refuses
            // them when verifying, so they must not count as usable keys.
            (with(&rsa, "e", json!("AQ")), "exponent"),
            (with(&rsa, "e", json!("Ag")), "exponent"),
            (with(&rsa, "e", json!("AAAE")), "exponent"),
            (with(&rsa, "e", json!("AgAAAAE")), "exponent"),
            (with(&rsa, "kid", json!(7)), "non-string kid"),
            (
                json!({"kty": "OKP", "crv": "X25519", "x": ec["x"].clone()}),
                "unsupported curve",
            ),
            (json!({"kty": "DSA"}), "unsupported kty"),
            (json!({}), "no kty"),
            (json!("RSA"), "not a JSON object"),
        ];
        for (jwk, why) in &cases {
            let err = parse_jwk(jwk).unwrap_err();
            assert!(err.contains(why), "{why}: got {err} for {jwk}");
        }
        let doc = json!({"keys": cases.iter().map(|(j, _)| j.clone()).chain([rsa.clone()]).collect::<Vec<_>>()});
        let parsed = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!((parsed.keys.len(), parsed.ignored), (1, cases.len()));
    }

    #[test]
    fn a_jwks_document_is_bounded_and_must_be_a_jwk_set() {
        let rsa = jwk_of(RSA_PRIV, Algorithm::RS256);
        let doc = json!({"keys": vec![rsa; MAX_JWKS_KEYS + 5]});
        let parsed = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!((parsed.keys.len(), parsed.ignored), (MAX_JWKS_KEYS, 5));
        for bad in [&b"not json"[..], b"[]", b"{\"keys\": {}}", b"{}"] {
            assert!(parse_jwks(bad).is_err());
        }
    }

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(bit_len(&[0, 0, 1]), 1);
        assert_eq!(bit_len(&[0x80, 0]), 16);
        assert_eq!(bit_len(&[]), 0);
        assert_eq!(bit_len(&[0x7f; 256]), 2047);
    }
}
