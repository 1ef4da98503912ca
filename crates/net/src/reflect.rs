//! What every reflecting socket of the responder shares: the IP SLA measurement ports, the STAMP
//! and TWAMP-Light reflectors and the TWAMP test sessions.
//!
//! - [`HostClock`]: the host clock's Error Estimate and synchronisation source, read from the
//!   kernel at most once a second.
//! - [`ReplySender`]: answers a socket's datagrams in batches ([`crate::batch`]) for every
//!   protocol ([`Reflect`]), writes each reply's T3 right before the send call, adds the learned
//!   userspace→kernel send delay when calibration is on ([`T3Calibration`], shared by all
//!   sockets of the responder thread), and learns that delay from the kernel's transmit stamps
//!   of a sample of the replies.
//! - [`bind_in_range`] / [`classify`]: how a test port is picked from an allowed range and what a
//!   bind error means to the protocol.

use crate::batch::{self, Batch, Reply as BatchReply};
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
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Replies whose stamp is taken before sampling starts ([`T3_SAMPLE_EVERY`]).
const T3_WINDOW: usize = 64;
/// Replies seen before the lead is applied: the first sends of a socket are slow (cold caches,
/// first-use allocations) and a minimum over a few of them would push T3 past the departure.
pub(crate) const T3_MIN_SAMPLES: usize = 16;
/// Taken off the smallest delta: a reply that leaves faster than any before it (a new minimum,
/// typically by a few tens of ns once warm) must still not get a T3 after its arrival at the
/// peer, which on loopback follows the kernel's transmit stamp by 0.25-0.34 µs
/// (performance-floor.md §3b). 1 µs made every T3 0.75 µs earlier than it needs to be, which
/// reads as RTT. Applies once [`T3_WINDOW`] stamps are learnt.
const T3_MARGIN_NS: i64 = 250;
/// The margin before that: the smallest of a few stamps is still far from the smallest send
/// (the first replies of a socket are slow), and a later reply beat it by 0.9 µs in a 20-probe
/// STAMP run, reading a loopback RTT of -0.2 µs with the 0.25 µs margin.
const T3_WARM_MARGIN_NS: i64 = 1_000;

/// Once the window is full, one reply in this many has its transmit stamp taken: each stamp costs
/// the kernel a stamp message and us an error-queue read, which made a reply 20 % dearer when
/// every reply had one (bench/RESULTS.md). The lead is the smallest delta ever seen, so sampling
/// changes how often it can improve, not what it measures.
pub(crate) const T3_SAMPLE_EVERY: u32 = 16;
/// ... and never two within this: at 1,000 probes/s one in 16 is 62 stamps a second, plenty for a
/// smallest delay; at 200,000 it would be 12,500, each splitting a run of one sender's replies
/// out of its segmented send (bench/RESULTS.md, issue 18).
pub(crate) const T3_SAMPLE_GAP: Duration = Duration::from_millis(10);

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
    /// When the last stamp was asked.
    sampled_at: Option<Instant>,
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

    /// Whether the stamp of the next reply, sent at `now`, is wanted: every one until the window
    /// is full, then one in [`T3_SAMPLE_EVERY`] (counted over the replies of the sockets that
    /// share it) at most once per [`T3_SAMPLE_GAP`].
    fn wants_stamp(&mut self, now: Instant) -> bool {
        self.replies = self.replies.wrapping_add(1);
        let due = self.learnt < T3_WINDOW
            || (self.replies.is_multiple_of(T3_SAMPLE_EVERY)
                && self.sampled_at.is_none_or(|t| now.saturating_duration_since(t) >= T3_SAMPLE_GAP));
        if due {
            self.sampled_at = Some(now);
        }
        due
    }

    fn record(&mut self, delta_ns: i64) {
        self.tx_delta.add(delta_ns);
        let d = delta_ns.clamp(0, 1_000_000);
        self.learnt = (self.learnt + 1).min(T3_WINDOW);
        let floor = self.floor_ns.map_or(d, |f| f.min(d));
        self.floor_ns = Some(floor);
        let margin = if self.learnt < T3_WINDOW { T3_WARM_MARGIN_NS } else { T3_MARGIN_NS };
        self.lead_ns = (floor - margin).max(0);
    }
}

