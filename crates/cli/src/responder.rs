//! `ipsla responder`: flags + config file → one validated set of options → `ipsla-net`.

use anyhow::{Context, Result};
use clap::Args;
use ipnet::IpNet;
use ipsla_agent::config::{self, ResponderFile};
use ipsla_core::responder::{PermanentKind, Reject};
use ipsla_net::privilege::{self, Plan};
use ipsla_net::responder::{ResponderOptions, StatusReport, bind_responder};
use ipsla_net::socket::Steering;
use ipsla_net::{Listener, NetError};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

/// The status socket of the systemd unit (dist/ipsla-responder.service), which `--status` also
/// looks at by default.
pub const UNIT_STATUS_SOCKET: &str = "/run/ipsla-responder/status.sock";

/// Where a responder puts its status socket by default: the user's runtime directory
/// (`$XDG_RUNTIME_DIR`), `/run/ipsla` for root, else the temporary directory.
fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None if nix::unistd::geteuid().is_root() => PathBuf::from("/run/ipsla"),
        None => std::env::temp_dir(),
    }
}

/// The default status socket of this instance: one per process, so that two responders on a
/// host never share one (`--status` finds them by their names).
fn default_status_socket() -> PathBuf {
    runtime_dir().join(format!("ipsla-responder.{}.sock", std::process::id()))
}

/// The status sockets `--status` tries without `--status-socket`: this user's per-instance
/// sockets in the runtime directory, then the systemd unit's.
fn default_status_sockets() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(runtime_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ipsla-responder.") && n.ends_with(".sock"))
        })
        .collect();
    found.sort();
    found.push(PathBuf::from(UNIT_STATUS_SOCKET));
    found
}

