//! `latchkey doctor`: checks a deployment and says, for each finding, what to do about it.
//! One line per check: `ok|warning|error  <check>: <finding>. Fix: <what to do>.` The
//! command exits non-zero when any finding is an error.

use std::fmt;
use std::time::Duration;

use url::{Host, Url};

use crate::settings::encryption::{self, EncryptionKey, KEY_ENV, NEW_KEY_ENV};
use crate::settings::{Effective, Settings, registry, secrets_at_rest};
use crate::store::Store;

/// How long the JWKS check waits for the endpoint (the verifier's own limit).
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// A clock difference up to this many seconds is fine.
pub const CLOCK_OK_SECONDS: f64 = 2.0;
/// HS256 wants a key of at least 256 bits (RFC 7518 §3.2): 64 random hex characters.
const SECRET_BITS_WANTED: f64 = 256.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub check: &'static str,
    /// What was found, without the final full stop.
    pub finding: String,
    /// What to do, without the final full stop (none for `ok`).
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, finding: impl Into<String>) -> Finding {
        Finding {
            level: Level::Ok,
            check,
            finding: finding.into(),
            fix: None,
        }
    }

    fn warning(check: &'static str, finding: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Warning,
            check,
            finding: finding.into(),
            fix: Some(fix.into()),
        }
    }

    fn error(check: &'static str, finding: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Error,
            check,
            finding: finding.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}  {}: {}.", self.level, self.check, self.finding)?;
        if let Some(fix) = &self.fix {
            write!(f, " Fix: {fix}.")?;
        }
        Ok(())
    }
}

/// Runs every check against the deployment at `database_url`, with the environment read
/// through `env` (the `LATCHKEY_*` variables the server would see).
pub async fn run(database_url: &str, env: impl Fn(&str) -> Option<String>) -> Vec<Finding> {
    let mut out = Vec::new();
    let store = match open(database_url).await {
        Ok(store) => store,
        Err(e) => {
            out.push(Finding::error(
                "database",
                format!("cannot open the database: {e:#}"),
                "check --database-url (or LATCHKEY_DATABASE_URL) and that the database server is running",
            ));
            return out;
        }
    };
    out.push(Finding::ok(
        "database",
        format!(
            "{} database reachable, migrations applied",
            store.backend_name()
        ),
    ));

    let key = EncryptionKey::from_lookup(KEY_ENV, &env);
    let encryption_failed = match &key {
        Err(e) => {
            out.push(Finding::error(
                "encryption",
                e.to_string(),
                format!("set {KEY_ENV} to the key the secrets were encrypted with, or remove it"),
            ));
            true
        }
        Ok(key) => {
            let f = check_encryption(&store, key.as_ref()).await;
            let failed = f.level == Level::Error;
            out.push(f);
            failed
        }
    };

    let settings = match Settings::load_with_env(store.clone(), &env).await {
        Ok(s) => s,
        Err(e) => {
            if !encryption_failed {
                out.push(Finding::error(
                    "settings",
                    format!("the settings do not load, so the server would not start: {e:#}"),
                    "correct the environment variable or stored value named above",
                ));
            }
            store.close().await;
            return out;
        }
    };
    let eff = settings.current();
    out.push(check_site_url(&eff));
    out.push(check_jwt(&eff));
    out.push(check_shared_secret(&eff));
    out.push(check_password_login(&store, &eff).await);
    out.push(check_group_mappings(&store, &eff).await);
    out.push(check_addresses(&store).await);
    out.push(check_clock(&store, &eff).await);
    out.push(check_jwks(&eff).await);
    store.close().await;
    out
}

async fn open(database_url: &str) -> anyhow::Result<Store> {
    let store = Store::connect_existing(database_url).await?;
    store.migrate().await?;
    store.ping().await?;
    Ok(store)
}

