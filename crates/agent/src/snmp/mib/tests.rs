use super::*;
use crate::snmp::session::answer;
use ipsla_wire::agentx::{Pdu, VarBind};

fn oid(s: &str) -> Oid {
    Oid::parse(s).unwrap()
}

fn row(id: u32, kind: &'static str) -> Row {
    Row {
        id,
        kind,
        tag: "a tag longer than sixteen".into(),
        target: Some("192.168.1.200".parse().unwrap()),
        port: Some(5000),
        source: None,
        source_port: 0,
        tos: 0xb8,
        vrf: None,
        threshold_ms: 250,
        timeout_ms: 1000,
        frequency_s: 60,
        control: true,
        train: None,
        voice: None,
        precision: None,
        state: OperState::Active,
        runs: 3,
        life_left_s: None,
        schedule: ScheduleConfig { life: None, start: StartTime::Now, ..Default::default() },
        life_start_ns: Some(1_800_000_000_000_000_000),
        url: None,
        lookup: None,
        latest: None,
        history: Vec::new(),
        hours: Vec::new(),
        reactions: Vec::new(),
    }
}

/// A udp-jitter run document as the agent stores it (docs/json-schema.md): the fields the
/// tables read, over a whole document of a run without replies.
const JITTER_RUN: &str = r#"{"return_code":"ok","reason":null,"precision":"ms",
 "rtt_us":{"count":10,"min":1400.4,"avg":2500.6,"max":4600.0,"sum":25006.0,"sum2":70000000.0},
 "one_way_us":{"sd":{"count":10,"min":700.0,"avg":1200.0,"max":2100.0,"sum":12000.0,"sum2":16000000.0},
               "ds":{"count":10,"min":600.0,"avg":1300.0,"max":2500.0,"sum":13000.0,"sum2":18000000.0}},
 "clock_sync":{"state":"sync"},
 "jitter_us":{"sd":{"avg":900.0,"pos_count":4,"pos_min":100.0,"pos_max":1900.0,"pos_sum":4000.0,
                    "neg_count":5,"neg_min":200.0,"neg_max":1600.0,"neg_sum":4100.0},
              "ds":{"avg":null,"pos_count":0,"pos_min":null,"pos_max":null,"pos_sum":0.0,
                    "neg_count":0,"neg_min":null,"neg_max":null,"neg_sum":0.0},
              "avg":450.0,"iaj_sd":300.0,"iaj_ds":null},
 "loss":{"sd":1,"ds":2,"mia":3,"late":4,"out_of_sequence":5},
 "over_threshold":6,
 "voice":{"codec":"g711alaw","model":"e-model","advantage_factor":0,"icpif":11,"mos":4.067,"r_factor":81.2}}"#;

/// A whole run document, as `crate::report::Report` reads it from the store: one of a run that
/// got no reply, with `patch`'s fields over it (objects merged key by key).
fn report(patch: &str) -> Report {
    use crate::report::{ClockSync, Context};
    use ipsla_core::ops::OperationResult;
    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }
    let ctx = Context {
        operation: "udp-jitter",
        target: "192.168.1.200:5000".into(),
        id: 1,
        run: 1,
        start: std::time::Duration::from_secs(1_800_000_012),
        control: "v1",
        clock_sync: ClockSync { mode: "none", state: "not_checked", est_error_us: None },
        voice: None,
        samples: false,
    };
    let empty = OperationResult::new(ReturnCode::Timeout, Default::default(), Precision::Ms);
    let mut doc = serde_json::to_value(Report::new(ctx, &empty)).unwrap();
    merge(&mut doc, serde_json::from_str(patch).unwrap());
    serde_json::from_value(doc).unwrap()
}

fn latest(doc: &str) -> Option<Latest> {
    Some(Latest { start_ns: 1_800_000_012_340_000_000, run: report(doc) })
}

const UPTIME: Uptime = Uptime { centis: 5_000, wall_ns: 1_800_000_000_000_000_000 };

