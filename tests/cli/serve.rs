//! `latchkey serve`: the listening line, the one-time setup URL, signals, the default
//! database path and the environment variables of SPEC §1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;

/// Checks the printed setup URL and creates the first admin with its token.
async fn complete_setup(server: &mut Proc) {
    let setup = server.setup_url();
    let url = url::Url::parse(&setup).expect("setup URL parses");
    assert_eq!(url.path(), "/setup");
    assert_eq!(
        url.port_or_known_default(),
        Some(server.addr.port()),
        "{setup}"
    );
    let token = url
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .expect("token parameter");
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");

    assert_eq!(properties(server).await["setup_required"], json!(true));
    let page = client().get(&setup).send().await.expect("setup page");
    assert_eq!(page.status(), StatusCode::OK);

    let body = json!({
        "token": token,
        "user": {"email": ADMIN_EMAIL, "first_name": "Grace", "last_name": "Hopper",
                 "password": ADMIN_PASSWORD},
    });
    let res = client()
        .post(server.url("/api/setup"))
        .json(&body)
        .send()
        .await
        .expect("setup");
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = session_cookie(&res).expect("setup signs the admin in");
    let me = current_user(server, &cookie).await;
    assert_eq!(me["email"], json!(ADMIN_EMAIL));
    assert_eq!(me["is_superuser"], json!(true));
    assert_eq!(properties(server).await["setup_required"], json!(false));

    // The token works once.
    let again = client()
        .post(server.url("/api/setup"))
        .json(&body)
        .send()
        .await
        .expect("second setup");
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
    let res = password_login(server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn assert_healthy(server: &Proc) {
    let res = client()
        .get(server.url("/api/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(res.status(), StatusCode::OK);
}

#[track_caller]
fn assert_clean_exit(server: &mut Proc, signal: &str) {
    server.signal(signal);
    let status = server.wait_exit(DEADLINE);
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIG{signal}: {status}; output:\n{}",
        server.output()
    );
}

cli_both_backends! {
    async fn setup_url_creates_the_admin_then_sigterm_exits_0(db) {
        let mut server = Proc::serve(&db);
        assert_healthy(&server).await;
        complete_setup(&mut server).await;
        assert_clean_exit(&mut server, "TERM");
    }

    async fn sigint_exits_0(db) {
        let mut server = Proc::serve(&db);
        assert_healthy(&server).await;
        // A pooled keep-alive connection must not hold the shutdown up.
        let c = client();
        for _ in 0..2 {
            let res = c.get(server.url("/api/ready")).send().await.expect("ready");
            assert_eq!(res.status(), StatusCode::OK);
        }
        assert_clean_exit(&mut server, "INT");
    }

    async fn admin_created_by_the_cli_retires_the_setup_url(db) {
        let mut server = Proc::serve(&db);
        let setup = server.setup_url();
        let token = setup.rsplit("token=").next().expect("token").to_owned();
        admin_create(&db, ADMIN_EMAIL, ADMIN_PASSWORD).success();
        assert_eq!(properties(&server).await["setup_required"], json!(false));
        let res = client()
            .post(server.url("/api/setup"))
            .json(&json!({"token": token, "user": {"email": "late@example.com",
                          "first_name": "L", "password": "late password"}}))
            .send()
            .await
            .expect("setup");
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_clean_exit(&mut server, "TERM");

        // Restarted with an admin in place: no setup URL at all.
        let mut again = Proc::serve(&db);
        assert!(
            !again.output().contains("/setup?token="),
            "no setup URL once an admin exists:\n{}",
            again.output()
        );
        assert_clean_exit(&mut again, "TERM");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_database_is_latchkey_data_in_the_working_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = command(&["serve", "--listen", "127.0.0.1:0"]);
    cmd.current_dir(dir.path());
    let mut server = Proc::start(cmd);
    let db = dir.path().join("latchkey-data").join("latchkey.db");
    assert!(db.is_file(), "{} was created", db.display());
    server.setup_url();
    assert_healthy(&server).await;
    assert_clean_exit(&mut server, "TERM");

    // The other commands default to the same file.
    let mut cmd = command(&["admin", "list"]);
    cmd.current_dir(dir.path());
    let out = run_with(cmd, None).success();
    assert_eq!(out.stdout.trim(), "", "no admins yet");
    assert_eq!(
        std::fs::read_dir(dir.path())
            .expect("list dir")
            .map(|e| e.expect("entry").file_name())
            .collect::<Vec<_>>(),
        vec![std::ffi::OsString::from("latchkey-data")],
        "nothing else is created in the working directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_and_database_url_come_from_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, path) = sqlite_in(dir.path(), "from-env.db");
    let mut cmd = command(&["serve"]);
    cmd.env("LATCHKEY_LISTEN", "127.0.0.1:0")
        .env("LATCHKEY_DATABASE_URL", &url)
        .current_dir(dir.path());
    let mut server = Proc::start(cmd);
    assert!(path.is_file(), "{} was created", path.display());
    assert!(!dir.path().join("latchkey-data").exists());
    assert_healthy(&server).await;
    assert_clean_exit(&mut server, "TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, _) = sqlite_in(dir.path(), "x.db");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run(&["serve", "--listen", &addr, "--database-url", &url]).failure();
    assert!(
        out.stderr.contains("cannot listen") && out.stderr.contains(&addr),
        "{out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_is_a_clear_error_without_the_password() {
    // Nothing listens on port 1 of the loopback address.
    let url = "postgres://latchkey:hunter2-pw@127.0.0.1:1/latchkey";
    let out = run(&["serve", "--listen", "127.0.0.1:0", "--database-url", url]).failure();
    assert!(
        out.stderr
            .contains("cannot connect to the PostgreSQL database at 127.0.0.1:1/latchkey"),
        "{out:#?}"
    );
    assert!(
        !out.stderr.contains("hunter2") && !out.stdout.contains("hunter2"),
        "{out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_an_in_flight_request() {
    let db = Db::new(Backend::Sqlite).expect("sqlite");
    let mut server = Proc::serve(&db);
    let body = br#"{"username": "nobody@example.com", "password": "wrong password"}"#;
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream.set_write_timeout(Some(DEADLINE)).expect("timeout");
    write!(
        stream,
        "POST /api/session HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    )
    .expect("send headers");
    stream
        .write_all(&body[..10])
        .expect("send part of the body");
    stream.flush().expect("flush");
    // The server reads the headers and waits for the rest of the body.
    std::thread::sleep(Duration::from_millis(300));
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&body[10..]).expect("send the rest");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    assert!(
        response.starts_with("HTTP/1.1 401"),
        "the in-flight request was answered: {response:?}"
    );
    assert!(response.contains("invalid_credentials"), "{response}");
    let status = server.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", server.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_announce_the_address_too() {
    let db = Db::new(Backend::Sqlite).expect("sqlite");
    let mut server = Proc::start(command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--log-format",
        "json",
    ]));
    let line = server.wait_for_line("listening on http://", DEADLINE);
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    let message = event["fields"]["message"].as_str().expect("message field");
    assert_eq!(message, format!("listening on http://{}", server.addr));
    assert!(server.setup_url().contains("/setup?token="));
    assert_healthy(&server).await;
    assert_clean_exit(&mut server, "TERM");
}

/// The access line of a request: its id (the response's `x-request-id`), method, path without
/// the query, status and latency, once per request, as the log filter allows. Under a filter
/// that names a span, the line is written through `tracing` rather than directly, with the
/// same fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_carry_the_request_without_its_query_as_the_filter_allows() {
    for (filter, logged) in [
        ("info,sqlx=warn", true),
        ("info,sqlx=warn,[sso]=debug", true),
        // `latchkey::app` prints the listening line.
        ("warn,latchkey::app=info", false),
        ("info,latchkey::http::context=warn", false),
    ] {
        let db = Db::new(Backend::Sqlite).expect("sqlite");
        let mut cmd = command(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
        ]);
        cmd.env("RUST_LOG", filter);
        let mut server = Proc::start(cmd);
        let res = client()
            .get(server.url("/auth/sso?jwt=aaa.bbb.ccc&return_to=%2F"))
            .send()
            .await
            .expect("sso request");
        let status = res.status().as_u16();
        let id = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("a request id")
            .to_owned();
        if logged {
            let line = server.wait_for_line(&format!("request_id={id}"), DEADLINE);
            let fields = format!(" method=GET path=/auth/sso status={status} latency_ms=");
            let at = line
                .find("  INFO request request_id=")
                .unwrap_or_else(|| panic!("{line}"));
            assert_eq!(at, 27, "after the clock: {line}");
            let rest = &line[at + "  INFO request request_id=".len() + id.len()..];
            assert!(rest.starts_with(&fields), "{filter}: {line}");
            let latency: f64 = rest[fields.len()..]
                .parse()
                .unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(latency > 0.0, "{line}");
        }
        assert_clean_exit(&mut server, "TERM");
        let output = server.output();
        assert!(!output.contains("aaa.bbb"), "no token in the log: {output}");
        assert_eq!(
            output.matches(" request request_id=").count(),
            usize::from(logged),
            "{filter}: {output}"
        );
    }
}

/// Limits `cmd` to one CPU, the last this test's thread may use (as `taskset` would; the last,
/// since benchmarks pin their servers to the first).
fn pin_to_one_cpu(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `cpu_set_t` is plain bytes, for which all zeros is the empty set; the calls get
    // its true size, and `CPU_ISSET`/`CPU_SET` check the index against it.
    let one = unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, size, &mut allowed),
            0,
            "sched_getaffinity"
        );
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .rev()
            .find(|&c| libc::CPU_ISSET(c, &allowed))
            .expect("a CPU this thread may use");
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        one
    };
    // SAFETY: between fork and exec the closure makes one system call and allocates
    // nothing (an error is made from the OS's code only).
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, size, &one) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

cli_both_backends! {
    async fn on_one_cpu_it_serves_on_one_thread_and_signs_people_in(db) {
        let mut cmd = command(&["serve", "--listen", "127.0.0.1:0", "--database-url", &db.url]);
        pin_to_one_cpu(&mut cmd);
        let mut server = Proc::start(cmd);
        // Logged from the scheduler the runtime has, not from the CPU count.
        server.wait_for_line("requests are served on one thread", DEADLINE);
        configure_jwt(&db, "https://idp.example/login", SECRET);
        wait_for_property(&server, "jwt_enabled", json!(true), SETTING_PROPAGATION).await;

        // Sixteen logins at once (on SQLite they queue for the login writer together).
        let mut logins = tokio::task::JoinSet::new();
        for i in 0..16 {
            let token = crate::support::sign(crate::support::login_claims(&format!(
                "one-cpu-{i}@example.com"
            )));
            let url = server.url("/auth/sso");
            logins.spawn(async move {
                client()
                    .get(url)
                    .query(&[("jwt", token.as_str()), ("return_to", "/welcome")])
                    .send()
                    .await
                    .expect("sso callback")
            });
        }
        let mut cookies = Vec::new();
        while let Some(res) = logins.join_next().await {
            let res = res.expect("login task");
            assert_redirects_to(&res, &server, "/welcome");
            cookies.push(session_cookie(&res).expect("latchkey.session cookie"));
        }
        let mut emails = std::collections::BTreeSet::new();
        for cookie in &cookies {
            let me = current_user(&server, cookie).await;
            emails.insert(me["email"].as_str().expect("email").to_owned());
        }
        let expected: std::collections::BTreeSet<String> =
            (0..16).map(|i| format!("one-cpu-{i}@example.com")).collect();
        assert_eq!(emails, expected, "one user per login, each signed in");
        assert_clean_exit(&mut server, "TERM");
    }
}
