//! Key confusion and key injection (research/security.md J-05, J-06, J-10, J-11, J-12):
//! public keys used as HMAC secrets, a zero ECDSA signature, a `kid` naming a key of
//! another family, and `jku` / `x5u` / `jwk` headers that must never cause a connection.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

/// The encodings of a public key an attacker could use as an HMAC secret: the PEM text
/// with and without its final newline, the DER bytes, and the JWK JSON.
fn hmac_secrets(
    public_pem: &str,
    private_pem: &str,
    alg: Algorithm,
) -> Vec<(&'static str, Vec<u8>)> {
    assert!(public_pem.ends_with('\n'));
    let der = pem::parse(public_pem).unwrap().into_contents();
    vec![
        ("PEM", public_pem.as_bytes().to_vec()),
        (
            "PEM without the final newline",
            public_pem.trim_end().as_bytes().to_vec(),
        ),
        ("DER", der),
        (
            "JWK JSON",
            jwk(private_pem, alg, "k").to_string().into_bytes(),
        ),
    ]
}

fn hmac_token(secret: &[u8], mac: Algorithm, header: Value, email: &str) -> String {
    sign_key(
        &EncodingKey::from_secret(secret),
        mac,
        header,
        &login_claims(email),
    )
}

both_backends! {
    async fn public_keys_used_as_hmac_secrets_are_refused(mut app) {
        for (public, private, alg) in [(RSA_A.0, RSA_A.1, Algorithm::RS256), (EC_A.0, EC_A.1, Algorithm::ES256)] {
            // The public key only: HMAC has no key at all.
            configure(&mut app, json!({
                "jwt-algorithms": ALL_ALGS,
                "jwt-public-keys": [public],
                "jwt-shared-secret": null,
            })).await;
            for (what, secret) in hmac_secrets(public, private, alg) {
                for mac in [Algorithm::HS256, Algorithm::HS512] {
                    let t = hmac_token(&secret, mac, json!({}), "attacker@example.com");
                    refused(&app, &t, "alg_not_allowed", &format!("{alg:?} key as {what}, {mac:?}, no secret")).await;
                }
                // The asymmetric alg over an HMAC made with the key bytes.
                let t = hmac_token(&secret, Algorithm::HS256, json!({"alg": alg_name(alg)}), "attacker@example.com");
                refused(&app, &t, "bad_signature", &format!("{alg:?} header over an HMAC with the {what}")).await;
            }
            // The public key and a shared secret: HMAC uses the secret, never the key.
            configure(&mut app, json!({"jwt-shared-secret": SECRET})).await;
            for (what, secret) in hmac_secrets(public, private, alg) {
                for mac in [Algorithm::HS256, Algorithm::HS512] {
                    let t = hmac_token(&secret, mac, json!({"kid": "k"}), "attacker@example.com");
                    refused(&app, &t, "bad_signature", &format!("{alg:?} key as {what}, {mac:?}, with a secret")).await;
                }
            }
            // Both still work for what they are.
            accepted(&app, &sign(login_claims("hs@example.com")), "HS256 with the secret").await;
            accepted(&app, &token(alg, private, json!({}), "pk@example.com"), "the key's own alg").await;
        }
        assert!(app.store.find_user_by_email("attacker@example.com").await.unwrap().is_none());
    }

    async fn an_all_zero_ecdsa_signature_is_refused(mut app) {
        configure(&mut app, json!({"jwt-algorithms": ["ES256", "ES384"], "jwt-public-keys": [EC_A.0, EC384.0]})).await;
        let claims = login_claims("psychic@example.com").to_string();
        for (alg, len) in [("ES256", 64), ("ES384", 96)] {
            let h = json!({"alg": alg}).to_string();
            for sig in [vec![0u8; len], vec![0u8; len / 2], Vec::from([0u8])] {
                let t = format!("{}.{}.{}", b64(h.as_bytes()), b64(claims.as_bytes()), b64(&sig));
                refused(&app, &t, "bad_signature", &format!("{alg} with {} zero bytes", sig.len())).await;
            }
        }
    }

    async fn a_kid_naming_a_key_of_another_family_is_refused(mut app) {
        let server = JwksServer::start(
            vec![jwk(EC_A.1, Algorithm::ES256, "ec-1"), jwk(RSA_A.1, Algorithm::RS256, "rsa-1")],
            "max-age=600",
        ).await;
        configure(&mut app, json!({"jwt-algorithms": ["RS256", "ES256"], "jwt-jwks-uri": server.url})).await;
        let t = token(Algorithm::RS256, RSA_A.1, json!({"kid": "ec-1"}), "x@example.com");
        refused(&app, &t, "alg_not_allowed", "RS256 with the kid of an EC key").await;
        let t = token(Algorithm::ES256, EC_A.1, json!({"kid": "rsa-1"}), "x@example.com");
        refused(&app, &t, "alg_not_allowed", "ES256 with the kid of an RSA key").await;
        accepted(&app, &token(Algorithm::RS256, RSA_A.1, json!({"kid": "rsa-1"}), "ok@example.com"), "the right kid").await;
        // kid injection strings are only ever compared with the JWKS kids.
        for kid in ["../../../../../../dev/null", "x' UNION SELECT '1';--", "|sleep 10", "/invalid_path"] {
            let t = token(Algorithm::ES256, EC_B.1, json!({"kid": kid}), "x@example.com");
            refused(&app, &t, "bad_signature", kid).await;
        }
        assert_eq!(server.hits(), 2, "the initial fetch and one unknown-kid refetch");
    }

    async fn jku_x5u_and_jwk_headers_cause_no_connection(mut app) {
        let attacker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let evil = format!("http://127.0.0.1:{}/keys", attacker.local_addr().unwrap().port());
        let server = JwksServer::start(vec![jwk(RSA_A.1, Algorithm::RS256, "rsa-1")], "max-age=600").await;
        configure(&mut app, json!({
            "jwt-algorithms": ["RS256", "ES256", "HS256"],
            "jwt-jwks-uri": server.url,
            "jwt-public-keys": [EC_A.0],
            "jwt-shared-secret": SECRET,
        })).await;
        // One honest sign-in fetches the JWKS, so the RS256 cases below reach the header
        // check (before that, RS256 has no key of its family and is alg_not_allowed).
        accepted(&app, &token(Algorithm::RS256, RSA_A.1, json!({"kid": "rsa-1"}), "ok@example.com"), "honest").await;
        assert_eq!(server.hits(), 1);
        let attacker_jwk = jwk(EC_B.1, Algorithm::ES256, "evil");
        let cases = [
            // Signed with the configured keys, and with the attacker's key.
            (Algorithm::RS256, RSA_A.1, json!({"kid": "rsa-1", "jku": evil})),
            (Algorithm::RS256, RSA_A.1, json!({"x5u": evil})),
            (Algorithm::RS256, RSA_A.1, json!({"kid": "unknown", "jku": evil})),
            (Algorithm::ES256, EC_B.1, json!({"jku": evil, "kid": "evil"})),
            (Algorithm::ES256, EC_B.1, json!({"x5u": evil})),
            (Algorithm::ES256, EC_B.1, json!({"jwk": attacker_jwk})),
            (Algorithm::ES256, EC_A.1, json!({"jwk": attacker_jwk})),
            (Algorithm::HS256, SECRET, json!({"jku": evil})),
            (Algorithm::HS256, SECRET, json!({"jwk": {"kty": "oct", "k": b64(b"attacker-chosen-key-attacker-chosen")}})),
        ];
        for (alg, key, header) in cases {
            let t = token(alg, key, header.clone(), "x@example.com");
            refused(&app, &t, "header_not_allowed", &header.to_string()).await;
        }
        let connected = tokio::time::timeout(Duration::from_millis(300), attacker.accept()).await;
        assert!(connected.is_err(), "the server connected to a URL from a token header");
        assert_eq!(server.hits(), 1, "refused headers never cause a JWKS fetch either");
    }
}