#[test]
fn a_udp_jitter_row_is_served_at_the_mib_oids_in_the_mib_units() {
    let mut r = row(7, "udp-jitter");
    r.train = Some((10, 20));
    r.voice = Some((Codec::G711alaw, 5));
    r.precision = Some(Precision::Ms);
    let rtt = ipsla_core::reaction::ReactionConfig {
        element: ipsla_core::reaction::Element::Rtt,
        threshold_type: ipsla_core::reaction::ThresholdType::XOfY(3, 5),
        rising: 150.0,
        falling: 100.0,
        action: ipsla_core::reaction::Action::Trap,
    };
    r.reactions = vec![(rtt, true)];
    r.latest = latest(JITTER_RUN);
    let v = View::build(&[r], true, Some(UPTIME));
    let g = |s: &str| v.get(&oid(s));
    let ctrl = "1.3.6.1.4.1.9.9.42.1.2";
    let jit = "1.3.6.1.4.1.9.9.42.1.5.2.1";
    // rttMonApplVersion.0, rttMonApplResponder.0, rttMonApplSupportedRttTypesValid
    assert_eq!(g("1.3.6.1.4.1.9.9.42.1.1.1.0"), Value::OctetString(version_text().into_bytes()));
    assert_eq!(g("1.3.6.1.4.1.9.9.42.1.1.13.0"), Value::Integer(1));
    assert_eq!(g("1.3.6.1.4.1.9.9.42.1.1.7.1.2.9"), Value::Integer(1));
    assert_eq!(g("1.3.6.1.4.1.9.9.42.1.1.7.1.2.7"), Value::Integer(1)); // http
    assert_eq!(g("1.3.6.1.4.1.9.9.42.1.1.7.1.2.3"), Value::Integer(2)); // fileIO: not ours
    // rttMonCtrlAdminTable: Tag (16 octets), RttType jitter(9), Threshold, Frequency, Timeout, LongTag
    assert_eq!(g(&format!("{ctrl}.1.1.3.7")), Value::OctetString(b"a tag longer tha".to_vec()));
    assert_eq!(g(&format!("{ctrl}.1.1.4.7")), Value::Integer(9));
    assert_eq!(g(&format!("{ctrl}.1.1.5.7")), Value::Integer(250));
    assert_eq!(g(&format!("{ctrl}.1.1.6.7")), Value::Integer(60));
    assert_eq!(g(&format!("{ctrl}.1.1.7.7")), Value::Integer(1000));
    assert_eq!(g(&format!("{ctrl}.1.1.12.7")), Value::OctetString(b"a tag longer than sixteen".to_vec()));
    // rttMonEchoAdminTable: Protocol jitterAppl(27), TargetAddress 4 octets, TargetPort, ToS,
    // Interval, NumPackets, codec g711alaw(2) and its interval, packets, advantage factor
    assert_eq!(g(&format!("{ctrl}.2.1.1.7")), Value::Integer(27));
    assert_eq!(g(&format!("{ctrl}.2.1.2.7")), Value::OctetString(vec![192, 168, 1, 200]));
    assert_eq!(g(&format!("{ctrl}.2.1.5.7")), Value::Integer(5000));
    assert_eq!(g(&format!("{ctrl}.2.1.9.7")), Value::Integer(0xb8));
    assert_eq!(g(&format!("{ctrl}.2.1.17.7")), Value::Integer(20));
    assert_eq!(g(&format!("{ctrl}.2.1.18.7")), Value::Integer(10));
    assert_eq!(g(&format!("{ctrl}.2.1.27.7")), Value::Integer(2));
    assert_eq!(g(&format!("{ctrl}.2.1.31.7")), Value::Integer(5));
    assert_eq!(g(&format!("{ctrl}.2.1.37.7")), Value::Integer(1)); // milliseconds
    assert_eq!(g(&format!("{ctrl}.2.1.6.7")), Value::NoSuchInstance); // no source-ip configured
    // rttMonCtrlOperTable: NumRtts, RttLife forever, State active(6), no timeout
    assert_eq!(g(&format!("{ctrl}.9.1.8.7")), Value::Integer(3));
    assert_eq!(g(&format!("{ctrl}.9.1.9.7")), Value::Integer(i32::MAX));
    assert_eq!(g(&format!("{ctrl}.9.1.10.7")), Value::Integer(6));
    assert_eq!(g(&format!("{ctrl}.9.1.6.7")), Value::Integer(2));
    // rttMonReactTable.7.1: rtt(1), xOfy(4), trapOnly(2), 150/100 ms, X 3 of Y 5, occurred, active
    for (col, want) in [(2, 1), (3, 4), (4, 2), (5, 150), (6, 100), (7, 3), (8, 5), (10, 1), (11, 1)] {
        assert_eq!(g(&format!("{ctrl}.19.1.{col}.7.1")), Value::Integer(want), "react column {col}");
    }
    // rttMonLatestRttOperTable: 2500.6 µs → 3 ms; ok(1); 12.34 s after the master's 50 s
    assert_eq!(g(&format!("{ctrl}.10.1.1.7")), Value::Gauge32(3));
    assert_eq!(g(&format!("{ctrl}.10.1.2.7")), Value::Integer(1));
    assert_eq!(g(&format!("{ctrl}.10.1.5.7")), Value::TimeTicks(5_000 + 1_234));
    assert_eq!(g(&format!("{ctrl}.10.1.6.7")), Value::NoSuchInstance); // null for jitter
    // rttMonLatestJitterOperTable, ms
    for (col, want) in [
        (1, 10),   // NumOfRTT
        (2, 25),   // RTTSum: 25.006 ms
        (3, 70),   // RTTSum2: 70 ms²
        (4, 1),    // RTTMin 1.4004 ms
        (5, 5),    // RTTMax 4.6 ms
        (6, 0),    // MinOfPositivesSD 0.1 ms
        (7, 2),    // MaxOfPositivesSD
        (8, 4),    // NumOfPositivesSD
        (9, 4),    // SumOfPositivesSD
        (13, 5),   // NumOfNegativesSD
        (18, 0),   // NumOfPositivesDS
        (26, 1),   // PacketLossSD
        (27, 2),   // PacketLossDS
        (28, 5),   // PacketOutOfSequence
        (29, 3),   // PacketMIA
        (30, 4),   // PacketLateArrival
        (33, 12),  // OWSumSD
        (35, 1),   // OWMinSD 0.7 ms
        (40, 3),   // OWMaxDS 2.5 ms
        (41, 10),  // NumOfOW
        (42, 407), // MOS ×100
        (43, 11),  // ICPIF
        (44, 0),   // IAJOut 0.3 ms
        (46, 0),   // AvgJitter 0.45 ms
        (47, 1),   // AvgSDJ 0.9 ms
        (49, 1),   // OWAvgSD 1.2 ms
        (53, 0),   // RTTSumHigh
        (59, 6),   // NumOverThresh
    ] {
        assert_eq!(g(&format!("{jit}.{col}.7")), Value::Gauge32(want), "column {col}");
    }
    assert_eq!(g(&format!("{jit}.31.7")), Value::Integer(1)); // Sense ok
    assert_eq!(g(&format!("{jit}.51.7")), Value::Integer(1)); // NTPState sync
    // no sample, no number: DS jitter had none, IAJIn none; Sum2 per sign is not kept
    for col in [16, 17, 45, 48, 10, 52] {
        assert_eq!(g(&format!("{jit}.{col}.7")), Value::NoSuchInstance, "column {col}");
    }
    assert_eq!(g(&format!("{jit}.60.7")), Value::NoSuchObject);
}

