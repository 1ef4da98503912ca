//! The responder driver: control sockets on 1967 (v1) and 1167 (v2), one socket or listener per
//! open measurement port, a timer for session expiry, the STAMP reflector sockets, the TWAMP
//! control listeners with their test sessions and the TWAMP-Light reflector sockets
//! ([`crate::twamp::server`]).
//!
//! Threads: N workers ([`ResponderOptions::workers`], default one per online CPU), each with its
//! own current-thread runtime, batch buffers ([`crate::batch`]) and T3 calibration. The UDP ports
//! many senders share have one socket per worker, bound with `SO_REUSEPORT` and steered by the
//! flow's hash, or by the CPU the datagram arrived on with [`ResponderOptions::steer_by_cpu`]
//! ([`socket::bind_udp_group`]): the permanent udp-echo and udp-jitter ports and the STAMP and
//! TWAMP-Light reflectors. An IP SLA session port that a control message opens is one sender's:
//! one socket, which the main thread binds and hands to worker *port mod N* ([`session_worker`]). Worker 0 is the main thread, which also runs the control
//! ports, the permanent tcp-connect ports and TCP session ports, the TWAMP-Control server with
//! its test sessions, the expiry timer and the status. With one worker there is no
//! `SO_REUSEPORT` at all and everything runs on that thread, as before workers existed.
//!
//! State every worker must agree on is shared behind mutexes taken for one datagram's handling
//! at a time, never across an await or a send: the core [`Responder`] (sessions, responder
//! sequence numbers, counters, limits), the STAMP reflector (stateful sequence numbers) and each
//! TWAMP-Light address's reflector. `spawn_responder` binds the sockets on the caller's thread
//! (so bind errors surface at once, and tests can use port 0), then hands them to the threads.

use crate::clock::wall_now;
use crate::reflect::{HostClock, Reflect, ReplySender, SharedCalibration, T3Calibration, bind_in_range, send_reply};
use crate::socket::{self, RxStampMode, Steering};
use crate::twamp::server::{LightShared, TwampServer, TwampStatus, lock};
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
use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
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
    /// Worker threads answering the UDP measurement and reflector ports, each with its own
    /// `SO_REUSEPORT` socket per port; 0 = one per online CPU, 1 = one thread for everything
    /// (no `SO_REUSEPORT`).
    pub workers: usize,
    /// With several workers, a datagram goes to the worker of the CPU that received it instead
    /// of the one its flow hashes to ([`Steering`]): better cache locality where a NIC's RSS
    /// keeps each flow on one CPU; on loopback, TUN and veth one sender's probes can then reach
    /// two workers and be answered out of order.
    pub steer_by_cpu: bool,
}

impl ResponderOptions {
    /// The number of worker threads these options start: [`ResponderOptions::workers`], or one
    /// per CPU this process may run on when it is 0.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

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
            workers: 0,
            steer_by_cpu: false,
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
    /// Worker threads (1 from a version without workers).
    #[serde(default = "one")]
    pub workers: usize,
    /// How a datagram to a port shared by the workers picks its worker.
    #[serde(default)]
    pub steering: Steering,
    /// Each worker's own counters, worker 0 (the main thread) first. The top-level
    /// `rx_user_minus_kernel` and `tx_kernel_minus_user` merge them; `t3_lead_ns` is the smallest
    /// lead of the workers that have learnt one (16 transmit stamps or more; 0 when none has).
    #[serde(default)]
    pub worker_stats: Vec<WorkerStatus>,
}

fn one() -> usize {
    1
}

