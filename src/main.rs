//! The `latchkey` command line: parsing only; the work is in the library.

use clap::{Args, Parser, Subcommand, ValueEnum};

use latchkey::commands;
use latchkey::store::DEFAULT_DATABASE_URL;

#[derive(Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Self-hosted JWT single sign-on, compatible with Metabase's JWT SSO."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Every argument read from the environment has `hide_env_values = true`: clap would
// otherwise print the variable's value in `--help`, and these include secrets and database
// URLs with passwords. The help still names the variable.

#[derive(Args, Clone)]
struct DbArgs {
    /// sqlite://path/to/file.db or postgres://user:password@host/db
    #[arg(long, env = "LATCHKEY_DATABASE_URL", hide_env_values = true, default_value = DEFAULT_DATABASE_URL)]
    database_url: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SQLite in ./latchkey-data by default; migrations run automatically).
    #[command(after_help = "Environment, besides the options above:\n  \
        LATCHKEY_<SETTING>                every setting, e.g. LATCHKEY_JWT_SHARED_SECRET (shown read-only in the UI)\n  \
        LATCHKEY_ENCRYPTION_KEY           key that encrypts secrets at rest (32 bytes, hex or base64)\n  \
        LATCHKEY_SQLITE_SYNCHRONOUS       normal (default) or full\n  \
        LATCHKEY_CLIENT_TIMEOUT_SECONDS   seconds a client has to send a request's headers, then its body (1-3600, default 130)\n  \
        RUST_LOG                          log filter (default info)")]
    Serve {
        /// Address and port to listen on.
        #[arg(
            long,
            env = "LATCHKEY_LISTEN",
            hide_env_values = true,
            default_value = "127.0.0.1:3000"
        )]
        listen: String,
        #[command(flatten)]
        db: DbArgs,
        /// Log format.
        #[arg(
            long,
            env = "LATCHKEY_LOG_FORMAT",
            hide_env_values = true,
            value_enum,
            default_value = "text"
        )]
        log_format: LogFormat,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Manage administrators.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Read and change settings (the same validation as the API).
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Mint test JWTs.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check a deployment (site URL, signing key, sign-in methods, clocks, JWKS, secrets at
    /// rest) and print each finding with its fix; exits non-zero when any finding is an error.
    Doctor {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Run a small example identity provider that signs tokens for any email and groups.
    ExampleIdp {
        /// The shared secret (jwt-shared-secret of the Latchkey server).
        #[arg(long, env = "LATCHKEY_JWT_SHARED_SECRET", hide_env_values = true)]
        secret: String,
        /// The Latchkey server to send people back to.
        #[arg(long, default_value = "http://localhost:3000")]
        site: String,
        #[arg(long, default_value = "127.0.0.1:3535")]
        listen: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an active administrator (reads the password from standard input).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        first_name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Set a user's password (reads it from standard input).
    SetPassword {
        #[arg(long)]
        email: String,
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List administrators.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum SettingsCommand {
    /// Print a setting's effective value as JSON (secrets masked unless --reveal).
    Get {
        key: String,
        #[arg(long)]
        reveal: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Set a setting. VALUE is JSON, or a bare string; null unsets it.
    Set {
        key: String,
        value: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List every setting with its effective value (secrets masked).
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Re-encrypt every stored secret setting with a new key, in one transaction. The old key
    /// comes from LATCHKEY_ENCRYPTION_KEY (not needed while secrets are stored in plain text:
    /// this is also how encryption is switched on), the new one from standard input or
    /// LATCHKEY_NEW_ENCRYPTION_KEY. Keys are 32 random bytes as 64 hex characters or base64.
    RotateEncryptionKey {
        /// Read the new key from the first line of standard input.
        #[arg(long)]
        new_key_stdin: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a token signed with HS256, iat = now and a random jti, with the configured
    /// server's secret, claim names (jwt-attribute-email, jwt-attribute-groups), issuer and
    /// audience. --secret signs with another secret and the default claim names, without
    /// issuer or audience; LATCHKEY_JWT_SHARED_SECRET, which fixes the server's secret, keeps
    /// the configured claim names.
    Sign {
        #[arg(long)]
        email: String,
        /// Comma-separated group names.
        #[arg(long)]
        groups: Option<String>,
        /// Extra claim as key=value (value is JSON, or a bare string); repeatable. It may
        /// replace any other claim, iat and jti included.
        #[arg(long = "claim")]
        claims: Vec<String>,
        /// Sign with this secret instead of the configured jwt-shared-secret.
        #[arg(long, env = "LATCHKEY_JWT_SHARED_SECRET", hide_env_values = true)]
        secret: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = match build_runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(run(cli));
}

/// Tokio's single-threaded scheduler when this process may use only one CPU (its affinity,
/// or a cgroup limit under two CPUs, as `available_parallelism` reads them; or when that
/// number is unknown, where the multi-threaded one would start one worker), the
/// multi-threaded, work-stealing one otherwise, or whenever `TOKIO_WORKER_THREADS` asks for
/// its workers. On one CPU the multi-threaded scheduler would run one worker all the same, and
/// its synchronisation on every wake costs more there than its instructions suggest
/// (docs/decisions.md, "One CPU, one thread").
fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let one_cpu = std::thread::available_parallelism().map_or(true, |n| n.get() == 1)
        && std::env::var_os("TOKIO_WORKER_THREADS").is_none();
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

async fn run(cli: Cli) {
    let json_logs = matches!(
        &cli.command,
        Command::Serve {
            log_format: LogFormat::Json,
            ..
        }
    );
    let serving = matches!(&cli.command, Command::Serve { .. });
    latchkey::telemetry::init(json_logs, serving);
    let result = match cli.command {
        Command::Serve { listen, db, .. } => commands::serve(&listen, &db.database_url).await,
        Command::Migrate { db } => commands::migrate(&db.database_url).await,
        Command::Admin(AdminCommand::Create {
            email,
            first_name,
            last_name,
            db,
            ..
        }) => commands::admin_create(&db.database_url, &email, first_name, last_name).await,
        Command::Admin(AdminCommand::SetPassword { email, db, .. }) => {
            commands::admin_set_password(&db.database_url, &email).await
        }
        Command::Admin(AdminCommand::List { db }) => commands::admin_list(&db.database_url).await,
        Command::Settings(SettingsCommand::Get { key, reveal, db }) => {
            commands::settings_get(&db.database_url, &key, reveal).await
        }
        Command::Settings(SettingsCommand::Set { key, value, db }) => {
            commands::settings_set(&db.database_url, &key, &value).await
        }
        Command::Settings(SettingsCommand::List { db }) => {
            commands::settings_list(&db.database_url).await
        }
        Command::Settings(SettingsCommand::RotateEncryptionKey { new_key_stdin, db }) => {
            commands::settings_rotate_encryption_key(&db.database_url, new_key_stdin).await
        }
        Command::Doctor { db } => commands::doctor(&db.database_url).await,
        Command::Token(TokenCommand::Sign {
            email,
            groups,
            claims,
            secret,
            db,
        }) => {
            commands::token_sign(&db.database_url, &email, groups.as_deref(), &claims, secret).await
        }
        Command::ExampleIdp {
            secret,
            site,
            listen,
        } => latchkey::example_idp::run(&secret, &site, &listen).await,
    };
    latchkey::telemetry::flush();
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// mimalloc rather than the C library's allocator: a request allocates and frees many small
/// objects across a few threads, and glibc's malloc was about a tenth of a request's time
/// (docs/performance.md). `latchkey::alloc` decides which of its calls serves a request.
#[global_allocator]
static GLOBAL: latchkey::alloc::Allocator = latchkey::alloc::Allocator;
