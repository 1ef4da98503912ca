//! The responder driver: control sockets on 1967 (v1) and 1167 (v2), one socket or listener per
//! open measurement port, a timer for session expiry, the STAMP reflector sockets, the TWAMP
//! control listeners with their test sessions and the TWAMP-Light reflector sockets
//! ([`crate::twamp::server`]), all on one thread.
//!
//! One thread with a current-thread runtime owns the [`Responder`] state: no locks on the probe
//! path, and one core is what a responder gets on a router too. `spawn_responder` binds the
//! control sockets on the caller's thread (so bind errors surface at once, and tests can use port
//! 0), then hands them to that thread.

use crate::clock::wall_now;
use crate::reflect::{HostClock, Reflect, ReplySender, SharedCalibration, T3Calibration, bind_in_range, send_reply};
use crate::socket::{self, RxStampMode};
use crate::twamp::server::{TwampServer, TwampStatus};
use crate::{Listener, NetError};
use ipsla_core::io::{BindError, PortBinder, PortKey, Proto};
use ipsla_core::ops::DeltaStats;
use ipsla_core::ratelimit::RejectLog;
use ipsla_core::responder::{
    ControlResult, PermanentKind, ProbeResult, Responder, ResponderConfig, ResponderStats, SessionInfo, TxStamp,
    stamp_transmit,
};
use ipsla_core::stamp::{Drop as StampDrop, ReflectorConfig, ReflectorStats, StampReflector};
use ipsla_core::twamp::server::ServerConfig;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Where and how the responder listens.
#[derive(Debug, Clone)]
pub struct ResponderOptions {
    /// Addresses for the control sockets. Empty = `0.0.0.0` and `::` (the latter skipped with a
    /// warning where the host has no IPv6).
    pub listen: Vec<IpAddr>,
    /// v1 control port (IOS: 1967). 0 = any free port (tests).
    pub v1_port: u16,
    /// v2 control port (RFC 6812: 1167). 0 = any free port (tests).
    pub v2_port: u16,
    /// Disable v1 (legacy) control.
    pub v1_enabled: bool,
    /// Disable v2 (RFC 6812) control.
    pub v2_enabled: bool,
    /// Ports that answer without control (IOS `ip sla responder udp-echo|tcp-connect ...`).
    pub permanent: Vec<(PermanentKind, SocketAddr)>,
    /// Use kernel receive timestamps where available.
    pub kernel_timestamps: bool,
    /// Policy and limits.
    pub core: ResponderConfig,
    /// Unix socket that serves the status as JSON to `ipsla responder --status`.
    pub status_socket: Option<std::path::PathBuf>,
    /// Add the learned userspace→kernel send delay to T3 (needs kernel timestamps).
    pub t3_calibration: bool,
    /// STAMP Session-Reflector sockets (RFC 8762; the standard port is 862, none by default).
    pub stamp: Vec<SocketAddr>,
    /// STAMP reflector in stateful mode (its own sequence numbers per session).
    pub stamp_stateful: bool,
    /// STAMP authenticated mode with this HMAC key; unauthenticated when `None`.
    pub stamp_key: Option<Vec<u8>>,
    /// TWAMP-Control listeners (TCP; RFC 5357 §3, the standard port is 862; none by default).
    pub twamp: Vec<SocketAddr>,
    /// TWAMP server policy and limits (modes, keys, test ports, timers). `start_time` is set
    /// when the responder starts.
    pub twamp_config: ServerConfig,
    /// TWAMP-Light reflector sockets (UDP; RFC 5357 Appendix I; none by default).
    pub twamp_light: Vec<SocketAddr>,
    /// TWAMP-Light reflector in stateful mode (its own sequence numbers per sender).
    pub twamp_light_stateful: bool,
}

impl ResponderOptions {
    /// What the responder needs once its listeners are bound: `CAP_NET_BIND_SERVICE` only when
    /// measurement sessions may open ports below 1024.
    pub fn run_privileges(&self) -> Vec<crate::privilege::Privilege> {
        let low = |r: &std::ops::RangeInclusive<u16>| *r.start() < 1024;
        if low(&self.core.port_range) || (!self.twamp.is_empty() && low(&self.twamp_config.test_ports)) {
            vec![crate::privilege::Privilege::BindService]
        } else {
            Vec::new()
        }
    }
}