/// What a reflecting socket does with each datagram: [`ReplySender::reflect`] hands it every
/// datagram of a batch, then asks it to write the transmit fields of each reply right before that
/// reply is sent.
pub(crate) trait Reflect {
    /// What [`Reflect::transmit`] needs to finish a reply.
    type Reply: Copy;
    /// Handles one received datagram, `pkt` (its buffer, longer than the datagram: a reply may be
    /// built over it), with `out` free for a reply built beside it. Returns the reply's length,
    /// whether it is in `pkt` (true) or `out`, and what `transmit` needs; `None` = no reply.
    fn handle(
        &mut self,
        now: Instant,
        r: &socket::Received,
        pkt: &mut [u8],
        out: &mut [u8],
    ) -> Option<(usize, bool, Self::Reply)>;
    /// Writes the transmit fields (T3 = `t3`) of a reply.
    fn transmit(&mut self, reply: &Self::Reply, buf: &mut [u8], t3: Duration);
}

/// Answers the datagrams of one socket in batches ([`crate::batch`]): one receive call takes what
/// is queued; each reply then leaves on a send call with its T3 read right before it (a run of
/// replies to one sender on one segmented send, which they leave together), so a reply's T3 is
/// never later than its departure and no earlier than a lone reply's would be. With calibration on, T3 is the reading plus the learned
/// delay to the kernel's transmit stamp ([`T3Calibration`]), learned from the replies whose stamp
/// is asked for ([`T3Calibration::wants_stamp`]) with a per-message request, each against its
/// own reading: a reply later in a batch waits for the ones before it, so its delay is longer
/// and never lowers the smallest delay the lead is made of.
pub(crate) struct ReplySender {
    calibration: SharedCalibration,
    errq: Vec<u8>,
    /// The socket's transmit stamps: unknown until the first batch, then whether replies can
    /// ask for them (the socket was set up with them and they are now asked per message).
    tx: Option<bool>,
    /// Whether runs of replies to one sender may leave in one segmented send
    /// ([`batch::Batch::send_segmented`]): until the kernel refuses one.
    segmented: bool,
    /// Segmented sends made.
    pub(crate) segmented_sends: u64,
}

/// Replies left over when the socket buffer was full: sent one by one afterwards.
type Leftover = Vec<(SocketAddr, Vec<u8>)>;

impl ReplySender {
    /// A sender for one socket.
    pub(crate) fn new(calibration: SharedCalibration) -> Self {
        ReplySender { calibration, errq: socket::errqueue_cmsg_buffer(), tx: None, segmented: true, segmented_sends: 0 }
    }

