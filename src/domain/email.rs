//! E-mail addresses as Latchkey stores and compares them — SPEC §2 and §4.4.
//!
//! An address is the key users are found by, so it has exactly one canonical form:
//! lower-cased, otherwise exactly as given. We check plausibility, not RFC 5322: the
//! address comes from the organisation's own IdP (or an admin), and the goal is to refuse
//! what is clearly not an address or could cause trouble downstream (header injection,
//! display confusion, quoted forms that compare differently), not to second-guess mail
//! servers.

use std::fmt;

/// A plausible, lower-cased e-mail address. Only [`Email::parse`] builds one, so holding
/// an `Email` proves the checks passed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

/// Why a value is not an address. Two cases only, because they map to the two stable
/// reason codes `missing_email` and `invalid_email`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email missing")]
    Missing,
    #[error("email invalid")]
    Invalid,
}

/// Longest address in octets (RFC 5321 path limit minus the angle brackets). Octets, not
/// characters, so a non-ASCII address also fits any byte-limited store.
pub const MAX_EMAIL_LEN: usize = 254;
/// Shortest possible plausible address: `a@b.c` is five, but we keep the documented
/// floor of three and let the structural rules do the rest.
pub const MIN_EMAIL_LEN: usize = 3;
/// Longest local part in octets (RFC 5321).
pub const MAX_LOCAL_LEN: usize = 64;

/// Characters that only appear in quoted local parts, display names, address lists or
/// domain literals — none of which we support, and all of which would let two spellings
/// of one mailbox (or an address smuggling a second one) through.
const FORBIDDEN: &[char] = &['<', '>', '(', ')', ',', ';', ':', '\\', '"', '[', ']'];

impl Email {
    /// Checks plausibility and lower-cases. No trimming: an address with surrounding
    /// spaces is a sign of a broken IdP mapping and is refused rather than silently
    /// repaired, so the same user never ends up under two spellings.
    pub fn parse(s: &str) -> Result<Email, EmailError> {
        if s.is_empty() {
            return Err(EmailError::Missing);
        }
        // Lower-casing shrinks a character's bytes at most threefold (the Kelvin sign to `k`):
        // anything longer cannot be an address, and is not worth the checks below.
        if s.len() > 3 * MAX_EMAIL_LEN {
            return Err(EmailError::Invalid);
        }
        let lowered = if s.is_ascii() {
            // The usual case, byte by byte: lower-casing ASCII changes letters only, so the
            // lowered address has the same bad characters as the input.
            if s.bytes().any(is_bad_ascii) {
                return Err(EmailError::Invalid);
            }
            s.to_ascii_lowercase()
        } else {
            // Reject on the raw input first: lower-casing must not be what makes it valid.
            if s.chars().any(is_bad_char) || !is_one_spelling(s) {
                return Err(EmailError::Invalid);
            }
            let lowered = s.to_lowercase();
            if lowered.chars().any(is_bad_char) {
                return Err(EmailError::Invalid);
            }
            lowered
        };
        if !(MIN_EMAIL_LEN..=MAX_EMAIL_LEN).contains(&lowered.len()) {
            return Err(EmailError::Invalid);
        }
        let mut parts = lowered.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(EmailError::Invalid);
        };
        if local.is_empty() || local.len() > MAX_LOCAL_LEN {
            return Err(EmailError::Invalid);
        }
        // A domain with at least two labels (no bare hosts like `localhost`), none empty —
        // which also rules out leading, trailing and doubled dots.
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return Err(EmailError::Invalid);
        }
        Ok(Email(lowered))
    }

    /// The canonical (lower-cased) address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical address, by value.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// Whitespace of any kind, C0/DEL/C1 controls (NUL included), invisible format characters
/// and the structural characters of quoted or bracketed address syntax.
fn is_bad_char(c: char) -> bool {
    c.is_whitespace() || c.is_control() || is_invisible_format(c) || FORBIDDEN.contains(&c)
}