impl Default for ResponderOptions {
    fn default() -> Self {
        ResponderOptions {
            listen: Vec::new(),
            v1_port: ipsla_wire::cisco::CONTROL_V1_PORT,
            v2_port: ipsla_wire::cisco::CONTROL_V2_PORT,
            v1_enabled: true,
            v2_enabled: true,
            permanent: Vec::new(),
            kernel_timestamps: true,
            core: ResponderConfig::default(),
            status_socket: None,
            t3_calibration: true,
            stamp: Vec::new(),
            stamp_stateful: false,
            stamp_key: None,
            twamp: Vec::new(),
            twamp_config: ServerConfig::default(),
            twamp_light: Vec::new(),
            twamp_light_stateful: false,
        }
    }
}

/// What `ipsla responder --status` shows: counters, sessions, listeners.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StatusReport {
    /// v1 control listeners.
    pub control_v1: Vec<SocketAddr>,
    /// v2 control listeners.
    pub control_v2: Vec<SocketAddr>,
    /// Permanent ports.
    pub permanent: Vec<(PortKey, PermanentKind)>,
    /// Receive-timestamp source of the measurement sockets.
    pub rx_timestamps: RxStampMode,
    /// Seconds since start.
    pub uptime_s: u64,
    /// The responder's process id (0 from a version that did not say).
    #[serde(default)]
    pub pid: u32,
    /// Counters.
    pub stats: ResponderStats,
    /// Active sessions.
    pub sessions: Vec<SessionInfo>,
    /// Open-file limit in force (each session holds a socket).
    pub fd_limit: u64,
    /// Self-diagnostic: userspace read after `recvmsg` − kernel receive stamp (T2), over probes.
    pub rx_user_minus_kernel: DeltaStats,
    /// Self-diagnostic: kernel transmit stamp − the userspace T3 reading (before calibration).
    pub tx_kernel_minus_user: DeltaStats,
    /// What T3 calibration adds to the userspace reading now, ns (0 when off).
    pub t3_lead_ns: i64,
    /// STAMP reflector sockets.
    #[serde(default)]
    pub stamp: Vec<SocketAddr>,
    /// STAMP reflector counters.
    #[serde(default)]
    pub stamp_stats: ReflectorStats,
    /// TWAMP-Control listeners.
    #[serde(default)]
    pub twamp: Vec<SocketAddr>,
    /// TWAMP-Light reflector sockets.
    #[serde(default)]
    pub twamp_light: Vec<SocketAddr>,
    /// TWAMP server, reflector and TWAMP-Light counters.
    #[serde(default)]
    pub twamp_stats: TwampStatus,
}

/// A responder running on its own thread.
#[derive(Debug)]
pub struct RunningResponder {
    control_v1: Vec<SocketAddr>,
    control_v2: Vec<SocketAddr>,
    permanent: Vec<(PermanentKind, SocketAddr)>,
    stamp: Vec<SocketAddr>,
    twamp: Vec<SocketAddr>,
    twamp_light: Vec<SocketAddr>,
    shutdown: CancellationToken,
    status_tx: mpsc::UnboundedSender<oneshot::Sender<StatusReport>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The status socket's path and inode, removed at stop if it is still ours.
    status_socket: Option<(std::path::PathBuf, u64)>,
}

