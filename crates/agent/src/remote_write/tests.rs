use super::*;
use crate::daemon::AgentFile;
use crate::metrics::Metrics;
use crate::ops::OperationDef;
use crate::report::{Context, Report};
use crate::runner::ClockCheck;
use ipsla_core::ops::{OperationResult, ReturnCode};

fn err(body: &str) -> String {
    let text = format!("[[remote_write]]\n{body}\n");
    match AgentFile::parse(&text).and_then(|f| f.validate()) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.0,
    }
}

#[test]
fn errors_name_the_key_and_say_what_is_allowed() {
    assert_eq!(err(""), "remote_write[0].url: required, e.g. \"http://127.0.0.1:9090/api/v1/write\"");
    assert_eq!(
        err("url = \"ftp://x/\""),
        "remote_write[0].url: \"ftp://x/\" has scheme ftp; allowed schemes: http, https; expected \
         http[s]://HOST[:PORT][/PATH], e.g. \"http://127.0.0.1:9000/ipsla\""
    );
    assert_eq!(
        err("url = \"http://a/w\"\nca_file = \"/x.pem\""),
        "remote_write[0].ca_file: only for https:// URLs (remote_write[0].url is http://a/w)"
    );
    assert_eq!(
        err("url = \"http://a/w\"\nbearer_token = \"t\"\nbasic_auth = { username = \"u\", password = \"p\" }"),
        "remote_write[0].bearer_token: set either it or remote_write[0].basic_auth, not both"
    );
    assert_eq!(
        err("url = \"http://a/w\"\nlabels = { \"1site\" = \"x\" }"),
        "remote_write[0].labels.1site: \"1site\" is not a label name; use letters, digits and _, not starting with a digit"
    );
    assert_eq!(
        err("url = \"http://a/w\"\nlabels = { op = \"x\" }"),
        "remote_write[0].labels.op: \"op\" is a label of the series themselves; choose another name"
    );
    // a mesh operation's samples carry src and dst: a second one would make the request invalid
    assert_eq!(
        err("url = \"http://a/w\"\nlabels = { dst = \"x\" }"),
        "remote_write[0].labels.dst: \"dst\" is a label of the series themselves; choose another name"
    );
    assert_eq!(err("url = \"http://a/w\"\nbatch = 0"), "remote_write[0].batch: 0 is out of range; allowed 1 to 100000");
    assert!(
        err("url = \"http://a/w\"\ntimeout = \"soon\"")
            .starts_with("remote_write[0].timeout: \"soon\" is not a duration")
    );
    assert!(err("url = \"http://a/w\"\nbatchsize = 3").contains("unknown field `batchsize`"));
    assert_eq!(
        err("url = \"http://a/w\"\nheaders = { Content-Encoding = \"gzip\" }"),
        "remote_write[0].headers.Content-Encoding: set by the agent (the remote-write protocol or its auth keys)"
    );
    let twice = "url = \"http://a/w\"\n[[remote_write]]\nurl = \"http://a/w\"";
    assert_eq!(err(twice), "remote_write[1].url: \"http://a/w\" is already the url of remote_write[0]");
}