/// [`is_bad_char`] for an ASCII byte: the controls, the space (the only ASCII whitespace that
/// is not a control) and [`FORBIDDEN`].
fn is_bad_ascii(b: u8) -> bool {
    matches!(
        b,
        0..=b' '
            | 0x7f
            | b'<'
            | b'>'
            | b'('
            | b')'
            | b','
            | b';'
            | b':'
            | b'\\'
            | b'"'
            | b'['
            | b']'
    )
}

/// Characters that render as nothing or reorder text: an address containing one looks like
/// another account's address but is a different string. The format characters (category
/// Cf: zero-width spaces, joiners, bidi overrides, the BOM, soft hyphen, tag characters),
/// the variation selectors and the combining grapheme joiner, and the letters that are drawn
/// blank (the Hangul fillers, the blank Braille pattern, the Khmer inherent vowels).
pub(crate) fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{2800}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0001}' | '\u{E0020}'..='\u{E007F}' | '\u{E0100}'..='\u{E01EF}')
}

/// Whether a non-ASCII address is written in the one form that compares as itself: in
/// NFKC, so that no fullwidth letter, mathematical letter, ligature, Kelvin sign or accent
/// written as a separate mark stands for the plain character it looks like; with no
/// non-ASCII character that lower-cases into ASCII (the Turkish `İ` becomes `i` and a dot),
/// so that lower-casing cannot turn it into another account's address; and with no combining
/// mark on an ASCII character (`i` and a dot above, which NFKC keeps apart, looks like `i`).
fn is_one_spelling(s: &str) -> bool {
    use unicode_normalization::char::is_combining_mark;
    let mut after_ascii = false;
    for c in s.chars() {
        if (after_ascii && is_combining_mark(c))
            || (!c.is_ascii() && c.to_lowercase().any(|l| l.is_ascii()))
        {
            return false;
        }
        after_ascii = c.is_ascii();
    }
    unicode_normalization::is_nfkc(s)
}

