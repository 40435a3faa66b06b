//! Building and running the server: `App::build` binds the listener and assembles the
//! router; `run_until_stopped` serves until SIGTERM/SIGINT, finishing in-flight requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::password::Passwords;
use crate::settings::Settings;
use crate::store::Store;

pub struct AppInner {
    pub store: Store,
    pub settings: Settings,
    pub passwords: Passwords,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Verification keys: parsed `jwt-public-keys` and the JWKS cache.
    pub keys: crate::sso::jwks::KeyStore,
    /// Sessions and groups read by recent requests (at most 1 s old).
    pub caches: crate::auth::cache::Caches,
    /// How long a client may take to send a request's headers, and then its body
    /// (`LATCHKEY_CLIENT_TIMEOUT_SECONDS`).
    pub client_timeout: Duration,
}

/// `LATCHKEY_CLIENT_TIMEOUT_SECONDS` when unset: longer than proxies keep an idle connection
/// to their upstream (nginx 60 s, Traefik 90 s, Caddy 2 min), so that the proxy, not
/// Latchkey, closes it.
const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(130);

/// `LATCHKEY_CLIENT_TIMEOUT_SECONDS`: whole seconds from 1 to 3600.
fn client_timeout(value: Option<String>) -> anyhow::Result<Duration> {
    match value {
        None => Ok(DEFAULT_CLIENT_TIMEOUT),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n @ 1..=3600) => Ok(Duration::from_secs(n)),
            _ => anyhow::bail!(
                "LATCHKEY_CLIENT_TIMEOUT_SECONDS must be a whole number of seconds from 1 to 3600"
            ),
        },
    }
}

pub type AppState = Arc<AppInner>;

pub struct App {
    listener: TcpListener,
    state: AppState,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl App {
    /// Connects and migrates the database, loads the settings, binds `listen`.
    pub async fn build(listen: &str, database_url: &str) -> anyhow::Result<App> {
        Self::build_with_env(listen, database_url, |name| std::env::var(name).ok()).await
    }

    /// As `build`, with the `LATCHKEY_*` setting variables looked up through `env`.
    pub async fn build_with_env(
        listen: &str,
        database_url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<App> {
        let client_timeout = client_timeout(env("LATCHKEY_CLIENT_TIMEOUT_SECONDS"))?;
        let store = Store::connect(database_url).await?;
        store.migrate().await?;
        let settings = Settings::load_with_env(store.clone(), env).await?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        Passwords::warm_up();
        let state = Arc::new(AppInner {
            store,
            settings,
            passwords: Passwords::default(),
            metrics: Arc::default(),
            keys: crate::sso::jwks::KeyStore::default(),
            caches: crate::auth::cache::Caches::default(),
            client_timeout,
        });
        let background = vec![
            state.settings.spawn_reloader(),
            spawn_sweeper(state.store.clone()),
        ];
        Ok(App {
            listener,
            state,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Prints the one-time setup URL while no admin exists (SPEC §1).
    pub async fn announce_setup(&self) -> anyhow::Result<Option<String>> {
        if self.state.store.admin_exists().await? {
            return Ok(None);
        }
        let token = crate::auth::session::random_hex_token();
        let hash = crate::auth::session::hash_token(&token);
        self.state
            .store
            .insert_setup_token(&hash, crate::clock::now())
            .await?;
        let base = match self.state.settings.current().site_url.clone() {
            Some(u) => u.to_string().trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.local_addr()),
        };
        Ok(Some(format!("{base}/setup?token={token}")))
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = crate::http::router(self.state.clone());
        let addr = self.local_addr();
        tracing::info!("listening on http://{addr}");
        crate::http::server::serve(self.listener, router, self.state.client_timeout, shutdown)
            .await;
        for task in &self.background {
            task.abort();
        }
        self.state.store.close().await;
        Ok(())
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Sweeps of the replay records on SQLite: at the start, then every this many sweeps (an hour).
const REPLAY_SWEEP_EVERY: u32 = 60;

/// Deletes expired sessions, replay records and old login failures every minute; on SQLite, the
/// replay records once an hour (`Store::sweep_expired`), and again the next minute after a
/// sweep of them failed. An expired record that is still there refuses nothing: a login takes
/// it over (`consume_replay_sql!` in `store/mod.rs`).
fn spawn_sweeper(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        let mut sweeps: u32 = 0;
        loop {
            tick.tick().await;
            let replay_records = sweeps == 0;
            sweeps = (sweeps + 1) % REPLAY_SWEEP_EVERY;
            if let Err(e) = store
                .sweep_expired(crate::clock::now(), replay_records)
                .await
            {
                tracing::warn!(error = %e, "housekeeping failed");
                if replay_records {
                    sweeps = 0;
                }
            }
        }
    })
}