#[derive(Debug, Args)]
pub struct ResponderArgs {
    /// Configuration file (TOML, `[responder]` table); flags override it.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on for control messages (repeatable). Default: 0.0.0.0 and ::.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<IpAddr>,
    /// UDP port for v1 control messages (what IOS sends).
    #[arg(long, value_name = "PORT")]
    v1_port: Option<u16>,
    /// UDP port for RFC 6812 v2 control messages.
    #[arg(long, value_name = "PORT")]
    v2_port: Option<u16>,
    /// Do not listen for v1 control messages.
    #[arg(long)]
    no_v1: bool,
    /// Do not listen for v2 control messages.
    #[arg(long)]
    no_v2: bool,
    /// Accept control messages only from this prefix (repeatable). Default: from anyone.
    #[arg(long, value_name = "CIDR")]
    allow: Vec<IpNet>,
    /// Ports a control message may open, FIRST-LAST. Default 1024-65535.
    #[arg(long, value_name = "FIRST-LAST")]
    port_range: Option<String>,
    /// Most sessions at once (default 10000).
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,
    /// Most sessions at once from one source address (default 2000).
    #[arg(long, value_name = "N")]
    max_sessions_per_source: Option<usize>,
    /// Longest duration a control message may ask for (default 600s).
    #[arg(long, value_name = "DURATION")]
    max_duration: Option<String>,
    /// Control messages per second per source, 0 = unlimited (default 200).
    #[arg(long, value_name = "RATE")]
    control_rate: Option<f64>,
    /// Burst of control messages per source (default 400).
    #[arg(long, value_name = "N")]
    control_burst: Option<u32>,
    /// Keys for RFC 6812 authentication: TOML with [[key]] id = N, secret = "..." (or secret_hex).
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// Refuse v2 requests without authentication.
    #[arg(long)]
    require_auth: bool,
    /// Permanent udp-echo port, answered without control (repeatable), like IOS
    /// `ip sla responder udp-echo ipaddress A port P`.
    #[arg(long, value_name = "ADDR:PORT")]
    udp_echo: Vec<SocketAddr>,
    /// Permanent tcp-connect port (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    tcp_connect: Vec<SocketAddr>,
    /// Permanent udp-jitter port (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    udp_jitter: Vec<SocketAddr>,
    /// STAMP Session-Reflector (RFC 8762) on this address (repeatable; the standard port is 862).
    #[arg(long, value_name = "ADDR:PORT")]
    stamp: Vec<SocketAddr>,
    /// STAMP reflector in stateful mode: its own sequence numbers per session, so that senders
    /// can tell forward from backward loss.
    #[arg(long)]
    stamp_stateful: bool,
    /// STAMP authenticated mode (HMAC-SHA-256) with the key in this file (hex digits or text).
    #[arg(long, value_name = "FILE")]
    stamp_key_file: Option<PathBuf>,
    /// TWAMP-Control server (RFC 5357) on this TCP address (repeatable). The standard is port 862
    /// on all addresses: --twamp 0.0.0.0:862 --twamp [::]:862.
    #[arg(long, value_name = "ADDR:PORT")]
    twamp: Vec<SocketAddr>,
    /// TWAMP security modes offered, comma-separated: open, auth, encrypted, mixed (default open).
    #[arg(long, value_name = "MODES")]
    twamp_modes: Option<String>,
    /// TWAMP shared secrets, twampd's pass-phrase file format: `identity hex(passphrase)` lines.
    #[arg(long, value_name = "FILE")]
    twamp_keys: Option<PathBuf>,
    /// UDP ports of TWAMP test sessions, FIRST-LAST (default 18760-19960).
    #[arg(long, value_name = "FIRST-LAST")]
    twamp_test_ports: Option<String>,
    /// TWAMP-Light reflector (RFC 5357 Appendix I) on this UDP address (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    twamp_light: Vec<SocketAddr>,
    /// TWAMP-Light reflector in stateful mode: its own sequence numbers per sender.
    #[arg(long)]
    twamp_light_stateful: bool,
    /// Worker threads answering the measurement and reflector ports, each with its own
    /// SO_REUSEPORT socket per UDP port (default: one per CPU; 1 = one thread, no SO_REUSEPORT).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// With several workers, send each datagram to the worker of the CPU that received it
    /// instead of the one its flow hashes to (on loopback, TUN and veth one sender's replies
    /// may then come back out of order).
    #[arg(long)]
    steer_by_cpu: bool,
    /// Use the userspace clock for receive timestamps instead of the kernel's.
    #[arg(long)]
    no_kernel_timestamps: bool,
    /// Write T3 as read in userspace, without adding the learned delay until the kernel stamps
    /// the reply leaving.
    #[arg(long)]
    no_t3_calibration: bool,
    /// Run as this user (name or id) once started: the listeners are bound first, then only the
    /// capabilities still needed are kept (none unless test ports below 1024 are allowed).
    /// Needs root. Without it, a root responder still drops every capability it does not need.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Unix socket serving the status, one per responder, removed at exit (default:
    /// ipsla-responder.PID.sock in $XDG_RUNTIME_DIR, /run/ipsla for root, else /tmp; --status
    /// finds it there).
    #[arg(long, value_name = "PATH")]
    status_socket: Option<PathBuf>,
    /// Print the status of the running responder (via its status socket) and exit.
    #[arg(long)]
    status: bool,
    /// With --status: print JSON instead of text.
    #[arg(long, requires = "status")]
    json: bool,
}

/// Merges the file and the flags into validated options.
pub fn options(args: &ResponderArgs) -> Result<ResponderOptions> {
    let file = match &args.config {
        Some(p) => config::load(p)?.responder,
        None => ResponderFile::default(),
    };
    let list = |v: &Vec<SocketAddr>| (!v.is_empty()).then(|| v.clone());
    let flags = ResponderFile {
        listen: (!args.listen.is_empty()).then(|| args.listen.clone()),
        v1_port: args.v1_port,
        v2_port: args.v2_port,
        v1: args.no_v1.then_some(false),
        v2: args.no_v2.then_some(false),
        allow: (!args.allow.is_empty()).then(|| args.allow.clone()),
        port_range: args.port_range.clone(),
        max_sessions: args.max_sessions,
        max_sessions_per_source: args.max_sessions_per_source,
        max_duration: args.max_duration.clone(),
        control_rate: args.control_rate,
        control_burst: args.control_burst,
        keys_file: args.keys.clone(),
        require_auth: args.require_auth.then_some(true),
        timestamp_window: None,
        kernel_timestamps: args.no_kernel_timestamps.then_some(false),
        t3_calibration: args.no_t3_calibration.then_some(false),
        status_socket: args.status_socket.clone(),
        udp_echo: list(&args.udp_echo),
        tcp_connect: list(&args.tcp_connect),
        udp_jitter: list(&args.udp_jitter),
        stamp: list(&args.stamp),
        stamp_stateful: args.stamp_stateful.then_some(true),
        stamp_key_file: args.stamp_key_file.clone(),
        twamp: list(&args.twamp),
        twamp_modes: args.twamp_modes.clone(),
        twamp_keys_file: args.twamp_keys.clone(),
        twamp_test_ports: args.twamp_test_ports.clone(),
        twamp_light: list(&args.twamp_light),
        twamp_light_stateful: args.twamp_light_stateful.then_some(true),
        workers: args.workers,
        steer_by_cpu: args.steer_by_cpu.then_some(true),
        ..ResponderFile::default()
    };
    let mut opts = file.overlay(flags).options()?;
    if opts.status_socket.is_none() {
        let path = default_status_socket();
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("creating {} for the status socket (or give --status-socket)", dir.display())
            })?;
        }
        opts.status_socket = Some(path);
    }
    Ok(opts)
}

