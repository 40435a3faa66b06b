//! JWT SSO: the verification policy (pure, `verify`), verification keys (pure, `keys`),
//! the JWKS cache that feeds them (`jwks`), claim extraction and group-sync diff (pure,
//! `claims`), and the login service that ties them to the store.

pub mod claims;
pub mod jwks;
pub mod keys;
pub mod verify;

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::{Error, TokenFailure};
use crate::settings::Effective;
use crate::store::{
    ADMINISTRATORS_GROUP_ID, AuditRecord, NewSession, SsoLogin, SsoOutcome, Store, User,
};
use claims::{AttributeNames, ClaimsError, UserFields};
use keys::{KeySet, SharedSecret};
use verify::{Members, Reason, TokenPurpose, VerifiedToken, VerifyPolicy};

impl From<Reason> for TokenFailure {
    fn from(r: Reason) -> Self {
        match r {
            Reason::TokenMalformed => TokenFailure::Malformed,
            Reason::TokenTooLarge => TokenFailure::TooLarge,
            Reason::AlgNotAllowed => TokenFailure::AlgNotAllowed,
            Reason::HeaderNotAllowed => TokenFailure::HeaderNotAllowed,
            Reason::BadSignature => TokenFailure::BadSignature,
            Reason::TokenExpired => TokenFailure::Expired,
            Reason::TokenNotYetValid => TokenFailure::NotYetValid,
            Reason::TokenTooOld => TokenFailure::TooOld,
            Reason::TokenIssuedInFuture => TokenFailure::IssuedInFuture,
            Reason::TokenNeverExpires => TokenFailure::NeverExpires,
            Reason::ClaimInvalid => TokenFailure::ClaimInvalid,
            Reason::IssuerMismatch => TokenFailure::IssuerMismatch,
            Reason::AudienceMismatch => TokenFailure::AudienceMismatch,
        }
    }
}

impl From<ClaimsError> for TokenFailure {
    fn from(e: ClaimsError) -> Self {
        match e {
            ClaimsError::MissingEmail => TokenFailure::MissingEmail,
            ClaimsError::InvalidEmail => TokenFailure::InvalidEmail,
            ClaimsError::ClaimsTooLarge => TokenFailure::ClaimsTooLarge,
            ClaimsError::ClaimInvalid => TokenFailure::ClaimInvalid,
        }
    }
}

/// The settings the verifier reads, as one login's verification takes them from the
/// settings in effect (borrowed: copying them cost a few allocations per login).
pub struct PolicySettings<'e> {
    algorithms: &'e [String],
    secret: Option<&'e SharedSecret>,
    issuer: Option<&'e str>,
    audience: Option<&'e str>,
    max_age: i64,
    skew: i64,
}

impl<'e> PolicySettings<'e> {
    pub fn from_settings(eff: &'e Effective) -> Self {
        PolicySettings {
            algorithms: eff.strings("jwt-algorithms"),
            secret: eff.shared_secret.as_deref(),
            issuer: eff.str("jwt-issuer"),
            audience: eff.str("jwt-audience"),
            max_age: eff.int("jwt-max-age-seconds").unwrap_or(180),
            skew: eff.int("jwt-clock-skew-seconds").unwrap_or(30),
        }
    }

    /// The policy for one verification, with the asymmetric keys in effect (see
    /// [`jwks::KeyStore::key_set`]).
    pub fn policy<'a>(&self, keys: &'a KeySet, purpose: TokenPurpose) -> VerifyPolicy<'a>
    where
        'e: 'a,
    {
        VerifyPolicy {
            algorithms: self.algorithms,
            shared_secret: self.secret,
            keys,
            issuer: self.issuer,
            audience: self.audience,
            max_age_seconds: self.max_age,
            clock_skew_seconds: self.skew,
            purpose,
        }
    }
}

pub fn attribute_names(eff: &Effective) -> AttributeNames<'_> {
    AttributeNames {
        email: eff.str("jwt-attribute-email").unwrap_or("email"),
        first_name: eff.str("jwt-attribute-firstname").unwrap_or("first_name"),
        last_name: eff.str("jwt-attribute-lastname").unwrap_or("last_name"),
        groups: eff.str("jwt-attribute-groups").unwrap_or("groups"),
    }
}

