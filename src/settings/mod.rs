//! The settings service: the registry's values as they are in effect (environment over
//! stored over default), cached in memory, reloaded from the database every second so a
//! change made on one instance is in effect on every instance within 2 seconds.

pub mod encryption;
pub mod registry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use url::Url;

use crate::domain::group_mappings::GroupMappings;
use crate::error::{Error, Result};
use crate::store::{AuditRecord, SettingsPlan, SettingsUpdate, Store};
use encryption::EncryptionKey;
pub use registry::{Def, SETTINGS};

/// How often every instance re-reads the settings table.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// An immutable view of every setting's effective value, with the parsed forms the hot
/// paths need.
#[derive(Debug, Clone)]
pub struct Effective {
    /// Keyed by the registry's names, which requests look up about ten times per sign-in:
    /// with a fast hash (the keys are ours, not a client's) rather than SipHash, which was
    /// about 1 % of a login's instructions.
    values: HashMap<&'static str, Value, rustc_hash::FxBuildHasher>,
    env_fixed: HashMap<&'static str, Value>,
    stored: HashMap<String, String>,
    pub site_url: Option<Url>,
    pub group_mappings: GroupMappings,
    /// Sessions created at or before this time (Unix seconds) have ended for good, and so
    /// have sessions last seen before `sessions_seen_before` ([`SESSIONS_ENDED_CREATED`]).
    pub sessions_created_before: i64,
    pub sessions_seen_before: i64,
    /// The PEM keys of `jwt-public-keys`, parsed once per settings load: the verifier's and
    /// [`Effective::jwt_key_usable`]'s. The setting's validator refused bad keys when they
    /// were saved; one that no longer parses is skipped rather than failing every sign-in.
    pub pem_keys: Arc<[crate::sso::keys::VerifyingKey]>,
    /// The HMAC keys of `jwt-shared-secret`, made once per settings load; `None` when unset.
    pub shared_secret: Option<Arc<crate::sso::keys::SharedSecret>>,
    /// The strings of every list setting ([`Effective::strings`]), made once per settings load
    /// rather than at each use: `jwt-algorithms` at every token, `redirect-allowed-origins` at
    /// every sign-in.
    lists: HashMap<&'static str, Vec<String>, rustc_hash::FxBuildHasher>,
}

/// Rows of the settings table that are no setting: when `session-max-age-minutes` or
/// `session-idle-timeout-minutes` changes, the sessions the old value had ended are recorded
/// as ended for good, by when they were created or last seen, so that raising the value
/// again, or removing the timeout, does not bring them back. (Sessions are checked against
/// the current values; their rows are not rewritten, which would cost a pass over every
/// session.)
pub const SESSIONS_ENDED_CREATED: &str = "internal:sessions-ended-created-at-or-before";
pub const SESSIONS_ENDED_SEEN: &str = "internal:sessions-ended-seen-before";

/// How often a used session's `last_seen_at` is written: once a minute, or a quarter of the
/// idle timeout when that is shorter (at least every second). A session counts as idle only
/// past the timeout plus this lag.
pub fn touch_interval(idle_secs: Option<i64>) -> i64 {
    idle_secs.map_or(60, |idle| (idle / 4).clamp(1, 60))
}

