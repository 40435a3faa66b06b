//! A throwaway PostgreSQL server for the integration tests.
//!
//! [`fresh_database_url`] hands every caller a brand-new, empty database.
//! The first call in a test process starts a private cluster (initdb into a
//! temporary directory, random free port on 127.0.0.1, trust auth, durability
//! switched off for speed); later calls only run `CREATE DATABASE` on it.
//!
//! * `LATCHKEY_TEST_DATABASE_URL_PG=postgres://user:pw@host:5432` uses that
//!   server instead of starting one. Databases are created through the
//!   database named in the URL, or `postgres` when the URL names none.
//! * Without PostgreSQL server binaries the function returns `None` after one
//!   loud warning on stderr, so callers skip their PostgreSQL variant, unless
//!   `LATCHKEY_TEST_REQUIRE_ALL=1`, which turns the skip into a panic (CI).
//!
//! Rust never drops statics, so the cluster is not stopped by a destructor.
//! Instead a detached shell watchdog polls the test process and, once it is
//! gone, stops the server (`pg_ctl -m immediate stop`) and deletes the
//! temporary directory.
//!
//! PostgreSQL refuses to run as root; as root the server tools run through
//! `runuser -u postgres` (or `nobody` when there is no `postgres` user).
//!
//! Only std and the `tempfile` dev-dependency are used.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Superuser created by initdb; the URLs connect as this role.
const SUPERUSER: &str = "latchkey";
/// How many ports are tried before giving up on starting the cluster.
const START_ATTEMPTS: u32 = 5;
/// `pg_ctl -w -t` seconds for start and stop.
const PG_CTL_WAIT_SECS: u64 = 60;
/// Upper bound for initdb and for every psql invocation.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const ENV_REQUIRE_ALL: &str = "LATCHKEY_TEST_REQUIRE_ALL";
const ENV_EXTERNAL_URL: &str = "LATCHKEY_TEST_DATABASE_URL_PG";
/// Where Debian/Ubuntu install the versioned server binaries.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// Returns a URL like `postgres://latchkey@127.0.0.1:PORT/DBNAME` naming a
/// brand-new empty database (a fresh `CREATE DATABASE` per call, unique
/// name). The server is started once per test process.
///
/// Returns `None` (after one loud warning on stderr per process) when no
/// PostgreSQL server binaries are found, unless `LATCHKEY_TEST_REQUIRE_ALL=1`
/// is set, in which case it panics. If `LATCHKEY_TEST_DATABASE_URL_PG` is
/// set, databases are created on that server instead.
///
/// # Panics
///
/// When the server cannot be started or the database cannot be created, and
/// in the `LATCHKEY_TEST_REQUIRE_ALL=1` case above.
pub fn fresh_database_url() -> Option<String> {
    static STATE: OnceLock<State> = OnceLock::new();
    match STATE.get_or_init(State::init) {
        State::Local(cluster) => Some(cluster.create_database().unwrap_or_else(|e| panic!("{e}"))),
        State::External(server) => Some(server.create_database().unwrap_or_else(|e| panic!("{e}"))),
        State::Skipped => None,
        // Remembered so that a broken setup fails every test quickly and
        // identically instead of being retried by each of them.
        State::Failed(message) => panic!("{message}"),
    }
}

/// A private throwaway cluster for one test that stops and restarts PostgreSQL
/// (fault injection), so that the shared cluster of [`fresh_database_url`] and
/// the tests using it are not disturbed. Stopped (immediately) when dropped;
/// the watchdog removes its directory after the test process exits.
///
/// `None` when no PostgreSQL server binaries are found (after the same loud
/// warning), a panic instead with `LATCHKEY_TEST_REQUIRE_ALL=1`.
/// `LATCHKEY_TEST_DATABASE_URL_PG` is not used: a server we did not start is
/// not ours to stop.
pub fn dedicated_cluster() -> Option<DedicatedCluster> {
    let Some(bin) = find_server_bin_dir() else {
        assert!(
            !require_all(),
            "{ENV_REQUIRE_ALL}=1 but no PostgreSQL server binaries (initdb, pg_ctl, postgres) \
             were found in {DEBIAN_PG_ROOT}/*/bin or on PATH"
        );
        warn_skipped();
        return None;
    };
    let cluster = Cluster::start(&bin)
        .unwrap_or_else(|e| panic!("could not start a dedicated PostgreSQL cluster: {e}"));
    Some(DedicatedCluster { cluster })
}