/// Verifies a login token and extracts the user fields: everything short of the database.
pub fn check_login_token(
    eff: &Effective,
    keys: &KeySet,
    token: &str,
    now: i64,
) -> Result<(VerifiedToken, UserFields), TokenFailure> {
    let ps = PolicySettings::from_settings(eff);
    let verified = verify::verify(token, &ps.policy(keys, TokenPurpose::Login), now)?;
    let fields = claims::user_fields(&verified.claims, &attribute_names(eff))?;
    Ok((verified, fields))
}

/// `(wanted, managed)` when group sync applies to this login (SPEC §4.5).
pub fn group_sync_sets(
    eff: &Effective,
    fields: &UserFields,
) -> Option<(BTreeSet<i64>, BTreeSet<i64>)> {
    if !eff.bool("jwt-group-sync") {
        return None;
    }
    let names = fields.groups.as_ref()?;
    let mappings = &eff.group_mappings;
    Some((mappings.wanted(names), mappings.managed()))
}

/// What one SSO login attempt ended in.
pub enum LoginResult {
    LoggedIn {
        user: Box<User>,
    },
    /// The token was used before; the caller may still redirect a browser that already has
    /// a session for this email. Otherwise it writes `failure`, the audit row of the refusal:
    /// a harmless refresh is not a failed login.
    Replayed {
        email: String,
        failure: Box<AuditRecord>,
    },
}

/// The whole callback after the redirect check: verify, provision, sync, open a session.
/// Every failure is audited with its reason code (a replay by the caller, see
/// [`LoginResult::Replayed`]); nothing else is written for it. `keys`
/// are the asymmetric keys in effect, fetched beforehand: nothing here touches the network.
pub async fn login(
    store: &Store,
    eff: &Effective,
    keys: &KeySet,
    token: &str,
    session: NewSession,
    audit: AuditRecord,
) -> Result<LoginResult, Error> {
    let now = session.now;
    let fail = |reason: &str, email: Option<String>| AuditRecord {
        outcome: "failure",
        reason: Some(reason.to_owned()),
        email,
        ..audit.clone()
    };
    let (verified, fields) = match check_login_token(eff, keys, token, now) {
        Ok(v) => v,
        Err(f) => {
            store.audit(&fail(f.code(), None)).await?;
            return Err(Error::Token(f));
        }
    };
    let group_sync = group_sync_sets(eff, &fields);
    let email = fields.email.into_string();
    let login = Box::new(SsoLogin {
        subject: stored_subject(&verified.claims),
        replay_key: verified.replay_key,
        replay_expires_at: verified.replay_expires_at,
        email: email.clone(),
        first_name: fields.first_name,
        last_name: fields.last_name,
        login_attributes: fields.login_attributes,
        provisioning_enabled: eff.bool("jwt-user-provisioning-enabled"),
        group_sync,
        session,
        audit: audit.clone(),
    });
    match store.sso_login(login).await? {
        SsoOutcome::LoggedIn { user, .. } => Ok(LoginResult::LoggedIn { user }),
        SsoOutcome::Replayed => Ok(LoginResult::Replayed {
            failure: Box::new(fail("token_replayed", Some(email.clone()))),
            email,
        }),
        SsoOutcome::NotProvisioned => {
            store
                .audit(&fail("user_not_provisioned", Some(email)))
                .await?;
            Err(Error::UserNotProvisioned)
        }
        SsoOutcome::Deactivated => {
            store.audit(&fail("user_deactivated", Some(email))).await?;
            Err(Error::UserDeactivated)
        }
    }
}

