//! The TWAMP server driver: TCP control listeners, one task per control connection pumping an
//! [`ipsla_core::twamp::server::ControlServer`], one UDP socket and task per accepted test
//! session pumping a [`SessionReflector`], and the TWAMP-Light reflector sockets
//! ([`LightReflector`]). The control connections and their test sessions run on the responder's
//! main thread (current-thread runtime and a `LocalSet`), so their counters live in an
//! `Rc<RefCell<_>>`. A TWAMP-Light address has a socket on every worker thread (`SO_REUSEPORT`,
//! [`crate::responder`]) and its state behind a mutex ([`LightShared`]).
//!
//! Limits: at most [`ServerConfig::max_connections`] control connections, and
//! [`ServerConfig::max_connections_per_source`] from one address; a connection over a limit is
//! greeted with Modes 0 and closed (RFC 4656 §3.1). A client that does not complete its
//! Set-Up-Response within the setup timeout, or stays silent for SERVWAIT outside a test, is
//! disconnected; a session without test packets for REFWAIT ends. Reads are sized by the
//! machine ([`ipsla_core::twamp::server::ControlServer::expected_len`]), so a length field is
//! never trusted before the machine has checked it.
//!
//! Test sessions: the machine binds a session's port through [`SessionBinder`] before it writes
//! the Accept-Session; the socket has kernel receive timestamps, TTL/Hop Limit reception and a
//! reply TTL of 255 (RFC 5357 §4.2), and gets the session's DSCP as IP_TOS / IPV6_TCLASS. T3 is
//! written right before `send_to`. A session ends at Stop-Sessions + Timeout, at REFWAIT, or when
//! its control connection closes; its socket closes with it.

use crate::clock::wall_now;
use crate::reflect::{HostClock, Reflect, ReplySender, SharedCalibration, bind_in_range};
use crate::socket;
use ipsla_core::io::{BindError, PortBinder, PortKey, Proto};
use ipsla_core::ratelimit::{KeyedLimiter, RejectLog};
use ipsla_core::twamp::reflector::{
    Drop as TestDrop, LightConfig, LightReflector, Received, ReflectorStats, Reply, SessionReflector,
};
use ipsla_core::twamp::server::{ControlServer, ServerConfig, ServerEvent, ServerStats};
use ipsla_wire::twamp::Sid;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// How long one write of control bytes may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters and gauges of the TWAMP server, for the responder's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TwampStatus {
    /// Control connections open now.
    pub connections: u64,
    /// Test sessions whose reflector runs now.
    pub sessions: u64,
    /// Control-server counters (all connections, since start).
    pub server: ServerStats,
    /// Session-Reflector counters of control sessions.
    pub reflector: ReflectorStats,
    /// TWAMP-Light reflector counters.
    pub light: ReflectorStats,
}

struct Shared {
    status: TwampStatus,
    log: RejectLog,
    per_source: HashMap<IpAddr, usize>,
    /// Connections being greeted with Modes 0.
    refusing: usize,
    /// New connections per source address (RFC 4656 leaves the policy to the server).
    accepts: KeyedLimiter<IpAddr>,
}

impl Shared {
    fn new(cfg: &ServerConfig) -> Shared {
        let rate = cfg.connection_rate;
        Shared {
            status: TwampStatus::default(),
            log: RejectLog::default(),
            per_source: HashMap::new(),
            refusing: 0,
            accepts: KeyedLimiter::new(rate, (2.0 * rate).ceil().clamp(1.0, 1e6) as u32, 65_536),
        }
    }

    /// Adds a connection's new counts, logging its authentication and mode rejections at a
    /// bounded rate (the counters keep every one).
    fn server_stats(&mut self, peer: SocketAddr, d: &ServerStats) {
        self.status.server.merge(d);
        let now = Instant::now();
        for (n, reason, what) in [
            (d.rejected_unknown_key_id, "unknown_key_id", "TWAMP-Control: unknown KeyID (Server-Start Accept 1)"),
            (d.rejected_bad_token, "bad_token", "TWAMP-Control: wrong shared secret (Server-Start Accept 1)"),
            (d.rejected_mode, "mode_not_offered", "TWAMP-Control: mode not offered (Server-Start Accept 3)"),
            (d.bad_hmac, "control_bad_hmac", "TWAMP-Control: message HMAC failed, connection closed"),
            (d.stop_mismatch, "stop_mismatch", "TWAMP-Control: Stop-Sessions does not count the sessions, closed"),
        ] {
            if n > 0 {
                self.log.warn(now, reason, peer, what);
            }
        }
    }
}

