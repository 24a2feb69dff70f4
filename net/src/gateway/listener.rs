//! `SO_REUSEPORT` listeners, one per I/O shard: the kernel spreads new
//! connections across them, so shards never share an accept queue.
//! (std's `TcpListener` cannot set socket options before `bind`.)

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn setopt(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a local int and its size.
    check(unsafe { libc::setsockopt(fd, level, name, (&v as *const libc::c_int).cast(), size_of::<libc::c_int>() as u32) }).map(|_| ())
}

/// Sets TCP_NODELAY on an accepted socket: order entry sends small frames
/// that must leave at once.
pub fn nodelay(fd: RawFd) -> io::Result<()> {
    setopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn bind_one(addr: SocketAddr) -> io::Result<RawFd> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain syscalls on a descriptor we own; closed on error.
    let fd = check(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    let r = (|| {
        setopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        setopt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        let (ss, len) = sockaddr(addr);
        check(unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) })?;
        check(unsafe { libc::listen(fd, 4096) })?;
        Ok(())
    })();
    match r {
        Ok(()) => Ok(fd),
        Err(e) => {
            unsafe { libc::close(fd) };
            Err(e)
        }
    }
}

/// `n` listeners on `addr`. With port 0 the first picks a free port and the
/// others join it.
pub fn bind_reuseport(addr: SocketAddr, n: usize) -> io::Result<Vec<RawFd>> {
    let first = bind_one(addr)?;
    let actual = local_addr(first)?;
    let mut out = vec![first];
    for _ in 1..n {
        match bind_one(actual) {
            Ok(fd) => out.push(fd),
            Err(e) => {
                for fd in out {
                    unsafe { libc::close(fd) };
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: getsockname writes at most `len` bytes into our storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    check(unsafe { libc::getsockname(fd, (&mut ss as *mut libc::sockaddr_storage).cast(), &mut len) })?;
    from_storage(&ss)
}

/// The address of a connected socket's peer.
pub fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: getpeername writes at most `len` bytes into our storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    check(unsafe { libc::getpeername(fd, (&mut ss as *mut libc::sockaddr_storage).cast(), &mut len) })?;
    from_storage(&ss)
}

fn from_storage(ss: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((ss as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6.
            let s: libc::sockaddr_in6 = unsafe { std::ptr::read((ss as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv6Addr::from(s.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(s.sin6_port), s.sin6_flowinfo, s.sin6_scope_id)))
        }
        f => Err(io::Error::other(format!("unexpected address family {f}"))),
    }
}