/// One worker thread's part of the status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerStatus {
    /// Replies this worker sent on the measurement and reflector ports (IP SLA, STAMP,
    /// TWAMP-Light; worker 0 also the TWAMP test sessions').
    pub replies: u64,
    /// Userspace read after the receive call − kernel receive stamp (T2), over its probes.
    pub rx_user_minus_kernel: DeltaStats,
    /// Kernel transmit stamp − userspace T3 reading, over its sampled replies.
    pub tx_kernel_minus_user: DeltaStats,
    /// What its T3 calibration adds to the userspace reading now, ns (0 when off or not learnt).
    pub t3_lead_ns: i64,
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
    /// The main thread (worker 0) and the other workers.
    threads: Vec<std::thread::JoinHandle<()>>,
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
        for t in self.threads.drain(..) {
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

/// Binds reflector sockets (STAMP, TWAMP-Light), one group of `workers` sockets per address:
/// kernel receive and transmit stamps (T2, and the T3 calibration), the received TTL and ToS.
fn bind_reflectors(
    listener: Listener,
    addrs: &[SocketAddr],
    kernel_ts: bool,
    (workers, by_cpu): (usize, bool),
    steering: &mut Steering,
) -> Result<Vec<Vec<std::net::UdpSocket>>, NetError> {
    addrs
        .iter()
        .map(|addr| {
            let (group, st) = socket::bind_udp_group(*addr, workers, by_cpu).map_err(|source| NetError::Bind {
                listener,
                addr: *addr,
                source,
            })?;
            *steering = st;
            Ok(group
                .into_iter()
                .map(|s| {
                    if kernel_ts {
                        socket::enable_timestamps(&s, true);
                    }
                    socket::enable_ttl_tos(&s, addr.is_ipv6());
                    s.into()
                })
                .collect())
        })
        .collect()
}

/// Binds the control, permanent and reflector sockets, then runs the responder on its threads.
pub fn spawn_responder(opts: ResponderOptions) -> Result<RunningResponder, NetError> {
    bind_responder(opts)?.spawn()
}

/// A responder whose sockets are bound but whose threads have not started: the moment to give
/// up privileges ([`crate::privilege`]) before any thread exists.
pub struct BoundResponder {
    ctx: ThreadCtx,
    running: RunningResponder,
}

impl std::fmt::Debug for BoundResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundResponder").field("running", &self.running).finish_non_exhaustive()
    }
}

/// Builds a worker thread's runtime and runs `f` on it; `ready` hears whether the runtime started.
fn on_new_runtime<F: std::future::Future<Output = ()>>(
    ready: std::sync::mpsc::Sender<io::Result<()>>,
    f: impl FnOnce(std::sync::mpsc::Sender<io::Result<()>>) -> F,
) {
    // nothing here binds below 1024 unless the allowed test ports say so (see privilege)
    crate::privilege::restrict_current_thread();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, f(ready));
}