#[test]
fn headers_and_authorization() {
    let text = "[[remote_write]]\nurl = \"http://127.0.0.1:9090/api/v1/write\"\n\
                basic_auth = { username = \"ipsla\", password = \"s3cret\" }\nlabels = { site = \"paris\", Zone = \"b\" }";
    let cfg = AgentFile::parse(text).unwrap().validate().unwrap();
    let d = &cfg.remote_write[0];
    let h: Vec<(String, String)> =
        d.http.headers.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string())).collect();
    assert_eq!(
        h,
        [
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
            // base64("ipsla:s3cret")
            ("authorization", "Basic aXBzbGE6czNjcmV0"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert!(!format!("{d:?}").contains("aXBzbGE6czNjcmV0"), "the credentials stay out of debug output");
    assert_eq!((d.http.path.as_str(), d.http.port, d.batch), ("/api/v1/write", 9090, 500));
    assert_eq!(d.labels, [("Zone".to_string(), "b".to_string()), ("site".to_string(), "paris".to_string())]);
}

fn defs(toml: &str) -> Vec<OperationDef> {
    AgentFile::parse(toml).unwrap().validate().unwrap().operations
}

use crate::metrics::tests::run as result;

fn document(def: &OperationDef, r: &OperationResult) -> String {
    let clock = ClockCheck { mode: "none", state: "not_checked", est_error_us: None };
    let ctx = Context::of(&def.spec, def.id, 1, Duration::from_secs(1_800_000_000), clock, false);
    serde_json::to_string(&Report::new(ctx, r)).unwrap()
}

/// `name{labels} value` lines, as a text exposition writes them.
fn lines(samples: &[(Vec<Label>, f64)]) -> Vec<String> {
    let mut v: Vec<String> = samples
        .iter()
        .map(|(labels, value)| {
            let name = &labels.iter().find(|l| l.name == "__name__").unwrap().value;
            let rest: Vec<String> =
                labels.iter().filter(|l| l.name != "__name__").map(|l| format!("{}=\"{}\"", l.name, l.value)).collect();
            format!("{name}{{{}}} {value}", rest.join(","))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_run_ships_what_metrics_exposes_for_it_and_nothing_it_lacks() {
    let d = defs(
        "[[operation]]\nid = 4\ntype = \"udp-jitter\"\ntarget = \"127.0.0.1\"\ncodec = \"g711alaw\"\n\
         [[operation]]\nid = 5\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\n",
    );
    let mut voiced = result(ReturnCode::Ok, &[2, 4, 3]);
    voiced.voice = Some(ipsla_core::voice::VoiceScore { icpif: 3, mos: 4.34, r_factor: 90.0 });
    // three more probes sent: two lost on the way out, one on the way back
    (voiced.stats.sent, voiced.stats.loss_sd, voiced.stats.loss_ds) = (6, 2, 1);
    let runs = [(&d[0], voiced), (&d[1], result(ReturnCode::Ok, &[2])), (&d[0], result(ReturnCode::Timeout, &[]))];
    let extra = [("site".to_string(), "paris".to_string())];
    for (def, r) in &runs {
        let shipped = run_samples(def.id, &document(def, r), &extra);
        assert!(shipped.iter().all(|(l, _)| l.windows(2).all(|w| w[0].name < w[1].name)), "sorted labels");
        assert!(shipped.iter().all(|(l, _)| l.contains(&Label { name: "site".into(), value: "paris".into() })));
        let m = Metrics::new();
        m.observe(def, r, &Default::default());
        let text = m.encode_text();
        // every shipped series is a series of /metrics with the same value (to the document's ns);
        // a run's lost probes by direction are, after this one run, the counter of /metrics
        for (labels, value) in &shipped {
            let name = &labels.iter().find(|l| l.name == "__name__").unwrap().value;
            let name = if name == "ipsla_loss_packets" { "ipsla_packets_lost_total" } else { name };
            // /metrics writes op first, then direction
            let sel: Vec<String> = ["op", "direction"]
                .iter()
                .filter_map(|n| labels.iter().find(|l| l.name == *n))
                .map(|l| format!("{}=\"{}\"", l.name, l.value))
                .collect();
            let prefix = format!("{name}{{{}}} ", sel.join(","));
            let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{prefix} in\n{text}"));
            let exposed: f64 = line[prefix.len()..].parse().unwrap();
            assert!((exposed - value).abs() < 1e-9, "{prefix}: {exposed} vs {value}");
        }
        // and every latest-value series /metrics has for the run is shipped
        let latest = ["ipsla_rtt_latest_seconds{", "ipsla_loss_ratio{", "ipsla_jitter_average_seconds{", "ipsla_mos{"];
        let exposed = text.lines().filter(|l| latest.iter().any(|p| l.starts_with(p))).count();
        let shipped_latest = shipped
            .iter()
            .filter(|(l, _)| l.iter().any(|l| latest.contains(&format!("{}{{", l.value).as_str())))
            .count();
        assert_eq!(exposed, shipped_latest, "{text}");
    }
    let ok = run_samples(4, &document(&d[0], &runs[0].1), &[]);
    assert_eq!(
        lines(&ok),
        [
            "ipsla_icpif{op=\"4\"} 3",
            "ipsla_jitter_average_seconds{direction=\"ds\",op=\"4\"} 0.00075",
            "ipsla_jitter_average_seconds{direction=\"sd\",op=\"4\"} 0.00075",
            "ipsla_loss_packets{direction=\"ds\",op=\"4\"} 1",
            "ipsla_loss_packets{direction=\"sd\",op=\"4\"} 2",
            "ipsla_loss_packets{direction=\"unknown\",op=\"4\"} 0",
            "ipsla_loss_ratio{op=\"4\"} 0.5",
            "ipsla_mos{op=\"4\"} 4.34",
            "ipsla_operation_success{op=\"4\"} 1",
            "ipsla_rtt_latest_seconds{op=\"4\"} 0.003",
        ]
    );
    // udp-echo: no jitter family, no voice
    assert_eq!(
        lines(&run_samples(5, &document(&d[1], &runs[1].1), &[])),
        [
            "ipsla_loss_ratio{op=\"5\"} 0",
            "ipsla_operation_success{op=\"5\"} 1",
            "ipsla_rtt_latest_seconds{op=\"5\"} 0.002"
        ]
    );
    // a mesh operation's run: its sites on every sample
    let ctx = Context::of(
        &d[1].spec,
        5,
        1,
        Duration::from_secs(1_800_000_000),
        ClockCheck { mode: "none", state: "not_checked", est_error_us: None },
        false,
    );
    let pair = crate::api::MeshLabels { test: "echo".into(), src: "paris".into(), dst: "berlin".into() };
    let doc = serde_json::to_string(&Report { mesh: Some(pair), ..Report::new(ctx, &runs[1].1) }).unwrap();
    assert_eq!(
        lines(&run_samples(5, &doc, &[])),
        [
            "ipsla_loss_ratio{dst=\"berlin\",op=\"5\",src=\"paris\"} 0",
            "ipsla_operation_success{dst=\"berlin\",op=\"5\",src=\"paris\"} 1",
            "ipsla_rtt_latest_seconds{dst=\"berlin\",op=\"5\",src=\"paris\"} 0.002"
        ]
    );
    // no reply: success 0 and the losses (the probe's direction unknown); no RTT, no jitter, no
    // MOS (not zeros)
    assert_eq!(
        lines(&run_samples(4, &document(&d[0], &runs[2].1), &[])),
        [
            "ipsla_loss_packets{direction=\"ds\",op=\"4\"} 0",
            "ipsla_loss_packets{direction=\"sd\",op=\"4\"} 0",
            "ipsla_loss_packets{direction=\"unknown\",op=\"4\"} 1",
            "ipsla_loss_ratio{op=\"4\"} 1",
            "ipsla_operation_success{op=\"4\"} 0"
        ]
    );
}

/// The store counts a deleted run's samples as dropped in SQL: as many as are shipped for it.
#[test]
fn the_stores_count_of_a_runs_samples_is_what_ships() {
    let d = defs(
        "[[operation]]\nid = 4\ntype = \"udp-jitter\"\ntarget = \"127.0.0.1\"\ncodec = \"g711alaw\"\n\
         [[operation]]\nid = 5\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\n",
    );
    let c = rusqlite::Connection::open_in_memory().unwrap();
    let sql = format!("SELECT {}", queue::samples_sql("?1"));
    // the echo's document has loss.sd and loss.ds too (0): only a train of probes ships them
    for (def, r, n) in [
        (&d[0], result(ReturnCode::Ok, &[2, 4, 3]), 8),
        (&d[0], result(ReturnCode::Timeout, &[]), 5),
        (&d[1], result(ReturnCode::Ok, &[2]), 3),
    ] {
        let doc = document(def, &r);
        let counted: i64 = c.query_row(&sql, [&doc], |row| row.get(0)).unwrap();
        assert_eq!((counted, run_samples(def.id, &doc, &[]).len() as i64), (n, n), "{doc}");
    }
}

#[test]
fn a_batch_groups_samples_by_series_at_the_runs_start_in_ms() {
    let doc = |rtt: f64| format!(r#"{{"return_code":"ok","rtt_us":{{"avg":{rtt}}}}}"#);
    let runs = [
        queue::Pending { id: 1, op: 1, start_ns: 1_700_000_000_123_456_789, report: doc(1500.0) },
        queue::Pending { id: 2, op: 2, start_ns: 1_700_000_000_200_000_000, report: doc(10.0) },
        queue::Pending { id: 3, op: 1, start_ns: 1_700_000_001_123_999_999, report: doc(2500.0) },
    ];
    let (req, n) = request(&runs, &[]);
    assert_eq!(n, 6);
    let got: Vec<(String, Vec<(f64, i64)>)> = req
        .timeseries
        .iter()
        .map(|t| {
            let l: Vec<String> = t.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect();
            (l.join(","), t.samples.iter().map(|s| (s.value, s.timestamp)).collect())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("__name__=ipsla_operation_success,op=1".into(), vec![(1.0, 1_700_000_000_123), (1.0, 1_700_000_001_123)]),
            ("__name__=ipsla_operation_success,op=2".into(), vec![(1.0, 1_700_000_000_200)]),
            (
                "__name__=ipsla_rtt_latest_seconds,op=1".into(),
                vec![(0.0015, 1_700_000_000_123), (0.0025, 1_700_000_001_123)]
            ),
            ("__name__=ipsla_rtt_latest_seconds,op=2".into(), vec![(0.00001, 1_700_000_000_200)]),
        ]
    );
}

#[test]
fn the_commented_example_is_valid() {
    let example = include_str!("../../../../examples/agent.toml");
    let start = example.find("\n# [[remote_write]]").expect("examples/agent.toml has a [[remote_write]] example");
    // the section ends at the first empty line
    let text: String = example[start + 1..]
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let cfg = AgentFile::parse(&text).and_then(|f| f.validate()).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let d = &cfg.remote_write[0];
    assert_eq!(
        (d.url.as_str(), d.batch, d.max_backoff),
        ("http://127.0.0.1:9090/api/v1/write", 500, Duration::from_secs(30))
    );
    assert_eq!(d.labels, [("site".to_string(), "paris".to_string())]);
}

#[test]
fn a_kinds_own_gauges_are_shipped_as_metrics_exposes_them() {
    let d =
        defs("[[operation]]\nid = 9\ntype = \"dns\"\ntarget = \"host.test.example\"\nname_server = \"127.0.0.1\"\n");
    let detail: crate::ops::Detail = serde_json::from_str(
        r#"{"dns": {"name": "host.test.example", "record_type": "A", "server": "127.0.0.1:53", "ignored": 0, "malformed": 0,
            "answer": {"rcode": "NoError", "authoritative": true, "answer_count": 2, "transport": "udp",
                       "answers": [{"name": "host.test.example.", "type": "A", "ttl": 0, "data": "192.0.2.7"}]}}}"#,
    )
    .unwrap();
    let r = result(ReturnCode::Ok, &[1]);
    let clock = ClockCheck { mode: "none", state: "not_checked", est_error_us: None };
    let ctx = Context::of(&d[0].spec, 9, 1, Duration::from_secs(1_800_000_000), clock, false);
    let doc = serde_json::to_string(&Report { detail: detail.clone(), ..Report::new(ctx, &r) }).unwrap();
    let shipped = lines(&run_samples(9, &doc, &[]));
    let m = Metrics::new();
    m.observe(&d[0], &r, &detail);
    let text = m.encode_text();
    for want in ["ipsla_dns_answer_records{op=\"9\"} 2", "ipsla_dns_response_code{op=\"9\",rcode=\"NoError\"} 1"] {
        assert!(shipped.iter().any(|l| l == want), "{want} in {shipped:?}");
        // the exposition writes a float gauge's value as 2.0: the same number
        let (series, value) = want.rsplit_once(' ').unwrap();
        let exposed = text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok());
        assert_eq!(exposed, Some(value.parse::<f64>().unwrap()), "{want} in\n{text}");
    }
    // no answer: neither family has a series, shipped or exposed
    let mut silent = detail.clone();
    silent["dns"]["answer"] = serde_json::Value::Null;
    let ctx = Context::of(
        &d[0].spec,
        9,
        2,
        Duration::from_secs(1_800_000_001),
        ClockCheck { mode: "none", state: "not_checked", est_error_us: None },
        false,
    );
    let doc = serde_json::to_string(&Report {
        detail: silent.clone(),
        ..Report::new(ctx, &result(ReturnCode::DnsServerTimeout, &[]))
    })
    .unwrap();
    assert!(!lines(&run_samples(9, &doc, &[])).iter().any(|l| l.starts_with("ipsla_dns_")));
    m.observe(&d[0], &result(ReturnCode::DnsServerTimeout, &[]), &silent);
    assert!(!m.encode_text().contains("ipsla_dns_"), "{}", m.encode_text());
}