#[test]
fn microsecond_precision_states_the_jitter_columns_in_microseconds_and_splits_large_sums() {
    let mut r = row(1, "udp-jitter");
    let doc = JITTER_RUN.replace(r#""precision":"ms""#, r#""precision":"us""#).replace("70000000.0", "9000000000000.0");
    r.latest = latest(&doc);
    let v = View::build(&[r], false, None);
    let jit = "1.3.6.1.4.1.9.9.42.1.5.2.1";
    assert_eq!(v.get(&oid(&format!("{jit}.4.1"))), Value::Gauge32(1400));
    assert_eq!(v.get(&oid("1.3.6.1.4.1.9.9.42.1.2.10.1.1.1")), Value::Gauge32(2501));
    // 9e12 µs² = 2095 × 2^32 + 2043514880
    assert_eq!(v.get(&oid(&format!("{jit}.3.1"))), Value::Gauge32(2_043_514_880));
    assert_eq!(v.get(&oid(&format!("{jit}.54.1"))), Value::Gauge32(2095));
    // without the master's uptime there is no Time
    assert_eq!(v.get(&oid("1.3.6.1.4.1.9.9.42.1.2.10.1.5.1")), Value::NoSuchInstance);
}

#[test]
fn a_timed_out_run_has_a_sense_and_no_completion_time() {
    let mut r = row(2, "icmp-echo");
    r.port = None;
    r.latest = latest(
        r#"{"return_code":"timeout","reason":"no reply from 192.168.1.200","precision":"ms",
            "rtt_us":{"count":0,"min":null,"avg":null,"max":null,"sum":0.0,"sum2":0.0}}"#,
    );
    let v = View::build(&[r], false, Some(UPTIME));
    let lat = "1.3.6.1.4.1.9.9.42.1.2.10.1";
    assert_eq!(v.get(&oid(&format!("{lat}.1.2"))), Value::NoSuchInstance);
    assert_eq!(v.get(&oid(&format!("{lat}.2.2"))), Value::Integer(4)); // timeout(4)
    assert_eq!(v.get(&oid(&format!("{lat}.6.2"))), Value::OctetString(vec![192, 168, 1, 200]));
    assert_eq!(v.get(&oid("1.3.6.1.4.1.9.9.42.1.2.9.1.6.2")), Value::Integer(1)); // TimeoutOccurred
    assert_eq!(v.get(&oid("1.3.6.1.4.1.9.9.42.1.2.2.1.1.2")), Value::Integer(2)); // ipIcmpEcho
    assert_eq!(v.get(&oid("1.3.6.1.4.1.9.9.42.1.2.2.1.5.2")), Value::NoSuchInstance); // no port
    // a walk of the latest RTT table skips the missing instance: Sense follows nothing of column 1
    let r = SearchRange { start: oid(&format!("{lat}.1")), include: false, end: Oid::default() };
    assert_eq!(v.next(&r).map(|(n, _)| n.clone()), Some(oid(&format!("{lat}.2.2"))));
    // no jitter row for an echo operation; a column the agent does not serve is no object
    assert_eq!(v.get(&oid("1.3.6.1.4.1.9.9.42.1.5.2.1.1.2")), Value::NoSuchInstance);
    assert_eq!(v.get(&oid("1.3.6.1.4.1.9.9.42.1.2.1.1.10.2")), Value::NoSuchObject);
}

#[test]
fn kinds_without_an_rtt_type_have_no_rows_and_every_sense_is_the_mibs() {
    let v = View::build(&[row(3, "stamp"), row(4, "twamp"), row(5, "twamp-light")], false, None);
    assert_eq!(v.get(&oid("1.3.6.1.4.1.9.9.42.1.2.1.1.4.3")), Value::NoSuchInstance);
    // the appl scalars, the 26 supported-type rows, nothing else
    assert_eq!(v.len(), 2 + 26);
    let codes = [
        (ReturnCode::Ok, 1),
        (ReturnCode::OverThreshold, 3),
        (ReturnCode::Timeout, 4),
        (ReturnCode::Busy, 5),
        (ReturnCode::NoConnection, 6),
        (ReturnCode::SequenceError, 8),
        (ReturnCode::VerifyError, 9),
        (ReturnCode::Error, 16),
        (ReturnCode::AuthFailure, 27),
        (ReturnCode::FormatError, 28),
        (ReturnCode::PortInUse, 29),
        (ReturnCode::DnsServerTimeout, 11),
        (ReturnCode::TcpConnectTimeout, 12),
        (ReturnCode::HttpTransactionTimeout, 13),
        (ReturnCode::DnsQueryError, 14),
        (ReturnCode::HttpError, 15),
    ];
    for (code, want) in codes {
        assert_eq!(sense(code), want, "{code:?}");
    }
}