pub struct DedicatedCluster {
    cluster: Cluster,
}

impl DedicatedCluster {
    /// A fresh empty database on this cluster (see [`fresh_database_url`]).
    pub fn database_url(&self) -> String {
        self.cluster
            .create_database()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A fresh empty database on this cluster, reached through the cluster's Unix socket
    /// (`?host=SOCKET_DIR&port=PORT`) instead of TCP. The URL's host name is `socket.invalid`,
    /// which no resolver knows: a client that ignored the socket directory could not connect.
    pub fn socket_database_url(&self) -> String {
        let tcp = self.database_url();
        let name = tcp.rsplit('/').next().unwrap_or_default();
        let c = &self.cluster;
        format!(
            "postgres://{SUPERUSER}@socket.invalid/{name}?host={}&port={}",
            c.root.display(),
            c.port
        )
    }

    /// `pg_ctl stop -m MODE` (`smart`, `fast` or `immediate`), waiting until it is down.
    pub fn stop(&self, mode: &str) -> Result<(), String> {
        let c = &self.cluster;
        let out = run(
            c.run_as
                .command(&c.pg_ctl)
                .arg("-D")
                .arg(&c.data)
                .args([
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    &PG_CTL_WAIT_SECS.to_string(),
                    "stop",
                ])
                .current_dir(&c.root),
            Duration::from_secs(PG_CTL_WAIT_SECS + 30),
        )?;
        if out.success {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl stop -m {mode} failed ({}):\n{}",
                out.status, out.text
            ))
        }
    }

    /// Starts the server again on the same port (bounded retries: the port was
    /// only just released).
    pub fn start(&self) -> Result<(), String> {
        let c = &self.cluster;
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match pg_ctl_start(&c.run_as, &c.pg_ctl, &c.data, &c.root, &c.log, c.port) {
                Ok(out) if out.success => return Ok(()),
                Ok(out) => {
                    failures += &format!("\nattempt {attempt}: {}:\n{}", out.status, out.text)
                }
                Err(e) => failures += &format!("\nattempt {attempt}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!("pg_ctl start on port {} failed:{failures}", c.port))
    }
}

impl DedicatedCluster {
    /// Sends `kill -SIG` to the postmaster and all its children (the backends):
    /// `STOP` freezes the database without closing a single connection (a hung
    /// server, as far as clients can tell), `CONT` thaws it. Returns how many
    /// processes were signalled.
    pub fn signal_all(&self, sig: &str) -> Result<usize, String> {
        let pid_file = self.cluster.data.join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("cannot read {}: {e}", pid_file.display()))?;
        let postmaster: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("no pid in {}", pid_file.display()))?;
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // /proc/PID/stat: "pid (comm) state ppid …"; comm may contain spaces.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        for pid in &pids {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        Ok(pids.len())
    }
}

impl Drop for DedicatedCluster {
    fn drop(&mut self) {
        let _ = self.signal_all("CONT");
        let _ = self.stop("immediate");
    }
}

enum State {
    Local(Cluster),
    External(ExternalServer),
    Skipped,
    Failed(String),
}

impl State {
    fn init() -> State {
        if let Some(url) = std::env::var(ENV_EXTERNAL_URL)
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            return match ExternalServer::new(&url) {
                Ok(server) => State::External(server),
                Err(e) => State::Failed(e),
            };
        }
        let Some(bin) = find_server_bin_dir() else {
            if require_all() {
                return State::Failed(format!(
                    "{ENV_REQUIRE_ALL}=1 but no PostgreSQL server binaries \
                     (initdb, pg_ctl, postgres) were found in {DEBIAN_PG_ROOT}/*/bin or on PATH. \
                     Install them (Debian/Ubuntu: `apt-get install postgresql`) \
                     or set {ENV_EXTERNAL_URL}=postgres://user:pw@host:5432."
                ));
            }
            warn_skipped();
            return State::Skipped;
        };
        match Cluster::start(&bin) {
            Ok(cluster) => State::Local(cluster),
            Err(e) => State::Failed(format!(
                "could not start the throwaway PostgreSQL cluster: {e}"
            )),
        }
    }
}