/// The dry run (`POST /api/sso/jwt/test`): the same checks as a login, read-only.
pub async fn dry_run(
    store: &Store,
    eff: &Effective,
    keys: &KeySet,
    token: &str,
    now: i64,
) -> Result<Value, Error> {
    let ps = PolicySettings::from_settings(eff);
    let mut checks = Vec::new();
    let verified = verify::verify_traced(
        token,
        &ps.policy(keys, TokenPurpose::Login),
        now,
        &mut checks,
    );
    let mut report = json!({"ok": false, "reason": null, "message": null, "checks": checks, "user": null,
        "login_attributes": null, "groups": null, "sso_enabled": eff.jwt_configured()});
    let fail = |report: &mut Value, f: TokenFailure| {
        report["reason"] = json!(f.code());
        report["message"] = json!(f.sentence());
    };
    let verified = match verified {
        Ok(v) => v,
        Err(r) => {
            report["checks"] = json!(checks);
            fail(&mut report, r.into());
            return Ok(report);
        }
    };
    let replayed = store.replay_exists(&verified.replay_key, now).await?;
    checks.push(verify::Check {
        name: "single_use",
        ok: !replayed,
        detail: if replayed {
            "this token was already used".into()
        } else {
            "not used before".into()
        },
    });
    report["checks"] = json!(checks);
    if replayed {
        fail(&mut report, TokenFailure::Replayed);
        return Ok(report);
    }
    let fields = match claims::user_fields(&verified.claims, &attribute_names(eff)) {
        Ok(f) => f,
        Err(e) => {
            fail(&mut report, e.into());
            return Ok(report);
        }
    };
    report["login_attributes"] = Value::Object(fields.login_attributes.clone());
    let existing = store.sso_preview(fields.email.as_str()).await?;
    let (action, current_groups, user_id, is_admin) = match &existing {
        Some((u, _)) if !u.is_active => ("refuse", BTreeSet::new(), Some(u.id), false),
        Some((u, g)) => (
            "update",
            g.iter().copied().collect(),
            Some(u.id),
            u.is_superuser,
        ),
        None if !eff.bool("jwt-user-provisioning-enabled") => {
            ("refuse", BTreeSet::new(), None, false)
        }
        None => (
            "create",
            BTreeSet::from([crate::store::ALL_USERS_GROUP_ID]),
            None,
            false,
        ),
    };
    report["user"] = json!({
        "email": fields.email.as_str(),
        "first_name": fields.first_name,
        "last_name": fields.last_name,
        "id": user_id,
        "action": action,
    });
    if action == "refuse" {
        let f = if existing.is_some() {
            Error::UserDeactivated
        } else {
            Error::UserNotProvisioned
        };
        report["reason"] = json!(f.code());
        report["message"] = json!(f.to_string());
        return Ok(report);
    }
    match group_sync_sets(eff, &fields) {
        Some((wanted, managed)) => {
            let diff = claims::group_diff(&current_groups, &wanted, &managed);
            let mut remove = diff.remove.clone();
            let mut kept = Vec::new();
            if is_admin && remove.contains(&ADMINISTRATORS_GROUP_ID) {
                let admins = store
                    .count_other_active_admins(user_id.unwrap_or_default())
                    .await?;
                if admins == 0 {
                    remove.retain(|g| *g != ADMINISTRATORS_GROUP_ID);
                    kept.push(ADMINISTRATORS_GROUP_ID);
                }
            }
            report["groups"] = json!({"sync": true, "claim": fields.groups,
                "add": group_entries(store, eff, &diff.add).await?,
                "remove": group_entries(store, eff, &remove).await?,
                "kept_last_admin": group_entries(store, eff, &kept).await?});
        }
        None => {
            // Sync off, or on and the token carries no groups claim: nothing changes either way.
            report["groups"] = json!({"sync": eff.bool("jwt-group-sync"), "claim": fields.groups, "add": [], "remove": [], "kept_last_admin": []});
        }
    }
    report["ok"] = json!(true);
    Ok(report)
}

/// `{"id", "name", "mapped_from"}` for each group of a dry-run diff: the group's own name
/// (null if it has just been deleted) and the JWT group names mapped to it.
async fn group_entries(store: &Store, eff: &Effective, ids: &[i64]) -> Result<Vec<Value>, Error> {
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        let name = store.get_group(id).await?.map(|g| g.name);
        let mapped_from: Vec<&String> = eff
            .group_mappings
            .0
            .iter()
            .filter(|(_, ids)| ids.contains(&id))
            .map(|(k, _)| k)
            .collect();
        out.push(json!({"id": id, "name": name, "mapped_from": mapped_from}));
    }
    Ok(out)
}

/// Claims of a verified token, for callers that need one directly (back-channel logout).
pub fn claim_str<'a>(claims: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    claims.member(key).and_then(Value::as_str)
}

/// The token's `sub` as a login stores it on the user, and as back-channel logout looks it up:
/// whole (the verifier refuses one longer than [`verify::MAX_SUB_CHARS`] characters).
pub fn stored_subject(claims: &Map<String, Value>) -> Option<String> {
    claim_str(claims, "sub").map(str::to_owned)
}