/// Walks the whole view with GetNext as a master does, from the registered subtree.
fn walk(v: &View) -> Vec<Oid> {
    let mut out = Vec::new();
    let mut r = SearchRange { start: Oid(RTTMON.to_vec()), include: false, end: oid("1.3.6.1.4.1.9.9.43") };
    while let Some((name, _)) = v.next(&r) {
        out.push(name.clone());
        r.start = name.clone();
    }
    out
}

#[test]
fn getnext_walks_in_strict_lexicographic_order_across_operations_and_tables() {
    let mut a = row(10, "udp-jitter");
    a.latest = latest(JITTER_RUN);
    let mut b = row(9, "udp-echo");
    b.latest = latest(JITTER_RUN);
    let v = View::build(&[a, b], false, Some(UPTIME));
    let names = walk(&v);
    assert_eq!(names.len(), v.len());
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    // op 9 comes before op 10 in each column (numeric, not textual, order), and a column's
    // last row is followed by the next column's first
    let i = names.iter().position(|n| *n == oid("1.3.6.1.4.1.9.9.42.1.2.1.1.4.9")).unwrap();
    assert_eq!(names[i + 1], oid("1.3.6.1.4.1.9.9.42.1.2.1.1.4.10"));
    assert_eq!(names[i + 2], oid("1.3.6.1.4.1.9.9.42.1.2.1.1.5.9"));
    assert_eq!(names[0], oid("1.3.6.1.4.1.9.9.42.1.1.1.0"));
    assert_eq!(names.last(), Some(&oid("1.3.6.1.4.1.9.9.42.1.5.2.1.59.10")));
    // the end bound is exclusive; an included start is returned itself
    let r = SearchRange { start: names[3].clone(), include: true, end: names[4].clone() };
    assert_eq!(v.next(&r).map(|(n, _)| n), Some(&names[3]));
    let r = SearchRange { start: names[3].clone(), include: false, end: names[4].clone() };
    assert_eq!(v.next(&r), None);
}

#[test]
fn getbulk_repeats_from_each_answer_and_stops_at_the_end_of_the_view() {
    let v = View::build(&[row(1, "tcp-connect")], false, None);
    let names = walk(&v);
    let range = |s: &Oid| SearchRange { start: s.clone(), include: false, end: Oid::default() };
    let pdu = Pdu::GetBulk {
        non_repeaters: 1,
        max_repetitions: 3,
        ranges: vec![range(&oid("1.3.6.1.4.1.9.9.42.1.1.1.0")), range(&names[names.len() - 2])],
    };
    let got = answer(&v, &pdu);
    let want = vec![
        VarBind { name: names[1].clone(), value: v.get(&names[1]) },
        VarBind { name: names[names.len() - 1].clone(), value: v.get(&names[names.len() - 1]) },
        VarBind { name: names[names.len() - 1].clone(), value: Value::EndOfMibView },
    ];
    assert_eq!(got, want);
    let get = answer(&v, &Pdu::Get(vec![range(&oid("1.3.6.1.4.1.9.9.42.1.2.1.1.6.1"))]));
    assert_eq!(get[0].value, Value::Integer(60));
}

fn hour(start_s: i64, rtt_count: u64) -> crate::store::HourAggregate {
    use crate::store::{AccUs, HourAggregate, JitterAggregate};
    let acc = |count, min, max, sum, sum2| AccUs {
        count,
        min: Some(min),
        avg: Some(sum / count as f64),
        max: Some(max),
        sum,
        sum2,
    };
    HourAggregate {
        op: 1,
        hour_start: String::new(),
        hour_start_s: start_s,
        runs: 3,
        ok: 2,
        failures: 1,
        return_codes: [("ok".to_string(), 2), ("timeout".to_string(), 1)].into(),
        completion_us: acc(2, 1000.0, 3000.0, 4000.0, 10_000_000.0),
        distribution_interval_ms: 20,
        distribution: Vec::new(),
        jitter: Some(JitterAggregate {
            sent: 30,
            received: 20,
            rtt_us: acc(rtt_count, 1400.0, 4600.0, 50_000.0, 140_000_000.0),
            jitter_sd_pos_us: acc(9, 100.0, 1900.0, 4000.0, 5_000_000.0),
            jitter_sd_neg_us: acc(9, 200.0, 1600.0, 4400.0, 5_000_000.0),
            loss_sd: 4,
            loss_ds: 6,
            loss_mia: 0,
            over_threshold: 2,
            ..Default::default()
        }),
    }
}