impl BoundResponder {
    /// Starts the responder's threads: the main one (worker 0) and the other workers.
    pub fn spawn(self) -> Result<RunningResponder, NetError> {
        let BoundResponder { mut ctx, mut running } = self;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut receivers = std::mem::take(&mut ctx.worker_rx).into_iter();
        let main_rx = receivers.next().expect("worker 0's commands");
        let mut started = 0;
        let mut failed = None;
        for (i, rx) in receivers.enumerate() {
            let index = i + 1;
            let shared = ctx.shared.clone();
            let t3 = ctx.t3_calibration;
            let shutdown = ctx.shutdown.clone();
            let ready = ready_tx.clone();
            let spawned = std::thread::Builder::new().name(format!("ipsla-worker-{index}")).spawn(move || {
                on_new_runtime(ready, |ready| async move {
                    let _ = ready.send(Ok(()));
                    worker_loop(Rc::new(Worker::new(index, shared, t3)), rx, shutdown).await;
                })
            });
            match spawned {
                Ok(t) => {
                    running.threads.push(t);
                    started += 1;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            let ready = ready_tx.clone();
            match std::thread::Builder::new()
                .name("ipsla-responder".into())
                .spawn(move || on_new_runtime(ready, |ready| run(ctx, main_rx, ready)))
            {
                Ok(t) => {
                    running.threads.push(t);
                    started += 1;
                }
                Err(e) => failed = Some(e),
            }
        }
        drop(ready_tx);
        for _ in 0..started {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(_) => {
                    failed = failed.or(Some(io::Error::other("a responder thread ended during start-up")));
                }
            }
        }
        match failed {
            // dropping `running` stops and joins the threads that did start
            Some(e) => Err(NetError::Io(e)),
            None => Ok(running),
        }
    }
}

/// Binds the control, permanent and reflector sockets and the status socket, without starting
/// the responder's threads.
pub fn bind_responder(opts: ResponderOptions) -> Result<BoundResponder, NetError> {
    let fd_limit = socket::raise_fd_limit();
    let workers = opts.worker_count();
    let defaults = opts.listen.is_empty();
    let listen = if defaults {
        vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
    } else {
        opts.listen.clone()
    };
    // the control ports first, never shared: a second responder on this host fails there
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
    let mut steering = Steering::Single;
    let mut core = opts.core.clone();
    let mut permanent = Vec::new();
    for (kind, addr) in &opts.permanent {
        let err = |source| NetError::Bind { listener: Listener::Permanent(*kind), addr: *addr, source };
        let socks = match kind {
            PermanentKind::TcpConnect => vec![socket::bind_tcp(*addr, 1024).map_err(err)?],
            _ => {
                let (group, st) = socket::bind_udp_group(*addr, workers, opts.steer_by_cpu).map_err(err)?;
                steering = st;
                group
            }
        };
        permanent.push((*kind, socks));
    }
    let permanent_addrs: Vec<(PermanentKind, SocketAddr)> = permanent
        .iter()
        .filter_map(|(k, s)| s[0].local_addr().ok().and_then(|a| a.as_socket()).map(|a| (*k, a)))
        .collect();
    let first_addrs =
        |v: &[Vec<std::net::UdpSocket>]| v.iter().filter_map(|g| g[0].local_addr().ok()).collect::<Vec<_>>();
    let stamp = bind_reflectors(
        Listener::Stamp,
        &opts.stamp,
        opts.kernel_timestamps,
        (workers, opts.steer_by_cpu),
        &mut steering,
    )?;
    let stamp_addrs = first_addrs(&stamp);
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
    let twamp_light = bind_reflectors(
        Listener::TwampLight,
        &opts.twamp_light,
        opts.kernel_timestamps,
        (workers, opts.steer_by_cpu),
        &mut steering,
    )?;
    let twamp_light_addrs = first_addrs(&twamp_light);
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
    let (worker_tx, worker_rx): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
    let shared = Arc::new(Shared {
        core: Mutex::new(Core {
            responder: Responder::new(core),
            binder: NetBinder {
                open: HashMap::new(),
                opened: Vec::new(),
                kernel_ts: opts.kernel_timestamps,
                rx_mode: RxStampMode::User,
                parent: shutdown.clone(),
                steering,
            },
        }),
        stamp: Mutex::new(StampState { reflector: StampReflector::new(stamp_cfg), log: RejectLog::default() }),
    });
    let ctx = ThreadCtx {
        v1,
        v2,
        permanent,
        shared,
        worker_tx,
        worker_rx,
        kernel_ts: opts.kernel_timestamps,
        shutdown: shutdown.clone(),
        status_rx,
        status_listener,
        control: (control_v1.clone(), control_v2.clone()),
        fd_limit,
        t3_calibration: opts.t3_calibration && opts.kernel_timestamps,
        stamp,
        stamp_addrs: stamp_addrs.clone(),
        twamp,
        twamp_light,
        twamp_light_stateful: opts.twamp_light_stateful,
        twamp_addrs: (twamp_addrs.clone(), twamp_light_addrs.clone()),
        twamp_server: TwampServerCfg(Arc::new(twamp_cfg)),
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
        threads: Vec::new(),
        status_socket,
    };
    Ok(BoundResponder { ctx, running })
}

struct ThreadCtx {
    v1: Vec<std::net::UdpSocket>,
    v2: Vec<std::net::UdpSocket>,
    /// Each permanent port's sockets: one per worker for UDP, one listener for TCP.
    permanent: Vec<(PermanentKind, Vec<socket2::Socket>)>,
    shared: Arc<Shared>,
    /// Commands to each worker, worker 0 (the main thread) first.
    worker_tx: Vec<mpsc::UnboundedSender<Cmd>>,
    worker_rx: Vec<mpsc::UnboundedReceiver<Cmd>>,
    kernel_ts: bool,
    shutdown: CancellationToken,
    status_rx: mpsc::UnboundedReceiver<oneshot::Sender<StatusReport>>,
    status_listener: Option<std::os::unix::net::UnixListener>,
    control: (Vec<SocketAddr>, Vec<SocketAddr>),
    fd_limit: u64,
    t3_calibration: bool,
    /// Each STAMP address's sockets, one per worker.
    stamp: Vec<Vec<std::net::UdpSocket>>,
    stamp_addrs: Vec<SocketAddr>,
    twamp: Vec<std::net::TcpListener>,
    /// Each TWAMP-Light address's sockets, one per worker.
    twamp_light: Vec<Vec<std::net::UdpSocket>>,
    twamp_light_stateful: bool,
    twamp_addrs: (Vec<SocketAddr>, Vec<SocketAddr>),
    twamp_server: TwampServerCfg,
}

/// The TWAMP configuration on its way to the responder thread, where the server state (not
/// `Send`) is built.
struct TwampServerCfg(Arc<ServerConfig>);

/// Sockets opened by the core, waiting to be handed to their workers.
enum Opened {
    /// A permanent port's sockets, one per worker, the i-th for worker i; or a session port's
    /// one socket, for the worker its port number picks ([`session_worker`]).
    Udp(PortKey, Vec<socket2::Socket>, CancellationToken),
    Tcp(PortKey, socket2::Socket, CancellationToken),
}

struct NetBinder {
    open: HashMap<PortKey, CancellationToken>,
    opened: Vec<Opened>,
    kernel_ts: bool,
    rx_mode: RxStampMode,
    parent: CancellationToken,
    /// What the shared ports' groups use.
    steering: Steering,
}

/// The worker that answers a session port: a session is one sender's, so its port needs one
/// socket on one worker, not one per worker (10,000 sessions on 16 workers would otherwise hold
/// 160,000 descriptors); the port number spreads the sessions over the workers.
fn session_worker(key: &PortKey, workers: usize) -> usize {
    usize::from(key.port) % workers.max(1)
}

impl NetBinder {
    /// Binds a session port the core asked for: one socket ([`session_worker`] answers it).
    fn bind_one(&mut self, key: PortKey) -> Result<Opened, io::Error> {
        let addr = SocketAddr::new(key.addr, key.port);
        let token = self.parent.child_token();
        Ok(match key.proto {
            Proto::Udp => {
                let socks = vec![socket::bind_udp(addr)?];
                if self.kernel_ts {
                    for s in &socks {
                        self.rx_mode = socket::enable_timestamps(s, true);
                    }
                }
                Opened::Udp(key, socks, token)
            }
            Proto::Tcp => Opened::Tcp(key, socket::bind_tcp(addr, 128)?, token),
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
            // Each worker's port task finishes the reply it is sending, then drops its socket.
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

/// The IP SLA responder's state: one for all workers.
struct Core {
    responder: Responder,
    binder: NetBinder,
}

/// The STAMP reflector's state: one for all workers and addresses.
struct StampState {
    reflector: StampReflector,
    log: RejectLog,
}

/// What every worker shares. Each lock is taken for one datagram's handling (or one control
/// message, or one timer tick) and released before any await or send.
struct Shared {
    core: Mutex<Core>,
    stamp: Mutex<StampState>,
}

/// What one worker thread has of its own.
struct Worker {
    index: usize,
    shared: Arc<Shared>,
    /// T3 calibration of every reflecting socket of this worker: each learns its own send delay.
    t3: SharedCalibration,
    rx_delta: Cell<DeltaStats>,
}

impl Worker {
    fn new(index: usize, shared: Arc<Shared>, t3_calibration: bool) -> Worker {
        Worker { index, shared, t3: T3Calibration::shared(t3_calibration), rx_delta: Cell::new(DeltaStats::default()) }
    }

    fn status(&self) -> WorkerStatus {
        let t3 = self.t3.borrow();
        WorkerStatus {
            replies: crate::batch::with(|b| b.replies_sent()),
            rx_user_minus_kernel: self.rx_delta.get(),
            tx_kernel_minus_user: t3.tx_delta,
            t3_lead_ns: t3.lead_ns(),
        }
    }
}

/// What the main thread hands a worker.
enum Cmd {
    /// An IP SLA measurement port's socket (a session's or a permanent one), answered until the
    /// token is cancelled.
    Probe(PortKey, socket2::Socket, CancellationToken),
    /// A STAMP reflector socket.
    Stamp(std::net::UdpSocket),
    /// A TWAMP-Light reflector socket and its address's state.
    Light(std::net::UdpSocket, Arc<Mutex<LightShared>>),
    /// The worker's counters.
    Status(oneshot::Sender<WorkerStatus>),
}

/// A worker's life: run what the main thread hands it until shutdown. Its port tasks run on its
/// thread's `LocalSet`; they end with their tokens (children of the shutdown token).
async fn worker_loop(w: Rc<Worker>, mut rx: mpsc::UnboundedReceiver<Cmd>, shutdown: CancellationToken) {
    loop {
        let cmd = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            c = rx.recv() => c,
        };
        let Some(cmd) = cmd else { break };
        if let Err(e) = w.start(cmd, &shutdown) {
            tracing::warn!(worker = w.index, error = %e, "a socket could not be registered with the worker's runtime");
        }
    }
}

impl Worker {
    fn start(self: &Rc<Self>, cmd: Cmd, shutdown: &CancellationToken) -> io::Result<()> {
        match cmd {
            Cmd::Probe(key, s, token) => {
                let sock = UdpSocket::from_std(s.into())?;
                tokio::task::spawn_local(udp_port_task(self.clone(), key, sock, token));
            }
            Cmd::Stamp(s) => {
                let sock = UdpSocket::from_std(s)?;
                tokio::task::spawn_local(stamp_task(self.clone(), sock, shutdown.clone()));
            }
            Cmd::Light(s, light) => {
                let sock = UdpSocket::from_std(s)?;
                tokio::task::spawn_local(crate::twamp::server::light(light, self.t3.clone(), sock, shutdown.clone()));
            }
            Cmd::Status(reply) => {
                let _ = reply.send(self.status());
            }
        }
        Ok(())
    }
}

/// The main thread's state: worker 0, the way to the others, and what only it runs.
struct Main {
    shared: Arc<Shared>,
    workers: Vec<mpsc::UnboundedSender<Cmd>>,
    twamp: TwampServer,
    lights: Vec<Arc<Mutex<LightShared>>>,
    stamp_addrs: Vec<SocketAddr>,
    twamp_addrs: (Vec<SocketAddr>, Vec<SocketAddr>),
    started: Instant,
    control: (Vec<SocketAddr>, Vec<SocketAddr>),
    fd_limit: u64,
}

async fn run(ctx: ThreadCtx, rx0: mpsc::UnboundedReceiver<Cmd>, ready: std::sync::mpsc::Sender<io::Result<()>>) {
    let shutdown = ctx.shutdown.clone();
    let w0 = Rc::new(Worker::new(0, ctx.shared.clone(), ctx.t3_calibration));
    let twamp = TwampServer::new(ctx.twamp_server.0, ctx.kernel_ts, w0.t3.clone());
    let lights: Vec<_> = ctx.twamp_light.iter().map(|_| LightShared::new(ctx.twamp_light_stateful)).collect();
    let main = Rc::new(Main {
        shared: ctx.shared.clone(),
        workers: ctx.worker_tx,
        twamp: twamp.clone(),
        lights: lights.clone(),
        stamp_addrs: ctx.stamp_addrs,
        twamp_addrs: ctx.twamp_addrs,
        started: Instant::now(),
        control: ctx.control,
        fd_limit: ctx.fd_limit,
    });
    tokio::task::spawn_local(worker_loop(w0, rx0, shutdown.clone()));
    let timer = Rc::new(Notify::new());
    let send = |i: usize, cmd: Cmd| {
        // a worker ends only at shutdown
        let _ = main.workers[i].send(cmd);
    };
    let setup = || -> io::Result<()> {
        for s in ctx.v1.into_iter().chain(ctx.v2) {
            let sock = UdpSocket::from_std(s)?;
            tokio::task::spawn_local(control_task(main.clone(), sock, timer.clone(), shutdown.clone()));
        }
        for (kind, socks) in ctx.permanent {
            let addr = socks[0].local_addr()?.as_socket().ok_or_else(|| io::Error::other("bad local address"))?;
            let proto = if kind == PermanentKind::TcpConnect { Proto::Tcp } else { Proto::Udp };
            let key = PortKey { proto, addr: addr.ip(), port: addr.port() };
            let token = shutdown.child_token();
            let mut core = lock(&main.shared.core);
            core.responder.add_permanent(key, kind);
            let opened = match proto {
                Proto::Udp => {
                    if ctx.kernel_ts {
                        for s in &socks {
                            core.binder.rx_mode = socket::enable_timestamps(s, true);
                        }
                    }
                    Opened::Udp(key, socks, token)
                }
                Proto::Tcp => Opened::Tcp(key, socks.into_iter().next().expect("one listener"), token),
            };
            core.binder.opened.push(opened);
        }
        for group in ctx.stamp {
            for (i, s) in group.into_iter().enumerate() {
                send(i, Cmd::Stamp(s));
            }
        }
        for l in ctx.twamp {
            let l = TcpListener::from_std(l)?;
            tokio::task::spawn_local(twamp.clone().listen(l, shutdown.clone()));
        }
        for (group, light) in ctx.twamp_light.into_iter().zip(&lights) {
            for (i, s) in group.into_iter().enumerate() {
                send(i, Cmd::Light(s, light.clone()));
            }
        }
        spawn_opened(&main);
        if let Some(l) = ctx.status_listener {
            let l = tokio::net::UnixListener::from_std(l)?;
            tokio::task::spawn_local(status_socket_task(l, main.clone(), shutdown.clone()));
        }
        Ok(())
    };
    if let Err(e) = setup() {
        let _ = ready.send(Err(e));
        return;
    }
    let _ = ready.send(Ok(()));
    tokio::task::spawn_local(status_task(ctx.status_rx, main.clone()));
    timer_task(main, timer, shutdown).await;
}

/// Asks every worker for its counters (each answers between two batches).
async fn worker_statuses(main: &Main) -> Vec<WorkerStatus> {
    let mut all = Vec::with_capacity(main.workers.len());
    for w in &main.workers {
        let (tx, rx) = oneshot::channel();
        if w.send(Cmd::Status(tx)).is_ok()
            && let Ok(s) = rx.await
        {
            all.push(s);
        }
    }
    all
}

fn merge(a: &mut DeltaStats, b: &DeltaStats) {
    if b.count == 0 {
        return;
    }
    a.max_ns = if a.count == 0 { b.max_ns } else { a.max_ns.max(b.max_ns) };
    a.count += b.count;
    a.sum_ns += b.sum_ns;
}

async fn report(main: &Main) -> StatusReport {
    let workers = worker_statuses(main).await;
    let mut rx = DeltaStats::default();
    let mut tx = DeltaStats::default();
    for w in &workers {
        merge(&mut rx, &w.rx_user_minus_kernel);
        merge(&mut tx, &w.tx_kernel_minus_user);
    }
    // the smallest lead a warm worker applies (a worker that has not learnt its own adds 0 and
    // says nothing about the send delay): the conservative one of the figures in worker_stats
    let warm = |w: &&WorkerStatus| w.tx_kernel_minus_user.count >= crate::reflect::T3_MIN_SAMPLES as u64;
    let lead = workers.iter().filter(warm).map(|w| w.t3_lead_ns).min().unwrap_or(0);
    let mut twamp_stats = main.twamp.status();
    twamp_stats.light = Default::default();
    for l in &main.lights {
        twamp_stats.light.merge(&lock(l).stats());
    }
    let now = Instant::now();
    let core = lock(&main.shared.core);
    StatusReport {
        control_v1: main.control.0.clone(),
        control_v2: main.control.1.clone(),
        permanent: core.responder.permanent_ports(),
        rx_timestamps: core.binder.rx_mode,
        uptime_s: now.duration_since(main.started).as_secs(),
        pid: std::process::id(),
        stats: core.responder.stats().clone(),
        sessions: core.responder.sessions(now),
        fd_limit: main.fd_limit,
        rx_user_minus_kernel: rx,
        tx_kernel_minus_user: tx,
        t3_lead_ns: lead,
        stamp: main.stamp_addrs.clone(),
        stamp_stats: lock(&main.shared.stamp).reflector.stats().clone(),
        twamp: main.twamp_addrs.0.clone(),
        twamp_light: main.twamp_addrs.1.clone(),
        twamp_stats,
        workers: main.workers.len(),
        steering: core.binder.steering,
        worker_stats: workers,
    }
}

async fn status_task(mut rx: mpsc::UnboundedReceiver<oneshot::Sender<StatusReport>>, main: Rc<Main>) {
    while let Some(reply) = rx.recv().await {
        let _ = reply.send(report(&main).await);
    }
}

async fn status_socket_task(l: tokio::net::UnixListener, main: Rc<Main>, shutdown: CancellationToken) {
    use tokio::io::AsyncWriteExt;
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = l.accept() => c,
        };
        let Ok((mut stream, _)) = conn else { continue };
        let main = main.clone();
        tokio::task::spawn_local(async move {
            let body = serde_json::to_vec(&report(&main).await).unwrap_or_default();
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&body)).await;
        });
    }
}