async fn check_encryption(store: &Store, key: Option<&EncryptionKey>) -> Finding {
    const CHECK: &str = "encryption";
    let rows = match store.load_settings().await {
        Ok(rows) => rows,
        Err(e) => {
            return Finding::error(
                CHECK,
                format!("cannot read the settings: {e}"),
                "check the database",
            );
        }
    };
    let is_secret = |k: &str| registry::def(k).is_some_and(|d| d.secret);
    if let Err(e) = encryption::open_stored(rows, is_secret, key, None) {
        return Finding::error(CHECK, e.problem(), e.fix());
    }
    let at_rest = match secrets_at_rest(store).await {
        Ok(list) => list,
        Err(e) => {
            return Finding::error(
                CHECK,
                format!("cannot read the settings: {e}"),
                "check the database",
            );
        }
    };
    let plain: Vec<&str> = at_rest
        .iter()
        .filter(|(_, sealed)| !sealed)
        .map(|(k, _)| *k)
        .collect();
    let key_note = key
        .map(|k| format!("{KEY_ENV} is set (key id {})", k.id()))
        .unwrap_or_else(|| format!("{KEY_ENV} is not set"));
    if at_rest.is_empty() {
        return Finding::ok(
            CHECK,
            format!("no secret setting is stored in the database; {key_note}"),
        );
    }
    if plain.is_empty() {
        return Finding::ok(
            CHECK,
            format!("secret settings are stored encrypted; {key_note}"),
        );
    }
    let names = plain.join(", ");
    match key {
        Some(_) => Finding::warning(
            CHECK,
            format!("{names} stored in plain text although {key_note}"),
            format!(
                "encrypt it with the same key: {NEW_KEY_ENV}=\"${KEY_ENV}\" latchkey settings rotate-encryption-key"
            ),
        ),
        None => Finding::warning(
            CHECK,
            format!(
                "{names} stored in plain text: whoever reads the database (a backup, a copied file) can sign in as anyone"
            ),
            format!(
                "make a key (openssl rand -hex 32), run {NEW_KEY_ENV}=<key> latchkey settings rotate-encryption-key, \
                 then start every instance with {KEY_ENV}=<key>"
            ),
        ),
    }
}