pub fn main(args: ResponderArgs) -> Result<()> {
    if args.status {
        let report = match &args.status_socket {
            Some(path) => query_status(path)?,
            None => find_status()?,
        };
        if args.json {
            crate::out::println(serde_json::to_string_pretty(&report)?)?;
        } else {
            crate::out::print(format_status(&report))?;
        }
        return Ok(());
    }
    let opts = options(&args)?;
    ipsla_net::socket::raise_fd_limit();
    let plan = Plan { user: args.user.clone(), bind: Vec::new(), run: opts.run_privileges() };
    // bind as we are, drop to the user and the capabilities still needed while this is the only
    // thread (capabilities are per thread), then start
    // where the path came from, for the errors about it
    let flag = match (&args.status_socket, &args.config) {
        (Some(_), _) => "--status-socket".to_string(),
        (None, Some(file)) if opts.status_socket != Some(default_status_socket()) => {
            format!("status_socket in {}", file.display())
        }
        _ => "the default; choose another with --status-socket".to_string(),
    };
    let status_socket = opts.status_socket.clone().unwrap_or_default();
    let bound = bind_responder(opts)
        .map_err(|e| match e {
            NetError::StatusSocket { path, source } => anyhow::Error::new(source)
                .context(format!("cannot create the status socket {} ({flag})", path.display())),
            NetError::StatusSocketInUse { path } => {
                let who = query_status(&path).map_or_else(
                    |_| "another responder".to_string(),
                    |r| {
                        let v1: Vec<String> = r.control_v1.iter().map(|a| a.to_string()).collect();
                        format!(
                            "the responder with pid {} (v1 {})",
                            r.pid,
                            if v1.is_empty() { "-".into() } else { v1.join(", ") }
                        )
                    },
                );
                anyhow::anyhow!(
                    "the status socket {} ({flag}) belongs to {who}: stop it, or give this one another --status-socket",
                    path.display()
                )
            }
            NetError::Bind { listener, addr, source } => {
                let hint = match source.kind() {
                    std::io::ErrorKind::AddrInUse => "; another responder or the agent listens there",
                    std::io::ErrorKind::AddrNotAvailable => "; no interface of this host has that address",
                    std::io::ErrorKind::PermissionDenied => "; a port below 1024 needs CAP_NET_BIND_SERVICE",
                    _ => "",
                };
                anyhow::anyhow!("cannot bind the {listener} {addr} ({}): {source}{hint}", listener_flag(listener))
            }
            e => anyhow::Error::new(e),
        })
        .context("starting the responder")?;
    let dropped = privilege::enter(&plan).context("dropping privileges")?;
    tracing::info!(uid = dropped.uid, run = ?dropped.run, bounding_narrowed = dropped.bounding_narrowed, "privileges dropped");
    let running = bound.spawn().context("starting the responder")?;
    privilege::after_bind().context("dropping privileges after binding")?;
    // every listener in one line: what an operator checks first when a sender gets no answer
    let list = |v: &[SocketAddr]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(",")
        }
    };
    let permanent = |kind: PermanentKind| {
        list(&running.permanent_addrs().iter().filter(|(k, _)| *k == kind).map(|(_, a)| *a).collect::<Vec<_>>())
    };
    tracing::info!(
        v1 = %list(running.control_v1_addrs()),
        v2 = %list(running.control_v2_addrs()),
        udp_echo = %permanent(PermanentKind::UdpEcho),
        udp_jitter = %permanent(PermanentKind::UdpJitter),
        tcp_connect = %permanent(PermanentKind::TcpConnect),
        stamp = %list(running.stamp_addrs()),
        twamp = %list(running.twamp_addrs()),
        twamp_light = %list(running.twamp_light_addrs()),
        status_socket = %status_socket.display(),
        "responder listening"
    );
    // handlers before READY=1: a SIGTERM right after it must stop us cleanly, not by default action
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut term, mut int, mut usr1) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _rt = rt.enter();
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?, signal(SignalKind::user_defined1())?)
    };
    crate::notify::ready(&format!(
        "listening: v1 {:?}, v2 {:?}",
        running.control_v1_addrs(),
        running.control_v2_addrs()
    ));
    rt.block_on(async {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = usr1.recv() => {
                    if let Some(r) = running.status_async().await {
                        crate::out::eprint(format_status(&r));
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    crate::notify::stopping();
    tracing::info!("shutting down");
    running.stop();
    Ok(())
}

/// The flags (and `[responder]` keys, spelt the same with underscores) that set a listener.
fn listener_flag(l: Listener) -> &'static str {
    match l {
        Listener::ControlV1 => "--v1-port, --listen",
        Listener::ControlV2 => "--v2-port, --listen",
        Listener::Permanent(PermanentKind::UdpEcho) => "--udp-echo",
        Listener::Permanent(PermanentKind::UdpJitter) => "--udp-jitter",
        Listener::Permanent(PermanentKind::TcpConnect) => "--tcp-connect",
        Listener::Stamp => "--stamp",
        Listener::Twamp => "--twamp",
        Listener::TwampLight => "--twamp-light",
    }
}

/// The status of the one responder among the default sockets that answers.
fn find_status() -> Result<StatusReport> {
    let candidates = default_status_sockets();
    let mut answering: Vec<(PathBuf, StatusReport)> =
        candidates.iter().filter_map(|p| query_status(p).ok().map(|r| (p.clone(), r))).collect();
    match answering.len() {
        1 => Ok(answering.remove(0).1),
        0 => anyhow::bail!(
            "no responder answers on {} (is it running? give its --status-socket)",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
        _ => anyhow::bail!(
            "several responders run: {}; choose one with --status-socket",
            answering.iter().map(|(p, r)| format!("{} (pid {})", p.display(), r.pid)).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn query_status(path: &std::path::Path) -> Result<StatusReport> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("no responder answers on {} (is it running? see --status-socket)", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    serde_json::from_slice(&body).context("reading the status")
}

/// The serde name of a unit enum value (`udp-jitter`, `timestamping`, ...).
fn label<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

fn when(wall: Duration) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + wall).to_string()
}

/// Text laid out like IOS `show ip sla responder`, with our extra counters.
pub fn format_status(r: &StatusReport) -> String {
    let mut o = String::new();
    let ports = |v: &[SocketAddr]| {
        let mut p: Vec<u16> = v.iter().map(|a| a.port()).collect();
        p.dedup();
        p.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
    };
    let _ = writeln!(
        o,
        "General IP SLA Responder on Control port {}",
        if r.control_v1.is_empty() { "-".into() } else { ports(&r.control_v1) }
    );
    let _ = writeln!(
        o,
        "General IP SLA Responder on Control V2 port {}",
        if r.control_v2.is_empty() { "-".into() } else { ports(&r.control_v2) }
    );
    let _ = writeln!(o, "General IP SLA Responder is: Enabled");
    let s = &r.stats;
    let errors: u64 = s.rejects.values().sum();
    let _ =
        writeln!(o, "Number of control message received: {} Number of errors: {}", s.control_v1 + s.control_v2, errors);
    let _ = writeln!(o, "    v1: {}  v2: {}  accepted: {}", s.control_v1, s.control_v2, s.control_accepted);
    let _ = writeln!(o, "Recent sources:");
    for (ip, t, why) in s.recent_sources.iter().rev().filter(|x| x.2.is_none()) {
        let _ = writeln!(o, "        {ip} [{}]{}", when(*t), why.map(|w| format!(" {}", w.name())).unwrap_or_default());
    }
    let _ = writeln!(o, "Recent error sources:");
    for (ip, t, why) in s.recent_sources.iter().rev().filter(|x| x.2.is_some()) {
        let _ = writeln!(o, "        {ip} [{}] {}", when(*t), why.map(Reject::name).unwrap_or_default());
    }
    let _ = writeln!(o, "Control errors by reason:");
    for why in Reject::ALL {
        if let Some(n) = s.rejects.get(&why) {
            let _ = writeln!(o, "        {:<28} {n}", why.name());
        }
    }
    let _ = writeln!(
        o,
        "Probes answered: {}  (receive stamps: kernel {}, user {}; sockets use {})",
        s.probes_answered,
        s.rx_stamps_kernel,
        s.rx_stamps_user,
        label(&r.rx_timestamps)
    );
    let dropped: Vec<String> = s.probe_drops.iter().map(|(k, v)| format!("{} {v}", k.name())).collect();
    let _ = writeln!(o, "Probes dropped: {}", if dropped.is_empty() { "0".into() } else { dropped.join(", ") });
    let _ = writeln!(o, "TCP connections accepted: {}", s.tcp_accepts);
    let _ = writeln!(
        o,
        "Sessions opened: {}  closed: {}  active: {}",
        s.sessions_opened,
        s.sessions_closed,
        r.sessions.len()
    );
    for x in &r.sessions {
        let _ = writeln!(
            o,
            "        {} {}:{} <- {}{} {} remaining {} ms, {} probes",
            label(&x.port.proto),
            x.port.addr,
            x.port.port,
            x.peer.addr,
            if x.peer.port == 0 { String::new() } else { format!(":{}", x.peer.port) },
            label(&x.kind),
            x.remaining_ms,
            x.probes
        );
    }
    if !r.permanent.is_empty() {
        let _ = writeln!(o, "Permanent ports:");
        for (k, kind) in &r.permanent {
            let _ = writeln!(o, "        {} {}:{}", label(kind), k.addr, k.port);
        }
    }
    if !r.stamp.is_empty() {
        let st = &r.stamp_stats;
        let addrs: Vec<String> = r.stamp.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(o, "STAMP reflector: {}", addrs.join(" "));
        let _ = writeln!(
            o,
            "        received {} replied {} dropped: short {} too long {} bad HMAC {}; TLVs: integrity failed {} malformed {} unrecognized {}",
            st.received,
            st.replied,
            st.drop_short,
            st.drop_too_long,
            st.drop_bad_hmac,
            st.tlv_integrity_failed,
            st.tlv_malformed,
            st.tlv_unrecognized
        );
    }
    format_twamp(&mut o, r);
    let us = |ns: f64| ns / 1000.0;
    let _ = writeln!(
        o,
        "Userspace - kernel stamp: receive (T2) avg {:.3} max {:.3} microseconds over {}, transmit (T3) avg {:.3} max {:.3} microseconds over {}",
        us(r.rx_user_minus_kernel.avg_ns()),
        us(r.rx_user_minus_kernel.max_ns as f64),
        r.rx_user_minus_kernel.count,
        us(r.tx_kernel_minus_user.avg_ns()),
        us(r.tx_kernel_minus_user.max_ns as f64),
        r.tx_kernel_minus_user.count
    );
    let _ = writeln!(o, "T3 calibration adds: {:.3} microseconds", r.t3_lead_ns as f64 / 1000.0);
    let steering = match r.steering {
        Steering::Single => "one thread, no SO_REUSEPORT",
        Steering::Cpu => "SO_REUSEPORT, each datagram to the worker of the CPU that received it",
        Steering::Hash => "SO_REUSEPORT, by the kernel's hash of source and destination",
    };
    let _ = writeln!(o, "Workers: {} ({steering})", r.workers);
    if r.worker_stats.len() > 1 {
        for (i, w) in r.worker_stats.iter().enumerate() {
            let _ = writeln!(
                o,
                "        worker {i}: replies {}  T3 calibration adds {:.3} microseconds (transmit stamps {})",
                w.replies,
                w.t3_lead_ns as f64 / 1000.0,
                w.tx_kernel_minus_user.count
            );
        }
    }
    let _ = writeln!(o, "Uptime: {} s  open-file limit: {}", r.uptime_s, r.fd_limit);
    o
}

fn format_twamp(o: &mut String, r: &StatusReport) {
    let t = &r.twamp_stats;
    let addrs = |v: &[SocketAddr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ");
    let refl = |o: &mut String, s: &ipsla_core::twamp::reflector::ReflectorStats| {
        let _ = writeln!(
            o,
            "        received {} reflected {} dropped: short {} too long {} bad HMAC {} bad error estimate {} wrong sender {} not started {} after stop {}",
            s.received,
            s.reflected,
            s.drop_short,
            s.drop_too_long,
            s.drop_bad_hmac,
            s.drop_bad_error_estimate,
            s.drop_wrong_sender,
            s.drop_not_started,
            s.drop_after_stop
        );
    };
    if !r.twamp.is_empty() {
        let s = &t.server;
        let _ = writeln!(o, "TWAMP server: {}", addrs(&r.twamp));
        let _ = writeln!(
            o,
            "        connections: open {} total {} refused (limits) {}; established: open {} auth {} encrypted {} mixed {}",
            t.connections,
            s.connections,
            s.refused,
            s.established_open,
            s.established_authenticated,
            s.established_encrypted,
            s.established_mixed
        );
        let _ = writeln!(
            o,
            "        set-up rejected: mode {} unknown KeyID {} wrong secret {} client gave up {}; closed: bad HMAC {} setup timeout {} SERVWAIT {} unknown command {} stop mismatch {}",
            s.rejected_mode,
            s.rejected_unknown_key_id,
            s.rejected_bad_token,
            s.client_gave_up,
            s.bad_hmac,
            s.setup_timeouts,
            s.servwait_timeouts,
            s.unknown_commands,
            s.stop_mismatch
        );
        let _ = writeln!(
            o,
            "        sessions: active {} requested {} accepted {} started {} stopped {} ended {}; refused: unsupported {} padding {} limit {} no port {}",
            t.sessions,
            s.session_requests,
            s.sessions_accepted,
            s.sessions_started,
            s.sessions_stopped,
            s.sessions_ended,
            s.session_rejected_unsupported,
            s.session_rejected_padding,
            s.session_rejected_limit,
            s.session_rejected_bind
        );
        refl(o, &t.reflector);
    }
    if !r.twamp_light.is_empty() {
        let _ = writeln!(o, "TWAMP-Light reflector: {}", addrs(&r.twamp_light));
        refl(o, &t.light);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ipsla_core::responder::PermanentKind;
    use std::time::Duration;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ResponderArgs,
    }

    fn parse(args: &[&str]) -> ResponderArgs {
        T::parse_from(std::iter::once("x").chain(args.iter().copied())).a
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[responder]\nmax_sessions = 50\nport_range = \"2000-3000\"\nallow = [\"10.0.0.0/8\"]\nudp_echo = [\"127.0.0.1:7007\"]\n").unwrap();
        let o = options(&parse(&["-c", p.to_str().unwrap(), "--max-sessions", "60"])).unwrap();
        assert_eq!(o.core.max_sessions, 60);
        assert_eq!(o.core.port_range, 2000..=3000);
        assert_eq!(o.core.allow, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!(o.permanent, vec![(PermanentKind::UdpEcho, "127.0.0.1:7007".parse().unwrap())]);
        assert!(o.core.reserved_ports.contains(&7007));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = options(&parse(&["--max-sessions", "0"])).unwrap_err().to_string();
        assert!(e.contains("max_sessions") && e.contains("allowed 1 to"), "{e}");
        let e = options(&parse(&["--port-range", "9-1"])).unwrap_err().to_string();
        assert!(e.contains("port_range"), "{e}");
        let e = options(&parse(&["--require-auth"])).unwrap_err().to_string();
        assert!(e.contains("require_auth"), "{e}");
    }

    #[test]
    fn twamp_flags() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("twamp.pfs");
        std::fs::write(&keys, "alice 74657374736563726574\n").unwrap();
        let o = options(&parse(&[
            "--twamp",
            "127.0.0.1:8620",
            "--twamp-modes",
            "open,auth",
            "--twamp-keys",
            keys.to_str().unwrap(),
            "--twamp-test-ports",
            "30000-30010",
            "--twamp-light",
            "127.0.0.1:8621",
            "--twamp-light-stateful",
        ]))
        .unwrap();
        assert_eq!(o.twamp, vec!["127.0.0.1:8620".parse::<SocketAddr>().unwrap()]);
        assert_eq!(o.twamp_config.modes, ipsla_wire::twamp::Modes(3));
        assert_eq!(o.twamp_config.keys.get("alice"), Some(&b"testsecret"[..]));
        assert_eq!(o.twamp_config.test_ports, 30000..=30010);
        assert_eq!(o.twamp_light, vec!["127.0.0.1:8621".parse::<SocketAddr>().unwrap()]);
        assert!(o.twamp_light_stateful);
        // the file's table has the same keys
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[responder]\ntwamp = [\"127.0.0.1:8622\"]\ntwamp_modes = \"mixed\"\ntwamp_test_ports = \"40000-40001\"\ntwamp_light_stateful = true\n")
            .unwrap();
        let std::result::Result::Ok(o) =
            options(&parse(&["-c", p.to_str().unwrap(), "--twamp-keys", keys.to_str().unwrap()]))
        else {
            panic!("file with flags")
        };
        assert_eq!(
            (o.twamp.len(), o.twamp_config.modes, o.twamp_light_stateful),
            (1, ipsla_wire::twamp::Modes(8), true)
        );
        assert_eq!(o.twamp_config.test_ports, 40000..=40001);
    }

    #[test]
    fn twamp_limits_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let write = |extra: &str| {
            std::fs::write(&p, format!("[responder]\ntwamp = [\"127.0.0.1:8622\"]\n{extra}")).unwrap();
            options(&parse(&["-c", p.to_str().unwrap()]))
        };
        let o = write("").unwrap();
        assert_eq!(
            (o.twamp_config.max_connections, o.twamp_config.max_connections_per_source, o.twamp_config.max_sessions),
            (64, 8, 16)
        );
        assert_eq!(o.twamp_config.servwait, Duration::from_secs(900));
        let o = write(
            "twamp_max_connections = 5\ntwamp_max_connections_per_source = 2\ntwamp_max_sessions = 3\n\
             twamp_setup_timeout = \"2s\"\ntwamp_servwait = \"10s\"\ntwamp_refwait = \"20s\"\n\
             twamp_connection_rate = 0.5\n",
        )
        .unwrap();
        let c = &o.twamp_config;
        assert_eq!((c.max_connections, c.max_connections_per_source, c.max_sessions), (5, 2, 3));
        assert_eq!(c.connection_rate, 0.5);
        assert_eq!(
            (c.setup_timeout, c.servwait, c.refwait),
            (Duration::from_secs(2), Duration::from_secs(10), Duration::from_secs(20))
        );
        let e = write("twamp_max_connections = 0\n").unwrap_err().to_string();
        assert_eq!(e, "twamp_max_connections: 0 is out of range; allowed 1 to 100000");
        let e = write("twamp_servwait = \"0s\"\n").unwrap_err().to_string();
        assert!(e.starts_with("twamp_servwait:"), "{e}");
    }

    #[test]
    fn twamp_errors_name_the_flag_and_the_allowed_values() {
        let e = options(&parse(&["--twamp-modes", "open,fast"])).unwrap_err().to_string();
        assert_eq!(
            e,
            "twamp_modes (--twamp-modes): \"fast\" is not a TWAMP mode; allowed open, auth, encrypted, mixed (comma-separated)"
        );
        let e = options(&parse(&["--twamp-modes", "auth"])).unwrap_err().to_string();
        assert!(e.starts_with("twamp_keys_file (--twamp-keys): required by twamp_modes"), "{e}");
        let e = options(&parse(&["--twamp-test-ports", "9-1"])).unwrap_err().to_string();
        assert!(e.starts_with("twamp_test_ports (--twamp-test-ports):") && e.contains("FIRST-LAST"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("bad.pfs");
        std::fs::write(&keys, "alice nothex\n").unwrap();
        let e = options(&parse(&["--twamp-keys", keys.to_str().unwrap()])).unwrap_err().to_string();
        assert!(e.starts_with("twamp_keys_file (--twamp-keys):") && e.contains("line 1"), "{e}");
    }
}
