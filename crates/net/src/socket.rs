//! Socket set-up and timestamped receive.

use crate::clock::wall_now;
use ipsla_core::io::RxTime;
use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, SockaddrStorage, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// Which receive timestamps a socket delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RxStampMode {
    /// `SO_TIMESTAMPING` software RX stamps (`SCM_TIMESTAMPING`).
    Timestamping,
    /// `SO_TIMESTAMPNS` (`SCM_TIMESTAMPNS`), the older interface.
    TimestampNs,
    /// No kernel stamps: the userspace clock after `recvmsg` returns.
    User,
}

/// Turns on kernel receive timestamps, preferring `SO_TIMESTAMPING`, then `SO_TIMESTAMPNS`.
pub fn enable_rx_timestamps(fd: &impl AsFd) -> RxStampMode {
    enable_timestamps(fd, false)
}

/// Turns on kernel receive timestamps and, with `tx`, software transmit timestamps delivered on the
/// error queue: one per `sendmsg`, numbered from 0 (`SOF_TIMESTAMPING_OPT_ID`), without the packet
/// (`OPT_TSONLY`). Read them with [`drain_tx_stamps`].
pub fn enable_timestamps(fd: &impl AsFd, tx: bool) -> RxStampMode {
    use socket::TimestampingFlag as F;
    let mut flags = F::SOF_TIMESTAMPING_RX_SOFTWARE | F::SOF_TIMESTAMPING_SOFTWARE;
    if tx {
        flags |= F::SOF_TIMESTAMPING_TX_SOFTWARE | F::SOF_TIMESTAMPING_OPT_ID | F::SOF_TIMESTAMPING_OPT_TSONLY;
    }
    if socket::setsockopt(fd, sockopt::Timestamping, &flags).is_ok() {
        return RxStampMode::Timestamping;
    }
    if socket::setsockopt(fd, sockopt::ReceiveTimestampns, &true).is_ok() {
        return RxStampMode::TimestampNs;
    }
    RxStampMode::User
}

/// Whether `fd` has software transmit stamps on (`SO_TIMESTAMPING` with `TX_SOFTWARE`).
pub fn tx_stamps_on(fd: &impl AsFd) -> bool {
    socket::getsockopt(fd, sockopt::Timestamping)
        .is_ok_and(|f| f.contains(socket::TimestampingFlag::SOF_TIMESTAMPING_TX_SOFTWARE))
}

/// Turns the software transmit stamps of a socket set up by [`enable_timestamps`]`(fd, true)` on
/// or off for the sends that follow, keeping its receive stamps and the numbering: a sender that
/// wants the stamp of one reply in N asks for that one only, and the others cost the kernel no
/// stamp and us no error-queue read.
pub fn set_tx_stamps(fd: &impl AsFd, on: bool) -> io::Result<()> {
    use socket::TimestampingFlag as F;
    let mut flags = F::SOF_TIMESTAMPING_RX_SOFTWARE
        | F::SOF_TIMESTAMPING_SOFTWARE
        | F::SOF_TIMESTAMPING_OPT_ID
        | F::SOF_TIMESTAMPING_OPT_TSONLY;
    if on {
        flags |= F::SOF_TIMESTAMPING_TX_SOFTWARE;
    }
    socket::setsockopt(fd, sockopt::Timestamping, &flags).map_err(io::Error::from)
}

/// A new non-blocking socket for `addr` (IPv6 sockets are v6-only so that `0.0.0.0` and `::`
/// can both be bound on one port).
pub fn new_socket(addr: SocketAddr, ty: Type) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let proto = if ty == Type::STREAM { Protocol::TCP } else { Protocol::UDP };
    let s = Socket::new(domain, ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    Ok(s)
}

