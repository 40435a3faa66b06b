//! People's first and last names.

/// The longest first or last name, in characters.
pub const MAX_NAME_CHARS: usize = 254;

/// A name over [`MAX_NAME_CHARS`].
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong;

/// A name an administrator typed: without control characters (a NUL cannot even be stored
/// in PostgreSQL) and surrounding blanks; `None` when nothing is left. A longer name is
/// refused rather than cut, so that what is stored is what was typed.
pub fn clean(name: &str) -> Result<Option<String>, TooLong> {
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let name = name.trim();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(TooLong);
    }
    Ok((!name.is_empty()).then(|| name.to_owned()))
}

/// A name an identity provider sent, cut to [`MAX_NAME_CHARS`]: nobody's sign-in is refused
/// over the length of a name.
pub fn cut(name: &str) -> String {
    match name.char_indices().nth(MAX_NAME_CHARS) {
        Some((end, _)) => name[..end].to_owned(),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_controls_and_blanks_and_refuses_long_names() {
        assert_eq!(clean("  Ada\u{7}  "), Ok(Some("Ada".to_owned())));
        assert_eq!(clean(" \t "), Ok(None));
        let max = "é".repeat(MAX_NAME_CHARS);
        assert_eq!(clean(&format!(" {max} ")), Ok(Some(max.clone())));
        assert_eq!(clean(&format!("{max}é")), Err(TooLong));
    }

    #[test]
    fn cut_keeps_at_most_the_longest_name() {
        let max = "é".repeat(MAX_NAME_CHARS);
        assert_eq!(cut(&format!("{max}éé")), max);
        assert_eq!(cut(&max), max);
        assert_eq!(cut(" Ada "), " Ada ");
    }
}
