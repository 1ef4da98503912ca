//! The path machine on a fake timeline: a scripted network of routers answers discovery and
//! echoes with exact delays and losses.

use super::*;
use ipsla_wire::icmp::Quote;

const MS: Duration = Duration::from_millis(1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cfg(target: &str, ident: Ident, echoes: u32) -> PathConfig {
    PathConfig {
        target: ip(target),
        max_hops: 30,
        echoes,
        interval: 20 * MS,
        target_only: false,
        ident,
        size: 28,
        pattern: vec![0xab, 0xcd],
        timeout: 1000 * MS,
        threshold: 5000 * MS,
        check_ident: true,
        local_port: Some(40000),
    }
}

fn err(kind: ErrorKind, target: &str, port: u16) -> IcmpErrorRepr {
    IcmpErrorRepr {
        kind,
        quote: Quote {
            src: ip("10.0.1.1"),
            dst: ip(target),
            protocol: icmp::PROTO_UDP,
            src_port: 40000,
            dst_port: port,
        },
    }
}

/// A network: `hops` routers then the target; each hop's echo RTT in ms; echoes to drop, as
/// (hop index from 0, sequence); silent hops answer nothing.
struct Net {
    hops: Vec<&'static str>,
    target: &'static str,
    rtt_ms: Vec<u32>,
    drop: Vec<(usize, u16)>,
    silent: Vec<usize>,
}

/// A packet on its way back, handed to the operation when it arrives.
type Delivery = Box<dyn Fn(&mut PathOp, Instant)>;

/// Runs `op` against `net` on a fake clock; returns the report, the echoes sent as (to, ident,
/// seq) and when the run ended.
fn run(op: &mut PathOp, net: &Net, t0: Instant) -> (PathReport, Vec<(IpAddr, u16, u16)>, Instant) {
    let mut now = t0;
    let wall0 = Duration::from_secs(1_700_000_000);
    let mut inbox: Vec<(Instant, Delivery)> = Vec::new();
    let mut echoes = Vec::new();
    let mut buf = vec![0u8; 2048];
    let all: Vec<&'static str> = net.hops.iter().copied().chain([net.target]).collect();
    for _ in 0..10_000 {
        let wall = wall0 + (now - t0);
        while let Some(t) = op.poll_transmit(now, wall, &mut buf) {
            match t {
                PathTransmit::Udp { ttl, port, len } => {
                    assert_eq!(port, BASE_PORT + u16::from(ttl) - 1);
                    assert_eq!(len, 28);
                    let i = usize::from(ttl) - 1;
                    if i < all.len() && !net.silent.contains(&i) {
                        let kind = if i == all.len() - 1 {
                            ErrorKind::Unreachable { code: icmp::PORT_UNREACHABLE_V4 }
                        } else {
                            ErrorKind::TimeExceeded
                        };
                        let (from, e) = (ip(all[i]), err(kind, net.target, port));
                        inbox.push((now + MS, Box::new(move |op: &mut PathOp, at| op.handle_icmp_error(at, from, &e))));
                    }
                }
                PathTransmit::Echo { to, len } => {
                    let p = Icmp::new_checked(&buf[..len]).unwrap();
                    assert!(p.checksum_ok());
                    assert_eq!(p.payload().len(), STAMP_LEN + 28);
                    assert_eq!(&p.payload()[STAMP_LEN..STAMP_LEN + 4], &[0xab, 0xcd, 0xab, 0xcd]);
                    echoes.push((to, p.ident(), p.sequence()));
                    let i = all.iter().position(|a| ip(a) == to).unwrap();
                    if net.drop.contains(&(i, p.sequence())) {
                        continue;
                    }
                    let mut reply = buf[..len].to_vec();
                    reply[0] = icmp::ECHO_REPLY_V4;
                    let back = now + net.rtt_ms[i] * MS;
                    let rx = RxTime { wall: wall0 + (back - t0), kernel: true };
                    inbox.push((back, Box::new(move |op: &mut PathOp, at| op.handle_echo_reply(at, to, rx, &reply))));
                }
            }
        }
        if op.is_done() {
            return (op.report(), echoes, now);
        }
        inbox.sort_by_key(|(t, _)| *t);
        let next_in = inbox.first().map(|(t, _)| *t);
        let next = [next_in, op.poll_timeout()].into_iter().flatten().min().expect("something is due");
        now = next;
        while inbox.first().is_some_and(|(t, _)| *t <= now) {
            let (_, f) = inbox.remove(0);
            f(op, now);
        }
        if op.poll_timeout().is_some_and(|d| d <= now) {
            op.handle_timeout(now);
        }
    }
    panic!("the run did not end");
}

#[test]
fn path_echo_finds_three_routers_and_times_each() {
    let t0 = Instant::now();
    let net = Net {
        hops: vec!["10.0.12.2", "10.0.23.3", "10.0.34.4"],
        target: "10.0.4.2",
        rtt_ms: vec![2, 4, 6, 8],
        drop: vec![],
        silent: vec![],
    };
    let mut op = PathOp::new(t0, cfg("10.0.4.2", Ident::Fixed(PATH_ECHO_IDENT), 1));
    let (r, echoes, end) = run(&mut op, &net, t0);
    assert_eq!(
        r.path(),
        vec![Some(ip("10.0.12.2")), Some(ip("10.0.23.3")), Some(ip("10.0.34.4")), Some(ip("10.0.4.2"))]
    );
    assert!(r.reached);
    assert_eq!(r.unreachable, None);
    // IOS path-echo: identifier 13, sequence 0, one echo per hop
    assert_eq!(echoes.iter().map(|e| (e.1, e.2)).collect::<Vec<_>>(), vec![(13, 0); 4]);
    let rtts: Vec<Vec<i64>> = r.hops.iter().map(|h| h.received()).collect();
    assert_eq!(rtts, vec![vec![2_000_000], vec![4_000_000], vec![6_000_000], vec![8_000_000]]);
    assert_eq!(r.result.return_code, ReturnCode::Ok);
    assert_eq!((r.result.stats.sent, r.result.stats.received, r.result.stats.rtt.min), (1, 1, 8_000_000));
    assert_eq!(r.unmatched, 0);
    // discovery answered in 1 ms, the slowest echo in 8: no timeout was waited for
    assert_eq!(end - t0, 9 * MS);
}

#[test]
fn discovery_keeps_at_most_a_window_in_flight() {
    let t0 = Instant::now();
    let mut op = PathOp::new(t0, cfg("10.0.4.2", Ident::Fixed(13), 1));
    let mut buf = [0u8; 256];
    let mut n = 0;
    while let Some(PathTransmit::Udp { .. }) = op.poll_transmit(t0, Duration::ZERO, &mut buf) {
        n += 1;
    }
    assert_eq!(n, DISCOVERY_WINDOW);
    // the target answers TTL 1: nothing more is sent, discovery ends once TTL 1 is answered
    op.handle_icmp_error(t0, ip("10.0.4.2"), &err(ErrorKind::Unreachable { code: 3 }, "10.0.4.2", BASE_PORT));
    assert!(matches!(op.poll_transmit(t0, Duration::ZERO, &mut buf), Some(PathTransmit::Echo { .. })));
    assert_eq!(op.report().path(), vec![Some(ip("10.0.4.2"))]);
}

#[test]
fn path_jitter_counts_loss_and_ipdv_per_hop() {
    let t0 = Instant::now();
    let net = Net {
        hops: vec!["10.0.12.2", "10.0.23.3"],
        target: "10.0.3.2",
        rtt_ms: vec![2, 5, 7],
        // the second hop loses its echoes 3 and 7
        drop: vec![(1, 3), (1, 7)],
        silent: vec![],
    };
    let mut op = PathOp::new(t0, cfg("10.0.3.2", Ident::Rising(PATH_JITTER_FIRST_IDENT), 10));
    let (r, echoes, _) = run(&mut op, &net, t0);
    assert_eq!(echoes.len(), 30);
    // identifier rising per packet from 0x2325; sequence 0..9 per hop
    assert_eq!(echoes.iter().map(|e| e.1).collect::<Vec<_>>(), (0x2325..0x2325 + 30).collect::<Vec<u16>>());
    let to_hop2: Vec<u16> = echoes.iter().filter(|e| e.0 == ip("10.0.23.3")).map(|e| e.2).collect();
    assert_eq!(to_hop2, (0..10).collect::<Vec<u16>>());
    let h = &r.hops[1];
    assert_eq!((h.sent, h.lost()), (10, 2));
    assert_eq!(h.rtts[3], None);
    assert_eq!(h.received(), vec![5_000_000; 8]);
    // constant RTT: IPDV 0 for the 5 consecutive pairs that both came back (0-1, 1-2, 4-5, 5-6, 8-9)
    assert_eq!(h.ipdv(), vec![0; 5]);
    assert_eq!((r.hops[0].lost(), r.hops[2].lost()), (0, 0));
    assert_eq!((r.result.stats.sent, r.result.stats.received), (10, 10));
    // no one-way times in an echo: no direction jitter at all, rather than a jitter of 0
    assert_eq!((r.result.stats.jitter_sd.count(), r.result.stats.jitter_ds.count()), (0, 0));
    assert_eq!(r.result.stats.ipdv_pct.map(|p| p.p99), Some(0), "the target's RTT is constant");
}

#[test]
fn a_silent_hop_is_listed_without_address() {
    let t0 = Instant::now();
    let net = Net {
        hops: vec!["10.0.12.2", "10.0.23.3"],
        target: "10.0.3.2",
        rtt_ms: vec![2, 5, 7],
        drop: vec![],
        silent: vec![1],
    };
    let mut op = PathOp::new(t0, cfg("10.0.3.2", Ident::Fixed(13), 1));
    let (r, echoes, end) = run(&mut op, &net, t0);
    assert_eq!(r.path(), vec![Some(ip("10.0.12.2")), None, Some(ip("10.0.3.2"))]);
    assert_eq!((r.hops[1].sent, r.hops[1].received()), (0, vec![]));
    assert_eq!(echoes.len(), 2, "no echo to a hop without an address");
    // the silent hop was waited for once: discovery took the 1 s timeout
    assert_eq!(end - t0, 1000 * MS + 7 * MS);
}

#[test]
fn forged_and_stray_errors_are_counted_and_ignored() {
    let t0 = Instant::now();
    let mut op = PathOp::new(t0, cfg("10.0.4.2", Ident::Fixed(13), 1));
    let mut buf = [0u8; 256];
    while op.poll_transmit(t0, Duration::ZERO, &mut buf).is_some() {}
    let liar = ip("192.0.2.66");
    let te = ErrorKind::TimeExceeded;
    // about another destination, another protocol, another source port, a port never probed
    let mut e = err(te, "10.9.9.9", BASE_PORT);
    op.handle_icmp_error(t0, liar, &e);
    e = err(te, "10.0.4.2", BASE_PORT);
    e.quote.protocol = 6;
    op.handle_icmp_error(t0, liar, &e);
    e = err(te, "10.0.4.2", BASE_PORT);
    e.quote.src_port = 40001;
    op.handle_icmp_error(t0, liar, &e);
    op.handle_icmp_error(t0, liar, &err(te, "10.0.4.2", BASE_PORT + u16::from(DISCOVERY_WINDOW)));
    // a second, different answer for a hop already answered
    op.handle_icmp_error(t0, ip("10.0.12.2"), &err(te, "10.0.4.2", BASE_PORT));
    op.handle_icmp_error(t0, liar, &err(te, "10.0.4.2", BASE_PORT));
    // an echo reply nobody asked for, and garbage
    op.handle_echo_reply(t0, liar, RxTime { wall: Duration::ZERO, kernel: false }, &[0, 0, 0, 0, 0, 13, 0, 0]);
    op.handle_echo_reply(t0, liar, RxTime { wall: Duration::ZERO, kernel: false }, &[0, 0]);
    let r = op.report();
    assert_eq!(r.unmatched, 7);
    assert_eq!(r.path()[0], Some(ip("10.0.12.2")), "the first answer stands");
    assert_eq!(r.result.unexpected, 7);
}

#[test]
fn unreached_target_times_out_with_the_path_so_far() {
    let t0 = Instant::now();
    let mut c = cfg("10.0.4.2", Ident::Fixed(13), 1);
    c.max_hops = 3;
    let net = Net {
        hops: vec!["10.0.12.2", "10.0.23.3", "10.0.34.4", "10.0.45.5"],
        target: "10.0.4.2",
        rtt_ms: vec![1, 2, 3, 4, 5],
        drop: vec![(4, 0)],
        silent: vec![],
    };
    let mut op = PathOp::new(t0, c);
    let (r, _, _) = run(&mut op, &net, t0);
    assert_eq!(r.hops.len(), 3);
    assert!(!r.reached);
    assert_eq!(r.result.return_code, ReturnCode::Timeout);
    assert_eq!((r.result.stats.sent, r.result.stats.received), (1, 0));
    assert_eq!(r.result.stats.rtt.mean(), None, "no reply is no RTT, not 0");
}

#[test]
fn a_router_unreachable_ends_the_path() {
    let t0 = Instant::now();
    let mut op = PathOp::new(t0, cfg("10.0.4.2", Ident::Fixed(13), 1));
    let mut buf = [0u8; 256];
    while op.poll_transmit(t0, Duration::ZERO, &mut buf).is_some() {}
    op.handle_icmp_error(t0, ip("10.0.12.2"), &err(ErrorKind::TimeExceeded, "10.0.4.2", BASE_PORT));
    // !N from the second router: host unreachable
    op.handle_icmp_error(t0, ip("10.0.23.3"), &err(ErrorKind::Unreachable { code: 1 }, "10.0.4.2", BASE_PORT + 1));
    let r = op.report();
    assert_eq!(r.path(), vec![Some(ip("10.0.12.2")), Some(ip("10.0.23.3"))]);
    assert_eq!(r.unreachable, Some((2, ip("10.0.23.3"), 1)));
    assert!(!r.reached);
}