impl Effective {
    fn build(stored: HashMap<String, String>, env_fixed: &HashMap<&'static str, Value>) -> Self {
        let mut values = HashMap::with_hasher(rustc_hash::FxBuildHasher);
        for def in SETTINGS {
            let value = if let Some(v) = env_fixed.get(def.key) {
                v.clone()
            } else if let Some(text) = stored.get(def.key) {
                // A stored value that no longer validates (hand-edited database) falls back
                // to the default rather than breaking every request.
                serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|v| def.validate(v).ok())
                    .filter(|v| !v.is_null())
                    .unwrap_or_else(|| def.default_value())
            } else {
                def.default_value()
            };
            values.insert(def.key, value);
        }
        let site_url = values
            .get("site-url")
            .and_then(Value::as_str)
            .and_then(|s| Url::parse(s).ok());
        let group_mappings = values
            .get("jwt-group-mappings")
            .and_then(|v| GroupMappings::parse(v).ok())
            .unwrap_or_default();
        // A setting fixed by this instance's environment is not the one a writer elsewhere
        // (another instance, the CLI in another shell) changed: its cutoff does not apply.
        let cutoff = |key: &str, setting: &str| {
            if env_fixed.contains_key(setting) {
                return i64::MIN;
            }
            stored
                .get(key)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(i64::MIN)
        };
        // Validated above (a list with a key that does not parse fell back to `[]`), so
        // every key parses here.
        let pem_list: Vec<String> = values
            .get("jwt-public-keys")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let pem_keys = crate::sso::keys::parse_pem_list(&pem_list)
            .map(Arc::from)
            .unwrap_or_else(|_| Arc::from(Vec::new()));
        // Metabase's key encoding: the UTF-8 bytes of the string, never hex-decoded.
        let shared_secret = values
            .get("jwt-shared-secret")
            .and_then(Value::as_str)
            .map(|secret| Arc::new(crate::sso::keys::SharedSecret::new(secret.as_bytes())));
        let lists = values
            .iter()
            .filter_map(|(key, value)| {
                let strings = value.as_array()?.iter().filter_map(Value::as_str);
                Some((*key, strings.map(str::to_owned).collect()))
            })
            .collect();
        Effective {
            values,
            env_fixed: env_fixed.clone(),
            lists,
            pem_keys,
            shared_secret,
            sessions_created_before: cutoff(SESSIONS_ENDED_CREATED, "session-max-age-minutes"),
            sessions_seen_before: cutoff(SESSIONS_ENDED_SEEN, "session-idle-timeout-minutes"),
            stored,
            site_url,
            group_mappings,
        }
    }

    pub fn get(&self, key: &str) -> &Value {
        self.values.get(key).unwrap_or(&Value::Null)
    }

    pub fn bool(&self, key: &str) -> bool {
        self.get(key).as_bool().unwrap_or(false)
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        self.get(key).as_i64()
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).as_str()
    }

    /// The strings of a list setting; none when it is not a list.
    pub fn strings(&self, key: &str) -> &[String] {
        self.lists.get(key).map_or(&[], Vec::as_slice)
    }

    pub fn is_env_fixed(&self, key: &str) -> bool {
        self.env_fixed.contains_key(key)
    }

    /// SPEC §3: enabled, IdP URI set, and at least one usable key.
    pub fn jwt_configured(&self) -> bool {
        self.bool("jwt-enabled")
            && self.str("jwt-identity-provider-uri").is_some()
            && self.jwt_key_usable()
    }

    /// Whether any signing key is set: the shared secret, a public key or a JWKS URI.
    pub fn jwt_has_key(&self) -> bool {
        self.str("jwt-shared-secret").is_some() || self.jwt_has_public_keys()
    }

    /// Whether a key is set for an algorithm `jwt-algorithms` allows: the shared secret for
    /// an HS algorithm; for the others a PEM key of the algorithm's family (an EC key does
    /// not make RS256 usable), or a JWKS URI (whose keys are only known once fetched).
    pub fn jwt_key_usable(&self) -> bool {
        let secret = self.str("jwt-shared-secret").is_some();
        let jwks = self.str("jwt-jwks-uri").is_some();
        self.strings("jwt-algorithms").iter().any(|name| {
            if name.starts_with("HS") {
                return secret;
            }
            jwks || crate::sso::verify::algorithm_from_name(name)
                .is_some_and(|alg| self.pem_keys.iter().any(|k| k.kind().allows(alg)))
        })
    }

    /// Public keys or a JWKS URI.
    fn jwt_has_public_keys(&self) -> bool {
        self.get("jwt-public-keys")
            .as_array()
            .is_some_and(|a| !a.is_empty())
            || self.str("jwt-jwks-uri").is_some()
    }

    /// Password login is off only while JWT SSO works (SPEC §5).
    pub fn password_login_enabled(&self) -> bool {
        !self.jwt_configured() || self.bool("enable-password-login")
    }
}

