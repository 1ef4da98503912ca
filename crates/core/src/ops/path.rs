//! path-echo and path-jitter (IOS `path-echo`, `path-jitter`): find the hops to a target the way
//! traceroute does, then time ICMP echoes to each of them. Sans-IO like the other operations.
//!
//! **Discovery** (IOS path_echo capture, reference §4.5): a UDP probe with TTL 1 to port 33434,
//! TTL 2 to 33435, ... Each hop's router answers Time Exceeded; the target answers Port
//! Unreachable. An error counts only when the datagram it quotes is one of ours: to the target,
//! UDP, from our port, to the port of a probe still waiting. Anything else (a forged or stray
//! error) is counted in [`PathReport::unmatched`] and ignored. At most [`DISCOVERY_WINDOW`]
//! probes are in flight, so a near target does not receive thirty probes.
//!
//! **Echoes**: to every hop that answered (each address once), or to the target alone
//! (`target_only`). IOS path-echo sends one echo per hop with identifier 13 and sequence 0;
//! path-jitter sends `echoes` per hop, `interval` apart, the identifier rising with every packet and
//! the sequence counting 0..N−1 per hop. Each echo carries 8 bytes where IOS writes its uptime in
//! ms; here the send time in ms since the Unix epoch, which a reply must bring back. Where IOS
//! finishes one hop before the next, the rounds here go to every hop at once: a lost echo costs
//! one timeout per run rather than one per hop.
//!
//! The final target's replies are the operation's RTT ([`PathReport::result`]); every hop's go to
//! its own statistics ([`HopReport`]).

use super::{LostProbe, OperationResult, Precision, ReturnCode};
use crate::io::RxTime;
use crate::stats::{Sample, StatsConfig, compute};
use ipsla_wire::icmp::{self, ErrorKind, Icmp, IcmpErrorRepr};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The first discovery port (traceroute's and IOS's): TTL `t` goes to `BASE_PORT + t − 1`.
pub const BASE_PORT: u16 = 33434;
/// The ICMP identifier of every path-echo echo (IOS path_echo capture).
pub const PATH_ECHO_IDENT: u16 = 13;
/// The first identifier of path-jitter (IOS path_jitter capture: 0x2325, then one more per packet).
pub const PATH_JITTER_FIRST_IDENT: u16 = 0x2325;
/// Discovery probes in flight at most.
pub const DISCOVERY_WINDOW: u8 = 8;
/// Bytes of the send stamp at the start of each echo's data.
pub const STAMP_LEN: usize = 8;

/// The identifiers of the echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ident {
    /// Every echo carries this one (path-echo: 13).
    Fixed(u16),
    /// The first echo carries this one, each next echo one more (path-jitter).
    Rising(u16),
}

/// One run's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PathConfig {
    /// The final target.
    pub target: IpAddr,
    /// The highest TTL discovery tries.
    pub max_hops: u8,
    /// Echoes per hop (path-echo 1; path-jitter `num_packets`).
    pub echoes: u32,
    /// Between two rounds of echoes.
    pub interval: Duration,
    /// Echo the target alone (path-jitter `targetOnly`), after discovering the path all the same.
    pub target_only: bool,
    /// Echo identifiers.
    pub ident: Ident,
    /// Echo data bytes after the 8-byte stamp (IOS request-data-size, 28).
    pub size: usize,
    /// Data pattern (IOS `abcd`).
    pub pattern: Vec<u8>,
    /// How long a probe or echo is waited for.
    pub timeout: Duration,
    /// RTT threshold (the return code OverThreshold).
    pub threshold: Duration,
    /// Replies carry our identifier (raw sockets); false when the kernel sets it (datagram ICMP
    /// sockets), so that only the sequence and the stamp match a reply.
    pub check_ident: bool,
    /// Our UDP source port, when known: a quoted datagram from another port is not ours.
    pub local_port: Option<u16>,
}

