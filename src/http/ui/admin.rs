//! Admin → Authentication: the card per sign-in method, and the JWT SSO form.
//! Both pages render the settings as they are in effect; changes go through the JSON API
//! (`PUT /api/setting`) from assets/authentication.js and assets/jwt.js.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::{AdminPage, Chrome, render, script_json};
use crate::app::AppState;
use crate::error::Result;
use crate::settings::registry::KNOWN_ALGORITHMS;
use crate::settings::{Effective, SettingView};

/// "on", "incomplete" (switched on, something missing) or "off", and what is missing.
fn jwt_status(eff: &Effective) -> (&'static str, String) {
    if eff.jwt_configured() {
        return ("on", String::new());
    }
    if !eff.bool("jwt-enabled") {
        return ("off", String::new());
    }
    let mut missing = Vec::new();
    if eff.str("jwt-identity-provider-uri").is_none() {
        missing.push("an identity provider URI");
    }
    if !eff.jwt_has_key() {
        missing.push("a signing key");
    } else if !eff.jwt_key_usable() {
        missing.push("a signing key for an allowed algorithm");
    }
    ("incomplete", missing.join(" and "))
}

#[derive(Template)]
#[template(path = "admin/authentication.html")]
struct MethodsPage {
    chrome: Chrome,
    jwt_status: &'static str,
    jwt_missing: String,
    idp_uri: Option<String>,
    jwt_configured: bool,
    password_effective: bool,
    password_setting: bool,
    password_locked_env: Option<String>,
    sso_admins: i64,
}

pub async fn methods_page(
    State(state): State<AppState>,
    AdminPage(admin): AdminPage,
) -> Result<Response> {
    let eff = state.settings.current();
    let (status, missing) = jwt_status(&eff);
    let locked = state
        .settings
        .view("enable-password-login")
        .filter(|v| v.is_env_setting)
        .map(|v| v.env_var);
    render(&MethodsPage {
        chrome: Chrome::admin(
            "Authentication",
            "auth",
            &admin,
            vec!["lib.js", "authentication.js"],
        ),
        jwt_status: status,
        jwt_missing: missing,
        idp_uri: eff.str("jwt-identity-provider-uri").map(str::to_owned),
        jwt_configured: eff.jwt_configured(),
        password_effective: eff.password_login_enabled(),
        password_setting: eff.bool("enable-password-login"),
        password_locked_env: locked,
        sso_admins: state.store.count_sso_admins().await?,
    })
}

/// One input of the JWT form, bound to a setting by `data-setting`.
pub struct Field {
    pub key: &'static str,
    pub id: String,
    pub label: &'static str,
    pub hint: String,
    /// "text", "url", "int", "bool" or "pem".
    pub kind: &'static str,
    /// The stored value as the input shows it; empty when the default is in effect.
    pub value: String,
    pub placeholder: String,
    pub checked: bool,
    /// The environment variable that fixes this setting, if one does.
    pub locked: Option<String>,
}

fn field(
    views: &[SettingView],
    key: &'static str,
    label: &'static str,
    kind: &'static str,
) -> Field {
    let view = views.iter().find(|v| v.key == key);
    let value = view.map(|v| v.value.clone()).unwrap_or(Value::Null);
    let default = view.map(|v| v.default.clone()).unwrap_or(Value::Null);
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    };
    // A value equal to its default shows as the grey placeholder, so the field reads as
    // "not customised" and clearing it restores the default.
    let shown = if value == default && kind != "bool" {
        String::new()
    } else {
        text(&value)
    };
    Field {
        key,
        id: format!("f-{key}"),
        label,
        hint: view.map(|v| v.description.to_owned()).unwrap_or_default(),
        kind,
        value: shown,
        placeholder: text(&default),
        checked: value.as_bool().unwrap_or(false),
        locked: view.filter(|v| v.is_env_setting).map(|v| v.env_var.clone()),
    }
}

