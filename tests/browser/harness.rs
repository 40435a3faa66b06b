//! Drives Debian's Chromium through chromedriver. One chromedriver per test binary, on a
//! free loopback port, killed when the binary exits; one fresh browser profile per test;
//! browser tests run one at a time (2 cores). Every wait is bounded.
//!
//! Without /usr/bin/chromium or /usr/bin/chromedriver the browser tests are skipped with a
//! loud message, unless LATCHKEY_TEST_REQUIRE_ALL=1 (CI), where that is a failure.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use thirtyfour::prelude::*;

use crate::support::pg::require_all;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any one wait for the page may take.
pub const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

static DRIVER_URL: OnceLock<Option<String>> = OnceLock::new();
static DRIVER_PGID: AtomicI32 = AtomicI32::new(0);
/// One browser at a time: the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

extern "C" fn kill_chromedriver() {
    let pgid = DRIVER_PGID.load(Ordering::SeqCst);
    if pgid > 0 {
        // The whole process group: chromedriver and any browser it still runs.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The chromedriver of this test binary, started on first use; `None` when the browser is
/// not installed (and that is allowed).
fn driver_url() -> Option<&'static str> {
    DRIVER_URL
        .get_or_init(|| {
            let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
                .into_iter()
                .filter(|p| !Path::new(p).exists())
                .collect();
            if !missing.is_empty() {
                let msg = format!(
                    "browser tests need {} (apt-get install -y chromium chromium-driver)",
                    missing.join(" and ")
                );
                if require_all() {
                    panic!("{msg}; LATCHKEY_TEST_REQUIRE_ALL=1 makes this a failure");
                }
                eprintln!("\n=============================================================");
                eprintln!("SKIPPED: {msg}");
                eprintln!("=============================================================\n");
                return None;
            }
            let port = free_port();
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .arg("--log-level=SEVERE")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver starts");
            DRIVER_PGID.store(child.id() as i32, Ordering::SeqCst);
            // Reaped when it exits; killed (with its browsers) when this binary exits.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            unsafe {
                libc::atexit(kill_chromedriver);
            }
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + WAIT;
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "chromedriver did not listen on {addr} within {WAIT:?}"
                );
                std::thread::sleep(POLL);
            }
            Some(format!("http://{addr}"))
        })
        .as_deref()
}

