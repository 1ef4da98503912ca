//! path-echo and path-jitter against real kernels: loopback (one hop), and a lab of three routers
//! (network namespaces with forwarding on, each a kernel that answers time exceeded):
//!
//! ```text
//! A 10.77.0.1 ─l0─ .2 R1 10.77.1.1 ─l1─ .2 R2 10.77.2.1 ─l2 (20 ms each way)─ .2 R3 10.77.3.1 ─l3─ .2 B
//!                      R1 10.77.4.1 ─l4─ .2 R3   (the other way, for the path change)
//! ```
//!
//! R3 ignores echo requests (`icmp_echo_ignore_all`): a hop that answers discovery but loses
//! every echo, a known loss without iptables.

use crate::common::{AgentToml, InProcess, Op, PATIENCE, Reaction, alone, ipsla, wait_some};
use ipsla_lab::{Dir, Host, Impairment, Lab, LinkConfig};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;

fn json_of(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn path_echo_and_jitter_to_loopback_are_one_hop() {
    let _machine = crate::common::shared();
    let out = ipsla().args(["probe", "path-echo", "127.0.0.1", "--json"]).output().unwrap();
    let d = json_of(&out);
    assert_eq!(d["operation"], "path-echo");
    assert_eq!(d["return_code"], "ok");
    assert_eq!(d["path"], json!(["127.0.0.1"]));
    assert_eq!(d["reached"], true);
    assert_eq!(d["path_changed"], Value::Null, "a first run has nothing to compare with");
    assert_eq!(d["hops"][0]["loss"], json!({"sent": 1, "lost": 0, "ratio": 0.0}));
    assert_eq!(d["hops"][0]["rtt_us"]["count"], 1);
    assert_eq!((d["sent"].as_u64(), d["received"].as_u64()), (Some(1), Some(1)));
    // IPv6: hop limit and ICMPv6
    let d = json_of(&ipsla().args(["probe", "path-jitter", "::1", "--packets", "3", "--json"]).output().unwrap());
    assert_eq!((&d["return_code"], &d["path"]), (&json!("ok"), &json!(["::1"])));
    assert_eq!(d["hops"][0]["loss"], json!({"sent": 3, "lost": 0, "ratio": 0.0}));
    assert_eq!(d["hops"][0]["ipdv_us"]["count"], 2);
    // the text: IOS lines, then the hop table
    let out = ipsla().args(["probe", "path-echo", "127.0.0.1", "--count", "2"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Number of hops: 1"), "{text}");
    assert!(text.contains("Path changed since the previous run: unknown (first run)"), "{text}");
    assert!(text.contains("Path changed since the previous run: no"), "the second run compares: {text}");
    assert!(text.contains("  1  127.0.0.1 "), "{text}");
}

#[test]
fn path_keys_are_checked() {
    let _machine = crate::common::shared();
    let out = ipsla().args(["probe", "path-echo", "127.0.0.1", "--max-hops", "0"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("max-hops") && err.contains("0") && err.contains("1") && err.contains("255"), "{err}");
}

fn ip_ok(args: &[&str]) {
    let out = std::process::Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Sets `net.*` sysctl `key` in `h` (/proc/sys/net belongs to the namespace of the thread that
/// opens it: no sysctl binary needed).
fn sysctl(h: &Host, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let r = h.run(|| std::fs::write(&path, value)).unwrap();
    r.unwrap_or_else(|e| panic!("{path} = {value} in {}: {e}", h.name()));
}

/// The lab of the module doc: hosts A, R1, R2, R3, B (forwarding on in the routers, R3 ignoring
/// echo requests) and the links l0..l4, with IPv4 routes along R1 → R2 → R3, and IPv6 ones too
/// (`fd77:I::1` and `::2` on link I) when `v6`.
struct PathLab {
    hosts: [Host; 5],
    links: Vec<ipsla_lab::Link>,
    _lab: Lab,
}

fn path_lab(name: &str, v6: bool) -> Option<PathLab> {
    if !ipsla_lab::available() {
        eprintln!("skipped: the lab needs root, /dev/net/tun and iproute2");
        return None;
    }
    let mut lab = Lab::new(name).unwrap();
    let hosts = ["a", "r1", "r2", "r3", "b"].map(|n| lab.host(n).unwrap());
    let [a, r1, r2, r3, b] = &hosts;
    let clean = || LinkConfig::symmetric(Impairment::default(), 1);
    let slow = LinkConfig::symmetric(Impairment::delay(Duration::from_millis(20)), 2);
    let links = vec![
        lab.link(a, r1, clean()).unwrap(),
        lab.link(r1, r2, clean()).unwrap(),
        lab.link(r2, r3, slow).unwrap(),
        lab.link(r3, b, clean()).unwrap(),
        lab.link(r1, r3, clean()).unwrap(),
    ];
    for r in [r1, r2, r3] {
        sysctl(r, "net.ipv4.ip_forward", "1");
    }
    sysctl(r3, "net.ipv4.icmp_echo_ignore_all", "1");
    let route = |h: &Host, to: &str, via: &str| ip_ok(&["-n", h.name(), "route", "replace", to, "via", via]);
    route(a, "default", "10.77.0.2");
    route(r1, "10.77.2.0/24", "10.77.1.2");
    route(r1, "10.77.3.0/24", "10.77.1.2");
    route(r2, "10.77.0.0/24", "10.77.1.1");
    route(r2, "10.77.3.0/24", "10.77.2.2");
    route(r3, "default", "10.77.2.1");
    route(b, "default", "10.77.3.1");
    if v6 {
        // the lab's links are IPv4 only: give each side of link I fd77:I::1 / ::2 on the device
        // that holds 10.77.I.1 / .2
        for (i, l) in links.iter().enumerate() {
            for (v4, v6) in [(l.a_addr(), 1), (l.b_addr(), 2)] {
                let owner = hosts.iter().find(|h| dev_of(h, &v4.to_string()).is_some()).unwrap();
                let dev = dev_of(owner, &v4.to_string()).unwrap();
                sysctl(owner, &format!("net.ipv6.conf.{dev}.disable_ipv6"), "0");
                ip_ok(&["-n", owner.name(), "addr", "add", &format!("fd77:{i}::{v6}/64"), "dev", &dev, "nodad"]);
            }
        }
        for r in [r1, r2, r3] {
            sysctl(r, "net.ipv6.conf.all.forwarding", "1");
        }
        let route6 = |h: &Host, to: &str, via: &str| ip_ok(&["-n", h.name(), "-6", "route", "replace", to, "via", via]);
        route6(a, "default", "fd77:0::2");
        route6(r1, "fd77:2::/64", "fd77:1::2");
        route6(r1, "fd77:3::/64", "fd77:1::2");
        route6(r2, "fd77:0::/64", "fd77:1::1");
        route6(r2, "fd77:3::/64", "fd77:2::2");
        route6(r3, "default", "fd77:2::1");
        route6(b, "default", "fd77:3::1");
    }
    Some(PathLab { hosts, links, _lab: lab })
}

/// The device of `h` that holds IPv4 address `addr`.
fn dev_of(h: &Host, addr: &str) -> Option<String> {
    let out = std::process::Command::new("ip").args(["-n", h.name(), "-o", "-4", "addr", "show"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(&format!(" {addr}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
}

#[test]
fn three_routers_hops_loss_and_a_path_change() {
    let _machine = alone();
    let Some(lab) = path_lab("path", false) else { return };
    let [a, r1, ..] = &lab.hosts;
    let l2 = &lab.links[2];
    let route = |h: &Host, to: &str, via: &str| ip_ok(&["-n", h.name(), "route", "replace", to, "via", via]);
    let path = json!(["10.77.0.2", "10.77.1.2", "10.77.2.2", "10.77.3.2"]);

    // path-jitter from A: 10 echoes to each hop
    l2.clear_log();
    let out = a
        .command(ipsla().get_program())
        .args(["probe", "path-jitter", "10.77.3.2", "--packets", "10", "--interval", "10ms", "--timeout", "1s"])
        .arg("--json")
        .output()
        .unwrap();
    let d = json_of(&out);
    assert_eq!(d["path"], path, "{d}");
    assert_eq!(d["reached"], true);
    let hop = |i: usize| &d["hops"][i];
    for i in 0..4 {
        assert_eq!(hop(i)["hop"], i + 1);
        assert_eq!(hop(i)["address"], path[i]);
    }
    for i in [0, 1] {
        assert_eq!(hop(i)["loss"], json!({"sent": 10, "lost": 0, "ratio": 0.0}), "{d}");
        assert_eq!(hop(i)["rtt_us"]["count"], 10, "{d}");
    }
    // hop 4 is behind the link that holds every packet 20 ms each way: a floor, not a timing
    assert_eq!(hop(3)["loss"], json!({"sent": 10, "lost": 0, "ratio": 0.0}), "{d}");
    assert!(hop(3)["rtt_us"]["min"].as_f64().unwrap() >= 40_000.0, "{d}");
    assert_eq!(hop(3)["ipdv_us"]["count"], 9, "9 consecutive pairs of 10 replies");
    // R3 answered discovery but ignores echoes: all 10 lost, no RTT (null, not 0)
    assert_eq!(hop(2)["loss"], json!({"sent": 10, "lost": 10, "ratio": 1.0}), "{d}");
    assert_eq!(hop(2)["rtt_us"], Value::Null);
    assert_eq!(hop(2)["ipdv_us"], Value::Null);
    // the target's train is the operation's RTT
    assert_eq!((d["sent"].as_u64(), d["received"].as_u64()), (Some(10), Some(10)));
    assert!(d["rtt_us"]["min"].as_f64().unwrap() >= 40_000.0);
    assert_eq!(d["jitter_us"]["sd"]["avg"], Value::Null, "an echo has no one-way jitter");
    // the lab's log: the 10 echo requests to R3 crossed l2 and were delivered; none came back
    let echo_to = |dir: Dir, src: &str, dst: &str| {
        l2.records()
            .iter()
            .filter(|r| r.dir == dir && r.delivered())
            .filter(|r| {
                r.tuple.as_ref().is_some_and(|t| {
                    t.proto == 1 && t.dport == 0 && t.src.to_string() == src && t.dst.to_string() == dst
                })
            })
            .count()
    };
    assert_eq!(echo_to(Dir::AtoB, "10.77.0.1", "10.77.2.2"), 10, "the echo requests to R3");
    assert_eq!(echo_to(Dir::BtoA, "10.77.2.2", "10.77.0.1"), 1, "R3's one time exceeded (TTL 3), and no echo reply");

    // the agent in A: path-echo every second with a pathChange reaction
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    AgentToml::new()
        .agent_key("http", "127.0.0.1:9168")
        .store(&dir.path().join("store.db"))
        .operation(
            Op::new("path-echo", "10.77.3.2")
                .id(7)
                .key("frequency", "1s")
                .key("timeout", "500ms")
                .reaction(Reaction::immediate("pathChange", "alert")),
        )
        .write(&cfg);
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let _agent = a
        .spawn(a.command(ipsla().get_program()).args(["agent", "--config"]).arg(&cfg).stdout(Stdio::null()).stderr(log))
        .unwrap();
    let get = |p: &'static str| a.run(move || crate::common::get(9168, p)).unwrap();
    let latest = || {
        get("/api/v1/operations/7/latest")
            .and_then(|(c, b)| (c == 200).then(|| serde_json::from_str::<Value>(&b).ok()).flatten())
    };
    wait_some("a run over the first path", PATIENCE, || latest().filter(|d| d["path"] == path));
    // move R1's route to B onto the direct link to R3: two routers instead of three
    route(r1, "10.77.3.0/24", "10.77.4.2");
    let changed = wait_some("a run over the new path", PATIENCE, || {
        latest().filter(|d| d["path"].as_array().is_some_and(|p| p.len() == 3))
    });
    assert_eq!(changed["path"], json!(["10.77.0.2", "10.77.2.2", "10.77.3.2"]));
    assert_eq!(changed["path_changed"], true);
    let events = wait_some("the path and reaction events", PATIENCE, || {
        let (_, body) = get("/api/v1/events")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let list = v.as_array().cloned().or_else(|| v["events"].as_array().cloned())?;
        let has = |kind: &str| list.iter().any(|e| e["kind"] == kind && e["element"] == "pathChange" && e["op"] == 7);
        (has("path") && has("reaction")).then_some(list)
    });
    let path_event = events.iter().find(|e| e["kind"] == "path").unwrap();
    assert_eq!(path_event["text"], "IP SLAs(7): path changed, now 10.77.0.2 -> 10.77.2.2 -> 10.77.3.2");
    let reaction = events.iter().find(|e| e["kind"] == "reaction").unwrap();
    assert_eq!(reaction["occurred"], true);
    assert_eq!(reaction["text"], "%RTT-3-IPSLATHRESHOLD: IP SLAs(7): Threshold Occurred for pathChange");
}

#[test]
fn the_agent_stores_exports_and_compares_paths() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let cfg = AgentToml::new().http(0).store(&dir.path().join("store.db")).operation(
        Op::new("path-jitter", "127.0.0.1")
            .id(9)
            .key("frequency", "1s")
            .key("timeout", "500ms")
            .key("packets", 3)
            .key("interval", "10ms")
            .reaction(Reaction::immediate("pathChange", "alert")),
    );
    let agent = InProcess::start(&cfg);
    let http = agent.http();
    let latest = wait_some("a second stored run", PATIENCE, || {
        let (code, body) = crate::common::get(http, "/api/v1/operations/9/latest")?;
        let d: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        (d["run"].as_u64()? >= 2).then_some(d)
    });
    assert_eq!(latest["path"], json!(["127.0.0.1"]));
    assert_eq!(latest["path_changed"], false, "the same path as the run before: {latest}");
    assert_eq!(latest["hops"][0]["loss"], json!({"sent": 3, "lost": 0, "ratio": 0.0}));
    assert_eq!(latest["hops"][0]["ipdv_us"]["count"], 2);
    let (_, m) = crate::common::get(http, "/metrics").unwrap();
    let line = |name: &str| {
        m.lines()
            .find(|l| l.starts_with(name) && l.contains(r#"hop="1""#))
            .unwrap_or_else(|| panic!("{name}: {m}"))
            .to_string()
    };
    assert!(line("ipsla_path_hop_loss_ratio{").contains(r#"address="127.0.0.1""#), "{m}");
    let value = |l: String| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
    assert_eq!(value(line("ipsla_path_hop_loss_ratio{")), 0.0, "{m}");
    assert!(value(line("ipsla_path_hop_rtt_seconds{")) > 0.0, "{m}");
    assert!(line("ipsla_path_hop_rtt_seconds{").contains(r#"op="9""#), "{m}");
    assert!(line("ipsla_path_hop_ipdv_seconds{").contains(r#"address="127.0.0.1""#), "{m}");
    // no change, no path event, no reaction
    let events = crate::common::api(http, "/api/v1/events");
    assert!(!events.to_string().contains("pathChange"), "{events}");

    // the page plots each hop of the latest path, from the hop's own statistics in the store
    let (_, page) = crate::common::get(http, "/operations/9").unwrap();
    assert!(page.contains("/operations/9/plot.svg?range=24h&amp;what=hop&amp;hop=1"), "{page}");
    assert!(page.contains("RTT to hop 1: 127.0.0.1"), "{page}");
    let hop1 = |query: &str| {
        let (code, body) = crate::common::get(http, &format!("/operations/9/plot.json?range=1h&{query}")).unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let history = || crate::common::api(http, "/api/v1/operations/9/history?limit=1000");
    // read between two identical histories, so no run was stored in between
    let (runs, cols) = wait_some("a plot read between two runs", PATIENCE, || {
        let before = history();
        let cols = hop1("what=hop&hop=1");
        (history() == before).then_some((before, cols))
    });
    let runs = runs.as_array().unwrap();
    let sum = |key: &str| cols.as_array().unwrap().iter().map(|c| c[key].as_u64().unwrap()).sum::<u64>();
    let hop_sum = |key: &str| runs.iter().map(|r| r["report"]["hops"][0]["loss"][key].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("runs"), runs.len() as u64);
    assert_eq!(
        sum("measured"),
        runs.iter().filter(|r| r["report"]["hops"][0]["rtt_us"]["count"].as_u64().unwrap_or(0) > 0).count() as u64
    );
    assert_eq!(sum("sent"), hop_sum("sent"));
    assert_eq!(sum("received"), hop_sum("sent") - hop_sum("lost"));
    let smallest =
        runs.iter().filter_map(|r| r["report"]["hops"][0]["rtt_us"]["min"].as_f64()).fold(f64::MAX, f64::min);
    let drawn = cols.as_array().unwrap().iter().filter_map(|c| c["min"].as_f64()).fold(f64::MAX, f64::min);
    assert_eq!(drawn, smallest, "the band's bottom is the smallest RTT to hop 1 stored");
    // a hop the path does not have is never measured: its columns count runs, no value
    let none = hop1("what=hop&hop=5");
    assert!(none.as_array().unwrap().iter().all(|c| c["measured"] == 0 && c["min"].is_null()), "{none}");
    let (code, body) = crate::common::get(http, "/operations/9/plot.svg?what=hop").unwrap();
    assert_eq!((code, body.as_str()), (400, "what=hop needs hop=N, the hop's TTL (1-255)\n"));
    let (code, body) = crate::common::get(http, "/operations/9/plot.svg?what=hop&hop=0").unwrap();
    assert_eq!((code, body.as_str()), (400, "hop=0 is not a hop; use the hop's TTL, 1-255\n"));
}

/// Forged ICMP errors from B for the one discovery probe that reaches it (`max_hops` 4): the
/// datagram it quotes sent elsewhere, as TCP, and from another source port. A's echo socket is
/// raw (a new namespace allows no datagram ICMP sockets to root), so it sees all three.
fn forge_errors(datagram: &[u8]) -> Vec<Vec<u8>> {
    let ihl = usize::from(datagram[0] & 0x0f) * 4;
    let quote = &datagram[..ihl + 8];
    let mut out = Vec::new();
    for tweak in 0..3 {
        let mut q = quote.to_vec();
        match tweak {
            0 => q[16..20].copy_from_slice(&[10, 9, 9, 9]),
            1 => q[9] = 6,
            _ => {
                let p = u16::from_be_bytes([q[ihl], q[ihl + 1]]).wrapping_add(1);
                q[ihl..ihl + 2].copy_from_slice(&p.to_be_bytes());
            }
        }
        let mut m = vec![11, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&q);
        let c = ipsla_wire::icmp::internet_checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        out.push(m);
    }
    out
}

/// A liar in `b`: for the first discovery probe that reaches it, sends A [`forge_errors`]; returns
/// how many it sent, once it is listening (the receiver says when).
fn spawn_liar(b: &Host) -> (std::thread::JoinHandle<u32>, std::sync::mpsc::Receiver<()>) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let b2 = b.clone();
    let liar = std::thread::spawn(move || {
        b2.run(move || {
            use socket2::{Domain, Protocol, Socket, Type};
            let udp = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).unwrap();
            let icmp = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
            udp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 2048];
            let deadline = std::time::Instant::now() + PATIENCE;
            while std::time::Instant::now() < deadline {
                let Ok(n) = std::io::Read::read(&mut &udp, &mut buf) else { continue };
                // a raw IPv4 socket reads the IP header too: the sender is at 12..16
                let d = &buf[..n];
                let from = std::net::SocketAddr::from(([d[12], d[13], d[14], d[15]], 0));
                let dport = u16::from_be_bytes([d[22], d[23]]);
                if !(33434..33434 + 30).contains(&dport) {
                    continue;
                }
                for m in forge_errors(d) {
                    icmp.send_to(&m, &from.into()).unwrap();
                }
                return 3;
            }
            0
        })
        .unwrap()
    });
    (liar, ready_rx)
}

#[test]
fn forged_errors_failure_reasons_and_ipv6_in_the_lab() {
    let _machine = alone();
    let Some(lab) = path_lab("path6", true) else { return };
    let [a, .., b] = &lab.hosts;
    let (liar, ready) = spawn_liar(b);
    ready.recv().unwrap();
    let out = a
        .command(ipsla().get_program())
        .args(["probe", "path-echo", "10.77.3.2", "--max-hops", "4", "--timeout", "1s", "--json"])
        .output()
        .unwrap();
    assert_eq!(liar.join().unwrap(), 3, "the liar saw the probe that reached B");
    let d = json_of(&out);
    assert_eq!(d["path"], json!(["10.77.0.2", "10.77.1.2", "10.77.2.2", "10.77.3.2"]), "{d}");
    assert_eq!(d["unmatched"], 3, "the three forgeries, counted and ignored: {d}");
    assert_eq!(d["unexpected"], 3);
    assert_eq!(d["return_code"], "ok");

    // a datagram ICMP socket (ping_group_range admits root's group in A): errors come from the
    // UDP socket's error queue, where the kernel already dropped the forgeries that quote another
    // protocol or port; the one to another destination matched our socket by its port alone
    sysctl(a, "net.ipv4.ping_group_range", "0 2147483647");
    let (liar, ready) = spawn_liar(b);
    ready.recv().unwrap();
    let out = a
        .command(ipsla().get_program())
        .args(["probe", "path-echo", "10.77.3.2", "--max-hops", "4", "--timeout", "1s", "--json"])
        .output()
        .unwrap();
    assert_eq!(liar.join().unwrap(), 3);
    let d = json_of(&out);
    assert_eq!(d["path"], json!(["10.77.0.2", "10.77.1.2", "10.77.2.2", "10.77.3.2"]), "{d}");
    assert_eq!(d["unmatched"], 1, "{d}");
    assert_eq!((&d["return_code"], &d["hops"][3]["loss"]["lost"]), (&json!("ok"), &json!(0)));
    sysctl(a, "net.ipv4.ping_group_range", "1 0");

    // failures say why: R3 ignores echoes and is beyond max_hops 2; R1 has no route to 10.77.9.9
    let probe = |args: &[&str]| {
        json_of(
            &a.command(ipsla().get_program()).args(["probe", "path-echo"]).args(args).arg("--json").output().unwrap(),
        )
    };
    let d = probe(&["10.77.2.2", "--max-hops", "2", "--timeout", "300ms"]);
    assert_eq!((&d["return_code"], &d["reached"]), (&json!("timeout"), &json!(false)), "{d}");
    assert_eq!(d["path"], json!(["10.77.0.2", "10.77.1.2"]));
    assert_eq!(
        d["reason"],
        "path discovery did not reach 10.77.2.2 within 2 hops (the farthest answer came from 10.77.1.2 at hop 2): is UDP to ports 33434 and up filtered on the way, or is max_hops too small?"
    );
    assert_eq!(d["rtt_us"]["avg"], Value::Null, "no reply is no RTT");
    ip_ok(&["-n", lab.hosts[1].name(), "route", "add", "unreachable", "10.77.9.0/24"]);
    let d = probe(&["10.77.9.9", "--timeout", "300ms"]);
    assert_eq!(d["path"], json!(["10.77.0.2"]), "the path ends at the router that refused: {d}");
    assert_eq!(
        d["reason"],
        "10.77.0.2 at hop 1 answered destination unreachable (code 1) for 10.77.9.9: check that router's route to it"
    );

    // the same routers over IPv6: hop limits, ICMPv6 time exceeded and port unreachable
    let out = a
        .command(ipsla().get_program())
        .args(["probe", "path-echo", "fd77:3::2", "--timeout", "1s", "--json"])
        .output()
        .unwrap();
    let d = json_of(&out);
    assert_eq!(d["path"], json!(["fd77::2", "fd77:1::2", "fd77:2::2", "fd77:3::2"]), "{d}");
    assert_eq!(d["reached"], true);
    assert_eq!(d["return_code"], "ok");
    assert_eq!(d["hops"][3]["loss"], json!({"sent": 1, "lost": 0, "ratio": 0.0}));
    assert!(d["rtt_us"]["min"].as_f64().unwrap() >= 40_000.0, "behind the 20 ms link: {d}");
}