#[derive(Template)]
#[template(path = "admin/jwt.html")]
struct JwtPage {
    chrome: Chrome,
    status: &'static str,
    missing: String,
    enabled: Field,
    idp_uri: Field,
    has_key: bool,
    key_tail: String,
    key_placeholder: String,
    key_locked: Option<String>,
    attributes: Vec<Field>,
    provisioning: Field,
    group_sync: Field,
    mappings_locked: Option<String>,
    algorithms: Vec<(&'static str, bool)>,
    algorithms_initial: String,
    algorithms_locked: Option<String>,
    advanced: Vec<Field>,
    advanced_open: bool,
    page_data: String,
}

pub async fn jwt_page(
    State(state): State<AppState>,
    AdminPage(admin): AdminPage,
) -> Result<Response> {
    let eff = state.settings.current();
    let views = state.settings.list();
    let (status, missing) = jwt_status(&eff);
    let locked = |key: &str| {
        views
            .iter()
            .find(|v| v.key == key && v.is_env_setting)
            .map(|v| v.env_var.clone())
    };
    let key_tail: String = {
        let secret = eff.str("jwt-shared-secret").unwrap_or("");
        let chars: Vec<char> = secret.chars().collect();
        chars[chars.len().saturating_sub(4)..].iter().collect()
    };
    let has_key = eff.str("jwt-shared-secret").is_some();
    let allowed = eff.strings("jwt-algorithms");
    let mut attributes = vec![
        field(&views, "jwt-attribute-email", "Email claim", "text"),
        field(
            &views,
            "jwt-attribute-firstname",
            "First name claim",
            "text",
        ),
        field(&views, "jwt-attribute-lastname", "Last name claim", "text"),
        field(&views, "jwt-attribute-groups", "Groups claim", "text"),
    ];
    for f in &mut attributes {
        f.hint = format!("Default: {}.", f.placeholder);
    }
    let mut advanced = vec![
        field(&views, "jwt-public-keys", "Public keys (PEM)", "pem"),
        field(&views, "jwt-jwks-uri", "JWKS URI", "url"),
        field(&views, "jwt-issuer", "Issuer (iss)", "text"),
        field(&views, "jwt-audience", "Audience (aud)", "text"),
        field(
            &views,
            "jwt-max-age-seconds",
            "Maximum token age (seconds)",
            "int",
        ),
        field(
            &views,
            "jwt-clock-skew-seconds",
            "Clock skew (seconds)",
            "int",
        ),
        field(
            &views,
            "jwt-logout-redirect-uri",
            "Logout redirect URI",
            "url",
        ),
    ];
    advanced[0].placeholder = "-----BEGIN PUBLIC KEY-----\n…\n-----END PUBLIC KEY-----".into();
    advanced[0]
        .hint
        .push_str(" Paste one or more, one after the other.");
    let advanced_open = advanced.iter().any(|f| !f.value.is_empty()) || *allowed != ["HS256"];
    let mut enabled = field(&views, "jwt-enabled", "Enable JWT single sign-on", "bool");
    enabled.hint = "When on and complete, the sign-in page offers “Sign in with SSO”. \
                    Switching it off stops SSO sign-ins at once; password sign-in comes back on for everyone."
        .into();
    let mut idp_uri = field(
        &views,
        "jwt-identity-provider-uri",
        "Identity provider URI",
        "url",
    );
    idp_uri.placeholder = "https://login.example.com/sso/latchkey".into();
    idp_uri.hint =
        "Where “Sign in with SSO” sends people. Latchkey adds ?return_to=<page> so your \
                    identity provider can send them back to the page they wanted."
            .into();
    let mut provisioning = field(
        &views,
        "jwt-user-provisioning-enabled",
        "Create accounts at first sign-in",
        "bool",
    );
    provisioning.hint =
        "When off, only people who already have an account here can sign in through SSO.".into();
    let mut group_sync = field(
        &views,
        "jwt-group-sync",
        "Synchronize group memberships",
        "bool",
    );
    group_sync.hint = "At every SSO sign-in, add and remove the mapped groups to match the token's groups claim. \
                       A token without the claim changes nothing."
        .into();
    let groups = state.store.list_groups().await?;
    let page_data = json!({
        "groups": groups.iter().map(|g| json!({"id": g.id, "name": g.name})).collect::<Vec<_>>(),
        "mappings": eff.get("jwt-group-mappings"),
        "hasKey": has_key,
    });
    render(&JwtPage {
        chrome: Chrome::admin(
            "JWT single sign-on",
            "auth",
            &admin,
            vec!["lib.js", "jwt.js"],
        ),
        status,
        missing,
        enabled,
        idp_uri,
        has_key,
        key_placeholder: if has_key {
            format!("Saved key ending in {key_tail} — leave empty to keep it")
        } else {
            "Press Generate key, or paste the key your identity provider uses".into()
        },
        key_tail,
        key_locked: locked("jwt-shared-secret"),
        attributes,
        provisioning,
        group_sync,
        mappings_locked: locked("jwt-group-mappings"),
        algorithms: KNOWN_ALGORITHMS
            .iter()
            .map(|a| (*a, allowed.iter().any(|x| x == a)))
            .collect(),
        algorithms_initial: json!(allowed).to_string(),
        algorithms_locked: locked("jwt-algorithms"),
        advanced,
        advanced_open,
        page_data: script_json(&page_data),
    })
}
