//! STAMP Session-Sender (RFC 8762 §4.2, RFC 8972 TLVs): N test packets at a fixed interval,
//! then the same statistics as udp-jitter.
//!
//! T1 is the kernel's transmit stamp when the driver has one (the wire carries the userspace
//! reading just before the send call), T2 and T3 come from the reply (Receive Timestamp and
//! Timestamp), T4 is the receive stamp: RTT = (T4 − T1) − (T3 − T2), SD = T2 − T1, DS = T4 − T3.
//!
//! Loss direction: a stateful reflector numbers its replies itself (from 0), so the reply's
//! Sequence Number + 1 is a receive counter like the Cisco responder's and losses split into SD
//! and DS. A stateless reflector copies our Sequence Number: every loss is MIA. The operation
//! treats the reflector as stateful once a reply's Sequence Number differs from ours, or when
//! configured so.

use super::{Operation, OperationResult, Peer, Precision, ReturnCode, RxTime, StampSources, Transmit};
use crate::stats::{self, Sample, StatsConfig};
use ipsla_wire::stamp::packet::{ReflectorPacket, ReflectorRepr, SenderPacket, SenderRepr, StampMode};
use ipsla_wire::stamp::tlv::{
    self, ClassOfService, DirectMeasurement, Location, TimestampInformation, TlvFlags, TlvHmacCheck, TlvRepr, TlvValue,
    TlvWriter,
};
use ipsla_wire::time::{ErrorEstimate, NtpTimestamp};
use std::time::{Duration, Instant};

/// Most packets per run (as udp-jitter).
pub const MAX_PACKETS: u32 = super::jitter::MAX_PACKETS;

/// An RFC 8972 TLV the sender adds to every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlvRequest {
    /// Extra Padding of this many octets (zeros).
    ExtraPadding(u16),
    /// Timestamp Information (the reflector fills it).
    TimestampInfo,
    /// Class of Service asking for this DSCP back.
    ClassOfService(u8),
    /// Location with destination and source IP address requests.
    Location,
    /// Direct Measurement (our transmit counter; the reflector adds its counters).
    DirectMeasurement,
}

/// A STAMP sender's parameters.
#[derive(Debug, Clone)]
pub struct StampConfig {
    /// Packets per run.
    pub packets: u32,
    /// Interval between packets.
    pub interval: Duration,
    /// How long after the last packet replies count.
    pub timeout: Duration,
    /// RTT threshold.
    pub threshold: Duration,
    /// Clocks synchronised: report one-way delays.
    pub clock_sync: bool,
    /// SSID (RFC 8972 §3), non-zero.
    pub ssid: u16,
    /// Authenticated mode with this key.
    pub key: Option<Vec<u8>>,
    /// TLVs in each packet.
    pub tlvs: Vec<TlvRequest>,
    /// Our clock's Error Estimate.
    pub error_estimate: ErrorEstimate,
    /// The reflector is known to be stateful (else detected from its sequence numbers).
    pub stateful: bool,
}

impl StampConfig {
    fn mode(&self) -> StampMode {
        if self.key.is_some() { StampMode::Authenticated } else { StampMode::Unauthenticated }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    t1_wire: NtpTimestamp,
    t1_wall: Duration,
    t1_kernel: Option<Duration>,
    answered: bool,
}

/// What replies said that the statistics do not hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StampReplyInfo {
    /// Replies whose HMAC (base or TLV) did not verify: dropped.
    pub bad_hmac: u32,
    /// Replies with the SSID zeroed (a reflector without RFC 8972).
    pub zero_ssid: u32,
    /// TLVs the reflector returned with U (unrecognised).
    pub tlv_unrecognized: u32,
    /// TLVs returned with M or I.
    pub tlv_errors: u32,
    /// The last Sender TTL seen.
    pub sender_ttl: Option<u8>,
}

/// The STAMP Session-Sender state machine.
#[derive(Debug, Clone)]
pub struct StampOp {
    cfg: StampConfig,
    start: Instant,
    drain_until: Option<Instant>,
    done: bool,
    sent: Vec<Sent>,
    arrivals: Vec<Sample>,
    /// Reflector sequence of each arrival (responder_seq is filled at the end).
    reflector_seqs: Vec<u32>,
    stateful_seen: bool,
    unexpected: u32,
    stamps: StampSources,
    info: StampReplyInfo,
    result: Option<OperationResult>,
    port: u16,
}

impl StampOp {
    /// Starts at `now`, sending to `port`.
    pub fn new(now: Instant, mut cfg: StampConfig, port: u16) -> Self {
        cfg.packets = cfg.packets.clamp(1, MAX_PACKETS);
        StampOp {
            sent: Vec::with_capacity(cfg.packets as usize),
            cfg,
            start: now,
            drain_until: None,
            done: false,
            arrivals: Vec::new(),
            reflector_seqs: Vec::new(),
            stateful_seen: false,
            unexpected: 0,
            stamps: StampSources::default(),
            info: StampReplyInfo::default(),
            result: None,
            port,
        }
    }

