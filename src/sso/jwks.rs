//! `jwt-jwks-uri`: fetching the JWK Set, caching its keys, and the key source the HTTP
//! layer asks for a [`KeySet`] before every verification.
//!
//! The verifier ([`super::verify`]) never fetches anything. The SSO handlers call
//! [`KeyStore::key_set`] first (after the `return_to` check, before verification), which
//! may fetch — at most [`FETCH_TIMEOUT`] — and then hand the keys to the pure verifier.
//!
//! Cache rules (per instance; each instance of a cluster has its own cache):
//!
//! - A fetch happens only for a token that can reach the key lookup at all: an asymmetric
//!   `alg` listed in `jwt-algorithms`, a well-formed header and no `jku`/`x5u`/`jwk`/…
//!   header ([`super::verify::key_hint`]). HMAC tokens and refused headers never fetch.
//! - The first such token fetches the set. It is then fresh for the response's
//!   `Cache-Control: max-age`, bounded to [`MIN_CACHE`]..[`MAX_CACHE`] ([`DEFAULT_CACHE`]
//!   without one; `no-cache`/`no-store` count as 0, so the floor applies). The first token
//!   after that refetches.
//! - A token whose `kid` is not in the set refetches at once, but such unknown-`kid`
//!   refetches happen at most once per [`UNKNOWN_KID_REFETCH_INTERVAL`], so a flood of
//!   random `kid`s costs the identity provider one request per 30 s.
//! - A failed fetch (connection error, non-200 — redirects are not followed —, a body over
//!   [`MAX_JWKS_BYTES`], not a JWK Set, no usable key, [`FETCH_TIMEOUT`]) keeps the last
//!   good keys, which go on working, and no fetch is tried for [`FAILURE_RETRY`].
//! - One fetch runs at a time, as a task of its own: requests that need a fetch meanwhile
//!   wait for it, and a request that goes away does not cancel it.
//! - Every fetch is counted in `latchkey_jwks_refresh_total{outcome="success|failure"}`.
//! - Changing `jwt-jwks-uri` starts a new, empty cache.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::header;
use url::Url;

use super::keys::{self, KeySet, VerifyingKey};
use super::verify;
use crate::metrics::Metrics;
use crate::settings::Effective;

/// Longest a fetch may take, connection to last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read; a longer one is a failed fetch.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Shortest time a fetched set is used before it is refetched.
pub const MIN_CACHE: Duration = Duration::from_secs(60);
/// Longest time a fetched set is used before it is refetched.
pub const MAX_CACHE: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a set is used when the response has no `Cache-Control: max-age`.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(300);
/// At most one refetch for unknown `kid`s per this interval.
pub const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// After a failed fetch, no fetch is tried for this long.
pub const FAILURE_RETRY: Duration = Duration::from_secs(30);

/// How long a fetched set stays fresh, from the response's `Cache-Control` value(s):
/// the smallest `max-age`, 0 for `no-cache`/`no-store`, [`DEFAULT_CACHE`] without either;
/// always within [`MIN_CACHE`]..=[`MAX_CACHE`].
pub fn cache_lifetime(cache_control: Option<&str>) -> Duration {
    let mut max_age: Option<u64> = None;
    for directive in cache_control.unwrap_or("").split(',') {
        let directive = directive.trim();
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (directive, None),
        };
        let seconds =
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                Some(0)
            } else if name.eq_ignore_ascii_case("max-age") {
                // A huge number is "a long time", not an error.
                value.and_then(|v| {
                    v.parse::<u64>().ok().or_else(|| {
                        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())).then_some(u64::MAX)
                    })
                })
            } else {
                None
            };
        if let Some(s) = seconds {
            max_age = Some(max_age.map_or(s, |m| m.min(s)));
        }
    }
    match max_age {
        None => DEFAULT_CACHE,
        Some(s) => Duration::from_secs(s.min(MAX_CACHE.as_secs())).clamp(MIN_CACHE, MAX_CACHE),
    }
}