fn is_local(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn check_site_url(eff: &Effective) -> Finding {
    const CHECK: &str = "site-url";
    let fix_set =
        "latchkey settings set site-url https://sso.example.com (the public URL people use)";
    match &eff.site_url {
        None => Finding::error(
            CHECK,
            "not set: redirects and the CSRF check fall back to the request's Host header, and \
             the session cookie is Secure only for requests that arrive over https",
            fix_set,
        ),
        Some(u) if u.scheme() == "https" => Finding::ok(CHECK, format!("{u}")),
        Some(u) if is_local(u) => Finding::warning(
            CHECK,
            format!(
                "{u} is plain http on this machine: fine for a trial, but session cookies are not Secure"
            ),
            "use an https URL for a real deployment",
        ),
        Some(u) => Finding::error(
            CHECK,
            format!("{u} is plain http: session cookies and tokens cross the network unencrypted"),
            "serve Latchkey over https (a TLS-terminating proxy is fine) and set site-url to the https URL",
        ),
    }
}

fn check_jwt(eff: &Effective) -> Finding {
    const CHECK: &str = "jwt-sso";
    if !eff.bool("jwt-enabled") {
        return Finding::ok(CHECK, "JWT SSO is off");
    }
    if eff.jwt_configured() {
        let idp = eff.str("jwt-identity-provider-uri").unwrap_or_default();
        return Finding::ok(
            CHECK,
            format!("enabled and configured (identity provider {idp})"),
        );
    }
    let mut missing = Vec::new();
    if eff.str("jwt-identity-provider-uri").is_none() {
        missing.push("jwt-identity-provider-uri");
    }
    if !eff.jwt_has_key() {
        missing.push("a key (jwt-shared-secret, jwt-public-keys or jwt-jwks-uri)");
    } else if !eff.jwt_key_usable() {
        missing.push(
            "a key for an algorithm jwt-algorithms allows (the shared secret for HS*, a public key of the algorithm's family or a JWKS URI for the others)",
        );
    }
    Finding::error(
        CHECK,
        format!(
            "jwt-enabled is on but {} is missing, so /auth/sso answers sso_not_configured",
            missing.join(" and ")
        ),
        "set the missing settings (latchkey settings set KEY VALUE), or turn jwt-enabled off",
    )
}

/// The entropy of a secret estimated from its characters: `(alphabet bound in bits,
/// Shannon entropy per character of the string itself)`. The first assumes every character
/// was drawn at random from the classes present (hex counts as 16 symbols); the second
/// catches repetition that the first cannot see.
pub fn secret_entropy(secret: &str) -> (f64, f64) {
    let chars: Vec<char> = secret.chars().collect();
    if chars.is_empty() {
        return (0.0, 0.0);
    }
    let lower = chars.iter().any(char::is_ascii_lowercase);
    let upper = chars.iter().any(char::is_ascii_uppercase);
    let hex_only = chars.iter().all(char::is_ascii_hexdigit) && !(lower && upper);
    let alphabet = if hex_only {
        if chars.iter().all(char::is_ascii_digit) {
            10.0
        } else {
            16.0
        }
    } else {
        let mut n = 0.0;
        if lower {
            n += 26.0;
        }
        if upper {
            n += 26.0;
        }
        if chars.iter().any(char::is_ascii_digit) {
            n += 10.0;
        }
        if chars.iter().any(|c| !c.is_ascii_alphanumeric()) {
            n += 33.0;
        }
        n
    };
    let bound = chars.len() as f64 * f64::log2(alphabet);
    let mut counts = std::collections::HashMap::new();
    for c in &chars {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let total = chars.len() as f64;
    let shannon = counts
        .values()
        .map(|&n| {
            let p = n as f64 / total;
            -p * p.log2()
        })
        .sum::<f64>();
    (bound, shannon)
}

fn check_shared_secret(eff: &Effective) -> Finding {
    const CHECK: &str = "jwt-shared-secret";
    let fix = "make a new one with 32 random bytes (`openssl rand -hex 32`, or Generate key in the admin UI), \
               set it with latchkey settings set jwt-shared-secret … and give the identity provider the same value";
    let Some(secret) = eff.str("jwt-shared-secret") else {
        return Finding::ok(
            CHECK,
            "not set (tokens signed with an HS algorithm are refused)",
        );
    };
    let len = secret.chars().count();
    if len < crate::sso::verify::MIN_SECRET_BYTES {
        return Finding::error(
            CHECK,
            format!(
                "{len} characters; at least {} are required",
                crate::sso::verify::MIN_SECRET_BYTES
            ),
            fix,
        );
    }
    let (bound, per_char) = secret_entropy(secret);
    if per_char < 3.0 {
        return Finding::warning(
            CHECK,
            format!(
                "{len} characters, but only {} distinct: it does not look random",
                secret
                    .chars()
                    .collect::<std::collections::HashSet<_>>()
                    .len()
            ),
            fix,
        );
    }
    if bound < SECRET_BITS_WANTED - 0.5 {
        return Finding::warning(
            CHECK,
            format!(
                "{len} characters hold at most about {bound:.0} bits; HS256 wants a 256-bit key (RFC 7518 §3.2), \
                 e.g. 64 random hex characters"
            ),
            fix,
        );
    }
    Finding::ok(
        CHECK,
        format!("{len} characters, up to about {bound:.0} bits"),
    )
}

async fn check_password_login(store: &Store, eff: &Effective) -> Finding {
    const CHECK: &str = "password-login";
    let counts = async {
        Ok::<_, crate::error::Error>((store.admin_exists().await?, store.count_sso_admins().await?))
    };
    let (any_admin, sso_admins) = match counts.await {
        Ok(c) => c,
        Err(e) => {
            return Finding::error(
                CHECK,
                format!("cannot count administrators: {e}"),
                "check the database",
            );
        }
    };
    let break_glass = "latchkey settings set enable-password-login true (on the server)";
    if !eff.jwt_configured() {
        if !any_admin {
            return Finding::warning(
                CHECK,
                "no active administrator exists yet",
                "open the setup URL the server prints, or run latchkey admin create --email … --password-stdin",
            );
        }
        return Finding::ok(
            CHECK,
            "password login is the only way to sign in (JWT SSO is not configured)",
        );
    }
    let password_on = eff.password_login_enabled();
    match (password_on, sso_admins) {
        (false, 0) => Finding::error(
            CHECK,
            "password login is off and no active administrator has signed in through SSO: \
             nobody can administer Latchkey",
            if eff.is_env_fixed("enable-password-login") {
                "remove LATCHKEY_ENABLE_PASSWORD_LOGIN (or set it to true) and restart".to_owned()
            } else {
                break_glass.to_owned()
            },
        ),
        (true, 0) => Finding::warning(
            CHECK,
            "JWT SSO is configured but no active administrator has signed in through it yet; \
             password login cannot be turned off until one has",
            "sign in once through SSO with an administrator's account",
        ),
        (false, n) => Finding::ok(
            CHECK,
            format!("password login is off; {n} active administrator(s) sign in through SSO"),
        ),
        (true, n) => Finding::ok(
            CHECK,
            format!(
                "password login is on; {n} active administrator(s) have signed in through SSO, \
                 so it may be turned off"
            ),
        ),
    }
}

/// Accounts stored under an address that the current rules refuse (a look-alike spelling,
/// `docs/decisions.md`): they still sign in with a password, but an SSO login with that
/// address is `invalid_email`. Named by id only.
async fn check_addresses(store: &Store) -> Finding {
    const CHECK: &str = "addresses";
    const SHOWN: usize = 5;
    let (mut after, mut refused, mut ids) = (0, 0usize, Vec::new());
    loop {
        let page = match store.non_ascii_addresses(after, 1_000).await {
            Ok(page) => page,
            Err(e) => {
                return Finding::error(
                    CHECK,
                    format!("cannot read the users: {e}"),
                    "check the database",
                );
            }
        };
        let Some((last, _)) = page.last() else { break };
        after = *last;
        for (id, email) in &page {
            if crate::domain::email::Email::parse(email).is_err() {
                refused += 1;
                if ids.len() < SHOWN {
                    ids.push(id.to_string());
                }
            }
        }
    }
    if refused == 0 {
        return Finding::ok(CHECK, "every stored address follows the current rules");
    }
    let more = if refused > SHOWN { ", …" } else { "" };
    Finding::warning(
        CHECK,
        format!(
            "{refused} account(s) have an address the current rules refuse (user id {}{more}): \
             they can sign in with a password, not through SSO",
            ids.join(", ")
        ),
        "give each its plain address (admin UI, People, Manage; or PUT /api/user/:id)",
    )
}

/// Mappings written through the API, the UI or the CLI name only existing groups (and a
/// deleted group leaves them); one fixed by the environment is not checked at start.
async fn check_group_mappings(store: &Store, eff: &Effective) -> Finding {
    const CHECK: &str = "group-mappings";
    let mapped = eff.group_mappings.all_ids();
    if mapped.is_empty() {
        return Finding::ok(CHECK, "no JWT group is mapped to a group");
    }
    let mut missing = Vec::new();
    for id in &mapped {
        match store.get_group(*id).await {
            Ok(Some(_)) => {}
            Ok(None) => missing.push(id.to_string()),
            Err(e) => {
                return Finding::error(
                    CHECK,
                    format!("cannot read the groups: {e}"),
                    "check the database",
                );
            }
        }
    }
    if missing.is_empty() {
        return Finding::ok(
            CHECK,
            format!(
                "the mappings name {} group(s), all of which exist",
                mapped.len()
            ),
        );
    }
    Finding::warning(
        CHECK,
        format!(
            "jwt-group-mappings names group id(s) that do not exist: {}; SSO logins skip them",
            missing.join(", ")
        ),
        if eff.is_env_fixed("jwt-group-mappings") {
            "create the groups, or correct LATCHKEY_JWT_GROUP_MAPPINGS and restart"
        } else {
            "create the groups, or correct jwt-group-mappings"
        },
    )
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn check_clock(store: &Store, eff: &Effective) -> Finding {
    const CHECK: &str = "clock";
    let before = unix_now();
    let db = match store.database_time().await {
        Ok(t) => t,
        Err(e) => {
            return Finding::error(
                CHECK,
                format!("cannot read the database's clock: {e}"),
                "check the database",
            );
        }
    };
    let after = unix_now();
    let skew = db - (before + after) / 2.0;
    if matches!(store, Store::Sqlite(_)) {
        return Finding::ok(
            CHECK,
            format!(
                "SQLite runs inside Latchkey and reads this machine's clock, so there is no skew to \
                 measure (difference {skew:+.3} s)"
            ),
        );
    }
    let leeway = eff.int("jwt-clock-skew-seconds").unwrap_or(30) as f64;
    let fix = "synchronise the clocks of every Latchkey machine and the database server (NTP: chrony or systemd-timesyncd)";
    let tolerance = CLOCK_OK_SECONDS + (after - before);
    if skew.abs() <= tolerance {
        Finding::ok(
            CHECK,
            format!("the database's clock is {skew:+.3} s from this machine's"),
        )
    } else if skew.abs() <= leeway.max(tolerance) {
        Finding::warning(
            CHECK,
            format!(
                "the database's clock is {skew:+.1} s from this machine's (within jwt-clock-skew-seconds = {leeway:.0})"
            ),
            fix,
        )
    } else {
        Finding::error(
            CHECK,
            format!(
                "the database's clock is {skew:+.1} s from this machine's, more than jwt-clock-skew-seconds = {leeway:.0}: \
                 token times are checked against this machine's clock, so valid tokens may be refused as too old or from the future"
            ),
            fix,
        )
    }
}

async fn check_jwks(eff: &Effective) -> Finding {
    const CHECK: &str = "jwks";
    let Some(uri) = eff.str("jwt-jwks-uri") else {
        return Finding::ok(CHECK, "jwt-jwks-uri is not set");
    };
    let fix = "check jwt-jwks-uri and that this machine can reach it (curl -sS <uri>)";
    // The verifier's own fetch and parser: what it would get, within the same bounds.
    let client = match reqwest::Client::builder()
        .timeout(JWKS_TIMEOUT)
        .connect_timeout(JWKS_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => return Finding::error(CHECK, format!("no HTTP client: {e}"), fix),
    };
    let shown = crate::sso::jwks::shown_uri(uri);
    match crate::sso::jwks::fetch(&client, uri, JWKS_TIMEOUT).await {
        Ok(fetched) => {
            let ignored = match fetched.ignored {
                0 => String::new(),
                n => format!(" ({n} more ignored)"),
            };
            Finding::ok(
                CHECK,
                format!(
                    "{shown} answers {} usable key(s){ignored}",
                    fetched.keys.len()
                ),
            )
        }
        Err(e) => Finding::error(CHECK, format!("{shown}: {e}"), fix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_print_as_one_line_each() {
        let f = Finding::error("site-url", "not set", "set it");
        assert_eq!(f.to_string(), "error  site-url: not set. Fix: set it.");
        let f = Finding::ok("clock", "fine");
        assert_eq!(f.to_string(), "ok  clock: fine.");
        let f = Finding::warning("jwks", "slow", "wait");
        assert_eq!(f.to_string(), "warning  jwks: slow. Fix: wait.");
    }

    #[test]
    fn secret_entropy_estimates() {
        let hex64 = "0123456789abcdef".repeat(4);
        let (bound, per_char) = secret_entropy(&hex64);
        assert!((bound - 256.0).abs() < 0.01, "{bound}");
        assert!(per_char >= 3.99, "{per_char}");
        let (_, per_char) = secret_entropy(&"k".repeat(40));
        assert!(per_char < 0.01);
        // 32 random alphanumerics: about 190 bits, below HS256's 256.
        let (bound, _) = secret_entropy("aZ3kQ9xP2mN7vB4cL8wR1tY6uI5oE0sD");
        assert!((185.0..195.0).contains(&bound), "{bound}");
        // 32 random bytes in base64url (43 characters) are plenty.
        let (bound, _) = secret_entropy("q3Vt-9xZ_Lm2PkWc8RfN1bYdHs7JgEaU4oTiXn6Ku0M");
        assert!(bound > 256.0, "{bound}");
    }

    #[test]
    fn loopback_site_urls_are_local() {
        for (u, local) in [
            ("http://localhost:3000", true),
            ("http://127.0.0.1:3000", true),
            ("http://[::1]:3000", true),
            ("http://sso.example.com", false),
        ] {
            assert_eq!(is_local(&Url::parse(u).unwrap()), local, "{u}");
        }
    }
}
