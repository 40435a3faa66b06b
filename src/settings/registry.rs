//! Every setting of SPEC §3, declared once: type, default, environment variable, whether it
//! is secret, and its validator. The API, the CLI, the environment overlay and the admin form
//! all read from this table, so adding a setting is one entry here.

use serde_json::Value;
use url::Url;

use crate::domain::group_mappings::GroupMappings;

/// The algorithms Latchkey can verify (SPEC §3 `jwt-algorithms`): the verifier's own list.
pub use crate::sso::verify::KNOWN_ALGORITHMS;
use crate::sso::verify::{MAX_CLOCK_SKEW_SECONDS, MAX_TOKEN_AGE_SECONDS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// An integer within bounds; `nullable` lets the setting be unset (no default value).
    Int {
        min: i64,
        max: i64,
    },
    /// A non-empty string of at most 1024 characters.
    Text,
    /// A secret string of at least 32 characters (the HS256 key).
    SharedSecret,
    /// An absolute http(s) URL.
    HttpUrl,
    /// An http(s) URL that must be https unless its host is a loopback address.
    JwksUrl,
    Algorithms,
    PemList,
    OriginList,
    GroupMappings,
    SameSite,
}

#[derive(Debug)]
pub struct Def {
    pub key: &'static str,
    pub kind: Kind,
    /// The default as JSON text (`null` when there is none).
    pub default: &'static str,
    pub secret: bool,
    pub description: &'static str,
}

macro_rules! settings {
    ($( $key:literal : $kind:expr, default $default:literal, $(secret $secret:literal,)? $desc:literal; )*) => {
        pub static SETTINGS: &[Def] = &[
            $( Def { key: $key, kind: $kind, default: $default, secret: settings!(@secret $($secret)?), description: $desc }, )*
        ];
    };
    (@secret) => { false };
    (@secret $s:literal) => { $s };
}

settings! {
    "site-url": Kind::HttpUrl, default "null",
        "Public base URL of this server, used for absolute redirects, the cookie's Secure flag and redirect checks.";
    "jwt-enabled": Kind::Bool, default "false",
        "Turns JWT single sign-on on. It works only when the configuration is complete.";
    "jwt-identity-provider-uri": Kind::HttpUrl, default "null",
        "Where /auth/sso sends people to sign in.";
    "jwt-shared-secret": Kind::SharedSecret, default "null", secret true,
        "HS256 signing key shared with the identity provider (its UTF-8 bytes are the key). At least 32 characters.";
    "jwt-attribute-email": Kind::Text, default "\"email\"",
        "Claim holding the email address (required in every token).";
    "jwt-attribute-firstname": Kind::Text, default "\"first_name\"",
        "Claim holding the first name.";
    "jwt-attribute-lastname": Kind::Text, default "\"last_name\"",
        "Claim holding the last name.";
    "jwt-attribute-groups": Kind::Text, default "\"groups\"",
        "Claim holding the group names.";
    "jwt-group-sync": Kind::Bool, default "false",
        "Synchronise group memberships at every SSO login.";
    "jwt-group-mappings": Kind::GroupMappings, default "{}",
        "JWT group name to Latchkey group ids, e.g. {\"eng\":[3]}.";
    "jwt-user-provisioning-enabled": Kind::Bool, default "true",
        "Create unknown users on their first SSO login.";
    "enable-password-login": Kind::Bool, default "true",
        "Allow email and password login. Takes effect only while JWT SSO is enabled and configured.";
    "jwt-algorithms": Kind::Algorithms, default "[\"HS256\"]",
        "Allowed signing algorithms.";
    "jwt-public-keys": Kind::PemList, default "[]",
        "PEM public keys (RSA, EC P-256/P-384, Ed25519) for the RS*, PS*, ES256/ES384 and EdDSA algorithms; each key verifies only its own family.";
    "jwt-jwks-uri": Kind::JwksUrl, default "null",
        "JWKS endpoint (https, or http on loopback only); keys chosen by kid, cached per Cache-Control (60 s to 24 h).";
    "jwt-issuer": Kind::Text, default "null",
        "When set, the token's iss claim must equal it.";
    "jwt-audience": Kind::Text, default "null",
        "When set, the token's aud claim must contain it.";
    "jwt-max-age-seconds": Kind::Int { min: 1, max: MAX_TOKEN_AGE_SECONDS }, default "180",
        "A token is accepted at most this many seconds after its iat.";
    "jwt-clock-skew-seconds": Kind::Int { min: 0, max: MAX_CLOCK_SKEW_SECONDS }, default "30",
        "Leeway in seconds for exp, nbf and a future iat.";
    "jwt-logout-redirect-uri": Kind::HttpUrl, default "null",
        "Where /auth/logout sends SSO users afterwards (identity provider logout).";
    "session-max-age-minutes": Kind::Int { min: 1, max: 5_256_000 }, default "20160",
        "Absolute session lifetime in minutes.";
    "session-idle-timeout-minutes": Kind::Int { min: 1, max: 5_256_000 }, default "null",
        "Optional inactivity timeout in minutes.";
    "session-cookie-samesite": Kind::SameSite, default "\"Lax\"",
        "SameSite attribute of the session cookie: Lax, Strict or None (None forces Secure).";
    "redirect-allowed-origins": Kind::OriginList, default "[]",
        "Extra origins that return_to may point to (apps behind forward-auth).";
    "forwarded-for-trusted-hops": Kind::Int { min: 0, max: 10 }, default "0",
        "How many reverse proxies' X-Forwarded-For entries to trust when finding the client IP.";
}

