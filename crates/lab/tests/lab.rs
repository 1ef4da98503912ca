//! The lab's own behaviour: forwarding, each impairment, the log, clean-up. Needs root.

use ipsla_lab::{Delay, DelayDist, Dir, DropReason, Fate, Host, Impairment, Lab, Link, LinkConfig, Loss};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::Duration;

/// Labs spin a core each: run these tests one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn lab(name: &str) -> Option<Lab> {
    if !ipsla_lab::available() {
        eprintln!("skipped: the lab needs root, /dev/net/tun and iproute2");
        return None;
    }
    Some(Lab::new(name).expect("lab"))
}

/// Sends `n` datagrams from a to b, `gap` apart, and returns what b received, in order.
fn udp_burst(a: &Host, b: &Host, link: &Link, n: u32, gap: Duration) -> Vec<u32> {
    udp_to(a, b, SocketAddr::from((link.b_addr(), 9000)), n, gap)
}

fn udp_to(a: &Host, b: &Host, dst: SocketAddr, n: u32, gap: Duration) -> Vec<u32> {
    let rx = b.run(move || UdpSocket::bind(dst).unwrap()).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    // receive while sending, so that no socket buffer overflows; stop at the first quiet 300 ms
    // after the last send (not before: a loaded sender may pause longer than that)
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = sent.clone();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        loop {
            match rx.recv(&mut buf) {
                Ok(4) => got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]])),
                Ok(_) => {}
                Err(_) if done.load(std::sync::atomic::Ordering::SeqCst) => break,
                Err(_) => {}
            }
        }
        got
    });
    a.run(move || {
        let tx = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..n {
            tx.send_to(&i.to_be_bytes(), dst).unwrap();
            std::thread::sleep(gap);
        }
    })
    .unwrap();
    sent.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.join().unwrap()
}

fn udp_records(link: &Link, dir: Dir) -> Vec<ipsla_lab::Record> {
    link.records().into_iter().filter(|r| r.dir == dir && r.tuple.is_some_and(|t| t.proto == 17)).collect()
}

#[test]
fn delay_is_held_and_logged() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut lab) = lab("delay") else { return };
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let link = lab.link(&a, &b, LinkConfig::symmetric(Impairment::delay(Duration::from_millis(2)), 7)).unwrap();
    let got = udp_burst(&a, &b, &link, 50, Duration::from_millis(1));
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    let recs = udp_records(&link, Dir::AtoB);
    assert_eq!(recs.len(), 50);
    // The impairment asked for exactly 2 ms, and nothing leaves before it is due (how late the
    // forwarder writes it depends on the machine's load: measured by bench/src/bin/lab_error.rs).
    assert!(recs.iter().all(|r| r.planned() == Some(Duration::from_millis(2))), "{recs:?}");
    assert!(recs.iter().all(|r| r.late().is_some()), "released early: {recs:?}");
    assert!(recs.iter().all(|r| r.held().unwrap() >= Duration::from_millis(2)));
    let t = recs[0].tuple.unwrap();
    assert_eq!((t.src, t.dst, t.dport), (link.a_addr().into(), link.b_addr().into(), 9000));
    assert_eq!(&recs[3].head[..4], &3u32.to_be_bytes(), "payload head logged");
}

