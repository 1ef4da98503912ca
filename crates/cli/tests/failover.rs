//! Route failover across the lab: two paths between two network namespaces, `ipsla agent` in A
//! tracking the primary next hop with an icmp-echo operation, a tracked route to B's service
//! prefix via the primary and a floating backup via the second path. Cutting the primary (or
//! slowing it past the threshold: a `state` track is up only on OK) moves
//! the route to the backup within frequency + timeout + delay down; restoring it moves it back.
//! Packets are checked on the lab links, not only in the routing table. Needs root.

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

/// Waits (bounded) until `ip route get SERVICE` in A goes via `gw`; returns how long it took.
fn wait_via(a: &Host, gw: &str, max: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < max {
        if route_get(a).contains(&format!("via {gw} ")) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Sends one datagram from A to the service address; returns which link carried it.
fn which_link(a: &Host, links: [&Link; 2]) -> [bool; 2] {
    for l in links {
        l.clear_log();
    }
    a.run(|| UdpSocket::bind("0.0.0.0:0").unwrap().send_to(b"x", (SERVICE, 9)).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    links.map(|l| l.records().iter().any(|r| r.tuple.is_some_and(|t| t.dst.to_string() == SERVICE && t.proto == 17)))
}

#[test]
fn the_route_follows_the_track_to_the_backup_and_back() {
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
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
http = "127.0.0.1:9167"
store = "{store}"

[[operation]]
id = 1
type = "icmp-echo"
target = "{p_gw}"
frequency = "1s"
timeout = "500ms"
threshold = "20ms"

[[track]]
id = 1
operation = 1
mode = "state"
delay_down = "1s"
delay_up = "1s"

[[route]]
destination = "10.99.0.0/24"
gateway = "{p_gw}"
metric = 10
track = 1

[[route]]
destination = "10.99.0.0/24"
gateway = "{b_gw}"
metric = 20
"#,
            store = dir.path().join("store.db").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let _agent = a
        .spawn(
            a.command(env!("CARGO_BIN_EXE_ipsla"))
                .args(["agent", "--config"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(log),
        )
        .unwrap();
    let log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();

    // up: the first OK result + delay up installs the tracked route
    let t = wait_via(&a, &p_gw, Duration::from_secs(15)).unwrap_or_else(|| panic!("never via primary:\n{}", log()));
    eprintln!("tracked route installed {t:?} after start");
    let table = ours(&a);
    assert!(table.contains(&format!("10.99.0.0/24 via {p_gw}")) && table.contains("metric 10"), "{table}");
    assert!(table.contains(&format!("10.99.0.0/24 via {b_gw}")) && table.contains("metric 20"), "{table}");
    assert!(!table.contains("10.98.0.0"), "the stale route of an earlier run is removed: {table}");
    assert_eq!(which_link(&a, [&primary, &backup]), [true, false], "traffic takes the primary");

    // cut the primary: frequency 1 s + timeout 0.5 s + delay down 1 s = 2.5 s at worst; the
    // assertion leaves 2 s for a loaded machine (this is a bound on behaviour, not a speed target)
    primary.set_up(false);
    let t = wait_via(&a, &b_gw, Duration::from_secs(10)).unwrap_or_else(|| panic!("no failover:\n{}", log()));
    eprintln!("failover to the backup took {t:?} (bound: frequency 1 s + timeout 0.5 s + delay 1 s)");
    assert!(t <= Duration::from_millis(4500), "failover took {t:?}");
    assert!(!ours(&a).contains(&format!("via {p_gw}")), "the tracked route is withdrawn: {}", ours(&a));
    assert_eq!(which_link(&a, [&primary, &backup]), [false, true], "traffic takes the backup");

    // restore it: back within frequency + delay up (+ slack)
    primary.set_up(true);
    let t = wait_via(&a, &p_gw, Duration::from_secs(10)).unwrap_or_else(|| panic!("no failback:\n{}", log()));
    eprintln!("failback to the primary took {t:?}");
    assert!(t <= Duration::from_millis(4500), "failback took {t:?}");
    assert_eq!(which_link(&a, [&primary, &backup]), [true, false], "traffic is back on the primary");

    // impair it: 40 ms each way puts the RTT over the 20 ms threshold; a `state` track goes down
    // on OverThreshold, so a slow primary fails over like a dead one
    let slow = Impairment::delay(Duration::from_millis(40));
    primary.set_impairment(ipsla_lab::Dir::AtoB, slow.clone());
    primary.set_impairment(ipsla_lab::Dir::BtoA, slow);
    let t = wait_via(&a, &b_gw, Duration::from_secs(10)).unwrap_or_else(|| panic!("slow primary kept:\n{}", log()));
    eprintln!("failover on a slow primary took {t:?}");
    primary.set_impairment(ipsla_lab::Dir::AtoB, Impairment::default());
    primary.set_impairment(ipsla_lab::Dir::BtoA, Impairment::default());
    wait_via(&a, &p_gw, Duration::from_secs(10)).unwrap_or_else(|| panic!("no failback after the delay:\n{}", log()));

    let text = log();
    assert!(text.contains("%TRACK-6-STATE: 1 ip sla 1 state Up -> Down"), "{text}");
    assert!(text.contains("%TRACK-6-STATE: 1 ip sla 1 state Down -> Up"), "{text}");
    assert!(text.contains(&format!("route withdrawn: 10.99.0.0/24 via {p_gw}")), "{text}");
    assert!(text.contains("route withdrawn: 10.98.0.0/24"), "{text}");
}
