//! The embedded history: SQLite (bundled) in WAL mode. Every completed run is committed on its
//! own as soon as it finishes, so a killed agent (SIGKILL) loses nothing that had completed.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::time::Duration;

/// The store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

/// One stored run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredRun {
    /// Operation number.
    pub op: u32,
    /// Start, ns since the Unix epoch.
    pub start_ns: i64,
    /// Return code.
    pub return_code: String,
    /// The run's JSON document (docs/json-schema.md).
    pub report: serde_json::Value,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredEvent {
    /// Operation number (kind "reaction") or track number (kind "track").
    pub op: u32,
    /// When, ns since the Unix epoch.
    pub time_ns: i64,
    /// "reaction" or "track".
    pub kind: String,
    /// Element keyword.
    pub element: String,
    /// Occurred (true) or cleared.
    pub occurred: bool,
    /// The value behind it.
    pub value: Option<f64>,
    /// The log line.
    pub text: String,
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Store> {
        let conn = Connection::open(path)?;
        // WAL: readers do not block the writer; NORMAL sync: a committed run survives the
        // process being killed (only an OS crash may lose the last ones).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs (
                 id INTEGER PRIMARY KEY,
                 op INTEGER NOT NULL,
                 start_ns INTEGER NOT NULL,
                 return_code TEXT NOT NULL,
                 rtt_avg_us REAL,
                 report TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS runs_op_start ON runs (op, start_ns);
             CREATE TABLE IF NOT EXISTS events (
                 id INTEGER PRIMARY KEY,
                 op INTEGER NOT NULL,
                 time_ns INTEGER NOT NULL,
                 kind TEXT NOT NULL,
                 element TEXT NOT NULL,
                 occurred INTEGER NOT NULL,
                 value REAL,
                 text TEXT NOT NULL
             );",
        )?;
        Ok(Store { conn })
    }

    /// Records a completed run.
    pub fn insert(
        &self,
        op: u32,
        start_ns: i64,
        return_code: &str,
        rtt_avg_us: Option<f64>,
        report: &str,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO runs (op, start_ns, return_code, rtt_avg_us, report) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![op, start_ns, return_code, rtt_avg_us, report],
        )?;
        Ok(())
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRun> {
        let text: String = r.get(3)?;
        Ok(StoredRun {
            op: r.get(0)?,
            start_ns: r.get(1)?,
            return_code: r.get(2)?,
            report: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        })
    }

    /// The newest run of `op`.
    pub fn latest(&self, op: u32) -> rusqlite::Result<Option<StoredRun>> {
        self.conn
            .query_row(
                "SELECT op, start_ns, return_code, report FROM runs WHERE op = ?1 ORDER BY start_ns DESC, id DESC LIMIT 1",
                params![op],
                Self::row,
            )
            .optional()
    }

    /// The newest `limit` runs of `op`, newest first.
    pub fn history(&self, op: u32, limit: u32) -> rusqlite::Result<Vec<StoredRun>> {
        let mut st = self.conn.prepare(
            "SELECT op, start_ns, return_code, report FROM runs WHERE op = ?1 ORDER BY start_ns DESC, id DESC LIMIT ?2",
        )?;
        st.query_map(params![op, limit], Self::row)?.collect()
    }

    /// Number of runs stored for `op`.
    pub fn count(&self, op: u32) -> rusqlite::Result<u64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM runs WHERE op = ?1", params![op], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
    }

    /// Deletes runs and events older than `now_ns − keep`; returns how many runs.
    pub fn prune(&self, now_ns: i64, keep: Duration) -> rusqlite::Result<usize> {
        let cutoff = now_ns.saturating_sub(keep.as_nanos() as i64);
        self.conn.execute("DELETE FROM events WHERE time_ns < ?1", params![cutoff])?;
        self.conn.execute("DELETE FROM runs WHERE start_ns < ?1", params![cutoff])
    }

    /// Records a reaction (or track) event.
    pub fn insert_event(&self, e: &StoredEvent) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO events (op, time_ns, kind, element, occurred, value, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![e.op, e.time_ns, e.kind, e.element, e.occurred, e.value, e.text],
        )?;
        Ok(())
    }

    /// The newest `limit` events, newest first.
    pub fn events(&self, limit: u32) -> rusqlite::Result<Vec<StoredEvent>> {
        let mut st = self
            .conn
            .prepare("SELECT op, time_ns, kind, element, occurred, value, text FROM events ORDER BY time_ns DESC, id DESC LIMIT ?1")?;
        st.query_map(params![limit], |r| {
            Ok(StoredEvent {
                op: r.get(0)?,
                time_ns: r.get(1)?,
                kind: r.get(2)?,
                element: r.get(3)?,
                occurred: r.get(4)?,
                value: r.get(5)?,
                text: r.get(6)?,
            })
        })?
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_latest_history_prune() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        for i in 0..5i64 {
            s.insert(7, i * 1_000_000_000, "ok", Some(1.5), &format!("{{\"run\":{i}}}")).unwrap();
        }
        s.insert(8, 0, "timeout", None, "{}").unwrap();
        assert_eq!(s.latest(7).unwrap().unwrap().report["run"], 4);
        assert_eq!(
            s.history(7, 3).unwrap().iter().map(|r| r.start_ns).collect::<Vec<_>>(),
            vec![4e9 as i64, 3e9 as i64, 2e9 as i64]
        );
        assert_eq!(s.latest(9).unwrap(), None);
        // keep the last 2.5 s as of t = 5 s: runs at 3 s and 4 s stay
        assert_eq!(s.prune(5_000_000_000, Duration::from_millis(2500)).unwrap(), 4);
        assert_eq!(s.count(7).unwrap(), 2);
    }
}