#[test]
fn loss_duplication_reorder_are_logged_exactly() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut lab) = lab("fates") else { return };
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let imp = Impairment {
        delay: Delay { base: Duration::from_millis(1), ..Delay::default() },
        loss: Loss::Bernoulli(0.1),
        duplicate_indices: vec![5],
        drop_indices: vec![7],
        reorder: 0.05,
        reorder_extra: Duration::from_millis(5),
        ..Impairment::default()
    };
    let link = lab.link(&a, &b, LinkConfig { a_to_b: imp, b_to_a: Impairment::default(), seed: 42 }).unwrap();
    let got = udp_burst(&a, &b, &link, 200, Duration::from_micros(500));
    link.drain(Duration::from_secs(1));
    let recs = udp_records(&link, Dir::AtoB);
    let delivered: Vec<u32> = {
        let mut d: Vec<_> = recs.iter().filter(|r| r.delivered()).collect();
        d.sort_by_key(|r| match r.fate {
            Fate::Delivered { egress } => egress,
            _ => unreachable!(),
        });
        d.iter().map(|r| u32::from_be_bytes([r.head[0], r.head[1], r.head[2], r.head[3]])).collect()
    };
    // what b received is exactly what the log says was delivered, in egress order
    assert_eq!(got, delivered);
    let dropped: Vec<u64> =
        recs.iter().filter(|r| r.fate == Fate::Dropped(DropReason::Loss)).map(|r| r.index).collect();
    assert!(dropped.contains(&7), "scripted drop");
    assert!((8..40).contains(&dropped.len()), "about 10 % of 200 lost: {}", dropped.len());
    assert_eq!(recs.iter().filter(|r| r.duplicate_of.is_some()).count(), 1);
    assert_eq!(got.iter().filter(|&&x| x == 5).count(), 2, "index 5 arrived twice");
    assert!(got.windows(2).any(|w| w[1] < w[0]), "some packets were overtaken");
}

#[test]
fn same_seed_same_fates() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut lab) = lab("seed") else { return };
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let imp = Impairment {
        loss: Loss::GilbertElliott { p: 0.05, r: 0.3, loss_good: 0.0, loss_bad: 0.8 },
        ..Impairment::default()
    };
    let l1 = lab.link(&a, &b, LinkConfig { a_to_b: imp.clone(), b_to_a: Impairment::default(), seed: 9 }).unwrap();
    let first = udp_burst(&a, &b, &l1, 300, Duration::from_micros(200));
    let c = lab.host("c").unwrap();
    let d = lab.host("d").unwrap();
    let l2 = lab.link(&c, &d, LinkConfig { a_to_b: imp, b_to_a: Impairment::default(), seed: 9 }).unwrap();
    let second = udp_burst(&c, &d, &l2, 300, Duration::from_micros(200));
    assert_eq!(first, second, "seeded: the same packets are lost");
    let fates = |l: &Link| udp_records(l, Dir::AtoB).iter().map(|r| r.delivered()).collect::<Vec<_>>();
    assert_eq!(fates(&l1), fates(&l2), "and the logs agree");
    assert!(first.len() < 300, "Gilbert-Elliott lost something");
    // bursts: at least one run of 2+ consecutive losses
    let lost: Vec<u32> = (0..300).filter(|i| !first.contains(i)).collect();
    assert!(lost.windows(2).any(|w| w[1] == w[0] + 1), "{lost:?}");
}

#[test]
fn rate_limit_and_link_down() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut lab) = lab("rate") else { return };
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    // 1 Mbit/s: a 4-byte datagram is a 32-byte IP packet = 256 µs on the wire
    let imp = Impairment { rate_bps: Some(1_000_000), ..Impairment::default() };
    let link = lab.link(&a, &b, LinkConfig { a_to_b: imp, b_to_a: Impairment::default(), seed: 1 }).unwrap();
    udp_burst(&a, &b, &link, 10, Duration::ZERO);
    let recs = udp_records(&link, Dir::AtoB);
    assert_eq!(recs.len(), 10);
    assert!(recs.iter().all(|r| r.delivered()), "{recs:?}");
    // sent back to back, they are scheduled exactly one serialisation time apart, and none leaves
    // before its time (how late each is written is load, not the rate: bench/src/bin/lab_error.rs)
    let wire = Duration::from_nanos(32 * 8 * 1000);
    for w in recs.windows(2) {
        let (r0, r1) = (w[0].release.unwrap(), w[1].release.unwrap());
        // one wire time after the previous packet, or at arrival when the sender was slower
        assert_eq!(r1, (r0 + wire).max(w[1].ingress), "serialised at 1 Mbit/s");
    }
    assert!(recs.iter().all(|r| r.late().is_some()), "released early");
    link.clear_log();
    link.set_up(false);
    assert!(udp_burst(&a, &b, &link, 5, Duration::ZERO).is_empty());
    assert!(udp_records(&link, Dir::AtoB).iter().all(|r| r.fate == Fate::Dropped(DropReason::LinkDown)));
    link.set_up(true);
    assert_eq!(udp_burst(&a, &b, &link, 5, Duration::ZERO).len(), 5);
}

