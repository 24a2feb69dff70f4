//! `otedama trade`: a terminal client for the binary order-entry protocol.
//! Each invocation logs in, sends one message, prints every answer (one
//! line each) until the session has been quiet for a moment, and exits
//! non-zero if the message was rejected.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use otedama_net::client::Client;
use otedama_net::wire::{self, ServerMsg};

#[derive(Debug, clap::Args)]
pub struct TradeArgs {
    /// The engine's order-entry address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub addr: SocketAddr,
    /// `KEYID:SECRET` as `otedama keys add` printed them.
    #[arg(long, env = "OTEDAMA_TRADE_KEY")]
    pub key: String,
    /// How long to keep printing answers after the last one (ms).
    #[arg(long, default_value_t = 300)]
    pub quiet_ms: u64,
    /// Replay this session's sequenced messages from this sequence number
    /// first (they are printed before anything new).
    #[arg(long, default_value_t = 0)]
    pub replay_from: u64,
    /// Ack-on-durable: answers arrive only once the journal has synced them.
    #[arg(long)]
    pub durable: bool,
    #[command(subcommand)]
    pub what: TradeCmd,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Tif {
    Gtc,
    Ioc,
    Fok,
}

#[derive(Debug, clap::Subcommand)]
pub enum TradeCmd {
    /// Admin: open a ledger account.
    CreateAccount { account: u32 },
    /// Admin: credit an account.
    Deposit { account: u32, asset: u16, amount: u64 },
    /// Admin: debit an account.
    Withdraw { account: u32, asset: u16, amount: u64 },
    /// Admin: add an instrument (prices in ticks, quantities in lots).
    AddInstrument {
        #[arg(long)]
        id: u16,
        #[arg(long)]
        symbol: String,
        #[arg(long)]
        base: u16,
        #[arg(long)]
        quote: u16,
        #[arg(long, default_value_t = 1)]
        tick: i64,
        #[arg(long, default_value_t = 1)]
        lot: u64,
        #[arg(long, default_value_t = 1)]
        min_price: i64,
        #[arg(long, default_value_t = 1_000_000)]
        max_price: i64,
        #[arg(long, default_value_t = 1)]
        min_qty: u64,
        #[arg(long, default_value_t = 1_000_000_000)]
        max_qty: u64,
        #[arg(long, default_value_t = 1)]
        quote_per_unit: u64,
        #[arg(long, default_value_t = 1)]
        base_per_unit: u64,
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        maker_bps: i32,
        #[arg(long, default_value_t = 0)]
        taker_bps: i32,
    },
    /// Buy: a limit order with --price, else a market order.
    Buy(OrderArgs),
    /// Sell: a limit order with --price, else a market order.
    Sell(OrderArgs),
    /// Reduce an order's remaining quantity to --qty (0: cancel it).
    Cancel {
        order: u64,
        #[arg(long, default_value_t = 0)]
        qty: u64,
        #[arg(long, default_value_t = 0)]
        account: u32,
    },
    /// Cancel every order of the account (optionally one instrument).
    MassCancel {
        #[arg(long)]
        instrument: Option<u16>,
        #[arg(long, default_value_t = 0)]
        account: u32,
    },
    /// Admin: the engine shard's service-time percentiles (ns) since the
    /// engine started or the last --reset.
    EngineStats {
        /// Start a new window after this reading.
        #[arg(long)]
        reset: bool,
    },
    /// Print what the session receives for a while (fills as maker...).
    Listen {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[derive(Debug, clap::Args)]
pub struct OrderArgs {
    pub instrument: u16,
    pub qty: u64,
    #[arg(long, allow_hyphen_values = true)]
    pub price: Option<i64>,
    #[arg(long, value_enum, default_value_t = Tif::Gtc)]
    pub tif: Tif,
    /// Market orders: the most quote a buy may spend, fees included.
    #[arg(long)]
    pub budget: Option<u64>,
    /// Act for this account (admin keys only; 0: the key's own).
    #[arg(long, default_value_t = 0)]
    pub account: u32,
}

fn order(cs: u64, side: u8, o: &OrderArgs) -> wire::NewOrder {
    let base = wire::NewOrder { client_seq: cs, account: o.account, instrument: o.instrument, side, qty: o.qty, ..Default::default() };
    match o.price {
        Some(price) => wire::NewOrder { ord_type: 0, tif: o.tif as u8, price, ..base },
        None => wire::NewOrder { ord_type: 1, flags: if o.budget.is_some() { 2 } else { 0 }, budget: o.budget.unwrap_or(0), ..base },
    }
}

pub fn run(a: TradeArgs) -> Result<i32> {
    let (id, secret) = a.key.split_once(':').context("--key is KEYID:SECRET")?;
    let id = otedama_net::keys::parse_id(id).context("key id: 16 hex digits")?;
    let secret = otedama_net::keys::parse_secret(secret).context("secret: 64 hex digits")?;
    let opts = otedama_net::client::LoginOptions {
        next_seq: a.replay_from,
        flags: if a.durable { otedama_net::sessions::FLAG_ACK_ON_DURABLE } else { 0 },
        heartbeat_ms: 0,
    };
    let mut c = Client::login_with(a.addr, id, secret, opts).with_context(|| format!("logging in to {}", a.addr))?;
    let role = match c.role {
        1 => " (admin)",
        2 => " (drop copy)",
        _ => "",
    };
    println!("logged in: account {}{role}, next sequence {}", c.account, c.next_seq);
    let cs = c.take_client_seq();
    let mut listen_for = None;
    match &a.what {
        TradeCmd::CreateAccount { account } => c.send(|b| wire::CreateAccount { client_seq: cs, account: *account }.push(b))?,
        TradeCmd::Deposit { account, asset, amount } => {
            c.send(|b| wire::Deposit { client_seq: cs, account: *account, asset: *asset, reserved: 0, amount: *amount }.push(b))?
        }
        TradeCmd::Withdraw { account, asset, amount } => {
            c.send(|b| wire::Withdraw { client_seq: cs, account: *account, asset: *asset, reserved: 0, amount: *amount }.push(b))?
        }
        TradeCmd::AddInstrument {
            id,
            symbol,
            base,
            quote,
            tick,
            lot,
            min_price,
            max_price,
            min_qty,
            max_qty,
            quote_per_unit,
            base_per_unit,
            maker_bps,
            taker_bps,
        } => {
            anyhow::ensure!(symbol.len() <= 16, "a symbol has at most 16 bytes");
            let mut sym = [0u8; 16];
            sym[..symbol.len()].copy_from_slice(symbol.as_bytes());
            c.send(|b| {
                wire::AddInstrument {
                    client_seq: cs,
                    instrument: *id,
                    base: *base,
                    quote: *quote,
                    status: 0,
                    reserved: 0,
                    symbol: sym,
                    tick: *tick,
                    lot: *lot,
                    min_price: *min_price,
                    max_price: *max_price,
                    min_qty: *min_qty,
                    max_qty: *max_qty,
                    quote_per_unit: *quote_per_unit,
                    base_per_unit: *base_per_unit,
                    maker_bps: *maker_bps,
                    taker_bps: *taker_bps,
                }
                .push(b)
            })?
        }
        TradeCmd::Buy(o) => c.send(|b| order(cs, 0, o).push(b))?,
        TradeCmd::Sell(o) => c.send(|b| order(cs, 1, o).push(b))?,
        TradeCmd::Cancel { order, qty, account } => {
            c.send(|b| wire::Cancel { client_seq: cs, account: *account, reserved: 0, order: *order, qty: *qty }.push(b))?
        }
        TradeCmd::MassCancel { instrument, account } => c.send(|b| {
            wire::MassCancel {
                client_seq: cs,
                account: *account,
                instrument: instrument.unwrap_or(0),
                side: 0,
                flags: instrument.is_some() as u8,
            }
            .push(b)
        })?,
        TradeCmd::Listen { seconds } => listen_for = Some(Duration::from_secs(*seconds)),
        TradeCmd::EngineStats { reset } => {
            let m = c.engine_stats(*reset)?;
            println!(
                "{}",
                serde_json::json!({"commands": m.commands, "count": m.count, "since_ns": m.since_ns, "p50_ns": m.p50_ns,
                    "p90_ns": m.p90_ns, "p99_ns": m.p99_ns, "p999_ns": m.p999_ns, "max_ns": m.max_ns, "busy_ns": m.busy_ns})
            );
            return Ok(0);
        }
    }
    let mut rejected = false;
    let quiet = Duration::from_millis(a.quiet_ms);
    let until = listen_for.map(|d| Instant::now() + d);
    let mut answered = listen_for.is_some();
    loop {
        let wait = match until {
            Some(t) => t.saturating_duration_since(Instant::now()),
            None if answered => quiet,
            None => Duration::from_secs(10),
        };
        if wait.is_zero() {
            break;
        }
        match c.recv_timeout(wait)? {
            None if !answered => anyhow::bail!("no answer within 10 s"),
            None => break,
            Some(ServerMsg::Heartbeat(_)) => {}
            Some(m) => {
                if let ServerMsg::Rejected(r) = &m {
                    rejected |= r.client_seq == cs;
                }
                println!("{m:?}");
                answered = true;
            }
        }
    }
    c.send(|b| wire::Logout {}.push(b))?;
    Ok(if rejected { 1 } else { 0 })
}
