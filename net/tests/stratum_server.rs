//! The Stratum V1 server over real TCP, fed jobs directly (jobs with a
//! mainnet-like network target, so shares are judged against the share
//! target only): conformance per method with the messages real miners
//! send, every error code, share records in the shard's journal, and bad
//! input that never disturbs the other miners.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use otedama_engine::chain::address::{Coin, Network};
use otedama_engine::chain::devnet::Devnet;
use otedama_engine::chain::job::{CoinbaseConfig, Job};
use otedama_engine::stratum::record::ShareRecord;
use otedama_engine::stratum::session::{BIP320_MASK, PortRules};
use otedama_hashers::{Algorithm, Family, Target};
use otedama_journal::{Reader, ReaderOptions, kinds};
use otedama_net::stratum_client::{Message, MinerSession, grind};
use otedama_net::stratum_server::{StratumConfig, StratumServer};
use otedama_net::template_task::Work;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

fn address() -> String {
    bech32::segwit::encode(bech32::hrp::BCRT, bech32::segwit::VERSION_0, &[7u8; 20]).unwrap()
}

fn rules() -> PortRules {
    PortRules {
        family: Family::Sha256d,
        coin: Coin::Bitcoin,
        network: Network::Regtest,
        extranonce2_size: 8,
        version_mask: BIP320_MASK,
        difficulty: 0.0001,
        min_difficulty: 1e-6,
        max_difficulty: 1e6,
        ntime_future: 7200,
        solo: false,
    }
}

/// A job at `height` whose network target is mainnet's difficulty 1: no
/// share here is a block.
fn job(id: u64, height_salt: u32) -> Arc<Job> {
    let mut t = Devnet::new(Algorithm::Sha256d, 1_700_000_000 + height_salt).template(1_700_000_100);
    t.bits = "1d00ffff".into();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as u32;
    t.curtime = now as u64;
    Arc::new(Job::new(id, &t, &CoinbaseConfig::new(Coin::Bitcoin, Network::Regtest), &[0x51]).unwrap())
}

fn work(job: Arc<Job>, clean: bool) -> Work {
    Work { job, clean, node: 0, build: Duration::ZERO, learned: Instant::now() }
}

