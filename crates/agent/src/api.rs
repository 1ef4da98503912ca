//! The JSON documents of the agent's HTTP API, each defined once: the agent serves these types
//! ([`crate::daemon`], through its HTTP module) and `ipsla show` reads the same types back, so the
//! two cannot drift apart. README.md lists the endpoints; docs/agent.md describes the fields.
//!
//! | Endpoint | Document |
//! |---|---|
//! | `GET /api/v1/operations` | `[`[`OpSummary`]`]` |
//! | `GET /api/v1/operations/{id}/latest` | [`Report`] (the stored run, as `ipsla probe --json` prints it) |
//! | `GET /api/v1/operations/{id}/history?limit=N` | `[`[`StoredRun`]`]`, newest first |
//! | `GET /api/v1/operations/{id}/aggregated` | `[`[`HourAggregate`]`]`, oldest first |
//! | `GET /api/v1/operations/{id}/configuration` | [`OperationConfiguration`] |
//! | `GET /api/v1/responder` | [`StatusReport`] |
//! | `GET /api/v1/store` | [`StoreStatus`] |
//! | `GET /api/v1/events?limit=N` | `[`[`StoredEvent`]`]`, newest first |
//! | `GET /api/v1/tracks` | `[`[`TrackSummary`]`]` |
//! | `GET /api/v1/routes` | [`RouteStatus`] |
//! | `POST /-/reload` | [`ReloadSummary`] |
//!
//! A return code is the snake_case name of [`ReturnCode`] (`"ok"`, `"over_threshold"`, ...), as
//! in the run document; where the API holds one as a typed field it is a [`ReturnCode`].
//!
//! ```
//! use ipsla_agent::api::TrackSummary;
//! use ipsla_core::ops::ReturnCode;
//! let t: TrackSummary = serde_json::from_str(
//!     r#"{"id":1,"up":true,"changes":0,"tracks":"ip sla 1 state","operation":1,"members":[],
//!         "delay_up_s":0.0,"delay_down_s":0.0,"last_change":null,"last_change_s_ago":null,
//!         "latest_return_code":"over_threshold","latest_rtt_ms":null}"#,
//! )
//! .unwrap();
//! assert_eq!(t.latest_return_code, Some(ReturnCode::OverThreshold));
//! ```

use ipsla_core::ops::ReturnCode;
use ipsla_core::schedule::OperState;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use crate::report::Report;
pub use crate::routes::{RouteState, RouteStatus};
pub use crate::store::{AccUs, Bucket, HourAggregate, JitterAggregate, StoredEvent, StoredRun};
pub use ipsla_net::responder::StatusReport;

/// One entry of `GET /api/v1/operations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    /// Operation number.
    pub id: u32,
    /// Operation type (`udp-jitter`, `icmp-echo`, ...).
    pub r#type: String,
    /// `ADDR:PORT` or `ADDR`.
    pub target: String,
    /// `tag` from the configuration.
    pub tag: String,
    /// Where the operation is in its life.
    pub state: OperState,
    /// Runs started since the agent started (or the operation was redefined).
    pub runs: u64,
    /// Runs skipped because the previous one was still going.
    pub busies: u64,
    /// Runs in the store.
    pub stored: u64,
    /// `frequency`, s.
    pub frequency_s: f64,
    /// Runs with return code OK since the agent started (IOS "Number of successes").
    #[serde(default)]
    pub successes: u64,
    /// The others (IOS "Number of failures").
    #[serde(default)]
    pub failures: u64,
    /// Configured life, s; null = forever.
    pub life_s: Option<f64>,
    /// What is left of it, s (IOS "Operation time to live"); null = forever.
    pub time_to_live_s: Option<f64>,
    /// The elements of its reactions whose condition holds now (`["rtt"]`).
    #[serde(default)]
    pub active_reactions: Vec<String>,
    /// The mesh test and sites it measures; null for an operation of the agent's own file.
    #[serde(default)]
    pub mesh: Option<MeshLabels>,
}

/// What a mesh operation measures (`OpSummary::mesh`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshLabels {
    /// The test's name in the mesh file.
    pub test: String,
    /// The site this agent is (the source).
    pub src: String,
    /// The site measured.
    pub dst: String,
}

/// One entry of `GET /api/v1/tracks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackSummary {
    /// Track number.
    pub id: u32,
    /// Its state.
    pub up: bool,
    /// State changes since the agent started.
    pub changes: u64,
    /// What it follows, as IOS words it (`ip sla 1 reachability`, `list boolean and`, ...).
    pub tracks: String,
    /// The followed operation (operation tracks), else null.
    pub operation: Option<u32>,
    /// The list's members (list tracks), else empty.
    #[serde(default)]
    pub members: Vec<u32>,
    /// `delay_up`, s.
    #[serde(default)]
    pub delay_up_s: f64,
    /// `delay_down`, s.
    #[serde(default)]
    pub delay_down_s: f64,
    /// The last change, RFC 3339 UTC with ms; null = never.
    pub last_change: Option<String>,
    /// Seconds since the last change (ms resolution); null = never.
    pub last_change_s_ago: Option<f64>,
    /// The return code of the followed operation's latest run, as the track saw it.
    pub latest_return_code: Option<ReturnCode>,
    /// The average RTT of the followed operation's latest stored run, ms.
    pub latest_rtt_ms: Option<f64>,
}

/// `GET /api/v1/store`: whether the store takes writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// The SQLite file.
    pub path: PathBuf,
    /// False since a write was refused, until one succeeds again.
    pub writable: bool,
    /// Writes refused since the agent started.
    pub write_errors: u64,
    /// The last refusal: what was written and the error.
    pub last_error: Option<String>,
    /// When, RFC 3339 UTC with ms.
    pub last_error_time: Option<String>,
    /// When, ns since the Unix epoch.
    pub last_error_ns: Option<i64>,
}

/// `POST /-/reload` (and SIGHUP): what a reload did.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadSummary {
    /// Operations whose definition did not change: schedule, statistics and reactions kept.
    pub kept: Vec<u32>,
    /// Operations redefined: restarted, their statistics reset.
    pub changed: Vec<u32>,
    /// New operations.
    pub added: Vec<u32>,
    /// Operations no longer configured.
    pub removed: Vec<u32>,
    /// The tracks were redefined.
    pub tracks_changed: bool,
    /// The routes were redefined.
    pub routes_changed: bool,
    /// The alert sinks were redefined.
    pub alerts_changed: bool,
    /// Settings that take effect only after a restart (they were not applied).
    pub needs_restart: Vec<String>,
}

/// The query of `GET /api/v1/operations/{id}/history` and `GET /api/v1/events`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitQuery {
    /// Newest entries to return (default 100, at most 10,000).
    pub limit: Option<u32>,
}

impl LimitQuery {
    /// The limit in force.
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(100).min(10_000)
    }
}

/// `GET /api/v1/operations/{id}/configuration`: the operation as the agent runs it, defaults
/// included, in the words and order of IOS `show ip sla configuration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationConfiguration {
    /// Operation number.
    pub id: u32,
    /// Operation type.
    pub r#type: String,
    /// The lines, in order.
    pub lines: Vec<ConfigLine>,
}

/// One line of an [`OperationConfiguration`]: `label: value`, or a heading (no value) whose
/// lines follow one level deeper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigLine {
    /// IOS's label (`Operation timeout (milliseconds)`).
    pub label: String,
    /// The value as IOS prints it; `None` for a heading (`Schedule`).
    pub value: Option<String>,
    /// 0 at the top, 1 under a heading.
    pub level: u8,
}
