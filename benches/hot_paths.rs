//! Microbenchmarks of the SSO hot paths: token verification, redirect validation and the
//! group-sync diff. `cargo bench` runs them (divan); figures are per call.

use std::collections::BTreeSet;

use divan::{Bencher, black_box};
use latchkey::domain::group_mappings::GroupMappings;
use latchkey::domain::return_to::{location, parse_return_to};
use latchkey::sso::claims::{AttributeNames, group_diff, user_fields};
use latchkey::sso::keys::{KeySet, SharedSecret};
use latchkey::sso::verify::{TokenPurpose, VerifyPolicy, sign_hmac, verify};
use serde_json::{Map, Value, json};

fn main() {
    divan::main();
}

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const NOW: i64 = 1_795_680_000;

fn claims() -> Map<String, Value> {
    json!({"email": "Ada.Lovelace@Example.com", "first_name": "Ada", "last_name": "Lovelace",
           "groups": ["engineering", "ops"], "department": "research", "iat": NOW,
           "jti": "3f1b5c8e-9d2a-4c61-8f7e-0a1b2c3d4e5f"})
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// Times `verify` on one token with the production policy (HS256, 180 s, 30 s skew).
fn bench_verify(bencher: Bencher, token: String) {
    let algorithms = vec!["HS256".to_owned()];
    let keys = KeySet::default();
    let secret = SharedSecret::new(SECRET);
    let policy = VerifyPolicy {
        algorithms: &algorithms,
        shared_secret: Some(&secret),
        keys: &keys,
        issuer: None,
        audience: None,
        max_age_seconds: 180,
        clock_skew_seconds: 30,
        purpose: TokenPurpose::Login,
    };
    bencher.bench(|| verify(black_box(&token), &policy, NOW).is_ok());
}

#[divan::bench]
fn verify_hs256_token(bencher: Bencher) {
    bench_verify(
        bencher,
        sign_hmac("HS256", &claims(), SECRET).expect("sign"),
    );
}

#[divan::bench]
fn reject_bad_signature(bencher: Bencher) {
    let other = b"another secret of at least thirty-two bytes";
    bench_verify(bencher, sign_hmac("HS256", &claims(), other).expect("sign"));
}

#[divan::bench]
fn extract_user_fields(bencher: Bencher) {
    let c = claims();
    let names = AttributeNames {
        email: "email",
        first_name: "first_name",
        last_name: "last_name",
        groups: "groups",
    };
    bencher.bench(|| user_fields(black_box(&c), &names).is_ok());
}

#[divan::bench(args = ["/", "/dashboard/1?tab=overview#chart", "https://app.example.com/x", "//evil.example/"])]
fn validate_redirect(bencher: Bencher, raw: &str) {
    let base = url::Url::parse("https://sso.example.com").expect("base");
    let allowed = vec!["https://app.example.com".to_owned()];
    bencher.bench(|| {
        parse_return_to(Some(black_box(raw)), &base, &allowed)
            .map(|u| location(Some(raw), &u))
            .ok()
    });
}

#[divan::bench(args = [2, 20, 200])]
fn group_sync_diff(bencher: Bencher, mapped: i64) {
    let mut map = serde_json::Map::new();
    for i in 0..mapped {
        map.insert(format!("group-{i}"), json!([i + 3]));
    }
    let mappings = GroupMappings::parse(&Value::Object(map)).expect("mappings");
    let claim: Vec<String> = (0..mapped)
        .step_by(2)
        .map(|i| format!("group-{i}"))
        .collect();
    let current: BTreeSet<i64> = [1]
        .into_iter()
        .chain((0..mapped).step_by(3).map(|i| i + 3))
        .collect();
    bencher.bench(|| {
        let wanted = mappings.wanted(black_box(&claim));
        group_diff(&current, &wanted, &mappings.managed())
    });
}