/// One row of `GET /api/setting`.
#[derive(Debug, Serialize)]
pub struct SettingView {
    pub key: &'static str,
    pub value: Value,
    pub default: Value,
    pub env_var: String,
    pub is_env_setting: bool,
    pub description: &'static str,
    pub secret: bool,
}

#[derive(Clone)]
pub struct Settings {
    store: Store,
    env_fixed: Arc<HashMap<&'static str, Value>>,
    current: Arc<RwLock<Arc<Effective>>>,
    /// `LATCHKEY_ENCRYPTION_KEY`: secret settings are written sealed with it (SPEC §3's
    /// secrets at rest; see `encryption`).
    key: Option<Arc<EncryptionKey>>,
    /// Whether the reloader already logged that a stored secret cannot be read (it logs
    /// once until the secret reads again, not every second).
    unreadable_reported: Arc<AtomicBool>,
    /// The one setting whose stored value may be unreadable ([`Settings::load_replacing`]):
    /// writing it replaces that value.
    discard: Option<Arc<str>>,
}

/// Who is changing settings, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub user_id: Option<i64>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

impl Settings {
    /// Reads the `LATCHKEY_*` variables of every setting (refusing invalid ones) and the
    /// stored values.
    pub async fn load(store: Store) -> anyhow::Result<Settings> {
        Self::load_with_env(store, |name| std::env::var(name).ok()).await
    }

