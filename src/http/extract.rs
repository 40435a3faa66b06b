//! Body and path extractors whose failures are our 400 `validation_failed` (naming the
//! field) or 413 `body_too_large`, instead of axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::{Error, Result};

pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body, deserialised with the path of any failing field.
pub struct ApiJson<T>(pub T);

/// The request's body, at most [`MAX_BODY_BYTES`], sent within the client time limit
/// (`LATCHKEY_CLIENT_TIMEOUT_SECONDS`) of its headers. A declared `Content-Length` over the
/// limit is refused before anything is read.
pub async fn read_body(req: Request, state: &AppState) -> Result<Bytes> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(Error::BodyTooLarge);
    }
    let limit = state.client_timeout;
    match tokio::time::timeout(limit, Bytes::from_request(req, state)).await {
        Err(_) => Err(Error::validation(
            "body",
            format!(
                "The request body did not arrive within {} s.",
                limit.as_secs()
            ),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(rejection)) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            Err(Error::BodyTooLarge)
        }
        Ok(Err(_)) => Err(Error::validation(
            "body",
            "The request body could not be read.",
        )),
    }
}

/// A JSON body, which must be an object: every body the API and `/auth/sso` take is one
/// (serde would otherwise fill a struct's fields from an array, by position; a nested struct
/// is guarded by [`object_only`]).
pub fn json_object(bytes: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_slice(bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::validation(
            "body",
            "The request body must be a JSON object.",
        )),
        Err(_) => Err(Error::validation(
            "body",
            "The request body is not valid JSON.",
        )),
    }
}

/// A JSON body or a query string's parameters as `T`; what does not fit is a 400 that names the
/// field by its path (and never repeats a value of the wrong type: [`without_value`]).
fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // "missing field `x`" names the field in the message only, and the path is then its
        // parent's: `user` for a missing `user.password`.
        let named = inner.split('`').nth(1);
        let field = match (path.as_str(), named) {
            ("." | "", Some(name)) => name.to_owned(),
            ("." | "", None) => "body".to_owned(),
            (parent, Some(name)) if inner.starts_with("missing field `") => {
                format!("{parent}.{name}")
            }
            _ => path.clone(),
        };
        let inner = without_value(&inner);
        Error::validation(field.clone(), format!("{field}: {inner}."))
    })
}

/// Serde's message without the value it found: "invalid type: integer `12345678`, expected a
/// string" names the value, and the field may be a password or a setup token (SPEC §4.8:
/// secrets never appear in errors). What kind of value it was is kept.
fn without_value(message: &str) -> std::borrow::Cow<'_, str> {
    for lead in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(lead) else {
            continue;
        };
        // The value comes first and may hold anything, ", expected" too; serde's own
        // expectation is last.
        let (found, expected) = match rest.rsplit_once(", expected") {
            Some((found, expected)) => (found, format!(", expected{expected}")),
            None => (rest, String::new()),
        };
        // Its kind is the text before the value, which serde quotes with ` or ".
        let kind = found[..found.find(['`', '"']).unwrap_or(found.len())].trim_end();
        return std::borrow::Cow::Owned(format!("{lead}{kind}{expected}"));
    }
    std::borrow::Cow::Borrowed(message)
}

/// For a nested struct field, `#[serde(deserialize_with = "object_only")]`: read from a JSON
/// object only. Serde's derive would also fill the struct from an array, by position; the
/// body itself is checked by [`json_object`]. The object's fields keep their paths in errors.
pub fn object_only<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Object<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            map: A,
        ) -> std::result::Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_map(Object(std::marker::PhantomData))
}

/// HTML as a browser asks for it.
pub const HTML: &[&str] = &["text/html", "application/xhtml+xml"];

/// Whether `Accept` names one of `types` (exactly, in any case, RFC 9110 §12.5.1) without
/// refusing it by `q=0`. Wildcards do not count: `curl` and `fetch` send `*/*`.
pub fn accepts(headers: &axum::http::HeaderMap, types: &[&str]) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.get(..2).is_some_and(|k| k.eq_ignore_ascii_case("q="))
                    && p[2..].trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            });
            !refused && types.iter().any(|t| media.eq_ignore_ascii_case(t))
        })
}

/// Whether the body is declared as JSON: `application/json` or a `+json` type, in any case
/// (media types are case-insensitive, RFC 9110 §8.3.1).
pub fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.split(';').next().unwrap_or_default().trim())
        .is_some_and(|t| {
            t.eq_ignore_ascii_case("application/json")
                || t.len()
                    .checked_sub(5)
                    .and_then(|i| t.get(i..))
                    .is_some_and(|end| end.eq_ignore_ascii_case("+json"))
        })
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let json = is_json(req.headers());
        let bytes = read_body(req, state).await?;
        if !json && !bytes.is_empty() {
            return Err(Error::validation(
                "body",
                "Send the body as application/json.",
            ));
        }
        let value = serde_json::Value::Object(json_object(&bytes)?);
        refuse_nul(&value, &mut String::new())?;
        Ok(ApiJson(from_value(value)?))
    }
}

