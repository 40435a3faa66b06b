//! What the command-line subcommands do (main.rs only parses).

use std::io::BufRead;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::auth::password;
use crate::domain::email::Email;
use crate::settings::encryption::{self, EncryptionKey, KEY_ENV, KEY_FORMAT, NEW_KEY_ENV};
use crate::settings::{Actor, Settings, parse_cli_value, registry, setting_value};
use crate::store::{AuditRecord, NewUser, Store, UserQuery};

pub async fn serve(listen: &str, database_url: &str) -> anyhow::Result<()> {
    log_scheduler();
    let app = App::build(listen, database_url).await?;
    warn_plain_secrets(&app).await?;
    if let Some(url) = app.announce_setup().await? {
        tracing::info!("no administrator yet: create the first one at {url}");
    }
    app.run_until_stopped().await
}

/// Logs which of Tokio's schedulers serves the requests (`main` chooses it by the CPUs the
/// process may use: docs/decisions.md, "One CPU, one thread"), read from the runtime itself.
fn log_scheduler() {
    let runtime = tokio::runtime::Handle::current();
    match runtime.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => {
            tracing::info!("requests are served on one thread");
        }
        _ => {
            let n = runtime.metrics().num_workers();
            let plural = if n == 1 { "" } else { "s" };
            tracing::info!("requests are served on {n} worker thread{plural}");
        }
    }
}

/// Logs a warning at start when secret settings are stored in plain text.
async fn warn_plain_secrets(app: &App) -> anyhow::Result<()> {
    let state = app.state();
    let plain: Vec<&str> = crate::settings::secrets_at_rest(&state.store)
        .await?
        .into_iter()
        .filter(|(_, sealed)| !sealed)
        .map(|(k, _)| k)
        .collect();
    if plain.is_empty() {
        return Ok(());
    }
    let names = plain.join(", ");
    if state.settings.encrypts_secrets() {
        tracing::warn!(
            "{names} stored in plain text although {KEY_ENV} is set: encrypt it with \
             `{NEW_KEY_ENV}=\"${KEY_ENV}\" latchkey settings rotate-encryption-key`"
        );
    } else {
        tracing::warn!(
            "{names} stored in plain text: set {KEY_ENV} to encrypt secrets at rest \
             (README, \"Secrets at rest\")"
        );
    }
    Ok(())
}

async fn open(database_url: &str) -> anyhow::Result<Store> {
    migrated(Store::connect(database_url).await).await
}

/// [`open`] for the commands that read, or change what must be there already (a password,
/// the encryption of stored secrets): a missing SQLite file is an error, not a new database.
async fn open_existing(database_url: &str) -> anyhow::Result<Store> {
    migrated(Store::connect_existing(database_url).await).await
}

async fn migrated(store: anyhow::Result<Store>) -> anyhow::Result<Store> {
    let store = store.with_context(|| "cannot open the database")?;
    store.migrate().await?;
    Ok(store)
}

pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    open(database_url).await?;
    println!("migrations applied");
    Ok(())
}

/// One line of standard input, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw).to_owned();
    password::check_new_password(&pw).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(pw)
}

fn cli_audit(kind: &'static str) -> AuditRecord {
    AuditRecord {
        details: json!({"source": "cli"}),
        ..AuditRecord::success(crate::clock::now(), kind)
    }
}

pub async fn admin_create(
    database_url: &str,
    email: &str,
    first_name: Option<String>,
    last_name: Option<String>,
) -> anyhow::Result<()> {
    let email = Email::parse(email.trim())
        .map_err(|_| anyhow::anyhow!("{email:?} is not a valid email address"))?;
    let name = |flag: &str, value: Option<String>| match value {
        None => Ok(None),
        Some(v) => crate::domain::name::clean(&v).map_err(|_| {
            anyhow::anyhow!(
                "{flag} must be at most {} characters",
                crate::domain::name::MAX_NAME_CHARS
            )
        }),
    };
    let first_name = name("--first-name", first_name)?;
    let last_name = name("--last-name", last_name)?;
    let pw = read_password()?;
    let store = open(database_url).await?;
    let hash = tokio::task::spawn_blocking(move || password::hash_blocking(&pw)).await??;
    let new = NewUser {
        email: email.as_str().to_owned(),
        first_name,
        last_name,
        password_hash: Some(hash),
        is_superuser: true,
        now: crate::clock::now(),
    };
    let user = store.create_user(&new, &cli_audit("user_created")).await?;
    println!("created administrator {} (id {})", user.email, user.id);
    Ok(())
}

pub async fn admin_set_password(database_url: &str, email: &str) -> anyhow::Result<()> {
    let pw = read_password()?;
    let store = open_existing(database_url).await?;
    let email = email.trim().to_lowercase();
    let Some(found) = store.find_user_by_email(&email).await? else {
        bail!("no user has the email {email}");
    };
    let hash = tokio::task::spawn_blocking(move || password::hash_blocking(&pw)).await??;
    let mut audit = cli_audit("user_updated");
    audit.details = json!({"source": "cli", "password": "changed"});
    store
        .set_password_hash(found.user.id, &hash, &audit)
        .await?;
    println!("password set for {email}");
    Ok(())
}