#[test]
fn jitter_stats_serve_each_stored_hour_indexed_by_its_start_as_the_masters_timestamp() {
    let mut r = row(1, "udp-jitter");
    // the master started 50 s before 1_800_000_000 s: hours before that stamp 0 (the newest kept)
    r.hours = vec![hour(1_799_992_800, 5), hour(1_799_996_400, 20), hour(1_800_000_000, 30)];
    let v = View::build(&[r], false, Some(UPTIME));
    let st = "1.3.6.1.4.1.9.9.42.1.3.5.1";
    let g = |col: u32, stamp: u32| v.get(&oid(&format!("{st}.{col}.1.{stamp}")));
    // stamps: 0 for the hour that began before the master, 5000 for the one at its 50th second
    assert_eq!(g(4, 0), Value::Counter32(20));
    assert_eq!(g(4, 5_000), Value::Counter32(30));
    assert_eq!(g(2, 5_000), Value::Counter32(2)); // Completions
    assert_eq!(g(5, 5_000), Value::Counter32(50)); // RTTSum, ms
    assert_eq!(g(6, 5_000), Value::Counter32(140)); // RTTSum2, ms²
    assert_eq!(g(8, 5_000), Value::Gauge32(1)); // RTTMin 1.4 ms
    assert_eq!(g(9, 5_000), Value::Gauge32(5)); // RTTMax 4.6 ms
    assert_eq!(g(12, 5_000), Value::Counter32(9)); // NumOfPositivesSD
    assert_eq!(g(13, 5_000), Value::Counter32(4)); // SumOfPositivesSD
    assert_eq!(g(34, 5_000), Value::Counter32(4)); // PacketLossSD
    assert_eq!(g(35, 5_000), Value::Counter32(6)); // PacketLossDS
    assert_eq!(g(63, 5_000), Value::Gauge32(0)); // AvgJitterSD (4000 + 4400) / 18 µs
    assert_eq!(g(69, 5_000), Value::Counter32(2)); // NumOverThresh
    // no DS jitter, no one-way delay, no MOS in that hour: no instance
    for col in [22, 41, 52, 56, 64] {
        assert_eq!(g(col, 5_000), Value::NoSuchInstance, "column {col}");
    }
    // three hours stored, two served
    let rows: Vec<_> = walk(&v).into_iter().filter(|n| n.starts_with(&oid(&format!("{st}.4")).0)).collect();
    assert_eq!(rows, vec![oid(&format!("{st}.4.1.0")), oid(&format!("{st}.4.1.5000"))]);
}

/// The instances under `prefix`, in walk order, as text without the prefix.
fn walk_under(v: &View, prefix: &str) -> Vec<String> {
    walk(v).into_iter().filter_map(|n| n.to_string().strip_prefix(&format!("{prefix}.")).map(String::from)).collect()
}

#[test]
fn the_schedule_table_states_the_configured_life_start_and_ageout() {
    use std::time::Duration;
    // started now at the master's 50th second, forever
    let a = row(1, "icmp-echo");
    // a random start within 2.5 s, a life of two hours, recurring, aged out after 10 min idle;
    // its life began before the master started
    let mut b = row(2, "udp-echo");
    b.schedule = ScheduleConfig {
        life: Some(Duration::from_secs(7200)),
        start: StartTime::Random(Duration::from_millis(2500)),
        ageout: Some(Duration::from_secs(600)),
        recurring: true,
        ..Default::default()
    };
    b.life_start_ns = Some(1_799_999_000_000_000_000);
    // IOS's defaults: pending, a life of 3600 s, never aged out
    let mut c = row(3, "tcp-connect");
    c.state = OperState::Pending;
    c.life_start_ns = None;
    c.schedule = ScheduleConfig::default();
    let v = View::build(&[a, b, c], false, Some(UPTIME));
    let s = "1.3.6.1.4.1.9.9.42.1.2.5.1";
    let g = |col: u32, id: u32| v.get(&oid(&format!("{s}.{col}.{id}")));
    for (col, want) in [(1, [i32::MAX, 7200, 3600]), (3, [0, 600, 0]), (4, [2, 1, 2]), (5, [0, 600, 0]), (6, [2, 3, 1])]
    {
        for (id, w) in (1..=3).zip(want) {
            assert_eq!(g(col, id), Value::Integer(w), "column {col}, operation {id}");
        }
    }
    // RttStartTime: the master's 50 s; 1 for a life older than the master; 0 while pending
    assert_eq!(g(2, 1), Value::TimeTicks(5_000));
    assert_eq!(g(2, 2), Value::TimeTicks(1));
    assert_eq!(g(2, 3), Value::TimeTicks(0));
    // StartDelay: only a random start has one, in ms
    assert_eq!(g(7, 2), Value::Integer(2500));
    assert_eq!(g(7, 1), Value::NoSuchInstance);
    let mut want: Vec<String> = (1..=6).flat_map(|col| (1..=3).map(move |id| format!("{col}.{id}"))).collect();
    want.push("7.2".into());
    assert_eq!(walk_under(&v, s), want);
}

