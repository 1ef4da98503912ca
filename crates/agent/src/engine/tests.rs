//! The engine on a fake timeline: every time is `t0 + offset`, nothing sleeps, nothing is sent.

use super::*;
use crate::daemon::{AgentConfig, AgentFile};
use ipsla_core::ops::Precision;
use ipsla_core::stats::JitterStats;

fn config(ops: &str) -> AgentConfig {
    AgentFile::parse(ops).unwrap().validate().unwrap()
}

fn engine(cfg: &AgentConfig, t0: Instant) -> Engine {
    Engine::new(&cfg.operations, cfg.tracks.clone(), t0, Duration::from_secs(1_800_000_000), 7)
}

fn result(code: ReturnCode, rtt_ms: i64) -> OperationResult {
    let mut stats = JitterStats { sent: 1, received: u32::from(code == ReturnCode::Ok), ..Default::default() };
    if code == ReturnCode::Ok {
        stats.rtt.add(rtt_ms * 1_000_000);
    }
    OperationResult::new(code, stats, Precision::Ms)
}

fn ids(jobs: &[Job]) -> Vec<u32> {
    jobs.iter().map(|j| j.id).collect()
}

const TWO: &str = r#"
[[operation]]
id = 1
type = "udp-echo"
target = "127.0.0.1"
frequency = "10s"
[[operation]]
id = 2
type = "udp-echo"
target = "127.0.0.1"
frequency = "20s"
timeout = "1s"
"#;

#[test]
fn runs_follow_the_frequencies_and_sequences_rise() {
    let t0 = Instant::now();
    let mut e = engine(&config(TWO), t0);
    let s = |e: &Engine, id| e.op(id).unwrap().sequence;
    let (seq1, seq2) = (s(&e, 1), s(&e, 2));
    let (jobs, out) = e.poll_due(t0);
    assert_eq!((ids(&jobs), out), (vec![1, 2], vec![]));
    assert_eq!(jobs[0].sequence, seq1.wrapping_add(1));
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    assert!(e.poll_due(t0 + Duration::from_millis(9_999)).0.is_empty());
    e.handle_result(t0 + Duration::from_secs(1), 1, Some(&result(ReturnCode::Ok, 2)));
    e.handle_result(t0 + Duration::from_secs(1), 2, Some(&result(ReturnCode::Ok, 2)));
    let (jobs, _) = e.poll_due(t0 + Duration::from_secs(10));
    assert_eq!(ids(&jobs), vec![1]);
    assert_eq!(jobs[0].sequence, seq1.wrapping_add(2));
    e.handle_result(t0 + Duration::from_secs(11), 1, Some(&result(ReturnCode::Timeout, 0)));
    assert_eq!(ids(&e.poll_due(t0 + Duration::from_secs(20)).0), vec![1, 2]);
    assert_eq!(s(&e, 2), seq2.wrapping_add(2));
    let o = e.op(1).unwrap();
    assert_eq!((o.successes, o.failures, o.schedule.runs), (1, 1, 3));
}

#[test]
fn a_run_still_going_when_the_next_is_due_is_busy() {
    let t0 = Instant::now();
    let mut e = engine(&config(TWO), t0);
    assert_eq!(ids(&e.poll_due(t0).0), vec![1, 2]);
    e.handle_result(t0 + Duration::from_secs(1), 2, Some(&result(ReturnCode::Ok, 1)));
    let (jobs, out) = e.poll_due(t0 + Duration::from_secs(10));
    assert!(jobs.is_empty());
    assert_eq!(out, vec![Output::Busy { op: 1 }]);
    // a run that could not start counts neither way, and frees the schedule
    e.handle_result(t0 + Duration::from_secs(12), 1, None);
    assert_eq!(ids(&e.poll_due(t0 + Duration::from_secs(20)).0), vec![1, 2]);
    let o = e.op(1).unwrap();
    assert_eq!((o.successes, o.failures, o.schedule.busies), (0, 0, 1));
}

const REACT: &str = r#"
[[operation]]
id = 1
type = "udp-echo"
target = "127.0.0.1"
frequency = "10s"
trigger = [2]
[[operation.reaction]]
element = "timeout"
threshold_type = "consecutive 2"
action = "alert-and-trigger"
[[operation]]
id = 2
type = "udp-echo"
target = "127.0.0.1"
start = "pending"
frequency = "10s"
[[track]]
id = 5
operation = 1
mode = "reachability"
delay_down = "15s"
"#;

#[test]
fn reactions_trigger_and_tracks_wait_their_delay() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut e = engine(&config(REACT), t0);
    assert_eq!(ids(&e.poll_due(at(0)).0), vec![1], "2 is pending");
    // IOS tracks start down; the first success brings the track up at once (delay up 0)
    let out = e.handle_result(at(1), 1, Some(&result(ReturnCode::Ok, 2)));
    assert!(matches!(&out[0], Output::Track(c) if c.id == 5 && c.up), "{out:?}");
    assert_eq!(out[1], Output::TrackStates(BTreeMap::from([(5, true)])));
    assert_eq!(ids(&e.poll_due(at(10)).0), vec![1]);
    assert!(e.handle_result(at(11), 1, Some(&result(ReturnCode::Timeout, 0))).is_empty(), "one timeout of two");
    assert_eq!(e.poll_timeout(), Some(at(20)), "the next run comes before the track's delay (11 + 15 s)");
    assert_eq!(ids(&e.poll_due(at(20)).0), vec![1]);
    let out = e.handle_result(at(21), 1, Some(&result(ReturnCode::Timeout, 0)));
    let [Output::Reaction { op: 1, event }, Output::Triggered { by: 1, op: 2 }] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert!(event.occurred && event.element.keyword() == "timeout", "{event:?}");
    assert_eq!(ids(&e.poll_due(at(21)).0), vec![2], "the trigger starts 2 at once");
    assert_eq!(e.poll_timeout(), Some(at(26)), "the track goes down 15 s after the first failure");
    assert!(e.handle_timeout(at(25)).is_empty());
    let out = e.handle_timeout(at(26));
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(&out[0], Output::Track(c) if c.id == 5 && !c.up), "{out:?}");
    assert_eq!(out[1], Output::TrackStates(BTreeMap::from([(5, false)])));
    // a success: the track comes back up at once
    assert_eq!(ids(&e.poll_due(at(30)).0), vec![1]);
    let out = e.handle_result(at(31), 1, Some(&result(ReturnCode::Ok, 3)));
    assert_eq!(
        out[0],
        Output::Track(Changed { id: 5, up: true, text: "%TRACK-6-STATE: 5 ip sla 1 reachability Down -> Up".into() })
    );
}