    /// As `load`, with the environment given (tests pass their own).
    ///
    /// Refuses to load when a stored secret is encrypted and `LATCHKEY_ENCRYPTION_KEY` is
    /// missing or does not open it (the message names the setting and what to do), and
    /// when the variable is set to anything but a valid key.
    pub async fn load_with_env(
        store: Store,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Settings> {
        Self::load_inner(store, env, None).await
    }

    /// As `load`, for overwriting `key`: a stored value of that one setting that cannot be
    /// decrypted reads as unset instead of stopping the load, so `latchkey settings set KEY
    /// …` can replace (or, with `null`, remove) it after the encryption key was lost.
    pub async fn load_replacing(store: Store, key: &str) -> anyhow::Result<Settings> {
        Self::load_inner(store, |name| std::env::var(name).ok(), Some(key)).await
    }

    async fn load_inner(
        store: Store,
        env: impl Fn(&str) -> Option<String>,
        discard: Option<&str>,
    ) -> anyhow::Result<Settings> {
        let key = EncryptionKey::from_lookup(encryption::KEY_ENV, &env)?.map(Arc::new);
        let env_fixed = env_overlay(env)?;
        let rows = store.load_settings().await?;
        let stored = encryption::open_stored(rows, is_secret, key.as_deref(), discard)?;
        let effective = Effective::build(stored, &env_fixed);
        Ok(Settings {
            store,
            env_fixed: Arc::new(env_fixed),
            current: Arc::new(RwLock::new(Arc::new(effective))),
            key,
            unreadable_reported: Arc::new(AtomicBool::new(false)),
            discard: discard.map(Arc::from),
        })
    }

    /// Whether secret settings are written encrypted (`LATCHKEY_ENCRYPTION_KEY` is set).
    pub fn encrypts_secrets(&self) -> bool {
        self.key.is_some()
    }

    pub fn current(&self) -> Arc<Effective> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the settings table; swaps the snapshot only when something changed. A
    /// stored secret that no longer decrypts (re-encrypted under a new key by
    /// `settings rotate-encryption-key` while this instance runs with the old one) keeps
    /// the snapshot in effect and is logged once.
    pub async fn reload(&self) -> Result<()> {
        let rows = self.store.load_settings().await?;
        let stored = match encryption::open_stored(rows, is_secret, self.key.as_deref(), None) {
            Ok(stored) => {
                self.unreadable_reported.store(false, Ordering::Relaxed);
                stored
            }
            Err(e) => {
                if !self.unreadable_reported.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "keeping the settings in effect: {e}; restart this instance with the right key"
                    );
                }
                return Ok(());
            }
        };
        if stored != self.current().stored {
            let next = Arc::new(Effective::build(stored, &self.env_fixed));
            match self.current.write() {
                Ok(mut g) => *g = next,
                Err(poisoned) => *poisoned.into_inner() = next,
            }
        }
        Ok(())
    }

    /// Keeps this instance in step with changes made elsewhere (another instance, the CLI).
    pub fn spawn_reloader(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = this.reload().await {
                    tracing::warn!(error = %e, "could not reload settings");
                }
            }
        })
    }

    pub fn view(&self, key: &str) -> Option<SettingView> {
        let def = registry::def(key)?;
        let eff = self.current();
        let value = eff.get(key).clone();
        Some(SettingView {
            key: def.key,
            value: if def.secret {
                registry::mask_secret(&value)
            } else {
                value
            },
            default: def.default_value(),
            env_var: def.env_var(),
            is_env_setting: eff.is_env_fixed(key),
            description: def.description,
            secret: def.secret,
        })
    }

    pub fn list(&self) -> Vec<SettingView> {
        SETTINGS.iter().filter_map(|d| self.view(d.key)).collect()
    }

    /// The effective value, unmasked (for the server's own use and `latchkey settings get`
    /// on the server).
    pub fn raw(&self, key: &str) -> Value {
        self.current().get(key).clone()
    }

    /// Validates and writes several settings at once: all of them or none (SPEC §6).
    ///
    /// Which values change (and so what is written and audited) is decided against the
    /// database inside the write transaction, not against this instance's snapshot, which
    /// may be up to a second behind a change made elsewhere.
    pub async fn put(&self, changes: Vec<(String, Value)>, actor: &Actor) -> Result<()> {
        // An instance whose snapshot is frozen (a stored secret no longer opens with its key)
        // would neither read back what it wrote nor apply it: refuse instead of a 204.
        if self.unreadable_reported.load(Ordering::Relaxed) {
            return Err(unreadable_conflict());
        }
        let now = crate::clock::now();
        let mut wanted: Vec<(&'static Def, Value)> = Vec::new();
        for (key, value) in changes {
            let def = registry::def(&key)
                .ok_or_else(|| Error::validation(&key, format!("{key} is not a setting.")))?;
            if self.env_fixed.contains_key(def.key) {
                return Err(Error::SettingLocked {
                    key: key.clone(),
                    env_var: def.env_var(),
                });
            }
            if def.secret && registry::is_masked(&value) {
                continue; // the masked form we handed out: unchanged
            }
            let normal = def.validate_new(value).map_err(|m| {
                let m = m.trim_end_matches('.');
                Error::validation(def.key, format!("{}: {m}.", def.key))
            })?;
            wanted.push((def, normal));
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let plan = |rows: Vec<(String, String)>| self.plan_writes(&wanted, rows, actor, now);
        match self.store.update_settings(&plan).await? {
            SettingsUpdate::Unchanged => return Ok(()),
            SettingsUpdate::Written => {}
            SettingsUpdate::NoSsoAdmin => {
                let record = AuditRecord {
                    at: now,
                    kind: "setting_changed",
                    outcome: "failure",
                    reason: Some("lockout_risk".into()),
                    actor_id: actor.user_id,
                    user_id: None,
                    email: None,
                    ip: actor.ip.clone(),
                    request_id: actor.request_id.clone(),
                    details: serde_json::json!({"key": "enable-password-login", "new": false}),
                };
                self.store.audit(&record).await?;
                return Err(Error::LockoutRisk(
                    "Password login cannot be turned off yet: no active administrator has signed in through JWT SSO. \
                     Sign in once through SSO with an administrator account, then try again."
                        .into(),
                ));
            }
        }
        self.reload().await
    }

    /// What writing the validated values `wanted` changes, given the settings table's `rows`
    /// as read in the write transaction: the keys whose stored value differs, each with its
    /// audit row, and whether the lock-out guard applies (password login switched off).
    fn plan_writes(
        &self,
        wanted: &[(&'static Def, Value)],
        rows: Vec<(String, String)>,
        actor: &Actor,
        now: i64,
    ) -> Result<SettingsPlan> {
        // Only the rows this write compares or checks are opened: a secret this instance
        // cannot decrypt blocks only writes of that secret.
        let needed = |k: &str| {
            k == "enable-password-login"
                || k == SESSIONS_ENDED_CREATED
                || k == SESSIONS_ENDED_SEEN
                || wanted.iter().any(|(d, _)| d.key == k)
        };
        let rows = rows.into_iter().filter(|(k, _)| needed(k)).collect();
        let stored = encryption::open_stored(
            rows,
            is_secret,
            self.key.as_deref(),
            self.discard.as_deref(),
        )
        .map_err(|e| {
            tracing::error!("{e}");
            unreadable_conflict()
        })?;
        let eff = Effective::build(stored, &self.env_fixed);
        let mut plan = SettingsPlan::default();
        let mut writes = Vec::new();
        for (def, normal) in wanted {
            let stored_text = if normal.is_null() {
                None
            } else {
                Some(normal.to_string())
            };
            if eff.stored.get(def.key) == stored_text.as_ref() {
                continue;
            }
            let old = eff.get(def.key).clone();
            let new_effective = if normal.is_null() {
                def.default_value()
            } else {
                normal.clone()
            };
            if def.key == "enable-password-login"
                && eff.bool(def.key)
                && new_effective.as_bool() == Some(false)
            {
                plan.requires_sso_admin = true;
            }
            let (old_shown, new_shown) = (audit_shown(def, &old), audit_shown(def, &new_effective));
            plan.audits.push(AuditRecord {
                at: now,
                kind: "setting_changed",
                outcome: "success",
                reason: None,
                actor_id: actor.user_id,
                user_id: None,
                email: None,
                ip: actor.ip.clone(),
                request_id: actor.request_id.clone(),
                details: serde_json::json!({"key": def.key, "old": old_shown, "new": new_shown}),
            });
            writes.push((def.key.to_owned(), stored_text));
            // The sessions the old value had ended stay ended (`SESSIONS_ENDED_CREATED`).
            let ended = match (def.key, old.as_i64()) {
                ("session-max-age-minutes", Some(minutes)) => Some((
                    SESSIONS_ENDED_CREATED,
                    eff.sessions_created_before,
                    now - minutes * 60,
                )),
                ("session-idle-timeout-minutes", Some(minutes)) => Some((
                    SESSIONS_ENDED_SEEN,
                    eff.sessions_seen_before,
                    now - minutes * 60 - touch_interval(Some(minutes * 60)),
                )),
                _ => None,
            };
            if let Some((key, before, after)) = ended
                && after > before
            {
                writes.push((key.to_owned(), Some(after.to_string())));
            }
        }
        plan.changes = self.seal_secrets(writes);
        Ok(plan)
    }

    /// With an encryption key, secret settings are written sealed (a fresh nonce each
    /// time, the setting's key as associated data); other settings, and every setting
    /// without a key, are written as they are.
    fn seal_secrets(&self, writes: Vec<(String, Option<String>)>) -> Vec<(String, Option<String>)> {
        let Some(key) = &self.key else {
            return writes;
        };
        writes
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Some(text) if is_secret(&k) => Some(encryption::seal(key, &k, &text)),
                    other => other,
                };
                (k, v)
            })
            .collect()
    }
}