/// Where screenshots go when LATCHKEY_SCREENSHOTS=1.
pub fn screenshots_dir() -> Option<PathBuf> {
    std::env::var("LATCHKEY_SCREENSHOTS")
        .is_ok_and(|v| v == "1")
        .then(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots"))
}

pub struct Browser {
    pub driver: WebDriver,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// A new browser with a fresh profile; `None` when browser tests are skipped.
    pub async fn start() -> Option<Browser> {
        let url = driver_url()?;
        let turn = ONE_AT_A_TIME.lock().await;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(CHROMIUM).expect("binary");
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ] {
            caps.add_arg(arg).expect("arg");
        }
        caps.add_arg(&format!("--user-data-dir={}", profile.path().display()))
            .expect("profile arg");
        let driver = tokio::time::timeout(
            Duration::from_secs(60),
            WebDriver::builder(url, caps).request_timeout(Duration::from_secs(60)),
        )
        .await
        .expect("the browser starts within 60 s")
        .expect("a browser session");
        driver
            .set_page_load_timeout(Duration::from_secs(30))
            .await
            .expect("page load timeout");
        driver
            .set_script_timeout(Duration::from_secs(30))
            .await
            .expect("script timeout");
        Some(Browser {
            driver,
            _profile: profile,
            _turn: turn,
        })
    }

    pub async fn quit(self) {
        let _ = tokio::time::timeout(Duration::from_secs(20), self.driver.clone().quit()).await;
    }

    pub async fn goto(&self, url: &str) {
        self.driver
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub async fn find(&self, css: &str) -> WebElement {
        match self
            .driver
            .query(By::Css(css))
            .wait(WAIT, POLL)
            .first()
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let url = self
                    .driver
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                panic!("{css} did not appear within {WAIT:?} on {url}: {e}")
            }
        }
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self
            .driver
            .find_all(By::Css(css))
            .await
            .unwrap_or_default()
            .is_empty()
    }

    pub async fn visible(&self, css: &str) -> bool {
        match self.driver.find_all(By::Css(css)).await {
            Ok(found) => match found.first() {
                Some(e) => e.is_displayed().await.unwrap_or(false),
                None => false,
            },
            Err(_) => false,
        }
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.wait_displayed(&e, css).await;
        // Centre it first, as a person scrolling would: the sticky Save bar covers the
        // bottom edge of the window.
        let _ = self
            .driver
            .execute(
                "arguments[0].scrollIntoView({block: 'center', inline: 'nearest'});",
                vec![e.to_json().expect("element json")],
            )
            .await;
        e.click()
            .await
            .unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    async fn wait_displayed(&self, e: &WebElement, css: &str) {
        let deadline = Instant::now() + WAIT;
        while !(e.is_displayed().await.unwrap_or(false) && e.is_enabled().await.unwrap_or(false)) {
            assert!(
                Instant::now() < deadline,
                "{css} is not visible and enabled"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.wait_displayed(&e, css).await;
        e.clear()
            .await
            .unwrap_or_else(|err| panic!("clear {css}: {err}"));
        e.send_keys(text)
            .await
            .unwrap_or_else(|err| panic!("type into {css}: {err}"));
    }

    pub async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    /// Waits until the element's visible text contains `needle`; returns the text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Ok(found) = self.driver.find_all(By::Css(css)).await
                && let Some(e) = found.first()
            {
                last = e.text().await.unwrap_or_default();
                if last.contains(needle) {
                    return last;
                }
            }
            if Instant::now() > deadline {
                let url = self
                    .driver
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                panic!("{css} never contained {needle:?} (last text {last:?}) on {url}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn wait_gone(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        while self.visible(css).await {
            assert!(Instant::now() < deadline, "{css} is still shown");
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn url(&self) -> url::Url {
        self.driver.current_url().await.expect("current url")
    }

    /// Waits until the current URL's path (and query, when given) is `path`.
    pub async fn wait_path(&self, path: &str) -> url::Url {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.url().await;
            let here = match url.query() {
                Some(q) if path.contains('?') => format!("{}?{q}", url.path()),
                _ => url.path().to_owned(),
            };
            if here == path {
                return url;
            }
            assert!(Instant::now() < deadline, "never reached {path}; at {url}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// The id of the focused element.
    pub async fn focused_id(&self) -> String {
        self.driver
            .execute(
                "return document.activeElement ? document.activeElement.id : ''",
                vec![],
            )
            .await
            .expect("script")
            .convert::<String>()
            .unwrap_or_default()
    }

    pub async fn press(&self, key: impl Into<thirtyfour::TypingData>) {
        let active = self.driver.active_element().await.expect("active element");
        active.send_keys(key).await.expect("key");
    }

    pub async fn select_by_text(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        let select = thirtyfour::components::SelectElement::new(&e)
            .await
            .expect("a select");
        select
            .select_by_visible_text(text)
            .await
            .unwrap_or_else(|err| panic!("choose {text} in {css}: {err}"));
    }

    pub async fn set_width(&self, width: u32, height: u32) {
        self.driver
            .set_window_rect(0, 0, width, height)
            .await
            .expect("window size");
    }

    /// With LATCHKEY_SCREENSHOTS=1: a PNG of the page from its top, `width` wide and as
    /// tall as the page (at most `max_height`), in docs/screenshots.
    pub async fn screenshot(&self, name: &str, width: u32, max_height: u32) {
        let Some(dir) = screenshots_dir() else { return };
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        self.set_width(width, 900).await;
        let dialog_open = self.exists("dialog[open]").await;
        if !dialog_open {
            let _ = self.driver.execute("window.scrollTo(0, 0);", vec![]).await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let page_height = self
            .driver
            .execute("return document.documentElement.scrollHeight;", vec![])
            .await
            .expect("height")
            .convert::<i64>()
            .unwrap_or(900);
        // The outer window is taller than the page area by the (headless) browser chrome.
        let chrome = self
            .driver
            .execute("return window.outerHeight - window.innerHeight;", vec![])
            .await
            .expect("chrome height")
            .convert::<i64>()
            .unwrap_or(0);
        let height = page_height.clamp(600, max_height as i64);
        self.set_width(width, (height + chrome) as u32).await;
        if !dialog_open {
            let _ = self.driver.execute("window.scrollTo(0, 0);", vec![]).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let png = self.driver.screenshot_as_png().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
        self.set_width(1280, 900).await;
    }

    /// With LATCHKEY_SCREENSHOTS=1: a PNG of one element (the window made tall enough).
    pub async fn screenshot_element(&self, name: &str, css: &str, width: u32) {
        let Some(dir) = screenshots_dir() else { return };
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        self.set_width(width, 2400).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let e = self.find(css).await;
        let _ = self
            .driver
            .execute(
                "arguments[0].scrollIntoView({block: 'start'});",
                vec![e.to_json().expect("element json")],
            )
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let png = e.screenshot_as_png().await.expect("element screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
        self.set_width(1280, 900).await;
    }
}