/// The TWAMP server's state on the responder thread.
#[derive(Clone)]
pub struct TwampServer {
    cfg: Arc<ServerConfig>,
    kernel_ts: bool,
    shared: Rc<RefCell<Shared>>,
    t3: SharedCalibration,
}

impl TwampServer {
    /// A server with this (validated) configuration.
    pub(crate) fn new(cfg: Arc<ServerConfig>, kernel_ts: bool, t3: SharedCalibration) -> Self {
        let shared = Rc::new(RefCell::new(Shared::new(&cfg)));
        TwampServer { cfg, kernel_ts, shared, t3 }
    }

    /// A snapshot of the counters.
    pub fn status(&self) -> TwampStatus {
        self.shared.borrow().status.clone()
    }

    /// Accepts control connections on `listener` until `shutdown`.
    pub async fn listen(self, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let r = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = listener.accept() => r,
            };
            let (stream, peer) = match r {
                Ok(x) => x,
                Err(e) => {
                    // descriptors exhausted and the like: do not spin
                    tracing::warn!(error = %e, "TWAMP-Control accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(local) = stream.local_addr() else { continue };
            let _ = stream.set_nodelay(true);
            let admitted = {
                let mut s = self.shared.borrow_mut();
                let from = s.per_source.get(&peer.ip()).copied().unwrap_or(0);
                let in_rate = self.cfg.connection_rate <= 0.0 || s.accepts.check(Instant::now(), peer.ip());
                if in_rate
                    && (s.status.connections as usize) < self.cfg.max_connections
                    && from < self.cfg.max_connections_per_source
                {
                    s.status.connections += 1;
                    *s.per_source.entry(peer.ip()).or_default() += 1;
                    Some(true)
                } else if s.refusing < self.cfg.max_connections {
                    s.refusing += 1;
                    Some(false)
                } else {
                    // a flood: not even a greeting
                    s.status.server.refused += 1;
                    None
                }
            };
            match admitted {
                Some(true) => {
                    tracing::debug!(%peer, "TWAMP-Control connection");
                    let guard = ConnGuard { shared: self.shared.clone(), peer: peer.ip() };
                    tokio::task::spawn_local(self.clone().connection(stream, peer, local, guard, shutdown.clone()));
                }
                Some(false) => {
                    let what = "TWAMP-Control connection over the limits: greeting with Modes 0";
                    self.shared.borrow_mut().log.warn(Instant::now(), "connection_limit", peer, what);
                    tokio::task::spawn_local(self.clone().refuse(stream, peer, local));
                }
                None => drop(stream),
            }
        }
    }

    async fn refuse(self, mut stream: TcpStream, peer: SocketAddr, local: SocketAddr) {
        let mut m = ControlServer::refuse(self.cfg.clone(), Instant::now(), peer, local, &mut rand::rng());
        while let Some(b) = m.poll_transmit() {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&b)).await;
        }
        let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
        let mut s = self.shared.borrow_mut();
        s.status.server.merge(&m.take_stats());
        s.refusing -= 1;
    }

    async fn connection(
        self,
        mut stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        guard: ConnGuard,
        shutdown: CancellationToken,
    ) {
        let mut rng = rand::rng();
        let mut m = ControlServer::new(self.cfg.clone(), Instant::now(), peer, local, &mut rng);
        let mut binder = SessionBinder::new(self.kernel_ts, shutdown.child_token());
        let mut sessions: HashMap<Sid, SessionHandle> = HashMap::new();
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Sid>();
        let mut buf = Vec::new();
        let mut filled = 0usize;
        loop {
            // Events first (a reflector runs before its Start-Ack leaves), then the bytes.
            while let Some(ev) = m.poll_event() {
                self.on_event(ev, &mut binder, &mut sessions, &ended_tx, peer);
            }
            let mut write_failed = false;
            while let Some(b) = m.poll_transmit() {
                if !matches!(tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&b)).await, Ok(Ok(()))) {
                    write_failed = true;
                    break;
                }
            }
            if write_failed {
                m.handle_eof(&mut binder);
            }
            self.shared.borrow_mut().server_stats(peer, &m.take_stats());
            let Some(n) = m.expected_len() else {
                // drain the events the close produced (sessions already released)
                while let Some(ev) = m.poll_event() {
                    self.on_event(ev, &mut binder, &mut sessions, &ended_tx, peer);
                }
                break;
            };
            if buf.len() != n {
                buf.resize(n, 0);
                filled = 0;
            }
            let deadline = m.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    m.handle_eof(&mut binder);
                }
                Some(sid) = ended_rx.recv() => {
                    sessions.remove(&sid);
                    m.session_ended(Instant::now(), sid, &mut binder);
                }
                _ = sleep => {
                    m.handle_timeout(Instant::now(), &mut binder);
                }
                // `read` is cancel-safe: what arrived stays in `buf[..filled]`.
                r = stream.read(&mut buf[filled..]) => match r {
                    Ok(0) | Err(_) => m.handle_eof(&mut binder),
                    Ok(k) => {
                        filled += k;
                        if filled == n {
                            filled = 0;
                            let res = m.handle_bytes(Instant::now(), wall_now(), &buf, &mut binder, &mut rng);
                            if let Err(e) = res {
                                tracing::debug!(%peer, error = %e, "TWAMP-Control connection ends");
                            }
                        }
                    }
                },
            }
        }
        self.shared.borrow_mut().server_stats(peer, &m.take_stats());
        let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
        drop(stream);
        drop(guard);
        tracing::debug!(%peer, "TWAMP-Control connection closed");
        // Stopped sessions finish their Timeout (bounded by max_stop_timeout, and REFWAIT).
        while m.session_count() > 0 {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(sid) = ended_rx.recv() => m.session_ended(Instant::now(), sid, &mut binder),
                else => break,
            }
        }
        self.shared.borrow_mut().server_stats(peer, &m.take_stats());
        drop(binder); // cancels whatever session is left
    }

    fn on_event(
        &self,
        ev: ServerEvent,
        binder: &mut SessionBinder,
        sessions: &mut HashMap<Sid, SessionHandle>,
        ended: &mpsc::UnboundedSender<Sid>,
        peer: SocketAddr,
    ) {
        let now = Instant::now();
        match ev {
            ServerEvent::SessionAccepted { local, params } => {
                let sid = params.sid;
                let key = PortKey { proto: Proto::Udp, addr: local.ip(), port: local.port() };
                let (Some(sock), Some(token)) = (binder.pending.remove(&key), binder.tokens.get(&key).cloned()) else {
                    tracing::warn!(%local, "TWAMP test socket missing");
                    return;
                };
                let tos = u32::from(params.dscp) << 2;
                let r = if local.is_ipv6() { sock.set_tclass_v6(tos) } else { sock.set_tos_v4(tos) };
                if let Err(e) = r {
                    tracing::debug!(%local, error = %e, "cannot set the reply DSCP");
                }
                let std: std::net::UdpSocket = sock.into();
                let sock = match UdpSocket::from_std(std) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%local, error = %e, "TWAMP test socket unusable");
                        return;
                    }
                };
                let reflector = Rc::new(RefCell::new(SessionReflector::new(now, params)));
                let notify = Rc::new(Notify::new());
                sessions.insert(sid, SessionHandle { reflector: reflector.clone(), notify: notify.clone() });
                self.shared.borrow_mut().status.sessions += 1;
                tracing::debug!(%peer, %local, "TWAMP test session accepted");
                tokio::task::spawn_local(self.clone().session(sock, sid, reflector, notify, token, ended.clone()));
            }
            ServerEvent::SessionsStarted(sids) => {
                for sid in sids {
                    if let Some(h) = sessions.get(&sid) {
                        h.reflector.borrow_mut().start(now);
                        h.notify.notify_one();
                    }
                }
            }
            ServerEvent::SessionsStopped(sids) => {
                for sid in sids {
                    if let Some(h) = sessions.get(&sid) {
                        h.reflector.borrow_mut().stop(now);
                        h.notify.notify_one();
                    }
                }
            }
            ServerEvent::Closed(reason) => {
                tracing::debug!(%peer, %reason, "TWAMP-Control connection closing");
                // The machine released the ports of every session that was not stopped (their
                // tasks are cancelled); stopped ones run out their Timeout.
                sessions.clear();
            }
        }
    }

    /// One test session: reflect until stopped + Timeout, REFWAIT, or cancellation.
    async fn session(
        self,
        sock: UdpSocket,
        sid: Sid,
        reflector: Rc<RefCell<SessionReflector>>,
        notify: Rc<Notify>,
        token: CancellationToken,
        ended: mpsc::UnboundedSender<Sid>,
    ) {
        // the thread's batch buffers receive and build (crate::batch): a session holds its socket
        let mut sender = ReplySender::new(self.t3.clone());
        let mut port = SessionPort { reflector: &reflector, shared: &self.shared, clock: HostClock::new() };
        loop {
            let Some(deadline) = reflector.borrow().poll_timeout() else { break };
            tokio::select! {
                biased;
                _ = token.cancelled() => break,
                _ = notify.notified() => continue,
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let end = reflector.borrow_mut().handle_timeout(Instant::now());
                    if let Some(end) = end {
                        tracing::debug!(?end, "TWAMP test session ends");
                        let _ = ended.send(sid);
                        break;
                    }
                    continue;
                }
                _ = sender.reflect(&sock, &mut port) => {}
            }
            let stats = reflector.borrow_mut().take_stats();
            self.shared.borrow_mut().status.reflector.merge(&stats);
        }
        let stats = reflector.borrow_mut().take_stats();
        let mut s = self.shared.borrow_mut();
        s.status.reflector.merge(&stats);
        s.status.sessions = s.status.sessions.saturating_sub(1);
    }
}

