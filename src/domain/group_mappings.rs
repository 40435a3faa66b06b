//! The `jwt-group-mappings` setting — SPEC §3 and §4.5.
//!
//! Maps a group name as the IdP spells it to the Latchkey group ids it grants, e.g.
//! `{"eng":[3],"ops":[3,4]}`. The parsed form is canonical (ids sorted, duplicates
//! removed) so that saving, comparing and auditing the setting is stable, and so that
//! group sync can work with sets.
//!
//! Whether each id names an existing group is checked by the settings layer, which has
//! the database; this module only checks the shape.

use std::collections::{BTreeMap, BTreeSet};

/// Longest JWT group name accepted as a key, in characters. Names come from the IdP's
/// groups claim, which lives in a token of at most 8 KiB; anything longer is a paste
/// mistake, and a bound keeps the setting (and error messages) small.
pub const MAX_GROUP_NAME_LEN: usize = 255;

/// JWT group name → sorted, de-duplicated Latchkey group ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupMappings(pub BTreeMap<String, Vec<i64>>);

impl GroupMappings {
    /// Parses the setting's JSON value. It must be an object whose values are arrays of
    /// positive integer ids; keys are non-empty strings of at most
    /// [`MAX_GROUP_NAME_LEN`] characters. The error is a sentence for the admin UI /
    /// `validation_failed` message, naming the offending key.
    ///
    /// Floats (even `3.0`), strings (`"3"`), zero, negatives and numbers beyond `i64`
    /// are refused rather than coerced: a mapping that silently granted a different
    /// group than the admin typed would be a privilege bug.
    pub fn parse(v: &serde_json::Value) -> Result<GroupMappings, String> {
        let serde_json::Value::Object(obj) = v else {
            return Err(format!(
                "Group mappings must be a JSON object mapping group names to arrays of group ids, like {{\"eng\": [3]}}; got {}.",
                json_kind(v)
            ));
        };
        let mut out = BTreeMap::new();
        for (name, ids) in obj {
            if name.is_empty() {
                return Err("Group mappings cannot contain an empty group name.".to_string());
            }
            if name.chars().count() > MAX_GROUP_NAME_LEN {
                return Err(format!(
                    "Group name \"{}…\" in the group mappings is longer than {MAX_GROUP_NAME_LEN} characters.",
                    name.chars().take(40).collect::<String>()
                ));
            }
            let serde_json::Value::Array(items) = ids else {
                return Err(format!(
                    "The mapping for group name \"{name}\" must be an array of group ids, like [3]; got {}.",
                    json_kind(ids)
                ));
            };
            let mut set = BTreeSet::new();
            for item in items {
                match item.as_i64() {
                    Some(id) if id > 0 => {
                        set.insert(id);
                    }
                    _ => {
                        return Err(format!(
                            "The mapping for group name \"{name}\" contains {}, which is not a group id (a positive whole number).",
                            brief(item)
                        ));
                    }
                }
            }
            out.insert(name.clone(), set.into_iter().collect());
        }
        Ok(GroupMappings(out))
    }

    /// Every id that appears in any mapping: the groups group sync is allowed to add
    /// *and remove*. Groups outside this set are never touched, so admins can still
    /// manage them by hand.
    pub fn managed(&self) -> BTreeSet<i64> {
        self.0.values().flatten().copied().collect()
    }

    /// The ids the given JWT group names map to. Matching is exact and case-sensitive
    /// (SPEC §4.5): IdPs treat `Eng` and `eng` as different groups, and guessing would
    /// grant access nobody configured.
    pub fn wanted(&self, names: &[String]) -> BTreeSet<i64> {
        names
            .iter()
            .filter_map(|n| self.0.get(n))
            .flatten()
            .copied()
            .collect()
    }

    /// Every id referenced by the setting — what the settings layer must check exists
    /// before saving. Same set as [`GroupMappings::managed`], named for that purpose.
    pub fn all_ids(&self) -> BTreeSet<i64> {
        self.managed()
    }

    /// The setting back as JSON, in canonical form.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, ids)| (k.clone(), serde_json::Value::from(ids.clone())))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A value as an error message shows it: itself when it is short, else its kind (the
/// message must not repeat a megabyte that was sent).
fn brief(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) if s.chars().count() <= 40 => v.to_string(),
        serde_json::Value::String(_)
        | serde_json::Value::Array(_)
        | serde_json::Value::Object(_) => json_kind(v).to_owned(),
        _ => v.to_string(),
    }
}

