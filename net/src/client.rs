//! A client for the binary order-entry protocol (`net/PROTOCOL.md`):
//! blocking reads with an optional timeout, writes batched by the caller.
//! Used by `otedama loadgen`, `otedama bench gateway`, the tests, and later
//! by the cold path as an admin client.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::wire::{self, ServerMsg};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("server sent a bad frame: {0}")]
    Frame(#[from] wire::FrameError),
    #[error("login rejected (reason {0})")]
    LoginRejected(u16),
    #[error("server said goodbye (reason {0})")]
    Goodbye(u16),
    #[error("connection closed by the server")]
    Closed,
    #[error("unexpected message: {0:?}")]
    Unexpected(Box<ServerMsg>),
}

/// How a session logs in.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoginOptions {
    /// 0: no replay; n: replay from sequence n.
    pub next_seq: u64,
    /// [`crate::sessions::FLAG_ACK_ON_DURABLE`], [`crate::sessions::FLAG_CANCEL_ON_DISCONNECT`].
    pub flags: u32,
    /// 0: the server's interval.
    pub heartbeat_ms: u32,
}

/// What a reconnect found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// The sequence number the server continues with (what this client
    /// asked for, unless it lost messages).
    pub next_seq: u64,
    /// Messages this client saw that the server no longer has: it lost
    /// them in a crash before syncing (only possible for ack-on-match
    /// sessions). Their sequence numbers will be reused.
    pub lost: u64,
}