/// A TWAMP test session's socket as [`ReplySender::reflect`] sees it.
struct SessionPort<'a> {
    reflector: &'a Rc<RefCell<SessionReflector>>,
    shared: &'a Rc<RefCell<Shared>>,
    clock: HostClock,
}

impl Reflect for SessionPort<'_> {
    type Reply = Reply;

    fn handle(
        &mut self,
        now: Instant,
        r: &socket::Received,
        pkt: &mut [u8],
        out: &mut [u8],
    ) -> Option<(usize, bool, Reply)> {
        let info = Received { rx: r.rx, src: r.src, ttl: r.ttl, error_estimate: self.clock.get(now).0 };
        match self.reflector.borrow_mut().handle(now, &info, &pkt[..r.len], out) {
            Ok(reply) => Some((reply.len, false, reply)),
            Err(d) => {
                tracing::debug!(src = %r.src, drop = ?d, "TWAMP test packet dropped");
                if d == TestDrop::BadHmac {
                    let what = "TWAMP test packet HMAC failed (dropped)";
                    self.shared.borrow_mut().log.warn(now, "test_bad_hmac", r.src, what);
                }
                None
            }
        }
    }

    fn transmit(&mut self, reply: &Reply, buf: &mut [u8], t3: Duration) {
        self.reflector.borrow().transmit(reply, buf, t3);
    }
}