pub async fn admin_list(database_url: &str) -> anyhow::Result<()> {
    let store = open_existing(database_url).await?;
    let mut offset = 0;
    loop {
        let q = UserQuery {
            search: None,
            include_inactive: true,
            limit: 500,
            offset,
        };
        let (users, _) = store.list_users(&q).await?;
        for u in users.iter().filter(|u| u.is_superuser) {
            let state = if u.is_active { "active" } else { "deactivated" };
            println!("{}\t{}\t{}\t{}", u.id, u.email, u.display_name(), state);
        }
        if users.len() < 500 {
            return Ok(());
        }
        offset += 500;
    }
}

pub async fn settings_get(database_url: &str, key: &str, reveal: bool) -> anyhow::Result<()> {
    let settings = Settings::load(open_existing(database_url).await?).await?;
    let view = settings
        .view(key)
        .ok_or_else(|| anyhow::anyhow!("{key} is not a setting"))?;
    let value = if reveal {
        settings.raw(key)
    } else {
        view.value
    };
    println!("{value}");
    Ok(())
}

pub async fn settings_set(database_url: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let store = open(database_url).await?;
    // Overwriting a secret works even when its stored value cannot be decrypted (the
    // encryption key was lost): that is the way out the start-up error points to.
    let settings = if registry::def(key).is_some_and(|d| d.secret) {
        Settings::load_replacing(store, key).await?
    } else {
        Settings::load(store).await?
    };
    settings
        .put(
            vec![(key.to_owned(), setting_value(key, value))],
            &Actor::default(),
        )
        .await?;
    let shown = settings.view(key).map(|v| v.value).unwrap_or(Value::Null);
    println!("{key} = {shown}");
    Ok(())
}

pub async fn settings_list(database_url: &str) -> anyhow::Result<()> {
    let settings = Settings::load(open_existing(database_url).await?).await?;
    for v in settings.list() {
        let fixed = if v.is_env_setting {
            format!("  (fixed by {})", v.env_var)
        } else {
            String::new()
        };
        println!("{} = {}{fixed}", v.key, v.value);
    }
    Ok(())
}

/// `latchkey settings rotate-encryption-key`: re-encrypts every stored secret setting with
/// the new key in one transaction. The old key comes from `LATCHKEY_ENCRYPTION_KEY` (needed
/// only for values that are encrypted already: plain values are simply encrypted, which is
/// how encryption is switched on), the new one from standard input or
/// `LATCHKEY_NEW_ENCRYPTION_KEY`.
pub async fn settings_rotate_encryption_key(
    database_url: &str,
    new_key_stdin: bool,
) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let old = EncryptionKey::from_lookup(KEY_ENV, env)?;
    let new = if new_key_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        EncryptionKey::parse(&line)
            .map_err(|m| anyhow::anyhow!("the new key on standard input is not valid: {m}"))?
    } else {
        EncryptionKey::from_lookup(NEW_KEY_ENV, env)?.ok_or_else(|| {
            anyhow::anyhow!("no new key: pass --new-key-stdin or set {NEW_KEY_ENV} ({KEY_FORMAT})")
        })?
    };
    let store = open_existing(database_url).await?;
    let is_secret = |k: &str| registry::def(k).is_some_and(|d| d.secret);
    let mut swaps = Vec::new();
    let mut audits = Vec::new();
    let mut report = Vec::new();
    for (setting, stored) in store.load_settings().await? {
        if !is_secret(&setting) {
            continue;
        }
        let was_sealed = encryption::is_sealed(&stored);
        // Opens sealed values with the old key (fails closed, naming the setting); plain
        // values pass through.
        let plain = encryption::open_stored(
            vec![(setting.clone(), stored.clone())],
            is_secret,
            old.as_ref(),
            None,
        )?
        .remove(&setting)
        .unwrap_or_default();
        let sealed = encryption::seal(&new, &setting, &plain);
        let what = if was_sealed {
            "re-encrypted"
        } else {
            "encrypted"
        };
        report.push(if was_sealed {
            format!(
                "{setting}: re-encrypted with the new key (key id {})",
                new.id()
            )
        } else {
            format!(
                "{setting}: encrypted with the new key (key id {}); it was stored in plain text",
                new.id()
            )
        });
        let mut audit = cli_audit("setting_changed");
        audit.details =
            json!({"source": "cli", "key": setting, "encryption": what, "key_id": new.id()});
        audits.push(audit);
        swaps.push((setting, stored, sealed));
    }
    if swaps.is_empty() {
        println!(
            "no secret setting is stored in the database: nothing to encrypt. Secrets set from now on are \
             encrypted by instances started with {KEY_ENV} = the new key (key id {})",
            new.id()
        );
        return Ok(());
    }
    if !store.swap_settings(&swaps, &audits).await? {
        bail!(
            "a secret setting changed while it was being re-encrypted; nothing was written: run the command again"
        );
    }
    for line in report {
        println!("{line}");
    }
    println!(
        "done in one transaction. Now set {KEY_ENV} to the new key (key id {}) on every instance and restart them: \
         instances still running with the old key keep the values they loaded and cannot read the new ones",
        new.id()
    );
    Ok(())
}

