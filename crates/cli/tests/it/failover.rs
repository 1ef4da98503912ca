//! Route failover across the lab: two paths between two network namespaces, `ipsla agent` in A
//! tracking the primary next hop with an icmp-echo operation, a tracked route to B's service
//! prefix via the primary and a floating backup via the second path. Cutting the primary (or
//! slowing it past the threshold: a `state` track is up only on OK) moves
//! the route to the backup (after frequency + timeout + delay down on a quiet machine: the times
//! are printed, not asserted); restoring it moves it back. Packets are checked on the lab links,
//! not only in the routing table. Needs root.

use crate::common::{AgentToml, Op, PATIENCE, Route, Track, alone, ipsla, wait_some};
use ipsla_lab::{Host, Impairment, Lab, Link, LinkConfig};
use std::net::UdpSocket;
use std::process::Stdio;
use std::time::{Duration, Instant};

const SERVICE: &str = "10.99.0.1";

fn route_get(a: &Host) -> String {
    let out = std::process::Command::new("ip").args(["-n", a.name(), "route", "get", SERVICE]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ours(a: &Host) -> String {
    let out =
        std::process::Command::new("ip").args(["-n", a.name(), "route", "show", "proto", "167"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `ip route get SERVICE` in A goes via `gw`; returns how long it took (printed for
/// the reader: the time depends on the machine's load, so it is not asserted).
fn wait_via(a: &Host, gw: &str, what: &str, log: &dyn Fn() -> String) -> Duration {
    let t0 = Instant::now();
    while !route_get(a).contains(&format!("via {gw} ")) {
        assert!(t0.elapsed() < PATIENCE, "no {what} after {PATIENCE:?}; the agent's log:\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// Sends one datagram from A to the service address; returns which link carried it.
fn which_link(a: &Host, links: [&Link; 2]) -> [bool; 2] {
    for l in links {
        l.clear_log();
    }
    a.run(|| UdpSocket::bind("0.0.0.0:0").unwrap().send_to(b"x", (SERVICE, 9)).unwrap()).unwrap();
    let carried =
        |l: &Link| l.records().iter().any(|r| r.tuple.is_some_and(|t| t.dst.to_string() == SERVICE && t.proto == 17));
    // the datagram is in one link's log once its forwarder has read it
    wait_some("the datagram on a link", PATIENCE, || links.iter().any(|l| carried(l)).then_some(()));
    links.map(carried)
}

#[test]
fn the_route_follows_the_track_to_the_backup_and_back() {
    let _machine = alone();
    if !ipsla_lab::available() {
        eprintln!("skipped: the lab needs root, /dev/net/tun and iproute2");
        return;
    }
    let mut lab = Lab::new("failover").unwrap();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let primary = lab.link(&a, &b, LinkConfig::symmetric(Impairment::default(), 1)).unwrap();
    let backup = lab.link(&a, &b, LinkConfig::symmetric(Impairment::default(), 2)).unwrap();
    let ip =
        |args: &[&str]| assert!(std::process::Command::new("ip").args(args).status().unwrap().success(), "{args:?}");
    ip(&["-n", b.name(), "addr", "add", &format!("{SERVICE}/32"), "dev", "lo"]);
    // a route an earlier run left behind: the agent removes it at start
    ip(&["-n", a.name(), "route", "add", "10.98.0.0/24", "via", &backup.b_addr().to_string(), "proto", "167"]);

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    let (p_gw, b_gw) = (primary.b_addr().to_string(), backup.b_addr().to_string());
    AgentToml::new()
        .agent_key("http", "127.0.0.1:9167")
        .store(&dir.path().join("store.db"))
        .operation(
            Op::new("icmp-echo", &p_gw).id(1).key("frequency", "1s").key("timeout", "500ms").key("threshold", "20ms"),
        )
        .track(Track::of(1, 1).key("mode", "state").key("delay_down", "1s").key("delay_up", "1s"))
        .route(Route::new("10.99.0.0/24", &p_gw).key("metric", 10).key("track", 1))
        .route(Route::new("10.99.0.0/24", &b_gw).key("metric", 20))
        .write(&cfg);
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let _agent = a
        .spawn(a.command(ipsla().get_program()).args(["agent", "--config"]).arg(&cfg).stdout(Stdio::null()).stderr(log))
        .unwrap();
    let log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();

    // up: the first OK result + delay up installs the tracked route
    let t = wait_via(&a, &p_gw, "the route via the primary", &log);
    eprintln!("tracked route installed {t:?} after start");
    let table = ours(&a);
    assert!(table.contains(&format!("10.99.0.0/24 via {p_gw}")) && table.contains("metric 10"), "{table}");
    assert!(table.contains(&format!("10.99.0.0/24 via {b_gw}")) && table.contains("metric 20"), "{table}");
    assert!(!table.contains("10.98.0.0"), "the stale route of an earlier run is removed: {table}");
    assert_eq!(which_link(&a, [&primary, &backup]), [true, false], "traffic takes the primary");

    // cut the primary: frequency 1 s + timeout 0.5 s + delay down 1 s = 2.5 s at worst on a
    // quiet machine
    primary.set_up(false);
    let t = wait_via(&a, &b_gw, "the failover to the backup", &log);
    eprintln!("failover to the backup took {t:?} (frequency 1 s + timeout 0.5 s + delay 1 s)");
    assert!(!ours(&a).contains(&format!("via {p_gw}")), "the tracked route is withdrawn: {}", ours(&a));
    assert_eq!(which_link(&a, [&primary, &backup]), [false, true], "traffic takes the backup");

    // restore it: back within frequency + delay up (+ slack)
    primary.set_up(true);
    let t = wait_via(&a, &p_gw, "the failback to the primary", &log);
    eprintln!("failback to the primary took {t:?}");
    assert_eq!(which_link(&a, [&primary, &backup]), [true, false], "traffic is back on the primary");

    // impair it: 40 ms each way puts the RTT over the 20 ms threshold; a `state` track goes down
    // on OverThreshold, so a slow primary fails over like a dead one
    let slow = Impairment::delay(Duration::from_millis(40));
    primary.set_impairment(ipsla_lab::Dir::AtoB, slow.clone());
    primary.set_impairment(ipsla_lab::Dir::BtoA, slow);
    let t = wait_via(&a, &b_gw, "the failover from a slow primary", &log);
    eprintln!("failover on a slow primary took {t:?}");
    primary.set_impairment(ipsla_lab::Dir::AtoB, Impairment::default());
    primary.set_impairment(ipsla_lab::Dir::BtoA, Impairment::default());
    wait_via(&a, &p_gw, "the failback after the delay", &log);

    let text = log();
    assert!(text.contains("%TRACK-6-STATE: 1 ip sla 1 state Up -> Down"), "{text}");
    assert!(text.contains("%TRACK-6-STATE: 1 ip sla 1 state Down -> Up"), "{text}");
    assert!(text.contains(&format!("route withdrawn: 10.99.0.0/24 via {p_gw}")), "{text}");
    assert!(text.contains("route withdrawn: 10.98.0.0/24"), "{text}");
}