/// Reads the address out of a claim value (SPEC §4.4: "required, a string").
///
/// Absent and `null` are *missing* (the IdP did not send one); a number, bool, array or
/// object is *invalid* (it sent something, just not an address) — the distinction gives
/// the IdP admin the right hint.
pub fn email_from_claim(v: Option<&serde_json::Value>) -> Result<Email, EmailError> {
    match v {
        None | Some(serde_json::Value::Null) => Err(EmailError::Missing),
        Some(serde_json::Value::String(s)) => Email::parse(s),
        Some(_) => Err(EmailError::Invalid),
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Email {
    type Err = EmailError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Email::parse(s)
    }
}

/// Serialised as the plain address string, the shape every API response uses.
impl serde::Serialize for Email {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Deserialising validates, so an `Email` field in a request body can never hold an
/// unchecked or non-canonical address.
impl<'de> serde::Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
        Email::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn invisible_format_characters_are_refused() {
        for bad in [
            "ad\u{200B}min@example.com",
            "admin\u{202E}@example.com",
            "\u{FEFF}admin@example.com",
            "ad\u{00AD}min@example.com",
            // Letters drawn blank, and selectors and joiners that change nothing visible.
            "admin\u{3164}@example.com",
            "admin\u{2800}@example.com",
            "admin\u{FFA0}@example.com",
            "a\u{FE0F}dmin@example.com",
            "a\u{034F}dmin@example.com",
        ] {
            assert_eq!(
                super::Email::parse(bad),
                Err(super::EmailError::Invalid),
                "{bad:?}"
            );
        }
    }

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn the_ascii_check_refuses_what_the_character_check_refuses() {
        for b in 0..=0x7f_u8 {
            assert_eq!(is_bad_ascii(b), is_bad_char(char::from(b)), "byte {b:#04x}");
        }
    }

    fn ok(s: &str) -> String {
        Email::parse(s)
            .map(Email::into_string)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn invalid(s: &str) {
        assert_eq!(
            Email::parse(s),
            Err(EmailError::Invalid),
            "{s:?} should be invalid"
        );
    }

    #[test]
    fn ordinary_addresses_accepted() {
        assert_eq!(ok("a@b.co"), "a@b.co");
        assert_eq!(
            ok("first.last+tag@mail.example.com"),
            "first.last+tag@mail.example.com"
        );
        assert_eq!(ok("o'brien@example.ie"), "o'brien@example.ie");
        assert_eq!(
            ok("user_1-x@sub-domain.example.org"),
            "user_1-x@sub-domain.example.org"
        );
    }

    #[test]
    fn upper_case_is_lowered() {
        assert_eq!(ok("Alice.Smith@Example.COM"), "alice.smith@example.com");
        assert_eq!(Email::parse("BOB@X.IO"), Email::parse("bob@x.io"));
    }

    #[test]
    fn non_ascii_lowered_too() {
        assert_eq!(ok("ÉLODIE@exemple.fr"), "élodie@exemple.fr");
        assert_eq!(ok("用户@例子.广告"), "用户@例子.广告");
        assert_eq!(ok("straße@example.de"), "straße@example.de");
    }

    #[test]
    fn look_alike_spellings_of_another_address_are_refused() {
        for bad in [
            // The Kelvin sign lower-cases to the ASCII k of kate@example.com.
            "\u{212A}ate@example.com",
            // The Turkish dotted capital I lower-cases to i and a combining dot.
            "\u{0130}nfo@example.com",
            // Fullwidth and mathematical letters, a ligature: compatibility forms.
            "\u{FF55}ser1@example.com",
            "user@\u{FF45}xample.com",
            "\u{1D41A}dmin@example.com",
            "\u{FB01}nance@example.com",
            // An accent written as a separate mark (NFD) is another spelling of élodie.
            "e\u{0301}lodie@exemple.fr",
            // A mark that nothing composes with, on an ASCII letter: it looks like info@.
            "i\u{0307}nfo@example.com",
        ] {
            invalid(bad);
        }
        // The same addresses written plainly are fine.
        assert_eq!(ok("kate@example.com"), "kate@example.com");
        assert_eq!(ok("\u{00E9}lodie@exemple.fr"), "élodie@exemple.fr");
    }

    #[test]
    fn empty_is_missing() {
        assert_eq!(Email::parse(""), Err(EmailError::Missing));
    }

    #[test]
    fn whitespace_anywhere_is_invalid_not_trimmed() {
        for s in [
            " a@b.co",
            "a@b.co ",
            "a b@c.co",
            "a@b .co",
            "\ta@b.co",
            "a@b.co\n",
            " ",
            "a@b.co\u{00A0}",
            "a\u{2003}b@c.co",
        ] {
            invalid(s);
        }
    }

    #[test]
    fn control_characters_and_nul_invalid() {
        for s in [
            "a\0@b.co",
            "a@b.co\0",
            "\0",
            "a\u{7F}@b.co",
            "a\u{85}@b.co",
            "a\u{1B}@b.co",
            "a@b.co\r\nBcc: x@y.z",
        ] {
            invalid(s);
        }
    }

    #[test]
    fn at_sign_must_appear_exactly_once() {
        invalid("ab.co");
        invalid("a@b@c.co");
        invalid("@b.co");
        invalid("a@");
        invalid("@");
    }

    #[test]
    fn domain_needs_an_inner_dot_and_no_empty_labels() {
        invalid("a@localhost");
        invalid("a@.b.co");
        invalid("a@b.co.");
        invalid("a@b..co");
        invalid("a@.");
        assert_eq!(ok("a@b.c"), "a@b.c");
    }

    #[test]
    fn structural_characters_invalid() {
        for c in ['<', '>', '(', ')', ',', ';', ':', '\\', '"', '[', ']'] {
            invalid(&format!("a{c}b@c.co"));
            invalid(&format!("ab@c{c}d.co"));
        }
        invalid("Alice <alice@example.com>");
        invalid("a@[127.0.0.1]");
        invalid("\"a b\"@c.co");
        invalid("a@b.co,c@d.co");
    }

    #[test]
    fn length_limits() {
        // local part: 64 ok, 65 not
        let local64 = "l".repeat(64);
        assert!(Email::parse(&format!("{local64}@b.co")).is_ok());
        invalid(&format!("{local64}l@b.co"));
        // whole address: 254 ok, 255 not
        let domain = |n: usize| format!("{}.co", "d".repeat(n));
        let at254 = format!("a@{}", domain(254 - 2 - 3));
        assert_eq!(at254.len(), 254);
        assert!(Email::parse(&at254).is_ok());
        invalid(&format!("a@{}", domain(254 - 2 - 3 + 1)));
        // too short
        invalid("a@");
        invalid("ab");
    }

    #[test]
    fn length_counts_octets() {
        // 64 two-byte characters are 128 octets: over the local-part limit.
        invalid(&format!("{}@b.co", "é".repeat(64)));
        assert!(Email::parse(&format!("{}@b.co", "é".repeat(32))).is_ok());
    }

    #[test]
    fn claim_absent_or_null_is_missing() {
        assert_eq!(email_from_claim(None), Err(EmailError::Missing));
        assert_eq!(
            email_from_claim(Some(&json!(null))),
            Err(EmailError::Missing)
        );
        assert_eq!(email_from_claim(Some(&json!(""))), Err(EmailError::Missing));
    }

    #[test]
    fn claim_of_other_types_is_invalid() {
        for v in [
            json!(42),
            json!(1.5),
            json!(true),
            json!(["a@b.co"]),
            json!({"email": "a@b.co"}),
            json!([]),
        ] {
            assert_eq!(email_from_claim(Some(&v)), Err(EmailError::Invalid), "{v}");
        }
    }

    #[test]
    fn claim_string_is_parsed() {
        assert_eq!(
            email_from_claim(Some(&json!("A@B.CO"))).unwrap().as_str(),
            "a@b.co"
        );
        assert_eq!(
            email_from_claim(Some(&json!("nope"))),
            Err(EmailError::Invalid)
        );
        assert_eq!(
            email_from_claim(Some(&json!("a\u{0}@b.co"))),
            Err(EmailError::Invalid)
        );
    }

    #[test]
    fn serialises_as_plain_string() {
        let e = Email::parse("X@Y.ZZ").unwrap();
        assert_eq!(serde_json::to_value(&e).unwrap(), json!("x@y.zz"));
        assert_eq!(e.to_string(), "x@y.zz");
        assert_eq!(e.domain(), "y.zz");
    }

    #[test]
    fn deserialising_validates_and_lowers() {
        let e: Email = serde_json::from_value(json!("Q@W.EE")).unwrap();
        assert_eq!(e.as_str(), "q@w.ee");
        assert!(serde_json::from_value::<Email>(json!("not an email")).is_err());
        assert!(serde_json::from_value::<Email>(json!(5)).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn parse_is_idempotent_and_canonical(s in any::<String>()) {
            if let Ok(e) = Email::parse(&s) {
                prop_assert_eq!(Email::parse(e.as_str()), Ok(e.clone()));
                prop_assert_eq!(e.as_str().to_lowercase(), e.as_str());
                prop_assert!(e.as_str().len() <= MAX_EMAIL_LEN);
                prop_assert_eq!(e.as_str().matches('@').count(), 1);
                prop_assert!(!e.as_str().chars().any(|c| c.is_whitespace() || c.is_control()));
            }
        }

        #[test]
        fn case_does_not_matter(local in "[A-Za-z0-9._+-]{1,20}", domain in "[A-Za-z0-9-]{1,10}\\.[A-Za-z]{2,6}") {
            let raw = format!("{local}@{domain}");
            let lower = raw.to_lowercase();
            prop_assert_eq!(Email::parse(&raw), Email::parse(&lower));
            prop_assert!(Email::parse(&raw).is_ok());
        }
    }

    /// Address-shaped strings built from the pieces that make addresses tricky: quotes,
    /// brackets, several `@`, dots in odd places, whitespace, controls, invisible format
    /// characters, non-ASCII letters whose lower case differs in length.
    fn addressish() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "a",
            "Z",
            "0",
            ".",
            "..",
            "+",
            "-",
            "_",
            "'",
            "@",
            "@@",
            "\"",
            "<",
            ">",
            "(",
            ")",
            ",",
            ";",
            ":",
            "\\",
            "[",
            "]",
            " ",
            "\t",
            "\n",
            "\r",
            "\0",
            "\u{7F}",
            "\u{85}",
            "\u{A0}",
            "\u{200B}",
            "\u{202E}",
            "\u{FEFF}",
            "\u{AD}",
            "\u{E0041}",
            "\u{3000}",
            "É",
            "ß",
            "İ",
            "Σ",
            "用户",
            "例子",
            "example",
            "com",
            ".com",
            "x.io",
            "localhost",
        ]);
        prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        /// Whatever is accepted is the lower-cased input and meets every structural rule.
        #[test]
        fn accepted_addresses_meet_every_rule(s in addressish()) {
            match Email::parse(&s) {
                Ok(e) => {
                    let a = e.as_str();
                    prop_assert_eq!(a, s.to_lowercase());
                    prop_assert!((MIN_EMAIL_LEN..=MAX_EMAIL_LEN).contains(&a.len()));
                    let (local, domain) = a.split_once('@').unwrap();
                    prop_assert!(!domain.contains('@'));
                    prop_assert!(!local.is_empty() && local.len() <= MAX_LOCAL_LEN);
                    prop_assert!(domain.split('.').count() >= 2);
                    prop_assert!(domain.split('.').all(|l| !l.is_empty()));
                    prop_assert_eq!(e.domain(), domain);
                    prop_assert!(!a.chars().any(is_bad_char), "{:?}", a);
                    prop_assert!(!s.chars().any(is_bad_char), "{:?}", s);
                    prop_assert_eq!(Email::parse(a), Ok(e.clone()));
                    // Through serde both ways, as request bodies and responses do.
                    let json = serde_json::to_value(&e).unwrap();
                    prop_assert_eq!(serde_json::from_value::<Email>(json).unwrap(), e);
                }
                Err(EmailError::Missing) => prop_assert!(s.is_empty()),
                Err(EmailError::Invalid) => prop_assert!(!s.is_empty()),
            }
        }

        /// Two spellings that differ only in ASCII case are the same account.
        #[test]
        fn ascii_case_never_changes_the_account(s in addressish()) {
            prop_assert_eq!(Email::parse(&s.to_ascii_uppercase()), Email::parse(&s.to_ascii_lowercase()));
        }

        /// A claim value of any JSON type: missing for absent/null, the string's own
        /// verdict for a string, invalid for anything else — never a panic.
        #[test]
        fn claim_values_of_any_type(
            v in prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::Bool),
                any::<i64>().prop_map(serde_json::Value::from),
                addressish().prop_map(serde_json::Value::String),
                prop::collection::vec(addressish().prop_map(serde_json::Value::String), 0..3)
                    .prop_map(serde_json::Value::Array),
                Just(json!({"email": "a@b.co"})),
            ]
        ) {
            let got = email_from_claim(Some(&v));
            match &v {
                serde_json::Value::Null => prop_assert_eq!(got, Err(EmailError::Missing)),
                serde_json::Value::String(s) => prop_assert_eq!(got, Email::parse(s)),
                _ => prop_assert_eq!(got, Err(EmailError::Invalid)),
            }
            prop_assert_eq!(email_from_claim(None), Err(EmailError::Missing));
        }
    }
}