/// `latchkey doctor`: prints one line per check; an error when any check found an error.
pub async fn doctor(database_url: &str) -> anyhow::Result<()> {
    let findings = crate::doctor::run(database_url, |name| std::env::var(name).ok()).await;
    for f in &findings {
        println!("{f}");
    }
    let errors = findings
        .iter()
        .filter(|f| f.level == crate::doctor::Level::Error)
        .count();
    let warnings = findings
        .iter()
        .filter(|f| f.level == crate::doctor::Level::Warning)
        .count();
    if errors > 0 {
        bail!("doctor found {errors} error(s) and {warnings} warning(s)");
    }
    if warnings > 0 {
        eprintln!("doctor found {warnings} warning(s) and no errors");
    }
    Ok(())
}

/// What a minted token carries besides its email and groups: the names of those two claims,
/// and an `iss` and `aud` when the server checks them. [`TokenShape::default`] is the
/// default names and neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenShape {
    pub email_claim: String,
    pub groups_claim: String,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl Default for TokenShape {
    fn default() -> Self {
        TokenShape {
            email_claim: "email".into(),
            groups_claim: "groups".into(),
            issuer: None,
            audience: None,
        }
    }
}

impl TokenShape {
    /// The shape the configured server accepts: its claim names, issuer and audience.
    pub fn of(eff: &crate::settings::Effective) -> TokenShape {
        let names = crate::sso::attribute_names(eff);
        TokenShape {
            email_claim: names.email.to_owned(),
            groups_claim: names.groups.to_owned(),
            issuer: eff.str("jwt-issuer").map(str::to_owned),
            audience: eff.str("jwt-audience").map(str::to_owned),
        }
    }
}

/// The claims of a minted token: `iat` = `now`, a random `jti`, the shape's `iss` and `aud`,
/// the email and groups under the shape's names, then the `--claim`s, which may replace any
/// of those (an old `iat`, say, to try a token that is too old).
pub fn token_claims(
    shape: &TokenShape,
    email: &str,
    groups: Option<&str>,
    extra: &[String],
    now: i64,
) -> anyhow::Result<Map<String, Value>> {
    let mut claims = Map::new();
    claims.insert("iat".into(), json!(now));
    claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
    if let Some(iss) = &shape.issuer {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(aud) = &shape.audience {
        claims.insert("aud".into(), json!(aud));
    }
    claims.insert(shape.email_claim.clone(), json!(email));
    if let Some(g) = groups {
        let list: Vec<&str> = g
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        claims.insert(shape.groups_claim.clone(), json!(list));
    }
    for kv in extra {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--claim takes key=value, got {kv:?}"))?;
        claims.insert(k.to_owned(), parse_cli_value(v));
    }
    Ok(claims)
}

/// The variable that fixes `jwt-shared-secret` (and fills `token sign --secret`).
const SECRET_ENV: &str = "LATCHKEY_JWT_SHARED_SECRET";

pub async fn token_sign(
    database_url: &str,
    email: &str,
    groups: Option<&str>,
    extra: &[String],
    secret: Option<String>,
) -> anyhow::Result<()> {
    // A secret from LATCHKEY_JWT_SHARED_SECRET is the server's own (the variable fixes its
    // setting): the token then has the server's shape too (claim names, issuer, audience),
    // read from its database when there is one. Only `--secret` signs with defaults.
    let from_env = secret.is_some() && std::env::var(SECRET_ENV).ok() == secret;
    let (secret, shape) = match secret {
        Some(s) if !from_env => (s, TokenShape::default()),
        given => match open_existing(database_url).await {
            Ok(store) => {
                let settings = Settings::load(store).await?;
                let secret = settings
                    .raw("jwt-shared-secret")
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        anyhow::anyhow!("jwt-shared-secret is not set: pass --secret")
                    })?;
                (secret, TokenShape::of(&settings.current()))
            }
            Err(e) if given.is_some() => {
                eprintln!("{e:#}: signing with the default claim names, without iss or aud");
                (given.unwrap_or_default(), TokenShape::default())
            }
            Err(e) => return Err(e),
        },
    };
    if secret.chars().count() < crate::sso::verify::MIN_SECRET_BYTES {
        bail!(
            "the secret must have at least {} characters (the server's jwt-shared-secret)",
            crate::sso::verify::MIN_SECRET_BYTES
        );
    }
    let claims = token_claims(&shape, email, groups, extra, crate::clock::now())?;
    let token = crate::sso::verify::sign_hmac("HS256", &claims, secret.as_bytes())
        .map_err(|r| anyhow::anyhow!("cannot sign: {}", r.code()))?;
    println!("{token}");
    Ok(())
}
