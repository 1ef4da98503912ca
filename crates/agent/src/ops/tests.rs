//! The registry and the validation of `[[operation]]` tables.

use super::common::validate;
use super::*;
use crate::config::Result;
use crate::store::HistoryConfig;
use ipsla_core::ops::Precision;
use ipsla_core::reaction::{Action, Element, ThresholdType};
use ipsla_core::schedule::StartTime;
use ipsla_core::twamp::client::Secret;
use ipsla_wire::twamp::SecurityMode;
use std::time::Duration;

fn table(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}
fn check(text: &str, key: &str, id: u32) -> Result<OperationDef> {
    validate(&table(text), Namer::Config(key), id)
}
fn downcast<T: 'static>(d: &OperationDef) -> &T {
    d.spec.op_as::<T>().unwrap_or_else(|| panic!("{:?}", d.spec.op))
}

fn op(extra: &str) -> Result<OperationDef> {
    check(&format!("type = \"udp-jitter\"\ntarget = \"127.0.0.1\"\n{extra}"), "operation[1]", 1)
}

#[test]
fn a_bare_frequency_is_seconds_and_other_bare_durations_say_how_to_write_them() {
    assert_eq!(op("frequency = 10").unwrap().schedule.frequency, Duration::from_secs(10), "IOS frequency 10");
    assert_eq!(op("frequency = \"10s\"").unwrap().schedule.frequency, Duration::from_secs(10));
    let e = |extra: &str| op(extra).unwrap_err().to_string();
    assert_eq!(e("frequency = 0"), "operation[1].frequency: 0s is out of range; allowed 1s to 7days");
    assert_eq!(e("timeout = 5000"), "operation[1].timeout = 5000: write a duration with its unit, e.g. \"5000ms\"");
    assert_eq!(e("interval = \"20\""), "operation[1].interval = 20: write a duration with its unit, e.g. \"20ms\"");
    assert_eq!(e("life = 3600"), "operation[1].life = 3600: write a duration with its unit, e.g. \"3600s\"");
}

#[test]
fn defaults_are_ios_defaults() {
    let d = op("").unwrap();
    let j = downcast::<UdpJitter>(&d);
    assert_eq!((j.packets, j.interval, j.size, j.precision), (10, Duration::from_millis(20), 32, Precision::Ms));
    assert_eq!(d.spec.timeout, Duration::from_secs(5));
    assert_eq!(d.schedule.frequency, Duration::from_secs(60));
    assert_eq!(d.schedule.life, None, "the agent runs forever unless told");
    assert_eq!(j.control.port, 1967);
    let c = op("codec = \"g711ulaw\"").unwrap();
    let j = downcast::<UdpJitter>(&c);
    assert_eq!((j.packets, j.size), (1000, 172));
}

#[test]
fn errors_name_the_key_and_the_choices() {
    let e = op("precision = \"ns\"").unwrap_err().to_string();
    assert_eq!(e, "operation[1].precision: \"ns\" is not allowed; allowed: ms, us");
    let e = op("packets = 0").unwrap_err().to_string();
    assert!(e.starts_with("operation[1].packets: 0 is out of range"), "{e}");
    let e = op("frequency = \"2s\"").unwrap_err().to_string();
    assert!(e.contains("operation[1].frequency") && e.contains("shorter than one run"), "{e}");
    let e = op("start = \"tomorrow\"").unwrap_err().to_string();
    assert!(e.contains("operation[1].start") && e.contains("pending"), "{e}");
    let e = check("type = \"udp-echo\"\ntarget = \"127.0.0.1\"\npackets = 5", "operation[2]", 2).unwrap_err();
    assert_eq!(
        e.to_string(),
        "operation[2].packets: udp-echo does not take packets (only udp-jitter, icmp-jitter, path-jitter, stamp, twamp and twamp-light do)"
    );
    let e = check("type = \"ftp\"\ntarget = \"127.0.0.1\"", "operation[3]", 3).unwrap_err().to_string();
    assert!(e.starts_with("operation[3].type: \"ftp\" is not an operation; allowed: udp-jitter, udp-echo"), "{e}");
    let e = check("type = \"udp-echo\"\ntarget = \"x\"\nfrequncy = \"1s\"", "operation[0]", 1).unwrap_err();
    assert_eq!(e.to_string(), "operation[0].frequncy: not an operation key; did you mean frequency?");
    let e = check("type = \"icmp-echo\"\ntarget = \"127.0.0.1\"\nport = 7", "operation[0]", 1).unwrap_err();
    assert!(e.to_string().starts_with("operation[0].port: icmp-echo does not take port (only udp-jitter,"), "{e}");
    let e = check("type = \"udp-echo\"\ntarget = \"127.0.0.1\"\ntos = 4\ndscp = 1", "operation[0]", 1).unwrap_err();
    assert_eq!(e.to_string(), "operation[0].tos: tos and dscp set the same byte; set one of them");
    let e = check("type = \"udp-jitter\"\ntarget = \"127.0.0.1\"\npackets = \"ten\"", "operation[0]", 1).unwrap_err();
    assert_eq!(e.to_string(), "operation[0].packets: \"ten\" is not an integer");
}

