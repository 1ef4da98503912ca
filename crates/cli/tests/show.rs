//! `ipsla show ...` against a running `ipsla agent`: the responder on loopback, a udp-echo and a
//! udp-jitter operation that live 2.5 s (so that every count is final before it is checked), a
//! track; the text must carry the numbers the HTTP API reports.

mod common;

use common::{Killed, free_tcp, free_udp, get};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn api(port: u16, path: &str) -> serde_json::Value {
    let (code, body) = get(port, path).unwrap();
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn show(http: u16, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ipsla"))
        .arg("show")
        .args(args)
        .args(["--agent", &format!("http://127.0.0.1:{http}")])
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn start(dir: &std::path::Path, http: u16, v1: u16) -> Killed {
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[agent]
http = "127.0.0.1:{http}"
store = "{store}"
workers = 2

[responder]
listen = ["127.0.0.1"]
v1_port = {v1}
v2 = false

[[operation]]
id = 1
type = "udp-echo"
target = "127.0.0.1"
port = {echo}
control_port = {v1}
timeout = "300ms"
frequency = "1s"
life = "2500ms"
distributions = 3
distribution_interval = 5

[[operation]]
id = 2
type = "udp-jitter"
target = "127.0.0.1"
port = {jitter}
control_port = {v1}
packets = 5
interval = "10ms"
timeout = "300ms"
frequency = "1s"
life = "2500ms"

[[track]]
id = 1
operation = 1
delay_down = "5s"
"#,
            store = dir.join("runs.db").display(),
            echo = free_udp(),
            jitter = free_udp(),
        ),
    )
    .unwrap();
    let k = Killed(
        Command::new(env!("CARGO_BIN_EXE_ipsla"))
            .args(["agent", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while get(http, "/-/healthy").is_none_or(|(c, _)| c != 200) {
        assert!(t.elapsed() < Duration::from_secs(10), "agent did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    k
}

/// Waits until both operations' lives have ended and their last runs are stored: from then on
/// nothing changes.
fn settled(http: u16) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let ops = api(http, "/api/v1/operations");
        let done = ops.as_array().unwrap().iter().all(|o| {
            o["state"] == "inactive"
                && o["runs"].as_u64() == Some(o["successes"].as_u64().unwrap() + o["failures"].as_u64().unwrap())
        });
        if done {
            return ops;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "operations did not finish: {ops}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn show_commands_print_what_the_agent_knows() {
    let dir = tempfile::tempdir().unwrap();
    let (http, v1) = (free_tcp(), free_udp());
    let _agent = start(dir.path(), http, v1);
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
    assert_eq!((doc["run"].as_u64(), doc["return_code"].as_str()), (Some(1), Some("ok")));
    assert_eq!(doc, api(http, "/api/v1/operations/1/latest"));

    // aggregated: the hour's row
    let rows = api(http, "/api/v1/operations/1/aggregated");
    let hour_runs: u64 = rows.as_array().unwrap().iter().map(|r| r["runs"].as_u64().unwrap()).sum();
    assert_eq!(hour_runs, ok1, "every run is in the aggregates: {rows}");
    let row = rows.as_array().unwrap().last().unwrap();
    let n = row["completion_us"]["count"].as_u64().unwrap();
    assert_eq!(row["distribution"][0]["count"].as_u64(), Some(n), "loopback RTTs are under 5 ms: {row}");
    let t = stdout(&show(http, &["statistics", "1", "--aggregated"]));
    assert!(
        t.starts_with(
            "IPSLAs aggregated statistics\n\nRound Trip Time (RTT) for Index 1\nType of operation: udp-echo\n"
        ),
        "{t}"
    );
    assert!(t.contains(&format!("Number of successes: {}\nNumber of failures: 0\n", row["ok"])), "{t}");
    assert!(t.contains(&format!("        Number Of RTT: {n}\t\tRTT Min/Avg/Max: ")), "{t}");
    assert!(
        t.contains(&format!(
            "        Bucket Range: 0-4 ms\n        Number of Completions: {n}\n        Percent of Total Completions for this Range: 100 %\n        Bucket Range: 5-9 ms\n        Number of Completions: 0\n"
        )),
        "{t}"
    );
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

    // show track
    let t = stdout(&show(http, &["track", "1"]));
    assert!(t.starts_with("Track 1\n  IP SLA 1 state\n  State is Up\n    1 change, last change 00:00:0"), "{t}");
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