pub struct Client {
    stream: TcpStream,
    addr: SocketAddr,
    key: Option<(u64, [u8; 32])>,
    opts: LoginOptions,
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    wbuf: Vec<u8>,
    next_client_seq: u64,
    pub account: u32,
    pub admin: bool,
    /// 0 trader, 1 admin, 2 drop copy.
    pub role: u8,
    /// The sequence number the next sequenced message should carry.
    pub next_seq: u64,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            addr,
            key: None,
            opts: LoginOptions::default(),
            rbuf: vec![0; 64 << 10],
            rpos: 0,
            rlen: 0,
            wbuf: Vec::with_capacity(64 << 10),
            next_client_seq: 1,
            account: 0,
            admin: false,
            role: 0,
            next_seq: 1,
        })
    }

    /// Connects and logs in; returns once LoginAccepted arrived.
    pub fn login(addr: SocketAddr, key_id: u64, secret: [u8; 32]) -> Result<Client, ClientError> {
        Client::login_with(addr, key_id, secret, LoginOptions::default())
    }

    /// Connects and logs in with `opts` (replay, ack-on-durable,
    /// cancel-on-disconnect).
    pub fn login_with(addr: SocketAddr, key_id: u64, secret: [u8; 32], opts: LoginOptions) -> Result<Client, ClientError> {
        let mut c = Client::connect(addr)?;
        c.key = Some((key_id, secret));
        c.opts = opts;
        c.handshake(opts.next_seq)?;
        Ok(c)
    }

    /// After a disconnect (or to move to a restarted engine): connects
    /// again with the same key and flags and asks for every sequenced
    /// message after the last one received, which the server replays from
    /// its journal before anything new. `client_seq` continues above the
    /// highest the engine took.
    pub fn reconnect(&mut self) -> Result<Resumed, ClientError> {
        let expected = self.next_seq;
        self.stream = TcpStream::connect(self.addr)?;
        self.stream.set_nodelay(true)?;
        self.rpos = 0;
        self.rlen = 0;
        self.wbuf.clear();
        self.handshake(expected)?;
        // The server answers with where its stream continues: `expected`
        // when it replays or has nothing new, lower when it lost messages
        // this client saw.
        let lost = expected.saturating_sub(self.next_seq);
        Ok(Resumed { next_seq: self.next_seq, lost })
    }

    /// Where [`Client::reconnect`] connects (an engine restarted elsewhere).
    pub fn set_addr(&mut self, addr: SocketAddr) {
        self.addr = addr;
    }

    fn handshake(&mut self, next_seq: u64) -> Result<(), ClientError> {
        let (key_id, secret) = self.key.expect("logged in with a key");
        let c = self;
        c.stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let (flags, heartbeat_ms) = (c.opts.flags, c.opts.heartbeat_ms);
        c.send(|b| wire::Login { key_id, secret, next_seq, heartbeat_ms, flags }.push(b))?;
        match c.recv()? {
            ServerMsg::LoginAccepted(m) => {
                c.account = m.account;
                c.admin = m.role == 1;
                c.role = m.role;
                c.next_seq = m.next_seq;
                c.next_client_seq = m.last_client_seq + 1;
            }
            ServerMsg::LoginRejected(m) => return Err(ClientError::LoginRejected(m.reason)),
            ServerMsg::Goodbye(m) => return Err(ClientError::Goodbye(m.reason)),
            other => return Err(ClientError::Unexpected(Box::new(other))),
        }
        c.stream.set_read_timeout(None)?;
        Ok(())
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The next `client_seq` (strictly increasing per session name).
    pub fn take_client_seq(&mut self) -> u64 {
        let s = self.next_client_seq;
        self.next_client_seq += 1;
        s
    }

    /// Sets where client sequence numbers continue (after a reconnect).
    pub fn set_next_client_seq(&mut self, s: u64) {
        self.next_client_seq = s;
    }

    /// Buffers frames written by `f`; [`Client::flush`] sends them.
    pub fn queue(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.wbuf);
    }

    pub fn flush(&mut self) -> Result<(), ClientError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf)?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Queues and sends at once.
    pub fn send(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> Result<(), ClientError> {
        self.queue(f);
        self.flush()
    }

    /// Sends raw bytes (tests use this for hostile input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<(), ClientError> {
        self.stream.set_read_timeout(t)?;
        Ok(())
    }

    /// The next message, blocking (subject to the read timeout). Checks
    /// that sequenced messages arrive in order without gaps.
    pub fn recv(&mut self) -> Result<ServerMsg, ClientError> {
        loop {
            if let Some(m) = self.try_decode()? {
                return Ok(m);
            }
            self.fill()?;
        }
    }

    /// A message if one is already buffered or arrives within the read
    /// timeout; `Ok(None)` on timeout.
    pub fn recv_timeout(&mut self, t: Duration) -> Result<Option<ServerMsg>, ClientError> {
        if let Some(m) = self.try_decode()? {
            return Ok(Some(m));
        }
        self.stream.set_read_timeout(Some(t))?;
        let r = self.fill();
        self.stream.set_read_timeout(None)?;
        match r {
            Ok(()) => self.try_decode(),
            Err(ClientError::Io(e)) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Decodes a buffered message without reading the socket.
    pub fn try_decode(&mut self) -> Result<Option<ServerMsg>, ClientError> {
        let Some((f, used)) = wire::split_frame(&self.rbuf[self.rpos..self.rlen], false)? else { return Ok(None) };
        let m = ServerMsg::decode(f).ok_or(wire::FrameError::UnknownType(f.ty))?;
        self.rpos += used;
        let s = m.seq();
        if s != 0 {
            if s != self.next_seq {
                return Err(ClientError::Io(io::Error::other(format!("sequence gap: expected {}, got {s}", self.next_seq))));
            }
            self.next_seq += 1;
        }
        Ok(Some(m))
    }

    /// Reads more bytes into the buffer.
    pub fn fill(&mut self) -> Result<(), ClientError> {
        if self.rpos > 0 {
            self.rbuf.copy_within(self.rpos..self.rlen, 0);
            self.rlen -= self.rpos;
            self.rpos = 0;
        }
        let n = self.stream.read(&mut self.rbuf[self.rlen..])?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        self.rlen += n;
        Ok(())
    }

    /// Sends a limit order; returns its client_seq.
    pub fn limit(&mut self, instrument: u16, side: u8, price: i64, qty: u64, tif: u8) -> Result<u64, ClientError> {
        let cs = self.take_client_seq();
        self.send(|b| {
            wire::NewOrder { client_seq: cs, account: 0, instrument, side, ord_type: 0, tif, flags: 0, reserved: 0, price, qty, budget: 0 }
                .push(b)
        })?;
        Ok(cs)
    }

    /// Waits for the next application message, skipping heartbeats.
    pub fn next_app(&mut self) -> Result<ServerMsg, ClientError> {
        loop {
            match self.recv()? {
                ServerMsg::Heartbeat(_) => continue,
                ServerMsg::Goodbye(g) => return Err(ClientError::Goodbye(g.reason)),
                m => return Ok(m),
            }
        }
    }

    /// Asks the engine shard for its service-time histogram (admin keys
    /// only); `reset` starts a new window after this reading. Messages that
    /// arrive before the answer are skipped (an admin session hears only
    /// answers to its own messages).
    pub fn engine_stats(&mut self, reset: bool) -> Result<wire::EngineStats, ClientError> {
        let cs = self.take_client_seq();
        self.send(|b| wire::EngineStatsRequest { client_seq: cs, flags: reset as u32, reserved: 0 }.push(b))?;
        loop {
            match self.next_app()? {
                ServerMsg::EngineStats(m) if m.client_seq == cs => return Ok(m),
                ServerMsg::Rejected(r) if r.client_seq == cs => {
                    return Err(ClientError::Io(io::Error::other(format!("engine stats refused: reason {}", r.reason))));
                }
                _ => {}
            }
        }
    }

    pub fn peer(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }
}