/// A TWAMP-Light reflector address's state, shared by the sockets of its workers (one per worker
/// thread, `SO_REUSEPORT`): the stateful sequence numbers of each sender and the counters must
/// not depend on which worker a datagram lands on. The lock is taken for one datagram's handling
/// (or its T3) at a time, never across an await or a send.
pub(crate) struct LightShared {
    reflector: LightReflector,
    expired: Instant,
}

impl LightShared {
    /// The state of one TWAMP-Light address.
    pub(crate) fn new(stateful: bool) -> Arc<Mutex<LightShared>> {
        Arc::new(Mutex::new(LightShared {
            reflector: LightReflector::new(LightConfig { stateful, ..LightConfig::default() }),
            expired: Instant::now(),
        }))
    }

    /// The counters since start.
    pub(crate) fn stats(&self) -> ReflectorStats {
        self.reflector.stats().clone()
    }
}

/// Locks a mutex whose holder may have panicked: the state is counters and sequence numbers,
/// still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One TWAMP-Light reflector socket (RFC 5357 Appendix I) of a worker: receive with T2 and TTL,
/// build the reply, write T3 right before the send call.
pub(crate) async fn light(
    shared: Arc<Mutex<LightShared>>,
    t3: SharedCalibration,
    sock: UdpSocket,
    shutdown: CancellationToken,
) {
    let mut sender = ReplySender::new(t3);
    let mut port = LightPort { shared: &shared, clock: HostClock::new() };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = sender.reflect(&sock, &mut port) => {}
        }
    }
}