impl RunningResponder {
    /// Bound v1 control addresses.
    pub fn control_v1_addrs(&self) -> &[SocketAddr] {
        &self.control_v1
    }
    /// Bound v2 control addresses.
    pub fn control_v2_addrs(&self) -> &[SocketAddr] {
        &self.control_v2
    }
    /// Bound permanent ports (udp-echo, udp-jitter, tcp-connect answered without control).
    pub fn permanent_addrs(&self) -> &[(PermanentKind, SocketAddr)] {
        &self.permanent
    }
    /// Bound STAMP reflector addresses.
    pub fn stamp_addrs(&self) -> &[SocketAddr] {
        &self.stamp
    }
    /// Bound TWAMP-Control listener addresses.
    pub fn twamp_addrs(&self) -> &[SocketAddr] {
        &self.twamp
    }
    /// Bound TWAMP-Light reflector addresses.
    pub fn twamp_light_addrs(&self) -> &[SocketAddr] {
        &self.twamp_light
    }
    /// A snapshot of the status (blocks until the responder thread answers).
    pub fn status(&self) -> Option<StatusReport> {
        let (tx, rx) = oneshot::channel();
        self.status_tx.send(tx).ok()?;
        rx.blocking_recv().ok()
    }
    /// Async version of [`RunningResponder::status`].
    pub async fn status_async(&self) -> Option<StatusReport> {
        let (tx, rx) = oneshot::channel();
        self.status_tx.send(tx).ok()?;
        rx.await.ok()
    }
    /// A token that stops the responder when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
    /// Stops the responder and waits for its thread: every socket is closed when this returns.
    pub fn stop(mut self) {
        self.stop_inner();
    }
    fn stop_inner(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some((path, ino)) = self.status_socket.take() {
            use std::os::unix::fs::MetadataExt;
            // not a socket another responder has since put there
            if std::fs::metadata(&path).is_ok_and(|m| m.ino() == ino) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

impl Drop for RunningResponder {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Binds the status socket at `path`, one responder per socket: a socket another responder
/// answers on is refused, a stale one (nothing answers) replaced. Returns it and its inode, so
/// that only this socket file is removed at exit.
fn bind_status_socket(path: &std::path::Path) -> Result<(std::os::unix::net::UnixListener, u64), NetError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let err = |source| NetError::StatusSocket { path: path.to_path_buf(), source };
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(NetError::StatusSocketInUse { path: path.to_path_buf() });
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let l = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
    // the status names control sources and sessions: owner and group only
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    let ino = std::fs::metadata(path).map_err(err)?.ino();
    Ok((l, ino))
}

fn bind_control(listener: Listener, addr: SocketAddr, optional: bool) -> Result<Option<std::net::UdpSocket>, NetError> {
    match socket::bind_udp(addr) {
        Ok(s) => {
            // Keeps kernel stamping switched on host-wide for as long as we run: the kernel enables
            // it through a deferred static key, and a measurement socket opened just before the
            // control reply would otherwise miss stamps on its first probes.
            socket::enable_rx_timestamps(&s);
            Ok(Some(s.into()))
        }
        Err(e) if optional => {
            tracing::warn!(%addr, error = %e, "not listening on this address");
            Ok(None)
        }
        Err(source) => Err(NetError::Bind { listener, addr, source }),
    }
}

/// Binds reflector sockets (STAMP, TWAMP-Light): kernel receive and transmit stamps (T2, and the
/// T3 calibration), the received TTL and ToS.
fn bind_reflectors(
    listener: Listener,
    addrs: &[SocketAddr],
    kernel_ts: bool,
) -> Result<Vec<std::net::UdpSocket>, NetError> {
    addrs
        .iter()
        .map(|addr| {
            let s = socket::bind_udp(*addr).map_err(|source| NetError::Bind { listener, addr: *addr, source })?;
            if kernel_ts {
                socket::enable_timestamps(&s, true);
            }
            socket::enable_ttl_tos(&s, addr.is_ipv6());
            Ok(s.into())
        })
        .collect()
}

/// Binds the control, permanent and reflector sockets, then runs the responder on a new thread.
pub fn spawn_responder(opts: ResponderOptions) -> Result<RunningResponder, NetError> {
    bind_responder(opts)?.spawn()
}

/// A responder whose sockets are bound but whose thread has not started: the moment to give up
/// privileges ([`crate::privilege`]) before any thread exists.
pub struct BoundResponder {
    ctx: ThreadCtx,
    running: RunningResponder,
}

impl std::fmt::Debug for BoundResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundResponder").field("running", &self.running).finish_non_exhaustive()
    }
}

impl BoundResponder {
    /// Starts the responder thread.
    pub fn spawn(self) -> Result<RunningResponder, NetError> {
        let BoundResponder { ctx, mut running } = self;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("ipsla-responder".into()).spawn(move || {
            // nothing here binds below 1024 unless the allowed test ports say so (see privilege)
            crate::privilege::restrict_current_thread();
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, run(ctx, ready_tx));
        })?;
        running.thread = Some(thread);
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(running),
            Ok(Err(e)) => Err(NetError::Io(e)),
            Err(_) => Err(NetError::Io(io::Error::other("responder thread ended during start-up"))),
        }
    }
}

