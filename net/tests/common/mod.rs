//! The test harness shared by the gateway and recovery tests: an
//! in-process gateway on a journal (files or the power-loss simulator),
//! keys, a market, and restarts that recover from the journal.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use otedama_engine::{AccountId, Limits};
use otedama_journal::{Durability, FileStorage, Options, Storage};
use otedama_net::client::{Client, LoginOptions};
use otedama_net::gateway::{EngineState, Gateway, GatewayConfig};
use otedama_net::keys::{Follow, KeyStore, NewKey, path_in};
use otedama_net::wire::{self, ServerMsg};

pub fn limits() -> Limits {
    Limits { accounts_max: 1000, assets_max: 8, instruments_max: 8, orders_max: 1 << 16, levels_max: 1 << 16, fee_account: AccountId(0) }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub gw: Option<Gateway>,
    pub admin: NewKey,
    /// Accounts 1..=4.
    pub traders: Vec<NewKey>,
    /// A drop copy of every account, and one of accounts 2 and 3.
    pub copy_all: NewKey,
    pub copy_23: NewKey,
    pub cfg: GatewayConfig,
    pub storage: Arc<dyn Storage>,
    pub opts: Options,
}

impl Env {
    pub fn start(tweak: impl FnOnce(&mut GatewayConfig)) -> Env {
        Self::start_with(2, tweak)
    }

    pub fn start_with(shards: usize, tweak: impl FnOnce(&mut GatewayConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FileStorage::new(dir.path().join("j")).unwrap());
        Self::start_on(dir, storage, Options { durability: Durability::None, ..Options::default() }, shards, tweak)
    }

    /// A gateway on `storage` (a new journal).
    pub fn start_on(
        dir: tempfile::TempDir,
        storage: Arc<dyn Storage>,
        opts: Options,
        shards: usize,
        tweak: impl FnOnce(&mut GatewayConfig),
    ) -> Env {
        let kp = path_in(dir.path());
        let mut ks = KeyStore::default();
        let admin = ks.add(0, true, "admin").unwrap();
        let traders: Vec<NewKey> = (1..=4).map(|a| ks.add(a, false, "").unwrap()).collect();
        let copy_all = ks.add_drop_copy(Follow::All, "all").unwrap();
        let copy_23 = ks.add_drop_copy(Follow::parse("2,3").unwrap(), "two and three").unwrap();
        ks.save(&kp).unwrap();
        let mut cfg = GatewayConfig::parking("127.0.0.1:0".parse().unwrap(), kp);
        cfg.io_cores = vec![None; shards];
        tweak(&mut cfg);
        let mut env = Env { dir, gw: None, admin, traders, copy_all, copy_23, cfg, storage, opts };
        env.boot();
        env
    }

    /// Recovers the state from the journal and starts the gateway on it.
    pub fn boot(&mut self) -> otedama_net::recovery::RecoveryReport {
        let (state, journal, rep) = otedama_net::recovery::recover(self.storage.clone(), self.opts.clone(), None, limits()).unwrap();
        self.gw = Some(Gateway::start(self.cfg.clone(), state, journal).unwrap());
        rep
    }

    /// Graceful stop; returns the final state.
    pub fn stop(&mut self) -> EngineState {
        let (state, journal, _) = self.gw.take().unwrap().shutdown().unwrap();
        journal.close().unwrap();
        state
    }

    pub fn addr(&self) -> SocketAddr {
        self.gw.as_ref().unwrap().local_addr()
    }

    pub fn admin(&self) -> Client {
        Client::login(self.addr(), self.admin.id, self.admin.secret).unwrap()
    }

    pub fn trader(&self, i: usize) -> Client {
        Client::login(self.addr(), self.traders[i].id, self.traders[i].secret).unwrap()
    }

    pub fn trader_with(&self, i: usize, opts: LoginOptions) -> Client {
        Client::login_with(self.addr(), self.traders[i].id, self.traders[i].secret, opts).unwrap()
    }

    pub fn key_login(&self, k: &NewKey, opts: LoginOptions) -> Client {
        Client::login_with(self.addr(), k.id, k.secret, opts).unwrap()
    }

    /// Accounts 1..=4 with 10^12 of assets 1 (base) and 2 (quote), and
    /// instrument 1 (tick 1, lot 1, prices 1..=10000).
    pub fn setup_market(&self) {
        let mut a = self.admin();
        for acct in 1..=4u32 {
            admin_ok(&mut a, |cs, b| wire::CreateAccount { client_seq: cs, account: acct }.push(b));
            for asset in [1u16, 2] {
                admin_ok(&mut a, |cs, b| {
                    wire::Deposit { client_seq: cs, account: acct, asset, reserved: 0, amount: 1_000_000_000_000 }.push(b)
                });
            }
        }
        let mut symbol = [0u8; 16];
        symbol[..7].copy_from_slice(b"BTC-USD");
        admin_ok(&mut a, |cs, b| {
            wire::AddInstrument {
                client_seq: cs,
                instrument: 1,
                base: 1,
                quote: 2,
                status: 0,
                reserved: 0,
                symbol,
                tick: 1,
                lot: 1,
                min_price: 1,
                max_price: 10_000,
                min_qty: 1,
                max_qty: 1_000_000,
                quote_per_unit: 1,
                base_per_unit: 1,
                maker_bps: -1,
                taker_bps: 5,
            }
            .push(b)
        });
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.take() {
            let _ = gw.shutdown();
        }
    }
}

/// Sends an admin command and expects Done with its client_seq.
pub fn admin_ok(c: &mut Client, f: impl FnOnce(u64, &mut Vec<u8>)) {
    let cs = c.take_client_seq();
    c.send(|b| f(cs, b)).unwrap();
    match c.next_app().unwrap() {
        ServerMsg::Done(d) => assert_eq!(d.client_seq, cs),
        other => panic!("expected Done for {cs}, got {other:?}"),
    }
}

pub fn order(cs: u64, side: u8, price: i64, qty: u64, tif: u8) -> wire::NewOrder {
    wire::NewOrder { client_seq: cs, account: 0, instrument: 1, side, ord_type: 0, tif, flags: 0, reserved: 0, price, qty, budget: 0 }
}
