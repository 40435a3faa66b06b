//! From verified JWT claims to user fields, and the group-sync diff — SPEC §4.4 and §4.5.
//!
//! Everything here is pure: the claims have already passed signature and time checks,
//! and the database work (look-up, provisioning, applying the diff, the last-admin guard,
//! auditing) happens in the caller's transaction. Keeping the decisions pure lets the
//! login path and the dry-run endpoint (`POST /api/sso/jwt/test`) share them exactly.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::domain::email::{Email, EmailError, email_from_claim};
use crate::domain::name;
use crate::sso::verify::Members;

/// The built-in group every user belongs to; membership is never removed (SPEC §2).
pub const ALL_USERS_GROUP_ID: i64 = 1;
/// The built-in Administrators group; membership mirrors `is_superuser` (SPEC §2).
pub const ADMINISTRATORS_GROUP_ID: i64 = 2;

/// Registered JWT claims (RFC 7519 §4.1). They describe the token, not the user, so they
/// are never copied into login attributes (SPEC §4.4; Metabase does the same since 2024).
pub const REGISTERED_CLAIMS: [&str; 7] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// At most this many login attributes per user (SPEC §4.4). Attributes are stored on the
/// user row and returned by the API; a cap stops an IdP (or a stolen key) from bloating
/// every response.
pub const MAX_LOGIN_ATTRIBUTES: usize = 100;

/// Each attribute value's compact JSON serialisation is at most this many bytes.
pub const MAX_ATTRIBUTE_JSON_BYTES: usize = 1024;

/// Which claims hold the user's details: the `jwt-attribute-*` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeNames<'a> {
    pub email: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub groups: &'a str,
}

impl AttributeNames<'static> {
    /// The defaults of SPEC §3 (Metabase's defaults).
    pub const DEFAULT: AttributeNames<'static> = AttributeNames {
        email: "email",
        first_name: "first_name",
        last_name: "last_name",
        groups: "groups",
    };
}

impl Default for AttributeNames<'static> {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a verified token says about its user.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UserFields {
    pub email: Email,
    /// `Some` only when the claim is present and a string; `None` means "leave the stored
    /// value alone" for an existing user and null for a new one (SPEC §4.4).
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Every other non-registered claim, in token order; replaces the stored attributes.
    pub login_attributes: Map<String, Value>,
    /// `None` when the groups claim is missing or of an unusable type: group sync then
    /// changes nothing. `Some(vec![])` is an explicit empty list, which removes every
    /// managed group — the two must not be confused.
    pub groups: Option<Vec<String>>,
}

/// Claim problems, one per stable reason code (`missing_email`, `invalid_email`,
/// `claims_too_large`, `claim_invalid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("missing email")]
    MissingEmail,
    #[error("invalid email")]
    InvalidEmail,
    #[error("claims too large")]
    ClaimsTooLarge,
    /// A name claim holds a string that cannot be stored (a NUL character).
    #[error("claim invalid")]
    ClaimInvalid,
}

impl From<EmailError> for ClaimsError {
    fn from(e: EmailError) -> Self {
        match e {
            EmailError::Missing => ClaimsError::MissingEmail,
            EmailError::Invalid => ClaimsError::InvalidEmail,
        }
    }
}

/// Extracts the user's fields from verified claims.
///
/// The email is checked first, so a token without a usable address reports that (the
/// most useful hint to an IdP admin) even if it is also oversized.
pub fn user_fields(
    claims: &Map<String, Value>,
    names: &AttributeNames<'_>,
) -> Result<UserFields, ClaimsError> {
    let email = email_from_claim(claims.member(names.email))?;
    let first_name = string_claim(claims, names.first_name)?.map(|n| name::cut(&n));
    let last_name = string_claim(claims, names.last_name)?.map(|n| name::cut(&n));
    let groups = groups_from_claim(claims.member(names.groups));
    let login_attributes = login_attributes(claims, names)?;
    Ok(UserFields {
        email,
        first_name,
        last_name,
        login_attributes,
        groups,
    })
}