pub fn def(key: &str) -> Option<&'static Def> {
    SETTINGS.iter().find(|d| d.key == key)
}

impl Def {
    /// `LATCHKEY_` + the key upper-snake-cased.
    pub fn env_var(&self) -> String {
        format!(
            "LATCHKEY_{}",
            self.key.replace('-', "_").to_ascii_uppercase()
        )
    }

    pub fn default_value(&self) -> Value {
        serde_json::from_str(self.default).unwrap_or(Value::Null)
    }

    /// [`Def::validate`], plus the rules a value must meet to be written now (the API, the
    /// CLI, the environment), which a value stored by an earlier version may not: a text that
    /// is only blanks (no claim name, issuer or audience is) is refused. Loading keeps such a
    /// stored value rather than falling back to the default, which for `jwt-issuer` and
    /// `jwt-audience` would stop checking the claim.
    pub fn validate_new(&self, value: Value) -> Result<Value, String> {
        let normal = self.validate(value)?;
        if matches!(self.kind, Kind::Text) && normal.as_str().is_some_and(|s| s.trim().is_empty()) {
            return Err("must not be blank".into());
        }
        Ok(normal)
    }

    /// Validates a value and returns its normal form. `Null` means "unset" and is always
    /// accepted: the setting falls back to its default.
    pub fn validate(&self, value: Value) -> Result<Value, String> {
        if value.is_null() {
            return Ok(Value::Null);
        }
        match self.kind {
            Kind::Bool => match value {
                Value::Bool(_) => Ok(value),
                Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
                Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
                _ => Err("must be true or false".into()),
            },
            Kind::Int { min, max } => {
                let n = match &value {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s.trim().parse::<i64>().ok(),
                    _ => None,
                };
                match n {
                    Some(n) if (min..=max).contains(&n) => Ok(Value::from(n)),
                    _ => Err(format!("must be a whole number from {min} to {max}")),
                }
            }
            Kind::Text => {
                let s = as_str(&value)?;
                if s.is_empty() || s.chars().count() > 1024 || s.chars().any(char::is_control) {
                    return Err("must be a non-empty text of at most 1024 characters".into());
                }
                Ok(value)
            }
            Kind::SharedSecret => {
                let s = as_str(&value)?;
                if s.chars().count() < 32 {
                    return Err("must be at least 32 characters long (use Generate key)".into());
                }
                // Blanks, visible or not, and control characters are no key. Checked at load
                // too, so that such a value stored by an earlier version leaves HS256 off
                // instead of verifying tokens with it.
                if s.chars().all(|c| {
                    c.is_whitespace()
                        || c.is_control()
                        || crate::domain::email::is_invisible_format(c)
                }) {
                    return Err("must not be only blanks (use Generate key)".into());
                }
                if s.len() > 4096 {
                    return Err("must be at most 4096 bytes".into());
                }
                Ok(value)
            }
            Kind::HttpUrl => {
                let url = parse_http_url(as_str(&value)?)?;
                Ok(Value::String(url))
            }
            Kind::JwksUrl => {
                let text = parse_http_url(as_str(&value)?)?;
                let url = Url::parse(&text).map_err(|_| "must be an absolute URL".to_string())?;
                if url.scheme() != "https" && !is_loopback(&url) {
                    return Err("must use https (plain http is allowed only on loopback)".into());
                }
                Ok(Value::String(text))
            }
            Kind::Algorithms => {
                let list = string_list(&value)?;
                if list.is_empty() {
                    return Err("must list at least one algorithm".into());
                }
                let mut out: Vec<String> = Vec::new();
                for a in list {
                    if !KNOWN_ALGORITHMS.contains(&a.as_str()) {
                        return Err(format!(
                            "{a} is not a supported algorithm (supported: {})",
                            KNOWN_ALGORITHMS.join(", ")
                        ));
                    }
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
                Ok(Value::from(out))
            }
            Kind::PemList => {
                // Each entry is parsed exactly as the verifier will use it: one PEM public
                // key (RSA 2048–8192 bits, EC P-256/P-384, Ed25519); private keys,
                // certificates and other curves are refused with the reason.
                let list = string_list(&value)?;
                crate::sso::keys::parse_pem_list(&list)?;
                Ok(Value::from(list))
            }
            Kind::OriginList => {
                let mut out = Vec::new();
                for s in string_list(&value)? {
                    let url = Url::parse(&s).map_err(|_| format!("{s} is not an origin"))?;
                    let plain_origin = matches!(url.scheme(), "http" | "https")
                        && url.host().is_some()
                        && url.username().is_empty()
                        && url.password().is_none()
                        && url.path() == "/"
                        && url.query().is_none()
                        && url.fragment().is_none();
                    if !plain_origin {
                        return Err(format!(
                            "{s} is not an origin like https://app.example.com (no path)"
                        ));
                    }
                    out.push(url.origin().ascii_serialization());
                }
                Ok(Value::from(out))
            }
            Kind::GroupMappings => {
                let mappings = GroupMappings::parse(&value)?;
                serde_json::to_value(mappings.0).map_err(|e| e.to_string())
            }
            Kind::SameSite => {
                let s = as_str(&value)?;
                for v in ["Lax", "Strict", "None"] {
                    if s.eq_ignore_ascii_case(v) {
                        return Ok(Value::String(v.into()));
                    }
                }
                Err("must be Lax, Strict or None".into())
            }
        }
    }
}

/// Masks a secret for output: the last four characters only (SPEC §6).
pub fn mask_secret(value: &Value) -> Value {
    match value {
        Value::String(s) => {
            let tail: String = s
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Value::String(format!("**********{tail}"))
        }
        _ => Value::Null,
    }
}

/// Whether a value sent back by a client is the masked form we handed out (so unchanged):
/// ten asterisks and at most four more characters. The only secret setting needs at least 32
/// characters, so a real secret that begins with ten asterisks is never taken for it.
pub fn is_masked(value: &Value) -> bool {
    matches!(value, Value::String(s) if s.starts_with("**********") && s.chars().count() <= 14)
}

fn as_str(value: &Value) -> Result<&str, String> {
    value.as_str().ok_or_else(|| "must be a string".to_string())
}

fn string_list(value: &Value) -> Result<Vec<String>, String> {
    let items = value
        .as_array()
        .ok_or_else(|| "must be a list".to_string())?;
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| "must be a list of strings".to_string())
        })
        .collect()
}