#[test]
fn an_http_row_states_each_phase_in_ms_from_the_kinds_own_keys() {
    let mut r = row(4, "http");
    (r.target, r.port) = (None, None);
    r.url = Some(("http://192.0.2.1:8080/x".into(), "1.1".into()));
    r.latest = latest(
        r#"{"operation":"http","return_code":"ok",
            "rtt_us":{"count":1,"min":12345.6,"avg":12345.6,"max":12345.6,"sum":12345.6,"sum2":152413839.0},
            "http":{"scheme":"http","dns_server":null,"address":"192.0.2.1:8080","status":200,
                    "body_octets":5120,"body_truncated":false,"dns_us":null,"connect_us":1499.5,
                    "tls_us":null,"first_byte_us":8000.0,"transfer_us":2846.1,"total_us":12345.6}}"#,
    );
    r.history = latest(r#"{"return_code":"ok"}"#).into_iter().collect();
    let v = View::build(&[r], false, Some(UPTIME));
    let g = |s: &str| v.get(&oid(s));
    let ctrl = "1.3.6.1.4.1.9.9.42.1.2";
    // http(7), httpAppl(25), httpGet(1), the version and the URL; no port for http
    assert_eq!(g(&format!("{ctrl}.1.1.4.4")), Value::Integer(7));
    assert_eq!(g(&format!("{ctrl}.2.1.1.4")), Value::Integer(25));
    assert_eq!(g(&format!("{ctrl}.2.1.13.4")), Value::Integer(1));
    assert_eq!(g(&format!("{ctrl}.2.1.14.4")), Value::OctetString(b"1.1".to_vec()));
    assert_eq!(g(&format!("{ctrl}.2.1.15.4")), Value::OctetString(b"http://192.0.2.1:8080/x".to_vec()));
    assert_eq!(g(&format!("{ctrl}.2.1.5.4")), Value::NoSuchInstance);
    // the latest RTT: 12.3456 ms; no address for http (the MIB: null)
    assert_eq!(g(&format!("{ctrl}.10.1.1.4")), Value::Gauge32(12));
    assert_eq!(g(&format!("{ctrl}.10.1.6.4")), Value::NoSuchInstance);
    let h = "1.3.6.1.4.1.9.9.42.1.5.1.1";
    assert_eq!(
        walk_under(&v, h),
        ["1.4", "3.4", "4.4", "5.4", "6.4", "7.4"].map(String::from),
        "no DNSRTT: the URL holds an address"
    );
    assert_eq!(g(&format!("{h}.1.4")), Value::Gauge32(12)); // RTT
    assert_eq!(g(&format!("{h}.2.4")), Value::NoSuchInstance); // DNSRTT
    assert_eq!(g(&format!("{h}.3.4")), Value::Gauge32(1)); // TCPConnectRTT 1.4995 ms
    assert_eq!(g(&format!("{h}.4.4")), Value::Gauge32(11)); // TransactionRTT 8 + 2.8461 ms
    assert_eq!(g(&format!("{h}.5.4")), Value::Gauge32(5120)); // MessageBodyOctets
    assert_eq!(g(&format!("{h}.6.4")), Value::Integer(1));
    assert_eq!(g(&format!("{h}.7.4")), Value::OctetString(Vec::new()));
    // the MIB keeps no history for http
    assert!(walk_under(&v, "1.3.6.1.4.1.9.9.42.1.4").is_empty());
}

#[test]
fn a_failed_http_run_states_its_sense_and_why_and_no_times_it_did_not_measure() {
    let mut r = row(4, "http");
    r.latest = latest(
        r#"{"operation":"http","return_code":"dns_server_timeout","reason":"no answer from 192.0.2.53:53",
            "http":{"scheme":"http","dns_server":"192.0.2.53:53","address":null,"status":null,
                    "body_octets":null,"body_truncated":false,"dns_us":null,"connect_us":null,
                    "tls_us":null,"first_byte_us":null,"transfer_us":null,"total_us":null}}"#,
    );
    let v = View::build(&[r], false, Some(UPTIME));
    let h = "1.3.6.1.4.1.9.9.42.1.5.1.1";
    assert_eq!(walk_under(&v, h), ["6.4", "7.4"].map(String::from));
    assert_eq!(v.get(&oid(&format!("{h}.6.4"))), Value::Integer(11)); // dnsServerTimeout
    assert_eq!(v.get(&oid(&format!("{h}.7.4"))), Value::OctetString(b"no answer from 192.0.2.53:53".to_vec()));
    assert_eq!(v.get(&oid("1.3.6.1.4.1.9.9.42.1.2.10.1.2.4")), Value::Integer(11));
}