#[test]
fn normal_and_pareto_delays() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut lab) = lab("dist") else { return };
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let normal = Impairment {
        delay: Delay { base: Duration::from_millis(3), jitter: Duration::from_micros(500), dist: DelayDist::Normal },
        ..Impairment::default()
    };
    let pareto = Impairment {
        delay: Delay { base: Duration::from_millis(1), jitter: Duration::from_micros(200), dist: DelayDist::Pareto },
        ..Impairment::default()
    };
    let link = lab.link(&a, &b, LinkConfig { a_to_b: normal, b_to_a: pareto, seed: 3 }).unwrap();
    udp_burst(&a, &b, &link, 200, Duration::from_micros(300));
    link.drain(Duration::from_secs(1));
    // the delays the impairment drew (what a loaded forwarder adds on top is not the distribution's)
    let held: Vec<f64> =
        udp_records(&link, Dir::AtoB).iter().filter_map(|r| r.planned()).map(|d| d.as_secs_f64() * 1e3).collect();
    assert_eq!(held.len(), 200);
    let mean = held.iter().sum::<f64>() / held.len() as f64;
    let sd = (held.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / held.len() as f64).sqrt();
    assert!((mean - 3.0).abs() < 0.15 && (sd - 0.5).abs() < 0.15, "normal: mean {mean} ms sd {sd} ms");
    udp_to(&b, &a, SocketAddr::from((link.a_addr(), 9000)), 200, Duration::from_micros(300));
    link.drain(Duration::from_secs(1));
    let mut held: Vec<f64> =
        udp_records(&link, Dir::BtoA).iter().filter_map(|r| r.planned()).map(|d| d.as_secs_f64() * 1e3).collect();
    assert_eq!(held.len(), 200);
    held.sort_by(f64::total_cmp);
    // base 1 ms plus a Pareto(scale 0.2 ms, shape 2.5) excess: median excess 0.2·(2^(1/2.5) − 1) ≈ 0.064 ms,
    // and a long tail
    let median = held[held.len() / 2];
    assert!(held[0] >= 1.0 && (median - 1.064).abs() < 0.05, "pareto median {median} ms");
    assert!(held[held.len() - 1] > 1.3, "a tail: max {} ms", held[held.len() - 1]);
}

#[test]
fn everything_is_removed_on_drop() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut lab) = lab("drop") else { return };
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let link = lab.link(&a, &b, LinkConfig::default()).unwrap();
    let ns = a.name().to_string();
    assert_eq!(udp_burst(&a, &b, &link, 3, Duration::ZERO).len(), 3);
    drop(lab);
    let list =
        String::from_utf8(std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap();
    assert!(!list.contains(&ns), "{list}");
    let links = String::from_utf8(std::process::Command::new("ip").args(["link"]).output().unwrap().stdout).unwrap();
    assert!(!links.contains(&link.a_if), "{links}");
}

/// The LAN: every host reaches the hub and each other over the bridge (no link, nothing logged),
/// and the bridge goes with the namespaces.
#[test]
fn a_lan_joins_every_host_and_the_hub() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut lab) = lab("lan") else { return };
    let hosts: Vec<Host> = ["a", "b", "c"].iter().map(|n| lab.host(n).unwrap()).collect();
    let hub = lab.host("hub").unwrap();
    let addrs = lab.lan(&hub, &hosts.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(
        addrs,
        ["10.79.0.1", "10.79.0.2", "10.79.0.3", "10.79.0.4"].map(|a| a.parse::<std::net::Ipv4Addr>().unwrap())
    );
    assert_eq!(udp_to(&hosts[0], &hosts[2], SocketAddr::from((addrs[3], 9000)), 5, Duration::ZERO), [0, 1, 2, 3, 4]);
    assert_eq!(udp_to(&hosts[1], &hub, SocketAddr::from((addrs[0], 9000)), 5, Duration::ZERO), [0, 1, 2, 3, 4]);
    let hub_ns = hub.name().to_string();
    drop(lab);
    let list = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&hub_ns));
}