/// Binds the control, permanent and reflector sockets and the status socket, without starting
/// the responder thread.
pub fn bind_responder(opts: ResponderOptions) -> Result<BoundResponder, NetError> {
    let fd_limit = socket::raise_fd_limit();
    let defaults = opts.listen.is_empty();
    let listen = if defaults {
        vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
    } else {
        opts.listen.clone()
    };
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for ip in &listen {
        let optional = defaults && ip.is_ipv6();
        if opts.v1_enabled {
            v1.extend(bind_control(Listener::ControlV1, SocketAddr::new(*ip, opts.v1_port), optional)?);
        }
        if opts.v2_enabled {
            v2.extend(bind_control(Listener::ControlV2, SocketAddr::new(*ip, opts.v2_port), optional)?);
        }
    }
    let mut core = opts.core.clone();
    let mut permanent = Vec::new();
    for (kind, addr) in &opts.permanent {
        let sock = match kind {
            PermanentKind::TcpConnect => socket::bind_tcp(*addr, 1024),
            _ => socket::bind_udp(*addr),
        }
        .map_err(|source| NetError::Bind { listener: Listener::Permanent(*kind), addr: *addr, source })?;
        permanent.push((*kind, sock));
    }
    let permanent_addrs: Vec<(PermanentKind, SocketAddr)> = permanent
        .iter()
        .filter_map(|(k, s)| s.local_addr().ok().and_then(|a| a.as_socket()).map(|a| (*k, a)))
        .collect();
    let stamp = bind_reflectors(Listener::Stamp, &opts.stamp, opts.kernel_timestamps)?;
    let stamp_addrs: Vec<SocketAddr> = stamp.iter().filter_map(|s| s.local_addr().ok()).collect();
    let mut twamp_cfg = opts.twamp_config.clone();
    twamp_cfg.start_time = wall_now();
    if !opts.twamp.is_empty() {
        twamp_cfg.validate().map_err(|e| NetError::Io(io::Error::new(io::ErrorKind::InvalidInput, e.to_string())))?;
    }
    let mut twamp = Vec::new();
    for addr in &opts.twamp {
        let s = socket::bind_tcp(*addr, 128).map_err(|source| NetError::Bind {
            listener: Listener::Twamp,
            addr: *addr,
            source,
        })?;
        twamp.push(std::net::TcpListener::from(s));
    }
    let twamp_addrs: Vec<SocketAddr> = twamp.iter().filter_map(|s| s.local_addr().ok()).collect();
    let twamp_light = bind_reflectors(Listener::TwampLight, &opts.twamp_light, opts.kernel_timestamps)?;
    let twamp_light_addrs: Vec<SocketAddr> = twamp_light.iter().filter_map(|s| s.local_addr().ok()).collect();
    let stamp_cfg =
        ReflectorConfig { stateful: opts.stamp_stateful, key: opts.stamp_key.clone(), ..ReflectorConfig::default() };
    let addrs = |v: &[std::net::UdpSocket]| v.iter().filter_map(|s| s.local_addr().ok()).collect::<Vec<_>>();
    let control_v1 = addrs(&v1);
    let control_v2 = addrs(&v2);
    // Control messages may not open the control ports, the reflector ports or, with a TWAMP
    // server, its test-session range: a source without a key must not be able to hold every
    // TWAMP test port (clients would get Accept 5).
    let twamp_ports = opts.twamp_config.test_ports.clone().filter(|_| !twamp.is_empty());
    let reflector_ports = twamp_light_addrs.iter().chain(&stamp_addrs).map(|a| a.port());
    let ports: Vec<u16> =
        control_v1.iter().chain(&control_v2).map(|a| a.port()).chain(reflector_ports).chain(twamp_ports).collect();
    for p in ports {
        if !core.reserved_ports.contains(&p) {
            core.reserved_ports.push(p);
        }
    }
    let status_listener = match &opts.status_socket {
        Some(path) => Some(bind_status_socket(path)?),
        None => None,
    };
    let status_socket = status_listener.as_ref().map(|(_, ino)| (opts.status_socket.clone().unwrap_or_default(), *ino));
    let status_listener = status_listener.map(|(l, _)| l);
    let shutdown = CancellationToken::new();
    let (status_tx, status_rx) = mpsc::unbounded_channel();
    let ctx = ThreadCtx {
        v1,
        v2,
        permanent,
        core,
        kernel_ts: opts.kernel_timestamps,
        shutdown: shutdown.clone(),
        status_rx,
        status_listener,
        control: (control_v1.clone(), control_v2.clone()),
        fd_limit,
        t3_calibration: opts.t3_calibration && opts.kernel_timestamps,
        stamp,
        stamp_addrs: stamp_addrs.clone(),
        stamp_cfg,
        twamp,
        twamp_light,
        twamp_light_stateful: opts.twamp_light_stateful,
        twamp_addrs: (twamp_addrs.clone(), twamp_light_addrs.clone()),
        twamp_server: TwampServerCfg(std::sync::Arc::new(twamp_cfg)),
    };
    let running = RunningResponder {
        control_v1,
        control_v2,
        permanent: permanent_addrs,
        stamp: stamp_addrs,
        twamp: twamp_addrs,
        twamp_light: twamp_light_addrs,
        shutdown,
        status_tx,
        thread: None,
        status_socket,
    };
    Ok(BoundResponder { ctx, running })
}