/// 409 for a settings write on an instance that cannot open a stored secret: the secret was
/// sealed with another key (`settings rotate-encryption-key`) after this instance started.
fn unreadable_conflict() -> Error {
    Error::Conflict(
        "This instance cannot open a stored secret (it was encrypted with another key since the \
         instance started) and keeps the settings it had. Restart it with the current \
         LATCHKEY_ENCRYPTION_KEY, then change settings again."
            .into(),
    )
}

fn is_secret(key: &str) -> bool {
    registry::def(key).is_some_and(|d| d.secret)
}

/// How each stored secret setting is kept: `(key, encrypted?)`, for the start-up warning
/// and `latchkey doctor`. Settings fixed by the environment are never stored.
pub async fn secrets_at_rest(store: &Store) -> Result<Vec<(&'static str, bool)>> {
    let rows: HashMap<String, String> = store.load_settings().await?.into_iter().collect();
    Ok(SETTINGS
        .iter()
        .filter(|d| d.secret)
        .filter_map(|d| rows.get(d.key).map(|t| (d.key, encryption::is_sealed(t))))
        .collect())
}

/// Reads every setting's environment variable. The value is JSON, or a bare string.
pub fn env_overlay(
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<HashMap<&'static str, Value>> {
    let mut out = HashMap::new();
    for def in SETTINGS {
        let name = def.env_var();
        let Some(raw) = lookup(&name) else { continue };
        let value = setting_value(def.key, &raw);
        let normal = def
            .validate_new(value)
            .map_err(|m| anyhow::anyhow!("environment variable {name} is invalid: {m}"))?;
        if !normal.is_null() {
            out.insert(def.key, normal);
        }
    }
    Ok(out)
}

