//! Crafted tokens (research/security.md §1.3, J-01…J-22): every one is refused with its
//! reason code, and nothing is written. A few look-alikes that must *pass* are here too, so
//! the refusals are known to come from the rule under test and not from a broken token.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Valid claims as text with a unique jti (so a case can never fail as a replay).
fn claims(tag: &str) -> String {
    json!({"email": "target@example.com", "first_name": "T", "iat": now(), "jti": format!("atk-{tag}")})
        .to_string()
}

/// One signed, well-formed token whose signature contains `-` or `_`, so the standard
/// base64 alphabet can be swapped in.
fn token_with_urlsafe_chars_in_signature() -> String {
    (0..1000)
        .map(|i| forge(HS256, &claims(&format!("alphabet-{i}"))))
        .find(|t| {
            let sig = t.rsplit('.').next().unwrap();
            sig.contains('-') || sig.contains('_')
        })
        .expect("some MAC contains - or _")
}

/// The attack table: (what, token, expected code). Every token here is refused with 401.
fn attack_cases() -> Vec<(String, String, &'static str)> {
    let mut cases: Vec<(String, String, &'static str)> = Vec::new();
    let mut add = |what: &str, token: String, code: &'static str| {
        cases.push((what.to_owned(), token, code));
    };

    // J-01: alg none in every case, with an empty, a garbage and a real signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg}).to_string();
        let p = claims(&format!("none-{alg}"));
        add(
            &format!("alg {alg}, empty signature"),
            unsigned(&h, &p, ""),
            "token_malformed",
        );
        add(
            &format!("alg {alg}, garbage signature"),
            unsigned(&h, &p, "AAAA"),
            "alg_not_allowed",
        );
        add(
            &format!("alg {alg}, real HS256 MAC"),
            forge(&h, &p),
            "alg_not_allowed",
        );
        let h = json!({"alg": alg, "typ": "JWT"}).to_string();
        add(
            &format!("alg {alg} typ JWT, real MAC"),
            forge(&h, &p),
            "alg_not_allowed",
        );
    }
    // J-02: missing or odd alg.
    add(
        "header {}",
        forge("{}", &claims("j02-a")),
        "token_malformed",
    );
    add(
        "header without alg",
        forge(r#"{"typ":"JWT"}"#, &claims("j02-b")),
        "token_malformed",
    );
    for (i, h) in [
        r#"{"alg":""}"#,
        r#"{"alg":null}"#,
        r#"{"alg":123}"#,
        r#"{"alg":["HS256"]}"#,
        r#"{"alg":{"name":"HS256"}}"#,
    ]
    .iter()
    .enumerate()
    {
        add(
            &format!("odd alg {h}"),
            forge(h, &claims(&format!("j02-{i}"))),
            "alg_not_allowed",
        );
    }
    // J-03: case and whitespace variants of HS256, each validly MAC'd.
    for (i, alg) in [
        "hs256",
        "Hs256",
        "HS256 ",
        " HS256",
        "HS256\u{0}",
        "HS-256",
        "HMAC-SHA256",
    ]
    .iter()
    .enumerate()
    {
        let h = json!({"alg": alg}).to_string();
        add(
            &format!("alg {alg:?}"),
            forge(&h, &claims(&format!("j03-{i}"))),
            "alg_not_allowed",
        );
    }
    // J-04: substitution inside the HMAC family and across families.
    add(
        "HS384 MAC'd with the key",
        forge_with(
            r#"{"alg":"HS384"}"#,
            &claims("j04-384"),
            SECRET.as_bytes(),
            Algorithm::HS384,
        ),
        "alg_not_allowed",
    );
    add(
        "HS512 MAC'd with the key",
        forge_with(
            r#"{"alg":"HS512"}"#,
            &claims("j04-512"),
            SECRET.as_bytes(),
            Algorithm::HS512,
        ),
        "alg_not_allowed",
    );
    for alg in ["RS256", "ES256", "PS256", "EdDSA", "ES384", "RS512"] {
        let h = json!({"alg": alg}).to_string();
        add(
            &format!("{alg} with a garbage signature"),
            unsigned(&h, &claims(&format!("j04-{alg}")), "AAAA"),
            "alg_not_allowed",
        );
        add(
            &format!("{alg} header over an HS256 MAC (key confusion)"),
            forge(&h, &claims(&format!("j05-{alg}"))),
            "alg_not_allowed",
        );
    }
    // J-06: psychic signature, r = s = 0.
    add(
        "ES256 with 64 zero bytes",
        unsigned(r#"{"alg":"ES256"}"#, &claims("j06"), &"A".repeat(86)),
        "alg_not_allowed",
    );
    // J-11 … J-15: headers that carry keys or change processing, and odd typ values.
    let headers = [
        ("crit [exp]", r#"{"alg":"HS256","crit":["exp"]}"#),
        ("crit []", r#"{"alg":"HS256","crit":[]}"#),
        ("b64 false", r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#),
        ("cty JWT", r#"{"alg":"HS256","cty":"JWT"}"#),
        (
            "jku",
            r#"{"alg":"HS256","jku":"http://127.0.0.1:9/jwks.json"}"#,
        ),
        (
            "x5u",
            r#"{"alg":"HS256","x5u":"http://127.0.0.1:9/cert.pem"}"#,
        ),
        ("jwk", r#"{"alg":"HS256","jwk":{"kty":"oct","k":"QUFBQQ"}}"#),
        ("x5c", r#"{"alg":"HS256","x5c":["MIIB"]}"#),
        ("enc", r#"{"alg":"HS256","enc":"A128GCM"}"#),
        ("zip", r#"{"alg":"HS256","zip":"DEF"}"#),
        ("typ at+jwt", r#"{"alg":"HS256","typ":"at+jwt"}"#),
        (
            "typ secevent+jwt",
            r#"{"alg":"HS256","typ":"secevent+jwt"}"#,
        ),
        ("typ JOSE", r#"{"alg":"HS256","typ":"JOSE"}"#),
        (
            "typ logout+jwt on a login token",
            r#"{"alg":"HS256","typ":"logout+jwt"}"#,
        ),
        ("typ a number", r#"{"alg":"HS256","typ":1}"#),
    ];
    for (i, (what, h)) in headers.iter().enumerate() {
        add(
            what,
            forge(h, &claims(&format!("hdr-{i}"))),
            "header_not_allowed",
        );
    }
    // J-14: a nested token behind cty is never unwrapped (a payload that is a JSON string
    // is not a claims object, which the structure check sees first).
    let inner = unsigned(r#"{"alg":"none"}"#, &claims("nested-inner"), "");
    add(
        "cty JWT wrapping an unsigned token",
        forge(r#"{"alg":"HS256","cty":"JWT"}"#, &json!(inner).to_string()),
        "token_malformed",
    );
    add(
        "cty JWT with the inner token as a claim",
        forge(
            r#"{"alg":"HS256","cty":"JWT"}"#,
            &json!({"email": "t@example.com", "iat": now(), "jwt": inner}).to_string(),
        ),
        "header_not_allowed",
    );
    // J-10: kid never picks a key for the shared secret.
    add(
        "kid /dev/null, MAC with the empty key",
        forge_with(
            r#"{"alg":"HS256","kid":"../../../../../../dev/null"}"#,
            &claims("kid-a"),
            b"",
            Algorithm::HS256,
        ),
        "bad_signature",
    );
    add(
        "kid SQL injection, MAC with key 1",
        forge_with(
            r#"{"alg":"HS256","kid":"x' UNION SELECT '1';--"}"#,
            &claims("kid-b"),
            b"1",
            Algorithm::HS256,
        ),
        "bad_signature",
    );
    // J-17: duplicate JSON keys anywhere.
    let n = now();
    add(
        "duplicate alg (none, HS256)",
        forge(r#"{"alg":"none","alg":"HS256"}"#, &claims("dup-1")),
        "token_malformed",
    );
    add(
        "duplicate alg (HS256, none)",
        forge(r#"{"alg":"HS256","alg":"none"}"#, &claims("dup-2")),
        "token_malformed",
    );
    add(
        "duplicate alg through an escape",
        forge(r#"{"alg":"HS256","\u0061lg":"HS256"}"#, &claims("dup-3")),
        "token_malformed",
    );
    add(
        "duplicate email",
        forge(
            HS256,
            &format!(
                r#"{{"email":"victim@example.com","email":"attacker@example.com","iat":{n},"jti":"dup-4"}}"#
            ),
        ),
        "token_malformed",
    );
    add(
        "duplicate groups",
        forge(
            HS256,
            &format!(
                r#"{{"email":"t@example.com","groups":["Users"],"groups":["Administrators"],"iat":{n},"jti":"dup-5"}}"#
            ),
        ),
        "token_malformed",
    );
    add(
        "duplicate iat",
        forge(
            HS256,
            &format!(r#"{{"email":"t@example.com","iat":1,"iat":{n},"jti":"dup-6"}}"#),
        ),
        "token_malformed",
    );
    add(
        "duplicate key in a nested attribute",
        forge(
            HS256,
            &format!(
                r#"{{"email":"t@example.com","meta":{{"a":1,"a":2}},"iat":{n},"jti":"dup-7"}}"#
            ),
        ),
        "token_malformed",
    );
    // J-07 / J-18: padding and non-canonical base64url.
    let h_pad = URL_SAFE.encode(r#"{"alg":"HS256"} "#);
    assert!(h_pad.ends_with('='), "{h_pad}");
    let input = format!("{h_pad}.{}", b64(claims("pad-1").as_bytes()));
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    add(
        "padded header, MAC over it",
        format!("{input}.{sig}"),
        "token_malformed",
    );
    let p_text = format!("{} ", claims("pad-2"));
    let p_pad = (0..3)
        .map(|k| format!("{p_text}{}", " ".repeat(k)))
        .map(|p| URL_SAFE.encode(p))
        .find(|e| e.ends_with('='))
        .unwrap();
    let input = format!("{}.{p_pad}", b64(HS256.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    add(
        "padded payload, MAC over it",
        format!("{input}.{sig}"),
        "token_malformed",
    );
    add(
        "signature with = padding",
        format!("{}=", forge(HS256, &claims("pad-3"))),
        "token_malformed",
    );
    let t = forge(HS256, &claims("bits"));
    let (head, last) = t.split_at(t.len() - 1);
    const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = B64URL.find(last).unwrap();
    assert_eq!(
        idx % 4,
        0,
        "a 32-byte MAC ends in a character with two zero bits"
    );
    let tweaked = &B64URL[idx + 1..idx + 2];
    add(
        "signature with non-zero trailing bits",
        format!("{head}{tweaked}"),
        "token_malformed",
    );
    let t = token_with_urlsafe_chars_in_signature();
    let (si, sig) = t.rsplit_once('.').unwrap();
    add(
        "signature in the standard base64 alphabet",
        format!("{si}.{}", sig.replace('-', "+").replace('_', "/")),
        "token_malformed",
    );
    let t = forge(HS256, &claims("space"));
    let (h, rest) = t.split_once('.').unwrap();
    add(
        "a space inside a segment",
        format!("{h}.{} {}", &rest[..5], &rest[5..]),
        "token_malformed",
    );
    add(
        "a newline inside a segment",
        format!("{h}.{}\n{}", &rest[..5], &rest[5..]),
        "token_malformed",
    );
    add(
        "a tab before the token",
        format!("\t{t}"),
        "token_malformed",
    );
    add(
        "percent-escaped dots",
        forge(HS256, &claims("pct")).replace('.', "%2E"),
        "token_malformed",
    );
    // J-16: the wrong number of parts, JWE, JSON serialisation.
    let t = forge(HS256, &claims("parts"));
    let (si, _) = t.rsplit_once('.').unwrap();
    add("2 parts", si.to_owned(), "token_malformed");
    add("4 parts", format!("{t}.AAAA"), "token_malformed");
    add("trailing dot", format!("{t}."), "token_malformed");
    add(
        "5-part JWE",
        "eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4R0NNIn0..AAAA.BBBB.CCCC".to_owned(),
        "token_malformed",
    );
    let (h, rest) = t.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    add(
        "JWS JSON serialisation",
        json!({"payload": p, "signatures": [{"protected": h, "signature": s}]}).to_string(),
        "token_malformed",
    );
    add(
        "header is a JSON array",
        forge("[]", &claims("arr")),
        "token_malformed",
    );
    add(
        "payload is a JSON string",
        forge(HS256, r#""t@example.com""#),
        "token_malformed",
    );
    add(
        "payload is not UTF-8",
        {
            let input = format!(
                "{}.{}",
                b64(HS256.as_bytes()),
                b64(&[0xff, 0xfe, b'{', b'}'])
            );
            let sig = jsonwebtoken::crypto::sign(
                input.as_bytes(),
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
                Algorithm::HS256,
            )
            .unwrap();
            format!("{input}.{sig}")
        },
        "token_malformed",
    );
    let deep = format!(
        r#"{{"email":"t@example.com","iat":{n},"x":{}{}}}"#,
        "[".repeat(2500),
        "]".repeat(2500)
    );
    add(
        "payload nested 2500 deep",
        forge(HS256, &deep),
        "token_malformed",
    );
    // J-19: size.
    add(
        "16 KiB token",
        forge(
            HS256,
            &json!({"email": "t@example.com", "iat": n, "blob": "x".repeat(12_000)}).to_string(),
        ),
        "token_too_large",
    );
    // J-22: the email claim's type and content.
    for (i, email) in [
        json!(["victim@example.com", "attacker@example.com"]),
        json!({"address": "t@example.com"}),
        json!(42),
        json!(true),
        json!("admin@example.com\u{0}.evil.example"),
        json!("admin@example.com\n"),
        json!("admin@exa\u{7f}mple.com"),
        // Look-alikes of an ASCII address (F-02): the Kelvin sign, fullwidth letters, a blank
        // Hangul filler.
        json!("\u{212A}ate@example.com"),
        json!("\u{FF41}dmin@example.com"),
        json!("admin\u{3164}@example.com"),
    ]
    .iter()
    .enumerate()
    {
        let p = json!({"email": email, "iat": n, "jti": format!("email-{i}")}).to_string();
        add(&format!("email {email}"), forge(HS256, &p), "invalid_email");
    }
    // NUL characters in claims that are stored or used as keys (PostgreSQL text cannot
    // hold them): refused on both backends alike, never a 500.
    for (i, (claim, value)) in [
        ("first_name", "a\u{0}b"),
        ("last_name", "\u{0}"),
        ("sub", "idp\u{0}1"),
        ("jti", "j\u{0}1"),
    ]
    .iter()
    .enumerate()
    {
        let mut p = json!({"email": "t@example.com", "iat": n, "jti": format!("nul-{i}")});
        p[*claim] = json!(value);
        add(
            &format!("NUL in {claim}"),
            forge(HS256, &p.to_string()),
            "claim_invalid",
        );
    }
    // J-20 / J-21: times.
    for (i, (extra, code)) in [
        (json!({"iat": n.to_string()}), "claim_invalid"),
        (json!({"iat": null}), "claim_invalid"),
        (json!({"iat": [n]}), "claim_invalid"),
        (json!({"iat": n + 3600}), "token_issued_in_future"),
        (json!({"iat": 1e300}), "token_issued_in_future"),
        (json!({"iat": n - 1000}), "token_too_old"),
        (json!({"iat": -1}), "token_too_old"),
        (json!({"exp": n - 3600}), "token_expired"),
        (json!({"exp": "never"}), "claim_invalid"),
        (
            json!({"nbf": n + 3600, "exp": n + 7200}),
            "token_not_yet_valid",
        ),
        (json!({"nbf": n}), "token_never_expires"),
        (json!({}), "token_never_expires"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = json!({"email": "t@example.com", "jti": format!("time-{i}")});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        add(
            &format!("times {extra}"),
            forge(HS256, &p.to_string()),
            code,
        );
    }
    cases
}

both_backends! {
    async fn crafted_tokens_are_refused_with_their_reason_code_and_write_nothing(mut app) {
        sso_ready(&mut app).await;
        let cases = attack_cases();
        assert!(cases.len() > 90, "{} cases", cases.len());
        for (what, token, code) in &cases {
            expect_refused(&app, token, 401, code, what).await;
        }
        assert!(app.store.find_user_by_email("target@example.com").await.unwrap().is_none());
        assert!(app.store.find_user_by_email("attacker@example.com").await.unwrap().is_none());
        // The same claims, honestly signed, do log in: the rules above are what refused them.
        let good = forge(HS256, &claims("control"));
        assert_eq!(app.sso_callback(&good, None).await.status(), StatusCode::FOUND);
    }

    async fn crafted_tokens_are_refused_over_post_too(mut app) {
        sso_ready(&mut app).await;
        let before = Counts::of(&app).await;
        for (what, token, code) in attack_cases().iter().step_by(7) {
            let res = app.client.post(app.url("/auth/sso")).form(&[("jwt", token.as_str())]).send().await.unwrap();
            assert_sso_headers(res.headers(), what);
            let body = body_json(res).await;
            assert_eq!(body["error"], json!(code), "{what}: {body}");
            let res = app.client.post(app.url("/auth/sso")).json(&json!({"jwt": token})).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
            assert_eq!(body_json(res).await["error"], json!(code), "{what}");
        }
        assert_nothing_written(&app, &before, "POSTed attacks").await;
    }

    async fn accepted_look_alikes_pass(mut app) {
        sso_ready(&mut app).await;
        let n = now();
        let ok = [
            ("typ JWT", r#"{"alg":"HS256","typ":"JWT"}"#.to_owned()),
            ("typ jwt (any case)", r#"{"alg":"HS256","typ":"jwt"}"#.to_owned()),
            ("typ application/JWT", r#"{"alg":"HS256","typ":"application/JWT"}"#.to_owned()),
            ("no typ", r#"{"alg":"HS256"}"#.to_owned()),
            ("kid is ignored for the shared secret", r#"{"alg":"HS256","kid":"whatever"}"#.to_owned()),
        ];
        for (i, (what, h)) in ok.iter().enumerate() {
            let p = json!({"email": "ok@example.com", "iat": n, "jti": format!("ok-{i}")}).to_string();
            let res = app.sso_callback(&forge(h, &p), None).await;
            assert_eq!(res.status(), StatusCode::FOUND, "{what}");
        }
        // Boundaries of the time rules (default max age 180 s, skew 30 s), with margin.
        for (i, iat) in [n + 20, n - 190].iter().enumerate() {
            let p = json!({"email": "ok@example.com", "iat": iat, "jti": format!("t-{i}")}).to_string();
            assert_eq!(app.sso_callback(&forge(HS256, &p), None).await.status(), StatusCode::FOUND, "iat {}", iat - n);
        }
        // A NUL inside an attribute is only data (attributes are stored as escaped JSON).
        let p = json!({"email": "ok@example.com", "iat": n, "jti": "nul-attr", "note": "a\u{0}b"}).to_string();
        let res = sso_json(&app, &forge(HS256, &p)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_json(res).await["user"]["login_attributes"], json!({"note": "a\u{0}b"}));
        // Fractional numeric dates are numbers.
        let p = json!({"email": "ok@example.com", "iat": n as f64 + 0.5, "jti": "frac"}).to_string();
        assert_eq!(app.sso_callback(&forge(HS256, &p), None).await.status(), StatusCode::FOUND);
    }

    async fn a_token_of_exactly_8_kib_passes_and_one_byte_more_does_not(mut app) {
        sso_ready(&mut app).await;
        let n = now();
        let build = |fill: usize, jti: &str| {
            let mut c = json!({"email": "edge@example.com", "iat": n, "jti": jti});
            for k in 0..5 {
                c[format!("f{k}")] = json!("y".repeat(1000));
            }
            c["g"] = json!("z".repeat(fill));
            forge(HS256, &c.to_string())
        };
        let fill = (0..1000).find(|f| build(*f, "edge-a").len() == 8192).expect("a fill that hits 8192");
        let exact = build(fill, "edge-a");
        let over = (fill..fill + 4).map(|f| build(f, "edge-b")).find(|t| t.len() > 8192).unwrap();
        assert_eq!(exact.len(), 8192);
        assert!(over.len() <= 8194);
        expect_refused(&app, &over, 401, "token_too_large", "just over 8 KiB").await;
        assert_eq!(app.sso_callback(&exact, None).await.status(), StatusCode::FOUND, "exactly 8 KiB");
    }

    async fn groups_of_another_type_count_as_missing_and_change_nothing(mut app) {
        sso_ready(&mut app).await;
        let eng = create_group(&app, "Engineering").await;
        let res = app.put_settings(json!({"jwt-group-sync": true, "jwt-group-mappings": {"eng": [eng]}})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let (_, u) = sso_login(&app, json!({"email": "g@example.com", "groups": ["eng"], "iat": now(), "jti": "g-0"})).await;
        let id = u["id"].as_i64().unwrap();
        assert_eq!(group_ids(&app, id).await, vec![1, eng]);
        for (i, groups) in [json!({"eng": true}), json!(7), json!(null), json!(true)].iter().enumerate() {
            let memberships = app.count("memberships").await;
            let (session, _) = sso_login(&app, json!({"email": "g@example.com", "groups": groups, "iat": now(), "jti": format!("g-{}", i + 1)})).await;
            assert_eq!(group_ids(&app, id).await, vec![1, eng], "groups {groups}");
            assert_eq!(app.count("memberships").await, memberships);
            let me = me(&app, &session).await;
            assert_eq!(me["login_attributes"], json!({}), "the groups claim is never an attribute");
        }
    }

    async fn algorithms_follow_jwt_algorithms_and_the_keys_configured(mut app) {
        sso_ready(&mut app).await;
        let res = app.put_setting("jwt-algorithms", json!(["HS256", "HS384", "RS256"])).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        // HS384 is allowed now and the shared secret is its key.
        let t = forge_with(r#"{"alg":"HS384"}"#, &claims("hs384"), SECRET.as_bytes(), Algorithm::HS384);
        assert_eq!(app.sso_callback(&t, None).await.status(), StatusCode::FOUND);
        // An HS384 header over an HS256 MAC is a bad signature, not a downgrade.
        let t = forge(r#"{"alg":"HS384"}"#, &claims("hs384-256"));
        expect_refused(&app, &t, 401, "bad_signature", "HS384 header, HS256 MAC").await;
        // RS256 is allowed but no public key exists: the HMAC secret is never used for it.
        let t = forge(r#"{"alg":"RS256"}"#, &claims("rs256"));
        expect_refused(&app, &t, 401, "alg_not_allowed", "RS256 without a public key").await;
        // Without HS256 in the list, HS256 tokens are refused.
        let res = app.put_setting("jwt-algorithms", json!(["HS384"])).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        expect_refused(&app, &sign(login_claims("t@example.com")), 401, "alg_not_allowed", "HS256 not listed").await;
    }

    async fn jku_and_x5u_are_never_fetched(mut app) {
        sso_ready(&mut app).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        for (i, key) in ["jku", "x5u"].iter().enumerate() {
            let h: Value = json!({"alg": "HS256", *key: format!("http://127.0.0.1:{port}/keys")});
            expect_refused(&app, &forge(&h.to_string(), &claims(&format!("fetch-{i}"))), 401, "header_not_allowed", key).await;
        }
        let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(accepted.is_err(), "the server connected to the URL in the header");
    }

    async fn oversized_query_strings_get_a_4xx_never_a_5xx(mut app) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        sso_ready(&mut app).await;
        let before = Counts::of(&app).await;
        for (len, expect) in [(60_000, "HTTP/1.1 401"), (1 << 20, "HTTP/1.1 4")] {
            let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
            let req = format!("GET /auth/sso?jwt={} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", "A".repeat(len), app.addr);
            let _ = s.write_all(req.as_bytes()).await;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            let head = String::from_utf8_lossy(&buf[..buf.len().min(2000)]).into_owned();
            assert!(head.starts_with(expect), "{len} bytes: {head}");
            if len == 60_000 {
                assert!(head.contains("token_too_large"), "{head}");
            }
        }
        assert_nothing_written(&app, &before, "oversized queries").await;
    }
}
