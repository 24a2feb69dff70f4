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
