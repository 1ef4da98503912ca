//! [`Agent::healthy`] follows the scheduler loop: a scheduler stuck on a lock turns it false, and
//! it recovers when the lock is released.

use super::*;

fn wait_until(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "not {what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stuck_scheduler_is_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[agent]\nhttp = \"127.0.0.1:0\"\nstore = \"{}\"\n", dir.path().join("a.db").display());
    let agent = Agent::start(AgentFile::parse(&text).unwrap().validate().unwrap()).unwrap();
    assert!(agent.healthy());
    {
        let _held = agent.shared.ops.lock().unwrap();
        wait_until("unhealthy", HEARTBEAT_STALE * 3, || !agent.healthy());
    }
    wait_until("healthy again", Duration::from_secs(5), || agent.healthy());
    agent.stop();
}