/// A NUL character anywhere in a JSON body (a key or a string) is a 400 naming where it
/// is: no text field has a use for one, and PostgreSQL cannot store it (it would be a 500).
fn refuse_nul(value: &serde_json::Value, path: &mut String) -> Result<()> {
    let refuse = |path: &str| {
        let field = if path.is_empty() { "body" } else { path };
        Err(Error::validation(
            field,
            format!("{field} must not contain NUL characters."),
        ))
    };
    match value {
        serde_json::Value::String(s) if s.contains('\0') => refuse(path),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                refuse_nul(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key.replace('\0', "\\0"));
                if key.contains('\0') {
                    return refuse(path);
                }
                refuse_nul(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A numeric id from the path.
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        // A segment that does not decode (`%FF`) is not a number either.
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|axum::extract::Path(raw)| raw.parse::<i64>().ok())
            .filter(|n| *n > 0)
            .map(Id)
            .ok_or_else(|| {
                Error::validation(
                    "id",
                    "The id in the address must be a positive whole number.",
                )
            })
    }
}

/// A setting's key from the path (`/api/setting/{key}`); one that does not decode is a 400
/// naming `key`.
pub struct SettingKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SettingKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let axum::extract::Path(key) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| {
                    Error::validation("key", "The setting key in the address is not valid text.")
                })?;
        Ok(SettingKey(key))
    }
}

/// Query-string parameters; a malformed value is a 400 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let mut map = serde_json::Map::new();
        for (k, v) in pairs {
            if k.contains('\0') || v.contains('\0') {
                // As for bodies: no parameter has a use for NUL, and PostgreSQL refuses it.
                let name = k.replace('\0', "\\0");
                return Err(Error::validation(
                    name.clone(),
                    format!("{name} must not contain NUL characters."),
                ));
            }
            map.entry(k).or_insert(serde_json::Value::String(v));
        }
        from_value(serde_json::Value::Object(map)).map(ApiQuery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Login {
        password: String,
        remember: Option<bool>,
        mode: Option<Mode>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
    }

    #[test]
    fn a_wrong_type_names_the_kind_of_value_not_the_value() {
        let cases = [
            (
                serde_json::json!({"password": 12345678}),
                "password",
                "invalid type: integer, expected a string",
            ),
            (
                serde_json::json!({"password": -5.25}),
                "password",
                "invalid type: floating point, expected a string",
            ),
            (
                serde_json::json!({"password": true}),
                "password",
                "invalid type: boolean, expected a string",
            ),
            (
                serde_json::json!({"password": ["x"]}),
                "password",
                "invalid type: sequence, expected a string",
            ),
            (
                serde_json::json!({"password": "s3cret", "remember": "s3cret"}),
                "remember",
                "invalid type: string, expected a boolean",
            ),
            (
                serde_json::json!({"password": "s3cret", "mode": "s3cret"}),
                "mode",
                "unknown variant `s3cret`, expected `fast`",
            ),
            (
                serde_json::json!({}),
                "password",
                "missing field `password`",
            ),
        ];
        for (body, field, message) in cases {
            let Err(Error::Validation {
                field: f,
                message: m,
            }) = from_value::<Login>(body.clone())
            else {
                panic!("{body} was accepted");
            };
            assert_eq!(f, field, "{body}");
            assert_eq!(m, format!("{field}: {message}."), "{body}");
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Setup {
        token: String,
        user: Login,
    }

    #[test]
    fn a_missing_nested_field_is_named_by_its_whole_path() {
        for (body, field) in [
            (serde_json::json!({"token": "t"}), "user"),
            (
                serde_json::json!({"token": "t", "user": {}}),
                "user.password",
            ),
            (
                serde_json::json!({"token": "t", "user": {"password": 5}}),
                "user.password",
            ),
            (serde_json::json!({"user": {"password": "p"}}), "token"),
        ] {
            let Err(Error::Validation { field: f, message }) = from_value::<Setup>(body.clone())
            else {
                panic!("{body} was accepted");
            };
            assert_eq!(f, field, "{body}");
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
        }
    }

    #[test]
    fn without_value_keeps_messages_without_a_value() {
        assert_eq!(
            without_value("invalid length 2, expected 3"),
            "invalid length 2, expected 3"
        );
        assert_eq!(
            without_value("invalid type: null, expected a string"),
            "invalid type: null, expected a string"
        );
        assert_eq!(
            without_value("invalid value: string \"a, b\", expected x"),
            "invalid value: string, expected x"
        );
        assert_eq!(without_value("invalid type: map"), "invalid type: map");
    }

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn accepts_reads_media_ranges_in_any_case_and_honours_q_0() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        for (values, html) in [
            (vec![browser], true),
            (vec!["TEXT/HTML"], true),
            (vec!["application/xhtml+xml"], true),
            (vec!["text/plain", "text/html; charset=utf-8"], true),
            (vec!["text/html;q=0"], false),
            (vec!["text/html; Q=0.000"], false),
            (vec!["text/html;q=0.1"], true),
            (vec!["*/*"], false),
            (vec!["text/*"], false),
            (vec!["application/json"], false),
            (vec!["text/htmlx"], false),
            (vec!["application/json, text/plain, */*"], false),
            (vec![], false),
        ] {
            assert_eq!(accepts(&accept(&values), HTML), html, "{values:?}");
        }
        assert!(accepts(
            &accept(&["Application/JSON"]),
            &["application/json"]
        ));
        assert!(!accepts(
            &accept(&["application/json;q=0, text/plain"]),
            &["application/json"]
        ));
    }
}