#[test]
fn reactions() {
    let d = op("codec = \"g729a\"\n[[reaction]]\nelement = \"mos\"\nthreshold_type = \"consecutive 3\"\nthreshold = [400, 320]\naction = \"alert-and-trigger\"\n[[reaction]]\nelement = \"timeout\"\nthreshold_type = \"immediate\"").unwrap();
    assert_eq!(d.reactions.len(), 2);
    assert_eq!(d.reactions[0].threshold_type, ThresholdType::Consecutive(3));
    assert_eq!(
        (d.reactions[0].rising, d.reactions[0].falling, d.reactions[0].action),
        (400.0, 320.0, Action::AlertAndTrigger)
    );
    let e = op("[[reaction]]\nelement = \"mos\"").unwrap_err().to_string();
    assert!(e.contains("operation[1].reaction[0].element: mos does not apply"), "{e}");
    let e = op("[[reaction]]\nelement = \"rtt\"\nthreshold_type = \"xofy 5\"").unwrap_err().to_string();
    assert!(e.contains("operation[1].reaction[0].threshold_type") && e.contains("xofy X Y"), "{e}");
    let e = op("[[reaction]]\nelement = \"timeout\"\nthreshold = [1, 0]").unwrap_err().to_string();
    assert!(e.contains("takes no threshold values"), "{e}");
    let e = op("[[reaction]]\nelement = \"rtt\"\nthreshold = [10, 50]").unwrap_err().to_string();
    assert!(e.contains("rising 10 is below falling 50"), "{e}");
    let e = op("[[reaction]]\nelement = \"latency\"").unwrap_err().to_string();
    assert!(e.contains("allowed: rtt, jitterAvg"), "{e}");
}

#[test]
fn history_keys() {
    assert_eq!(op("").unwrap().history, HistoryConfig { hours: 2, distributions: 1, interval_ms: 20 });
    let d = op("history_hours = 0\ndistributions = 5\ndistribution_interval = 10").unwrap();
    assert_eq!(d.history, HistoryConfig { hours: 0, distributions: 5, interval_ms: 10 });
    let e = op("history_hours = 26").unwrap_err().to_string();
    assert_eq!(e, "operation[1].history_hours: 26 is out of range; allowed 0 to 25");
    let e = op("distributions = 0").unwrap_err().to_string();
    assert_eq!(e, "operation[1].distributions: 0 is out of range; allowed 1 to 20");
    let e = op("distribution_interval = 101").unwrap_err().to_string();
    assert_eq!(e, "operation[1].distribution_interval: 101 is out of range; allowed 1 to 100");
}

#[test]
fn schedule_fields() {
    let d = op("start = \"at 23:30\"\nlife = \"1h\"\nrecurring = true").unwrap();
    assert_eq!((d.schedule.start, d.schedule.recurring), (StartTime::At(Duration::from_secs(84_600)), true));
    let e = op("start = \"at 24:00\"").unwrap_err().to_string();
    assert!(e.contains("operation[1].start") && e.contains("at HH:MM[:SS]"), "{e}");
    let e = op("recurring = true").unwrap_err().to_string();
    assert!(e.contains("operation[1].recurring") && e.contains("shorter than one day"), "{e}");
    let e = op("recurring = true\nlife = \"1h\"\nageout = \"2h\"").unwrap_err().to_string();
    assert!(e.contains("life + ageout"), "{e}");
    let d = op("start = \"after 30s\"\nlife = \"3600s\"\nageout = \"1h\"").unwrap();
    assert_eq!(d.schedule.start, StartTime::After(Duration::from_secs(30)));
    assert_eq!(d.schedule.life, Some(Duration::from_secs(3600)));
    assert_eq!(d.schedule.ageout, Some(Duration::from_secs(3600)));
}

