//! What every reflecting socket of the responder shares: the IP SLA measurement ports, the STAMP
//! and TWAMP-Light reflectors and the TWAMP test sessions.
//!
//! - [`HostClock`]: the host clock's Error Estimate and synchronisation source, read from the
//!   kernel at most once a second.
//! - [`ReplySender`]: writes T3 right before the send call, adds the learned userspace→kernel
//!   send delay when calibration is on ([`T3Calibration`], shared by all sockets of the
//!   responder thread), and learns that delay from the kernel's transmit stamp of the reply.
//! - [`bind_in_range`] / [`classify`]: how a test port is picked from an allowed range and what a
//!   bind error means to the protocol.

use crate::clock::wall_now;
use crate::socket;
use ipsla_core::io::{BindError, PortKey};
use ipsla_core::ops::DeltaStats;
use ipsla_wire::stamp::tlv::SyncSource;
use ipsla_wire::time::ErrorEstimate;
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Replies whose stamp is taken before sampling starts ([`T3_SAMPLE_EVERY`]).
const T3_WINDOW: usize = 64;
/// Replies seen before the lead is applied: the first sends of a socket are slow (cold caches,
/// first-use allocations) and a minimum over a few of them would push T3 past the departure.
const T3_MIN_SAMPLES: usize = 16;
/// Taken off the smallest delta: a reply that leaves faster than any before it (a new minimum,
/// typically by a fraction of a µs) must still not get a T3 after its departure.
const T3_MARGIN_NS: i64 = 1_000;

/// Once the window is full, one reply in this many has its transmit stamp taken: each stamp costs
/// the kernel a stamp message and us an error-queue read, which made a reply 20 % dearer when
/// every reply had one (bench/RESULTS.md). The lead is the smallest delta ever seen, so sampling
/// changes how often it can improve, not what it measures.
pub(crate) const T3_SAMPLE_EVERY: u32 = 16;

/// How much later than the userspace T3 reading the kernel stamps a reply leaving.
#[derive(Debug, Default)]
pub(crate) struct T3Calibration {
    enabled: bool,
    /// Stamps learnt from (up to [`T3_WINDOW`]: all that matters is whether the lead is warm
    /// and whether sampling has started).
    learnt: usize,
    /// The smallest delta ever seen less a margin, ns, so that a calibrated T3 is not later than
    /// the real departure (which would make an RTT read shorter than it is). Not the minimum of
    /// the recent ones only: on a loaded machine every recent send can be slow, and the next fast
    /// one would then leave before the T3 it carries (a loopback RTT read below 0).
    lead_ns: i64,
    /// The smallest delta ever seen.
    floor_ns: Option<i64>,
    /// Kernel transmit stamp − userspace T3 reading, over the replies whose stamp was taken (a
    /// self-diagnostic).
    pub(crate) tx_delta: DeltaStats,
    /// Replies sent, for the sampling.
    replies: u32,
}

/// The calibration shared by the sockets of one responder thread.
pub(crate) type SharedCalibration = Rc<RefCell<T3Calibration>>;

impl T3Calibration {
    /// A calibration that learns (always) and applies (when `enabled`) the send delay.
    pub(crate) fn shared(enabled: bool) -> SharedCalibration {
        Rc::new(RefCell::new(T3Calibration { enabled, ..Default::default() }))
    }

    /// What is added to a userspace T3 reading now, ns (0 when off).
    pub(crate) fn lead_ns(&self) -> i64 {
        if self.enabled && self.learnt >= T3_MIN_SAMPLES { self.lead_ns } else { 0 }
    }

    /// Whether the next reply's stamp is wanted: every one until the window is full, then one in
    /// [`T3_SAMPLE_EVERY`] (counted over the replies of the sockets that share it).
    fn wants_stamp(&mut self) -> bool {
        self.replies = self.replies.wrapping_add(1);
        self.learnt < T3_WINDOW || self.replies.is_multiple_of(T3_SAMPLE_EVERY)
    }

    fn record(&mut self, delta_ns: i64) {
        self.tx_delta.add(delta_ns);
        let d = delta_ns.clamp(0, 1_000_000);
        self.learnt = (self.learnt + 1).min(T3_WINDOW);
        let floor = self.floor_ns.map_or(d, |f| f.min(d));
        self.floor_ns = Some(floor);
        self.lead_ns = (floor - T3_MARGIN_NS).max(0);
    }
}

/// Sends the replies of one socket with T3 written as late as possible. When the socket's
/// transmit stamps are on ([`socket::enable_timestamps`]), it keeps them on only for the replies
/// the calibration wants a stamp of ([`T3Calibration::wants_stamp`]).
pub(crate) struct ReplySender {
    calibration: SharedCalibration,
    errq: Vec<u8>,
    /// The socket's transmit stamps: unknown until the first send, then whether they are on now.
    /// `None` after the first send means the socket has none (kernel stamps off): never turned on.
    tx: Option<Option<bool>>,
}

