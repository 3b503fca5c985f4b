//! The served page in a real browser: Debian's Chromium, driven headless
//! by `tests/browser/e2e.mjs` (playwright-core). Two pages chat as alice
//! and bob with a `wshub-client` called carol; broadcast, directed
//! messages and markup-as-text are checked; then the server restarts on
//! the same port and both pages must reconnect by themselves and chat
//! again. A third page meets a server with a token: it must say so, and
//! connect once the token is typed in. Screenshots of the pages go to
//! `tests/artifacts/`.
//!
//! This file owns the processes (server, client, node) and answers the
//! script's `@@` requests; the script owns the browser.
//!
//! Without Chromium, node or `tests/browser/node_modules` the test says it
//! was skipped and passes, unless `CI=true`, where that is a failure.
//! `.ci/install-browser` installs all three.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{client_bin, server_bin, Proc, WAIT};

/// The whole browser run, restart included.
const RUN_LIMIT: Duration = Duration::from_secs(200);

#[test]
fn two_pages_and_a_client_chat_through_a_restart() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = match prerequisites(&dir) {
        Ok(path) => path,
        Err(why) if in_ci() => panic!("the browser test cannot run in CI: {why}"),
        Err(why) => return skip(&why),
    };
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).expect("create tests/artifacts");

    let (server, addr) = server_bin(&[]);
    let carol = client_bin(&[&format!("ws://{addr}/carol"), "--no-stdin"]);
    carol.stderr.wait_for("connected");
    let mut harness = Harness {
        server,
        addr,
        carol,
        token_server: None,
    };

    let script = dir.join("e2e.mjs");
    let mut node = Proc::spawn(
        "node",
        &[
            path_str(&script),
            &format!("http://{addr}/"),
            path_str(&artifacts),
            path_str(&chromium),
        ],
    );
    let deadline = Instant::now() + RUN_LIMIT;
    while let Some(line) = next_line(&mut node, deadline) {
        match line.strip_prefix("@@ ") {
            Some(request) => {
                let reply = harness.handle(request);
                node.send_line(&reply);
            }
            None => eprintln!("e2e: {line}"),
        }
    }
    let code = node.wait_exit();
    assert_eq!(
        code,
        0,
        "the browser test failed (screenshots in tests/artifacts/):\n{}\n{}",
        node.stdout.all().join("\n"),
        node.stderr.all().join("\n")
    );
    update_readme_screenshot(&artifacts.join("alice-desktop.png"), &dir.join("page.png"));
}

/// The processes the script asks about.
struct Harness {
    server: Proc,
    addr: SocketAddr,
    carol: Proc,
    token_server: Option<Proc>,
}

impl Harness {
    /// Carries out one `@@` request; the answer is "ok" (with any result
    /// after a space) or why not.
    fn handle(&mut self, request: &str) -> String {
        let (verb, arg) = request.split_once(' ').unwrap_or((request, ""));
        match verb {
            "carol-next" => match self.carol.stdout.next(WAIT) {
                Some(line) if line == arg => "ok".into(),
                Some(line) => format!("carol got {line:?} first"),
                None => format!("carol got nothing within {WAIT:?}"),
            },
            "stop-server" => {
                self.server.terminate();
                match self.server.wait_exit() {
                    0 => "ok".into(),
                    code => format!("the server exited with {code}"),
                }
            }
            "start-server" => {
                let bind = self.addr.to_string();
                self.server = Proc::spawn(env!("CARGO_BIN_EXE_wshub-server"), &["--bind", &bind]);
                self.server
                    .stderr
                    .wait_for(&format!("listening on ws://{bind}"));
                "ok".into()
            }
            "start-token-server" => {
                let (proc, addr) = server_bin(&["--token", "s3cret"]);
                self.token_server = Some(proc);
                format!("ok http://{addr}/")
            }
            _ => format!("unknown request {request:?}"),
        }
    }
}

/// The next stdout line of `node`, or `None` once it has closed stdout.
fn next_line(node: &mut Proc, deadline: Instant) -> Option<String> {
    loop {
        if let Some(line) = node.stdout.next(Duration::from_millis(200)) {
            return Some(line);
        }
        if node.child.try_wait().ok().flatten().is_some() {
            // Exited: drain what it printed last.
            return node.stdout.next(Duration::from_millis(200));
        }
        assert!(
            Instant::now() < deadline,
            "the browser test ran over {RUN_LIMIT:?}:\n{}\n{}",
            node.stdout.all().join("\n"),
            node.stderr.all().join("\n")
        );
    }
}

/// The Chromium to drive, or why the test cannot run here.
fn prerequisites(dir: &Path) -> Result<PathBuf, String> {
    let chromium = std::env::var_os("WSHUB_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!("{} is missing", chromium.display()));
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|out| out.status.success()) {
        return Err("node is missing".into());
    }
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Err("tests/browser/node_modules is missing (npm ci in tests/browser)".into());
    }
    Ok(chromium)
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Says loudly that the test did not run. Written to the real stderr, not
/// through `eprintln!`, so `cargo test` shows it although the test passes.
fn skip(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\nSKIPPED browser test: {why}; run .ci/install-browser to install \
         Chromium and playwright-core (with CI=true this is a failure)\n"
    );
}

/// Copies the fresh screenshot to `tests/browser/page.png` (the README's
/// picture) when there is none yet or `WSHUB_UPDATE_SCREENSHOT=1` asks
/// for it, so ordinary runs do not rewrite a committed file.
fn update_readme_screenshot(shot: &Path, committed: &Path) {
    let asked = std::env::var("WSHUB_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1");
    if asked || !committed.exists() {
        std::fs::copy(shot, committed).expect("copy the screenshot to tests/browser/page.png");
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("paths in this repository are UTF-8")
}
