//! Drivers for the source operations of `ipsla-core`: sockets set up as the operation asks (source
//! address and port, ToS, VRF device, kernel receive stamps), then the poll loop.
//!
//! Send times (T1) are read from the wall clock immediately before the send call; receive times
//! (T4) are the kernel's stamps when the socket delivers them. Timers use tokio's (millisecond
//! resolution); the precise send scheduler comes with the measurement-truth work.
//!
//! A caller may watch a run and stop it ([`Hooks`]): every per-probe event the operation reports
//! is handed to `events` as soon as the driver sees it, and `cancelled` is asked at least every
//! [`CANCEL_POLL`], so that a stopping agent or a Ctrl-C does not wait for a train to end.

use crate::clock::wall_now;
use crate::pacer::{Pacer, Wake};
use crate::socket::{self, RxStampMode};
use ipsla_core::io::RxTime;
use ipsla_core::ops::{DeltaStats, Operation, OperationResult, Peer, ProbeEvent};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// How the probe sockets are set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// Source address (IOS `source-ip`).
    pub source_ip: Option<IpAddr>,
    /// Source port (IOS `source-port`), 0 = any.
    pub source_port: u16,
    /// IPv4 ToS / IPv6 traffic class byte.
    pub tos: Option<u8>,
    /// Bind to this device (a Linux VRF is a device: SO_BINDTODEVICE).
    pub vrf: Option<String>,
    /// Ask for kernel receive stamps.
    pub kernel_timestamps: bool,
}

/// How often a cancellable run asks whether it should stop, at most: its waits end by then.
pub const CANCEL_POLL: Duration = Duration::from_millis(100);

/// What the caller of a run adds to it; both optional.
#[derive(Clone, Copy, Default)]
pub struct Hooks<'a> {
    /// Receives every per-probe event of the operation, on the thread that drives it, as soon as
    /// the driver has it.
    pub events: Option<&'a (dyn Fn(&ProbeEvent) + Sync)>,
    /// True once the run should stop: the driver returns [`Cancelled`] instead of a result.
    pub cancelled: Option<&'a (dyn Fn() -> bool + Sync)>,
}

impl std::fmt::Debug for Hooks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("events", &self.events.is_some())
            .field("cancelled", &self.cancelled.is_some())
            .finish()
    }
}

impl Hooks<'_> {
    /// Hands every queued event of `op` to the sink (or drops them).
    pub fn forward(&self, op: &mut dyn Operation) {
        while let Some(e) = op.poll_event() {
            if let Some(f) = self.events {
                f(&e);
            }
        }
    }

    /// Whether the caller asked the run to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_some_and(|c| c())
    }

    /// `deadline`, brought forward to [`CANCEL_POLL`] from now when the run can be cancelled.
    pub fn wait_until(&self, deadline: Option<Instant>) -> Option<Instant> {
        match self.cancelled {
            None => deadline,
            Some(_) => {
                let poll = Instant::now() + CANCEL_POLL;
                Some(deadline.map_or(poll, |d| d.min(poll)))
            }
        }
    }
}

/// A run its caller stopped before it finished ([`Hooks::cancelled`]): no result, since the
/// probes not yet sent or answered would read as loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the run was cancelled before it finished")]
pub struct Cancelled;

fn unspecified(target: IpAddr) -> IpAddr {
    if target.is_ipv6() { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) }
}

fn apply(s: &SockRef<'_>, target: IpAddr, o: &SocketOptions) -> io::Result<()> {
    if let Some(tos) = o.tos {
        if target.is_ipv6() {
            s.set_tclass_v6(u32::from(tos))?;
        } else {
            s.set_tos_v4(u32::from(tos))?;
        }
    }
    if let Some(dev) = &o.vrf {
        s.bind_device(Some(dev.as_bytes())).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::ENODEV) => " (the vrf key, --vrf: `ip link show type vrf` lists the VRFs)",
                Some(libc::EPERM) => " (binding to a device needs CAP_NET_RAW)",
                _ => "",
            };
            io::Error::new(e.kind(), format!("binding to device {dev}: {e}{hint}"))
        })?;
    }
    Ok(())
}