impl ReplySender {
    /// A sender for one socket.
    pub(crate) fn new(calibration: SharedCalibration) -> Self {
        ReplySender { calibration, errq: socket::errqueue_cmsg_buffer(), tx: None }
    }

    /// Whether this reply's transmit stamp is taken, with the socket's stamping set so.
    fn stamp_this_one(&mut self, sock: &UdpSocket) -> bool {
        let on = *self.tx.get_or_insert_with(|| socket::tx_stamps_on(sock).then_some(true));
        let Some(on) = on else { return false };
        let want = self.calibration.borrow_mut().wants_stamp();
        if want != on {
            match socket::set_tx_stamps(sock, want) {
                Ok(()) => self.tx = Some(Some(want)),
                Err(e) => {
                    tracing::debug!(error = %e, "transmit stamps could not be switched; stamping every reply");
                    self.tx = Some(Some(on));
                    return on;
                }
            }
        }
        want
    }

    /// Writes T3 with `write_t3(buf, t3)` right before the send call (the reply cannot carry its
    /// own kernel transmit stamp, so with calibration T3 is the userspace reading plus the learned
    /// delay), sends `buf` to `to`, and learns from the kernel's stamp of it. True when sent.
    pub(crate) async fn send(
        &mut self,
        sock: &UdpSocket,
        to: SocketAddr,
        buf: &mut [u8],
        write_t3: impl FnOnce(&mut [u8], Duration),
    ) -> bool {
        let stamped = self.stamp_this_one(sock);
        let t3 = wall_now();
        let lead = self.calibration.borrow().lead_ns();
        write_t3(buf, t3 + Duration::from_nanos(lead.max(0) as u64));
        if !send_reply(sock, buf, to).await {
            return false;
        }
        if stamped {
            // The stamp of a reply comes back before the send call returns on loopback and TUN.
            // Only the stamped replies are numbered, and which number the kernel gives one
            // differs between kernels, so the pairing is by arrival: exactly one stamp now is
            // this reply's. None (late) or several (an earlier late one among them) teach nothing.
            let mut seen = Vec::new();
            socket::drain_tx_stamps(sock, &mut self.errq, |t| seen.push(t.wall));
            if let [wall] = seen[..] {
                self.calibration.borrow_mut().record(wall.as_nanos() as i64 - t3.as_nanos() as i64);
            }
        }
        true
    }
}

/// Sends a reply; true when the kernel took it.
pub(crate) async fn send_reply(sock: &UdpSocket, buf: &[u8], to: SocketAddr) -> bool {
    match sock.try_send_to(buf, to) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            matches!(tokio::time::timeout(Duration::from_millis(100), sock.send_to(buf, to)).await, Ok(Ok(_)))
        }
        Err(e) => {
            tracing::debug!(%to, error = %e, "reply not sent");
            false
        }
    }
}

/// The host clock as the reflectors describe it: Error Estimate (S bit when the kernel says the
/// clock is synchronised, the error bound the time daemon reported) and the STAMP Timestamp
/// Information sync source (NTP when synchronised, else the local free-running clock). Re-read
/// at most once a second.
pub(crate) struct HostClock {
    read_at: Instant,
    value: (ErrorEstimate, SyncSource),
}

impl HostClock {
    /// Reads the clock state now.
    pub(crate) fn new() -> Self {
        HostClock { read_at: Instant::now(), value: read_host_clock() }
    }

    /// The state, re-read when older than a second.
    pub(crate) fn get(&mut self, now: Instant) -> (ErrorEstimate, SyncSource) {
        if now.saturating_duration_since(self.read_at) > Duration::from_secs(1) {
            *self = HostClock { read_at: now, value: read_host_clock() };
        }
        self.value
    }
}

fn read_host_clock() -> (ErrorEstimate, SyncSource) {
    match crate::clock::kernel_clock_state() {
        Some(c) if c.synchronised => {
            (ErrorEstimate::from_precision_ns(c.est_error_us.max(1) as u64 * 1000, true), SyncSource::Ntp)
        }
        Some(c) => {
            (ErrorEstimate::from_precision_ns(c.max_error_us.max(1) as u64 * 1000, false), SyncSource::LocalFreeRunning)
        }
        None => (ErrorEstimate::UNSYNCED_DEFAULT, SyncSource::LocalFreeRunning),
    }
}

/// What a bind error means to the protocol: the port is taken, the address is not ours, or
/// something else.
pub(crate) fn classify(e: &io::Error) -> BindError {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) | Some(libc::EACCES) => BindError::InUse,
        Some(libc::EADDRNOTAVAIL) | Some(libc::EAFNOSUPPORT) => BindError::NotLocal,
        _ => BindError::Other,
    }
}