/// Hands the sockets the core opened to their workers (UDP: the i-th to worker i) or, for TCP,
/// starts their task on this thread.
fn spawn_opened(main: &Rc<Main>) {
    let opened: Vec<Opened> = std::mem::take(&mut lock(&main.shared.core).binder.opened);
    for o in opened {
        match o {
            Opened::Udp(key, socks, token) => {
                let first = if socks.len() == 1 { session_worker(&key, main.workers.len()) } else { 0 };
                for (i, s) in socks.into_iter().enumerate() {
                    let _ = main.workers[first + i].send(Cmd::Probe(key, s, token.clone()));
                }
            }
            Opened::Tcp(key, l, token) => match TcpListener::from_std(l.into()) {
                Ok(l) => {
                    tokio::task::spawn_local(tcp_port_task(main.clone(), key, l, token));
                }
                Err(e) => tracing::warn!(?key, error = %e, "a TCP port could not be registered with the runtime"),
            },
        }
    }
}

async fn control_task(main: Rc<Main>, sock: UdpSocket, timer: Rc<Notify>, shutdown: CancellationToken) {
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
            let c = &mut *lock(&main.shared.core);
            c.responder.handle_control(Instant::now(), wall_now(), src, &buf[..len], &mut out, &mut c.binder)
        };
        spawn_opened(&main);
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
    worker: &'a Worker,
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
        if r.rx.kernel {
            let mut d = self.worker.rx_delta.get();
            d.add(r.user.as_nanos() as i64 - r.rx.wall.as_nanos() as i64);
            self.worker.rx_delta.set(d);
        }
        let c = &mut *lock(&self.worker.shared.core);
        match c.responder.handle_probe(now, &self.key, r.src, r.rx, &mut pkt[..r.len], &mut c.binder) {
            ProbeResult::Reply { len, stamp } => Some((len, true, stamp)),
            ProbeResult::Dropped(_) => None,
        }
    }

    fn transmit(&mut self, stamp: &TxStamp, buf: &mut [u8], t3: Duration) {
        stamp_transmit(buf, *stamp, t3);
    }
}