    /// Reply details beyond the statistics.
    pub fn reply_info(&self) -> StampReplyInfo {
        self.info
    }

    fn write_packet(&self, seq: u32, t1: NtpTimestamp, buf: &mut [u8]) -> Option<usize> {
        let mode = self.cfg.mode();
        let base = mode.base_len();
        SenderRepr { mode, sequence: seq, timestamp: t1, error_estimate: self.cfg.error_estimate, ssid: self.cfg.ssid }
            .emit(buf.get_mut(..base)?);
        let u = TlvFlags::U;
        let loc_sub = {
            let mut s = [0u8; 40];
            s[1] = 4; // Destination IP address request
            s[3] = 16;
            s[21] = 7; // Source IP address request
            s[23] = 16;
            s
        };
        let mut w = TlvWriter::new(&mut buf[base..]);
        let mut non_padding = false;
        for t in &self.cfg.tlvs {
            let value = match *t {
                TlvRequest::ExtraPadding(_) => continue,
                TlvRequest::TimestampInfo => TlvValue::TimestampInformation(TimestampInformation {
                    sync_in: 0.into(),
                    method_in: 0.into(),
                    sync_out: 0.into(),
                    method_out: 0.into(),
                    sub_tlvs: &[],
                }),
                TlvRequest::ClassOfService(dscp) => {
                    TlvValue::ClassOfService(ClassOfService { dscp1: dscp & 0x3f, ..ClassOfService::default() })
                }
                TlvRequest::Location => {
                    TlvValue::Location(Location { destination_port: 0, source_port: 0, sub_tlvs: &loc_sub })
                }
                TlvRequest::DirectMeasurement => TlvValue::DirectMeasurement(DirectMeasurement {
                    sender_tx: seq + 1,
                    ..DirectMeasurement::default()
                }),
            };
            w.push(&TlvRepr { flags: u, value }).ok()?;
            non_padding = true;
        }
        if let (Some(key), true) = (&self.cfg.key, non_padding) {
            w.push_hmac(u, key, seq).ok()?;
        }
        let zeros = [0u8; 65_535];
        for t in &self.cfg.tlvs {
            if let TlvRequest::ExtraPadding(n) = *t {
                w.push(&TlvRepr { flags: u, value: TlvValue::ExtraPadding(&zeros[..usize::from(n)]) }).ok()?;
            }
        }
        let len = base + w.written();
        if let Some(key) = &self.cfg.key {
            SenderPacket::new_unchecked(&mut buf[..len], mode).sign(key);
        }
        Some(len)
    }

    fn handle_reply(&mut self, now: Instant, rx: RxTime, bytes: &[u8]) {
        let mode = self.cfg.mode();
        let Ok(p) = ReflectorPacket::new_checked(bytes, mode) else {
            self.unexpected += 1;
            return;
        };
        let Ok(r) = ReflectorRepr::parse(&p) else {
            self.unexpected += 1;
            return;
        };
        if let Some(key) = &self.cfg.key {
            let tlv_ok =
                matches!(tlv::check_hmac(key, r.sequence, p.tlv_area()), TlvHmacCheck::Valid | TlvHmacCheck::Absent);
            if !p.verify_hmac(key) || !tlv_ok {
                self.info.bad_hmac += 1;
                return;
            }
        }
        let cap = 2 * self.sent.len();
        let Some(sent) = self.sent.get_mut(r.sender_sequence as usize) else {
            self.unexpected += 1;
            return;
        };
        if sent.t1_wire != r.sender_timestamp {
            self.unexpected += 1;
            return;
        }
        if r.ssid == 0 && self.cfg.ssid != 0 {
            self.info.zero_ssid += 1;
        }
        for t in tlv::TlvReader::new(p.tlv_area()).flatten() {
            let f = t.1.flags();
            if f.contains(TlvFlags::U) {
                self.info.tlv_unrecognized += 1;
            }
            if f.contains(TlvFlags::M) || f.contains(TlvFlags::I) {
                self.info.tlv_errors += 1;
            }
        }
        self.info.sender_ttl = r.sender_ttl;
        let duplicate = sent.answered;
        sent.answered = true;
        if duplicate && self.arrivals.len() >= cap {
            return;
        }
        self.stamps.note_rx(rx.kernel);
        if !duplicate {
            self.stamps.note_tx(sent.t1_kernel.is_some());
        }
        if r.sequence != r.sender_sequence {
            self.stateful_seen = true;
        }
        let late = now.saturating_duration_since(sent.at) > self.cfg.timeout;
        let t1 = NtpTimestamp::from_unix(sent.t1_kernel.unwrap_or(sent.t1_wall));
        let (t2, t3) = (r.receive_timestamp, r.timestamp);
        let t4 = NtpTimestamp::from_unix(rx.wall);
        let rtt = t4.diff_nanos(t1) - t3.diff_nanos(t2);
        self.arrivals.push(Sample {
            seq: r.sender_sequence + 1,
            responder_seq: 0,
            rtt,
            sd: t2.diff_nanos(t1),
            ds: t4.diff_nanos(t3),
            late,
            duplicate,
        });
        self.reflector_seqs.push(r.sequence);
    }