struct ThreadCtx {
    v1: Vec<std::net::UdpSocket>,
    v2: Vec<std::net::UdpSocket>,
    permanent: Vec<(PermanentKind, socket2::Socket)>,
    core: ResponderConfig,
    kernel_ts: bool,
    shutdown: CancellationToken,
    status_rx: mpsc::UnboundedReceiver<oneshot::Sender<StatusReport>>,
    status_listener: Option<std::os::unix::net::UnixListener>,
    control: (Vec<SocketAddr>, Vec<SocketAddr>),
    fd_limit: u64,
    t3_calibration: bool,
    stamp: Vec<std::net::UdpSocket>,
    stamp_addrs: Vec<SocketAddr>,
    stamp_cfg: ReflectorConfig,
    twamp: Vec<std::net::TcpListener>,
    twamp_light: Vec<std::net::UdpSocket>,
    twamp_light_stateful: bool,
    twamp_addrs: (Vec<SocketAddr>, Vec<SocketAddr>),
    twamp_server: TwampServerCfg,
}

/// The TWAMP configuration on its way to the responder thread, where the server state (not
/// `Send`) is built.
struct TwampServerCfg(std::sync::Arc<ServerConfig>);

/// Sockets opened by the core, waiting for their task to be spawned.
enum Opened {
    Udp(PortKey, UdpSocket, CancellationToken),
    Tcp(PortKey, TcpListener, CancellationToken),
}

struct NetBinder {
    open: HashMap<PortKey, CancellationToken>,
    opened: Vec<Opened>,
    kernel_ts: bool,
    rx_mode: RxStampMode,
    parent: CancellationToken,
}

impl NetBinder {
    fn bind_one(&mut self, key: PortKey) -> Result<Opened, io::Error> {
        let addr = SocketAddr::new(key.addr, key.port);
        let token = self.parent.child_token();
        Ok(match key.proto {
            Proto::Udp => {
                let s = socket::bind_udp(addr)?;
                if self.kernel_ts {
                    self.rx_mode = socket::enable_timestamps(&s, true);
                }
                let std: std::net::UdpSocket = s.into();
                Opened::Udp(key, UdpSocket::from_std(std)?, token)
            }
            Proto::Tcp => {
                let s = socket::bind_tcp(addr, 128)?;
                let std: std::net::TcpListener = s.into();
                Opened::Tcp(key, TcpListener::from_std(std)?, token)
            }
        })
    }
}

impl PortBinder for NetBinder {
    fn open(&mut self, key: PortKey, range: &RangeInclusive<u16>) -> Result<u16, BindError> {
        // Port 0 (v2): a port of the allowed range.
        bind_in_range(key, range, |k| {
            if self.open.contains_key(&k) {
                return Err(io::Error::from_raw_os_error(libc::EADDRINUSE));
            }
            let o = self.bind_one(k)?;
            self.record(k, o);
            Ok(())
        })
    }