/// A non-blocking UDP socket for `target` with the options applied (kernel receive and transmit
/// stamps when asked). Returns it, its local address and the receive-stamp source.
pub fn udp_socket(target: IpAddr, o: &SocketOptions) -> io::Result<(std::net::UdpSocket, SocketAddr, RxStampMode)> {
    let local = SocketAddr::new(o.source_ip.unwrap_or_else(|| unspecified(target)), o.source_port);
    let s = socket::new_socket(local, Type::DGRAM)?;
    apply(&SockRef::from(&s), target, o)?;
    s.bind(&local.into())?;
    let mode = if o.kernel_timestamps { socket::enable_timestamps(&s, true) } else { RxStampMode::User };
    // a closed control or probe port then ends the wait with a reason instead of a timeout
    socket::enable_icmp_errors(&s, local.is_ipv6())?;
    let std: std::net::UdpSocket = s.into();
    let mut local = std.local_addr()?;
    if local.ip().is_unspecified() {
        // The source address the kernel will use towards the target (for v2 control, which names it).
        let probe = std::net::UdpSocket::bind(SocketAddr::new(unspecified(target), 0))?;
        probe.connect(SocketAddr::new(target, 9))?;
        local.set_ip(probe.local_addr()?.ip());
    }
    Ok((std, local, mode))
}

/// Matches kernel transmit stamps to the probes that were sent and keeps the user−kernel deltas.
struct Stamps {
    /// (probe sequence, userspace T1) of each successful send, indexed by the kernel's OPT_ID.
    sends: Vec<(u32, std::time::Duration)>,
    cmsg: Vec<u8>,
    tx_delta: DeltaStats,
    rx_delta: DeltaStats,
}

impl Stamps {
    fn new() -> Self {
        Stamps {
            sends: Vec::new(),
            cmsg: socket::errqueue_cmsg_buffer(),
            tx_delta: DeltaStats::default(),
            rx_delta: DeltaStats::default(),
        }
    }
    fn sent(&mut self, seq: u32, user_t1: std::time::Duration) {
        self.sends.push((seq, user_t1));
    }
    /// Collects every queued transmit stamp (non-blocking; loopback and TUN queue them before
    /// the send call returns) and hands probe stamps to the operation, then the ICMP port
    /// unreachables queued beside them.
    fn drain(&mut self, fd: &impl std::os::fd::AsRawFd, op: &mut dyn Operation) {
        let Stamps { sends, cmsg, tx_delta, .. } = self;
        let mut refused = Vec::new();
        socket::drain_errqueue(
            fd,
            cmsg,
            |t| {
                if let Some(&(seq, user)) = sends.get(t.id as usize) {
                    tx_delta.add(t.wall.as_nanos() as i64 - user.as_nanos() as i64);
                    if seq > 0 {
                        op.handle_tx_stamp(seq, t.wall);
                    }
                }
            },
            |to| refused.push(to),
        );
        for to in refused {
            op.handle_refused(Instant::now(), to);
        }
    }
    fn received(&mut self, r: &socket::Received) {
        if r.rx.kernel {
            self.rx_delta.add(r.user.as_nanos() as i64 - r.rx.wall.as_nanos() as i64);
        }
    }
    fn finish(&self, mut res: OperationResult) -> OperationResult {
        res.stamps.tx_delta = self.tx_delta;
        res.stamps.rx_delta = self.rx_delta;
        res
    }
}

/// Longest a reply may be left queued for the next send ([`Operation::next_send`]): at 20 ms
/// apart (IOS's default jitter interval) or closer, a probe's reply is read when the next probe
/// has been sent instead of waking the thread by itself, which halves the wake-ups of a train.
/// A slower train is answered as replies come (live events stay prompt).
const DEFER_REPLIES: Duration = Duration::from_millis(20);