/// Binds `key`'s port, or for port 0 a free port of `range` tried from a random point (at most
/// 256 tries; `bind` answers `EADDRINUSE` for a port it holds already). Returns the port bound.
pub(crate) fn bind_in_range(
    key: PortKey,
    range: &RangeInclusive<u16>,
    mut bind: impl FnMut(PortKey) -> io::Result<()>,
) -> Result<u16, BindError> {
    if key.port != 0 {
        bind(key).map_err(|e| classify(&e))?;
        return Ok(key.port);
    }
    if range.is_empty() {
        return Err(BindError::InUse);
    }
    let span = u32::from(*range.end()) - u32::from(*range.start()) + 1;
    let start = rand::random::<u32>() % span;
    for i in 0..span.min(256) {
        let port = (u32::from(*range.start()) + (start + i) % span) as u16;
        match bind(PortKey { port, ..key }) {
            Ok(()) => return Ok(port),
            Err(e) if classify(&e) == BindError::InUse => continue,
            Err(e) => return Err(classify(&e)),
        }
    }
    Err(BindError::InUse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_is_the_smallest_delta_ever_less_the_margin_once_warm() {
        let c = T3Calibration::shared(true);
        let mut c = c.borrow_mut();
        // a slow first send, then 14 more: not applied yet
        c.record(90_000);
        for _ in 0..14 {
            c.record(6_000);
        }
        assert_eq!(c.lead_ns(), 0, "fewer than {T3_MIN_SAMPLES} replies seen");
        c.record(5_000);
        assert_eq!(c.lead_ns(), 4_000, "min 5 µs less 1 µs");
        // a loaded spell: every recent send is slow; the lead stays what the fastest one allows,
        // so the next fast send does not leave before its T3
        for _ in 0..T3_WINDOW {
            c.record(25_000);
        }
        assert_eq!(c.lead_ns(), 4_000);
        // deltas are clamped to 0..=1 ms
        c.record(-50);
        assert_eq!(c.lead_ns(), 0);
        assert_eq!(c.tx_delta.count, 16 + T3_WINDOW as u64 + 1);
        let off = T3Calibration::shared(false);
        for _ in 0..20 {
            off.borrow_mut().record(8_000);
        }
        assert_eq!(off.borrow().lead_ns(), 0, "learnt but not applied when off");
    }

    /// On loopback a stamp comes back before the send returns: the counts are exact.
    #[test]
    fn every_reply_is_stamped_until_the_window_is_full_then_one_in_n() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = socket::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
            assert_eq!(socket::enable_timestamps(&s, true), socket::RxStampMode::Timestamping);
            let sock = UdpSocket::from_std(s.into()).unwrap();
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = peer.local_addr().unwrap();
            let c = T3Calibration::shared(true);
            let mut sender = ReplySender::new(c.clone());
            let n = T3_WINDOW as u32 + 5 * T3_SAMPLE_EVERY + 1;
            for _ in 0..n {
                assert!(sender.send(&sock, to, &mut [0u8; 8], |_, _| {}).await);
            }
            // the window's 64 replies, then every 16th of the rest: 80, 96, 112, 128, 144
            let sampled = (T3_WINDOW as u32 + 1..=n).filter(|i| i % T3_SAMPLE_EVERY == 0).count() as u64;
            assert_eq!(c.borrow().tx_delta.count, T3_WINDOW as u64 + sampled);
            assert_eq!(sampled, 5);
            assert!(!socket::tx_stamps_on(&sock), "off between the sampled replies");
            assert!(c.borrow().lead_ns() >= 0);
            // a socket without transmit stamps is never switched to them
            let plain = socket::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
            socket::enable_timestamps(&plain, false);
            let plain = UdpSocket::from_std(plain.into()).unwrap();
            let c2 = T3Calibration::shared(true);
            let mut sender = ReplySender::new(c2.clone());
            for _ in 0..3 {
                assert!(sender.send(&plain, to, &mut [0u8; 8], |_, _| {}).await);
            }
            assert_eq!(c2.borrow().tx_delta.count, 0);
            assert!(!socket::tx_stamps_on(&plain));
        });
    }

    #[test]
    fn ports_from_the_range() {
        let key = PortKey { proto: ipsla_core::io::Proto::Udp, addr: [127, 0, 0, 1].into(), port: 0 };
        let mut tried = Vec::new();
        let got = bind_in_range(key, &(5000..=5003), |k| {
            tried.push(k.port);
            if tried.len() < 3 { Err(io::Error::from_raw_os_error(libc::EADDRINUSE)) } else { Ok(()) }
        });
        assert!(matches!(got, Ok(p) if (5000..=5003).contains(&p) && tried.len() == 3), "{got:?} {tried:?}");
        let all_taken = bind_in_range(key, &(5000..=5001), |_| Err(io::Error::from_raw_os_error(libc::EADDRINUSE)));
        assert_eq!(all_taken, Err(BindError::InUse));
        let not_local = bind_in_range(key, &(5000..=5001), |_| Err(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL)));
        assert_eq!(not_local, Err(BindError::NotLocal));
        #[allow(clippy::reversed_empty_ranges)]
        let empty = bind_in_range(key, &(5001..=5000), |_| Ok(()));
        assert_eq!(empty, Err(BindError::InUse));
        let fixed = bind_in_range(PortKey { port: 7, ..key }, &(5000..=5001), |k| {
            assert_eq!(k.port, 7);
            Ok(())
        });
        assert_eq!(fixed, Ok(7));
    }
}
