//! Batched datagram receive and send (`recvmmsg`/`sendmmsg`) for the reflecting sockets: the IP
//! SLA measurement ports, the STAMP and TWAMP-Light reflectors and the TWAMP test sessions.
//!
//! - [`Batch::recv`] takes what is already queued on a socket, up to [`BATCH`] datagrams, in one
//!   call, and never waits to fill a batch: a lone probe is taken as soon as it is there. Each
//!   datagram keeps its own kernel receive stamp, TTL and ToS from its own control messages.
//! - [`Batch::send`] sends replies, each to the source of the datagram it answers, and asks a
//!   kernel transmit stamp for the chosen replies only (a per-message `SO_TIMESTAMPING` control
//!   message, Linux ≥ 4.13), so that the socket's other replies cost no stamp and no error-queue
//!   read. The responder sends one reply per call, its T3 read right before it: in one
//!   `sendmmsg` a reply leaves only after the kernel has delivered the ones before it.
//! - [`Batch::send_segmented`] sends a run of replies to one sender ([`segment_run`]) as one UDP
//!   segmentation-offload datagram (`UDP_SEGMENT`): the stack is crossed once for the run, the
//!   replies leave together and arrive as the datagrams they were.
//!
//! Written on `libc` rather than nix's `recvmmsg`: nix does not reset a header's control and name
//! lengths, which the kernel shortens to what the last datagram used, so a reused header set
//! silently truncates later timestamps; nor can nix give each message of a `sendmmsg` its own
//! control message.
//!
//! One [`Batch`] per thread ([`with`]): its buffers (2 × 32 × 64 KiB, touched only as far as
//! datagrams reach) are shared by every socket task of the thread, which hold it only between an
//! await and the next, so an open session costs its socket and no buffers of its own (10 000
//! sessions asked for by spoofed control messages would otherwise be 640 MiB or more once a large
//! datagram had reached each).
//!
//! ```no_run
//! # use std::os::fd::AsRawFd;
//! let sock = std::net::UdpSocket::bind("127.0.0.1:7")?;
//! sock.set_nonblocking(true)?;
//! ipsla_net::batch::with(|b| -> std::io::Result<()> {
//!     let n = b.recv(sock.as_raw_fd())?; // WouldBlock when nothing is queued
//!     let echo: Vec<_> = (0..n).map(|i| ipsla_net::batch::Reply::in_place(i, b.received(i).len)).collect();
//!     b.send(sock.as_raw_fd(), &echo)?;
//!     Ok(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::clock::wall_now;
use crate::socket::Received;
use ipsla_core::io::RxTime;
use std::cell::RefCell;
use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::Duration;

/// Most datagrams taken by one receive call or sent by one send call.
pub const BATCH: usize = 32;
/// Room for one datagram: the largest UDP payload.
const SLOT: usize = 65_536;
/// Control-message room per received datagram, in 8-byte words (`cmsghdr` alignment): the
/// timestamping triple (64 bytes), a TTL and a ToS (24 each) fit in 256 bytes.
const RX_CMSG_WORDS: usize = 32;
/// Room for one `SO_TIMESTAMPING` control message on send: `CMSG_SPACE(4)` = 24 bytes.
const TX_CMSG_WORDS: usize = 4;

/// One reply to send: which received datagram it answers (it goes to that datagram's source),
/// where its bytes are and whether its kernel transmit stamp is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Index of the datagram answered, as [`Batch::received`] numbers them.
    pub index: usize,
    /// Bytes to send.
    pub len: usize,
    /// The reply was built in the datagram's own buffer ([`Batch::datagram`]'s first slice),
    /// not in its reply buffer (the second).
    pub in_place: bool,
    /// Ask the kernel for this reply's transmit stamp (on the socket's error queue).
    pub stamp: bool,
}

impl Reply {
    /// A reply built over the received datagram, without a transmit stamp.
    pub fn in_place(index: usize, len: usize) -> Self {
        Reply { index, len, in_place: true, stamp: false }
    }
}