async fn udp_port_task(worker: Rc<Worker>, key: PortKey, sock: UdpSocket, token: CancellationToken) {
    // the thread's batch buffers receive and build (crate::batch): a session holds only its socket
    let mut sender = ReplySender::new(worker.t3.clone());
    let mut port = ProbePort { worker: &worker, key };
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

async fn tcp_port_task(main: Rc<Main>, key: PortKey, l: TcpListener, token: CancellationToken) {
    loop {
        let r = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            r = l.accept() => r,
        };
        if let Ok((stream, peer)) = r {
            lock(&main.shared.core).responder.handle_tcp_accept(Instant::now(), &key, peer);
            // Closing at once sends FIN first, as the IOS responder does (tcp_connect capture).
            drop(stream);
        }
    }
}

async fn timer_task(main: Rc<Main>, timer: Rc<Notify>, shutdown: CancellationToken) {
    // Housekeeping runs at least this often even without session timers (permanent-port peers).
    const IDLE: Duration = Duration::from_secs(30);
    loop {
        let next = lock(&main.shared.core).responder.poll_timeout();
        let deadline = next.unwrap_or_else(|| Instant::now() + IDLE).min(Instant::now() + IDLE);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = timer.notified() => continue,
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        {
            let c = &mut *lock(&main.shared.core);
            c.responder.handle_timeout(Instant::now(), &mut c.binder);
        }
        lock(&main.shared.stamp).reflector.expire(Instant::now());
    }
}