#[test]
fn a_reload_keeps_what_did_not_change() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let cfg = config(TWO);
    let mut e = engine(&cfg, t0);
    e.poll_due(at(0));
    e.handle_result(at(1), 1, Some(&result(ReturnCode::Ok, 1)));
    e.handle_result(at(1), 2, Some(&result(ReturnCode::Ok, 1)));
    let next = config(&TWO.replace("frequency = \"20s\"", "frequency = \"30s\"").replace("id = 1\n", "id = 3\n"));
    let (sum, out) = e.reload(at(5), Duration::from_secs(1_800_000_005), &next.operations, next.tracks.clone());
    assert_eq!((sum.kept, sum.changed, sum.added, sum.removed), (vec![], vec![2], vec![3], vec![1]));
    assert_eq!(sum.forgotten.iter().map(|d| d.id).collect::<Vec<_>>(), vec![2, 1]);
    assert!(out.is_empty() && !sum.tracks_changed);
    assert_eq!(e.op(2).unwrap().successes, 0, "redefined: statistics reset");
    let (sum, _) = e.reload(at(6), Duration::from_secs(1_800_000_006), &next.operations, next.tracks.clone());
    assert_eq!(sum.kept, vec![3, 2], "in the order of the file");
    assert_eq!(ids(&e.poll_due(at(6)).0), vec![2, 3], "both restarted at the first reload");
    assert_eq!(e.op(2).unwrap().schedule.runs, 1, "kept: the schedule went on");
}

#[test]
fn a_group_spreads_its_operations_over_the_period() {
    let t0 = Instant::now();
    let mut text = String::new();
    for id in 1..=3 {
        text += &format!("[[operation]]\nid = {id}\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\ntimeout = \"1s\"\n");
    }
    text += "[[group]]\nid = 1\noperations = \"1-3\"\nschedule_period = \"30s\"\n";
    let mut e = engine(&config(&text), t0);
    let mut starts = Vec::new();
    let mut now = t0;
    while starts.len() < 6 {
        let (jobs, _) = e.poll_due(now);
        for j in jobs {
            starts.push((j.id, (now - t0).as_secs()));
            e.handle_result(now, j.id, Some(&result(ReturnCode::Ok, 1)));
        }
        now = e.poll_timeout().unwrap();
    }
    assert_eq!(starts, vec![(1, 0), (2, 10), (3, 20), (1, 30), (2, 40), (3, 50)]);
}

#[test]
fn a_changed_path_is_an_output_and_fires_path_change() {
    let cfg = config(
        r#"
[[operation]]
id = 4
type = "path-echo"
target = "127.0.0.1"
[[operation.reaction]]
element = "pathChange"
threshold_type = "immediate"
action = "alert"
"#,
    );
    let t0 = Instant::now();
    let mut e = engine(&cfg, t0);
    let run = |changed: Option<bool>| OperationResult { path_changed: changed, ..result(ReturnCode::Ok, 1) };
    let reaction = |o: &[Output]| {
        o.iter()
            .filter_map(|x| {
                if let Output::Reaction { event, .. } = x {
                    Some((event.element.keyword(), event.occurred))
                } else {
                    None
                }
            })
            .collect::<Vec<_>>()
    };
    // the first run has nothing to compare with; a steady path is nothing
    assert_eq!(e.handle_result(t0, 4, Some(&run(None))), vec![]);
    assert_eq!(e.handle_result(t0, 4, Some(&run(Some(false)))), vec![]);
    let out = e.handle_result(t0, 4, Some(&run(Some(true))));
    assert_eq!(out[0], Output::PathChange { op: 4 });
    assert_eq!(reaction(&out), vec![("pathChange", true)]);
    assert_eq!(e.op(4).unwrap().active_reactions(), vec!["pathChange"]);
    // a second change is another path event, the reaction stays occurred (no new transition)
    let out = e.handle_result(t0, 4, Some(&run(Some(true))));
    assert_eq!(out, vec![Output::PathChange { op: 4 }]);
    assert_eq!(reaction(&e.handle_result(t0, 4, Some(&run(Some(false))))), vec![("pathChange", false)]);
    // an operation without a path refuses the element, as IOS does
    let bad = AgentFile::parse(
        "[[operation]]\ntype = \"icmp-echo\"\ntarget = \"127.0.0.1\"\n[[operation.reaction]]\nelement = \"pathChange\"\n",
    )
    .unwrap()
    .validate()
    .unwrap_err()
    .to_string();
    assert_eq!(
        bad,
        "operation[0].reaction[0].element: pathChange does not apply to this operation (Invalid react option for the Probe type configured)"
    );
}
