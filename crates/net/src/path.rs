//! The driver of path-echo and path-jitter ([`ipsla_core::ops::path::PathOp`]): discovery datagrams
//! on a UDP socket whose TTL is set before each send, the ICMP errors they cause read back from
//! that socket's error queue (`IP_RECVERR` with `SO_EE_OFFENDER`: no privilege needed, and the
//! kernel has already matched the quoted datagram to this socket), echoes on an ICMP socket
//! ([`IcmpSocket`]: a datagram "ping" socket, or a raw one, which also sees the errors: then
//! discovery reads them there, whole, through the wire parser, and the error queue is only
//! emptied).

use crate::clock::wall_now;
use crate::probe::{Cancelled, Hooks, IcmpSocket, SocketOptions, udp_socket};
use crate::socket::{self, QueuedIcmpError};
use ipsla_core::ops::path::{PathOp, PathReport, PathTransmit};
use ipsla_wire::icmp::{self, ErrorKind, IcmpErrorRepr, Quote};
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;
use socket2::SockRef;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// The two sockets of a path run.
#[derive(Debug)]
pub struct PathSockets {
    udp: std::net::UdpSocket,
    local: SocketAddr,
    icmp: IcmpSocket,
}

impl PathSockets {
    /// Opens the UDP discovery socket and the ICMP echo socket towards `target`.
    pub fn open(target: IpAddr, o: &SocketOptions) -> io::Result<PathSockets> {
        let o = SocketOptions { source_port: 0, ..o.clone() };
        let (udp, local, _) = udp_socket(target, &o)?;
        let icmp = IcmpSocket::open(target, &o, false)?;
        Ok(PathSockets { udp, local, icmp })
    }

    /// True when the echo socket is raw: replies carry the identifier we sent.
    pub fn raw(&self) -> bool {
        self.icmp.raw
    }
}

/// The error a queued ICMP error stands for, in the wire crate's terms; `None` for other types.
fn queued(e: &QueuedIcmpError, local: SocketAddr) -> Option<(IpAddr, IcmpErrorRepr)> {
    let kind = match (e.v6, e.icmp_type) {
        (false, icmp::TIME_EXCEEDED_V4) | (true, icmp::TIME_EXCEEDED_V6) => ErrorKind::TimeExceeded,
        (false, icmp::DEST_UNREACHABLE_V4) | (true, icmp::DEST_UNREACHABLE_V6) => {
            ErrorKind::Unreachable { code: e.icmp_code }
        }
        _ => return None,
    };
    let quote = Quote {
        src: local.ip(),
        dst: e.dest.ip(),
        protocol: icmp::PROTO_UDP,
        src_port: local.port(),
        dst_port: e.dest.port(),
    };
    Some((e.offender?, IcmpErrorRepr { kind, quote }))
}

/// Runs one path operation to completion.
pub fn run_path(op: &mut PathOp, s: &PathSockets, target: IpAddr, hooks: Hooks<'_>) -> Result<PathReport, Cancelled> {
    op.set_local_port(s.local.port());
    let mut out = vec![0u8; 65_536];
    let mut buf = vec![0u8; 65_536];
    let mut cmsg = socket::cmsg_buffer();
    let mut errq = socket::errqueue_cmsg_buffer();
    let icmp_fd = &s.icmp.sock;
    let raw_v4 = s.icmp.raw && target.is_ipv4();
    loop {
        while let Some(t) = op.poll_transmit(Instant::now(), wall_now(), &mut out) {
            let sent = match t {
                PathTransmit::Udp { ttl, port, len } => {
                    let r = if target.is_ipv6() {
                        SockRef::from(&s.udp).set_unicast_hops_v6(u32::from(ttl))
                    } else {
                        s.udp.set_ttl(u32::from(ttl))
                    };
                    r.and_then(|_| s.udp.send_to(&out[..len], SocketAddr::new(target, port)))
                }
                PathTransmit::Echo { to, len } => icmp_fd.send_to(&out[..len], &SocketAddr::new(to, 0).into()),
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, "path probe not sent");
            }
        }
        if op.is_done() {
            return Ok(op.report());
        }
        if hooks.is_cancelled() {
            return Err(Cancelled);
        }
        let deadline = hooks.wait_until(op.poll_timeout()).unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(s.udp.as_fd(), PollFlags::POLLIN), PollFd::new(icmp_fd.as_fd(), PollFlags::POLLIN)];
        let _ = ppoll(&mut fds, Some(TimeSpec::from_duration(left)), None);
        // the error queue (POLLERR is always reported): discovery's answers. A raw echo socket
        // receives the same errors whole, quote included, and more (a quote the kernel matched to
        // this unconnected socket by its port alone): then the queue is only emptied, so that
        // each error is judged, and counted, once.
        let mut errors = Vec::new();
        socket::drain_icmp_errors(&s.udp, &mut errq, |e| {
            if !s.icmp.raw {
                errors.extend(queued(&e, s.local))
            }
        });
        for (from, e) in errors {
            op.handle_icmp_error(Instant::now(), from, &e);
        }
        // echo replies, and on a raw socket every ICMP message the host receives
        for _ in 0..256 {
            let r = match socket::recv_stamped(icmp_fd, &mut buf, &mut cmsg) {
                Ok(r) => r,
                Err(_) => break,
            };
            let data = &buf[..r.len];
            let msg = if raw_v4 {
                match icmp::strip_ipv4_header(data) {
                    Ok(m) => m,
                    Err(_) => continue,
                }
            } else {
                data
            };
            op.handle_echo_reply(Instant::now(), r.src.ip(), r.rx, msg);
        }
        // a datagram on the UDP socket is nobody's answer: drain it
        while s.udp.recv_from(&mut buf).is_ok() {}
        let now = Instant::now();
        if op.poll_timeout().is_some_and(|d| d <= now) {
            op.handle_timeout(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipsla_core::ops::ReturnCode;
    use ipsla_core::ops::path::{Ident, PATH_ECHO_IDENT, PathConfig};

    #[test]
    fn loopback_is_one_hop() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let Ok(s) = PathSockets::open(lo, &SocketOptions::default()) else {
            eprintln!("skipped: no ICMP socket (neither ping_group_range nor CAP_NET_RAW)");
            return;
        };
        let cfg = PathConfig {
            target: lo,
            max_hops: 30,
            echoes: 1,
            interval: Duration::from_millis(20),
            target_only: false,
            ident: Ident::Fixed(PATH_ECHO_IDENT),
            size: 28,
            pattern: vec![0xab, 0xcd],
            timeout: Duration::from_secs(2),
            threshold: Duration::from_secs(5),
            check_ident: s.raw(),
            local_port: None,
        };
        let mut op = PathOp::new(Instant::now(), cfg);
        let r = run_path(&mut op, &s, lo, Hooks::default()).unwrap();
        assert_eq!(r.path(), vec![Some(lo)]);
        assert!(r.reached);
        assert_eq!(r.result.return_code, ReturnCode::Ok);
        assert_eq!((r.hops[0].sent, r.hops[0].received().len()), (1, 1));
    }
}
