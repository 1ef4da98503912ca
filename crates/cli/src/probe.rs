//! `ipsla probe OPERATION TARGET`: runs one operation (or `--count` of them, `--frequency` apart)
//! against a Cisco or ipsla responder (or, for ICMP, any host) and prints IOS-style statistics or
//! JSON. Exit status 0 when every run returned OK, 1 otherwise, 2 on a usage or set-up error.

use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use ipsla_agent::config::parse_duration;
use ipsla_agent::opconfig::OperationFile;
use ipsla_agent::report::{self, Context, Report};
use ipsla_agent::runner::{self, OpKind, OperationSpec, RunOutcome};
use ipsla_core::ops::ReturnCode;
use ipsla_core::stats::Acc;
use ipsla_net::clock::wall_now;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(subcommand)]
    op: OpCommand,
}

#[derive(Debug, Subcommand)]
enum OpCommand {
    /// UDP jitter (IP SLA probe type 2, or 3 with --precision us), optionally emulating a codec.
    UdpJitter(JitterArgs),
    /// One UDP echo (IP SLA probe type 1).
    UdpEcho(EchoArgs),
    /// TCP handshake time.
    TcpConnect(TcpArgs),
    /// One ICMP echo (datagram ICMP socket, raw socket fallback).
    IcmpEcho(IcmpEchoArgs),
    /// ICMP Timestamp stream: RTT, one-way and jitter without a responder (raw socket).
    IcmpJitter(IcmpJitterArgs),
    /// STAMP Session-Sender (RFC 8762, RFC 8972 TLVs) to a STAMP reflector (default port 862).
    Stamp(StampArgs),
    /// TWAMP (RFC 5357): TWAMP-Control to the server (TCP, --port, default 862), then one
    /// TWAMP-Test session (open, authenticated, encrypted or mixed mode).
    Twamp(TwampArgs),
    /// TWAMP-Light Session-Sender (RFC 5357 Appendix I): TWAMP-Test packets to a reflector
    /// (UDP, default port 862), no control; STAMP reflectors answer it too.
    TwampLight(TwampLightArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TwampModeArg {
    /// Unauthenticated (mode 1).
    Open,
    /// Authenticated (mode 2): encrypted control, test packets with an HMAC.
    Auth,
    /// Encrypted (mode 4): encrypted control and test packets.
    Encrypted,
    /// Mixed (mode 8, RFC 5618): encrypted control, unauthenticated test packets.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ControlArg {
    /// Legacy v1 on UDP 1967: what IOS sends.
    V1,
    /// RFC 6812 v2 on UDP 1167.
    V2,
    /// No control (the target has a permanent port, IOS `control disable`).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthArg {
    Sha256,
    HmacSha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PrecisionArg {
    Ms,
    Us,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CodecArg {
    G711alaw,
    G711ulaw,
    G729a,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MosModelArg {
    EModel,
    CiscoCompat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClockSyncArg {
    /// Clocks not synchronised: one-way delay is reported as unavailable.
    None,
    /// Trust the kernel's NTP discipline state (adjtimex) within the tolerance.
    Ntp,
    /// Same check, for a clock disciplined by PTP (phc2sys sets the same kernel state).
    Ptp,
    /// Declare the clocks synchronised without checking.
    Assume,
}

/// Options every operation takes.
#[derive(Debug, Args)]
struct Common {
    /// Target host (name or address).
    target: String,
    /// Destination port of the measurement (default 16384; stamp and twamp-light 862; twamp: the TWAMP-Control TCP port, 862; udp-echo to a standard echo service: 7 with --control none).
    #[arg(long)]
    port: Option<u16>,
    /// Source address.
    #[arg(long, value_name = "ADDR")]
    source_ip: Option<IpAddr>,
    /// Source port (0 = any).
    #[arg(long, default_value_t = 0)]
    source_port: u16,
    /// IPv4 ToS / IPv6 traffic class byte, 0-255.
    #[arg(long, conflicts_with = "dscp")]
    tos: Option<u8>,
    /// DSCP, 0-63 (sets ToS = DSCP << 2).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=63))]
    dscp: Option<u8>,
    /// VRF (or any device) to send through: SO_BINDTODEVICE.
    #[arg(long, value_name = "DEVICE")]
    vrf: Option<String>,
    /// Operation timeout (IOS default 5000 ms).
    #[arg(long, default_value = "5000ms")]
    timeout: String,
    /// RTT threshold for the over-threshold count and return code (IOS default 5000 ms).
    #[arg(long, default_value = "5000ms")]
    threshold: String,
    /// Run the operation this many times.
    #[arg(short = 'c', long, default_value_t = 1)]
    count: u32,
    /// Time between the starts of two runs (a run that takes longer delays the next one).
    #[arg(long, default_value = "1s")]
    frequency: String,
    /// Print JSON (one document per run, one per line; schema in docs/json-schema.md).
    #[arg(long)]
    json: bool,
    /// Use the userspace clock for receive timestamps.
    #[arg(long)]
    no_kernel_timestamps: bool,
    /// With --json: add every reply (sequence, responder counter, RTT, SD, DS, late, duplicate).
    #[arg(long)]
    samples: bool,
}

/// Control-phase options (udp-jitter, udp-echo, tcp-connect).
#[derive(Debug, Args)]
struct ControlArgs {
    /// Control protocol.
    #[arg(long, value_enum, default_value = "v1")]
    control: ControlArg,
    /// Same as --control none.
    #[arg(long, conflicts_with = "control")]
    no_control: bool,
    /// Responder control port (default 1967 for v1, 1167 for v2).
    #[arg(long)]
    control_port: Option<u16>,
    /// v2 authentication mode (needs --key-id and --secret-file).
    #[arg(long, value_enum, requires_all = ["key_id", "secret_file"])]
    auth: Option<AuthArg>,
    /// v2 key id.
    #[arg(long)]
    key_id: Option<u16>,
    /// File holding the v2 shared secret (its bytes, trailing newline removed).
    #[arg(long)]
    secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct JitterArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    control: ControlArgs,
    /// Probes per operation (IOS num-packets, default 10; max 60000).
    #[arg(long, alias = "num-packets")]
    packets: Option<u32>,
    /// Interval between probes (IOS default 20 ms).
    #[arg(long)]
    interval: Option<String>,
    /// Probe size in bytes (IOS request-data-size, default 32).
    #[arg(long)]
    request_data_size: Option<usize>,
    /// Timestamp precision: ms (probe type 2) or us (type 3).
    #[arg(long, value_enum, default_value = "ms")]
    precision: PrecisionArg,
    /// Emulate a codec: sets size, interval and packet count to the codec's (172/20 ms/1000 for
    /// G.711, 32/20 ms/1000 for G.729A) and computes ICPIF and MOS.
    #[arg(long, value_enum)]
    codec: Option<CodecArg>,
    /// ICPIF advantage factor, 0-20 (IOS advantage-factor).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=20))]
    advantage_factor: u8,
    /// How MOS and ICPIF are computed.
    #[arg(long, value_enum, default_value = "e-model")]
    mos_model: MosModelArg,
    /// Whether the two clocks are synchronised (one-way delay is reported only then).
    #[arg(long, value_enum, default_value = "none")]
    clock_sync: ClockSyncArg,
    /// Clock tolerance for --clock-sync ntp|ptp: an absolute error ("500us", "1ms") or a percentage
    /// of the measured one-way delay ("10%"), as IOS clock-tolerance ntp oneway.
    #[arg(long, default_value = "1ms")]
    clock_tolerance: String,
    /// Data pattern after the header, hex (IOS default abcd).
    #[arg(long, default_value = "abcd")]
    data_pattern: String,
}

#[derive(Debug, Args)]
struct EchoArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    control: ControlArgs,
    /// Probe size in bytes (IOS default 16).
    #[arg(long, default_value_t = 16)]
    request_data_size: usize,
    /// Data pattern, hex (IOS default abcd).
    #[arg(long, default_value = "abcd")]
    data_pattern: String,
}

#[derive(Debug, Args)]
struct TcpArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    control: ControlArgs,
}

#[derive(Debug, Args)]
struct IcmpEchoArgs {
    #[command(flatten)]
    common: Common,
    /// Data bytes after the 8-byte timestamp (IOS request-data-size, default 28).
    #[arg(long, default_value_t = 28)]
    request_data_size: usize,
    /// Data pattern, hex (IOS default abcd).
    #[arg(long, default_value = "abcd")]
    data_pattern: String,
}

#[derive(Debug, Args)]
struct IcmpJitterArgs {
    #[command(flatten)]
    common: Common,
    /// Timestamp requests per operation (IOS default 10).
    #[arg(long, default_value_t = 10)]
    packets: u32,
    /// Interval (IOS default 20 ms).
    #[arg(long, default_value = "20ms")]
    interval: String,
    /// Whether the two clocks are synchronised (one-way delay is reported only then).
    #[arg(long, value_enum, default_value = "none")]
    clock_sync: ClockSyncArg,
    /// Clock tolerance, as for udp-jitter.
    #[arg(long, default_value = "1ms")]
    clock_tolerance: String,
}

#[derive(Debug, Args)]
struct StampArgs {
    #[command(flatten)]
    common: Common,
    /// Test packets per operation.
    #[arg(long, default_value_t = 10)]
    packets: u32,
    /// Interval between packets.
    #[arg(long, default_value = "20ms")]
    interval: String,
    /// Session identifier (RFC 8972), 1-65535.
    #[arg(long, default_value_t = 1)]
    ssid: u16,
    /// Authenticated mode (HMAC-SHA-256) with the key in this file (hex digits, as stamp-suite's
    /// --hmac-key-file, or text).
    #[arg(long, value_name = "FILE")]
    auth_key_file: Option<PathBuf>,
    /// TLVs to add (comma-separated or repeated): extra-padding=N, timestamp-info, cos (asks for
    /// --dscp back), location, direct-measurement.
    #[arg(long, value_name = "TLV")]
    tlv: Vec<String>,
    /// Whether the two clocks are synchronised (one-way delay is reported only then).
    #[arg(long, value_enum, default_value = "none")]
    clock_sync: ClockSyncArg,
    /// Clock tolerance, as for udp-jitter.
    #[arg(long, default_value = "1ms")]
    clock_tolerance: String,
}

#[derive(Debug, Args)]
struct TwampArgs {
    #[command(flatten)]
    common: Common,
    /// Test packets per operation.
    #[arg(long, default_value_t = 10)]
    packets: u32,
    /// Interval between packets.
    #[arg(long, default_value = "20ms")]
    interval: String,
    /// Security mode (the server must offer it).
    #[arg(long, value_enum, default_value = "open")]
    mode: TwampModeArg,
    /// Identity in --secret-file (twping -u).
    #[arg(long, value_name = "ID", requires = "secret_file")]
    key_id: Option<String>,
    /// twampd pass-phrase file: `identity hex(passphrase)` per line (twping -k).
    #[arg(long, value_name = "FILE", requires = "key_id")]
    secret_file: Option<PathBuf>,
    /// Padding octets per test packet (default 27 in open/mixed mode, 64 in auth/encrypted: the
    /// same size both ways).
    #[arg(long)]
    padding: Option<u32>,
    /// Whether the two clocks are synchronised (one-way delay is reported only then).
    #[arg(long, value_enum, default_value = "none")]
    clock_sync: ClockSyncArg,
    /// Clock tolerance, as for udp-jitter.
    #[arg(long, default_value = "1ms")]
    clock_tolerance: String,
}

#[derive(Debug, Args)]
struct TwampLightArgs {
    #[command(flatten)]
    common: Common,
    /// Test packets per operation.
    #[arg(long, default_value_t = 10)]
    packets: u32,
    /// Interval between packets.
    #[arg(long, default_value = "20ms")]
    interval: String,
    /// Padding octets per test packet (27: 41-octet packets both ways).
    #[arg(long, default_value_t = 27)]
    padding: u32,
    /// The reflector numbers its replies itself: loss splits into SD and DS from the start.
    #[arg(long)]
    stateful: bool,
    /// Whether the two clocks are synchronised (one-way delay is reported only then).
    #[arg(long, value_enum, default_value = "none")]
    clock_sync: ClockSyncArg,
    /// Clock tolerance, as for udp-jitter.
    #[arg(long, default_value = "1ms")]
    clock_tolerance: String,
}

/// A validated operation plus how often to run it and how to print it.
struct Plan {
    spec: OperationSpec,
    count: u32,
    frequency: Duration,
    json: bool,
    samples: bool,
}

/// The command-line name of a value (`v1`, `g711alaw`, `e-model`, ...).
fn name<T: ValueEnum>(v: T) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

/// The flags every operation shares, as the fields of an `[[operation]]` table.
fn common_file(kind: &str, c: &Common, ctl: Option<&ControlArgs>) -> OperationFile {
    OperationFile {
        id: Some(1),
        kind: kind.into(),
        target: c.target.clone(),
        port: c.port,
        timeout: Some(c.timeout.clone()),
        threshold: Some(c.threshold.clone()),
        source_ip: c.source_ip,
        source_port: Some(c.source_port),
        tos: c.tos,
        dscp: c.dscp,
        vrf: c.vrf.clone(),
        kernel_timestamps: Some(!c.no_kernel_timestamps),
        control: ctl.map(|a| if a.no_control { "none".to_string() } else { name(a.control) }),
        control_port: ctl.and_then(|a| a.control_port),
        auth: ctl.and_then(|a| a.auth).map(name),
        key_id: ctl.and_then(|a| a.key_id),
        secret_file: ctl.and_then(|a| a.secret_file.clone()),
        ..OperationFile::default()
    }
}

/// Validates the flags the same way the agent validates its configuration file.
fn plan(args: ProbeArgs) -> Result<Plan> {
    let (file, c) = match &args.op {
        OpCommand::UdpJitter(a) => (
            OperationFile {
                packets: a.packets,
                interval: a.interval.clone(),
                request_data_size: a.request_data_size,
                precision: Some(name(a.precision)),
                codec: a.codec.map(name),
                advantage_factor: Some(a.advantage_factor),
                mos_model: Some(name(a.mos_model)),
                clock_sync: Some(name(a.clock_sync)),
                clock_tolerance: Some(a.clock_tolerance.clone()),
                data_pattern: Some(a.data_pattern.clone()),
                ..common_file("udp-jitter", &a.common, Some(&a.control))
            },
            &a.common,
        ),
        OpCommand::UdpEcho(a) => (
            OperationFile {
                request_data_size: Some(a.request_data_size),
                data_pattern: Some(a.data_pattern.clone()),
                ..common_file("udp-echo", &a.common, Some(&a.control))
            },
            &a.common,
        ),
        OpCommand::TcpConnect(a) => (common_file("tcp-connect", &a.common, Some(&a.control)), &a.common),
        OpCommand::IcmpEcho(a) => (
            OperationFile {
                request_data_size: Some(a.request_data_size),
                data_pattern: Some(a.data_pattern.clone()),
                ..common_file("icmp-echo", &a.common, None)
            },
            &a.common,
        ),
        OpCommand::IcmpJitter(a) => (
            OperationFile {
                packets: Some(a.packets),
                interval: Some(a.interval.clone()),
                clock_sync: Some(name(a.clock_sync)),
                clock_tolerance: Some(a.clock_tolerance.clone()),
                ..common_file("icmp-jitter", &a.common, None)
            },
            &a.common,
        ),
        OpCommand::Stamp(a) => (
            OperationFile {
                packets: Some(a.packets),
                interval: Some(a.interval.clone()),
                clock_sync: Some(name(a.clock_sync)),
                clock_tolerance: Some(a.clock_tolerance.clone()),
                ssid: Some(a.ssid),
                stamp_key_file: a.auth_key_file.clone(),
                tlvs: (!a.tlv.is_empty()).then(|| a.tlv.clone()),
                ..common_file("stamp", &a.common, None)
            },
            &a.common,
        ),
        OpCommand::Twamp(a) => (
            OperationFile {
                packets: Some(a.packets),
                interval: Some(a.interval.clone()),
                clock_sync: Some(name(a.clock_sync)),
                clock_tolerance: Some(a.clock_tolerance.clone()),
                mode: Some(name(a.mode)),
                twamp_key_id: a.key_id.clone(),
                secret_file: a.secret_file.clone(),
                padding: a.padding,
                ..common_file("twamp", &a.common, None)
            },
            &a.common,
        ),
        OpCommand::TwampLight(a) => (
            OperationFile {
                packets: Some(a.packets),
                interval: Some(a.interval.clone()),
                clock_sync: Some(name(a.clock_sync)),
                clock_tolerance: Some(a.clock_tolerance.clone()),
                padding: Some(a.padding),
                stateful: Some(a.stateful),
                ..common_file("twamp-light", &a.common, None)
            },
            &a.common,
        ),
    };
    let def = file.validate("probe", 1)?;
    if c.count == 0 {
        bail!("--count: 0 is out of range; allowed 1 or more");
    }
    let frequency = parse_duration("--frequency", &c.frequency, Duration::ZERO, Duration::from_secs(604_800))?;
    Ok(Plan { spec: def.spec, count: c.count, frequency, json: c.json, samples: c.samples })
}

pub fn main(args: ProbeArgs) -> Result<std::process::ExitCode> {
    let p = plan(args)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut successes = 0u32;
    let mut failures = 0u32;
    let mut all_rtt = Acc::default();
    let (mut sent, mut received) = (0u64, 0u64);
    // IOS: one control sequence per control message, rising over the operation's life.
    let first_seq = (wall_now().as_millis() as u32) & 0xff;
    let progress_plan = p.spec.kind.schedule();
    let show_progress =
        !p.json && std::io::stderr().is_terminal() && progress_plan.is_some_and(|(_, d)| d > Duration::from_secs(2));
    for run in 1..=p.count {
        let started = Instant::now();
        let start_wall = wall_now();
        let progress = show_progress.then(|| spawn_progress(progress_plan.unwrap_or_default()));
        let outcome = runner::run(&p.spec, first_seq.wrapping_add(run - 1), &rt);
        if let Some(stop) = progress {
            let _ = stop.send(());
            eprint!("\r\x1b[K");
        }
        let RunOutcome { result: r, clock: cs, failure } = outcome?;
        if let Some(why) = failure {
            eprintln!("ipsla probe {}: {why}", p.spec.kind.name());
        }
        if matches!(r.return_code, ReturnCode::Ok) {
            successes += 1;
        } else {
            failures += 1;
        }
        all_rtt.merge(&r.stats.rtt);
        sent += u64::from(r.stats.sent);
        received += u64::from(r.stats.received);
        let voice = match &p.spec.kind {
            OpKind::UdpJitter { voice: Some(v), .. } => Some((v.codec, v.model, v.advantage)),
            _ => None,
        };
        let ctx = Context {
            operation: p.spec.kind.name(),
            target: p.spec.target_label(),
            run,
            start: start_wall,
            control: p.spec.control_label(),
            clock_sync: cs,
            voice,
            samples: p.samples,
        };
        let report = Report::new(ctx, &r);
        if p.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report::text(&report, successes, failures));
            println!();
        }
        if run < p.count {
            let next = started + p.frequency;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
    if !p.json {
        print!("{}", report::ping_summary(&p.spec.target.to_string(), sent, received, &all_rtt));
    }
    Ok(if failures == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}

fn spawn_progress((packets, expected): (u32, Duration)) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let start = Instant::now();
        while rx.recv_timeout(Duration::from_millis(250)).is_err() {
            let frac = (start.elapsed().as_secs_f64() / expected.as_secs_f64().max(1e-9)).min(1.0);
            eprint!(
                "\r{:>6}/{packets} probes sent ({:.0} s)",
                (frac * f64::from(packets)) as u32,
                start.elapsed().as_secs_f64()
            );
        }
    });
    tx
}