/// A STAMP reflector socket as [`ReplySender::reflect`] sees it: T2, TTL and ToS from each
/// datagram, the reply built beside it, T3 written right before the send call (calibrated like
/// the IP SLA ports').
struct StampPort<'a> {
    shared: &'a Shared,
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
        let s = &mut *lock(&self.shared.stamp);
        match s.reflector.handle(now, &info, &pkt[..r.len], out) {
            Ok(reply) => Some((reply.len, false, reply)),
            Err(StampDrop::BadHmac) => {
                s.log.warn(now, "stamp_bad_hmac", r.src, "STAMP packet HMAC failed (dropped)");
                None
            }
            Err(_) => None,
        }
    }

    fn transmit(&mut self, reply: &Self::Reply, buf: &mut [u8], t3: Duration) {
        lock(&self.shared.stamp).reflector.transmit(reply, buf, t3);
    }
}

/// One STAMP reflector socket of a worker.
async fn stamp_task(worker: Rc<Worker>, sock: UdpSocket, shutdown: CancellationToken) {
    let Ok(local) = sock.local_addr() else { return };
    let mut sender = ReplySender::new(worker.t3.clone());
    let mut port = StampPort { shared: &worker.shared, local, clock: HostClock::new() };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = sender.reflect(&sock, &mut port) => {}
        }
    }
}