    fn close(&mut self, key: PortKey) {
        if let Some(t) = self.open.remove(&key) {
            // The port task finishes the reply it is sending, then drops the socket.
            t.cancel();
        }
    }
}

impl NetBinder {
    fn record(&mut self, key: PortKey, o: Opened) {
        let token = match &o {
            Opened::Udp(_, _, t) | Opened::Tcp(_, _, t) => t.clone(),
        };
        self.open.insert(key, token);
        self.opened.push(o);
    }
}

struct Shared {
    responder: Responder,
    binder: NetBinder,
    rx_delta: DeltaStats,
    /// T3 calibration of every reflecting socket of this thread.
    t3: SharedCalibration,
    stamp: StampReflector,
    stamp_log: RejectLog,
    stamp_addrs: Vec<SocketAddr>,
    twamp: TwampServer,
    twamp_addrs: (Vec<SocketAddr>, Vec<SocketAddr>),
}

type State = Rc<RefCell<Shared>>;

async fn run(ctx: ThreadCtx, ready: std::sync::mpsc::Sender<io::Result<()>>) {
    let started = Instant::now();
    let shutdown = ctx.shutdown.clone();
    let t3 = T3Calibration::shared(ctx.t3_calibration);
    let state: State = Rc::new(RefCell::new(Shared {
        responder: Responder::new(ctx.core),
        binder: NetBinder {
            open: HashMap::new(),
            opened: Vec::new(),
            kernel_ts: ctx.kernel_ts,
            rx_mode: RxStampMode::User,
            parent: shutdown.clone(),
        },
        rx_delta: DeltaStats::default(),
        t3: t3.clone(),
        stamp: StampReflector::new(ctx.stamp_cfg),
        stamp_log: RejectLog::default(),
        stamp_addrs: ctx.stamp_addrs,
        twamp: TwampServer::new(ctx.twamp_server.0, ctx.kernel_ts, t3),
        twamp_addrs: ctx.twamp_addrs,
    }));
    let timer = Rc::new(Notify::new());
    let setup = || -> io::Result<()> {
        for s in ctx.v1.into_iter().chain(ctx.v2) {
            let sock = UdpSocket::from_std(s)?;
            tokio::task::spawn_local(control_task(state.clone(), sock, timer.clone(), shutdown.clone()));
        }
        for (kind, s) in ctx.permanent {
            let addr = s.local_addr()?.as_socket().ok_or_else(|| io::Error::other("bad local address"))?;
            let proto = if kind == PermanentKind::TcpConnect { Proto::Tcp } else { Proto::Udp };
            let key = PortKey { proto, addr: addr.ip(), port: addr.port() };
            let token = shutdown.child_token();
            let opened = match proto {
                Proto::Udp => {
                    let mut st = state.borrow_mut();
                    if ctx.kernel_ts {
                        st.binder.rx_mode = socket::enable_timestamps(&s, true);
                    }
                    let std: std::net::UdpSocket = s.into();
                    Opened::Udp(key, UdpSocket::from_std(std)?, token)
                }
                Proto::Tcp => {
                    let std: std::net::TcpListener = s.into();
                    Opened::Tcp(key, TcpListener::from_std(std)?, token)
                }
            };
            let mut st = state.borrow_mut();
            st.responder.add_permanent(key, kind);
            st.binder.opened.push(opened);
        }
        for s in ctx.stamp {
            let sock = UdpSocket::from_std(s)?;
            tokio::task::spawn_local(stamp_task(state.clone(), sock, shutdown.clone()));
        }
        let twamp = state.borrow().twamp.clone();
        for l in ctx.twamp {
            let l = TcpListener::from_std(l)?;
            tokio::task::spawn_local(twamp.clone().listen(l, shutdown.clone()));
        }
        for s in ctx.twamp_light {
            let sock = UdpSocket::from_std(s)?;
            tokio::task::spawn_local(twamp.clone().light(sock, ctx.twamp_light_stateful, shutdown.clone()));
        }
        spawn_opened(&state);
        if let Some(l) = ctx.status_listener {
            let l = tokio::net::UnixListener::from_std(l)?;
            tokio::task::spawn_local(status_socket_task(
                l,
                state.clone(),
                started,
                ctx.control.clone(),
                ctx.fd_limit,
                shutdown.clone(),
            ));
        }
        Ok(())
    };
    if let Err(e) = setup() {
        let _ = ready.send(Err(e));
        return;
    }
    let _ = ready.send(Ok(()));
    tokio::task::spawn_local(status_task(ctx.status_rx, state.clone(), started, ctx.control, ctx.fd_limit));
    timer_task(state, timer, shutdown).await;
}

