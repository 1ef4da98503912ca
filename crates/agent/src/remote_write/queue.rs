//! The durable queue of a remote-write endpoint is the store itself: the `runs` table in insertion
//! order (`id`), and per endpoint a cursor in `remote_write` (`shipped`: every run with an id up to
//! it has been accepted by the receiver) advanced only after a 2xx.
//!
//! A trigger on `runs` keeps the cursor honest when the store deletes runs (retention, the size
//! limit): the samples of a run deleted before it was shipped are added to the endpoint's
//! `dropped`, and a cursor above every run left is brought down to the newest run left, so that
//! the ids SQLite hands out after the table was emptied (it starts again above the largest id
//! present) are never taken for shipped ones.

use super::VALUES;
use rusqlite::{Connection, OptionalExtension, params};

/// Creates the cursor table and (re)creates the trigger, whose text follows [`VALUES`].
pub(crate) fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS remote_write (
             url TEXT PRIMARY KEY,
             shipped INTEGER NOT NULL,
             dropped INTEGER NOT NULL DEFAULT 0
         );
         DROP TRIGGER IF EXISTS remote_write_deleted;
         CREATE TRIGGER remote_write_deleted AFTER DELETE ON runs BEGIN
             UPDATE remote_write SET dropped = dropped + ({samples}) WHERE OLD.id > shipped;
             UPDATE remote_write SET shipped = (SELECT COALESCE(MAX(id), 0) FROM runs)
                 WHERE shipped > (SELECT COALESCE(MAX(id), 0) FROM runs);
         END;",
        samples = samples_sql("OLD.report"),
    ))
}

/// The number of samples a stored document makes, in SQL: one per value of [`VALUES`] the
/// document has, plus `ipsla_operation_success`, which every run has.
pub(crate) fn samples_sql(report: &str) -> String {
    let trains: Vec<String> =
        crate::ops::REGISTRY.iter().filter(|k| k.jitter()).map(|k| format!("'{}'", k.name())).collect();
    let train = format!("json_extract({report}, '$.operation') IN ({})", trains.join(", "));
    let present: Vec<String> = VALUES
        .iter()
        .map(|v| {
            let has = format!("json_extract({report}, '{}') IS NOT NULL", v.json_path());
            if v.jitter_only { format!("({has} AND {train})") } else { format!("({has})") }
        })
        .collect();
    format!("CASE WHEN json_valid({report}) THEN 1 + {} ELSE 1 END", present.join(" + "))
}

/// Starts an endpoint's cursor before the oldest run (a new endpoint receives the whole store);
/// an endpoint that has one keeps it.
pub(crate) fn ensure(conn: &Connection, url: &str) -> rusqlite::Result<()> {
    conn.execute("INSERT OR IGNORE INTO remote_write (url, shipped, dropped) VALUES (?1, 0, 0)", params![url])?;
    Ok(())
}

/// One stored run to ship.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    pub(crate) id: i64,
    pub(crate) op: u32,
    pub(crate) start_ns: i64,
    pub(crate) report: String,
}

/// The state of an endpoint's queue.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct QueueState {
    /// The next runs to ship, at most the limit asked for, in id order.
    pub(crate) runs: Vec<Pending>,
    /// Samples of runs deleted before they were shipped, since the endpoint was first configured.
    pub(crate) dropped: u64,
}

/// The next `limit` runs after the cursor of `url`, and its dropped count.
pub(crate) fn pending(conn: &Connection, url: &str, limit: usize) -> rusqlite::Result<QueueState> {
    let Some((shipped, dropped)) = conn
        .query_row("SELECT shipped, dropped FROM remote_write WHERE url = ?1", params![url], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()?
    else {
        return Ok(QueueState::default());
    };
    let mut st = conn.prepare_cached("SELECT id, op, start_ns, report FROM runs WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let runs = st
        .query_map(params![shipped, limit as i64], |r| {
            Ok(Pending { id: r.get(0)?, op: r.get(1)?, start_ns: r.get(2)?, report: r.get(3)? })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(QueueState { runs, dropped: dropped.max(0) as u64 })
}

/// Moves the cursor of `url` up to `id` (never down).
pub(crate) fn advance(conn: &Connection, url: &str, id: i64) -> rusqlite::Result<()> {
    conn.execute("UPDATE remote_write SET shipped = MAX(shipped, ?2) WHERE url = ?1", params![url, id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn doc(rtt: Option<f64>, ratio: Option<f64>) -> String {
        serde_json::json!({
            "return_code": if rtt.is_some() { "ok" } else { "timeout" },
            "rtt_us": {"avg": rtt},
            "loss": {"ratio": ratio},
            "jitter_us": {"sd": {"avg": null}, "ds": {"avg": null}},
            "voice": null,
        })
        .to_string()
    }

    #[test]
    fn cursor_resumes_and_deleted_unshipped_runs_count_their_samples() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        let c = s.connection();
        prepare(c).unwrap();
        ensure(c, "http://a/").unwrap();
        for i in 0..5i64 {
            s.insert(1, i * 1_000_000_000, "ok", Some(2.0), &doc(Some(2.0), Some(0.0))).unwrap();
        }
        let q = pending(c, "http://a/", 2).unwrap();
        assert_eq!(q.runs.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2]);
        advance(c, "http://a/", 2).unwrap();
        // a second endpoint added later starts from the oldest run
        ensure(c, "http://b/").unwrap();
        assert_eq!(pending(c, "http://b/", 10).unwrap().runs.len(), 5);
        // prepare again (an agent restart): the cursor stays
        prepare(c).unwrap();
        ensure(c, "http://a/").unwrap();
        assert_eq!(pending(c, "http://a/", 10).unwrap().runs.iter().map(|r| r.id).collect::<Vec<_>>(), [3, 4, 5]);
        // runs 1-3 are pruned: for a, run 3 was not shipped (3 samples: success, RTT, loss ratio);
        // for b, none was
        assert_eq!(s.prune(3_500_000_000, std::time::Duration::from_secs(1)).unwrap(), 3);
        assert_eq!(pending(c, "http://a/", 10).unwrap().dropped, 3);
        assert_eq!(pending(c, "http://b/", 10).unwrap().dropped, 9);
        // a run without a reply has no RTT and (here) no loss ratio: 1 sample
        s.insert(1, 6_000_000_000, "timeout", None, &doc(None, None)).unwrap();
        advance(c, "http://a/", 6).unwrap();
        // the store is emptied, a's cursor (6) comes down with it: the next run (id 1 again) is
        // pending, not taken for shipped
        assert_eq!(s.prune(100_000_000_000, std::time::Duration::from_secs(1)).unwrap(), 3);
        assert_eq!(pending(c, "http://a/", 10).unwrap().dropped, 3, "runs 4 to 6 had been shipped");
        assert_eq!(pending(c, "http://b/", 10).unwrap().dropped, 9 + 3 + 3 + 1);
        s.insert(1, 200_000_000_000, "ok", Some(1.0), &doc(Some(1.0), Some(0.0))).unwrap();
        assert_eq!(pending(c, "http://a/", 10).unwrap().runs.iter().map(|r| r.id).collect::<Vec<_>>(), [1]);
    }
}