/// Why a fetch is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchReason {
    /// Nothing fetched yet for this URI.
    Initial,
    /// The cached set is past its lifetime.
    Expired,
    /// The token's `kid` is not in the cached set.
    UnknownKid,
}

/// The cache of one JWKS URI, as a pure state machine over an injected clock (`now`), so
/// every rule can be tested without waiting.
#[derive(Debug, Clone)]
pub struct CacheState {
    uri: String,
    keys: Arc<[VerifyingKey]>,
    fresh_until: Option<Instant>,
    retry_at: Option<Instant>,
    last_kid_refetch: Option<Instant>,
}

impl CacheState {
    pub fn new(uri: &str) -> CacheState {
        CacheState {
            uri: uri.to_owned(),
            keys: Arc::from(Vec::new()),
            fresh_until: None,
            retry_at: None,
            last_kid_refetch: None,
        }
    }

    pub fn keys(&self) -> &Arc<[VerifyingKey]> {
        &self.keys
    }

    /// Whether a fetch is due for a token with this `kid` (`None`: use the cached keys).
    pub fn plan(&self, now: Instant, kid: Option<&str>) -> Option<FetchReason> {
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        match self.fresh_until {
            None => return Some(FetchReason::Initial),
            Some(until) if now >= until => return Some(FetchReason::Expired),
            Some(_) => {}
        }
        let unknown = kid.is_some_and(|kid| !self.keys.iter().any(|k| k.kid() == Some(kid)));
        let allowed = self
            .last_kid_refetch
            .is_none_or(|at| now.saturating_duration_since(at) >= UNKNOWN_KID_REFETCH_INTERVAL);
        (unknown && allowed).then_some(FetchReason::UnknownKid)
    }

    /// A fetch for `reason` begins (the unknown-`kid` allowance is used up even if it fails).
    pub fn started(&mut self, reason: FetchReason, now: Instant) {
        if reason == FetchReason::UnknownKid {
            self.last_kid_refetch = Some(now);
        }
    }

    pub fn succeeded(&mut self, now: Instant, keys: Arc<[VerifyingKey]>, lifetime: Duration) {
        self.keys = keys;
        self.fresh_until = Some(now + lifetime);
        self.retry_at = None;
    }

    /// The last good keys stay; nothing is fetched for [`FAILURE_RETRY`].
    pub fn failed(&mut self, now: Instant) {
        self.retry_at = Some(now + FAILURE_RETRY);
    }
}

/// Why a fetch failed (logged; never shown to the person signing in).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("jwt-jwks-uri must be an https URL (http only on loopback)")]
    Insecure,
    #[error("no HTTP client could be built")]
    NoClient,
    #[error("request failed: {0}")]
    Request(String),
    #[error("answered HTTP {0} (only 200 is accepted; redirects are not followed)")]
    Status(u16),
    #[error("the response is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Invalid(String),
    #[error("the JWK Set holds no usable key ({0} ignored)")]
    NoUsableKeys(usize),
}

/// A successful fetch.
#[derive(Debug)]
pub struct Fetched {
    pub keys: Vec<VerifyingKey>,
    /// Keys in the document that cannot be used (unsupported, `oct`, contradicting `alg`).
    pub ignored: usize,
    pub lifetime: Duration,
}

