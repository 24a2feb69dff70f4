//! Shared helpers for Otedama's cross-process integration tests: they run
//! the real `otedama` binary, built once per test run.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Path of the `otedama` binary, built on first use with the `test`
/// profile, so it reuses the dependencies `cargo test` already built.
pub fn otedama_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let run = escargot::CargoBuild::new()
            .package("otedama")
            .bin("otedama")
            .current_target()
            .arg("--profile=test")
            .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
            .run()
            .expect("building the otedama binary");
        run.path().to_owned()
    })
    .clone()
}

/// A command for the binary with no inherited OTEDAMA_* configuration.
pub fn otedama() -> Command {
    let mut c = Command::new(otedama_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEDAMA_") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs a command and returns its output, with stdout/stderr as text.
pub fn run(mut c: Command) -> (Output, String, String) {
    let out = c.output().expect("running otedama");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// A running `otedama` child whose stdout is read line by line.
pub struct Spawned {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Spawned {
    pub fn start(mut c: Command) -> Spawned {
        use std::io::BufRead;
        c.stdout(std::process::Stdio::piped());
        let mut child = c.spawn().expect("spawning otedama");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Spawned { child, lines, seen: Vec::new() }
    }

    /// Waits (up to a minute) for a stdout line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no line containing {needle:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Like [`Spawned::wait_for_line`], but a line already read counts too
    /// (for lines of children whose order is not fixed).
    pub fn wait_for_seen_or_new(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        self.wait_for_line(needle)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for exit; returns the status and all of stdout.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().expect("waiting for otedama");
        while let Ok(l) = self.lines.recv_timeout(std::time::Duration::from_secs(5)) {
            self.seen.push(l);
        }
        (status, self.seen.join("\n"))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over plain HTTP/1.1: (status, body). The API tests use it;
/// one request per connection.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connecting to the API");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// `otedama keys add` in `data` for `account` (admin or trader); returns
/// `KEYID:SECRET` as `otedama trade --key` takes it.
pub fn add_key(data: &str, account: &str, admin: bool) -> String {
    let mut c = otedama();
    c.args(["--data-dir", data, "keys", "add", "--account", account, "--json"]);
    if admin {
        c.arg("--admin");
    }
    let (out, stdout, stderr) = run(c);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("keys add --json prints JSON");
    format!("{}:{}", v["id"].as_str().expect("id"), v["secret"].as_str().expect("secret"))
}

/// `otedama trade` against `addr`: (succeeded, stdout and stderr).
pub fn trade(addr: &str, key: &str, args: &[&str]) -> (bool, String) {
    let mut c = otedama();
    c.args(["trade", "--addr", addr, "--key", key]).args(args);
    let (out, stdout, stderr) = run(c);
    (out.status.success(), format!("{stdout}{stderr}"))
}