#[test]
fn stamp_operation_keys() {
    let d = check(
        "type = \"stamp\"\ntarget = \"127.0.0.1\"\nssid = 9\ntlvs = [\"extra-padding=8,cos\", \"location\"]\ndscp = 46",
        "operation[0]",
        1,
    )
    .unwrap();
    assert_eq!(d.spec.port, 862, "STAMP's port by default");
    use ipsla_core::ops::stamp::TlvRequest as T;
    assert_eq!(
        downcast::<Stamp>(&d),
        &Stamp {
            packets: 10,
            interval: Duration::from_millis(20),
            ssid: 9,
            key: None,
            tlvs: vec![T::ExtraPadding(8), T::ClassOfService(46), T::Location],
            clock: ClockSync::NONE,
        }
    );
    let e = check("type = \"stamp\"\ntarget = \"127.0.0.1\"\ntlvs = [\"hmac\"]", "operation[0]", 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("operation[0].tlvs") && e.contains("allowed: extra-padding=N"), "{e}");
}

fn twamp(extra: &str) -> Result<OperationDef> {
    check(&format!("type = \"twamp\"\ntarget = \"127.0.0.1\"\n{extra}"), "operation[4]", 4)
}

#[test]
fn twamp_operation_keys() {
    let d = twamp("").unwrap();
    assert_eq!(d.spec.port, 862, "the TWAMP-Control port by default");
    assert_eq!(d.spec.control_label(), "twamp");
    assert_eq!(
        downcast::<Twamp>(&d),
        &Twamp {
            packets: 10,
            interval: Duration::from_millis(20),
            mode: SecurityMode::Unauthenticated,
            secret: None,
            padding: None,
            clock: ClockSync::NONE,
        }
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("twamp.keys");
    std::fs::write(&keys, "# twampd pfs\nalice 74657374736563726574\n").unwrap();
    let kf = keys.display().to_string();
    let d = twamp(&format!(
        "mode = \"encrypted\"\ntwamp_key_id = \"alice\"\nsecret_file = \"{kf}\"\npadding = 100\nport = 8620\npackets = 50\n[[reaction]]\nelement = \"rtt\"\nthreshold_type = \"immediate\"\nthreshold = [50, 10]\n[[reaction]]\nelement = \"packetLossSD\"\nthreshold_type = \"consecutive 2\""
    ))
    .unwrap();
    assert_eq!(d.spec.port, 8620);
    let t = downcast::<Twamp>(&d);
    assert_eq!((t.packets, t.mode, t.padding), (50, SecurityMode::Encrypted, Some(100)));
    assert_eq!(t.secret.as_ref(), Some(&Secret::new("alice", b"testsecret").unwrap()));
    // reactions work on the common result, jitter elements included
    assert_eq!(d.reactions.len(), 2);
    assert_eq!(d.reactions[0].element, Element::Rtt);
    assert_eq!((d.reactions[0].rising, d.reactions[0].falling), (50.0, 10.0));
    assert_eq!(d.reactions[1].element, Element::from_keyword("packetLossSD").unwrap());
    assert_eq!(d.reactions[1].threshold_type, ThresholdType::Consecutive(2));
    assert!(d.spec.op.kind().jitter());

    let e = twamp("mode = \"strong\"").unwrap_err().to_string();
    assert_eq!(e, "operation[4].mode: \"strong\" is not allowed; allowed: open, auth, encrypted, mixed");
    let e = twamp("mode = \"auth\"").unwrap_err().to_string();
    assert_eq!(e, "operation[4].twamp_key_id: mode auth needs twamp_key_id (an identity of secret_file)");
    let e = twamp("mode = \"mixed\"\ntwamp_key_id = \"alice\"").unwrap_err().to_string();
    assert!(e.starts_with("operation[4].secret_file: mode mixed needs secret_file"), "{e}");
    let e = twamp(&format!("mode = \"auth\"\ntwamp_key_id = \"bob\"\nsecret_file = \"{kf}\"")).unwrap_err().to_string();
    assert_eq!(e, format!("operation[4].twamp_key_id: \"bob\" is not an identity of {kf}"));
    let e = twamp("twamp_key_id = \"alice\"").unwrap_err().to_string();
    assert!(e.starts_with("operation[4].twamp_key_id: the open mode uses no key"), "{e}");
    let e = twamp("key_id = 3").unwrap_err().to_string();
    assert!(e.contains("operation[4].key_id") && e.contains("twamp_key_id"), "{e}");
    let e = twamp("control = \"v2\"").unwrap_err().to_string();
    assert!(e.starts_with("operation[4].control: twamp does not take control"), "{e}");
    let e = twamp("stateful = true").unwrap_err().to_string();
    assert!(
        e.starts_with("operation[4].stateful: twamp does not take stateful: the reflector of a TWAMP-Control session is always stateful"),
        "{e}"
    );
    let e = twamp("padding = 70000").unwrap_err().to_string();
    assert_eq!(e, "operation[4].padding: 70000 is out of range; allowed 0 to 65000");
    let bad = dir.path().join("bad.keys");
    std::fs::write(&bad, "alice zz\n").unwrap();
    let e = twamp(&format!("mode = \"auth\"\ntwamp_key_id = \"alice\"\nsecret_file = \"{}\"", bad.display()))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("operation[4].secret_file:") && e.contains("line 1"), "{e}");
    // the TWAMP keys on another operation
    let e = op("mode = \"auth\"").unwrap_err().to_string();
    assert_eq!(e, "operation[1].mode: udp-jitter does not take mode (only twamp and twamp-light do)");
}