fn report(
    state: &State,
    started: Instant,
    control: &(Vec<SocketAddr>, Vec<SocketAddr>),
    fd_limit: u64,
) -> StatusReport {
    let s = state.borrow();
    let now = Instant::now();
    StatusReport {
        control_v1: control.0.clone(),
        control_v2: control.1.clone(),
        permanent: s.responder.permanent_ports(),
        rx_timestamps: s.binder.rx_mode,
        uptime_s: now.duration_since(started).as_secs(),
        pid: std::process::id(),
        stats: s.responder.stats().clone(),
        sessions: s.responder.sessions(now),
        fd_limit,
        rx_user_minus_kernel: s.rx_delta,
        tx_kernel_minus_user: s.t3.borrow().tx_delta,
        t3_lead_ns: s.t3.borrow().lead_ns(),
        stamp: s.stamp_addrs.clone(),
        stamp_stats: s.stamp.stats().clone(),
        twamp: s.twamp_addrs.0.clone(),
        twamp_light: s.twamp_addrs.1.clone(),
        twamp_stats: s.twamp.status(),
    }
}

async fn status_task(
    mut rx: mpsc::UnboundedReceiver<oneshot::Sender<StatusReport>>,
    state: State,
    started: Instant,
    control: (Vec<SocketAddr>, Vec<SocketAddr>),
    fd_limit: u64,
) {
    while let Some(reply) = rx.recv().await {
        let _ = reply.send(report(&state, started, &control, fd_limit));
    }
}

async fn status_socket_task(
    l: tokio::net::UnixListener,
    state: State,
    started: Instant,
    control: (Vec<SocketAddr>, Vec<SocketAddr>),
    fd_limit: u64,
    shutdown: CancellationToken,
) {
    use tokio::io::AsyncWriteExt;
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = l.accept() => c,
        };
        let Ok((mut stream, _)) = conn else { continue };
        let body = serde_json::to_vec(&report(&state, started, &control, fd_limit)).unwrap_or_default();
        tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&body)).await;
        });
    }
}

fn spawn_opened(state: &State) {
    let opened: Vec<Opened> = std::mem::take(&mut state.borrow_mut().binder.opened);
    for o in opened {
        match o {
            Opened::Udp(key, sock, token) => {
                tokio::task::spawn_local(udp_port_task(state.clone(), key, sock, token));
            }
            Opened::Tcp(key, l, token) => {
                tokio::task::spawn_local(tcp_port_task(state.clone(), key, l, token));
            }
        }
    }
}

async fn control_task(state: State, sock: UdpSocket, timer: Rc<Notify>, shutdown: CancellationToken) {
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; ipsla_wire::cisco::control_v2::MAX_LEN];
    loop {
        let r = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = sock.recv_from(&mut buf) => r,
        };
        let Ok((len, src)) = r else { continue };
        let res = {
            let s = &mut *state.borrow_mut();
            s.responder.handle_control(Instant::now(), wall_now(), src, &buf[..len], &mut out, &mut s.binder)
        };
        spawn_opened(&state);
        if let ControlResult::Reply { len, accepted } = res {
            if accepted {
                timer.notify_one();
            }
            send_reply(&sock, &out[..len], src).await;
        }
    }
}

/// An IP SLA measurement port (a session's or a permanent one) as [`ReplySender::reflect`] sees
/// it: the core responder rewrites each probe into its reply in place.
struct ProbePort<'a> {
    state: &'a State,
    key: PortKey,
}