    fn finish(&mut self) {
        let counts = self.cfg.stateful || self.stateful_seen;
        let mut arrivals = self.arrivals.clone();
        if counts {
            for (a, &rs) in arrivals.iter_mut().zip(&self.reflector_seqs) {
                a.responder_seq = rs.wrapping_add(1);
            }
        }
        let cfg = StatsConfig {
            threshold: self.cfg.threshold.as_nanos() as i64,
            clock_sync: self.cfg.clock_sync,
            responder_counts: counts,
        };
        let st = stats::compute(self.sent.len() as u32, &arrivals, cfg);
        let return_code = if st.received == 0 {
            ReturnCode::Timeout
        } else if st.rtt.avg() > cfg.threshold as f64 {
            ReturnCode::OverThreshold
        } else {
            ReturnCode::Ok
        };
        self.result = Some(OperationResult {
            return_code,
            stats: st,
            voice: None,
            precision: Precision::Us,
            stamps: self.stamps,
            unexpected: self.unexpected + self.info.bad_hmac,
            samples: arrivals,
            send_span_ns: match (self.sent.first(), self.sent.last()) {
                (Some(a), Some(b)) => (b.at - a.at).as_nanos() as u64,
                _ => 0,
            },
        });
        self.done = true;
    }
}

impl Operation for StampOp {
    fn poll_transmit(&mut self, now: Instant, wall: Duration, buf: &mut [u8]) -> Option<Transmit> {
        if self.done || self.drain_until.is_some() {
            return None;
        }
        let i = self.sent.len() as u32;
        if now < self.start + self.cfg.interval * i {
            return None;
        }
        let t1 = NtpTimestamp::from_unix(wall);
        let len = self.write_packet(i, t1, buf)?;
        self.sent.push(Sent { at: now, t1_wire: t1, t1_wall: wall, t1_kernel: None, answered: false });
        if self.sent.len() as u32 == self.cfg.packets {
            self.drain_until = Some(now + self.cfg.timeout);
        }
        Some(Transmit { peer: Peer::Probe, len, seq: i + 1 })
    }

    fn handle_datagram(&mut self, now: Instant, from: Peer, rx: RxTime, bytes: &[u8]) {
        if self.done || from != Peer::Probe {
            return;
        }
        self.handle_reply(now, rx, bytes);
        if self.drain_until.is_some() && self.sent.iter().all(|s| s.answered) {
            self.finish();
        }
    }

