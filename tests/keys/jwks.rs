//! JWKS against a loopback server the test runs (plain http is allowed on 127.0.0.1):
//! rotation, an endpoint that goes down, floods of unknown `kid`s, `oct` keys, and JWKS
//! keys next to PEM keys. Request counts are taken at the server.

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

both_backends! {
    async fn a_new_kid_is_accepted_after_one_refetch(mut app) {
        // max-age=0 is raised to the 60 s floor: the set is not refetched within the test.
        let server = JwksServer::start(vec![jwk(RSA_A.1, Algorithm::RS256, "k1")], "max-age=0").await;
        configure(&mut app, json!({"jwt-algorithms": ["RS256"], "jwt-jwks-uri": server.url})).await;
        assert_eq!(server.hits(), 0, "nothing is fetched before a token needs it");
        accepted(&app, &token(Algorithm::RS256, RSA_A.1, json!({"kid": "k1"}), "a@example.com"), "k1").await;
        assert_eq!(server.hits(), 1);
        accepted(&app, &token(Algorithm::RS256, RSA_A.1, json!({"kid": "k1"}), "a@example.com"), "k1 again").await;
        assert_eq!(server.hits(), 1, "a known kid is served from the cache");
        // The identity provider rotates: k2 appears.
        server.set_keys(vec![jwk(RSA_A.1, Algorithm::RS256, "k1"), jwk(RSA_B.1, Algorithm::RS256, "k2")]);
        accepted(&app, &token(Algorithm::RS256, RSA_B.1, json!({"kid": "k2"}), "b@example.com"), "k2").await;
        assert_eq!(server.hits(), 2, "one refetch for the new kid");
        accepted(&app, &token(Algorithm::RS256, RSA_B.1, json!({"kid": "k2"}), "b@example.com"), "k2 again").await;
        accepted(&app, &token(Algorithm::RS256, RSA_B.1, json!({}), "c@example.com"), "no kid: every key is tried").await;
        assert_eq!(server.hits(), 2);
        assert_eq!(jwks_refreshes(&app, "success").await, 2.0);
        assert_eq!(jwks_refreshes(&app, "failure").await, 0.0);
    }

    async fn the_last_good_keys_keep_working_while_the_endpoint_is_down(mut app) {
        let server = JwksServer::start(vec![jwk(EC_A.1, Algorithm::ES256, "k1")], "max-age=600").await;
        configure(&mut app, json!({"jwt-algorithms": ["ES256"], "jwt-jwks-uri": server.url})).await;
        accepted(&app, &token(Algorithm::ES256, EC_A.1, json!({"kid": "k1"}), "a@example.com"), "up").await;
        server.set_mode(Mode::Status(503));
        // An unknown kid refetches, which fails: the token is refused, the keys stay.
        refused(&app, &token(Algorithm::ES256, EC_B.1, json!({"kid": "k2"}), "b@example.com"), "bad_signature", "k2 while down").await;
        assert_eq!(server.hits(), 2);
        assert_eq!(jwks_refreshes(&app, "failure").await, 1.0);
        accepted(&app, &token(Algorithm::ES256, EC_A.1, json!({"kid": "k1"}), "a@example.com"), "k1 while down").await;
        accepted(&app, &token(Algorithm::ES256, EC_A.1, json!({}), "a@example.com"), "no kid while down").await;
        server.set_mode(Mode::Garbage);
        accepted(&app, &token(Algorithm::ES256, EC_A.1, json!({"kid": "k1"}), "a@example.com"), "k1 while broken").await;
        assert_eq!(server.hits(), 2, "no retry within the back-off");
        assert_eq!(jwks_refreshes(&app, "success").await, 1.0);
    }

    async fn a_flood_of_unknown_kids_fetches_at_most_once(mut app) {
        let server = JwksServer::start(vec![jwk(RSA_A.1, Algorithm::RS256, "k1")], "max-age=600").await;
        configure(&mut app, json!({"jwt-algorithms": ["RS256"], "jwt-jwks-uri": server.url})).await;
        accepted(&app, &token(Algorithm::RS256, RSA_A.1, json!({"kid": "k1"}), "a@example.com"), "warm-up").await;
        assert_eq!(server.hits(), 1);
        // 25 one after the other, then 25 at once.
        let flood = |i: usize| token(Algorithm::RS256, RSA_B.1, json!({"kid": uuid::Uuid::new_v4().to_string()}), &format!("f{i}@example.com"));
        for i in 0..25 {
            refused(&app, &flood(i), "bad_signature", "random kid").await;
        }
        let mut tasks = Vec::new();
        for i in 25..50 {
            let (client, url, t) = (app.client.clone(), app.url("/auth/sso"), flood(i));
            tasks.push(tokio::spawn(async move {
                let res = client.get(url).query(&[("jwt", t)]).header("accept", "application/json").send().await.unwrap();
                (res.status().as_u16(), body_json(res).await["error"].clone())
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), (401, json!("bad_signature")));
        }
        assert_eq!(server.hits(), 2, "the warm-up fetch and one refetch for 50 unknown kids");
        // The known key is unaffected.
        accepted(&app, &token(Algorithm::RS256, RSA_A.1, json!({"kid": "k1"}), "a@example.com"), "k1 after the flood").await;
        assert_eq!(server.hits(), 2);
        assert_eq!(state(&app).await.0, 2, "the admin and a@example.com only");
    }

    async fn jwks_keys_work_next_to_pem_keys_and_oct_keys_are_ignored(mut app) {
        let oct = json!({"kty": "oct", "kid": "hmac", "k": b64(SECRET.as_bytes())});
        let mut pinned = jwk(EC_B.1, Algorithm::ES256, "pinned");
        pinned["alg"] = json!("ES256");
        let server = JwksServer::start(vec![oct, jwk(RSA_A.1, Algorithm::RS256, "rsa"), pinned], "max-age=600").await;
        configure(&mut app, json!({
            "jwt-algorithms": ["RS256", "PS256", "ES256", "HS256"],
            "jwt-jwks-uri": server.url,
            "jwt-public-keys": [EC_A.0],
        })).await;
        // The oct key is never an HMAC key (and there is no shared secret).
        refused(&app, &token(Algorithm::HS256, SECRET, json!({"kid": "hmac"}), "x@example.com"), "alg_not_allowed", "HS256 with the JWKS oct key").await;
        assert_eq!(server.hits(), 0, "HMAC tokens never fetch");
        accepted(&app, &token(Algorithm::RS256, RSA_A.1, json!({"kid": "rsa"}), "r@example.com"), "JWKS RSA key").await;
        accepted(&app, &token(Algorithm::PS256, RSA_A.1, json!({"kid": "rsa"}), "r@example.com"), "the same key with PS256").await;
        accepted(&app, &token(Algorithm::ES256, EC_A.1, json!({}), "e@example.com"), "PEM key, no kid").await;
        accepted(&app, &token(Algorithm::ES256, EC_A.1, json!({"kid": "not-in-the-jwks"}), "e@example.com"), "PEM key after an unknown kid").await;
        accepted(&app, &token(Algorithm::ES256, EC_B.1, json!({"kid": "pinned"}), "p@example.com"), "a JWK with its own alg").await;
        accepted(&app, &token(Algorithm::ES256, EC_B.1, json!({}), "p@example.com"), "no kid: JWKS keys are tried too").await;
        // Changing the URI starts a new cache.
        let other = JwksServer::start(vec![jwk(RSA_B.1, Algorithm::RS256, "rsa")], "max-age=600").await;
        configure(&mut app, json!({"jwt-jwks-uri": other.url})).await;
        // (settings reach the cache through the settings snapshot of the request)
        accepted(&app, &token(Algorithm::RS256, RSA_B.1, json!({"kid": "rsa"}), "r2@example.com"), "the new endpoint's key").await;
        refused(&app, &token(Algorithm::RS256, RSA_A.1, json!({"kid": "rsa"}), "r@example.com"), "bad_signature", "the old endpoint's key").await;
        assert_eq!(other.hits(), 1);
    }
}