/// Binds a UDP socket.
pub fn bind_udp(addr: SocketAddr) -> io::Result<Socket> {
    let s = new_socket(addr, Type::DGRAM)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// How the datagrams of a port shared by several worker threads pick their socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Steering {
    /// One worker: one socket per port, no `SO_REUSEPORT`.
    #[default]
    Single,
    /// A `SO_ATTACH_REUSEPORT_CBPF` program picks the socket of the CPU the datagram arrived on
    /// (CPU modulo the number of sockets): a datagram stays on the core that received it, but a
    /// sender whose datagrams arrive on several CPUs (loopback, TUN, veth) reaches several
    /// workers, which may answer out of order (`--steer-by-cpu`).
    Cpu,
    /// The kernel's hash of the 4-tuple (the default, or the program was refused): one sender's
    /// flow stays on one socket, so its replies keep its probes' order.
    Hash,
}

/// Binds `n` UDP sockets on `addr`, one per worker thread. With `n` = 1 this is [`bind_udp`]
/// (no `SO_REUSEPORT` at all). With `n` > 1 the port is first bound by a plain socket and
/// released: `EADDRINUSE` when any socket holds it, even one of this user with `SO_REUSEPORT`
/// (another responder's group, which Linux would otherwise let us join), and for port 0 a port
/// nobody holds (the kernel's port-0 choice would not avoid such groups either). Then each of the
/// `n` sockets has `SO_REUSEPORT` set before its bind to that port, and the group steers by the
/// kernel's 4-tuple hash, or by CPU when `by_cpu` ([`attach_cpu_steering`]; the i-th socket is
/// the group's i-th, the one the program's index i selects). Returns the sockets and the steering.
pub fn bind_udp_group(addr: SocketAddr, n: usize, by_cpu: bool) -> io::Result<(Vec<Socket>, Steering)> {
    if n <= 1 {
        return Ok((vec![bind_udp(addr)?], Steering::Single));
    }
    let at = {
        let probe = bind_udp(addr)?;
        probe.local_addr()?.as_socket().ok_or_else(|| io::Error::other("bound socket without an address"))?
    };
    let mut socks: Vec<Socket> = Vec::with_capacity(n);
    for _ in 0..n {
        let s = new_socket(at, Type::DGRAM)?;
        s.set_reuse_port(true)?;
        s.bind(&at.into())?;
        socks.push(s);
    }
    // After the binds: a group with fewer sockets than the program's index falls back to the hash
    // in the meantime, and the program applies to the whole group from any of its sockets.
    let steering = if by_cpu && attach_cpu_steering(&socks[0], n) { Steering::Cpu } else { Steering::Hash };
    Ok((socks, steering))
}

/// Attaches to the `SO_REUSEPORT` group of `fd` a classic BPF program returning the receiving
/// CPU modulo `n`: the index of the group's socket that takes the datagram. False when the
/// kernel refuses it (before Linux 4.5, or a seccomp policy); the group then uses the 4-tuple
/// hash. Which one is in use is logged once at debug level.
pub fn attach_cpu_steering(fd: &impl AsFd, n: usize) -> bool {
    // SAFETY: BPF_STMT only builds the struct.
    let prog = unsafe {
        [
            // A = the CPU that received the packet (ancillary load at SKF_AD_OFF + SKF_AD_CPU)
            libc::BPF_STMT(
                (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
            ),
            // A = A % n
            libc::BPF_STMT((libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16, n as u32),
            // return A: the socket index in the group
            libc::BPF_STMT((libc::BPF_RET | libc::BPF_A) as u16, 0),
        ]
    };
    let mut filter = prog;
    let fprog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    let r = socket::setsockopt(fd, sockopt::AttachReusePortCbpf, &fprog);
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| match &r {
        Ok(()) => tracing::debug!(sockets = n, "shared ports steer by receiving CPU (SO_ATTACH_REUSEPORT_CBPF)"),
        Err(e) => {
            tracing::debug!(sockets = n, error = %e, "CPU steering refused; shared ports use the kernel's 4-tuple hash")
        }
    });
    r.is_ok()
}

/// Binds and listens on a TCP socket (SO_REUSEADDR so that a port in TIME_WAIT can be reused).
pub fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<Socket> {
    let s = new_socket(addr, Type::STREAM)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s)
}