/// The synchronous poll loop shared by UDP and ICMP operations: send what the operation asks
/// for, collect transmit stamps, wait with the [`Pacer`] for a reply or the next deadline, and
/// hand matching replies (`accept` says which peer and which bytes) to the operation. While a
/// train's next probe is due within [`DEFER_REPLIES`], it sleeps to the deadline and reads the
/// replies right after that send, so the send stays on time.
fn pump<S: AsFd + std::os::fd::AsRawFd>(
    op: &mut dyn Operation,
    sock: &S,
    pacer: &Pacer,
    hooks: Hooks<'_>,
    mut send: impl FnMut(&[u8], Peer, u16) -> io::Result<usize>,
    accept: impl Fn(&socket::Received, &[u8]) -> Option<(Peer, std::ops::Range<usize>)>,
) -> Result<OperationResult, Cancelled> {
    let mut out = vec![0u8; 65_536];
    let mut rx = Replies { buf: vec![0u8; 65_536], cmsg: socket::cmsg_buffer() };
    let mut stamps = Stamps::new();
    let mut queued = false;
    loop {
        loop {
            let wall = wall_now();
            let Some(t) = op.poll_transmit(Instant::now(), wall, &mut out) else { break };
            match send(&out[..t.len], t.peer, op.probe_port()) {
                Ok(_) => stamps.sent(t.seq, wall),
                Err(e) => tracing::debug!(error = %e, "send failed"),
            }
            stamps.drain(sock, op);
        }
        if std::mem::take(&mut queued) {
            rx.read(op, sock, &mut stamps, &accept);
        }
        hooks.forward(op);
        if op.is_done() {
            return Ok(stamps.finish(op.result()));
        }
        if hooks.is_cancelled() {
            return Err(Cancelled);
        }
        let deadline = hooks.wait_until(op.poll_timeout());
        if op.next_send().is_some_and(|s| s.saturating_duration_since(Instant::now()) <= DEFER_REPLIES) {
            pacer.sleep(deadline);
            queued = true;
        } else if pacer.wait(sock, deadline) == Wake::Readable {
            rx.read(op, sock, &mut stamps, &accept);
        }
        let now = Instant::now();
        if op.poll_timeout().is_some_and(|d| d <= now) {
            op.handle_timeout(now);
        }
        hooks.forward(op);
    }
}

/// The receive side of [`pump`].
struct Replies {
    buf: Vec<u8>,
    cmsg: Vec<u8>,
}

impl Replies {
    /// Hands what is queued on `sock` to `op` (at most 256 datagrams, then back to the schedule),
    /// each with the time its kernel stamp says it arrived: a reply read late is not late.
    fn read<S: std::os::fd::AsRawFd>(
        &mut self,
        op: &mut dyn Operation,
        sock: &S,
        stamps: &mut Stamps,
        accept: &impl Fn(&socket::Received, &[u8]) -> Option<(Peer, std::ops::Range<usize>)>,
    ) {
        for _ in 0..256 {
            let r = match socket::recv_stamped(sock, &mut self.buf, &mut self.cmsg) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // an ICMP error (IP_RECVERR) fails one receive and waits on the error queue
                    stamps.drain(sock, op);
                    break;
                }
            };
            if let Some((peer, range)) = accept(&r, &self.buf[..r.len]) {
                stamps.drain(sock, op);
                stamps.received(&r);
                op.handle_datagram(arrived(&r), peer, r.rx, &self.buf[range]);
            }
        }
    }
}

/// When a datagram arrived on the monotonic clock: now, less its age by its kernel stamp (at most
/// a second, so that a step of the wall clock cannot move it further); now without a stamp.
fn arrived(r: &socket::Received) -> Instant {
    let now = Instant::now();
    if !r.rx.kernel {
        return now;
    }
    let age = wall_now().saturating_sub(r.rx.wall).min(Duration::from_secs(1));
    now.checked_sub(age).unwrap_or(now)
}

/// Runs a UDP operation (udp-jitter, udp-echo) to completion on `sock`. Control messages go to
/// `target:control_port`, probes to `target:op.probe_port()`; a datagram from the control address
/// is a control reply, anything else from the target is a probe reply.
pub fn run_udp(
    op: &mut dyn Operation,
    sock: &std::net::UdpSocket,
    target: IpAddr,
    control_port: u16,
    pacer: &Pacer,
    hooks: Hooks<'_>,
) -> Result<OperationResult, Cancelled> {
    let control = SocketAddr::new(target, control_port);
    pump(
        op,
        sock,
        pacer,
        hooks,
        |b, peer, port| {
            let to = if peer == Peer::Control { control } else { SocketAddr::new(target, port) };
            sock.send_to(b, to)
        },
        |r, b| {
            // Replies come from the target only; anything else is not ours.
            (r.src.ip().to_canonical() == target.to_canonical())
                .then(|| (if r.src == control { Peer::Control } else { Peer::Probe }, 0..b.len()))
        },
    )
}

