//! A throwaway PostgreSQL server in a temporary directory, for the tests
//! and benchmarks that need a real one (as root, `initdb` and `pg_ctl`
//! run as the `postgres` user: they refuse to run as root). Never used by
//! the running API. Failures to run the server's tools panic: this is a
//! test fixture.

use std::path::{Path, PathBuf};
use std::process::Command as Proc;

/// A PostgreSQL server of its own, in a temporary directory. `None` when
/// PostgreSQL is not installed (outside CI; under `CI=true` that fails).
pub struct Pg {
    _dir: tempfile::TempDir,
    data: PathBuf,
    sock: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

fn as_postgres(bin: &Path, args: &[&str]) -> std::process::Output {
    let root = unsafe { geteuid() } == 0;
    let out = if root {
        Proc::new("runuser").args(["-u", "postgres", "--"]).arg(bin).args(args).output()
    } else {
        Proc::new(bin).args(args).output()
    };
    out.unwrap()
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

impl Pg {
    /// `None` when PostgreSQL is not installed (under `CI=true` that panics:
    /// CI installs it).
    pub fn start() -> Option<Pg> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|rd| rd.flatten().map(|e| e.path().join("bin")).find(|p| p.join("pg_ctl").exists()));
        let Some(bin) = bin else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL is missing (Debian package `postgresql`); CI must install it (.ci/setup)"
            );
            eprintln!("PostgreSQL is not installed: skipping");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = as_postgres(&bin.join("initdb"), &["-D", data.to_str().unwrap(), "--auth=trust", "-U", "postgres"]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Pg { _dir: dir, data, sock, bin, port };
        pg.up();
        Some(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again).
    pub fn up(&self) {
        let o = format!("-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off", self.port, self.sock.display());
        let out = as_postgres(&self.bin.join("pg_ctl"), &["-D", self.data.to_str().unwrap(), "-o", &o, "-w", "-l", "/dev/null", "start"]);
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the server at once (connections are cut).
    pub fn down(&self) {
        let out = as_postgres(&self.bin.join("pg_ctl"), &["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"), &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]);
    }
}