/// What to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathTransmit {
    /// A discovery datagram of `len` bytes to `target:port` with this TTL.
    Udp {
        /// IP TTL / hop limit.
        ttl: u8,
        /// Destination port.
        port: u16,
        /// Bytes in the buffer.
        len: usize,
    },
    /// An ICMP echo request of `len` bytes to `to`.
    Echo {
        /// Destination.
        to: IpAddr,
        /// Bytes in the buffer.
        len: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ttl {
    Waiting(Instant),
    Answered(IpAddr, ErrorKind),
    Silent,
}

#[derive(Debug, Clone)]
struct Echo {
    to: usize,
    seq: u16,
    ident: u16,
    stamp: u64,
    t1: Duration,
    deadline: Instant,
    rtt: Option<i64>,
    t4: i64,
    kernel: bool,
    expired: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Discover,
    Echo,
    Done,
}

/// The statistics of one hop.
#[derive(Debug, Clone, PartialEq)]
pub struct HopReport {
    /// TTL, from 1.
    pub hop: u8,
    /// Who answered; `None` when nothing did (traceroute's `*`).
    pub address: Option<IpAddr>,
    /// Echoes sent to it (0 for a silent hop, or beside the target with `target_only`).
    pub sent: u32,
    /// RTTs of the replies in sequence order, ns; `None` for an echo without a reply.
    pub rtts: Vec<Option<i64>>,
}

impl HopReport {
    /// The RTTs that came back, ns.
    pub fn received(&self) -> Vec<i64> {
        self.rtts.iter().flatten().copied().collect()
    }
    /// Echoes without a reply.
    pub fn lost(&self) -> u32 {
        self.sent - self.rtts.iter().flatten().count() as u32
    }
    /// Differences of the RTTs of consecutive echoes that both came back (RFC 5481 IPDV), ns.
    pub fn ipdv(&self) -> Vec<i64> {
        self.rtts.windows(2).filter_map(|w| Some(w[1]? - w[0]?)).collect()
    }
}

/// What a run found.
#[derive(Debug, Clone, PartialEq)]
pub struct PathReport {
    /// The target's echoes as the common result: its RTT, return code, loss.
    pub result: OperationResult,
    /// The path, hop by hop, as far as discovery got.
    pub hops: Vec<HopReport>,
    /// The target answered discovery (port unreachable from it).
    pub reached: bool,
    /// A router answered Destination Unreachable for the target: (hop, router, code).
    pub unreachable: Option<(u8, IpAddr, u8)>,
    /// ICMP errors and echo replies that were not about anything we sent, ignored.
    pub unmatched: u32,
}

impl PathReport {
    /// The path: each hop's address, `None` for a hop that never answered.
    pub fn path(&self) -> Vec<Option<IpAddr>> {
        self.hops.iter().map(|h| h.address).collect()
    }
}

/// The state machine of one run.
#[derive(Debug)]
pub struct PathOp {
    cfg: PathConfig,
    phase: Phase,
    ttls: Vec<Ttl>,
    /// Echo destinations: distinct addresses of the path (or the target alone), the target last.
    dests: Vec<IpAddr>,
    echoes: Vec<Echo>,
    round: u32,
    next_round: Instant,
    next_ident: u16,
    pending: VecDeque<usize>,
    probes_sent: usize,
    unmatched: u32,
}

impl PathOp {
    /// A run that starts at `now`.
    pub fn new(now: Instant, cfg: PathConfig) -> Self {
        let next_ident = match cfg.ident {
            Ident::Fixed(i) | Ident::Rising(i) => i,
        };
        PathOp {
            ttls: Vec::with_capacity(usize::from(cfg.max_hops)),
            cfg,
            phase: Phase::Discover,
            dests: Vec::new(),
            echoes: Vec::new(),
            round: 0,
            next_round: now,
            next_ident,
            pending: VecDeque::new(),
            probes_sent: 0,
            unmatched: 0,
        }
    }

    /// Our UDP source port, once the driver knows it.
    pub fn set_local_port(&mut self, port: u16) {
        self.cfg.local_port = Some(port);
    }

    /// The TTL of the first hop that ended the path (the target, or a router's unreachable).
    fn end(&self) -> Option<usize> {
        self.ttls.iter().position(|t| matches!(t, Ttl::Answered(_, ErrorKind::Unreachable { .. })))
    }

    fn discovery_finished(&self) -> bool {
        let limit = self.end().map_or(usize::from(self.cfg.max_hops), |i| i + 1);
        self.ttls.len() >= limit && self.ttls[..limit].iter().all(|t| !matches!(t, Ttl::Waiting(_)))
    }

    fn start_echoes(&mut self, now: Instant) {
        self.phase = Phase::Echo;
        let limit = self.end().map_or(self.ttls.len(), |i| i + 1);
        self.ttls.truncate(limit);
        if !self.cfg.target_only {
            for t in &self.ttls {
                if let Ttl::Answered(a, _) = *t
                    && a != self.cfg.target
                    && !self.dests.contains(&a)
                {
                    self.dests.push(a);
                }
            }
        }
        self.dests.push(self.cfg.target);
        self.next_round = now;
        self.round = 0;
    }

    /// The next packet to send, written into `buf` (at least 8 + 8 + `size` bytes).
    pub fn poll_transmit(&mut self, now: Instant, wall: Duration, buf: &mut [u8]) -> Option<PathTransmit> {
        match self.phase {
            Phase::Discover => {
                let in_flight = self.ttls.iter().filter(|t| matches!(t, Ttl::Waiting(_))).count();
                let next = self.ttls.len() + 1;
                if self.end().is_some()
                    || next > usize::from(self.cfg.max_hops)
                    || in_flight >= usize::from(DISCOVERY_WINDOW)
                {
                    return None;
                }
                self.ttls.push(Ttl::Waiting(now + self.cfg.timeout));
                self.probes_sent = next;
                // IOS sends the request data pattern as the UDP payload
                let len = self.cfg.size.min(buf.len());
                fill(&mut buf[..len], &self.cfg.pattern);
                Some(PathTransmit::Udp { ttl: next as u8, port: BASE_PORT.wrapping_add(next as u16 - 1), len })
            }
            Phase::Echo => {
                if self.pending.is_empty() && self.round < self.cfg.echoes && now >= self.next_round {
                    self.pending.extend(0..self.dests.len());
                    self.round += 1;
                    self.next_round = now + self.cfg.interval;
                }
                let to = self.pending.pop_front()?;
                let ident = self.next_ident;
                if let Ident::Rising(_) = self.cfg.ident {
                    self.next_ident = self.next_ident.wrapping_add(1);
                }
                let seq = match self.cfg.ident {
                    Ident::Fixed(_) => 0,
                    Ident::Rising(_) => (self.round - 1) as u16,
                };
                let stamp = wall.as_millis() as u64;
                let mut data = vec![0u8; STAMP_LEN + self.cfg.size];
                data[..STAMP_LEN].copy_from_slice(&stamp.to_be_bytes());
                fill(&mut data[STAMP_LEN..], &self.cfg.pattern);
                let dst = self.dests[to];
                let len = icmp::emit_echo_request(buf, dst.is_ipv6(), ident, seq, &data);
                self.echoes.push(Echo {
                    to,
                    seq,
                    ident,
                    stamp,
                    t1: wall,
                    deadline: now + self.cfg.timeout,
                    rtt: None,
                    t4: 0,
                    kernel: false,
                    expired: false,
                });
                Some(PathTransmit::Echo { to: dst, len })
            }
            Phase::Done => None,
        }
    }

    /// An ICMP error from `from` (IP_RECVERR on the UDP socket, or a raw ICMP socket).
    pub fn handle_icmp_error(&mut self, now: Instant, from: IpAddr, err: &IcmpErrorRepr) {
        let q = &err.quote;
        let index = usize::from(q.dst_port.wrapping_sub(BASE_PORT));
        let ours = q.dst.to_canonical() == self.cfg.target.to_canonical()
            && q.protocol == icmp::PROTO_UDP
            && self.cfg.local_port.is_none_or(|p| p == q.src_port)
            && index < self.probes_sent;
        if !ours {
            self.unmatched += 1;
            return;
        }
        if self.phase != Phase::Discover || index >= self.ttls.len() {
            // a probe beyond the end of the path, answered after discovery ended: ours, not needed
            return;
        }
        match self.ttls[index] {
            Ttl::Waiting(_) => self.ttls[index] = Ttl::Answered(from, err.kind),
            // the same error from the raw socket and from the error queue: already counted
            Ttl::Answered(a, k) if a == from && k == err.kind => {}
            _ => self.unmatched += 1,
        }
        self.advance(now);
    }

    /// An ICMP message (no IP header) from `from` on the echo socket, received at `rx`.
    pub fn handle_echo_reply(&mut self, now: Instant, from: IpAddr, rx: RxTime, msg: &[u8]) {
        let Ok(p) = Icmp::new_checked(msg) else {
            self.unmatched += 1;
            return;
        };
        if !matches!(p.msg_type(), icmp::ECHO_REPLY_V4 | icmp::ECHO_REPLY_V6) {
            // errors reach the raw socket too: let discovery judge them
            if let Ok(e) = IcmpErrorRepr::parse(&p, from.is_ipv6()) {
                self.handle_icmp_error(now, from, &e);
            }
            return;
        }
        let stamp = p.payload().get(..STAMP_LEN).map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
        let check = self.cfg.check_ident;
        let dests = &self.dests;
        let found = self.echoes.iter_mut().find(|e| {
            dests[e.to].to_canonical() == from.to_canonical()
                && e.seq == p.sequence()
                && (!check || e.ident == p.ident())
                && Some(e.stamp) == stamp
                && e.rtt.is_none()
        });
        match found {
            Some(e) if !e.expired && now <= e.deadline => {
                e.rtt = Some(rx.wall.as_nanos() as i64 - e.t1.as_nanos() as i64);
                e.t4 = rx.wall.as_nanos() as i64;
                e.kernel = rx.kernel;
            }
            _ => self.unmatched += 1,
        }
        self.advance(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Discover => {
                self.ttls.iter().filter_map(|t| if let Ttl::Waiting(d) = t { Some(*d) } else { None }).min()
            }
            Phase::Echo => {
                let waiting = self.echoes.iter().filter(|e| e.rtt.is_none() && !e.expired).map(|e| e.deadline);
                let next = (self.round < self.cfg.echoes).then_some(self.next_round);
                waiting.chain(next).min()
            }
            Phase::Done => None,
        }
    }

    /// Expires what waited long enough.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in &mut self.ttls {
            if matches!(*t, Ttl::Waiting(d) if d <= now) {
                *t = Ttl::Silent;
            }
        }
        for e in &mut self.echoes {
            e.expired |= e.rtt.is_none() && e.deadline <= now;
        }
        self.advance(now);
    }

    fn advance(&mut self, now: Instant) {
        if self.phase == Phase::Discover && self.discovery_finished() {
            self.start_echoes(now);
        }
        if self.phase == Phase::Echo
            && self.round >= self.cfg.echoes
            && self.pending.is_empty()
            && self.echoes.iter().all(|e| e.rtt.is_some() || e.expired)
        {
            self.phase = Phase::Done;
        }
    }

    /// True once discovery and every echo are over.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// What the run found (a partial run: what it found so far).
    pub fn report(&self) -> PathReport {
        let target = self.dests.iter().position(|d| *d == self.cfg.target);
        let of = |to: usize| -> (u32, Vec<Option<i64>>) {
            let mut v: Vec<&Echo> = self.echoes.iter().filter(|e| e.to == to).collect();
            v.sort_by_key(|e| e.seq);
            (v.len() as u32, v.iter().map(|e| e.rtt).collect())
        };
        let hops = self
            .ttls
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let address = if let Ttl::Answered(a, _) = *t { Some(a) } else { None };
                let (sent, rtts) =
                    address.and_then(|a| self.dests.iter().position(|d| *d == a)).map_or((0, Vec::new()), of);
                HopReport { hop: i as u8 + 1, address, sent, rtts }
            })
            .collect();
        let mut samples = Vec::new();
        let mut lost = Vec::new();
        let mut stamps = super::StampSources::default();
        let mut sent = 0u32;
        if let Some(t) = target {
            for (n, e) in self.echoes.iter().filter(|e| e.to == t).enumerate() {
                sent += 1;
                let seq = n as u32 + 1;
                stamps.note_tx(false);
                if e.rtt.is_some() {
                    stamps.note_rx(e.kernel);
                }
                match e.rtt {
                    Some(rtt) => {
                        samples.push(Sample { seq, rtt, t1: e.t1.as_nanos() as i64, t4: e.t4, ..Sample::default() })
                    }
                    None => lost.push(LostProbe { seq, t1: e.t1.as_nanos() as i64 }),
                }
            }
        }
        let cfg =
            StatsConfig { threshold: self.cfg.threshold.as_nanos() as i64, clock_sync: false, responder_counts: false };
        let mut stats = compute(sent, &samples, cfg);
        // an echo carries no one-way times: no jitter per direction (not a jitter of 0); the
        // IPDV of the round trips stays
        stats.jitter_sd = Default::default();
        stats.jitter_ds = Default::default();
        let code = if stats.received == 0 {
            ReturnCode::Timeout
        } else if stats.over_threshold > 0 {
            ReturnCode::OverThreshold
        } else {
            ReturnCode::Ok
        };
        let mut result = OperationResult::new(code, stats, Precision::Us);
        result.samples = samples;
        result.lost = lost;
        result.unexpected = self.unmatched;
        result.stamps = stamps;
        let unreachable = self.ttls.iter().enumerate().find_map(|(i, t)| match *t {
            Ttl::Answered(a, ErrorKind::Unreachable { code }) if a != self.cfg.target => Some((i as u8 + 1, a, code)),
            _ => None,
        });
        let reached = self.ttls.iter().any(|t| matches!(*t, Ttl::Answered(a, _) if a == self.cfg.target));
        PathReport { result, hops, reached, unreachable, unmatched: self.unmatched }
    }
}

fn fill(b: &mut [u8], pattern: &[u8]) {
    if pattern.is_empty() {
        b.fill(0);
        return;
    }
    for (x, p) in b.iter_mut().zip(pattern.iter().cycle()) {
        *x = *p;
    }
}

#[cfg(test)]
mod tests;