/// Fetches and parses one JWK Set, bounded in time and size.
pub async fn fetch(
    client: &reqwest::Client,
    uri: &str,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    let url = Url::parse(uri).map_err(|_| FetchError::Insecure)?;
    // The setting's validator already refuses this; checked again so a stale or hand-made
    // value can never send a plain-http request off the machine.
    if url.scheme() != "https"
        && !(url.scheme() == "http" && crate::settings::registry::is_loopback(&url))
    {
        return Err(FetchError::Insecure);
    }
    let work = async {
        let mut res = client
            .get(url)
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| request_error(e, timeout))?;
        if res.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(res.status().as_u16()));
        }
        if res
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let cache_control = res
            .headers()
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let lifetime = cache_lifetime(Some(&cache_control));
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| request_error(e, timeout))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let parsed = keys::parse_jwks(&body).map_err(FetchError::Invalid)?;
        if parsed.keys.is_empty() {
            return Err(FetchError::NoUsableKeys(parsed.ignored));
        }
        Ok(Fetched {
            keys: parsed.keys,
            ignored: parsed.ignored,
            lifetime,
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

/// What went wrong with a request, for the logs and `doctor`: a timeout as such (the client's
/// own timer, equal to the outer one, usually fires first), else reqwest's message with its
/// causes (connection refused, a certificate error, …), never the URL (its query may carry a
/// credential).
fn request_error(e: reqwest::Error, timeout: Duration) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout(timeout);
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    FetchError::Request(text)
}

/// The JWKS cache of one instance: a [`CacheState`] for the configured URI, and a lock so
/// that one fetch at a time is made (concurrent requests that need a fetch wait for it and
/// then see its result and the rate limits, rather than fetching again).
pub struct Jwks {
    client: Option<reqwest::Client>,
    timeout: Duration,
    state: Mutex<Option<CacheState>>,
    fetch_lock: tokio::sync::Mutex<()>,
}

impl Default for Jwks {
    fn default() -> Self {
        Jwks::with_timeout(FETCH_TIMEOUT)
    }
}

impl Jwks {
    /// A cache whose fetches give up after `timeout` (tests use a short one).
    pub fn with_timeout(timeout: Duration) -> Jwks {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("latchkey/", env!("CARGO_PKG_VERSION")))
            .build()
            .inspect_err(|e| tracing::error!(error = %e, "cannot build the JWKS HTTP client"))
            .ok();
        Jwks {
            client,
            timeout,
            state: Mutex::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<CacheState>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached keys of `uri`, or the reason a fetch is due now.
    fn plan(&self, uri: &str, kid: Option<&str>) -> Result<Arc<[VerifyingKey]>, FetchReason> {
        let mut slot = self.lock();
        let state = state_for(&mut slot, uri);
        match state.plan(Instant::now(), kid) {
            None => Ok(state.keys.clone()),
            Some(reason) => Err(reason),
        }
    }

    /// The keys of `uri` for a token with this `kid`, fetching first when the rules above
    /// say so. Never fails: without a usable fetch it answers the last good keys (or none).
    ///
    /// The fetch runs as a task of its own, which the request awaits: a request whose client
    /// goes away does not take the fetch with it, so the keys still reach the cache for the
    /// requests that come next (and a client cannot keep the keys from loading by leaving
    /// each time a fetch has started).
    pub async fn keys(
        self: &Arc<Self>,
        uri: &str,
        kid: Option<&str>,
        metrics: &Arc<Metrics>,
    ) -> Arc<[VerifyingKey]> {
        if let Ok(keys) = self.plan(uri, kid) {
            return keys;
        }
        let (jwks, metrics) = (Arc::clone(self), Arc::clone(metrics));
        let (task_uri, task_kid) = (uri.to_owned(), kid.map(str::to_owned));
        let fetching = async move {
            jwks.fetch_when_due(&task_uri, task_kid.as_deref(), &metrics)
                .await
        };
        // In the request's span, so that the fetch's log lines carry its request id.
        tokio::spawn(tracing::Instrument::instrument(
            fetching,
            tracing::Span::current(),
        ))
        .await
        // Only a panic, or the runtime shutting down, ends the task early.
        .unwrap_or_else(|_| self.cached(uri))
    }

    /// One fetch at a time: a request that waited for another's sees its result and the rate
    /// limits before fetching itself.
    async fn fetch_when_due(
        &self,
        uri: &str,
        kid: Option<&str>,
        metrics: &Metrics,
    ) -> Arc<[VerifyingKey]> {
        let _one_fetch_at_a_time = self.fetch_lock.lock().await;
        // Another request may have fetched while this one waited.
        let reason = match self.plan(uri, kid) {
            Ok(keys) => return keys,
            Err(reason) => reason,
        };
        state_for(&mut self.lock(), uri).started(reason, Instant::now());
        let result = match &self.client {
            Some(client) => fetch(client, uri, self.timeout).await,
            None => Err(FetchError::NoClient),
        };
        metrics.jwks_refreshed(result.is_ok());
        let mut slot = self.lock();
        let state = state_for(&mut slot, uri);
        match result {
            Ok(fetched) => {
                tracing::info!(
                    uri = %shown_uri(uri),
                    reason = ?reason,
                    keys = fetched.keys.len(),
                    ignored = fetched.ignored,
                    fresh_for_secs = fetched.lifetime.as_secs(),
                    "JWKS fetched"
                );
                state.succeeded(Instant::now(), fetched.keys.into(), fetched.lifetime);
            }
            Err(error) => {
                tracing::warn!(
                    uri = %shown_uri(uri),
                    reason = ?reason,
                    error = %error,
                    kept_keys = state.keys.len(),
                    "JWKS fetch failed; keeping the last good keys"
                );
                state.failed(Instant::now());
            }
        }
        state.keys.clone()
    }

    /// The cached keys of `uri`, never fetching.
    pub fn cached(&self, uri: &str) -> Arc<[VerifyingKey]> {
        match self.lock().as_ref() {
            Some(state) if state.uri == uri => state.keys.clone(),
            _ => Arc::from(Vec::new()),
        }
    }
}

/// `uri` as logs and `doctor` show it: without user info, and with `?…` for a query, which
/// may carry a credential (an access token in the URL of a JWKS endpoint).
pub fn shown_uri(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) => {
            let had_query = u.query().is_some();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            if had_query {
                format!("{u}?…")
            } else {
                u.to_string()
            }
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// The state of `uri`, starting afresh when the configured URI changed.
fn state_for<'a>(slot: &'a mut Option<CacheState>, uri: &str) -> &'a mut CacheState {
    if !matches!(slot, Some(state) if state.uri == uri) {
        *slot = Some(CacheState::new(uri));
    }
    slot.get_or_insert_with(|| CacheState::new(uri))
}

/// Where the verifier's keys come from: the PEM keys of `jwt-public-keys` (parsed once per
/// settings load, [`Effective::pem_keys`]) and the JWKS cache. One per app
/// (`AppInner::keys`).
#[derive(Default)]
pub struct KeyStore {
    jwks: Arc<Jwks>,
}

impl KeyStore {
    /// The asymmetric keys for verifying `token` under the settings `eff`, fetching the
    /// JWKS first when the cache rules call for it. Call it after the checks that refuse a
    /// request without looking at its token, and before [`super::verify::verify`].
    pub async fn key_set(&self, eff: &Effective, token: &str, metrics: &Arc<Metrics>) -> KeySet {
        let pem = eff.pem_keys.clone();
        let jwks = match eff.str("jwt-jwks-uri") {
            None => Arc::from(Vec::new()),
            Some(uri) => match verify::key_hint(token, eff.strings("jwt-algorithms")) {
                Some(hint) => self.jwks.keys(uri, hint.kid.as_deref(), metrics).await,
                None => self.jwks.cached(uri),
            },
        };
        KeySet::new(pem, jwks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey};
    use serde_json::{Value, json};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const EC_PRIV: &str = include_str!("../../tests/fixtures/keys/ec-p256-a.key.pem");
    const RSA_PRIV: &str = include_str!("../../tests/fixtures/keys/rsa-a.key.pem");

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn cache_control_max_age_is_honoured_within_floor_and_ceiling() {
        let cases: [(Option<&str>, u64); 14] = [
            (None, 300),
            (Some(""), 300),
            (Some("public"), 300),
            (Some("max-age=600"), 600),
            (Some("public, max-age=3600, must-revalidate"), 3600),
            (Some("Max-Age=\"900\""), 900),
            (Some("max-age=10"), 60),
            (Some("max-age=0"), 60),
            (Some("no-cache"), 60),
            (Some("max-age=600, no-store"), 60),
            (Some("max-age=999999999"), 86_400),
            (Some("max-age=99999999999999999999999"), 86_400),
            (Some("max-age=abc"), 300),
            (Some("max-age=900,max-age=120"), 120),
        ];
        for (header, want) in cases {
            assert_eq!(cache_lifetime(header), secs(want), "{header:?}");
        }
    }

    fn key(kid: &str) -> VerifyingKey {
        let k = EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap();
        let mut v = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&k, Algorithm::ES256).unwrap(),
        )
        .unwrap();
        v["kid"] = json!(kid);
        keys::parse_jwk(&v).unwrap()
    }

    fn set(kids: &[&str]) -> Arc<[VerifyingKey]> {
        kids.iter().map(|k| key(k)).collect()
    }

    #[test]
    fn the_cache_refetches_when_stale_and_on_unknown_kids_at_most_every_30_s() {
        let t0 = Instant::now();
        let mut c = CacheState::new("https://idp.example/jwks");
        assert_eq!(c.plan(t0, None), Some(FetchReason::Initial));
        assert_eq!(c.plan(t0, Some("a")), Some(FetchReason::Initial));
        c.started(FetchReason::Initial, t0);
        c.succeeded(t0, set(&["a"]), cache_lifetime(Some("max-age=120")));
        // Fresh for max-age.
        assert_eq!(c.plan(t0 + secs(119), None), None);
        assert_eq!(c.plan(t0 + secs(119), Some("a")), None);
        assert_eq!(c.plan(t0 + secs(120), None), Some(FetchReason::Expired));
        // An unknown kid refetches once…
        let t1 = t0 + secs(5);
        assert_eq!(c.plan(t1, Some("b")), Some(FetchReason::UnknownKid));
        c.started(FetchReason::UnknownKid, t1);
        c.succeeded(t1, set(&["a", "b"]), secs(120));
        assert_eq!(c.plan(t1, Some("b")), None);
        // …then not again for 30 s, whatever the kid.
        for s in [0, 1, 10, 29] {
            assert_eq!(
                c.plan(t1 + secs(s), Some(&format!("random-{s}"))),
                None,
                "{s}"
            );
        }
        assert_eq!(
            c.plan(t1 + secs(30), Some("c")),
            Some(FetchReason::UnknownKid)
        );
        // Known kids never refetch while fresh.
        assert_eq!(c.plan(t1 + secs(30), Some("a")), None);
    }

    #[test]
    fn a_failed_fetch_keeps_the_last_good_keys_and_backs_off() {
        let t0 = Instant::now();
        let mut c = CacheState::new("https://idp.example/jwks");
        c.started(FetchReason::Initial, t0);
        c.succeeded(t0, set(&["a"]), MIN_CACHE);
        let t1 = t0 + MIN_CACHE;
        assert_eq!(c.plan(t1, Some("a")), Some(FetchReason::Expired));
        c.started(FetchReason::Expired, t1);
        c.failed(t1);
        assert_eq!(c.keys().len(), 1, "the last good keys are kept");
        // No fetch of any kind during the back-off, even though the set is stale.
        assert_eq!(c.plan(t1 + secs(29), Some("a")), None);
        assert_eq!(c.plan(t1 + secs(29), Some("zzz")), None);
        assert_eq!(
            c.plan(t1 + FAILURE_RETRY, Some("a")),
            Some(FetchReason::Expired)
        );
        // A first fetch that fails is retried after the back-off too.
        let mut c = CacheState::new("https://idp.example/jwks");
        c.started(FetchReason::Initial, t0);
        c.failed(t0);
        assert!(c.keys().is_empty());
        assert_eq!(c.plan(t0 + secs(1), None), None);
        assert_eq!(c.plan(t0 + FAILURE_RETRY, None), Some(FetchReason::Initial));
    }

    // --- fetching from a loopback server ----------------------------------------------------

    /// Serves each connection the next canned response (the last one repeats), after
    /// `delay`; counts connections.
    async fn serve(responses: Vec<Vec<u8>>, delay: Duration) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let response = responses[n.min(responses.len() - 1)].clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = tokio::time::timeout(secs(2), sock.read(&mut buf)).await;
                    tokio::time::sleep(delay).await;
                    let _ = sock.write_all(&response).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        (format!("http://127.0.0.1:{}/jwks", addr.port()), hits)
    }

    fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        out
    }

    fn jwks_body(kids: &[&str]) -> Vec<u8> {
        let k = EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap();
        let jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&k, Algorithm::RS256).unwrap(),
        )
        .unwrap();
        let keys: Vec<Value> = kids
            .iter()
            .map(|kid| {
                let mut j = jwk.clone();
                j["kid"] = json!(kid);
                j
            })
            .collect();
        json!({"keys": keys}).to_string().into_bytes()
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn fetch_reads_keys_and_cache_control() {
        let ok = response(
            "200 OK",
            &[("Cache-Control", "public, max-age=900")],
            &jwks_body(&["k1", "k2"]),
        );
        let (uri, hits) = serve(vec![ok], Duration::ZERO).await;
        let fetched = fetch(&client(), &uri, FETCH_TIMEOUT).await.unwrap();
        assert_eq!(fetched.keys.len(), 2);
        assert_eq!(fetched.keys[1].kid(), Some("k2"));
        assert_eq!(fetched.lifetime, secs(900));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn bad_answers_are_failed_fetches() {
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        let mut chunked =
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..5 {
            chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
            chunked.extend_from_slice(&vec![b' '; 64 * 1024]);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let oct =
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]})
                .to_string();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                response("500 Internal Server Error", &[], b"oops"),
                "HTTP 500",
            ),
            (response("404 Not Found", &[], b""), "HTTP 404"),
            (
                response("302 Found", &[("Location", "http://127.0.0.1:1/jwks")], b""),
                "HTTP 302",
            ),
            (response("200 OK", &[], b"{not json"), "not JSON"),
            (response("200 OK", &[], b"{\"keys\": 1}"), "not a JWK Set"),
            (
                response("200 OK", &[], oct.as_bytes()),
                "no usable key (1 ignored)",
            ),
            (response("200 OK", &[], &big), "larger than"),
            (chunked, "larger than"),
            (b"garbage\r\n\r\n".to_vec(), "request failed"),
        ];
        for (canned, want) in cases {
            let (uri, _) = serve(vec![canned], Duration::ZERO).await;
            let err = fetch(&client(), &uri, FETCH_TIMEOUT).await.unwrap_err();
            assert!(err.to_string().contains(want), "{want}: got {err}");
        }
        // Nothing listening.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = fetch(
            &client(),
            &format!("http://127.0.0.1:{port}/jwks"),
            FETCH_TIMEOUT,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, FetchError::Request(_)), "{err}");
        // The cause is told, not only reqwest's "error sending request".
        assert!(err.to_string().contains("onnection refused"), "{err}");
    }

    #[tokio::test]
    async fn a_slow_answer_times_out() {
        let ok = response("200 OK", &[], &jwks_body(&["k1"]));
        let (uri, _) = serve(vec![ok], secs(3)).await;
        let started = Instant::now();
        let err = fetch(&client(), &uri, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Timeout(_)), "{err}");
        assert!(started.elapsed() < secs(2));
        // With the cache's own client, whose timer equals the fetch's and fires first, a
        // timeout is still told as one.
        let ok = response("200 OK", &[], &jwks_body(&["k1"]));
        let (uri, _) = serve(vec![ok], secs(3)).await;
        let jwks = Jwks::with_timeout(Duration::from_millis(300));
        let err = fetch(jwks.client.as_ref().unwrap(), &uri, jwks.timeout)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Timeout(_)), "{err}");
    }

    #[test]
    fn uris_are_shown_without_credentials_or_queries() {
        assert_eq!(
            shown_uri("https://idp.example/jwks"),
            "https://idp.example/jwks"
        );
        assert_eq!(
            shown_uri("https://user:pw@idp.example/jwks?access_token=s3cr3t#k"),
            "https://idp.example/jwks?…"
        );
        assert_eq!(shown_uri("not a url"), "(not a URL)");
    }

    /// A request whose client leaves while the JWKS endpoint is slow does not take the fetch
    /// with it: the keys still reach the cache, and the requests after it use them.
    #[tokio::test]
    async fn a_request_that_goes_away_mid_fetch_still_fills_the_cache() {
        let ok = response("200 OK", &[], &jwks_body(&["k1"]));
        let (uri, hits) = serve(vec![ok; 8], Duration::from_millis(300)).await;
        let jwks = Arc::new(Jwks::with_timeout(secs(2)));
        let metrics = Arc::new(Metrics::default());
        let gone =
            tokio::time::timeout(Duration::from_millis(50), jwks.keys(&uri, None, &metrics)).await;
        assert!(gone.is_err(), "the request went away before the answer");
        // Those that come meanwhile wait for that fetch and get its keys.
        let waited = jwks.keys(&uri, Some("k1"), &metrics).await;
        assert_eq!(waited.len(), 1);
        assert_eq!(jwks.cached(&uri).len(), 1);
        for _ in 0..4 {
            assert_eq!(jwks.keys(&uri, Some("k1"), &metrics).await.len(), 1);
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1, "one fetch for six requests");
        let rendered = metrics.render(None);
        assert!(
            rendered.contains("latchkey_jwks_refresh_total{outcome=\"success\"} 1"),
            "{rendered}"
        );
    }

    #[tokio::test]
    async fn plain_http_off_loopback_is_never_requested() {
        for uri in [
            "http://idp.example/jwks",
            "ftp://127.0.0.1/jwks",
            "not a url",
        ] {
            let err = fetch(&client(), uri, FETCH_TIMEOUT).await.unwrap_err();
            assert!(matches!(err, FetchError::Insecure), "{uri}: {err}");
        }
    }

    #[tokio::test]
    async fn the_cache_counts_fetches_and_keeps_the_last_good_keys() {
        let ok = response(
            "200 OK",
            &[("Cache-Control", "max-age=600")],
            &jwks_body(&["k1"]),
        );
        let down = response("503 Service Unavailable", &[], b"");
        let (uri, hits) = serve(vec![ok, down], Duration::ZERO).await;
        let jwks = Arc::new(Jwks::with_timeout(secs(2)));
        let metrics = Arc::new(Metrics::default());
        let text = |m: &Metrics| m.render(None);
        // The first use fetches.
        assert_eq!(jwks.keys(&uri, Some("k1"), &metrics).await.len(), 1);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // A known kid does not fetch again.
        assert_eq!(jwks.keys(&uri, Some("k1"), &metrics).await.len(), 1);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // An unknown kid refetches once; the endpoint is down; the keys stay.
        assert_eq!(jwks.keys(&uri, Some("k2"), &metrics).await.len(), 1);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        for i in 0..20 {
            assert_eq!(
                jwks.keys(&uri, Some(&format!("r{i}")), &metrics)
                    .await
                    .len(),
                1
            );
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert_eq!(jwks.cached(&uri).len(), 1);
        let m = text(&metrics);
        assert!(
            m.contains("latchkey_jwks_refresh_total{outcome=\"success\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains("latchkey_jwks_refresh_total{outcome=\"failure\"} 1\n"),
            "{m}"
        );
        // Another URI starts from scratch.
        assert!(jwks.cached("http://127.0.0.1:1/other").is_empty());
    }

    #[tokio::test]
    async fn concurrent_unknown_kids_cause_one_fetch() {
        let ok = response(
            "200 OK",
            &[("Cache-Control", "max-age=600")],
            &jwks_body(&["k1"]),
        );
        let (uri, hits) = serve(vec![ok], Duration::from_millis(200)).await;
        let jwks = Arc::new(Jwks::with_timeout(secs(2)));
        let metrics = Arc::new(Metrics::default());
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (jwks, metrics, uri) = (jwks.clone(), metrics.clone(), uri.clone());
            tasks.push(tokio::spawn(async move {
                jwks.keys(&uri, Some(&format!("random-{i}")), &metrics)
                    .await
                    .len()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 1);
        }
        // The initial fetch, plus at most one unknown-kid refetch.
        let n = hits.load(Ordering::SeqCst);
        assert!((1..=2).contains(&n), "{n} fetches");
    }
}