/// Whether every suite is mandatory (`LATCHKEY_TEST_REQUIRE_ALL=1`, set by `.ci/run`): a
/// missing PostgreSQL, Chromium or Node.js is then a failure instead of a loud skip.
pub fn require_all() -> bool {
    std::env::var(ENV_REQUIRE_ALL)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// Printed straight to the process's stderr: `eprintln!` inside a test is
/// captured by the harness and only shown when that test fails.
fn warn_skipped() {
    let bar = "=".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n\
         WARNING: PostgreSQL tests are SKIPPED.\n\
         \n\
         No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found in\n\
         {DEBIAN_PG_ROOT}/*/bin or on PATH, so every test that needs PostgreSQL\n\
         passes WITHOUT testing anything against PostgreSQL.\n\
         \n\
         To run them, install PostgreSQL, e.g. on Debian/Ubuntu:\n\
         \x20   apt-get install postgresql\n\
         or point {ENV_EXTERNAL_URL} at a server (postgres://user:pw@host:5432).\n\
         Set {ENV_REQUIRE_ALL}=1 to make this a hard failure (CI does).\n\
         {bar}\n"
    );
}

// ---------------------------------------------------------------------------
// Local throwaway cluster
// ---------------------------------------------------------------------------

struct Cluster {
    /// Holds data dir, sockets and log. Never dropped (it lives in a static);
    /// the watchdog removes it after the test process exits.
    _dir: tempfile::TempDir,
    psql: PathBuf,
    port: u16,
    // What a restart needs (see [`DedicatedCluster`]).
    run_as: RunAs,
    pg_ctl: PathBuf,
    data: PathBuf,
    root: PathBuf,
    log: PathBuf,
}

impl Cluster {
    fn start(bin: &Path) -> Result<Cluster, String> {
        let run_as = RunAs::detect()?;
        let dir = tempfile::Builder::new()
            .prefix("latchkey-pg-")
            .tempdir_in(temp_base(&run_as))
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        let log = root.join("postgres.log");
        let pg_ctl = bin.join("pg_ctl");

        // Armed before anything is started, so that whatever happens from
        // here on is cleaned up when this process exits.
        spawn_watchdog(&run_as, &pg_ctl, &data, &root)?;

        // The server user must reach and own the directory.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod 755 {}: {e}", root.display()))?;
        if let RunAs::User { name, .. } = &run_as {
            let out = run(
                Command::new("chown").arg("-R").arg(name).arg(&root),
                COMMAND_TIMEOUT,
            )?;
            if !out.success {
                return Err(format!(
                    "chown -R {name} {} failed:\n{}",
                    root.display(),
                    out.text
                ));
            }
        }

        let out = run(
            run_as
                .command(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .current_dir(&root),
            COMMAND_TIMEOUT,
        )?;
        if !out.success {
            return Err(format!("initdb failed ({}):\n{}", out.status, out.text));
        }

        let port = start_on_free_port(&run_as, &pg_ctl, &data, &root, &log)?;
        let psql = find_psql(Some(bin))
            .ok_or_else(|| format!("no psql next to {} nor on PATH", bin.display()))?;
        Ok(Cluster {
            _dir: dir,
            psql,
            port,
            run_as,
            pg_ctl,
            data,
            root,
            log,
        })
    }

    fn create_database(&self) -> Result<String, String> {
        let name = unique_database_name();
        let port = self.port.to_string();
        let admin_url = format!("postgres://{SUPERUSER}@127.0.0.1:{port}/postgres");
        // PG* settings in the environment are meant for some other server.
        // template0: pristine, and nobody can be connected to it (a session
        // on the template makes a concurrent CREATE DATABASE fail).
        let mut cmd = psql_command(&self.psql, true);
        cmd.arg("-d")
            .arg(&admin_url)
            .arg("-c")
            .arg(format!("CREATE DATABASE \"{name}\" TEMPLATE template0"));
        let out = run(&mut cmd, COMMAND_TIMEOUT)?;
        if !out.success {
            return Err(format!(
                "CREATE DATABASE {name} on 127.0.0.1:{port} failed ({}):\n{}",
                out.status, out.text
            ));
        }
        Ok(format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{name}"))
    }
}

/// Starts the server on a port that was free a moment ago; another process
/// may grab it in between, hence the bounded retry.
fn start_on_free_port(
    run_as: &RunAs,
    pg_ctl: &Path,
    data: &Path,
    root: &Path,
    log: &Path,
) -> Result<u16, String> {
    let mut failures = String::new();
    for attempt in 1..=START_ATTEMPTS {
        let port = free_port()?;
        let out = pg_ctl_start(run_as, pg_ctl, data, root, log, port);
        match out {
            Ok(out) if out.success => return Ok(port),
            Ok(out) => {
                failures += &format!(
                    "\nattempt {attempt}, port {port}: pg_ctl {}:\n{}",
                    out.status, out.text
                )
            }
            Err(e) => failures += &format!("\nattempt {attempt}, port {port}: {e}"),
        }
        // A half-started server must not linger into the next attempt.
        let _ = run(
            run_as
                .command(pg_ctl)
                .arg("-D")
                .arg(data)
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .current_dir(root),
            Duration::from_secs(60),
        );
    }
    let log_tail = std::fs::read_to_string(log)
        .map(|text| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        })
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", log.display()));
    Err(format!(
        "pg_ctl start failed {START_ATTEMPTS} times:{failures}\n--- tail of {} ---\n{log_tail}",
        log.display()
    ))
}

/// `pg_ctl start` on `port`, waiting until the server accepts connections.
fn pg_ctl_start(
    run_as: &RunAs,
    pg_ctl: &Path,
    data: &Path,
    root: &Path,
    log: &Path,
    port: u16,
) -> Result<Output, String> {
    let options = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=300",
        sh_quote(&root.to_string_lossy())
    );
    run(
        run_as
            .command(pg_ctl)
            .arg("-D")
            .arg(data)
            .arg("-o")
            .arg(options)
            .args(["-w", "-t", &PG_CTL_WAIT_SECS.to_string(), "-l"])
            .arg(log)
            .arg("start")
            .current_dir(root),
        Duration::from_secs(PG_CTL_WAIT_SECS + 30),
    )
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?
        .port();
    Ok(port)
}

/// `lk_<pid>_<counter>_<nanos>`: unique within and across test processes.
fn unique_database_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("lk_{}_{n}_{nanos}", std::process::id())
}

/// Stops the cluster and removes `root` once this process has exited.
///
/// The loop runs in a background subshell of a short-lived `sh`, which is
/// waited for here: the watchdog is reparented at once (no zombie child),
/// lives in its own process group (a Ctrl-C aimed at the test run does not
/// kill it) and holds none of our stdio open.
fn spawn_watchdog(run_as: &RunAs, pg_ctl: &Path, data: &Path, root: &Path) -> Result<(), String> {
    let script = format!(
        "(while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         {prefix}{pg_ctl} -D {data} -m immediate -w -t {wait} stop; \
         rm -rf {root}) >/dev/null 2>&1 </dev/null &",
        pid = std::process::id(),
        prefix = run_as.shell_prefix(),
        pg_ctl = sh_quote(&pg_ctl.to_string_lossy()),
        data = sh_quote(&data.to_string_lossy()),
        wait = PG_CTL_WAIT_SECS,
        root = sh_quote(&root.to_string_lossy()),
    );
    let out = run(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir("/")
            .process_group(0),
        COMMAND_TIMEOUT,
    )?;
    if !out.success {
        return Err(format!(
            "cannot spawn the cleanup watchdog ({}):\n{}",
            out.status, out.text
        ));
    }
    Ok(())
}

/// Who runs initdb/pg_ctl/postgres. PostgreSQL refuses to run as root.
enum RunAs {
    Me,
    User { runuser: PathBuf, name: String },
}

impl RunAs {
    fn detect() -> Result<RunAs, String> {
        if effective_uid() != Some(0) {
            return Ok(RunAs::Me);
        }
        let runuser = find_on_path("runuser")
            .or_else(|| {
                ["/usr/sbin/runuser", "/sbin/runuser"]
                    .into_iter()
                    .map(PathBuf::from)
                    .find(|p| is_executable(p))
            })
            .ok_or("PostgreSQL refuses to run as root and `runuser` (util-linux) was not found")?;
        let name = if user_exists("postgres") {
            "postgres"
        } else {
            "nobody"
        };
        Ok(RunAs::User {
            runuser,
            name: name.to_string(),
        })
    }

    fn command(&self, program: &Path) -> Command {
        match self {
            RunAs::Me => Command::new(program),
            RunAs::User { runuser, name } => {
                let mut cmd = Command::new(runuser);
                cmd.arg("-u").arg(name).arg("--").arg(program);
                cmd
            }
        }
    }

    fn shell_prefix(&self) -> String {
        match self {
            RunAs::Me => String::new(),
            RunAs::User { runuser, name } => {
                format!(
                    "{} -u {} -- ",
                    sh_quote(&runuser.to_string_lossy()),
                    sh_quote(name)
                )
            }
        }
    }
}

fn effective_uid() -> Option<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        // "Uid:	real	effective	saved	filesystem"
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            return line.split_whitespace().nth(2)?.parse().ok();
        }
    }
    let out = Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Parent of the temporary directory. The server user must be able to
/// traverse every ancestor, and the socket path
/// (`<dir>/.s.PGSQL.<port>`) must fit the ~107-byte Unix socket limit;
/// otherwise fall back to /tmp rather than loosening someone's permissions.
fn temp_base(run_as: &RunAs) -> PathBuf {
    let base = std::env::temp_dir();
    let short_enough = base.as_os_str().len() <= 60;
    let traversable = match run_as {
        RunAs::Me => true,
        RunAs::User { .. } => base
            .ancestors()
            .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)),
    };
    if short_enough && traversable {
        base
    } else {
        PathBuf::from("/tmp")
    }
}

// ---------------------------------------------------------------------------
// External server (LATCHKEY_TEST_DATABASE_URL_PG)
// ---------------------------------------------------------------------------

struct ExternalServer {
    /// `postgres://user:pw@host:port`, without path or query.
    authority: String,
    /// Database psql connects to for `CREATE DATABASE`.
    admin_database: String,
    /// `?sslmode=…` etc., kept on every URL; empty if none.
    query: String,
    psql: PathBuf,
}

impl ExternalServer {
    fn new(url: &str) -> Result<ExternalServer, String> {
        let bad = |why: &str| format!("{ENV_EXTERNAL_URL}={url:?} is not usable: {why}");
        let url = url.trim();
        let (main, query) = match url.split_once('?') {
            Some((main, query)) => (main, format!("?{query}")),
            None => (url, String::new()),
        };
        let scheme_end = main
            .find("://")
            .ok_or_else(|| bad("expected postgres://user:pw@host:port"))?;
        if !matches!(&main[..scheme_end], "postgres" | "postgresql") {
            return Err(bad("the scheme must be postgres:// or postgresql://"));
        }
        let rest = &main[scheme_end + 3..];
        let (host_part, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host_part.is_empty() {
            return Err(bad("no host"));
        }
        let path = path.trim_matches('/');
        let psql = find_psql(find_server_bin_dir().as_deref()).ok_or_else(|| {
            bad("creating databases needs psql (Debian/Ubuntu: apt-get install postgresql-client)")
        })?;
        Ok(ExternalServer {
            authority: format!("{}://{host_part}", &main[..scheme_end]),
            admin_database: if path.is_empty() {
                "postgres".to_string()
            } else {
                path.to_string()
            },
            query,
            psql,
        })
    }

    fn create_database(&self) -> Result<String, String> {
        let name = unique_database_name();
        let admin_url = format!("{}/{}{}", self.authority, self.admin_database, self.query);
        let out = run(
            psql_command(&self.psql, false)
                .arg("-d")
                .arg(&admin_url)
                .arg("-c")
                .arg(format!("CREATE DATABASE \"{name}\" TEMPLATE template0")),
            COMMAND_TIMEOUT,
        )?;
        if !out.success {
            return Err(format!(
                "CREATE DATABASE {name} via {ENV_EXTERNAL_URL} failed ({}):\n{}",
                out.status, out.text
            ));
        }
        Ok(format!("{}/{name}{}", self.authority, self.query))
    }
}

// ---------------------------------------------------------------------------
// Binaries and processes
// ---------------------------------------------------------------------------

const SERVER_TOOLS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// `/usr/lib/postgresql/<version>/bin` (highest version first), else the
/// directory of `initdb` on PATH (symlinks resolved).
fn find_server_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| {
        SERVER_TOOLS
            .iter()
            .all(|tool| is_executable(&dir.join(tool)))
    };
    if let Some(dir) = debian_bin_dirs().into_iter().find(|d| has_tools(d)) {
        return Some(dir);
    }
    let initdb = find_on_path("initdb")?;
    let resolved = std::fs::canonicalize(&initdb)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let on_path = initdb.parent().map(Path::to_path_buf);
    [resolved, on_path]
        .into_iter()
        .flatten()
        .find(|d| has_tools(d))
}

/// Versioned bin directories under /usr/lib/postgresql, newest first.
fn debian_bin_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(DEBIAN_PG_ROOT) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// psql matching the server binaries if possible, else any psql around.
fn find_psql(server_bin: Option<&Path>) -> Option<PathBuf> {
    server_bin
        .into_iter()
        .map(Path::to_path_buf)
        .chain(debian_bin_dirs())
        .map(|dir| dir.join("psql"))
        .find(|p| is_executable(p))
        .or_else(|| find_on_path("psql"))
}

/// psql that ignores ~/.psqlrc, stops at the first error and cannot hang on
/// connecting. With `clean_env`, PG* environment variables are not passed on.
fn psql_command(psql: &Path, clean_env: bool) -> Command {
    let mut cmd = Command::new(psql);
    if clean_env {
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("PG") {
                cmd.env_remove(var);
            }
        }
    }
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

struct Output {
    success: bool,
    status: String,
    /// stdout followed by stderr, lossily decoded.
    text: String,
}

/// Runs `cmd` with stdin closed, collecting its output, killing it after
/// `timeout`.
fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let (tx, rx) = mpsc::channel();
    for (index, pipe) in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            let _ = tx.send((index, buf));
        });
    }
    drop(tx);

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} did not finish within {timeout:?} and was killed"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {shown}: {e}")),
        }
    };
    // Bounded too: a grandchild could in theory keep a pipe open.
    let mut streams = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok((index, buf)) => streams[index] = buf,
            Err(_) => break,
        }
    }
    let [stdout, stderr] = streams;
    Ok(Output {
        success: status.success(),
        status: status.to_string(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throwaway_cluster_creates_distinct_databases() {
        let Some(first) = fresh_database_url() else {
            return;
        };
        let Some(second) = fresh_database_url() else {
            return;
        };
        assert_ne!(first, second);

        let psql = find_psql(find_server_bin_dir().as_deref()).expect("psql");
        // Like create_database: the local cluster ignores PG* variables.
        let local = std::env::var(ENV_EXTERNAL_URL).map_or(true, |u| u.trim().is_empty());
        for url in [&first, &second] {
            let out = run(
                psql_command(&psql, local).args(["-A", "-t", "-d", url, "-c", "select 1"]),
                COMMAND_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                out.success,
                "psql {url} -c 'select 1' failed ({}):\n{}",
                out.status, out.text
            );
            assert_eq!(out.text.trim(), "1", "unexpected psql output for {url}");
        }
    }
}