/// One received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes received.
    pub len: usize,
    /// Sender.
    pub src: SocketAddr,
    /// When it arrived and which clock said so.
    pub rx: RxTime,
    /// The wall clock read right after `recvmsg` returned (the userspace receive time).
    pub user: Duration,
    /// IP TTL / Hop Limit, when the socket asked for it ([`enable_ttl_tos`]).
    pub ttl: Option<u8>,
    /// IPv4 ToS / IPv6 Traffic Class, when the socket asked for it ([`enable_ttl_tos`]).
    pub tos: Option<u8>,
}

/// Asks the kernel to deliver each datagram's TTL (IP_RECVTTL / IPV6_RECVHOPLIMIT) and ToS
/// (IP_RECVTOS / IPV6_RECVTCLASS) with [`recv_stamped`]. Best effort: false when a call failed.
pub fn enable_ttl_tos(fd: &impl AsFd, v6: bool) -> bool {
    if v6 {
        socket::setsockopt(fd, sockopt::Ipv6RecvHopLimit, &true).is_ok()
            & socket::setsockopt(fd, sockopt::Ipv6RecvTClass, &true).is_ok()
    } else {
        socket::setsockopt(fd, sockopt::Ipv4RecvTtl, &true).is_ok()
            & socket::setsockopt(fd, sockopt::IpRecvTos, &true).is_ok()
    }
}

/// A kernel transmit stamp from the error queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxStamp {
    /// Index of the `sendmsg` on this socket, from 0.
    pub id: u32,
    /// When the packet left the stack (software stamp), since the Unix epoch.
    pub wall: Duration,
}

/// Space for one error-queue message: the stamp and the extended error carrying its id.
pub fn errqueue_cmsg_buffer() -> Vec<u8> {
    nix::cmsg_space!(nix::sys::socket::Timestamps, libc::sock_extended_err, libc::sockaddr_in6)
}

/// Reads every transmit stamp queued on `fd` without blocking.
#[allow(clippy::ptr_arg)] // nix::recvmsg takes the control buffer as a Vec
pub fn drain_tx_stamps(fd: &impl AsRawFd, cmsg: &mut Vec<u8>, each: impl FnMut(TxStamp)) {
    drain_errqueue(fd, cmsg, each, |_| {});
}

/// Asks the kernel to report ICMP errors for what `fd` sends, on its error queue, even though
/// the socket is not connected (`IP_RECVERR` / `IPV6_RECVERR`): without it an unconnected UDP
/// socket never learns that a port was unreachable. [`drain_errqueue`] reads them.
pub fn enable_icmp_errors(fd: &impl AsFd, v6: bool) -> io::Result<()> {
    if v6 {
        socket::setsockopt(fd, sockopt::Ipv6RecvErr, &true)?;
    } else {
        socket::setsockopt(fd, sockopt::Ipv4RecvErr, &true)?;
    }
    Ok(())
}

