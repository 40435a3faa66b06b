//! Each algorithm signs in with its key; the time, issuer and audience rules hold for
//! asymmetric tokens too; logout tokens and the dry run use the same keys; the
//! `jwt-public-keys` setting refuses what is not a usable public key.

use jsonwebtoken::Algorithm;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

both_backends! {
    async fn every_algorithm_signs_in_with_its_key(mut app) {
        configure(&mut app, json!({
            "jwt-algorithms": ALL_ALGS,
            "jwt-shared-secret": SECRET,
            "jwt-public-keys": [RSA_A.0, EC_A.0, EC384.0, ED.0],
        })).await;
        let cases = [
            (Algorithm::HS256, SECRET),
            (Algorithm::HS384, SECRET),
            (Algorithm::HS512, SECRET),
            (Algorithm::RS256, RSA_A.1),
            (Algorithm::RS384, RSA_A.1),
            (Algorithm::RS512, RSA_A.1),
            (Algorithm::PS256, RSA_A.1),
            (Algorithm::PS384, RSA_A.1),
            (Algorithm::PS512, RSA_A.1),
            (Algorithm::ES256, EC_A.1),
            (Algorithm::ES384, EC384.1),
            (Algorithm::EdDSA, ED.1),
        ];
        for (alg, key) in cases {
            let email = format!("{}@example.com", alg_name(alg).to_lowercase());
            let user = accepted(&app, &token(alg, key, json!({"typ": "JWT"}), &email), &alg_name(alg)).await;
            assert_eq!(user["email"], json!(email));
            assert_eq!(user["sso_source"], json!("jwt"));
        }
        // And through the browser redirect, with an RSA PKCS#1 ("RSA PUBLIC KEY") key.
        configure(&mut app, json!({"jwt-public-keys": [RSA_A_PKCS1]})).await;
        let res = app.sso_callback(&token(Algorithm::PS256, RSA_A.1, json!({}), "pkcs1@example.com"), Some("/after")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(res.headers()["location"], "/after");
        assert!(res.headers().get("set-cookie").is_some());
    }

    async fn a_key_signs_only_for_its_own_family_and_listed_algorithms(mut app) {
        configure(&mut app, json!({
            "jwt-algorithms": ["RS256", "ES256", "EdDSA", "HS256"],
            "jwt-public-keys": [EC_A.0],
        })).await;
        // A public key alone makes SSO configured.
        let props = body_json(app.client.get(app.url("/api/session/properties")).send().await.unwrap()).await;
        assert_eq!(props["jwt_enabled"], json!(true));
        accepted(&app, &token(Algorithm::ES256, EC_A.1, json!({}), "ec@example.com"), "ES256").await;
        // No key of the family: RSA, Ed25519, and HMAC without a shared secret.
        refused(&app, &token(Algorithm::RS256, RSA_A.1, json!({}), "x@example.com"), "alg_not_allowed", "RS256").await;
        refused(&app, &token(Algorithm::EdDSA, ED.1, json!({}), "x@example.com"), "alg_not_allowed", "EdDSA").await;
        refused(&app, &sign(login_claims("x@example.com")), "alg_not_allowed", "HS256 without a secret").await;
        // ES384 is not listed, and a P-384 key would be needed anyway.
        configure(&mut app, json!({"jwt-public-keys": [EC_A.0, EC384.0]})).await;
        refused(&app, &token(Algorithm::ES384, EC384.1, json!({}), "x@example.com"), "alg_not_allowed", "ES384 not listed").await;
        // Another P-256 key: a bad signature.
        refused(&app, &token(Algorithm::ES256, EC_B.1, json!({}), "x@example.com"), "bad_signature", "another EC key").await;
    }

    async fn issuer_audience_max_age_and_skew_apply_to_asymmetric_tokens(mut app) {
        configure(&mut app, json!({
            "jwt-algorithms": ["ES256", "RS256"],
            "jwt-public-keys": [EC_A.0, RSA_A.0],
            "jwt-issuer": "https://idp.example",
            "jwt-audience": "latchkey",
            "jwt-max-age-seconds": 60,
            "jwt-clock-skew-seconds": 5,
        })).await;
        let key = encoding_key(EC_A.1, Algorithm::ES256);
        let n = now();
        let claims = |extra: serde_json::Value| {
            let mut c = json!({"email": "t@example.com", "iat": n, "jti": uuid::Uuid::new_v4().to_string(),
                "iss": "https://idp.example", "aud": "latchkey"});
            for (k, v) in extra.as_object().unwrap() {
                if v.is_null() { c.as_object_mut().unwrap().remove(k); } else { c[k] = v.clone(); }
            }
            c
        };
        let es = |extra| sign_key(&key, Algorithm::ES256, json!({}), &claims(extra));
        accepted(&app, &es(json!({})), "aud string").await;
        accepted(&app, &es(json!({"aud": ["other", "latchkey"]})), "aud array").await;
        accepted(&app, &es(json!({"iat": n - 60})), "iat at max age").await;
        accepted(&app, &es(json!({"iat": n + 3})), "iat within the skew").await;
        accepted(&app, &es(json!({"iat": null, "exp": n + 30})), "exp only").await;
        let rs = sign_key(&encoding_key(RSA_A.1, Algorithm::RS256), Algorithm::RS256, json!({}), &claims(json!({"iss": "https://evil.example"})));
        refused(&app, &rs, "issuer_mismatch", "RS256 wrong iss").await;
        for (extra, code) in [
            (json!({"iss": null}), "issuer_mismatch"),
            (json!({"aud": "other"}), "audience_mismatch"),
            (json!({"aud": ["other"]}), "audience_mismatch"),
            (json!({"aud": null}), "audience_mismatch"),
            (json!({"iat": n - 70}), "token_too_old"),
            (json!({"iat": n + 30}), "token_issued_in_future"),
            (json!({"exp": n - 10}), "token_expired"),
            (json!({"nbf": n + 30}), "token_not_yet_valid"),
            (json!({"iat": null}), "token_never_expires"),
            (json!({"iat": "now"}), "claim_invalid"),
        ] {
            refused(&app, &es(extra.clone()), code, &extra.to_string()).await;
        }
        // Single use holds for asymmetric tokens too.
        let once = es(json!({}));
        accepted(&app, &once, "first use").await;
        refused(&app, &once, "token_replayed", "second use").await;
    }

    async fn logout_tokens_and_the_dry_run_use_the_same_keys(mut app) {
        configure(&mut app, json!({"jwt-algorithms": ["EdDSA", "RS256"], "jwt-public-keys": [ED.0, RSA_A.0]})).await;
        let user = accepted(&app, &token(Algorithm::EdDSA, ED.1, json!({}), "bye@example.com"), "login").await;
        assert!(user["id"].as_i64().is_some());
        let claims = json!({"email": "bye@example.com", "iat": now(), "jti": "logout-1", "events": {LOGOUT_EVENT: {}}});
        let logout = sign_key(&encoding_key(ED.1, Algorithm::EdDSA), Algorithm::EdDSA, json!({"typ": "logout+jwt"}), &claims);
        let res = app.client.post(app.url("/auth/sso/logout")).form(&[("logout_token", logout.as_str())]).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_json(res).await, json!({"revoked": 1}));
        // A logout token signed by a key that is not configured.
        let forged = sign_key(&encoding_key(EC_A.1, Algorithm::ES256), Algorithm::ES256, json!({}), &json!({"email": "bye@example.com", "iat": now(), "jti": "logout-2", "events": {LOGOUT_EVENT: {}}}));
        let res = app.client.post(app.url("/auth/sso/logout")).form(&[("logout_token", forged.as_str())]).send().await.unwrap();
        assert_error(res, 401, "alg_not_allowed").await;

        let t = token(Algorithm::RS256, RSA_A.1, json!({}), "dry@example.com");
        let res = app.admin(Method::POST, "/api/sso/jwt/test").json(&json!({"token": t})).send().await.unwrap();
        let report = body_json(res).await;
        assert_eq!(report["ok"], json!(true), "{report}");
        let sig = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "signature").unwrap().clone();
        assert_eq!(sig["detail"], json!("RS256 signature matches public key 2 (RSA)"));
        // The dry run consumed nothing: the token still signs in.
        accepted(&app, &t, "after the dry run").await;
    }

    async fn the_public_keys_setting_takes_only_usable_public_keys(mut app) {
        configure(&mut app, json!({})).await;
        for (bad, why) in [
            (RSA_A.1, "private key"),
            (ED.1, "private key"),
            (EC_CERT, "certificate"),
            (RSA_1024, "2048"),
            (EC_P521, "curve"),
            ("not a key", "PEM"),
        ] {
            let res = app.put_setting("jwt-public-keys", json!([EC_A.0, bad])).await;
            let body = assert_error(res, 400, "validation_failed").await;
            assert_eq!(body["field"], json!("jwt-public-keys"), "{body}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("key 2") && message.contains(why), "{why}: {message}");
            if let Some(line) = bad.lines().nth(1) {
                assert!(!message.contains(line), "the key is not echoed: {message}");
            }
        }
        let res = app.put_setting("jwt-public-keys", json!([EC_A.0, RSA_A_PKCS1, ED.0])).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = app.admin(Method::GET, "/api/setting/jwt-public-keys").send().await.unwrap();
        assert_eq!(body_json(res).await["value"], json!([EC_A.0, RSA_A_PKCS1, ED.0]));
        // The JWKS URI must be https, except on loopback.
        let res = app.put_setting("jwt-jwks-uri", json!("http://idp.example/jwks")).await;
        assert_error(res, 400, "validation_failed").await;
        let res = app.put_setting("jwt-jwks-uri", json!("https://idp.example/jwks")).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }
}
