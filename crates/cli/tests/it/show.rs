//! `ipsla show ...` against a running `ipsla agent`: the responder on loopback, a udp-echo and a
//! udp-jitter operation that live 2.5 s (so that every count is final before it is checked), a
//! track; the text must carry the numbers the HTTP API reports.

use crate::common::{
    AgentToml, InProcess, Op, PATIENCE, Responder, Track, api, free_tcp, free_udp, get, ipsla, wait_some,
};

fn get_status(http: u16, path: &str) -> u16 {
    get(http, path).expect("the agent answers").0
}
use std::process::Output;

fn show(http: u16, args: &[&str]) -> Output {
    ipsla().arg("show").args(args).args(["--agent", &format!("http://127.0.0.1:{http}")]).output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The agent in-process (what `show` reads is its API, not its process).
fn start(dir: &std::path::Path, v1: u16) -> InProcess {
    let op = |kind: &str, id: u32| {
        Op::new(kind, "127.0.0.1")
            .id(id)
            .key("port", free_udp())
            .key("control_port", v1)
            .key("timeout", "300ms")
            .key("frequency", "1s")
            .key("life", "2500ms")
    };
    InProcess::start(
        &AgentToml::new()
            .http(0)
            .store(&dir.join("runs.db"))
            .workers(2)
            .responder(Responder::loopback(v1))
            .operation(op("udp-echo", 1).key("distributions", 3).key("distribution_interval", 5))
            .operation(op("udp-jitter", 2).key("packets", 5).key("interval", "10ms"))
            .track(Track::of(1, 1).key("delay_down", "5s")),
    )
}

/// Waits until both operations' lives have ended and their last runs are stored: from then on
/// nothing changes.
fn settled(http: u16) -> serde_json::Value {
    wait_some("both operations to finish", PATIENCE, || {
        let ops = api(http, "/api/v1/operations");
        let done = ops.as_array().unwrap().iter().all(|o| {
            o["state"] == "inactive"
                && o["runs"].as_u64() == Some(o["successes"].as_u64().unwrap() + o["failures"].as_u64().unwrap())
        });
        done.then_some(ops)
    })
}

#[test]
fn show_commands_print_what_the_agent_knows() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let v1 = free_udp();
    let agent = start(dir.path(), v1);
    let http = agent.http();
    let ops = settled(http);
    let (ok1, ok2) = (ops[0]["successes"].as_u64().unwrap(), ops[1]["successes"].as_u64().unwrap());
    assert!(ok1 >= 2 && ok2 >= 2, "{ops}");
    assert_eq!((ops[0]["failures"].as_u64(), ops[1]["failures"].as_u64()), (Some(0), Some(0)), "{ops}");

    // latest statistics, like IOS show ip sla statistics 1
    let t = stdout(&show(http, &["statistics", "1"]));
    assert!(
        t.starts_with("IPSLAs Latest Operation Statistics\n\nIPSLA operation id: 1\nType of operation: udp-echo\n"),
        "{t}"
    );
    assert!(t.contains("\nLatest operation return code: OK\n"), "{t}");
    assert!(
        t.contains(&format!("\nNumber of successes: {ok1}\nNumber of failures: 0\nOperation time to live: 0 sec\n")),
        "{t}"
    );
    assert!(!t.contains("IPSLA operation id: 2"), "{t}");
    let all = stdout(&show(http, &["statistics"]));
    assert!(all.contains("IPSLA operation id: 1\n") && all.contains("IPSLA operation id: 2\n"), "{all}");
    assert!(all.contains(&format!("Number of successes: {ok2}\n")), "{all}");
    let latest2 = api(http, "/api/v1/operations/2/latest");
    let rtt_line = format!("RTT Values:\n        Number Of RTT: {}\t\tRTT Min/Avg/Max: ", latest2["rtt_us"]["count"]);
    assert!(all.contains(&rtt_line), "jitter block: {all}");

    // --json: the stored document, keys in the document's order
    let j = stdout(&show(http, &["statistics", "1", "--json"]));
    assert!(j.starts_with("{\n  \"schema\": 1,\n  \"operation\": \"udp-echo\""), "{j}");
    let doc: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!((doc["id"].as_u64(), doc["return_code"].as_str()), (Some(1), Some("ok")));
    // `run` is the run's number, not the operation's id: at least the successes counted above
    assert!(doc["run"].as_u64().is_some_and(|r| r >= ok1), "{doc}");
    assert_eq!(doc, api(http, "/api/v1/operations/1/latest"));

    // aggregated: the hour's row
    let rows = api(http, "/api/v1/operations/1/aggregated");
    let hour_runs: u64 = rows.as_array().unwrap().iter().map(|r| r["runs"].as_u64().unwrap()).sum();
    assert_eq!(hour_runs, ok1, "every run is in the aggregates: {rows}");
    let row = rows.as_array().unwrap().last().unwrap();
    let n = row["completion_us"]["count"].as_u64().unwrap();
    // the buckets the API reports (how many RTTs fall in 0-4 ms depends on the machine's load)
    let buckets: Vec<u64> =
        row["distribution"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).collect();
    assert_eq!((buckets.len(), buckets.iter().sum::<u64>()), (3, n), "every completion in one bucket: {row}");
    let t = stdout(&show(http, &["statistics", "1", "--aggregated"]));
    assert!(
        t.starts_with(
            "IPSLAs aggregated statistics\n\nRound Trip Time (RTT) for Index 1\nType of operation: udp-echo\n"
        ),
        "{t}"
    );
    assert!(t.contains(&format!("Number of successes: {}\nNumber of failures: 0\n", row["ok"])), "{t}");
    assert!(t.contains(&format!("        Number Of RTT: {n}\t\tRTT Min/Avg/Max: ")), "{t}");
    for (range, count) in ["0-4 ms", "5-9 ms", "10-Inf ms"].iter().zip(&buckets) {
        assert!(
            t.contains(&format!(
                "        Bucket Range: {range}\n        Number of Completions: {count}\n        Percent of Total Completions for this Range: {} %\n",
                count * 100 / n
            )),
            "{range}: {t}"
        );
    }
    assert!(t.contains("        Bucket Range: 10-Inf ms\n"), "{t}");
    let j2 = api(http, "/api/v1/operations/2/aggregated");
    let jit = &j2.as_array().unwrap().last().unwrap()["jitter"];
    let t = stdout(&show(http, &["statistics", "2", "--aggregated"]));
    assert!(t.contains(&format!("        Packets sent: {}\tReceived: {}\n", jit["sent"], jit["received"])), "{t}");
    assert!(
        t.contains(&format!(
            "        Number of SD Jitter Samples: {}\n",
            jit["jitter_sd_pos_us"]["count"].as_u64().unwrap() + jit["jitter_sd_neg_us"]["count"].as_u64().unwrap()
        )),
        "{t}"
    );
    let aj: serde_json::Value =
        serde_json::from_str(&stdout(&show(http, &["statistics", "--aggregated", "--json"]))).unwrap();
    assert_eq!(aj.as_array().unwrap().len(), rows.as_array().unwrap().len() + j2.as_array().unwrap().len());

    // show summary: one line each, their lives over (^)
    let t = stdout(&show(http, &["summary"]));
    assert!(
        t.starts_with(
            "IPSLAs Latest Operation Summary\nCodes: * active, ^ inactive, ~ pending\n\
             All Stats are in milliseconds. Stats with u are in microseconds\n\n\
             ID           Type        Destination       Stats       Return      Last\n"
        ),
        "{t}"
    );
    for (id, kind) in [(1, "udp-echo"), (2, "udp-jitter")] {
        let l = api(http, &format!("/api/v1/operations/{id}/latest"));
        let avg = l["rtt_us"]["avg"].as_f64().unwrap();
        // µs-precision runs (udp-echo's kernel stamps) in µs with IOS's "u", the others in ms
        let rtt = match l["precision"].as_str().unwrap() {
            "us" => format!("RTT={}u", avg.round() as u64),
            _ => format!("RTT={}", (avg / 1000.0).round() as u64),
        };
        let line = format!("\n^{id:<12}{kind:<12}127.0.0.1         {rtt:<12}OK          ");
        assert!(t.contains(&line), "{line:?} in {t}");
    }
    assert!(t.ends_with(" seconds ago\n") || t.ends_with(" second ago\n"), "{t}");

    // show configuration: what runs, defaults included, IOS's words
    let c = api(http, "/api/v1/operations/2/configuration");
    let t = stdout(&show(http, &["configuration", "2"]));
    let port =
        c["lines"].as_array().unwrap().iter().find(|l| l["label"] == "Target port/Source port").unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string();
    for line in [
        "IP SLAs Infrastructure Engine-III\nEntry number: 2\nOwner: \nTag: \nOperation timeout (milliseconds): 300\n\
         Type of operation to perform: udp-jitter\nTarget address/Source address: 127.0.0.1/0.0.0.0\n"
            .to_string(),
        format!("\nTarget port/Source port: {port}\nType Of Service parameter: 0x0\n"),
        "\nPacket Interval (milliseconds)/Number of packets: 10/5\nOperation Stats Precision: milliseconds\n".into(),
        format!("\nControl Packets: enabled\nControl protocol/port: v1/{v1}\n"),
        "\nSchedule:\n   Operation frequency (seconds): 1\n".into(),
        "\n   Life (seconds): 2.5\n".into(),
        "\nThreshold (milliseconds): 5000\n".into(),
    ] {
        assert!(t.contains(&line), "{line:?} in {t}");
    }
    assert!(port.ends_with("/0") && port != "0/0", "{port}");
    assert_eq!(c["lines"][0], serde_json::json!({"label": "Entry number", "value": "2", "level": 0}));
    let both = stdout(&show(http, &["configuration"]));
    assert!(both.contains("\nEntry number: 1\n") && both.contains("\nEntry number: 2\n"), "{both}");
    assert_eq!(get_status(http, "/api/v1/operations/9/configuration"), 404);

    // show track
    let t = stdout(&show(http, &["track", "1"]));
    // (the change was at the first run: seconds ago, minutes on a very busy machine)
    assert!(t.starts_with("Track 1\n  IP SLA 1 state\n  State is Up\n    1 change, last change 00:0"), "{t}");
    let tj: serde_json::Value = serde_json::from_str(&stdout(&show(http, &["track", "1", "--json"]))).unwrap();
    let rtt_ms = tj["latest_rtt_ms"].as_f64().unwrap().floor();
    assert!(
        t.contains(&format!(
            "\n  Delay up 0 secs, down 5 secs\n  Latest operation return code: OK\n  Latest RTT (millisecs) {rtt_ms}\n"
        )),
        "{t}"
    );
    assert_eq!(
        (tj["id"].as_u64(), tj["up"].as_bool(), tj["latest_return_code"].as_str()),
        (Some(1), Some(true), Some("ok"))
    );

    // show responder: the agent's responder
    let r = api(http, "/api/v1/responder");
    let t = stdout(&show(http, &["responder"]));
    assert!(t.starts_with(&format!("General IP SLA Responder on Control port {v1}\n")), "{t}");
    assert!(
        t.contains(&format!("Number of control message received: {} Number of errors: 0\n", r["stats"]["control_v1"])),
        "{t}"
    );

    // errors: unknown operation or track, no agent
    for (args, msg) in [
        (&["statistics", "9"][..], "operation 9 is not configured on the agent"),
        (&["track", "4"][..], "track 4 is not configured on the agent"),
    ] {
        let o = show(http, args);
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains(msg), "{o:?}");
    }
    let o = show(free_tcp(), &["statistics"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("cannot reach the agent at http://127.0.0.1:") && e.contains("is `ipsla agent` running?"),
        "{e}"
    );
}