    fn handle_tx_stamp(&mut self, seq: u32, wall: Duration) {
        if let Some(s) = seq.checked_sub(1).and_then(|i| self.sent.get_mut(i as usize)) {
            s.t1_kernel = Some(wall);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        Some(self.drain_until.unwrap_or(self.start + self.cfg.interval * self.sent.len() as u32))
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.drain_until.is_some_and(|u| now >= u) && !self.done {
            self.finish();
        }
    }

    fn probe_port(&self) -> u16 {
        self.port
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn result(&self) -> OperationResult {
        self.result.clone().unwrap_or_else(|| OperationResult::pending(Precision::Us, self.stamps, self.unexpected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::{ReflectorConfig, StampReflector};
    use ipsla_wire::stamp::tlv::SyncSource;

    fn cfg(key: Option<Vec<u8>>, tlvs: Vec<TlvRequest>) -> StampConfig {
        StampConfig {
            packets: 5,
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(1),
            threshold: Duration::from_secs(5),
            clock_sync: true,
            ssid: 77,
            key,
            tlvs,
            error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
            stateful: false,
        }
    }

    /// Runs the sender against the core reflector on a fake timeline; `drop_fwd` / `drop_back`
    /// lose packets by sender sequence.
    fn run(c: StampConfig, refl: ReflectorConfig, drop_fwd: &[u32], drop_back: &[u32]) -> OperationResult {
        let t0 = Instant::now();
        let wall0 = Duration::from_secs(1_700_000_000);
        let mut op = StampOp::new(t0, c, 862);
        let mut r = StampReflector::new(refl);
        let mut buf = vec![0u8; 4096];
        let mut out = vec![0u8; 4096];
        for step in 0..200u32 {
            let now = t0 + Duration::from_millis(u64::from(step));
            let wall = wall0 + Duration::from_millis(u64::from(step));
            while let Some(tx) = op.poll_transmit(now, wall, &mut buf) {
                let seq = tx.seq - 1;
                if drop_fwd.contains(&seq) {
                    continue;
                }
                let info = crate::stamp::Received {
                    rx: RxTime { wall: wall + Duration::from_micros(300), kernel: true },
                    src: "127.0.0.1:5000".parse().unwrap(),
                    dst: "127.0.0.1:862".parse().unwrap(),
                    ttl: Some(64),
                    tos: None,
                    error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
                    sync_source: SyncSource::LocalFreeRunning,
                };
                let rep = r.handle(now, &info, &buf[..tx.len], &mut out).expect("reflected");
                r.transmit(&rep, &mut out, wall + Duration::from_micros(400));
                if drop_back.contains(&seq) {
                    continue;
                }
                let rx = RxTime { wall: wall + Duration::from_micros(700), kernel: true };
                op.handle_datagram(now, Peer::Probe, rx, &out[..rep.len]);
            }
            if op.poll_timeout().is_some_and(|d| d <= now) {
                op.handle_timeout(now);
            }
            if op.is_done() {
                break;
            }
        }
        if !op.is_done() {
            op.handle_timeout(t0 + Duration::from_secs(10));
        }
        op.result()
    }

    #[test]
    fn clean_run_has_timings() {
        let r = run(cfg(None, vec![]), ReflectorConfig::default(), &[], &[]);
        assert_eq!(r.return_code, ReturnCode::Ok);
        assert_eq!((r.stats.sent, r.stats.received), (5, 5));
        // (T4 − T1) − (T3 − T2) = 700 − 100 µs, to the NTP rounding (2^-32 s)
        assert!((r.stats.rtt.min - 600_000).abs() <= 2, "{:?}", r.stats.rtt);
        assert!((r.stats.rtt.max - 600_000).abs() <= 2, "{:?}", r.stats.rtt);
    }

    #[test]
    fn stateful_reflector_splits_loss() {
        let refl = ReflectorConfig { stateful: true, ..ReflectorConfig::default() };
        let r = run(cfg(None, vec![]), refl, &[1], &[3]);
        assert_eq!(r.stats.received, 3);
        assert_eq!((r.stats.loss_sd, r.stats.loss_ds, r.stats.loss_mia), (1, 1, 0));
    }

    #[test]
    fn stateless_reflector_loss_is_mia() {
        let r = run(cfg(None, vec![]), ReflectorConfig::default(), &[1], &[3]);
        assert_eq!((r.stats.loss_sd, r.stats.loss_ds, r.stats.loss_mia), (0, 0, 2));
    }

    #[test]
    fn authenticated_with_tlvs() {
        let key = b"k3y".to_vec();
        let tlvs = vec![
            TlvRequest::TimestampInfo,
            TlvRequest::ClassOfService(46),
            TlvRequest::Location,
            TlvRequest::DirectMeasurement,
            TlvRequest::ExtraPadding(30),
        ];
        let refl = ReflectorConfig { key: Some(key.clone()), ..ReflectorConfig::default() };
        let r = run(cfg(Some(key.clone()), tlvs.clone()), refl, &[], &[]);
        assert_eq!((r.stats.received, r.unexpected), (5, 0));
        // a reflector with another key: the sender's packets are dropped there
        let refl = ReflectorConfig { key: Some(b"other".to_vec()), ..ReflectorConfig::default() };
        let t0 = Instant::now();
        let mut op = StampOp::new(t0, cfg(Some(key), tlvs), 862);
        let mut buf = vec![0u8; 4096];
        let tx = op.poll_transmit(t0, Duration::from_secs(1_700_000_000), &mut buf).unwrap();
        assert_eq!(tx.len, 112 + 8 + 8 + 48 + 16 + 20 + 34, "base, TLVs, HMAC TLV, then padding");
        let mut r = StampReflector::new(refl);
        let info = crate::stamp::Received {
            rx: RxTime { wall: Duration::from_secs(1_700_000_000), kernel: false },
            src: "127.0.0.1:5000".parse().unwrap(),
            dst: "127.0.0.1:862".parse().unwrap(),
            ttl: None,
            tos: None,
            error_estimate: ErrorEstimate::UNSYNCED_DEFAULT,
            sync_source: SyncSource::LocalFreeRunning,
        };
        assert_eq!(r.handle(t0, &info, &buf[..tx.len], &mut vec![0u8; 4096]), Err(crate::stamp::Drop::BadHmac));
    }
}