/// A short noun for a JSON value's type, for error sentences.
fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn set(v: &[i64]) -> BTreeSet<i64> {
        v.iter().copied().collect()
    }

    #[test]
    fn parses_the_documented_example() {
        let m = GroupMappings::parse(&json!({"eng": [3], "ops": [3, 4]})).unwrap();
        assert_eq!(m.0.get("eng"), Some(&vec![3]));
        assert_eq!(m.0.get("ops"), Some(&vec![3, 4]));
        assert_eq!(m.managed(), set(&[3, 4]));
        assert_eq!(m.all_ids(), set(&[3, 4]));
    }

    #[test]
    fn empty_object_is_empty_mapping() {
        let m = GroupMappings::parse(&json!({})).unwrap();
        assert!(m.is_empty());
        assert_eq!(m, GroupMappings::default());
        assert!(m.managed().is_empty());
    }

    #[test]
    fn ids_sorted_and_deduplicated() {
        let m = GroupMappings::parse(&json!({"x": [9, 3, 9, 1, 3]})).unwrap();
        assert_eq!(m.0["x"], vec![1, 3, 9]);
        assert_eq!(m.to_json(), json!({"x": [1, 3, 9]}));
    }

    #[test]
    fn empty_id_list_allowed() {
        let m = GroupMappings::parse(&json!({"x": []})).unwrap();
        assert_eq!(m.0["x"], Vec::<i64>::new());
        assert!(m.managed().is_empty());
    }

    #[test]
    fn non_object_rejected() {
        for v in [
            json!(null),
            json!([]),
            json!([["eng", [3]]]),
            json!("{}"),
            json!(3),
            json!(true),
        ] {
            let err = GroupMappings::parse(&v).unwrap_err();
            assert!(err.contains("JSON object"), "{v}: {err}");
        }
    }

    #[test]
    fn non_array_value_rejected() {
        for v in [
            json!({"eng": 3}),
            json!({"eng": "3"}),
            json!({"eng": {"id": 3}}),
            json!({"eng": null}),
        ] {
            let err = GroupMappings::parse(&v).unwrap_err();
            assert!(
                err.contains("\"eng\"") && err.contains("must be an array"),
                "{v}: {err}"
            );
        }
    }

    #[test]
    fn bad_ids_rejected() {
        for bad in [
            json!(0),
            json!(-1),
            json!(2.5),
            json!(3.0),
            json!("3"),
            json!(null),
            json!([3]),
            json!(true),
            json!(u64::MAX),
        ] {
            let v = json!({"eng": [1, bad.clone()]});
            let err = GroupMappings::parse(&v).unwrap_err();
            assert!(err.contains("not a group id"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_error_shows_a_short_value_and_only_the_kind_of_a_long_one() {
        let err = GroupMappings::parse(&json!({"eng": ["3"]})).unwrap_err();
        assert!(err.contains(r#"contains "3", which"#), "{err}");
        let err = GroupMappings::parse(&json!({"eng": [-7]})).unwrap_err();
        assert!(err.contains("contains -7, which"), "{err}");
        let long = "x".repeat(100_000);
        for (bad, kind) in [
            (json!(long), "a string"),
            (json!([long]), "an array"),
            (json!({"k": long}), "an object"),
        ] {
            let err = GroupMappings::parse(&json!({"eng": [bad]})).unwrap_err();
            assert!(err.contains(&format!("contains {kind}, which")), "{err}");
            assert!(err.len() < 200, "{} bytes", err.len());
        }
    }

    #[test]
    fn largest_i64_id_accepted() {
        let m = GroupMappings::parse(&json!({"g": [i64::MAX]})).unwrap();
        assert_eq!(m.managed(), set(&[i64::MAX]));
    }

    #[test]
    fn key_rules() {
        assert!(
            GroupMappings::parse(&json!({"": [3]}))
                .unwrap_err()
                .contains("empty")
        );
        let long = "n".repeat(MAX_GROUP_NAME_LEN + 1);
        let err = GroupMappings::parse(&json!({ long: [3] })).unwrap_err();
        assert!(err.contains("longer than 255"), "{err}");
        assert!(err.len() < 200, "message must not echo the whole key");
        let max = "é".repeat(MAX_GROUP_NAME_LEN);
        assert!(GroupMappings::parse(&json!({ max: [3] })).is_ok());
        assert!(GroupMappings::parse(&json!({" Eng Team ": [3], "a/b": [4]})).is_ok());
    }

    #[test]
    fn wanted_is_exact_and_case_sensitive() {
        let m = GroupMappings::parse(&json!({"eng": [3], "ops": [3, 4], "Admins": [2]})).unwrap();
        assert_eq!(m.wanted(&names(&["eng"])), set(&[3]));
        assert_eq!(m.wanted(&names(&["eng", "ops"])), set(&[3, 4]));
        assert_eq!(
            m.wanted(&names(&["ENG", "Eng", " eng", "admins"])),
            set(&[])
        );
        assert_eq!(m.wanted(&names(&["Admins", "unknown"])), set(&[2]));
        assert_eq!(m.wanted(&[]), set(&[]));
        assert_eq!(m.managed(), set(&[2, 3, 4]));
    }

    #[test]
    fn serialises_as_plain_object() {
        let m = GroupMappings::parse(&json!({"b": [2], "a": [1]})).unwrap();
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"a": [1], "b": [2]})
        );
    }

    #[test]
    fn round_trips_through_json() {
        let m = GroupMappings::parse(&json!({"x": [5, 4], "y": [4]})).unwrap();
        assert_eq!(GroupMappings::parse(&m.to_json()).unwrap(), m);
    }

    // --- properties -----------------------------------------------------------------------

    /// Mostly mapping-shaped objects, with the mistakes admins make: floats, strings,
    /// zero, negatives, huge numbers, empty and overlong names, non-arrays.
    fn mappingish() -> impl Strategy<Value = serde_json::Value> {
        let id = prop_oneof![
            6 => (1i64..20).prop_map(serde_json::Value::from),
            1 => (-3i64..=0).prop_map(serde_json::Value::from),
            1 => Just(json!(3.0)),
            1 => Just(json!("3")),
            1 => Just(json!(u64::MAX)),
            1 => Just(json!(i64::MAX)),
            1 => Just(json!(null)),
        ];
        let ids = prop_oneof![
            8 => prop::collection::vec(id, 0..5).prop_map(serde_json::Value::Array),
            1 => Just(json!(3)),
            1 => Just(json!({"3": true})),
        ];
        let name = prop_oneof![
            8 => "[a-zA-Z0-9 _.-]{1,12}",
            1 => Just(String::new()),
            1 => Just("g".repeat(MAX_GROUP_NAME_LEN)),
            1 => Just("g".repeat(MAX_GROUP_NAME_LEN + 1)),
            1 => any::<String>(),
        ];
        prop_oneof![
            9 => prop::collection::btree_map(name, ids, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            1 => Just(json!([["eng", [3]]])),
            1 => any::<String>().prop_map(serde_json::Value::String),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn parse_is_total_canonical_and_round_trips(v in mappingish()) {
            if let Ok(m) = GroupMappings::parse(&v) {
                for (name, ids) in &m.0 {
                    prop_assert!(!name.is_empty() && name.chars().count() <= MAX_GROUP_NAME_LEN);
                    prop_assert!(ids.iter().all(|&id| id > 0));
                    prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
                }
                // Exactly the object's keys, each with exactly the ids it listed.
                let obj = v.as_object().unwrap();
                prop_assert_eq!(m.0.len(), obj.len());
                for (name, ids) in obj {
                    let listed: BTreeSet<i64> =
                        ids.as_array().unwrap().iter().map(|i| i.as_i64().unwrap()).collect();
                    prop_assert_eq!(&m.0[name].iter().copied().collect::<BTreeSet<_>>(), &listed);
                }
                prop_assert_eq!(GroupMappings::parse(&m.to_json()), Ok(m.clone()));
                prop_assert_eq!(serde_json::to_value(&m).unwrap(), m.to_json());
            }
        }

        #[test]
        fn wanted_is_within_managed(
            v in mappingish(),
            claim in prop::collection::vec("[a-zA-Z0-9 _.-]{1,12}", 0..6),
        ) {
            if let Ok(m) = GroupMappings::parse(&v) {
                let managed = m.managed();
                prop_assert!(m.wanted(&claim).is_subset(&managed));
                prop_assert_eq!(m.all_ids(), managed.clone());
                let every_name: Vec<String> = m.0.keys().cloned().collect();
                prop_assert_eq!(m.wanted(&every_name), managed);
                // Case-sensitive: an upper-cased claim only matches names that already were.
                let upper: Vec<String> = claim.iter().map(|c| c.to_uppercase()).collect();
                for id in m.wanted(&upper) {
                    prop_assert!(m.0.iter().any(|(k, ids)| upper.contains(k) && ids.contains(&id)));
                }
            }
        }
    }
}