/// A value from the command line or the environment: JSON when it parses, else the string.
pub fn parse_cli_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// As `parse_cli_value`, for a known setting: when the JSON reading is not a string and does
/// not fit the setting but the bare string does (a secret that happens to look like a
/// number), the string wins. A JSON string is what was meant, quotes and all: a refused one
/// is not stored with its quotes instead.
pub fn setting_value(key: &str, raw: &str) -> Value {
    let json = parse_cli_value(raw);
    match registry::def(key) {
        Some(def)
            if !json.is_string()
                && def.validate(json.clone()).is_err()
                && def.validate(Value::String(raw.to_owned())).is_ok() =>
        {
            Value::String(raw.to_owned())
        }
        _ => json,
    }
}

/// A setting's value as the audit log keeps it: secrets masked, and the JWKS URI without the
/// query or user info that may carry a credential (as the logs show it).
fn audit_shown(def: &registry::Def, value: &Value) -> Value {
    if def.secret {
        registry::mask_secret(value)
    } else if def.key == "jwt-jwks-uri"
        && let Some(uri) = value.as_str()
    {
        Value::String(crate::sso::jwks::shown_uri(uri))
    } else {
        value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §3: "configured" needs a key for an algorithm that `jwt-algorithms` allows.
    #[test]
    fn jwt_is_configured_only_with_a_key_for_an_allowed_algorithm() {
        let pem = serde_json::json!([include_str!("../../tests/fixtures/keys/ec-p256-a.pub.pem")])
            .to_string();
        let eff = |pairs: &[(&str, String)]| {
            let mut stored: HashMap<String, String> = [
                ("jwt-enabled", "true".to_owned()),
                (
                    "jwt-identity-provider-uri",
                    "\"https://idp.example/login\"".to_owned(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            for (k, v) in pairs {
                stored.insert((*k).to_owned(), v.clone());
            }
            Effective::build(stored, &HashMap::new())
        };
        let secret = || ("jwt-shared-secret", format!("\"{}\"", "s".repeat(40)));
        let algs = |a: &str| ("jwt-algorithms", a.to_owned());
        assert!(
            eff(&[secret()]).jwt_configured(),
            "the default HS256 with a secret"
        );
        assert!(
            !eff(&[("jwt-public-keys", pem.clone())]).jwt_configured(),
            "a public key, HS256 only"
        );
        // The key must be of the allowed algorithm's family: a P-256 key verifies ES256 only.
        assert!(eff(&[("jwt-public-keys", pem.clone()), algs(r#"["ES256"]"#)]).jwt_configured());
        assert!(
            eff(&[
                ("jwt-public-keys", pem.clone()),
                algs(r#"["RS256","ES256"]"#)
            ])
            .jwt_configured()
        );
        assert!(
            !eff(&[
                ("jwt-public-keys", pem.clone()),
                algs(r#"["RS256","ES384","EdDSA"]"#)
            ])
            .jwt_configured(),
            "a P-256 key, no algorithm it verifies"
        );
        assert!(
            !eff(&[secret(), algs(r#"["RS256"]"#)]).jwt_configured(),
            "a secret, RS256 only"
        );
        assert!(eff(&[secret(), algs(r#"["ES256","HS512"]"#)]).jwt_configured());
        let jwks = ("jwt-jwks-uri", "\"https://idp.example/jwks\"".to_owned());
        assert!(eff(&[jwks.clone(), algs(r#"["EdDSA"]"#)]).jwt_configured());
        assert!(!eff(&[jwks]).jwt_configured(), "a JWKS URI, HS256 only");
        let none = eff(&[]);
        assert!(!none.jwt_has_key() && !none.jwt_configured());
    }

    #[test]
    fn env_values_are_parsed_as_json_or_bare_strings_and_validated() {
        let env = |name: &str| match name {
            "LATCHKEY_JWT_ENABLED" => Some("true".to_owned()),
            "LATCHKEY_JWT_IDENTITY_PROVIDER_URI" => Some("https://idp.example/login".to_owned()),
            _ => None,
        };
        let out = env_overlay(env).unwrap();
        assert_eq!(out.get("jwt-enabled"), Some(&Value::Bool(true)));
        assert_eq!(
            out.get("jwt-identity-provider-uri"),
            Some(&Value::from("https://idp.example/login"))
        );
        let bad =
            |name: &str| (name == "LATCHKEY_JWT_CLOCK_SKEW_SECONDS").then(|| "900".to_owned());
        assert!(env_overlay(bad).is_err());
        let digits = "1".repeat(40);
        let numeric_secret =
            |name: &str| (name == "LATCHKEY_JWT_SHARED_SECRET").then(|| digits.clone());
        let out = env_overlay(numeric_secret).unwrap();
        assert_eq!(
            out.get("jwt-shared-secret"),
            Some(&Value::String("1".repeat(40)))
        );
    }

    #[test]
    fn jwt_is_configured_only_with_enabled_uri_and_key() {
        let mut stored = HashMap::new();
        stored.insert("jwt-enabled".to_owned(), "true".to_owned());
        stored.insert(
            "jwt-identity-provider-uri".to_owned(),
            "\"https://idp.example\"".to_owned(),
        );
        let eff = Effective::build(stored.clone(), &HashMap::new());
        assert!(!eff.jwt_configured());
        assert!(eff.password_login_enabled());
        stored.insert(
            "jwt-shared-secret".to_owned(),
            format!("\"{}\"", "k".repeat(40)),
        );
        stored.insert("enable-password-login".to_owned(), "false".to_owned());
        let eff = Effective::build(stored.clone(), &HashMap::new());
        assert!(eff.jwt_configured());
        assert!(!eff.password_login_enabled());
        // A key of blanks stored by an earlier version is no key: SSO is off, and password
        // login with it.
        stored.insert(
            "jwt-shared-secret".to_owned(),
            format!("\"{}\"", " ".repeat(40)),
        );
        let eff = Effective::build(stored, &HashMap::new());
        assert_eq!(eff.str("jwt-shared-secret"), None);
        assert!(!eff.jwt_configured());
        assert!(eff.password_login_enabled());
    }
}
