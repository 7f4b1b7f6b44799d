//! A real headless Chromium for the tests that look at fedistill's pages (the coordinator's console, the
//! participant page, the audit report): `--dump-dom` for what the browser rendered (after the page's
//! scripts ran for a while of virtual time) and `--screenshot`. Chromium comes from Debian's `chromium`
//! package (`.ci/run` installs it); a test that needs it fails, naming the package, when it is missing.
//! Each test binary declares `mod chromium;` and uses part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The browser binary: `$FEDISTILL_CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FEDISTILL_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser"] {
        if let Some(dir) = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .find(|d| d.join(name).is_file())
        {
            return dir.join(name);
        }
    }
    panic!(
        "headless Chromium is required by this test and was not found: install Debian's `chromium` package \
         (apt-get install -y chromium; .ci/run does) or set FEDISTILL_CHROMIUM to the browser binary"
    );
}

fn run(args: &[String], profile: &Path) -> (bool, String, String) {
    let mut cmd = Command::new(binary());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chromium");
    // Chromium may hang on a broken page; never let a test wait forever.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("chromium output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The DOM Chromium rendered for `url` after `virtual_ms` of virtual time (timers and fetches of the page's
/// scripts run meanwhile). Panics with Chromium's stderr when it fails or prints nothing.
pub fn dump_dom(url: &str, virtual_ms: u64) -> String {
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let (ok, out, err) = run(
        &[
            format!("--virtual-time-budget={virtual_ms}"),
            "--dump-dom".into(),
            url.to_string(),
        ],
        profile.path(),
    );
    assert!(
        ok && out.contains("<html"),
        "chromium --dump-dom {url} failed:\n{out}\n{err}"
    );
    out
}

/// A `width`x`height` PNG screenshot of `url` at `png` (after `virtual_ms` of virtual time).
pub fn screenshot(url: &str, png: &Path, width: u32, height: u32, virtual_ms: u64) {
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let (_, out, err) = run(
        &[
            format!("--virtual-time-budget={virtual_ms}"),
            format!("--window-size={width},{height}"),
            format!("--screenshot={}", png.display()),
            url.to_string(),
        ],
        profile.path(),
    );
    let bytes = std::fs::read(png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}\n{out}\n{err}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
}

/// `file://` URL of a local file.
pub fn file_url(path: &Path) -> String {
    format!("file://{}", path.canonicalize().expect("absolute path").display())
}