/// Buffers and headers for one batch; see the module documentation.
pub struct Batch {
    rx: Box<[u8]>,
    tx: Box<[u8]>,
    hdrs: Box<[libc::mmsghdr; BATCH]>,
    iov: Box<[libc::iovec; BATCH]>,
    names: Box<[libc::sockaddr_storage; BATCH]>,
    name_lens: [libc::socklen_t; BATCH],
    rx_cmsg: Box<[[u64; RX_CMSG_WORDS]; BATCH]>,
    tx_cmsg: Box<[[u64; TX_CMSG_WORDS]; BATCH]>,
    received: Vec<Received>,
    /// Replies sent (a worker's count for the status).
    sent: u64,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("received", &self.received).finish_non_exhaustive()
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static THREAD_BATCH: RefCell<Option<Box<Batch>>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's [`Batch`] (made on first use). Calls must not nest, and what must
/// outlive the call is copied out: every reflecting socket of the thread uses the same one.
pub fn with<R>(f: impl FnOnce(&mut Batch) -> R) -> R {
    THREAD_BATCH.with(|b| f(b.borrow_mut().get_or_insert_with(|| Box::new(Batch::new()))))
}

impl Batch {
    /// Buffers for [`BATCH`] datagrams (zeroed lazily by the allocator: untouched pages cost no
    /// memory).
    pub fn new() -> Self {
        // SAFETY: mmsghdr, iovec and sockaddr_storage are plain C structs for which all-zero
        // bytes are a valid value (null pointers, zero lengths); every pointer is set before use.
        let (hdrs, iov, names) = unsafe {
            (
                Box::new(std::mem::zeroed::<[libc::mmsghdr; BATCH]>()),
                Box::new(std::mem::zeroed::<[libc::iovec; BATCH]>()),
                Box::new(std::mem::zeroed::<[libc::sockaddr_storage; BATCH]>()),
            )
        };
        Batch {
            rx: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            tx: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            hdrs,
            iov,
            names,
            name_lens: [0; BATCH],
            rx_cmsg: Box::new([[0; RX_CMSG_WORDS]; BATCH]),
            tx_cmsg: Box::new([[0; TX_CMSG_WORDS]; BATCH]),
            received: Vec::with_capacity(BATCH),
            sent: 0,
        }
    }

    /// Replies this thread has sent through its batch (and [`Batch::count_sent`]), since it
    /// started: a worker's share of the responder's replies.
    pub fn replies_sent(&self) -> u64 {
        self.sent
    }

    /// Counts a reply sent another way (a leftover sent on its own when the socket buffer was
    /// full).
    pub fn count_sent(&mut self) {
        self.sent += 1;
    }

