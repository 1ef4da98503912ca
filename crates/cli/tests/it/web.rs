//! The agent's web pages (agent in-process): the overview lists every operation with its latest
//! result coloured by return code and a failure in words, never as a 0; an operation's page has
//! its plot, ranges, last runs and configuration; the plot is an SVG image in which a failed run
//! is a shaded gap. Then a real browser (headless Chromium, `apt-get install chromium`) runs the
//! page's refresh script and renders it at phone width. Skipped, with the reason printed, when
//! `chromium` is not on PATH (`scripts/test.sh` installs it).

use crate::common::{AgentToml, InProcess, Op, PATIENCE, Responder, free_udp, get, on_path, wait_some};
use std::process::Command;

fn page(http: u16, path: &str) -> String {
    let (code, body) = get(http, path).unwrap_or_else(|| panic!("GET {path}: no answer"));
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

#[test]
fn pages_show_every_operation_and_a_failure_as_a_failure() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let v1 = free_udp();
    let agent = InProcess::start(
        &AgentToml::new()
            .http(0)
            .store(&dir.path().join("runs.db"))
            .workers(2)
            .responder(Responder::loopback(v1))
            .operation(
                Op::new("udp-jitter", "127.0.0.1")
                    .id(1)
                    .key("port", free_udp())
                    .key("control_port", v1)
                    .key("packets", 5)
                    .key("interval", "10ms")
                    .key("precision", "us")
                    .key("codec", "g711alaw")
                    .key("clock_sync", "assume")
                    .key("timeout", "300ms")
                    .key("frequency", "1s")
                    .key("life", "5s")
                    .key("tag", "core <b>link</b>"),
            )
            // nothing answers there: every run times out
            .operation(
                Op::new("udp-echo", "127.0.0.1")
                    .id(2)
                    .key("port", free_udp())
                    .key("control", "none")
                    .key("timeout", "200ms")
                    .key("frequency", "1s")
                    .key("life", "5s"),
            ),
    );
    let http = agent.http();
    // both lives end after a few runs: from then on the store does not change
    wait_some("both operations to finish", PATIENCE, || {
        let (_, body) = get(http, "/api/v1/operations")?;
        let ops: serde_json::Value = serde_json::from_str(&body).ok()?;
        let done = |o: &serde_json::Value| o["state"] == "inactive" && o["stored"].as_u64() >= Some(2);
        ops.as_array()?.iter().all(|o| done(o) && o["stored"] == o["runs"]).then_some(())
    });

    let home = page(http, "/");
    assert!(home.starts_with("<!DOCTYPE html><html lang=\"en\">"), "{home}");
    // the code, RTT and loss first (what a phone shows without scrolling), then what it is
    assert!(
        home.contains(r#"<tr class="ok"><td><a href="/operations/1">1</a></td><td class="code">OK</td>"#),
        "{home}"
    );
    assert!(
        home.contains(
            r#"<tr class="failed"><td><a href="/operations/2">2</a></td><td class="code">Timeout</td><td>none (timeout)</td><td>100.0 %</td><td>—</td><td>udp-echo</td>"#
        ),
        "{home}"
    );
    // the tag is text, not markup
    assert!(home.contains("core &lt;b&gt;link&lt;/b&gt;") && !home.contains("<b>link"), "{home}");
    assert!(home.contains(r#"src="/operations/1/plot.svg?range=6h&amp;size=spark""#), "{home}");
    assert!(home.contains("<h2>Responder</h2>"), "{home}");
    let main = page(http, "/?part=main");
    assert!(main.starts_with("<section><h2>Operations</h2>") && !main.contains("<html"), "{main}");

    let op = page(http, "/operations/1?range=1h");
    assert!(
        op.contains(r#"<img class="plot" alt="RTT of operation 1 over 1h" src="/operations/1/plot.svg?range=1h">"#),
        "{op}"
    );
    assert!(op.contains(r#"<strong>1h</strong><a href="?range=6h">6h</a>"#), "{op}");
    assert!(op.contains("Entry number: 1\nOwner: \nTag: core &lt;b&gt;link&lt;/b&gt;\n"), "{op}");
    assert!(op.contains("Packet Interval (milliseconds)/Number of packets: 10/5\n"), "{op}");
    // the jitter family's plots, and MOS for a codec
    for what in ["ipdv", "sd", "ds", "mos"] {
        assert!(op.contains(&format!("src=\"/operations/1/plot.svg?range=1h&amp;what={what}\"")), "{what}: {op}");
    }
    assert!(!page(http, "/operations/2").contains("what=ipdv"), "udp-echo has no IPDV");

    // what the plot draws is what the store holds: its columns, rebuilt from the stored runs
    let width_ns: i64 = 3600 * 1_000_000_000 / 240;
    let cols: serde_json::Value = serde_json::from_str(&page(http, "/operations/1/plot.json?range=1h")).unwrap();
    let runs: serde_json::Value = serde_json::from_str(&page(http, "/api/v1/operations/1/history?limit=100")).unwrap();
    let mut want: std::collections::BTreeMap<i64, (u64, f64, f64, u64, u64)> = Default::default();
    for r in runs.as_array().unwrap() {
        let d = &r["report"];
        let e = want.entry(r["start_ns"].as_i64().unwrap() / width_ns * width_ns).or_insert((0, f64::MAX, 0.0, 0, 0));
        e.0 += 1;
        e.1 = e.1.min(d["rtt_us"]["min"].as_f64().unwrap());
        e.2 = e.2.max(d["rtt_us"]["max"].as_f64().unwrap());
        e.3 += d["sent"].as_u64().unwrap();
        e.4 += d["received"].as_u64().unwrap();
    }
    let got: std::collections::BTreeMap<i64, (u64, f64, f64, u64, u64)> = cols
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let f = |k: &str| c[k].as_f64().unwrap();
            let n = |k: &str| c[k].as_u64().unwrap();
            (c["start_ns"].as_i64().unwrap(), (n("runs"), f("min"), f("max"), n("sent"), n("received")))
        })
        .collect();
    assert_eq!(got, want);
    let mos: serde_json::Value =
        serde_json::from_str(&page(http, "/operations/1/plot.json?range=1h&what=mos")).unwrap();
    let latest = serde_json::from_str::<serde_json::Value>(&page(http, "/api/v1/operations/1/latest")).unwrap();
    let last = mos.as_array().unwrap().last().unwrap();
    if last["runs"] == 1 {
        assert_eq!(last["mid"], latest["voice"]["mos"], "{last}");
    }
    let (code, body) = get(http, "/operations/1/plot.svg?what=loss").unwrap();
    assert_eq!(
        (code, body.as_str()),
        (400, "what=loss is not a series; use rtt, ipdv, sd, ds, mos, or hop with hop=N\n")
    );

    let svg = page(http, "/operations/2/plot.svg?range=1h");
    assert!(svg.starts_with("<svg width=\"800\" height=\"300\""), "{svg}");
    assert!(svg.contains(r##"fill="#FFCCCC""##), "the failed runs are shaded: {svg}");
    assert!(svg.contains("no RTT in this range: every run failed"), "{svg}");
    let svg = page(http, "/operations/1/plot.svg?range=24h");
    assert!(svg.contains(r##"fill="#009900""##), "a median without loss is green: {svg}");
    assert!(!svg.contains(r##"fill="#FFCCCC""##), "{svg}");

    let (code, body) = get(http, "/operations/1/plot.svg?range=2h").unwrap();
    assert_eq!((code, body.as_str()), (400, "range=2h is not a range; use 1h, 6h, 24h or 7d\n"));
    let (code, body) = get(http, "/operations/1/plot.svg?size=huge").unwrap();
    assert_eq!((code, body.as_str()), (400, "size=huge is not a size; use full or spark\n"));
    assert_eq!(get(http, "/operations/9").unwrap().0, 404);

    let Some(chromium) = on_path("chromium") else {
        eprintln!("skipped the browser part: no `chromium` on PATH (apt-get install chromium)");
        return;
    };
    let browser = |args: &[&str]| {
        let out = Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
            .arg(format!("--user-data-dir={}", dir.path().join("chromium").display()))
            .args(args)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "chromium {args:?}: {log}");
        (String::from_utf8_lossy(&out.stdout).to_string(), log)
    };
    // the refresh script runs in the browser: after its 10 s interval (virtual time) the main
    // element was replaced from ?part=main
    let url = format!("http://127.0.0.1:{http}/");
    let (dom, log) = browser(&["--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", "--dump-dom", &url]);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "the page wrote to the console: {console:?}");
    assert!(dom.contains(" data-refreshed=\""), "{dom}");
    assert!(!dom.contains(" data-stale=\""), "a refresh failed: {dom}");
    assert!(dom.contains(r#"<a href="/operations/2">2</a>"#), "{dom}");
    // screenshots a person can look at (under target/tmp): the operation page, and the overview
    // at phone width (390 px)
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web");
    std::fs::create_dir_all(&out).unwrap();
    let op_url = format!("http://127.0.0.1:{http}/operations/1?range=1h");
    browser(&["--window-size=1000,1800", &format!("--screenshot={}", out.join("operation.png").display()), &op_url]);
    let shot = out.join("overview-phone.png");
    browser(&["--window-size=390,844", &format!("--screenshot={}", shot.display()), &url]);
    eprintln!("screenshots in {}", out.display());
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 390, "width from the IHDR chunk");
}