/// Reads every message queued on `fd`'s error queue without blocking, handing each one's
/// destination (msg_name: the datagram a queued ICMP error is about, ip(7) IP_RECVERR) and its
/// control messages to `each`. Bounded: a socket cannot have more queued than it has sent in
/// flight.
#[allow(clippy::ptr_arg)] // nix::recvmsg takes the control buffer as a Vec
fn each_queued(
    fd: &impl AsRawFd,
    cmsg: &mut Vec<u8>,
    mut each: impl FnMut(Option<SocketAddr>, socket::CmsgIterator<'_>),
) {
    let mut data = [0u8; 64];
    for _ in 0..1024 {
        let mut iov = [IoSliceMut::new(&mut data)];
        let Ok(msg) = socket::recvmsg::<SockaddrStorage>(
            fd.as_raw_fd(),
            &mut iov,
            Some(cmsg),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) else {
            return;
        };
        let dest = msg.address.and_then(|a| sockaddr_to_std(&a));
        if let Ok(cmsgs) = msg.cmsgs() {
            each(dest, cmsgs);
        }
    }
}

/// Reads everything queued on `fd`'s error queue without blocking: transmit stamps go to
/// `stamp`; an ICMP port unreachable (with [`enable_icmp_errors`]) goes to `refused` with the
/// destination of the datagram it refused.
#[allow(clippy::ptr_arg)] // nix::recvmsg takes the control buffer as a Vec
pub fn drain_errqueue(
    fd: &impl AsRawFd,
    cmsg: &mut Vec<u8>,
    mut stamp: impl FnMut(TxStamp),
    mut refused: impl FnMut(SocketAddr),
) {
    each_queued(fd, cmsg, |dest, cmsgs| {
        let (mut wall, mut id, mut unreachable) = (None, None, false);
        for c in cmsgs {
            match c {
                ControlMessageOwned::ScmTimestampsns(t) if t.system.tv_sec() > 0 => {
                    wall = Some(Duration::new(t.system.tv_sec() as u64, t.system.tv_nsec() as u32));
                }
                ControlMessageOwned::Ipv4RecvErr(e, _) | ControlMessageOwned::Ipv6RecvErr(e, _)
                    if e.ee_origin == libc::SO_EE_ORIGIN_TIMESTAMPING =>
                {
                    id = Some(e.ee_data);
                }
                ControlMessageOwned::Ipv4RecvErr(e, _) | ControlMessageOwned::Ipv6RecvErr(e, _)
                    if matches!(e.ee_origin, libc::SO_EE_ORIGIN_ICMP | libc::SO_EE_ORIGIN_ICMP6)
                        && e.ee_errno == libc::ECONNREFUSED as u32 =>
                {
                    unreachable = true;
                }
                _ => {}
            }
        }
        if let (Some(wall), Some(id)) = (wall, id) {
            stamp(TxStamp { id, wall });
        }
        if unreachable && let Some(to) = dest {
            refused(to);
        }
    });
}

/// An ICMP error the kernel queued for a datagram a socket sent (`IP_RECVERR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedIcmpError {
    /// The ICMP type and code (ICMPv6 numbers when `v6`).
    pub icmp_type: u8,
    /// The ICMP code.
    pub icmp_code: u8,
    /// ICMPv6 (`SO_EE_ORIGIN_ICMP6`).
    pub v6: bool,
    /// Who sent the error (`SO_EE_OFFENDER`).
    pub offender: Option<std::net::IpAddr>,
    /// The destination of the datagram it is about (msg_name, ip(7)).
    pub dest: SocketAddr,
}

/// Reads every ICMP error queued on `fd`'s error queue without blocking (transmit stamps, if
/// any, are dropped), each to `each`.
#[allow(clippy::ptr_arg)] // nix::recvmsg takes the control buffer as a Vec
pub fn drain_icmp_errors(fd: &impl AsRawFd, cmsg: &mut Vec<u8>, mut each: impl FnMut(QueuedIcmpError)) {
    each_queued(fd, cmsg, |dest, cmsgs| {
        let Some(dest) = dest else { return };
        for c in cmsgs {
            let (e, offender, v6) = match c {
                ControlMessageOwned::Ipv4RecvErr(e, o) => (
                    e,
                    o.map(|a| std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))),
                    false,
                ),
                ControlMessageOwned::Ipv6RecvErr(e, o) => {
                    (e, o.map(|a| std::net::IpAddr::V6(std::net::Ipv6Addr::from(a.sin6_addr.s6_addr))), true)
                }
                _ => continue,
            };
            if matches!(e.ee_origin, libc::SO_EE_ORIGIN_ICMP | libc::SO_EE_ORIGIN_ICMP6) {
                each(QueuedIcmpError { icmp_type: e.ee_type, icmp_code: e.ee_code, v6, offender, dest });
            }
        }
    });
}

fn sockaddr_to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        Some(SocketAddr::V4(std::net::SocketAddrV4::from(*v4)))
    } else {
        a.as_sockaddr_in6().map(|v6| SocketAddr::V6(std::net::SocketAddrV6::from(*v6)))
    }
}