#[test]
fn dns_and_path_rows_are_in_the_admin_and_latest_tables_with_their_types() {
    let mut dns = row(5, "dns");
    (dns.target, dns.port) = (None, Some(53));
    dns.lookup = Some(("www.example.com".into(), Some("192.0.2.53".parse().unwrap())));
    dns.latest = latest(r#"{"operation":"dns","return_code":"dns_query_error","reason":"NXDOMAIN"}"#);
    let mut path = row(6, "path-echo");
    path.port = None;
    path.latest = latest(
        r#"{"operation":"path-echo","return_code":"ok",
            "rtt_us":{"count":1,"min":3000.0,"avg":3000.0,"max":3000.0,"sum":3000.0,"sum2":9000000.0}}"#,
    );
    let mut pj = row(7, "path-jitter");
    pj.port = None;
    let v = View::build(&[dns, path, pj], false, Some(UPTIME));
    let g = |s: &str| v.get(&oid(s));
    let ctrl = "1.3.6.1.4.1.9.9.42.1.2";
    // dns(8), pathEcho(2) for both path kinds
    for (id, ty, proto) in [(5, 8, 26), (6, 2, 2), (7, 2, 2)] {
        assert_eq!(g(&format!("{ctrl}.1.1.4.{id}")), Value::Integer(ty), "RttType of {id}");
        assert_eq!(g(&format!("{ctrl}.2.1.1.{id}")), Value::Integer(proto), "Protocol of {id}");
    }
    // dns: the name and the server; no TargetPort (the MIB: udpEcho, tcpConnect, jitter)
    assert_eq!(g(&format!("{ctrl}.2.1.11.5")), Value::OctetString(b"www.example.com".to_vec()));
    assert_eq!(g(&format!("{ctrl}.2.1.12.5")), Value::OctetString(vec![192, 0, 2, 53]));
    assert_eq!(g(&format!("{ctrl}.2.1.5.5")), Value::NoSuchInstance);
    // latest: the dns failure has a sense, no time; the path's RTT and target
    assert_eq!(g(&format!("{ctrl}.10.1.1.5")), Value::NoSuchInstance);
    assert_eq!(g(&format!("{ctrl}.10.1.2.5")), Value::Integer(14)); // dnsQueryError
    assert_eq!(g(&format!("{ctrl}.10.1.1.6")), Value::Gauge32(3));
    assert_eq!(g(&format!("{ctrl}.10.1.6.6")), Value::OctetString(vec![192, 168, 1, 200]));
    // path-jitter without a run yet: admin rows, no latest row
    assert_eq!(g(&format!("{ctrl}.10.1.2.7")), Value::NoSuchInstance);
}