    /// Takes the datagrams already queued on the non-blocking socket `fd`, up to [`BATCH`], in
    /// one `recvmmsg`; returns how many (`WouldBlock` when none). A datagram's receive time is its
    /// kernel stamp when the socket delivers one, else the wall clock read after the call.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received.clear();
        for i in 0..BATCH {
            self.iov[i] = libc::iovec { iov_base: self.rx[i * SLOT..].as_mut_ptr().cast(), iov_len: SLOT };
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            // the kernel shortens these to what it used: reset for every call
            h.msg_hdr.msg_control = self.rx_cmsg[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = size_of::<[u64; RX_CMSG_WORDS]>() as _;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: each header points at this batch's own name, iovec and control buffers, sized
        // as the header says; they outlive the call, and nothing else uses them meanwhile.
        // MSG_DONTWAIT: return what is queued, never wait for more.
        let n = unsafe {
            libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let user = wall_now();
        for i in 0..n as usize {
            let h = &self.hdrs[i];
            self.name_lens[i] = h.msg_hdr.msg_namelen;
            let (kernel, ttl, tos) = read_cmsgs(&h.msg_hdr);
            let rx = match kernel {
                Some(wall) => RxTime { wall, kernel: true },
                None => RxTime { wall: user, kernel: false },
            };
            let src = sockaddr(&self.names[i], h.msg_hdr.msg_namelen)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without a source address"))?;
            self.received.push(Received { len: h.msg_len as usize, src, rx, user, ttl, tos });
        }
        Ok(self.received.len())
    }

    /// What the last [`Batch::recv`] took, in arrival order.
    pub fn received(&self, i: usize) -> &Received {
        &self.received[i]
    }

    /// Datagram `i` (its whole buffer: a reply may be built over it and be longer) and the free
    /// buffer beside it for a reply built out of place.
    pub fn datagram(&mut self, i: usize) -> (&mut [u8], &mut [u8]) {
        (&mut self.rx[i * SLOT..(i + 1) * SLOT], &mut self.tx[i * SLOT..(i + 1) * SLOT])
    }

    /// The bytes of a reply.
    pub fn reply_mut(&mut self, r: &Reply) -> &mut [u8] {
        let buf = if r.in_place { &mut self.rx } else { &mut self.tx };
        &mut buf[r.index * SLOT..r.index * SLOT + r.len.min(SLOT)]
    }

    /// Sends `replies` (at most [`BATCH`]) in one `sendmmsg` on the non-blocking socket `fd`,
    /// each to the source of the datagram it answers. Returns how many the kernel took, from the
    /// first: fewer than asked when the socket buffer filled or a reply failed (the caller sends
    /// the rest another way, or skips the failed one); `WouldBlock` when it took none.
    pub fn send(&mut self, fd: RawFd, replies: &[Reply]) -> io::Result<usize> {
        let count = replies.len().min(BATCH);
        for (j, r) in replies[..count].iter().enumerate() {
            let buf = if r.in_place { &mut self.rx } else { &mut self.tx };
            self.iov[j] = libc::iovec { iov_base: buf[r.index * SLOT..].as_mut_ptr().cast(), iov_len: r.len.min(SLOT) };
            let h = &mut self.hdrs[j];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.names[r.index] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = self.name_lens[r.index];
            h.msg_hdr.msg_iov = &mut self.iov[j];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_flags = 0;
            if r.stamp {
                h.msg_hdr.msg_control = self.tx_cmsg[j].as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE and CMSG_LEN compute sizes only.
                h.msg_hdr.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u32>() as u32) } as _;
                // SAFETY: the header's control buffer is tx_cmsg[j] (32 bytes, 8-byte aligned),
                // at least CMSG_SPACE(4) = 24 bytes, so the first header and its data fit.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    (*c).cmsg_level = libc::SOL_SOCKET;
                    (*c).cmsg_type = libc::SO_TIMESTAMPING;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u32>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u32>(), libc::SOF_TIMESTAMPING_TX_SOFTWARE);
                }
            } else {
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
            }
        }
        if count == 0 {
            return Ok(0);
        }
        if count == 1 {
            // one reply: sendmsg, which spares the kernel sendmmsg's per-call setup (about 2 % of
            // a reply under 32 interleaved senders, bench/RESULTS.md, issue 18)
            // SAFETY: the first header points at this batch's name, iovec (into its own buffer,
            // within bounds) and control buffer, all alive for the call.
            if unsafe { libc::sendmsg(fd, &self.hdrs[0].msg_hdr, libc::MSG_DONTWAIT) } < 0 {
                return Err(io::Error::last_os_error());
            }
            self.sent += 1;
            return Ok(1);
        }
        // SAFETY: the first `count` headers point at this batch's names, iovecs (into its own
        // buffers, within bounds) and control buffers, all alive for the call.
        let n = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), count as libc::c_uint, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.sent += n as u64;
        Ok(n as usize)
    }
}

/// Most bytes one segmented send may carry: a UDP datagram's payload limit over IPv4 (65,535 less
/// the 20-byte IP and 8-byte UDP headers).
const SEGMENTED_MAX_BYTES: usize = 65_507;

/// How many of `replies`, from the first, [`Batch::send_segmented`] can take in one call: all to
/// the source of the first's datagram, all as long as the first, none asking for a transmit stamp
/// and together within one UDP datagram's payload. 1 when the first must go alone.
pub fn segment_run(b: &Batch, replies: &[Reply]) -> usize {
    let Some(first) = replies.first() else { return 0 };
    let to = b.received[first.index].src;
    let fits = SEGMENTED_MAX_BYTES / first.len.max(1);
    1 + replies[1..]
        .iter()
        .take(fits.saturating_sub(1))
        .take_while(|r| !first.stamp && !r.stamp && r.len == first.len && b.received[r.index].src == to)
        .count()
}