#[test]
fn twamp_light_operation_keys() {
    let d = check(
        "type = \"twamp-light\"\ntarget = \"127.0.0.1\"\nstateful = true\ninterval = \"10ms\"",
        "operation[5]",
        5,
    )
    .unwrap();
    assert_eq!(d.spec.port, 862);
    assert_eq!(d.spec.control_label(), "none");
    assert_eq!(
        downcast::<TwampLight>(&d),
        &TwampLight {
            packets: 10,
            interval: Duration::from_millis(10),
            padding: 27,
            stateful: true,
            clock: ClockSync::NONE
        }
    );
    let e = check("type = \"twamp-light\"\ntarget = \"127.0.0.1\"\nmode = \"auth\"", "operation[5]", 5)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("operation[5].mode: twamp-light runs in open mode only") && e.ends_with("allowed: open"),
        "{e}"
    );
}

#[test]
fn the_registry_is_consistent() {
    use std::collections::BTreeMap;
    let mut seen = std::collections::BTreeSet::new();
    let mut types: BTreeMap<&str, Ty> = BTreeMap::new();
    for kind in REGISTRY {
        assert!(seen.insert(kind.name()), "{} registered twice", kind.name());
        assert_eq!(find(kind.name()).map(|k| k.name()), Some(kind.name()));
        let keys = all_keys(*kind);
        let mut names = std::collections::BTreeSet::new();
        let mut flags = std::collections::BTreeSet::new();
        for k in &keys {
            assert!(names.insert(k.name), "{}: key {} declared twice", kind.name(), k.name);
            // one key name means one value type in every kind (the documentation lists it once)
            assert_eq!(*types.entry(k.name).or_insert(k.ty), k.ty, "{}: {}", kind.name(), k.name);
            assert!(!k.help.is_empty(), "{}: {} has no help", kind.name(), k.name);
            for f in k.flag_name().into_iter().chain(k.aliases.iter().map(|a| a.to_string())) {
                assert!(flags.insert(f.clone()), "{}: flag --{f} used twice", kind.name());
            }
        }
        // every kind builds from its type and a target alone, with its defaults
        let d = check(&format!("type = \"{}\"\ntarget = \"127.0.0.1\"", kind.name()), "operation[0]", 1).unwrap();
        assert_eq!(d.spec.op.kind().name(), kind.name());
        assert_eq!(d.spec.port, kind.default_port().unwrap_or(0));
        assert_eq!(d.spec.op.train().is_some(), kind.jitter(), "{}", kind.name());
        // its configuration names it, and a train kind says its train as IOS does
        let c = d.configuration();
        let value = |label: &str| c.lines.iter().find(|l| l.label == label).and_then(|l| l.value.clone());
        assert_eq!(value("Type of operation to perform").as_deref(), Some(kind.name()));
        assert_eq!(value("Target port/Source port").is_some(), kind.default_port().is_some(), "{}", kind.name());
        let train = value("Packet Interval (milliseconds)/Number of packets");
        assert_eq!(train.is_some(), kind.jitter(), "{}: {c:?}", kind.name());
        // a kind with a port says what listens there, and its default, in its own words
        let port = keys.iter().find(|k| k.name == "port");
        assert_eq!(port.is_some(), kind.default_port().is_some(), "{}: a port key iff a default port", kind.name());
        if let (Some(p), Some(d)) = (port, kind.default_port()) {
            assert!(
                p.help.contains(&format!("default {d}")),
                "{}: --port help names its default: {}",
                kind.name(),
                p.help
            );
        }
    }
}

#[test]
fn a_reload_compares_the_kind_specific_part() {
    let a = op("packets = 5").unwrap();
    assert_eq!(a, op("packets = 5").unwrap());
    assert_ne!(a, op("packets = 6").unwrap());
    let echo = check("type = \"udp-echo\"\ntarget = \"127.0.0.1\"", "operation[1]", 1).unwrap();
    assert_ne!(a.spec, echo.spec);
}

/// docs/operation-keys.md is what the registry says; `IPSLA_BLESS=1` rewrites it.
#[test]
fn the_key_reference_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operation-keys.md");
    let want = super::reference::markdown();
    if std::env::var_os("IPSLA_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} differs from the registry: run `IPSLA_BLESS=1 cargo test -p ipsla-agent the_key_reference_is_current` and commit it",
        path.display()
    );
}