/// Space for one timestamping control message.
pub fn cmsg_buffer() -> Vec<u8> {
    nix::cmsg_space!(nix::sys::socket::Timestamps, nix::sys::time::TimeSpec, libc::c_int, libc::c_int)
}

/// `recvmsg` on a non-blocking socket: the datagram, its sender and its receive time (kernel
/// stamp when the socket delivers one, else the wall clock read right after the call).
/// `WouldBlock` when nothing is queued.
#[allow(clippy::ptr_arg)] // nix::recvmsg takes the control buffer as a Vec
pub fn recv_stamped(fd: &impl AsRawFd, buf: &mut [u8], cmsg: &mut Vec<u8>) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<SockaddrStorage>(fd.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::MSG_DONTWAIT)
        .map_err(io::Error::from)?;
    let user = wall_now();
    let mut rx = RxTime { wall: user, kernel: false };
    let (mut ttl, mut tos) = (None, None);
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            let ts = match c {
                ControlMessageOwned::ScmTimestampsns(t) => t.system,
                ControlMessageOwned::ScmTimestampns(t) => t,
                ControlMessageOwned::Ipv4Ttl(v) | ControlMessageOwned::Ipv6HopLimit(v) => {
                    ttl = u8::try_from(v).ok();
                    continue;
                }
                ControlMessageOwned::Ipv4Tos(v) => {
                    tos = Some(v);
                    continue;
                }
                ControlMessageOwned::Ipv6TClass(v) => {
                    tos = u8::try_from(v).ok();
                    continue;
                }
                _ => continue,
            };
            if ts.tv_sec() > 0 {
                rx = RxTime { wall: Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32), kernel: true };
            }
        }
    }
    let src = msg
        .address
        .and_then(|a: SockaddrStorage| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6))))
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without a source address"))?;
    Ok(Received { len: msg.bytes, src, rx, user, ttl, tos })
}

/// Raises the open-file limit to its hard maximum: each session holds a socket, and 5000
/// concurrent sessions (a figure IOS users reach) are over the usual soft limit of 1024.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_stamps_come_back_numbered() {
        let tx = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(enable_timestamps(&tx, true), RxStampMode::Timestamping);
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to: socket2::SockAddr = rx.local_addr().unwrap().into();
        let mut cmsg = errqueue_cmsg_buffer();
        let mut got = Vec::new();
        for i in 0..5u8 {
            let before = wall_now();
            tx.send_to(&[i], &to).unwrap();
            let after = wall_now();
            drain_tx_stamps(&tx, &mut cmsg, |s| got.push((s, before, after)));
        }
        assert_eq!(got.iter().map(|g| g.0.id).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4], "one stamp per send, in order");
        for (s, before, after) in got {
            assert!(s.wall >= before && s.wall <= after, "stamp within the send call");
        }
    }

    #[test]
    fn kernel_stamp_is_close_to_userspace_and_earlier() {
        let rx = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let mode = enable_rx_timestamps(&rx);
        assert_ne!(mode, RxStampMode::User, "loopback supports kernel RX stamps");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 64];
        let mut cmsg = cmsg_buffer();
        // The kernel turns stamping on through a deferred static key: when no other socket on the
        // host had it on, the first packets can arrive unstamped. Within a few tries it must work.
        for attempt in 0..100 {
            let before = wall_now();
            tx.send_to(b"hello", rx.local_addr().unwrap().as_socket().unwrap()).unwrap();
            let r = loop {
                match recv_stamped(&rx, &mut buf, &mut cmsg) {
                    Ok(r) => break r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_micros(100)),
                    Err(e) => panic!("{e}"),
                }
            };
            let after = wall_now();
            assert_eq!(&buf[..r.len], b"hello");
            assert_eq!(r.src, tx.local_addr().unwrap());
            assert!(r.rx.wall >= before && r.rx.wall <= after, "{:?} not in [{before:?}, {after:?}]", r.rx.wall);
            if r.rx.kernel {
                return;
            }
            assert!(attempt < 99, "no kernel stamp after 100 datagrams");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