struct Server {
    server: Option<StratumServer>,
    jobs: mpsc::Sender<Work>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn server(tweak: impl FnOnce(&mut StratumConfig)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StratumConfig::parking("127.0.0.1:0".parse().unwrap(), rules(), dir.path().join("pool"));
    cfg.journal.segment_bytes = 1 << 20;
    tweak(&mut cfg);
    let (tx, rx) = mpsc::channel();
    let server = StratumServer::start(cfg, vec![], rx).unwrap();
    let addr = server.local_addr();
    tx.send(work(job(1, 0), true)).unwrap();
    Server { server: Some(server), jobs: tx, addr, dir }
}

impl Server {
    fn counters(&self) -> &otedama_net::stratum_server::StratumCounters {
        self.server.as_ref().unwrap().counters()
    }
    fn stop(&mut self) {
        self.server.take().unwrap().shutdown().unwrap();
    }
    fn share_records(&self) -> Vec<ShareRecord> {
        let mut r = Reader::open(self.dir.path().join("pool/shares-0"), 0, ReaderOptions::default()).unwrap();
        let mut out = Vec::new();
        while let Some(rec) = r.try_next().unwrap() {
            if rec.kind == kinds::SHARE {
                out.push(ShareRecord::decode(rec.payload).unwrap());
            }
        }
        out
    }
}

fn user() -> String {
    format!("{}.rig", address())
}

/// Waits for a job (the session keeps the newest).
fn wait_job(m: &mut MinerSession) {
    let until = Instant::now() + T;
    while m.job.is_none() {
        assert!(Instant::now() < until, "no job");
        m.next_message(Duration::from_millis(200)).unwrap();
    }
}

/// A share meeting (or, with `meets` false, missing) the session's difficulty.
fn find(m: &MinerSession, en2: u64, bits: Option<u32>, meets: bool) -> otedama_net::stratum_client::Share {
    let job = m.job.as_ref().unwrap();
    let target = Target::from_difficulty(m.difficulty, Family::Sha256d).unwrap();
    let en2 = en2.to_be_bytes();
    if meets {
        let mut start = 0u32;
        loop {
            if let Some(s) = grind(job, Family::Sha256d, (&m.extranonce1, &en2), bits, (start, 1 << 20), target, None).into_iter().next() {
                return s;
            }
            start += 1 << 20;
        }
    }
    let version = bits.map_or(job.version, |b| job.version | b);
    let nonce = (0u32..)
        .find(|&n| !target.is_met_by(&otedama_engine::chain::sha256d(&job.header(&m.extranonce1, &en2, job.ntime, n, version))))
        .unwrap();
    otedama_net::stratum_client::Share {
        job_id: job.job_id.clone(),
        extranonce2: en2.to_vec(),
        ntime: job.ntime,
        nonce,
        version_bits: bits,
        header: [0; 80],
        hash: [0; 32],
    }
}

fn submit(m: &mut MinerSession, s: &otedama_net::stratum_client::Share) -> Result<serde_json::Value, (i64, String)> {
    let id = m.submit(&user(), s).unwrap();
    m.answer(id, T).unwrap()
}

fn code(r: Result<serde_json::Value, (i64, String)>) -> i64 {
    r.expect_err("an error").0
}

#[test]
fn a_miner_goes_through_every_method_and_every_share_error_code() {
    let mut s = server(|_| {});
    // configure first (as ASICs do), subscribe, authorize.
    let mut m = MinerSession::connect(s.addr, &user(), "x", true, T).unwrap();
    assert_eq!(m.version_mask, BIP320_MASK);
    assert_eq!((m.extranonce1.len(), m.extranonce2_size), (4, 8));
    wait_job(&mut m);
    assert!(m.job.as_ref().unwrap().clean);
    assert_eq!(m.difficulty, 0.0001);

    // A good share, plain and version-rolled; then each refusal.
    let good = find(&m, 1, None, true);
    assert_eq!(submit(&mut m, &good), Ok(json!(true)));
    let rolled = find(&m, 2, Some(0x0040_0000), true);
    assert_eq!(submit(&mut m, &rolled), Ok(json!(true)));
    assert_eq!(code(submit(&mut m, &good)), 22, "duplicate");
    let outside = find(&m, 3, Some(0x0000_1000), true);
    assert_eq!(code(submit(&mut m, &outside)), 20, "version bits outside the mask");
    let low = find(&m, 4, None, false);
    assert_eq!(code(submit(&mut m, &low)), 23, "low difficulty");
    let mut stale = find(&m, 5, None, true);
    stale.job_id = "ffff".into();
    assert_eq!(code(submit(&mut m, &stale)), 21, "unknown job");
    let other = m
        .request("mining.submit", json!([format!("{}.other", address()), good.job_id, "0000000000000009", "00000000", "00000000"]))
        .unwrap();
    assert_eq!(code(m.answer(other, T).unwrap()), 24, "unauthorized worker");

    // suggest_difficulty is honoured (and answered) and set_difficulty follows.
    let id = m.request("mining.suggest_difficulty", json!([0.0002])).unwrap();
    assert_eq!(m.answer(id, T).unwrap(), Ok(json!(true)));
    assert_eq!(m.difficulty, 0.0002);
    let id = m.request("mining.extranonce.subscribe", json!([])).unwrap();
    assert_eq!(m.answer(id, T).unwrap(), Ok(json!(true)));
    let id = m.request("mining.teleport", json!([])).unwrap();
    assert_eq!(code(m.answer(id, T).unwrap()), 20);

    // A new block: the old job is stale, the new one clean.
    s.jobs.send(work(job(2, 1), true)).unwrap();
    let until = Instant::now() + T;
    while m.job.as_ref().unwrap().job_id != "2" {
        assert!(Instant::now() < until);
        m.next_message(Duration::from_millis(200)).unwrap();
    }
    assert!(m.job.as_ref().unwrap().clean);
    let mut old = good.clone();
    old.extranonce2 = 77u64.to_be_bytes().to_vec();
    assert_eq!(code(submit(&mut m, &old)), 21, "stale after a clean job");
    let fresh = find(&m, 6, None, true);
    assert_eq!(submit(&mut m, &fresh), Ok(json!(true)));

    // A session that never subscribed gets 25; resume returns the old extranonce1.
    let mut raw = otedama_net::stratum_client::Client::connect(s.addr, T).unwrap();
    let id = raw.request("mining.submit", json!([user(), "2", "0000000000000001", "00000000", "00000000"])).unwrap();
    match raw.read_message().unwrap().unwrap() {
        Message::Answer { id: got, result } => assert_eq!((got, result.unwrap_err().0), (id, 25)),
        other => panic!("{other:?}"),
    }
    let en1 = hex::encode(&m.extranonce1);
    drop(m);
    std::thread::sleep(Duration::from_millis(300));
    raw.request("mining.subscribe", json!(["cgminer/4.11", en1])).unwrap();
    match raw.read_message().unwrap().unwrap() {
        Message::Answer { result: Ok(v), .. } => assert_eq!(v[1], json!(en1), "resumed extranonce1"),
        other => panic!("{other:?}"),
    }

    // Password d= sets a fixed difficulty that suggest_difficulty leaves alone.
    let mut fixed = MinerSession::connect(s.addr, &user(), "d=0.0005", false, T).unwrap();
    wait_job(&mut fixed);
    assert_eq!(fixed.difficulty, 0.0005);
    let id = fixed.request("mining.suggest_difficulty", json!([0.001])).unwrap();
    assert_eq!(fixed.answer(id, T).unwrap(), Ok(json!(true)));
    assert_eq!(fixed.difficulty, 0.0005);

    let accepted = s.counters().shares_accepted.load(Ordering::Relaxed);
    assert_eq!(accepted, 3);
    s.stop();
    // Every accepted share is in the shard's journal, in integers.
    let recs = s.share_records();
    assert_eq!(recs.len(), 3);
    let t = Target::from_difficulty(0.0001, Family::Sha256d).unwrap();
    assert!(recs.iter().all(|r| r.address == address()
        && r.worker == user()
        && !r.block
        && r.network_target == Target::from_compact(0x1d00ffff).unwrap()));
    assert_eq!((recs[0].job, recs[0].share_target, recs[0].work), (1, t, otedama_engine::stratum::record::work_of(t)));
    assert_eq!(recs[2].job, 2);
}

#[test]
fn shutdown_asks_every_miner_to_reconnect() {
    let mut s = server(|_| {});
    let mut miners: Vec<MinerSession> = (0..5).map(|_| MinerSession::connect(s.addr, &user(), "x", false, T).unwrap()).collect();
    for m in &mut miners {
        wait_job(m);
    }
    s.stop();
    for m in &mut miners {
        let until = Instant::now() + T;
        while !m.ended {
            assert!(Instant::now() < until);
            match m.next_message(Duration::from_millis(200)) {
                Ok(Some(Message::Reconnect(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("closed before client.reconnect: {e}"),
            }
        }
    }
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn bad_input_gets_errors_or_a_disconnect_and_everyone_else_keeps_mining() {
    let s = server(|c| {
        c.line_timeout = Duration::from_millis(500);
        c.per_ip_limit = 300;
    });
    let mut good = MinerSession::connect(s.addr, &user(), "x", false, T).unwrap();
    wait_job(&mut good);
    let mut en2 = 100;
    let mut mine_one = |m: &mut MinerSession| {
        en2 += 1;
        let sh = find(m, en2, None, true);
        assert_eq!(submit(m, &sh), Ok(json!(true)), "the good miner is still served");
    };
    mine_one(&mut good);

    // Garbage and invalid JSON: an error each, the connection stays.
    let mut c = otedama_net::stratum_client::Client::connect(s.addr, T).unwrap();
    for bad in
        ["garbage\n", "{\"id\":1,\"method\":\n", "[1,2,3]\n", "{\"id\":2,\"method\":\"mining.submit\",\"params\":\"x\"}\n", "\u{0}\u{1}\n"]
    {
        c.send_raw(bad.as_bytes()).unwrap();
        match c.read_message().unwrap().unwrap() {
            Message::Answer { result, .. } => assert_eq!(result.unwrap_err().0, 20, "{bad:?}"),
            other => panic!("{other:?}"),
        }
    }
    c.send_raw(&[0xff, 0xfe, b'\n']).unwrap();
    assert!(matches!(c.read_message().unwrap().unwrap(), Message::Answer { result: Err((20, _)), .. }));

    // Thousands of bad shares: each refused, nobody disconnected.
    let mut flood = MinerSession::connect(s.addr, &user(), "x", false, T).unwrap();
    wait_job(&mut flood);
    let job_id = flood.job.as_ref().unwrap().job_id.clone();
    let mut batch = String::new();
    for i in 0..3000u32 {
        batch.push_str(&format!(
            "{{\"id\":{i},\"method\":\"mining.submit\",\"params\":[\"{}\",\"{job_id}\",\"{:016x}\",\"00000000\",\"{:08x}\"]}}\n",
            user(),
            i,
            i
        ));
    }
    let id = flood.request("mining.ping", json!([])).unwrap();
    assert_eq!(code(flood.answer(id, T).unwrap()), 20);
    let before = s.counters().errors[0].load(Ordering::Relaxed);
    {
        let mut raw = otedama_net::stratum_client::Client::connect(s.addr, T).unwrap();
        raw.request("mining.subscribe", json!([])).unwrap();
        raw.request("mining.authorize", json!([user(), "x"])).unwrap();
        raw.send_raw(batch.as_bytes()).unwrap();
        let mut refused = 0;
        while refused < 3000 {
            if let Message::Answer { id, result: Err((code, _)) } = raw.read_message().unwrap().unwrap() {
                assert!(id < 3000);
                assert!(code == 20 || code == 23, "{code}");
                refused += 1;
            }
        }
    }
    assert!(s.counters().errors[0].load(Ordering::Relaxed) + s.counters().errors[3].load(Ordering::Relaxed) >= before + 3000);
    mine_one(&mut good);

    // A 1 MB line: an error and a disconnect.
    let mut big = TcpStream::connect(s.addr).unwrap();
    big.set_read_timeout(Some(T)).unwrap();
    let line = vec![b'a'; 1 << 20];
    let _ = big.write_all(&line);
    let mut buf = Vec::new();
    let _ = big.read_to_end(&mut buf);
    assert!(String::from_utf8_lossy(&buf).contains("longer than"), "{:?}", String::from_utf8_lossy(&buf));
    assert!(s.counters().lines_too_long.load(Ordering::Relaxed) >= 1);

    // A slow sender (half a line, then nothing) is cut off.
    let mut slow = TcpStream::connect(s.addr).unwrap();
    slow.set_read_timeout(Some(T)).unwrap();
    slow.write_all(b"{\"id\":1,\"method\":\"mining.sub").unwrap();
    let t0 = Instant::now();
    assert_eq!(slow.read(&mut [0u8; 64]).unwrap_or(0), 0, "closed");
    assert!(t0.elapsed() < T);
    mine_one(&mut good);

    // A connect flood: past the per-IP limit connections are refused;
    // memory stays flat; the good miner keeps mining.
    let rss0 = rss_kib();
    for _ in 0..3 {
        let conns: Vec<TcpStream> = (0..400).filter_map(|_| TcpStream::connect(s.addr).ok()).collect();
        std::thread::sleep(Duration::from_millis(300));
        drop(conns);
        std::thread::sleep(Duration::from_millis(300));
        mine_one(&mut good);
    }
    assert!(s.counters().refused_per_ip.load(Ordering::Relaxed) >= 100);
    let grown = rss_kib().saturating_sub(rss0);
    assert!(grown < 64 << 10, "RSS grew {grown} KiB across the connect floods");
}

#[test]
fn stratum_over_tls_with_a_generated_certificate() {
    use otedama_net::stratum_server::{TlsListen, tls};
    use rustls::pki_types::pem::PemObject;
    use std::io::BufRead;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = tls::self_signed(certs.path(), &["localhost".into()]).unwrap();
    // Generated once, then reused.
    let fp = tls::fingerprint(&cert).unwrap();
    assert_eq!(tls::self_signed(certs.path(), &["localhost".into()]).unwrap().0, cert);
    assert_eq!(tls::fingerprint(&cert).unwrap(), fp);
    let config = tls::server_config(&cert, &key).unwrap();
    let s = server(|c| c.tls = Some(TlsListen { listen: "127.0.0.1:0".parse().unwrap(), config }));
    let addr = s.server.as_ref().unwrap().tls_addr().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cc = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(Arc::new(cc), "localhost".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let mut tls_stream = std::io::BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let hello = format!(
        "{{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"tls-test\"]}}\n{{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"{}\",\"x\"]}}\n",
        user()
    );
    tls_stream.get_mut().write_all(hello.as_bytes()).unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        tls_stream.read_line(&mut line).unwrap();
        got.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    assert_eq!(got[0]["id"], 1);
    assert_eq!(got[0]["result"][2], 8, "subscribed over TLS: {got:?}");
    assert_eq!(got[1]["method"], "mining.set_difficulty");
    assert_eq!((got[2]["id"].clone(), got[2]["result"].clone()), (json!(2), json!(true)));
    assert_eq!(got[3]["method"], "mining.notify");
    // Plain bytes on the TLS port are a TLS error: the connection ends,
    // the server goes on (the TLS session above still works).
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    raw.write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n").unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
    tls_stream.get_mut().write_all(b"{\"id\":3,\"method\":\"mining.suggest_difficulty\",\"params\":[0.001]}\n").unwrap();
    let mut line = String::new();
    tls_stream.read_line(&mut line).unwrap();
    assert!(line.contains("set_difficulty") || line.contains("\"id\":3"), "{line}");
}

/// Reads `m`'s messages until it holds job `job_id` again after a
/// `mining.set_extranonce` (the server resends the newest job, clean).
fn wait_moved(m: &mut MinerSession, old_en1: &[u8], job_id: &str) {
    let until = Instant::now() + T;
    while m.extranonce1 == old_en1 || m.job.as_ref().is_none_or(|j| j.job_id != job_id) {
        assert!(Instant::now() < until, "no set_extranonce and job");
        m.next_message(Duration::from_millis(200)).unwrap();
    }
}

#[test]
fn a_resume_from_the_same_address_moves_the_old_connection_with_set_extranonce() {
    let mut s = server(|_| {});
    // The miner's first connection: subscribed to extranonce changes (as
    // MinerSession always is), mining jobs 1 and 2.
    let mut old = MinerSession::connect(s.addr, &user(), "x", true, T).unwrap();
    wait_job(&mut old);
    s.jobs.send(work(job(2, 0), false)).unwrap();
    let until = Instant::now() + T;
    while old.job.as_ref().unwrap().job_id != "2" {
        assert!(Instant::now() < until);
        old.next_message(Duration::from_millis(200)).unwrap();
    }
    let en1 = old.extranonce1.clone();
    let on_job2 = find(&old, 1, None, true);
    let mut on_job1 = on_job2.clone();
    on_job1.job_id = "1".into();

    // Its new connection (same address) resumes that extranonce1 and gets it.
    let mut new = otedama_net::stratum_client::Client::connect(s.addr, T).unwrap();
    new.request("mining.subscribe", json!(["cgminer/4.11", hex::encode(&en1)])).unwrap();
    match new.read_message().unwrap().unwrap() {
        Message::Answer { result: Ok(v), .. } => assert_eq!(v[1], json!(hex::encode(&en1)), "the resume takes the value over"),
        other => panic!("{other:?}"),
    }

    // The old connection is moved: a fresh extranonce1, then job 2 again.
    wait_moved(&mut old, &en1, "2");
    assert_ne!(old.extranonce1, en1);
    assert_eq!((old.extranonce1.len(), old.extranonce2_size), (4, 8));
    assert!(old.job.as_ref().unwrap().clean, "the job after set_extranonce is clean");
    assert_eq!(s.counters().extranonce_moved.load(Ordering::Relaxed), 1);
    // Work built on the old value: a job sent before the change is stale,
    // the resent job fails its proof of work under the new value.
    assert_eq!(code(submit(&mut old, &on_job1)), 21, "job sent before the change");
    assert_eq!(code(submit(&mut old, &on_job2)), 23, "old extranonce1 on the resent job");
    let fresh = find(&old, 1, None, true);
    assert_eq!(submit(&mut old, &fresh), Ok(json!(true)), "work on the new extranonce1");

    // A connection that never asked for extranonce changes cannot be moved:
    // a resume of its value from the same address disconnects it.
    let mut plain = otedama_net::stratum_client::Client::connect(s.addr, T).unwrap();
    plain.request("mining.subscribe", json!(["bfgminer/5.5"])).unwrap();
    let plain_en1 = match plain.read_message().unwrap().unwrap() {
        Message::Answer { result: Ok(v), .. } => v[1].as_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    let mut again = otedama_net::stratum_client::Client::connect(s.addr, T).unwrap();
    again.request("mining.subscribe", json!(["bfgminer/5.5", plain_en1])).unwrap();
    match again.read_message().unwrap().unwrap() {
        Message::Answer { result: Ok(v), .. } => assert_eq!(v[1], json!(plain_en1)),
        other => panic!("{other:?}"),
    }
    let until = Instant::now() + T;
    loop {
        match plain.read_message() {
            Ok(None) | Err(_) => break,
            Ok(Some(_)) => assert!(Instant::now() < until, "the unmovable session is disconnected"),
        }
    }
    assert_eq!(s.counters().extranonce_disconnected.load(Ordering::Relaxed), 1);

    // Everyone else kept mining: the moved session's share was journaled.
    s.stop();
    assert_eq!(s.share_records().len(), 1);
}