impl Batch {
    /// Sends `replies` (a [`segment_run`] of at least two) as one UDP segmentation-offload datagram (`UDP_SEGMENT`,
    /// Linux ≥ 4.18): the stack is crossed once for all of them, and the kernel, the device or the
    /// receiving host cuts them into datagrams of the first's length, each leaving with the bytes
    /// written into it. No transmit stamp is asked. An error (`EIO` when the device cannot
    /// checksum it, `EINVAL` when a segment would exceed the path MTU, `ENOPROTOOPT` before 4.18)
    /// means nothing was sent.
    pub fn send_segmented(&mut self, fd: RawFd, replies: &[Reply]) -> io::Result<()> {
        let count = replies.len().min(BATCH);
        let first = replies[0];
        for (j, r) in replies[..count].iter().enumerate() {
            let buf = if r.in_place { &mut self.rx } else { &mut self.tx };
            self.iov[j] = libc::iovec { iov_base: buf[r.index * SLOT..].as_mut_ptr().cast(), iov_len: r.len.min(SLOT) };
        }
        let h = &mut self.hdrs[0].msg_hdr;
        h.msg_name = (&mut self.names[first.index] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = self.name_lens[first.index];
        h.msg_iov = self.iov.as_mut_ptr();
        h.msg_iovlen = count as _;
        h.msg_flags = 0;
        h.msg_control = self.tx_cmsg[0].as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE and CMSG_LEN compute sizes only.
        h.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
        // SAFETY: the control buffer is tx_cmsg[0] (32 bytes, 8-byte aligned), at least
        // CMSG_SPACE(2) = 16 bytes, so the first header and its data fit.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(h);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), first.len.min(SLOT) as u16);
        }
        // SAFETY: the header points at this batch's name of the first datagram, `count` iovecs
        // into its own buffers (within bounds) and its control buffer, all alive for the call.
        let n = unsafe { libc::sendmsg(fd, &self.hdrs[0].msg_hdr, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // every reply of the run left (the kernel takes a segmented datagram whole or not at all)
        self.sent += count as u64;
        Ok(())
    }
}

/// The kernel receive stamp (software, from `SCM_TIMESTAMPING` or `SCM_TIMESTAMPNS`), TTL / Hop
/// Limit and ToS / Traffic Class of one received message.
fn read_cmsgs(h: &libc::msghdr) -> (Option<Duration>, Option<u8>, Option<u8>) {
    let (mut stamp, mut ttl, mut tos) = (None, None, None);
    let time = |ts: libc::timespec| (ts.tv_sec > 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
    // SAFETY: `h` is a header the kernel has just filled: CMSG_FIRSTHDR/CMSG_NXTHDR stay within
    // msg_controllen, and each data read is bounds-checked against cmsg_len and unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
            let data = libc::CMSG_DATA(c);
            let int =
                || (len >= size_of::<libc::c_int>()).then(|| std::ptr::read_unaligned(data.cast::<libc::c_int>()));
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_SOCKET, libc::SO_TIMESTAMPING) if len >= size_of::<libc::timespec>() => {
                    stamp = stamp.or(time(std::ptr::read_unaligned(data.cast::<libc::timespec>())));
                }
                (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS) if len >= size_of::<libc::timespec>() => {
                    stamp = stamp.or(time(std::ptr::read_unaligned(data.cast::<libc::timespec>())));
                }
                (libc::IPPROTO_IP, libc::IP_TTL) => ttl = int().and_then(|v| u8::try_from(v).ok()),
                (libc::IPPROTO_IP, libc::IP_TOS) if len >= 1 => tos = Some(*data),
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => ttl = int().and_then(|v| u8::try_from(v).ok()),
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => tos = int().and_then(|v| u8::try_from(v).ok()),
                _ => {}
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    (stamp, ttl, tos)
}

/// The socket address the kernel wrote into `s` (`len` bytes), IPv4 or IPv6.
fn sockaddr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(s.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket;
    use std::os::fd::AsRawFd;

    fn bound(v6: bool) -> socket2::Socket {
        let addr: SocketAddr = if v6 { "[::1]:0".parse().unwrap() } else { "127.0.0.1:0".parse().unwrap() };
        socket::bind_udp(addr).unwrap()
    }

    /// Three datagrams from two senders queued before one call: one call takes all three, each
    /// with its own bytes, source, kernel stamp (in arrival order, before the call) and TTL; the
    /// echo goes back to each source; a call with nothing queued says WouldBlock at once.
    fn batch_round_trip(v6: bool) {
        let s = bound(v6);
        assert_eq!(socket::enable_timestamps(&s, false), socket::RxStampMode::Timestamping);
        assert!(socket::enable_ttl_tos(&s, v6));
        let to = s.local_addr().unwrap().as_socket().unwrap();
        let any = if v6 { "[::1]:0" } else { "127.0.0.1:0" };
        let (a, b) = (std::net::UdpSocket::bind(any).unwrap(), std::net::UdpSocket::bind(any).unwrap());
        let mut b_ = Batch::new();
        assert_eq!(b_.recv(s.as_raw_fd()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        // the kernel turns stamping on through a deferred static key: the first datagrams on a
        // host where nothing stamped yet may come unstamped; a few rounds make it certain
        for round in 0..50 {
            let before = wall_now();
            a.send_to(b"one", to).unwrap();
            b.send_to(b"two!", to).unwrap();
            a.send_to(&[7u8; 3000], to).unwrap();
            let n = b_.recv(s.as_raw_fd()).unwrap();
            let after = wall_now();
            assert_eq!(n, 3, "everything queued comes in one call");
            let got: Vec<_> = (0..n).map(|i| *b_.received(i)).collect();
            assert_eq!(
                got.iter().map(|r| (r.len, r.src)).collect::<Vec<_>>(),
                vec![(3, a.local_addr().unwrap()), (4, b.local_addr().unwrap()), (3000, a.local_addr().unwrap())]
            );
            assert_eq!(&b_.datagram(0).0[..3], b"one");
            assert_eq!(&b_.datagram(1).0[..4], b"two!");
            assert_eq!(&b_.datagram(2).0[..3000], &[7u8; 3000][..]);
            assert!(got.iter().all(|r| r.ttl == Some(64)), "{got:?}");
            let echo: Vec<_> = (0..n).map(|i| Reply::in_place(i, got[i].len)).collect();
            assert_eq!(b_.send(s.as_raw_fd(), &echo).unwrap(), 3);
            let mut buf = [0u8; 4096];
            assert_eq!(a.recv_from(&mut buf).unwrap(), (3, to));
            assert_eq!(&buf[..3], b"one");
            assert_eq!(b.recv_from(&mut buf).unwrap(), (4, to));
            assert_eq!(a.recv_from(&mut buf).unwrap(), (3000, to));
            if got.iter().all(|r| r.rx.kernel) {
                let t: Vec<_> = got.iter().map(|r| r.rx.wall).collect();
                assert!(before <= t[0] && t[0] <= t[1] && t[1] <= t[2] && t[2] <= after, "{t:?}");
                assert!(got.iter().all(|r| r.user >= t[2]));
                return;
            }
            assert!(round < 49, "no kernel stamps after 50 rounds");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn one_call_takes_what_is_queued_each_with_its_own_stamp_v4() {
        batch_round_trip(false);
    }

    #[test]
    fn one_call_takes_what_is_queued_each_with_its_own_stamp_v6() {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("skipped: no IPv6 loopback");
            return;
        }
        batch_round_trip(true);
    }

    /// The per-message stamp request: of five replies sent in one call, exactly the two asked
    /// for get a transmit stamp, and the socket's own setting stays off.
    #[test]
    fn only_the_replies_asked_for_are_stamped() {
        let s = bound(false);
        socket::enable_timestamps(&s, true);
        socket::set_tx_stamps(&s, false).unwrap();
        let to = s.local_addr().unwrap().as_socket().unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            peer.send_to(&[i], to).unwrap();
        }
        let mut b = Batch::new();
        // the five may need more than one call when the peer's sends race the receive
        let mut n = 0;
        while n < 5 {
            n += b.recv(s.as_raw_fd()).unwrap_or(0);
        }
        assert_eq!(n, 5);
        let before = wall_now();
        let replies: Vec<_> = (0..5).map(|i| Reply { stamp: i == 1 || i == 3, ..Reply::in_place(i, 1) }).collect();
        assert_eq!(b.send(s.as_raw_fd(), &replies).unwrap(), 5);
        let after = wall_now();
        let mut cmsg = socket::errqueue_cmsg_buffer();
        let mut stamps = Vec::new();
        socket::drain_tx_stamps(&s, &mut cmsg, |t| stamps.push(t));
        assert_eq!(stamps.len(), 2, "{stamps:?}");
        assert!(stamps.iter().all(|t| before <= t.wall && t.wall <= after));
        assert!(!socket::tx_stamps_on(&s));
        let mut buf = [0u8; 8];
        let got: Vec<u8> = (0..5).map(|_| peer.recv(&mut buf).map(|_| buf[0]).unwrap()).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    /// A run of one sender's replies leaves in one segmented send and arrives as the datagrams
    /// it was made of, each with its own bytes; the run stops at another sender, another length
    /// and a reply that asks for a stamp.
    fn segmented_round_trip(v6: bool) {
        let s = bound(v6);
        let to = s.local_addr().unwrap().as_socket().unwrap();
        let any = if v6 { "[::1]:0" } else { "127.0.0.1:0" };
        let (a, b) = (std::net::UdpSocket::bind(any).unwrap(), std::net::UdpSocket::bind(any).unwrap());
        for i in 0..4u8 {
            a.send_to(&[i; 100], to).unwrap();
        }
        b.send_to(&[9; 100], to).unwrap();
        a.send_to(&[5; 100], to).unwrap();
        a.send_to(&[6; 50], to).unwrap();
        let mut bt = Batch::new();
        assert_eq!(bt.recv(s.as_raw_fd()).unwrap(), 7, "everything queued comes in one call");
        let mut replies: Vec<_> = (0..7).map(|i| Reply::in_place(i, bt.received(i).len)).collect();
        assert_eq!(segment_run(&bt, &replies), 4, "a's four, up to b's");
        assert_eq!(segment_run(&bt, &replies[4..]), 1, "b's one, then a's again");
        assert_eq!(segment_run(&bt, &replies[5..]), 1, "a's 100 bytes, then 50");
        assert_eq!(segment_run(&bt, &replies[7..]), 0);
        replies[2].stamp = true;
        assert_eq!(segment_run(&bt, &replies), 2, "up to the reply that asks for a stamp");
        assert_eq!(segment_run(&bt, &replies[2..]), 1, "which leaves alone");
        replies[2].stamp = false;
        for (i, r) in replies[..4].iter().enumerate() {
            bt.reply_mut(r)[0] = 0xa0 + i as u8;
        }
        bt.send_segmented(s.as_raw_fd(), &replies[..4]).unwrap();
        assert_eq!(bt.replies_sent(), 4, "a worker's reply count takes each reply of the run");
        bt.send(s.as_raw_fd(), &replies[4..5]).unwrap();
        assert_eq!(bt.replies_sent(), 5);
        let mut buf = [0u8; 4096];
        for i in 0..4u8 {
            let (n, from) = a.recv_from(&mut buf).unwrap();
            assert_eq!((n, from), (100, to), "datagram {i}");
            assert_eq!(buf[0], 0xa0 + i);
            assert_eq!(&buf[1..100], &[i; 99][..]);
        }
        a.set_nonblocking(true).unwrap();
        assert_eq!(a.recv_from(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock, "four, no more");
    }

    #[test]
    fn one_senders_run_leaves_in_one_segmented_send_v4() {
        segmented_round_trip(false);
    }

    #[test]
    fn one_senders_run_leaves_in_one_segmented_send_v6() {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("skipped: no IPv6 loopback");
            return;
        }
        segmented_round_trip(true);
    }
}
