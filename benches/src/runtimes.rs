//! The same plain echo as the gateway benchmark's baseline
//! ([`crate::loadgen::echo_server`]), on the other runtimes the hot path
//! could have been built on: tokio's current-thread runtime and glommio.
//! `otedama bench gateway` drives each with the same load, on the same
//! core, so the choice of runtime rests on a measurement made here.

use std::net::SocketAddr;

use anyhow::Result;

use crate::harness::pin;
use crate::loadgen::answer_orders;

/// A tokio current-thread runtime on its own thread (pinned to `core`),
/// one task per connection.
pub fn tokio_echo(core: Option<usize>) -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    l.set_nonblocking(true)?;
    std::thread::Builder::new().name("tokio-echo".into()).spawn(move || {
        if let Some(c) = core {
            pin(c);
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("tokio runtime");
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let l = tokio::net::TcpListener::from_std(l).expect("listener");
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let mut inb = vec![0u8; 256 << 10];
                    let mut len = 0;
                    let mut out = Vec::with_capacity(512 << 10);
                    while let Ok(m) = s.read(&mut inb[len..]).await {
                        if m == 0 {
                            break;
                        }
                        len += m;
                        len = answer_orders(&mut inb, len, &mut out);
                        if s.write_all(&out).await.is_err() {
                            break;
                        }
                        out.clear();
                    }
                });
            }
        });
    })?;
    Ok(addr)
}

/// A glommio executor pinned to `core` (2 MiB of registered I/O memory:
/// the default 10 MiB silently skips registration under an 8 MiB memlock
/// limit), one task per connection.
pub fn glommio_echo(core: usize) -> Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(core))
        .name("glommio-echo")
        .io_memory(2 << 20)
        .spawn(move || async move {
            use futures_lite::{AsyncReadExt, AsyncWriteExt};
            let l = match glommio::net::TcpListener::bind("127.0.0.1:0") {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!("glommio bind: {e}")));
                    return;
                }
            };
            let _ = tx.send(l.local_addr().map_err(|e| anyhow::anyhow!("{e}")));
            while let Ok(mut s) = l.accept().await {
                let _ = s.set_nodelay(true);
                glommio::spawn_local(async move {
                    let mut inb = vec![0u8; 256 << 10];
                    let mut len = 0;
                    let mut out = Vec::with_capacity(512 << 10);
                    while let Ok(m) = s.read(&mut inb[len..]).await {
                        if m == 0 {
                            break;
                        }
                        len += m;
                        len = answer_orders(&mut inb, len, &mut out);
                        if s.write_all(&out).await.is_err() {
                            break;
                        }
                        out.clear();
                    }
                })
                .detach();
            }
        })
        .map_err(|e| anyhow::anyhow!("starting the glommio executor: {e}"))?;
    rx.recv()?
}

/// The same echo on the raw `io-uring` crate, the way the gateway's I/O
/// shard drives it (multishot accept, one recv and one send in flight per
/// connection, cooperative task running, parking in `io_uring_enter`).
pub fn io_uring_echo(core: Option<usize>) -> Result<SocketAddr> {
    use io_uring::{IoUring, cqueue, opcode, types};
    use std::os::fd::IntoRawFd;
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let lfd = l.into_raw_fd();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("uring-echo".into()).spawn(move || {
        if let Some(c) = core {
            pin(c);
        }
        let mut ring: IoUring = match IoUring::builder().setup_single_issuer().setup_coop_taskrun().setup_taskrun_flag().build(1024) {
            Ok(r) => {
                let _ = tx.send(Ok(()));
                r
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        struct C {
            fd: i32,
            inb: Vec<u8>,
            len: usize,
            out: Vec<u8>,
        }
        let mut conns: Vec<Option<C>> = Vec::new();
        const ACCEPT: u64 = u64::MAX;
        let push = |ring: &mut IoUring, e: io_uring::squeue::Entry| {
            // SAFETY: the buffers live in `conns`, which never frees a
            // connection with an operation in flight.
            while unsafe { ring.submission().push(&e) }.is_err() {
                let _ = ring.submit();
            }
        };
        push(&mut ring, opcode::AcceptMulti::new(types::Fd(lfd)).build().user_data(ACCEPT));
        let recv = |ring: &mut IoUring, i: usize, c: &mut C| {
            let e = opcode::Recv::new(types::Fd(c.fd), unsafe { c.inb.as_mut_ptr().add(c.len) }, (c.inb.len() - c.len) as u32)
                .build()
                .user_data((i as u64) << 1);
            // SAFETY: as above.
            while unsafe { ring.submission().push(&e) }.is_err() {
                let _ = ring.submit();
            }
        };
        loop {
            let ts = types::Timespec::new().nsec(20_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = ring.submitter().submit_with_args(1, &args);
            let cqes: Vec<(u64, i32, u32)> = ring.completion().map(|c| (c.user_data(), c.result(), c.flags())).collect();
            for (u, res, flags) in cqes {
                if u == ACCEPT {
                    if res >= 0 {
                        let one: libc::c_int = 1;
                        // SAFETY: setsockopt with a local int.
                        unsafe { libc::setsockopt(res, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&one as *const libc::c_int).cast(), 4) };
                        let i = conns.len();
                        conns.push(Some(C { fd: res, inb: vec![0; 256 << 10], len: 0, out: Vec::with_capacity(512 << 10) }));
                        recv(&mut ring, i, conns[i].as_mut().expect("just made"));
                    }
                    if !cqueue::more(flags) {
                        push(&mut ring, opcode::AcceptMulti::new(types::Fd(lfd)).build().user_data(ACCEPT));
                    }
                    continue;
                }
                let (i, is_send) = ((u >> 1) as usize, u & 1 == 1);
                let Some(c) = conns.get_mut(i).and_then(Option::as_mut) else { continue };
                if is_send {
                    // Blocking-style: the whole answer goes out before the next read.
                    if res < 0 {
                        unsafe { libc::close(c.fd) };
                        conns[i] = None;
                        continue;
                    }
                    c.out.drain(..res as usize);
                    if !c.out.is_empty() {
                        let e =
                            opcode::Send::new(types::Fd(c.fd), c.out.as_ptr(), c.out.len() as u32).build().user_data(((i as u64) << 1) | 1);
                        push(&mut ring, e);
                    } else {
                        recv(&mut ring, i, c);
                    }
                } else if res <= 0 {
                    unsafe { libc::close(c.fd) };
                    conns[i] = None;
                } else {
                    c.len = answer_orders(&mut c.inb, c.len + res as usize, &mut c.out);
                    let e = opcode::Send::new(types::Fd(c.fd), c.out.as_ptr(), c.out.len() as u32).build().user_data(((i as u64) << 1) | 1);
                    push(&mut ring, e);
                }
            }
        }
    })?;
    rx.recv()??;
    Ok(addr)
}