/// Runs tcp-connect: the control phase on `control_sock` (when the operation has one), then one
/// TCP handshake to `target:op.probe_port()`.
pub async fn run_tcp(
    op: &mut dyn Operation,
    control_sock: std::net::UdpSocket,
    target: IpAddr,
    control_port: u16,
    o: &SocketOptions,
    hooks: Hooks<'_>,
) -> Result<OperationResult, Cancelled> {
    let control_sock = match UdpSocket::from_std(control_sock) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "control socket unusable");
            return Ok(op.result());
        }
    };
    let mut out = vec![0u8; 2048];
    let mut buf = vec![0u8; 2048];
    let control = SocketAddr::new(target, control_port);
    loop {
        while let Some(t) = op.poll_transmit(Instant::now(), wall_now(), &mut out) {
            match t.peer {
                Peer::Connect => {
                    let to = SocketAddr::new(target, op.probe_port());
                    let r = connect(to, o).await;
                    let rx = RxTime { wall: wall_now(), kernel: false };
                    if r.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused) {
                        op.handle_refused(Instant::now(), to);
                    }
                    op.handle_connected(Instant::now(), rx, r.is_ok());
                    hooks.forward(op);
                    if let Ok(stream) = r {
                        // The responder closes first (tcp_connect capture); wait briefly for its FIN.
                        let mut b = [0u8; 16];
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            loop {
                                let _ = stream.readable().await;
                                match stream.try_read(&mut b) {
                                    Ok(0) => break,
                                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => break,
                                    _ => {}
                                }
                            }
                        })
                        .await;
                    }
                }
                _ => {
                    let _ = control_sock.send_to(&out[..t.len], control).await;
                }
            }
        }
        hooks.forward(op);
        if op.is_done() {
            return Ok(op.result());
        }
        if hooks.is_cancelled() {
            return Err(Cancelled);
        }
        let deadline = op.poll_timeout().unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let wake = hooks.wait_until(Some(deadline)).unwrap_or(deadline);
        tokio::select! {
            r = control_sock.recv_from(&mut buf) => {
                match r {
                    Ok((n, from)) if from == control => {
                        op.handle_datagram(Instant::now(), Peer::Control, RxTime { wall: wall_now(), kernel: false }, &buf[..n]);
                    }
                    // IP_RECVERR: the control port answered with ICMP port unreachable
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        socket::drain_errqueue(&control_sock, &mut socket::errqueue_cmsg_buffer(), |_| {}, |_| {});
                        op.handle_refused(Instant::now(), control);
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if now >= deadline {
                    op.handle_timeout(now);
                }
            }
        }
    }
}

/// A TCP connection to `to` with the socket options of `o` (source address and port, ToS, VRF),
/// for the kinds that time a handshake: tcp-connect, http.
pub async fn connect(to: SocketAddr, o: &SocketOptions) -> io::Result<tokio::net::TcpStream> {
    let s = if to.is_ipv6() { tokio::net::TcpSocket::new_v6()? } else { tokio::net::TcpSocket::new_v4()? };
    apply(&SockRef::from(&s), to.ip(), o)?;
    if o.source_ip.is_some() || o.source_port != 0 {
        s.bind(SocketAddr::new(o.source_ip.unwrap_or_else(|| unspecified(to.ip())), o.source_port))?;
    }
    s.connect(to).await
}

/// Why a length-framed TCP exchange ([`tcp_framed_exchange`]) has no answer: `timed_out` when
/// the deadline passed, else what failed, naming the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeFailed {
    /// The deadline passed first.
    pub timed_out: bool,
    /// What failed.
    pub why: String,
}

/// One length-framed exchange over TCP (DNS, RFC 1035 §4.2.2): connects to `to` with the
/// options, writes `framed` (its two-octet length first), then reads the answer's two-octet
/// length and that many octets (at most 65,535: the length field bounds it), all before
/// `deadline`. Returns the answer without its length, and when its last octet arrived.
pub async fn tcp_framed_exchange(
    to: SocketAddr,
    o: &SocketOptions,
    framed: &[u8],
    deadline: Instant,
) -> Result<(Vec<u8>, RxTime), ExchangeFailed> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = connect(to, o).await.map_err(|e| format!("connecting to {to}: {e}"))?;
        s.write_all(framed).await.map_err(|e| format!("writing to {to}: {e}"))?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.map_err(|e| format!("reading the answer's length from {to}: {e}"))?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut answer)
            .await
            .map_err(|e| format!("reading the {}-octet answer from {to}: {e}", answer.len()))?;
        Ok::<_, String>((answer, RxTime { wall: wall_now(), kernel: false }))
    };
    match tokio::time::timeout_at(deadline.into(), exchange).await {
        Ok(Ok(x)) => Ok(x),
        Ok(Err(why)) => Err(ExchangeFailed { timed_out: false, why }),
        Err(_) => Err(ExchangeFailed { timed_out: true, why: format!("no answer from {to} before the deadline") }),
    }
}