#[test]
fn an_icmp_jitter_row_is_served_in_the_icmp_mibs_table_in_ms() {
    let mut r = row(7, "icmp-jitter");
    r.port = None;
    r.latest = latest(&JITTER_RUN.replacen('{', r#"{"operation":"icmp-jitter","#, 1));
    let v = View::build(&[r], false, Some(UPTIME));
    let ij = "1.3.6.1.4.1.9.9.42.1.5.4.1";
    let want: Vec<(u32, Value)> = [
        (1, 10),  // NumRTT
        (2, 25),  // RTTSum 25.006 ms
        (3, 70),  // RTTSum2 70 ms²
        (4, 1),   // RTTMin 1.4004 ms
        (5, 5),   // RTTMax 4.6 ms
        (6, 0),   // MinPosSD 0.1 ms
        (7, 2),   // MaxPosSD 1.9 ms
        (8, 4),   // NumPosSD
        (9, 4),   // SumPosSD 4 ms
        (11, 0),  // MinNegSD 0.2 ms
        (12, 2),  // MaxNegSD 1.6 ms
        (13, 5),  // NumNegSD
        (14, 4),  // SumNegSD 4.1 ms
        (18, 0),  // NumPosDS
        (19, 0),  // SumPosDS
        (23, 0),  // NumNegDS
        (24, 0),  // SumNegDS
        (26, 6),  // PktLoss: 1 SD + 2 DS + 3 MIA
        (27, 5),  // PktOutSeqBoth
        (32, 4),  // PktLateA
        (35, 12), // OWSumSD
        (36, 16), // OWSum2SD
        (37, 1),  // OWMinSD 0.7 ms
        (38, 2),  // OWMaxSD 2.1 ms
        (39, 13), // OWSumDS
        (40, 18), // OWSum2DS
        (41, 1),  // OWMinDS 0.6 ms
        (42, 3),  // OWMaxDS 2.5 ms
        (43, 10), // NumOW
        (44, 0),  // AvgJitter 0.45 ms
        (45, 1),  // AvgSDJ 0.9 ms
        (47, 1),  // OWAvgSD 1.2 ms
        (48, 1),  // OWAvgDS 1.3 ms
        (49, 0),  // IAJOut 0.3 ms
    ]
    .into_iter()
    .map(|(c, n)| (c, Value::Gauge32(n)))
    .chain([(31, Value::Integer(1))])
    .collect();
    let mut want = want;
    want.sort_by_key(|(c, _)| *c);
    let got: Vec<(u32, Value)> = walk_under(&v, ij)
        .iter()
        .map(|n| (n.strip_suffix(".7").unwrap().parse().unwrap(), v.get(&oid(&format!("{ij}.{n}")))))
        .collect();
    // no DS jitter, no IAJIn, no Sum2 per sign, no per-direction order, skipped or loss-run
    // counts: no instance
    assert_eq!(got, want);
    assert_eq!(v.get(&oid(&format!("{ij}.46.7"))), Value::NoSuchInstance);
    assert_eq!(v.get(&oid(&format!("{ij}.51.7"))), Value::NoSuchObject);
    // not in the udp-jitter table
    assert_eq!(v.get(&oid("1.3.6.1.4.1.9.9.42.1.5.2.1.1.7")), Value::NoSuchInstance);
}

#[test]
fn stats_capture_and_collect_serve_each_stored_hour_at_path_hop_and_bucket_one() {
    let mut r = row(1, "udp-echo");
    // hours before the master's start stamp 0: the newest of them is served
    r.hours = vec![hour(1_799_992_800, 5), hour(1_799_996_400, 20), hour(1_800_000_000, 30)];
    r.hours[2].return_codes.insert("over_threshold".into(), 1);
    let v = View::build(&[r], false, Some(UPTIME));
    let cap = "1.3.6.1.4.1.9.9.42.1.3.1.1";
    let col = "1.3.6.1.4.1.9.9.42.1.3.2.1";
    let g = |t: &str, i: &str| v.get(&oid(&format!("{t}.{i}")));
    // capture: completions, over threshold, sum 4 ms, sum of squares 10 ms², max 3 ms, min 1 ms
    for (c, want) in [
        (5, Value::Integer(2)),
        (6, Value::Integer(1)),
        (7, Value::Gauge32(4)),
        (8, Value::Gauge32(10)),
        (9, Value::Gauge32(0)),
        (10, Value::Gauge32(3)),
        (11, Value::Gauge32(1)),
    ] {
        assert_eq!(g(cap, &format!("{c}.1.5000.1.1.1")), want, "capture column {c}");
    }
    assert_eq!(g(cap, "6.1.0.1.1.1"), Value::Integer(0));
    // collect: one timeout, no connection, sequence or verify error; the target (udpEcho)
    for (c, want) in [
        (2, Value::Integer(1)),
        (4, Value::Integer(0)),
        (6, Value::Integer(0)),
        (7, Value::Integer(0)),
        (8, Value::OctetString(vec![192, 168, 1, 200])),
    ] {
        assert_eq!(g(col, &format!("{c}.1.5000.1.1")), want, "collect column {c}");
    }
    // busies, disconnects, drops: not kept, no instance
    for c in [1, 3, 5] {
        assert_eq!(g(col, &format!("{c}.1.5000.1.1")), Value::NoSuchInstance, "collect column {c}");
    }
    let hours = |cols: &[u32], tail: &str| -> Vec<String> {
        cols.iter().flat_map(|c| [0, 5000].map(|h| format!("{c}.1.{h}.{tail}"))).collect()
    };
    assert_eq!(walk_under(&v, cap), hours(&[5, 6, 7, 8, 9, 10, 11], "1.1.1"));
    assert_eq!(walk_under(&v, col), hours(&[2, 4, 6, 7, 8], "1.1"));
}

#[test]
fn with_several_distribution_buckets_each_bucket_has_its_count_only() {
    use crate::store::Bucket;
    let mut r = row(2, "tcp-connect");
    r.hours = vec![hour(1_800_000_000, 1)];
    r.hours[0].distribution = vec![
        Bucket { lower_ms: 0, upper_ms: Some(20), count: 1 },
        Bucket { lower_ms: 20, upper_ms: Some(40), count: 0 },
        Bucket { lower_ms: 40, upper_ms: None, count: 1 },
    ];
    let v = View::build(&[r], false, Some(UPTIME));
    let cap = "1.3.6.1.4.1.9.9.42.1.3.1.1";
    assert_eq!(walk_under(&v, cap), ["5.2.5000.1.1.1", "5.2.5000.1.1.2", "5.2.5000.1.1.3"].map(String::from));
    assert_eq!(v.get(&oid(&format!("{cap}.5.2.5000.1.1.3"))), Value::Integer(1));
    assert_eq!(v.get(&oid(&format!("{cap}.7.2.5000.1.1.1"))), Value::NoSuchInstance);
}

#[test]
fn history_serves_each_stored_run_as_a_bucket_of_life_one() {
    let mut r = row(2, "icmp-echo");
    r.port = None;
    let ok = latest(
        r#"{"operation":"icmp-echo","return_code":"ok",
            "rtt_us":{"count":1,"min":2500.6,"avg":2500.6,"max":2500.6,"sum":2500.6,"sum2":6253000.0}}"#,
    );
    let mut timeout =
        latest(r#"{"operation":"icmp-echo","return_code":"timeout","reason":"no reply from 192.168.1.200"}"#);
    if let Some(t) = &mut timeout {
        t.start_ns += 60_000_000_000;
    }
    r.history = ok.into_iter().chain(timeout).collect();
    let v = View::build(&[r], false, Some(UPTIME));
    let h = "1.3.6.1.4.1.9.9.42.1.4.1.1";
    assert_eq!(
        walk_under(&v, h),
        ["4.2.1.1.1", "4.2.1.2.1", "5.2.1.1.1", "5.2.1.2.1", "6.2.1.1.1", "7.2.1.1.1", "7.2.1.2.1", "9.2.1.2.1"]
            .map(String::from)
    );
    let g = |i: &str| v.get(&oid(&format!("{h}.{i}")));
    // SampleTime: 12.34 s and 72.34 s after the master's 50 s
    assert_eq!(g("4.2.1.1.1"), Value::TimeTicks(6_234));
    assert_eq!(g("4.2.1.2.1"), Value::TimeTicks(12_234));
    assert_eq!(g("5.2.1.1.1"), Value::OctetString(vec![192, 168, 1, 200]));
    assert_eq!(g("6.2.1.1.1"), Value::Gauge32(3));
    assert_eq!(g("6.2.1.2.1"), Value::NoSuchInstance); // timed out: no completion time
    assert_eq!(g("7.2.1.1.1"), Value::Integer(1));
    assert_eq!(g("7.2.1.2.1"), Value::Integer(4));
    assert_eq!(g("9.2.1.2.1"), Value::OctetString(b"no reply from 192.168.1.200".to_vec()));
}