impl Reflect for ProbePort<'_> {
    type Reply = TxStamp;

    fn handle(
        &mut self,
        now: Instant,
        r: &socket::Received,
        pkt: &mut [u8],
        _: &mut [u8],
    ) -> Option<(usize, bool, TxStamp)> {
        let s = &mut *self.state.borrow_mut();
        if r.rx.kernel {
            s.rx_delta.add(r.user.as_nanos() as i64 - r.rx.wall.as_nanos() as i64);
        }
        match s.responder.handle_probe(now, &self.key, r.src, r.rx, &mut pkt[..r.len], &mut s.binder) {
            ProbeResult::Reply { len, stamp } => Some((len, true, stamp)),
            ProbeResult::Dropped(_) => None,
        }
    }

    fn transmit(&mut self, stamp: &TxStamp, buf: &mut [u8], t3: Duration) {
        stamp_transmit(buf, *stamp, t3);
    }
}

async fn udp_port_task(state: State, key: PortKey, sock: UdpSocket, token: CancellationToken) {
    // the thread's batch buffers receive and build (crate::batch): a session holds only its socket
    let mut sender = ReplySender::new(state.borrow().t3.clone());
    let mut port = ProbePort { state: &state, key };
    loop {
        let r = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            r = sender.reflect(&sock, &mut port) => r,
        };
        if let Err(e) = r {
            tracing::debug!(?key, error = %e, "receive failed");
        }
    }
}

async fn tcp_port_task(state: State, key: PortKey, l: TcpListener, token: CancellationToken) {
    loop {
        let r = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            r = l.accept() => r,
        };
        if let Ok((stream, peer)) = r {
            state.borrow_mut().responder.handle_tcp_accept(Instant::now(), &key, peer);
            // Closing at once sends FIN first, as the IOS responder does (tcp_connect capture).
            drop(stream);
        }
    }
}

async fn timer_task(state: State, timer: Rc<Notify>, shutdown: CancellationToken) {
    // Housekeeping runs at least this often even without session timers (permanent-port peers).
    const IDLE: Duration = Duration::from_secs(30);
    loop {
        let next = state.borrow().responder.poll_timeout();
        let deadline = next.unwrap_or_else(|| Instant::now() + IDLE).min(Instant::now() + IDLE);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = timer.notified() => continue,
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let s = &mut *state.borrow_mut();
        s.responder.handle_timeout(Instant::now(), &mut s.binder);
        s.stamp.expire(Instant::now());
    }
}

/// A STAMP reflector socket as [`ReplySender::reflect`] sees it: T2, TTL and ToS from each
/// datagram, the reply built beside it, T3 written right before the send call (calibrated like
/// the IP SLA ports').
struct StampPort<'a> {
    state: &'a State,
    local: SocketAddr,
    clock: HostClock,
}

impl Reflect for StampPort<'_> {
    type Reply = ipsla_core::stamp::Reply;

    fn handle(
        &mut self,
        now: Instant,
        r: &socket::Received,
        pkt: &mut [u8],
        out: &mut [u8],
    ) -> Option<(usize, bool, Self::Reply)> {
        let (error_estimate, sync_source) = self.clock.get(now);
        let info = ipsla_core::stamp::Received {
            rx: r.rx,
            src: r.src,
            dst: self.local,
            ttl: r.ttl,
            tos: r.tos,
            error_estimate,
            sync_source,
        };
        let mut s = self.state.borrow_mut();
        match s.stamp.handle(now, &info, &pkt[..r.len], out) {
            Ok(reply) => Some((reply.len, false, reply)),
            Err(StampDrop::BadHmac) => {
                s.stamp_log.warn(now, "stamp_bad_hmac", r.src, "STAMP packet HMAC failed (dropped)");
                None
            }
            Err(_) => None,
        }
    }

    fn transmit(&mut self, reply: &Self::Reply, buf: &mut [u8], t3: Duration) {
        self.state.borrow_mut().stamp.transmit(reply, buf, t3);
    }
}

/// One STAMP reflector socket.
async fn stamp_task(state: State, sock: UdpSocket, shutdown: CancellationToken) {
    let Ok(local) = sock.local_addr() else { return };
    let mut sender = ReplySender::new(state.borrow().t3.clone());
    let mut port = StampPort { state: &state, local, clock: HostClock::new() };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = sender.reflect(&sock, &mut port) => {}
        }
    }
}