/// A claim's value when it is a string; any other type counts as absent, because a name
/// of `42` or `{}` is an IdP mapping mistake we should not store as someone's name.
/// A string with a NUL character is refused (`claim_invalid`): PostgreSQL text cannot
/// hold it, and the same token must get the same answer on both backends.
fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, ClaimsError> {
    match claims.member(name).and_then(Value::as_str) {
        Some(s) if s.contains('\0') => Err(ClaimsError::ClaimInvalid),
        s => Ok(s.map(str::to_owned)),
    }
}

/// The groups claim as a list of names (SPEC §4.5): an array keeps its string elements
/// (others are ignored, so one odd entry does not void the whole list), a single string
/// is a one-element list (some IdPs collapse one-element arrays), anything else —
/// including `null` — counts as missing.
pub fn groups_from_claim(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

/// Whether a claim is kept out of login attributes: the registered claims, and the
/// claims already consumed as email, names or groups (under their configured names).
/// Name claims are excluded even when their value is unusable, so a misconfigured IdP
/// does not leak them into attributes under a name the admin thinks is handled.
pub fn is_excluded_claim(key: &str, names: &AttributeNames<'_>) -> bool {
    REGISTERED_CLAIMS.contains(&key)
        || key == names.email
        || key == names.first_name
        || key == names.last_name
        || key == names.groups
}

/// Login attributes: every claim not excluded, capped at [`MAX_LOGIN_ATTRIBUTES`] keys
/// and [`MAX_ATTRIBUTE_JSON_BYTES`] bytes of compact JSON per value. Over a cap the whole
/// login fails (`claims_too_large`) rather than silently dropping data apps may rely on.
pub fn login_attributes(
    claims: &Map<String, Value>,
    names: &AttributeNames<'_>,
) -> Result<Map<String, Value>, ClaimsError> {
    let mut out = Map::new();
    for (key, value) in claims {
        if is_excluded_claim(key, names) {
            continue;
        }
        if out.len() >= MAX_LOGIN_ATTRIBUTES || !json_fits(value, MAX_ATTRIBUTE_JSON_BYTES) {
            return Err(ClaimsError::ClaimsTooLarge);
        }
        out.insert(key.clone(), value.clone());
    }
    Ok(out)
}

/// Whether `value`'s compact JSON is at most `limit` bytes. Serialises into a counting
/// sink that gives up as soon as the budget is spent, so a huge value costs no more than
/// `limit` bytes of work and no allocation.
fn json_fits(value: &Value, limit: usize) -> bool {
    struct Budget(usize);
    impl std::io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            match self.0.checked_sub(buf.len()) {
                Some(left) => {
                    self.0 = left;
                    Ok(buf.len())
                }
                None => Err(std::io::Error::other("over budget")),
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(&mut Budget(limit), value).is_ok()
}

/// The membership changes group sync makes, each list sorted ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupDiff {
    pub add: Vec<i64>,
    pub remove: Vec<i64>,
}

impl GroupDiff {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// The memberships after applying the diff — what the caller ends up with when no
    /// removal is skipped (e.g. by the last-admin guard). Used by the dry run and tests.
    pub fn apply(&self, current: &BTreeSet<i64>) -> BTreeSet<i64> {
        let mut out = current.clone();
        for id in &self.remove {
            out.remove(id);
        }
        out.extend(self.add.iter().copied());
        out
    }
}

/// The group-sync decision (SPEC §4.5), given the user's current group ids and the
/// `wanted`/`managed` sets from [`crate::domain::group_mappings::GroupMappings`]:
///
/// * add = `wanted` − `current`, restricted to `managed` (true by construction, but the
///   function must not grant an unmanaged group whatever it is given);
/// * remove = (`managed` ∩ `current`) − `wanted`.
///
/// All Users (id 1) is never added or removed: membership of it is structural, not
/// synced. Unmanaged groups are never touched, so hand-made memberships survive. The
/// last-admin guard needs the database and is the caller's job.
pub fn group_diff(
    current: &BTreeSet<i64>,
    wanted: &BTreeSet<i64>,
    managed: &BTreeSet<i64>,
) -> GroupDiff {
    let add = wanted
        .iter()
        .copied()
        .filter(|id| *id != ALL_USERS_GROUP_ID && managed.contains(id) && !current.contains(id))
        .collect();
    let remove = current
        .iter()
        .copied()
        .filter(|id| *id != ALL_USERS_GROUP_ID && managed.contains(id) && !wanted.contains(id))
        .collect();
    // BTreeSet iteration is ascending, so both lists come out sorted.
    GroupDiff { add, remove }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("test claims must be an object, got {other}"),
        }
    }

    fn fields(v: Value) -> Result<UserFields, ClaimsError> {
        user_fields(&claims(v), &AttributeNames::DEFAULT)
    }

    fn set(v: &[i64]) -> BTreeSet<i64> {
        v.iter().copied().collect()
    }

    // --- email ------------------------------------------------------------------------

    #[test]
    fn email_is_required_and_lowered() {
        let f = fields(json!({"email": "Ann@Example.COM", "iat": 1})).unwrap();
        assert_eq!(f.email.as_str(), "ann@example.com");
        assert_eq!(fields(json!({"iat": 1})), Err(ClaimsError::MissingEmail));
        assert_eq!(
            fields(json!({"email": null})),
            Err(ClaimsError::MissingEmail)
        );
        assert_eq!(fields(json!({"email": ""})), Err(ClaimsError::MissingEmail));
        assert_eq!(
            fields(json!({"email": "nope"})),
            Err(ClaimsError::InvalidEmail)
        );
        assert_eq!(
            fields(json!({"email": ["a@b.co"]})),
            Err(ClaimsError::InvalidEmail)
        );
        assert_eq!(fields(json!({"email": 7})), Err(ClaimsError::InvalidEmail));
        assert_eq!(
            fields(json!({"email": {"v": "a@b.co"}})),
            Err(ClaimsError::InvalidEmail)
        );
    }

    #[test]
    fn email_error_reported_before_size_error() {
        let mut m = Map::new();
        for i in 0..200 {
            m.insert(format!("k{i}"), json!(i));
        }
        assert_eq!(
            user_fields(&m, &AttributeNames::DEFAULT),
            Err(ClaimsError::MissingEmail)
        );
    }

    #[test]
    fn configured_attribute_names_are_used() {
        let names = AttributeNames {
            email: "mail",
            first_name: "given",
            last_name: "family",
            groups: "roles",
        };
        let c = claims(json!({
            "mail": "x@y.zz", "given": "Ada", "family": "Lovelace", "roles": ["r1"],
            "email": "other@y.zz", "first_name": "Not", "groups": ["g"]
        }));
        let f = user_fields(&c, &names).unwrap();
        assert_eq!(f.email.as_str(), "x@y.zz");
        assert_eq!(f.first_name.as_deref(), Some("Ada"));
        assert_eq!(f.last_name.as_deref(), Some("Lovelace"));
        assert_eq!(f.groups, Some(vec!["r1".to_string()]));
        // The default-named claims are ordinary attributes under this configuration.
        assert_eq!(
            Value::Object(f.login_attributes),
            json!({"email": "other@y.zz", "first_name": "Not", "groups": ["g"]})
        );
    }

    // --- names ------------------------------------------------------------------------

    #[test]
    fn names_present_as_strings_are_taken() {
        let f = fields(json!({"email": "a@b.co", "first_name": "Ann", "last_name": ""})).unwrap();
        assert_eq!(f.first_name.as_deref(), Some("Ann"));
        assert_eq!(f.last_name.as_deref(), Some(""));
    }

    #[test]
    fn names_missing_or_non_string_are_absent_and_not_attributes() {
        let f = fields(json!({"email": "a@b.co"})).unwrap();
        assert_eq!((f.first_name, f.last_name), (None, None));
        for bad in [
            json!(null),
            json!(1),
            json!(true),
            json!(["Ann"]),
            json!({"n": "Ann"}),
        ] {
            let f = fields(
                json!({"email": "a@b.co", "first_name": bad.clone(), "last_name": bad.clone()}),
            )
            .unwrap();
            assert_eq!(f.first_name, None, "{bad}");
            assert_eq!(f.last_name, None, "{bad}");
            assert!(
                f.login_attributes.is_empty(),
                "{bad} leaked into attributes"
            );
        }
    }

    #[test]
    fn names_with_a_nul_character_are_claim_invalid() {
        assert_eq!(
            fields(json!({"email": "a@b.co", "first_name": "a\u{0}b"})),
            Err(ClaimsError::ClaimInvalid)
        );
        assert_eq!(
            fields(json!({"email": "a@b.co", "last_name": "\u{0}"})),
            Err(ClaimsError::ClaimInvalid)
        );
        // Elsewhere a NUL is only data: attributes are stored as escaped JSON text.
        assert!(fields(json!({"email": "a@b.co", "note": "a\u{0}b"})).is_ok());
    }

    // --- login attributes -------------------------------------------------------------

    #[test]
    fn attributes_exclude_registered_and_consumed_claims() {
        let f = fields(json!({
            "iss": "idp", "sub": "42", "aud": "latchkey", "exp": 2, "nbf": 0, "iat": 1, "jti": "j",
            "email": "a@b.co", "first_name": "A", "last_name": "B", "groups": ["g"],
            "department": "eng", "level": 3, "tags": ["x", "y"], "meta": {"k": null}
        }))
        .unwrap();
        assert_eq!(
            Value::Object(f.login_attributes.clone()),
            json!({"department": "eng", "level": 3, "tags": ["x", "y"], "meta": {"k": null}})
        );
        // Token order is kept (preserve_order).
        let keys: Vec<&str> = f.login_attributes.keys().map(String::as_str).collect();
        assert_eq!(keys, ["department", "level", "tags", "meta"]);
    }

    #[test]
    fn non_registered_look_alikes_are_kept() {
        let f = fields(json!({"email": "a@b.co", "ISS": 1, "subject": 2, "exp_": 3, "events": {}}))
            .unwrap();
        assert_eq!(f.login_attributes.len(), 4);
    }

    #[test]
    fn exactly_100_attributes_allowed_101_rejected() {
        let mut m = claims(json!({"email": "a@b.co", "iat": 1, "groups": [], "first_name": "x"}));
        for i in 0..MAX_LOGIN_ATTRIBUTES {
            m.insert(format!("attr{i}"), json!(i));
        }
        let f = user_fields(&m, &AttributeNames::DEFAULT).unwrap();
        assert_eq!(f.login_attributes.len(), 100);
        m.insert("one_more".into(), json!(true));
        assert_eq!(
            user_fields(&m, &AttributeNames::DEFAULT),
            Err(ClaimsError::ClaimsTooLarge)
        );
    }

    #[test]
    fn value_of_exactly_1024_bytes_allowed_1025_rejected() {
        // A JSON string of n chars serialises to n + 2 bytes (the quotes).
        let at_limit = "v".repeat(MAX_ATTRIBUTE_JSON_BYTES - 2);
        let f = fields(json!({"email": "a@b.co", "big": at_limit})).unwrap();
        assert_eq!(f.login_attributes.len(), 1);
        let over = "v".repeat(MAX_ATTRIBUTE_JSON_BYTES - 1);
        assert_eq!(
            fields(json!({"email": "a@b.co", "big": over})),
            Err(ClaimsError::ClaimsTooLarge)
        );
    }

    #[test]
    fn value_size_is_measured_as_compact_escaped_json() {
        // 300 newlines are 300 chars but 602 bytes of JSON ("\n" escapes); 600 are 1202.
        assert!(fields(json!({"email": "a@b.co", "s": "\n".repeat(300)})).is_ok());
        assert_eq!(
            fields(json!({"email": "a@b.co", "s": "\n".repeat(600)})),
            Err(ClaimsError::ClaimsTooLarge)
        );
        // Nested values count in full.
        let nested = json!({"a": ["x".repeat(600), "y".repeat(600)]});
        assert_eq!(
            fields(json!({"email": "a@b.co", "n": nested})),
            Err(ClaimsError::ClaimsTooLarge)
        );
    }

    #[test]
    fn oversized_excluded_claims_do_not_count() {
        let big = "g".repeat(5000);
        let f = fields(json!({"email": "a@b.co", "groups": [big.clone()], "first_name": big.clone(), "sub": big})).unwrap();
        assert!(f.login_attributes.is_empty());
    }

    #[test]
    fn json_fits_boundaries() {
        assert!(json_fits(&json!(null), 4));
        assert!(!json_fits(&json!(null), 3));
        assert!(json_fits(&json!({"a": 1}), 7));
        assert!(!json_fits(&json!({"a": 1}), 6));
    }

    // --- groups claim -----------------------------------------------------------------

    #[test]
    fn groups_claim_shapes() {
        let g = |v: Value| {
            fields(json!({"email": "a@b.co", "groups": v}))
                .unwrap()
                .groups
        };
        assert_eq!(
            g(json!(["a", "b"])),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(g(json!("solo")), Some(vec!["solo".to_string()]));
        assert_eq!(g(json!([])), Some(vec![]));
        assert_eq!(
            g(json!(["a", 1, null, ["b"], {"c": 1}, "d"])),
            Some(vec!["a".to_string(), "d".to_string()])
        );
        assert_eq!(g(json!([1, 2])), Some(vec![]));
        assert_eq!(g(json!({"a": 1})), None);
        assert_eq!(g(json!(3)), None);
        assert_eq!(g(json!(true)), None);
        assert_eq!(g(json!(null)), None);
        assert_eq!(fields(json!({"email": "a@b.co"})).unwrap().groups, None);
    }

    #[test]
    fn user_fields_serialise_with_plain_email() {
        let f = fields(json!({"email": "A@B.CO", "k": 1, "groups": "g"})).unwrap();
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            json!({"email": "a@b.co", "first_name": null, "last_name": null, "login_attributes": {"k": 1}, "groups": ["g"]})
        );
    }

    #[test]
    fn error_maps_from_email_error() {
        assert_eq!(
            ClaimsError::from(EmailError::Missing),
            ClaimsError::MissingEmail
        );
        assert_eq!(
            ClaimsError::from(EmailError::Invalid),
            ClaimsError::InvalidEmail
        );
    }

    // --- group diff -------------------------------------------------------------------

    #[test]
    fn diff_adds_wanted_and_removes_unwanted_managed() {
        let d = group_diff(&set(&[1, 3, 5, 9]), &set(&[4, 3]), &set(&[3, 4, 5]));
        assert_eq!(
            d,
            GroupDiff {
                add: vec![4],
                remove: vec![5]
            }
        );
        // 9 is unmanaged: kept.
        assert_eq!(d.apply(&set(&[1, 3, 5, 9])), set(&[1, 3, 4, 9]));
    }

    #[test]
    fn diff_lists_are_sorted() {
        let d = group_diff(
            &set(&[1, 10, 8, 6]),
            &set(&[7, 3, 5]),
            &set(&[3, 5, 6, 7, 8, 10]),
        );
        assert_eq!(d.add, vec![3, 5, 7]);
        assert_eq!(d.remove, vec![6, 8, 10]);
    }

    #[test]
    fn diff_never_touches_all_users() {
        let d = group_diff(&set(&[1, 3]), &set(&[]), &set(&[1, 3]));
        assert_eq!(
            d,
            GroupDiff {
                add: vec![],
                remove: vec![3]
            }
        );
        let d = group_diff(&set(&[3]), &set(&[1]), &set(&[1, 3]));
        assert_eq!(
            d,
            GroupDiff {
                add: vec![],
                remove: vec![3]
            }
        );
    }

    #[test]
    fn diff_empty_wanted_removes_all_managed() {
        let d = group_diff(&set(&[1, 2, 3, 4, 7]), &set(&[]), &set(&[2, 3, 4]));
        assert_eq!(
            d,
            GroupDiff {
                add: vec![],
                remove: vec![2, 3, 4]
            }
        );
    }

    #[test]
    fn diff_administrators_handled_like_any_group() {
        let d = group_diff(&set(&[1, 2]), &set(&[]), &set(&[ADMINISTRATORS_GROUP_ID]));
        assert_eq!(d.remove, vec![ADMINISTRATORS_GROUP_ID]);
        let d = group_diff(&set(&[1]), &set(&[2]), &set(&[2]));
        assert_eq!(d.add, vec![ADMINISTRATORS_GROUP_ID]);
    }

    #[test]
    fn diff_never_adds_unmanaged_even_if_wanted() {
        let d = group_diff(&set(&[1]), &set(&[5, 6]), &set(&[5]));
        assert_eq!(d.add, vec![5]);
    }

    #[test]
    fn diff_is_empty_when_in_sync() {
        let d = group_diff(&set(&[1, 3, 4]), &set(&[3, 4]), &set(&[3, 4]));
        assert!(d.is_empty());
        assert_eq!(d, GroupDiff::default());
    }

    #[test]
    fn diff_serialises_as_add_remove() {
        let d = GroupDiff {
            add: vec![3],
            remove: vec![4, 5],
        };
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"add": [3], "remove": [4, 5]})
        );
    }

    fn ids() -> impl Strategy<Value = BTreeSet<i64>> {
        prop::collection::btree_set(1i64..12, 0..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn diff_invariants(current in ids(), wanted_raw in ids(), managed in ids()) {
            // As produced by GroupMappings, wanted ⊆ managed; also test arbitrary wanted.
            for wanted in [wanted_raw.intersection(&managed).copied().collect::<BTreeSet<_>>(), wanted_raw.clone()] {
                let d = group_diff(&current, &wanted, &managed);
                let add: BTreeSet<i64> = d.add.iter().copied().collect();
                let remove: BTreeSet<i64> = d.remove.iter().copied().collect();

                prop_assert!(d.add.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(d.remove.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(add.is_disjoint(&remove));
                prop_assert!(add.iter().chain(&remove).all(|id| managed.contains(id)));
                prop_assert!(!add.contains(&ALL_USERS_GROUP_ID) && !remove.contains(&ALL_USERS_GROUP_ID));
                prop_assert!(add.is_disjoint(&current));
                prop_assert!(remove.is_subset(&current));

                let result = d.apply(&current);
                let without_all = |s: &BTreeSet<i64>| -> BTreeSet<i64> {
                    s.iter().copied().filter(|&id| id != ALL_USERS_GROUP_ID).collect()
                };
                let got: BTreeSet<i64> = result.intersection(&managed).copied().collect();
                let want: BTreeSet<i64> = wanted.intersection(&managed).copied().collect();
                prop_assert_eq!(without_all(&got), without_all(&want));
                // Unmanaged memberships (and All Users) are exactly as before.
                for id in current.union(&result) {
                    if !managed.contains(id) || *id == ALL_USERS_GROUP_ID {
                        prop_assert_eq!(current.contains(id), result.contains(id));
                    }
                }
                // Idempotent: a second sync finds nothing to do.
                prop_assert!(group_diff(&result, &wanted, &managed).is_empty());
            }
        }

        #[test]
        fn diff_with_empty_wanted_removes_every_managed_membership(current in ids(), managed in ids()) {
            let d = group_diff(&current, &BTreeSet::new(), &managed);
            prop_assert!(d.add.is_empty());
            let expected: Vec<i64> = current
                .intersection(&managed)
                .copied()
                .filter(|&id| id != ALL_USERS_GROUP_ID)
                .collect();
            prop_assert_eq!(d.remove, expected);
        }

        #[test]
        fn user_fields_accepts_exactly_what_fits_the_caps(
            allow_big in any::<bool>(),
            extra in prop::collection::vec(("[a-z_]{1,6}", 0usize..1100, any::<char>()), 0..120)
        ) {
            let mut m = claims(json!({"email": "a@b.co"}));
            for (k, len, c) in extra {
                // Mostly small values, so that the key-count cap is reached on its own.
                let len = if allow_big { len } else { len % 50 };
                m.insert(k, Value::String(c.to_string().repeat(len)));
            }
            let names = AttributeNames::DEFAULT;
            let kept: Vec<(&String, &Value)> =
                m.iter().filter(|(k, _)| !is_excluded_claim(k, &names)).collect();
            let fits = kept.len() <= MAX_LOGIN_ATTRIBUTES
                && kept.iter().all(|(_, v)| {
                    serde_json::to_vec(v).is_ok_and(|b| b.len() <= MAX_ATTRIBUTE_JSON_BYTES)
                });
            match user_fields(&m, &names) {
                Ok(f) => {
                    prop_assert!(fits);
                    prop_assert_eq!(f.login_attributes.len(), kept.len());
                    prop_assert!(f.login_attributes.keys().all(|k| !is_excluded_claim(k, &names)));
                }
                Err(e) => {
                    prop_assert!(!fits);
                    prop_assert_eq!(e, ClaimsError::ClaimsTooLarge);
                }
            }
        }
    }

    // --- from the token's claims to the diff ----------------------------------------------

    fn claim_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..20).prop_map(Value::from),
            prop::sample::select(vec!["eng", "ops", "Eng", "sales", "", "admins"])
                .prop_map(|s| Value::String(s.to_owned())),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 12, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// SPEC §4.5 end to end, as the login does it: whatever the groups claim holds,
        /// the sync touches only managed groups (never All Users), and after it the
        /// managed memberships are exactly what the claim's names map to — or unchanged
        /// when the claim is missing or unusable.
        #[test]
        fn any_groups_claim_syncs_exactly_the_mapped_groups(
            claim in prop::option::of(claim_json()),
            current in ids(),
            mapping in prop::collection::btree_map(
                prop::sample::select(vec!["eng", "ops", "Eng", "sales", "admins"]),
                prop::collection::vec(1i64..12, 0..3),
                0..5,
            ),
        ) {
            let mappings = crate::domain::group_mappings::GroupMappings::parse(
                &serde_json::to_value(&mapping).unwrap(),
            )
            .unwrap();
            let names = groups_from_claim(claim.as_ref());
            match (&claim, &names) {
                (Some(Value::String(s)), Some(n)) => prop_assert_eq!(n, &vec![s.clone()]),
                (Some(Value::Array(items)), Some(n)) => {
                    let strings: Vec<String> =
                        items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
                    prop_assert_eq!(n, &strings);
                }
                (_, None) => prop_assert!(!matches!(claim, Some(Value::String(_) | Value::Array(_)))),
                (_, Some(_)) => prop_assert!(false, "a list from {:?}", claim),
            }
            let Some(names) = names else {
                return Ok(());
            };
            let managed = mappings.managed();
            let wanted = mappings.wanted(&names);
            prop_assert!(wanted.is_subset(&managed));
            let diff = group_diff(&current, &wanted, &managed);
            let after = diff.apply(&current);
            let managed_after: BTreeSet<i64> = after
                .iter()
                .copied()
                .filter(|id| managed.contains(id) && *id != ALL_USERS_GROUP_ID)
                .collect();
            let expected: BTreeSet<i64> =
                wanted.iter().copied().filter(|id| *id != ALL_USERS_GROUP_ID).collect();
            prop_assert_eq!(managed_after, expected);
            prop_assert_eq!(
                after.contains(&ALL_USERS_GROUP_ID),
                current.contains(&ALL_USERS_GROUP_ID)
            );
        }

        /// `user_fields` on any claims object: no panic, and what it extracts agrees with
        /// the claims (the email canonical, names only from strings, no excluded claim
        /// among the attributes).
        #[test]
        fn user_fields_is_total_and_faithful(
            claims_map in prop::collection::btree_map(
                prop::sample::select(vec![
                    "email", "first_name", "last_name", "groups", "iss", "sub", "iat", "jti",
                    "dept", "role", "x",
                ]),
                claim_json(),
                0..8,
            ),
            email in prop::option::of(prop_oneof![
                Just("Ada@Example.com".to_owned()),
                "[a-zA-Z0-9.@ ]{0,12}",
                any::<String>(),
            ]),
        ) {
            let mut m: Map<String, Value> =
                claims_map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Some(e) = email {
                m.insert("email".into(), Value::String(e));
            }
            let names = AttributeNames::DEFAULT;
            match user_fields(&m, &names) {
                Ok(f) => {
                    prop_assert_eq!(
                        Some(f.email.as_str().to_owned()),
                        m["email"].as_str().map(str::to_lowercase)
                    );
                    prop_assert_eq!(f.first_name.as_deref(), m.get("first_name").and_then(Value::as_str));
                    prop_assert_eq!(f.last_name.as_deref(), m.get("last_name").and_then(Value::as_str));
                    prop_assert_eq!(f.groups, groups_from_claim(m.get("groups")));
                    for k in f.login_attributes.keys() {
                        prop_assert!(!is_excluded_claim(k, &names));
                        prop_assert_eq!(&f.login_attributes[k], &m[k]);
                    }
                }
                Err(ClaimsError::MissingEmail) => {
                    prop_assert!(matches!(m.get("email"), None | Some(Value::Null))
                        || m["email"] == Value::String(String::new()));
                }
                Err(_) => {}
            }
        }
    }
}