/// An ICMP socket: datagram ("ping") socket when the host allows it (net.ipv4.ping_group_range),
/// else a raw socket (needs CAP_NET_RAW). ICMP Timestamp needs raw: the kernel lets datagram
/// ICMP sockets send only echo requests.
#[derive(Debug)]
pub struct IcmpSocket {
    pub(crate) sock: Socket,
    /// True for a raw socket (IPv4 raw sockets deliver the IP header; replies must be filtered).
    pub raw: bool,
    /// Receive stamp source.
    pub rx_mode: RxStampMode,
}

impl IcmpSocket {
    /// Opens an ICMP socket towards `target`; `need_raw` skips the datagram socket.
    pub fn open(target: IpAddr, o: &SocketOptions, need_raw: bool) -> io::Result<IcmpSocket> {
        let (domain, proto) =
            if target.is_ipv6() { (Domain::IPV6, Protocol::ICMPV6) } else { (Domain::IPV4, Protocol::ICMPV4) };
        let dgram = if need_raw { None } else { Socket::new(domain, Type::DGRAM, Some(proto)).ok() };
        let (s, raw) = match dgram {
            Some(s) => (s, false),
            None => (
                Socket::new(domain, Type::RAW, Some(proto)).map_err(|e| {
                    let why = if need_raw {
                        "ICMP Timestamp needs a raw socket, which needs CAP_NET_RAW (run as root or give the binary cap_net_raw)"
                    } else {
                        "a raw socket needs CAP_NET_RAW, and datagram ICMP sockets are not allowed for your group (add it to net.ipv4.ping_group_range, or give the binary cap_net_raw)"
                    };
                    io::Error::new(e.kind(), format!("{why}: {e}"))
                })?,
                true,
            ),
        };
        s.set_nonblocking(true)?;
        apply(&SockRef::from(&s), target, o)?;
        if let Some(src) = o.source_ip {
            s.bind(&SocketAddr::new(src, 0).into())?;
        }
        let rx_mode = if o.kernel_timestamps { socket::enable_timestamps(&s, true) } else { RxStampMode::User };
        Ok(IcmpSocket { sock: s, raw, rx_mode })
    }
}

/// Runs an ICMP operation (icmp-echo, icmp-jitter) to completion. `ident` filters replies on raw
/// sockets, which see every ICMP message the host receives.
pub fn run_icmp(
    op: &mut dyn Operation,
    sock: &IcmpSocket,
    target: IpAddr,
    ident: u16,
    pacer: &Pacer,
    hooks: Hooks<'_>,
) -> Result<OperationResult, Cancelled> {
    use ipsla_wire::icmp;
    let to: socket2::SockAddr = SocketAddr::new(target, 0).into();
    let raw = sock.raw;
    pump(
        op,
        &sock.sock,
        pacer,
        hooks,
        |b, _, _| sock.sock.send_to(b, &to),
        |r, data| {
            if r.src.ip() != target {
                return None;
            }
            let skip = if raw && target.is_ipv4() { data.len() - icmp::strip_ipv4_header(data).ok()?.len() } else { 0 };
            let msg = &data[skip..];
            let ours = icmp::Icmp::new_checked(msg).is_ok_and(|p| {
                matches!(p.msg_type(), icmp::ECHO_REPLY_V4 | icmp::ECHO_REPLY_V6 | icmp::TIMESTAMP_REPLY)
                    && (!raw || p.ident() == ident)
            });
            ours.then_some((Peer::Probe, skip..data.len()))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tos_and_device_are_applied() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let o = SocketOptions { tos: Some(0xb8), ..SocketOptions::default() };
        let (s, local, _) = udp_socket(lo, &o).unwrap();
        assert_eq!(SockRef::from(&s).tos_v4().unwrap(), 0xb8, "EF");
        assert_eq!(local.ip(), lo, "the kernel's source address towards the target");
        let bad = SocketOptions { vrf: Some("no-such-vrf0".into()), ..SocketOptions::default() };
        let e = udp_socket(lo, &bad).unwrap_err().to_string();
        assert!(e.contains("no-such-vrf0"), "{e}");
    }
}
