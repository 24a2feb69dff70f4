//! Starts real nodes in regtest on free loopback ports, for tests and
//! benchmarks (`../shared/PEERS.md` has what they need): a node is a child
//! process with a temporary data directory, killed when dropped.

use crate::node::Node;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Litecoind {
    child: Option<Child>,
    pub rpc: u16,
    pub p2p: u16,
    connect_to: Option<u16>,
    dir: tempfile::TempDir,
}

impl Drop for Litecoind {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// A loopback port nothing listens on (for dead-node tests).
pub fn unused_port() -> u16 {
    free_port()
}

/// Whether `litecoind` is installed. Under `CI=true` its absence panics:
/// CI installs it (`.ci/setup`), so a missing peer is a failure, not a skip.
pub fn litecoind_installed() -> bool {
    let ok = Command::new("litecoind").arg("-version").stdout(Stdio::null()).status().is_ok();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "litecoind is missing (Debian package `litecoind`); CI must install it (.ci/setup)"
        );
    }
    ok
}

impl Litecoind {
    /// Starts a node (with a wallet unless `connect_to` is given, in which
    /// case it is a wallet-less peer of that P2P port) and waits for RPC.
    pub fn start(connect_to: Option<u16>) -> Result<Litecoind, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut l = Litecoind { child: None, rpc: free_port(), p2p: free_port(), connect_to, dir };
        l.run()?;
        Ok(l)
    }

    /// Kills the node (its data directory stays, for [`Litecoind::restart`]).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node again on the same ports and data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.run()
    }

    fn run(&mut self) -> Result<(), String> {
        let (rpc, p2p, connect_to, dir) = (self.rpc, self.p2p, self.connect_to, &self.dir);
        let mut cmd = Command::new("litecoind");
        cmd.arg("-regtest")
            .arg("-server")
            .args(["-rpcuser=u", "-rpcpassword=p"])
            .arg(format!("-rpcport={rpc}"))
            .arg(format!("-port={p2p}"))
            .args(["-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1", "-dnsseed=0"])
            .arg(format!("-datadir={}", dir.path().display()))
            .args(["-fallbackfee=0.0001", "-printtoconsole=0", "-maxmempool=1000"]);
        // (-bind and -listen=0 together are a start-up error.)
        match connect_to {
            Some(port) => cmd.args(["-listen=0", &format!("-connect=127.0.0.1:{port}"), "-disablewallet"]),
            None => cmd.args(["-connect=0", "-bind=127.0.0.1"]),
        };
        self.child = Some(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| format!("litecoind: {e}"))?);
        let n = self.node();
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = n.call("getblockchaininfo", json!([]), Duration::from_secs(5)) {
            if Instant::now() > deadline {
                return Err(format!("litecoind did not answer RPC within 60 s: {e}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    pub fn node(&self) -> Node {
        Node::new(&format!("http://u:p@127.0.0.1:{}", self.rpc)).expect("valid URL")
    }
}