/// A TWAMP-Light reflector socket (RFC 5357 Appendix I) as [`ReplySender::reflect`] sees it:
/// T2 and TTL from each datagram, the reply built beside it, T3 written right before the send.
struct LightPort<'a> {
    shared: &'a Mutex<LightShared>,
    clock: HostClock,
}

impl Reflect for LightPort<'_> {
    type Reply = Reply;

    fn handle(
        &mut self,
        now: Instant,
        r: &socket::Received,
        pkt: &mut [u8],
        out: &mut [u8],
    ) -> Option<(usize, bool, Reply)> {
        let info = Received { rx: r.rx, src: r.src, ttl: r.ttl, error_estimate: self.clock.get(now).0 };
        let mut s = lock(self.shared);
        if now.saturating_duration_since(s.expired) > Duration::from_secs(30) {
            s.reflector.expire(now);
            s.expired = now;
        }
        let res = s.reflector.handle(now, &info, &pkt[..r.len], out);
        drop(s);
        match res {
            Ok(reply) => Some((reply.len, false, reply)),
            Err(d) => {
                tracing::debug!(src = %r.src, drop = ?d, "TWAMP-Light packet dropped");
                None
            }
        }
    }

    fn transmit(&mut self, reply: &Reply, buf: &mut [u8], t3: Duration) {
        lock(self.shared).reflector.transmit(reply, buf, t3);
    }
}

struct SessionHandle {
    reflector: Rc<RefCell<SessionReflector>>,
    notify: Rc<Notify>,
}

/// Gives a connection's slot back when its task ends, however it ends.
struct ConnGuard {
    shared: Rc<RefCell<Shared>>,
    peer: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut s = self.shared.borrow_mut();
        s.status.connections = s.status.connections.saturating_sub(1);
        if let Some(n) = s.per_source.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                s.per_source.remove(&self.peer);
            }
        }
    }
}

/// Binds the UDP sockets of a connection's test sessions for the control machine, and cancels a
/// session's task when the machine releases its port.
pub struct SessionBinder {
    kernel_ts: bool,
    parent: CancellationToken,
    pending: HashMap<PortKey, socket2::Socket>,
    tokens: HashMap<PortKey, CancellationToken>,
}

impl SessionBinder {
    /// A binder whose session tokens are children of `parent`.
    pub fn new(kernel_ts: bool, parent: CancellationToken) -> Self {
        SessionBinder { kernel_ts, parent, pending: HashMap::new(), tokens: HashMap::new() }
    }

    fn bind_one(&mut self, key: PortKey) -> io::Result<()> {
        let addr = SocketAddr::new(key.addr, key.port);
        let s = socket::bind_udp(addr)?;
        if self.kernel_ts {
            socket::enable_timestamps(&s, true);
        }
        socket::enable_ttl_tos(&s, addr.is_ipv6());
        // RFC 5357 §4.2: the reflector SHOULD send with TTL 255.
        if addr.is_ipv6() {
            s.set_unicast_hops_v6(255)?;
        } else {
            s.set_ttl_v4(255)?;
        }
        self.pending.insert(key, s);
        self.tokens.insert(key, self.parent.child_token());
        Ok(())
    }
}

impl PortBinder for SessionBinder {
    fn open(&mut self, key: PortKey, range: &RangeInclusive<u16>) -> Result<u16, BindError> {
        bind_in_range(key, range, |k| self.bind_one(k))
    }

    fn close(&mut self, key: PortKey) {
        self.pending.remove(&key);
        if let Some(t) = self.tokens.remove(&key) {
            t.cancel();
        }
    }
}

impl Drop for SessionBinder {
    fn drop(&mut self) {
        for (_, t) in self.tokens.drain() {
            t.cancel();
        }
    }
}