fn parse_http_url(s: &str) -> Result<String, String> {
    let url = Url::parse(s.trim()).map_err(|_| "must be an absolute http(s) URL".to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an absolute http(s) URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password".into());
    }
    let mut text = url.to_string();
    // "https://host/" and "https://host" are the same site; keep the short form.
    if url.path() == "/" && url.query().is_none() && url.fragment().is_none() {
        text.pop();
    }
    Ok(text)
}

pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn every_key_has_an_env_var_and_a_valid_default() {
        for d in SETTINGS {
            assert!(d.env_var().starts_with("LATCHKEY_"));
            let default = d.default_value();
            assert_eq!(d.validate(default.clone()), Ok(default), "{}", d.key);
        }
        assert_eq!(
            def("jwt-shared-secret").unwrap().env_var(),
            "LATCHKEY_JWT_SHARED_SECRET"
        );
    }

    #[test]
    fn validators_normalise_or_refuse() {
        let d = |k| def(k).unwrap();
        assert_eq!(
            d("site-url").validate(json!("https://a.example/")),
            Ok(json!("https://a.example"))
        );
        assert!(d("site-url").validate(json!("ftp://a.example")).is_err());
        assert!(
            d("site-url")
                .validate(json!("https://u:p@a.example"))
                .is_err()
        );
        assert!(d("jwt-shared-secret").validate(json!("short")).is_err());
        assert!(
            d("jwt-shared-secret")
                .validate(json!(" \t\u{3000}".repeat(11)))
                .is_err()
        );
        for blank in ["\u{3164}", "\u{2800}", "\u{200B}", "\u{0}", "\u{85}"] {
            assert!(
                d("jwt-shared-secret")
                    .validate(json!(blank.repeat(40)))
                    .is_err(),
                "{blank:?}"
            );
        }
        assert!(
            d("jwt-shared-secret")
                .validate(json!("x".repeat(32)))
                .is_ok()
        );
        assert_eq!(
            d("jwt-clock-skew-seconds").validate(json!("12")),
            Ok(json!(12))
        );
        assert!(d("jwt-clock-skew-seconds").validate(json!(301)).is_err());
        assert!(d("jwt-algorithms").validate(json!(["none"])).is_err());
        assert!(d("jwt-algorithms").validate(json!([])).is_err());
        assert_eq!(
            d("session-cookie-samesite").validate(json!("strict")),
            Ok(json!("Strict"))
        );
        assert!(
            d("jwt-jwks-uri")
                .validate(json!("http://idp.example/jwks"))
                .is_err()
        );
        assert!(
            d("jwt-jwks-uri")
                .validate(json!("http://127.0.0.1:9/jwks"))
                .is_ok()
        );
        assert_eq!(
            d("redirect-allowed-origins").validate(json!(["https://App.example:443"])),
            Ok(json!(["https://app.example"]))
        );
        assert!(
            d("redirect-allowed-origins")
                .validate(json!(["https://app.example/x"]))
                .is_err()
        );
        assert!(
            d("jwt-group-mappings")
                .validate(json!({"eng": [3]}))
                .is_ok()
        );
        assert!(
            d("jwt-group-mappings")
                .validate(json!({"eng": "3"}))
                .is_err()
        );
        assert_eq!(d("jwt-enabled").validate(json!("true")), Ok(json!(true)));
        assert!(d("jwt-enabled").validate(json!("yes")).is_err());
        assert!(d("jwt-enabled").validate(json!(1)).is_err());
        // Blanks are refused on write, and kept when stored by an earlier version.
        for blank in [" ", "\u{3000}"] {
            for key in ["jwt-attribute-email", "jwt-audience"] {
                assert_eq!(
                    d(key).validate_new(json!(blank)),
                    Err("must not be blank".into()),
                    "{key} {blank:?}"
                );
                assert_eq!(d(key).validate(json!(blank)), Ok(json!(blank)));
            }
        }
        assert!(d("jwt-audience").validate_new(json!("")).is_err());
        assert_eq!(
            d("jwt-attribute-email").validate_new(json!("mail")),
            Ok(json!("mail"))
        );
        assert_eq!(
            d("jwt-enabled").validate_new(json!("FALSE")),
            Ok(json!(false))
        );
    }

    #[test]
    fn public_keys_must_parse_as_public_keys() {
        macro_rules! fixture {
            ($name:literal) => {
                include_str!(concat!("../../tests/fixtures/keys/", $name))
            };
        }
        let d = def("jwt-public-keys").unwrap();
        let good = [
            fixture!("rsa-a.pub.pem"),
            fixture!("rsa-a.rsapub.pem"),
            fixture!("ec-p256-a.pub.pem"),
            fixture!("ec-p384.pub.pem"),
            fixture!("ed25519.pub.pem"),
        ];
        assert_eq!(d.validate(json!(good)), Ok(json!(good)));
        assert_eq!(d.validate(json!([])), Ok(json!([])));
        for (bad, why) in [
            (fixture!("rsa-a.key.pem"), "private key"),
            (fixture!("ec-p256-a.key.pem"), "private key"),
            (fixture!("ed25519.key.pem"), "private key"),
            (fixture!("ec-p256-a.cert.pem"), "certificate"),
            (fixture!("rsa-1024.pub.pem"), "2048"),
            (fixture!("ec-p521.pub.pem"), "curve"),
            (fixture!("ec-secp256k1.pub.pem"), "curve"),
            (fixture!("ed448.pub.pem"), "not a supported"),
            (
                "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----",
                "PEM",
            ),
            ("ssh-rsa AAAAB3NzaC1yc2E", "PEM"),
        ] {
            let err = d.validate(json!([good[0], bad])).unwrap_err();
            assert!(err.starts_with("key 2 "), "{err}");
            assert!(err.contains(why), "{why}: {err}");
        }
        assert!(d.validate(json!(good[0])).is_err(), "a list is required");
        assert!(d.validate(json!([1])).is_err());
    }

    #[test]
    fn secrets_are_masked_to_their_last_four_characters() {
        assert_eq!(mask_secret(&json!("abcdefgh1234")), json!("**********1234"));
        assert!(is_masked(&json!("**********1234")));
        assert!(is_masked(&json!("**********")));
        assert!(!is_masked(&json!("abc")));
        // A real secret may begin with asterisks; it is longer than any masked form.
        let real = format!("**********{}", "k".repeat(30));
        assert!(!is_masked(&json!(real)));
        assert!(
            def("jwt-shared-secret")
                .unwrap()
                .validate(json!(real))
                .is_ok()
        );
    }

    // --- properties -----------------------------------------------------------------------

    /// Any JSON value, small.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Strings near what the validators look for: URLs, numbers, booleans, algorithm and
    /// SameSite names, PEM-ish text, in odd cases and with odd padding.
    fn settingish_string() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "https://",
            "http://",
            "HTTPS://",
            "ftp://",
            "javascript:",
            "//",
            "/",
            "\\",
            "@",
            "u:p@",
            "a.example",
            "App.Example",
            "127.0.0.1",
            "[::1]",
            "localhost",
            "xn--",
            "ünicode.example",
            ":443",
            ":80",
            ":8080",
            ":0",
            ":99999",
            "?",
            "#",
            "%2F",
            ".",
            "..",
            " ",
            "\t",
            "\n",
            "\u{3000}",
            "\u{0}",
            "true",
            "FALSE",
            "Lax",
            "strict",
            "none",
            "HS256",
            "rs256",
            "EdDSA",
            "-----BEGIN PUBLIC KEY-----",
            "PRIVATE KEY",
            "0",
            "-1",
            "30",
            "300",
            "301",
            "86400",
            "9223372036854775807",
            "1e3",
            "12.5",
            "x",
            "0123456789abcdef0123456789abcdef",
        ]);
        prop::collection::vec(pieces, 0..6).prop_map(|v| v.concat())
    }

    fn settingish_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            3 => any_json(),
            3 => settingish_string().prop_map(Value::String),
            2 => prop::collection::vec(settingish_string().prop_map(Value::String), 0..4)
                .prop_map(Value::Array),
            2 => prop::collection::btree_map(
                    settingish_string(),
                    prop::collection::vec(
                        prop_oneof![
                            (-3i64..12).prop_map(Value::from),
                            Just(json!(3.0)),
                            Just(json!("3")),
                            Just(json!(u64::MAX)),
                        ],
                        0..4,
                    )
                    .prop_map(Value::Array),
                    0..4,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => (-10i64..400_000).prop_map(Value::from),
        ]
    }

    /// The JSON shape a validated value of each kind must have.
    fn has_kind_shape(kind: Kind, v: &Value) -> bool {
        match kind {
            Kind::Bool => v.is_boolean(),
            Kind::Int { min, max } => v.as_i64().is_some_and(|n| (min..=max).contains(&n)),
            Kind::Text | Kind::SharedSecret | Kind::HttpUrl | Kind::JwksUrl => v.is_string(),
            Kind::SameSite => matches!(v.as_str(), Some("Lax" | "Strict" | "None")),
            Kind::Algorithms | Kind::PemList | Kind::OriginList => {
                v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
            }
            Kind::GroupMappings => v.as_object().is_some_and(|o| {
                o.values().all(|ids| {
                    ids.as_array().is_some_and(|ids| {
                        ids.iter().all(|id| id.as_i64().is_some_and(|n| n > 0))
                            && ids.windows(2).all(|w| w[0].as_i64() < w[1].as_i64())
                    })
                })
            }),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        /// Every validator, on any value: no panic; an accepted value comes back in a
        /// normal form of the setting's type that validates to itself (saving what the
        /// API or CLI returned never changes it again).
        #[test]
        fn validators_never_panic_and_their_output_is_a_fixed_point(
            index in 0..SETTINGS.len(),
            value in settingish_value(),
        ) {
            let def = &SETTINGS[index];
            if let Ok(normal) = def.validate(value.clone()) {
                prop_assert!(
                    normal.is_null() || has_kind_shape(def.kind, &normal),
                    "{}: {} -> {}", def.key, value, normal
                );
                prop_assert_eq!(
                    def.validate(normal.clone()),
                    Ok(normal.clone()),
                    "{}: {} -> {} is not a fixed point", def.key, value, normal
                );
            }
        }

        #[test]
        fn url_settings_accept_only_http_urls_without_userinfo(raw in settingish_string()) {
            for key in ["site-url", "jwt-identity-provider-uri", "jwt-logout-redirect-uri", "jwt-jwks-uri"] {
                if let Ok(Value::String(s)) = def(key).unwrap().validate(Value::String(raw.clone())) {
                    let url = Url::parse(&s).unwrap();
                    prop_assert!(matches!(url.scheme(), "http" | "https"), "{key}: {raw:?} -> {s}");
                    prop_assert!(url.host().is_some());
                    prop_assert!(url.username().is_empty() && url.password().is_none());
                    if key == "jwt-jwks-uri" {
                        prop_assert!(url.scheme() == "https" || is_loopback(&url), "{raw:?} -> {s}");
                    }
                }
            }
        }

        #[test]
        fn allowed_origins_are_bare_origins(list in prop::collection::vec(settingish_string(), 0..4)) {
            let value = Value::from(list.clone());
            if let Ok(Value::Array(out)) = def("redirect-allowed-origins").unwrap().validate(value) {
                prop_assert_eq!(out.len(), list.len());
                for o in out {
                    let s = o.as_str().unwrap();
                    let url = Url::parse(s).unwrap();
                    prop_assert_eq!(url.origin().ascii_serialization(), s);
                }
            }
        }
    }
}