    /// Whether replies on `sock` can ask for transmit stamps: true when the socket was set up
    /// with them ([`socket::enable_timestamps`]), which are then switched off for the socket as a
    /// whole and asked per reply.
    fn stamps_possible(&mut self, sock: &UdpSocket) -> bool {
        *self.tx.get_or_insert_with(|| {
            socket::tx_stamps_on(sock)
                && match socket::set_tx_stamps(sock, false) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(error = %e, "transmit stamps could not be switched to per reply; none taken");
                        false
                    }
                }
        })
    }

    /// Waits until `sock` has datagrams, takes what is queued (up to [`crate::batch::BATCH`],
    /// never waiting for more), hands each to `r` and sends the replies. Returns how
    /// many datagrams were taken; an error when the receive failed.
    pub(crate) async fn reflect<R: Reflect>(&mut self, sock: &UdpSocket, r: &mut R) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let fd = sock.as_raw_fd();
        self.stamps_possible(sock);
        let n = sock.async_io(Interest::READABLE, || batch::with(|b| b.recv(fd))).await?;
        // From here to the send nothing awaits: the thread's batch buffers stay ours.
        let leftover = batch::with(|b| self.answer(fd, b, n, r));
        for (to, buf) in leftover {
            if send_reply(sock, &buf, to).await {
                batch::with(|b| b.count_sent());
            }
        }
        Ok(n)
    }

    fn answer<R: Reflect>(&mut self, fd: std::os::fd::RawFd, b: &mut Batch, n: usize, r: &mut R) -> Leftover {
        let now = Instant::now();
        let mut replies = [BatchReply::in_place(0, 0); batch::BATCH];
        let mut finish: [Option<R::Reply>; batch::BATCH] = [None; batch::BATCH];
        let mut count = 0;
        for i in 0..n {
            let rx = *b.received(i);
            let (pkt, out) = b.datagram(i);
            if let Some((len, in_place, reply)) = r.handle(now, &rx, pkt, out) {
                replies[count] = BatchReply { index: i, len, in_place, stamp: false };
                finish[count] = Some(reply);
                count += 1;
            }
        }
        if count == 0 {
            return Vec::new();
        }
        let stamps = self.tx.unwrap_or(false);
        for reply in &mut replies[..count] {
            reply.stamp = stamps && self.calibration.borrow_mut().wants_stamp(now);
        }
        let lead = Duration::from_nanos(self.calibration.borrow().lead_ns().max(0) as u64);
        // Each send call carries one T3, read right before it. A run of replies to one sender
        // (a burst of its probes) leaves in one segmented send: the stack is crossed once and the
        // replies depart together, so the one reading is honest for each. Other replies leave on
        // a call of their own: in one sendmmsg a reply would leave only after the kernel had
        // delivered the ones before it (on loopback that includes waking their receiver, 10-30 µs
        // on a VM), and its T3 would be early by that much: the RTT p99 at 1 ms grew threefold
        // that way (bench/RESULTS.md, issue 18). A reply whose transmit stamp is asked always
        // leaves alone, so the stamp measures one reply's send.
        let mut t3 = [Duration::ZERO; batch::BATCH];
        let mut leftover = Vec::new();
        let mut j = 0;
        while j < count {
            let run = if self.segmented { batch::segment_run(b, &replies[j..count]) } else { 1 };
            let reading = wall_now();
            for k in j..j + run {
                t3[k] = reading;
                if let Some(reply) = &finish[k] {
                    r.transmit(reply, b.reply_mut(&replies[k]), reading + lead);
                }
            }
            let sent = if run >= 2 {
                match b.send_segmented(fd, &replies[j..j + run]) {
                    Ok(()) => {
                        self.segmented_sends += 1;
                        Ok(run)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
                    Err(e) => {
                        // not on this path (no checksum offload, an MTU below the datagram, a
                        // kernel before 4.18): this socket's replies leave one per call from now
                        tracing::debug!(error = %e, "segmented send refused; replies leave one per call");
                        self.segmented = false;
                        continue;
                    }
                }
            } else {
                b.send(fd, &replies[j..=j]).map(|_| 1)
            };
            match sent {
                Ok(n) => j += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The socket buffer is full: this reply and the rest go out when it drains,
                    // with a T3 read now (earlier than their departure: never a shorter RTT).
                    // Their stamps, if asked, are not learnt from.
                    for k in j..count {
                        if k >= j + run
                            && let Some(reply) = &finish[k]
                        {
                            r.transmit(reply, b.reply_mut(&replies[k]), wall_now() + lead);
                        }
                        leftover.push((b.received(replies[k].index).src, b.reply_mut(&replies[k]).to_vec()));
                    }
                    count = j;
                    break;
                }
                Err(e) => {
                    // this reply failed (an unreachable source, say): the rest still go
                    tracing::debug!(to = %b.received(replies[j].index).src, error = %e, "reply not sent");
                    replies[j].stamp = false;
                    j += 1;
                }
            }
        }
        let asked: Vec<Duration> = (0..count).filter(|&j| replies[j].stamp).map(|j| t3[j]).collect();
        if !asked.is_empty() {
            // The stamps of a batch come back, in sending order, before the send call returns on
            // loopback and TUN. Which number the kernel gives a stamp differs between kernels, so
            // the pairing is by arrival: exactly as many stamps as asked, the k-th for the k-th
            // reply asked. Fewer (late) or more (an earlier late one among them) teach nothing.
            let mut seen = Vec::with_capacity(asked.len());
            socket::drain_tx_stamps(&fd, &mut self.errq, |t| seen.push(t.wall));
            if seen.len() == asked.len() {
                let mut c = self.calibration.borrow_mut();
                for (wall, t3) in seen.iter().zip(&asked) {
                    c.record(wall.as_nanos() as i64 - t3.as_nanos() as i64);
                }
            }
        }
        leftover
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
        assert_eq!(c.lead_ns(), 4_000, "min 5 µs less the warm-up margin");
        // a loaded spell: every recent send is slow; the lead stays what the fastest one allows,
        // so the next fast send does not leave before its T3; with the window full, the margin
        // narrows
        for _ in 0..T3_WINDOW {
            c.record(25_000);
        }
        assert_eq!(c.lead_ns(), 4_750, "min 5 µs less the margin");
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

    #[test]
    fn sampling_takes_one_reply_in_16_at_most_once_per_gap() {
        let c = T3Calibration::shared(true);
        let mut c = c.borrow_mut();
        let t0 = Instant::now();
        for i in 0..T3_WINDOW {
            assert!(c.wants_stamp(t0), "reply {i} of the window");
            c.record(3_000);
        }
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // replies 65..: the 16th of them (reply 80) is due, 15 ms after the window's last
        let wanted = (65..=128).filter(|_| c.wants_stamp(at(15))).count();
        assert_eq!(wanted, 1, "80 is due; 96, 112 and 128 come within 10 ms of it");
        // 20 ms on: the next 16th (144) is due again, and one only
        let wanted = (129..=160).filter(|_| c.wants_stamp(at(25))).count();
        assert_eq!(wanted, 1);
        // a clock read earlier than the last sample (another socket's batch) does not panic
        assert!(!c.wants_stamp(at(1)));
    }

    /// Echoes each datagram in place with T3 (ns since the epoch) in its first 8 bytes.
    struct Echo;

    impl Reflect for Echo {
        type Reply = ();
        fn handle(
            &mut self,
            _: Instant,
            r: &socket::Received,
            _: &mut [u8],
            _: &mut [u8],
        ) -> Option<(usize, bool, ())> {
            Some((r.len, true, ()))
        }
        fn transmit(&mut self, _: &(), buf: &mut [u8], t3: Duration) {
            buf[..8].copy_from_slice(&(t3.as_nanos() as u64).to_be_bytes());
        }
    }

    /// On loopback a stamp comes back before the send returns: the counts are exact.
    #[test]
    fn batches_take_what_is_queued_and_stamp_the_sample_with_an_honest_t3() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = socket::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
            assert_eq!(socket::enable_timestamps(&s, true), socket::RxStampMode::Timestamping);
            let sock = UdpSocket::from_std(s.into()).unwrap();
            let at = sock.local_addr().unwrap();
            let peer = socket::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
            socket::enable_rx_timestamps(&peer);
            let peer: std::net::UdpSocket = peer.into();
            // the kernel turns stamping on through a deferred static key: on a host where nothing
            // stamped yet, the first datagrams arrive unstamped; wait until the peer's are
            let (mut buf, mut cmsg) = ([0u8; 64], socket::cmsg_buffer());
            for attempt in 0..200 {
                std::thread::sleep(Duration::from_millis(1));
                peer.send_to(b"warm", peer.local_addr().unwrap()).unwrap();
                let r = loop {
                    match socket::recv_stamped(&peer, &mut buf, &mut cmsg) {
                        Ok(r) => break r,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                        Err(e) => panic!("{e}"),
                    }
                };
                if r.rx.kernel {
                    break;
                }
                assert!(attempt < 199, "no kernel receive stamps");
            }
            let c = T3Calibration::shared(true);
            let mut sender = ReplySender::new(c.clone());
            // a lone datagram is answered by itself: nothing waits for a batch to fill
            peer.send_to(&[0u8; 8], at).unwrap();
            assert_eq!(sender.reflect(&sock, &mut Echo).await.unwrap(), 1);
            // then 144 more, queued 8 at a time before each call: one call takes all 8
            let n = T3_WINDOW as u32 + 5 * T3_SAMPLE_EVERY + 1;
            for b in 0..(n - 1) / 8 {
                if b as usize >= T3_WINDOW / 8 {
                    // sampled replies are at least T3_SAMPLE_GAP apart
                    std::thread::sleep(T3_SAMPLE_GAP + Duration::from_millis(1));
                }
                for _ in 0..8 {
                    peer.send_to(&[0u8; 8], at).unwrap();
                }
                assert_eq!(sender.reflect(&sock, &mut Echo).await.unwrap(), 8);
            }
            // every reply until the window is full: the stamps of a batch are learnt after it is
            // sent, so the batch that fills the window is stamped whole (replies 1 to 65); then
            // every 16th of the rest: 80, 96, 112, 128, 144
            let sampled = (T3_WINDOW as u32 + 2..=n).filter(|i| i % T3_SAMPLE_EVERY == 0).count() as u64;
            assert_eq!(sampled, 5);
            assert_eq!(c.borrow().tx_delta.count, T3_WINDOW as u64 + 1 + sampled);
            assert!(!socket::tx_stamps_on(&sock), "asked per reply, never for the socket");
            // After the window, the replies of a batch that ask no stamp leave in one segmented
            // send: the 5 unsampled batches whole, and in the 5 sampled ones (the 16th reply at
            // place 7 of 8) the 6 before it. The 7th and 8th leave alone.
            assert_eq!(sender.segmented_sends, 10);
            // a reply's calibrated T3 is before it reached the peer (its kernel RX stamp), and
            // T3 grows within a batch: read right before each send call, one reading for the
            // replies of one segmented send
            let mut last = Duration::ZERO;
            let mut readings = std::collections::BTreeSet::new();
            for i in 0..n {
                let r = loop {
                    match socket::recv_stamped(&peer, &mut buf, &mut cmsg) {
                        Ok(r) => break r,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                        Err(e) => panic!("{e}"),
                    }
                };
                let t3 = Duration::from_nanos(u64::from_be_bytes(buf[..8].try_into().unwrap()));
                assert!(r.rx.kernel);
                // (the lead applies from 16 stamps on, but over so few, on a cold debug build, a
                // later send can still beat the smallest by more than the margin: checked once
                // the window is full)
                if i > T3_WINDOW as u32 {
                    assert!(t3 <= r.rx.wall, "reply {i}: T3 {t3:?} after its arrival {:?}", r.rx.wall);
                }
                if i % 8 != 1 && i > 1 {
                    assert!(t3 >= last, "reply {i}");
                }
                last = t3;
                if i >= 65 {
                    readings.insert(t3);
                }
            }
            // replies 66 to 145: 5 sends of 8, 5 × (6, then 1 stamped, then 1)
            assert_eq!(readings.len(), 5 + 5 * 3);
            // a socket without transmit stamps is never switched to them
            let plain = socket::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
            socket::enable_timestamps(&plain, false);
            let plain = UdpSocket::from_std(plain.into()).unwrap();
            let c2 = T3Calibration::shared(true);
            let mut sender = ReplySender::new(c2.clone());
            for _ in 0..3 {
                peer.send_to(&[0u8; 8], plain.local_addr().unwrap()).unwrap();
            }
            let mut got = 0;
            while got < 3 {
                got += sender.reflect(&plain, &mut Echo).await.unwrap();
            }
            assert_eq!(c2.borrow().tx_delta.count, 0);
            assert_eq!(c2.borrow().lead_ns(), 0);
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
