//! The agent: the responder, scheduled operations, the SQLite history,
//! and HTTP (`/metrics`, the JSON API, `/-/healthy`: [`crate::http`], reading the state through
//! the `pub(crate)` methods of `Shared`).
//!
//! The bookkeeping is the sans-IO [`crate::engine`]; this module drives it on one tokio runtime
//! stopped by one cancellation token: a scheduler task (wakes at the engine's next due time, a
//! finished run or a reload), runs on the blocking pool, at most `workers` at a time (each run
//! blocks its thread: the pacer holds the probe schedule), the HTTP task, the alert sinks and the
//! route failover; the responder keeps its own thread on purpose (it owns its sessions without
//! locks on the probe path). A completed run is committed to the store before it is published, so a killed
//! agent loses no completed run.

use crate::alert::{AlertDef, AlertEvent, AlertFile, Alerts};
use crate::api::{OpSummary, StoreStatus};
use crate::config::{ConfigError, ResponderFile, Result as CfgResult, check_range, parse_duration, parse_size};
use crate::engine::{Engine, Job, Output};
use crate::metrics::Metrics;
use crate::ops::OperationDef;
use crate::report::{Context, Report};
use crate::runner::{self, RunContext, RunError};
use crate::store::{EventSubject, RunRecord, Store, StoredEvent};
use crate::tracks::{TrackDef, TrackFile, TrackStatus};
use ipsla_core::ratelimit::RejectLog;
use ipsla_core::reaction::Action;
use ipsla_net::clock::wall_now;
use ipsla_net::privilege::{self, Plan, Privilege, Report as PrivilegeReport};
use ipsla_net::probe::Hooks;
use ipsla_net::responder::{ResponderOptions, RunningResponder, bind_responder};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// The embedded default: the responder on loopback and one operation of each UDP/TCP/ICMP kind
/// against it, so that `ipsla agent` shows the whole system working.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// `[agent]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// HTTP listen address (default 127.0.0.1:9167).
    pub http: Option<String>,
    /// SQLite file (default ipsla-agent.db).
    pub store: Option<PathBuf>,
    /// How long runs are kept (default 7d).
    pub retention: Option<String>,
    /// Largest store, e.g. "100MiB": the oldest runs go first (default 1GiB).
    pub store_max_size: Option<String>,
    /// Runner threads (default 16).
    pub workers: Option<usize>,
    /// `rtm_protocol` of the routes `[[route]]` installs (default 167).
    pub route_protocol: Option<u32>,
    /// `/probe` runs at once; more are answered 429 (default 4; 0 turns `/probe` off).
    pub probe_concurrency: Option<usize>,
    /// Per-probe histograms in /metrics (default false: latest values and counters only).
    pub metrics_histograms: Option<bool>,
}

/// The agent's configuration file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// `[agent]`.
    #[serde(default)]
    pub agent: AgentSection,
    /// `[responder]`: present = the agent runs the responder too.
    pub responder: Option<ResponderFile>,
    /// `[[operation]]`: each table is read by its kind's module ([`crate::ops`]).
    #[serde(default)]
    pub operation: Vec<toml::Table>,
    /// `[[track]]`.
    #[serde(default)]
    pub track: Vec<TrackFile>,
    /// `[[group]]`: group schedules.
    #[serde(default)]
    pub group: Vec<crate::group::GroupFile>,
    /// `[[route]]`: routes installed while a track is up (failover).
    #[serde(default)]
    pub route: Vec<crate::routes::RouteFile>,
    /// `[[alert]]`.
    #[serde(default)]
    pub alert: Vec<AlertFile>,
    /// `[[remote_write]]`.
    #[serde(default)]
    pub remote_write: Vec<crate::remote_write::RemoteWriteFile>,
    /// `[snmp]`: present = the agent serves CISCO-RTTMON-MIB through the host's SNMP master.
    pub snmp: Option<crate::snmp::SnmpFile>,
    /// `[mesh]`: the operations of a shared mesh file, from this agent's site.
    pub mesh: Option<crate::mesh::MeshSection>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// HTTP listen address.
    pub http: SocketAddr,
    /// Store path.
    pub store: PathBuf,
    /// Retention.
    pub retention: Duration,
    /// Largest store, bytes of pages in use.
    pub store_max_size: u64,
    /// Runner threads.
    pub workers: usize,
    /// The responder, when configured.
    pub responder: Option<ResponderOptions>,
    /// The responder's table as written (a reload compares it).
    pub responder_file: Option<ResponderFile>,
    /// Operations.
    pub operations: Vec<OperationDef>,
    /// Tracks.
    pub tracks: Vec<TrackDef>,
    /// Routes driven by tracks.
    pub routes: Vec<crate::routes::RouteDef>,
    /// Their protocol number.
    pub route_protocol: u8,
    /// Alert sinks.
    pub alerts: Vec<AlertDef>,
    /// Remote-write endpoints.
    pub remote_write: Vec<crate::remote_write::RemoteWriteDef>,
    /// `/probe` runs at once (0: `/probe` is off).
    pub probe_concurrency: usize,
    /// The SNMP subagent, when configured.
    pub snmp: Option<crate::snmp::SnmpConfig>,
    /// Whether /metrics has the per-probe histograms.
    pub metrics_histograms: bool,
    /// The mesh this agent is a site of (its operations are in `operations`).
    pub mesh: Option<Arc<crate::mesh::Mesh>>,
}

impl AgentFile {
    /// Parses TOML text.
    pub fn parse(text: &str) -> CfgResult<AgentFile> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// Validates everything; errors name the key.
    pub fn validate(&self) -> CfgResult<AgentConfig> {
        let http = self.agent.http.as_deref().unwrap_or("127.0.0.1:9167");
        let http = http.parse().map_err(|_| ConfigError(format!("agent.http: \"{http}\" is not an address:port")))?;
        let mut operations = Vec::new();
        let mut ids = BTreeMap::new();
        for (i, o) in self.operation.iter().enumerate() {
            let d =
                crate::ops::common::validate(o, crate::ops::Namer::Config(&format!("operation[{i}]")), i as u32 + 1)?;
            if let Some(prev) = ids.insert(d.id, i) {
                return Err(ConfigError(format!("operation[{i}].id: {} is already used by operation[{prev}]", d.id)));
            }
            operations.push(d);
        }
        crate::group::apply(&self.group, &mut operations)?;
        let mesh = self.mesh.as_ref().map(|m| m.load("mesh")).transpose()?;
        if let Some(m) = &mesh {
            for d in &m.operations {
                if let (Some(i), Some(p)) = (ids.get(&d.id), &d.mesh) {
                    return Err(ConfigError(format!(
                        "operation[{i}].id: {} is the number of mesh test \"{}\" to {} in {}; keep the agent's own operations below {}",
                        d.id,
                        p.test,
                        p.dst,
                        m.file,
                        crate::mesh::FIRST_ID
                    )));
                }
            }
            operations.extend(m.operations.iter().cloned());
        }
        // the file's own [responder] wins over the mesh's
        let responder_file = self.responder.clone().or_else(|| mesh.as_ref().map(|m| m.responder.clone()));
        if self.snmp.is_none()
            && let Some((i, j)) = operations.iter().enumerate().find_map(|(i, d)| {
                d.reactions
                    .iter()
                    .position(|r| matches!(r.action, Action::Trap | Action::TrapAndTrigger))
                    .map(|j| (i, j))
            })
        {
            return Err(ConfigError(format!(
                "operation[{i}].reaction[{j}].action: a trap is sent through the SNMP subagent; add an [snmp] section (docs/snmp.md) or use action = \"alert\""
            )));
        }
        for (i, d) in operations.iter().enumerate() {
            if let Some(t) = d.triggers.iter().find(|t| !ids.contains_key(t)) {
                return Err(ConfigError(format!("operation[{i}].trigger: there is no operation {t}")));
            }
        }
        let tracks = crate::tracks::validate(&self.track, &operations.iter().map(|o| o.id).collect::<Vec<_>>())?;
        Ok(AgentConfig {
            http,
            store: self.agent.store.clone().unwrap_or_else(|| PathBuf::from("ipsla-agent.db")),
            retention: match &self.agent.retention {
                Some(s) => {
                    parse_duration("agent.retention", s, Duration::from_secs(60), Duration::from_secs(3650 * 86_400))?
                }
                None => Duration::from_secs(7 * 86_400),
            },
            store_max_size: parse_size(
                "agent.store_max_size",
                self.agent.store_max_size.as_deref().unwrap_or("1GiB"),
                1 << 20,
                1 << 40,
            )?,
            workers: check_range("agent.workers", self.agent.workers.unwrap_or(16), 1, 1024)?,
            responder: responder_file.as_ref().map(ResponderFile::options).transpose()?,
            responder_file,
            tracks: tracks.clone(),
            routes: crate::routes::validate(&self.route, &tracks.iter().map(|t| t.id).collect::<Vec<_>>())?,
            route_protocol: crate::routes::protocol(self.agent.route_protocol)?,
            operations,
            alerts: crate::alert::validate(&self.alert)?,
            remote_write: crate::remote_write::validate(&self.remote_write)?,
            probe_concurrency: check_range(
                "agent.probe_concurrency",
                self.agent.probe_concurrency.unwrap_or(4),
                0,
                256,
            )?,
            snmp: self.snmp.as_ref().map(crate::snmp::SnmpFile::validate).transpose()?,
            metrics_histograms: self.agent.metrics_histograms.unwrap_or(false),
            mesh: mesh.map(|m| Arc::new(crate::mesh::Mesh { operations: Vec::new(), ..m })),
        })
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The store could not be opened.
    #[error("opening the store {} (agent.store)", path.display())]
    Store {
        /// The SQLite file.
        path: std::path::PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The HTTP address could not be bound.
    #[error("cannot serve HTTP on {addr} (agent.http)")]
    Http {
        /// The address of `agent.http`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Responder.
    #[error("starting the responder")]
    Responder(#[from] ipsla_net::NetError),
    /// Sockets, threads.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Giving up privileges.
    #[error("dropping privileges")]
    Privilege(#[from] ipsla_net::privilege::PrivilegeError),
}

/// Re-reads the configuration for a reload (the file and the command-line overrides).
pub type Loader = Box<dyn Fn() -> Result<AgentConfig, String> + Send + Sync>;

pub use crate::api::ReloadSummary;

impl Shared {
    /// See [`Agent::healthy`].
    pub(crate) fn healthy(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let beat = self.heartbeat_ms.load(Ordering::Relaxed);
        !self.stop.is_cancelled() && now.saturating_sub(beat) < HEARTBEAT_STALE.as_millis() as u64
    }
}

/// The state the threads share. Only this module touches its fields; the HTTP module reads it
/// through the `pub(crate)` methods below.
pub(crate) struct Shared {
    cfg: Mutex<AgentConfig>,
    loader: Mutex<Option<Loader>>,
    /// The bookkeeping: schedules, reactions, tracks ([`Engine`], sans-IO).
    engine: Mutex<Engine>,
    /// Shared with the remote-write tasks, whose queue it is.
    store: Arc<Mutex<Store>>,
    metrics: Metrics,
    responder: Option<RunningResponder>,
    failover: Mutex<Option<crate::routes::Failover>>,
    /// The agent's runtime (the failover task starts on it at a reload).
    rt: tokio::runtime::Handle,
    /// Cancelled by [`Agent::stop`]: the scheduler ends, HTTP shuts down gracefully.
    stop: CancellationToken,
    /// Wakes the scheduler after a change outside it (a finished run, a reload).
    wake: Notify,
    alerts: Alerts,
    /// When the agent started; the heartbeat counts milliseconds from it.
    started: Instant,
    /// Set by every pass of the scheduler loop (see [`Agent::healthy`]).
    heartbeat_ms: AtomicU64,
    store_health: Mutex<StoreHealth>,
    /// One permit per `/probe` run at once.
    probes: Arc<Semaphore>,
    /// Counts stored runs and reloads: the SNMP subagent rebuilds its view when it moves.
    generation: AtomicU64,
    /// Reaction transitions with a trap action, to the SNMP subagent (with `[snmp]`).
    traps: Option<tokio::sync::mpsc::Sender<crate::snmp::Trap>>,
    /// The other sites' rows of the mesh grid, as their agents last gave them.
    peers: crate::mesh::peers::Peers,
}

/// One operation's summary (`stored` counted in `store` when it could be locked).
fn summary(o: &crate::engine::OpState, store: Option<&Store>, now: Instant) -> OpSummary {
    OpSummary {
        id: o.def.id,
        r#type: o.def.spec.op.kind().name().to_string(),
        target: o.def.spec.target_label(),
        tag: o.def.tag.clone(),
        state: o.schedule.state(),
        runs: o.schedule.runs,
        busies: o.schedule.busies,
        stored: store.and_then(|s| s.count(o.def.id).ok()).unwrap_or(0),
        frequency_s: o.def.schedule.frequency.as_secs_f64(),
        successes: o.successes,
        failures: o.failures,
        life_s: o.def.schedule.life.map(|l| l.as_secs_f64()),
        time_to_live_s: o.schedule.time_to_live(now).map(|l| l.as_secs_f64()),
        active_reactions: o.active_reactions().into_iter().map(String::from).collect(),
        mesh: o.def.mesh.as_ref().map(Into::into),
    }
}

/// Whether the store takes writes, for `/api/v1/store`, `ipsla_store_writable` and the log.
#[derive(Debug, Default)]
struct StoreHealth {
    failing: bool,
    write_errors: u64,
    last_error: Option<String>,
    last_error_ns: Option<i64>,
    log: RejectLog,
}

impl Shared {
    /// Runs one store write and notes its outcome (the store's lock is released first).
    fn write_store(&self, what: &'static str, write: impl FnOnce(&Store) -> rusqlite::Result<()>) {
        let r = match self.store.lock() {
            Ok(s) => write(&s),
            Err(_) => return,
        };
        self.note_store(what, r);
    }

    /// Notes the outcome of a store write. A refused write (disk full, read-only file system,
    /// removed directory) never stops measuring or alerting: it is counted, reported by the API
    /// and the metrics, and logged at a bounded rate; the first write that succeeds again says so.
    fn note_store(&self, what: &'static str, r: rusqlite::Result<()>) {
        let Ok(mut h) = self.store_health.lock() else { return };
        match r {
            Ok(()) => {
                if h.failing {
                    h.failing = false;
                    tracing::warn!(refused = h.write_errors, "the store accepts writes again");
                    self.metrics.store_ok();
                }
            }
            Err(e) => {
                h.failing = true;
                h.write_errors += 1;
                h.last_error = Some(format!("{what}: {e}"));
                h.last_error_ns = Some(wall_ns());
                self.metrics.store_error();
                if let Some(suppressed) = h.log.allow(Instant::now(), what) {
                    tracing::error!(error = %e, suppressed, "the store refused {what}; measuring and alerting go on");
                }
            }
        }
    }
}

/// What the HTTP API reads (crate::http): each method takes and releases the locks it needs.
impl Shared {
    /// Re-reads the configuration and applies it (`/-/reload`); see [`Agent::reload_from_source`].
    pub(crate) fn reload_from_source(&self) -> Result<ReloadSummary, String> {
        reload_from_source(self)
    }

    /// A permit for one `/probe` run; `Err(limit)` when `limit` runs are going (0: `/probe` is
    /// off).
    pub(crate) fn probe_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, usize> {
        let limit = self.cfg.lock().map(|c| c.probe_concurrency).unwrap_or(0);
        self.probes.clone().try_acquire_owned().map_err(|_| limit)
    }

    /// The mesh this agent is a site of, when it is one.
    pub(crate) fn mesh(&self) -> Option<Arc<crate::mesh::Mesh>> {
        self.cfg.lock().ok()?.mesh.clone()
    }

    /// This site's row of the mesh grid (`/api/v1/mesh`); `None` outside a mesh.
    pub(crate) fn mesh_row(&self) -> Option<crate::mesh::peers::Row> {
        let mesh = self.mesh()?;
        Some(crate::mesh::peers::own_row(&mesh, |op| self.read_store(|s| s.latest(op)).flatten()))
    }

    /// The other sites' rows of the mesh grid (cached, see [`crate::mesh::peers`]).
    pub(crate) async fn peer_rows(&self, mesh: &crate::mesh::Mesh) -> crate::mesh::peers::Rows {
        self.peers.rows(mesh).await
    }

    /// True once the agent is stopping.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// The metrics registry (`/metrics`).
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The agent's responder, when it runs one.
    pub(crate) fn responder(&self) -> Option<&RunningResponder> {
        self.responder.as_ref()
    }

    /// Runs a read on the store; `None` when it fails (or the lock is poisoned).
    pub(crate) fn read_store<R>(&self, read: impl FnOnce(&Store) -> rusqlite::Result<R>) -> Option<R> {
        self.store.lock().ok().and_then(|s| read(&s).ok())
    }

    /// Whether operation `id` is configured.
    pub(crate) fn has_operation(&self, id: u32) -> bool {
        self.engine.lock().is_ok_and(|e| e.op(id).is_some())
    }

    /// Operation `id`'s configuration as it runs; `None` when there is no such operation.
    pub(crate) fn op_configuration(&self, id: u32) -> Option<crate::api::OperationConfiguration> {
        self.engine.lock().ok()?.op(id).map(|d| d.def.configuration())
    }

    /// Every operation as `/api/v1/operations` lists it, in id order.
    pub(crate) fn op_summaries(&self, now: Instant) -> Option<Vec<OpSummary>> {
        let engine = self.engine.lock().ok()?;
        let store = self.store.lock().ok();
        Some(engine.ops().map(|o| summary(o, store.as_deref(), now)).collect())
    }

    /// Operation `id` as `/api/v1/operations` lists it; `None` when there is no such operation.
    pub(crate) fn op_summary(&self, id: u32, now: Instant) -> Option<OpSummary> {
        let engine = self.engine.lock().ok()?;
        let store = self.store.lock().ok();
        engine.op(id).map(|o| summary(o, store.as_deref(), now))
    }

    /// Every track's state.
    pub(crate) fn track_status(&self) -> Option<Vec<TrackStatus>> {
        self.engine.lock().ok().map(|e| e.track_status())
    }

    /// The route failover's status; `None` when the agent manages no routes.
    /// The routes' status; with no `[[route]]`, the same document with no route in it (none is
    /// an answer, not a missing page).
    pub(crate) fn route_status(&self) -> Option<crate::routes::RouteStatus> {
        let f = self.failover.lock().ok()?;
        Some(match f.as_ref() {
            Some(f) => f.status(),
            None => crate::routes::RouteStatus { protocol: self.cfg.lock().ok()?.route_protocol, ..Default::default() },
        })
    }

    /// Whether the store takes writes (`/api/v1/store`).
    pub(crate) fn store_status(&self) -> Option<StoreStatus> {
        let path = self.cfg.lock().map(|c| c.store.clone()).unwrap_or_default();
        let h = self.store_health.lock().ok()?;
        Some(StoreStatus {
            path,
            writable: !h.failing,
            write_errors: h.write_errors,
            last_error: h.last_error.clone(),
            last_error_time: h.last_error_ns.map(|ns| crate::store::rfc3339_ns(ns, humantime::format_rfc3339_millis)),
            last_error_ns: h.last_error_ns,
        })
    }
}

/// What the SNMP subagent reads: each call takes and releases the locks it needs (the engine's,
/// then the store's), on the blocking pool.
impl crate::snmp::Source for Shared {
    fn rows(&self) -> Option<Vec<crate::snmp::mib::Row>> {
        let now = Instant::now();
        let mut rows: Vec<crate::snmp::mib::Row> = {
            let engine = self.engine.lock().ok()?;
            engine.ops().map(|o| crate::snmp::snmp_row(o, now)).collect()
        };
        // the run documents as the API serves them; one that does not read is left out
        let doc = |run: crate::store::StoredRun| {
            let doc: crate::report::Report = serde_json::from_value(run.report).ok()?;
            Some(crate::snmp::mib::Latest { start_ns: run.start_ns, run: doc })
        };
        for r in &mut rows {
            if crate::snmp::mib::rtt_type(r.kind).is_none() {
                continue;
            }
            // the store's lock is held for one operation's reads at a time, never while the
            // documents are parsed: a walk of many operations does not hold up the runs' writes
            let (latest, newest, hours) = {
                let store = self.store.lock().ok()?;
                (
                    store.latest(r.id).ok().flatten(),
                    store.history(r.id, crate::snmp::mib::HISTORY_BUCKETS).unwrap_or_default(),
                    store.aggregates(r.id).unwrap_or_default(),
                )
            };
            r.latest = latest.and_then(doc);
            r.history = newest.into_iter().rev().filter_map(doc).collect();
            r.hours = hours;
        }
        Some(rows)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    fn responder(&self) -> bool {
        self.responder.is_some()
    }
}

/// How long the scheduler may go without a pass before the agent counts as unhealthy. It passes
/// at least once a second (`HEARTBEAT_TICK`) plus the locks it waits for; seconds without one
/// mean a stuck lock or a dead task.
const HEARTBEAT_STALE: Duration = Duration::from_secs(5);

/// A running agent.
pub struct Agent {
    shared: Arc<Shared>,
    /// The scheduler, the HTTP server and the runs (on its blocking pool).
    runtime: tokio::runtime::Runtime,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// One permit per worker: a run holds one.
    workers: Arc<Semaphore>,
    http: SocketAddr,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("http", &self.http).finish()
    }
}

fn wall_ns() -> i64 {
    wall_now().as_nanos() as i64
}

impl Agent {
    /// Starts everything; returns once the HTTP listener and the responder are bound.
    pub fn start(cfg: AgentConfig) -> Result<Agent, AgentError> {
        Self::start_inner(cfg, None).map(|(a, _)| a)
    }

    /// Like [`Agent::start`], giving up privileges on the way: the store, the responder's
    /// listeners and the HTTP listener are opened as the process was started, then, while it
    /// still has one thread (capabilities are per thread), it switches to `user` when given and
    /// keeps only the capabilities this configuration needs ([`Agent::run_privileges`]). Every
    /// thread is started after that. Fails when another thread already runs.
    pub fn start_unprivileged(cfg: AgentConfig, user: Option<String>) -> Result<(Agent, PrivilegeReport), AgentError> {
        let plan = Plan { user, bind: Vec::new(), run: Self::run_privileges(&cfg) };
        let (agent, report) = Self::start_inner(cfg, Some(plan))?;
        let report = report.ok_or_else(|| std::io::Error::other("privileges: no report"))?;
        Ok((agent, report))
    }

    /// What a configuration needs once its listeners are bound: `CAP_NET_BIND_SERVICE` when the
    /// responder may open measurement ports below 1024 or an operation binds a source port below
    /// 1024, `CAP_NET_RAW` for ICMP operations (the raw-socket fallback) and VRFs
    /// (`SO_BINDTODEVICE`), `CAP_NET_ADMIN` for route failover. A reload that adds what was not
    /// needed at start finds the capability gone: such changes need a restart.
    pub fn run_privileges(cfg: &AgentConfig) -> Vec<Privilege> {
        let mut v = cfg.responder.as_ref().map(ResponderOptions::run_privileges).unwrap_or_default();
        let sockets = || cfg.operations.iter().map(|o| &o.spec.sockets);
        if !v.contains(&Privilege::BindService) && sockets().any(|s| (1..1024).contains(&s.source_port)) {
            v.push(Privilege::BindService);
        }
        let icmp = cfg.operations.iter().any(|o| o.spec.op.icmp());
        if icmp || sockets().any(|s| s.vrf.is_some()) {
            v.push(Privilege::Raw);
        }
        if !cfg.routes.is_empty() {
            v.push(Privilege::Admin);
        }
        v
    }

    fn start_inner(cfg: AgentConfig, plan: Option<Plan>) -> Result<(Agent, Option<PrivilegeReport>), AgentError> {
        let mut store =
            Store::open(&cfg.store).map_err(|source| AgentError::Store { path: cfg.store.clone(), source })?;
        store.set_max_size(Some(cfg.store_max_size));
        let bound = cfg.responder.clone().map(bind_responder).transpose()?;
        let listener =
            std::net::TcpListener::bind(cfg.http).map_err(|source| AgentError::Http { addr: cfg.http, source })?;
        listener.set_nonblocking(true)?;
        let http = listener.local_addr()?;
        let report = plan.map(|p| privilege::enter(&p)).transpose()?;
        let responder = bound.map(|b| b.spawn()).transpose()?;
        let now = Instant::now();
        let engine = Engine::new(&cfg.operations, cfg.tracks.clone(), now, wall_now(), rand::random());
        // a run blocks its thread (the pacer holds the probe schedule): runs go to the blocking
        // pool, at most `workers` at a time
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(cfg.workers + 2) // the runs, a scheduler turn, a prune
            .thread_name("ipsla-agent")
            .enable_all()
            .build()?;
        let stop = CancellationToken::new();
        let failover = (!cfg.routes.is_empty()).then(|| {
            let (routes, up) = (cfg.routes.clone(), engine.track_states());
            crate::routes::Failover::start(runtime.handle(), routes, cfg.route_protocol, up, &stop, None)
        });
        let metrics = Metrics::new();
        metrics.set_histograms(cfg.metrics_histograms);
        for d in &cfg.operations {
            metrics.declare(d);
        }
        let alerts = Alerts::start(runtime.handle(), cfg.alerts.clone(), &metrics);
        // queued while the master is away; a full queue drops (and logs) rather than waits
        let (traps, trap_queue) = tokio::sync::mpsc::channel(256);
        let shared = Arc::new(Shared {
            cfg: Mutex::new(cfg.clone()),
            loader: Mutex::new(None),
            engine: Mutex::new(engine),
            store: Arc::new(Mutex::new(store)),
            metrics,
            responder,
            failover: Mutex::new(failover),
            rt: runtime.handle().clone(),
            stop,
            wake: Notify::new(),
            alerts,
            started: now,
            heartbeat_ms: AtomicU64::new(0),
            store_health: Mutex::new(StoreHealth::default()),
            probes: Arc::new(Semaphore::new(cfg.probe_concurrency)),
            generation: AtomicU64::new(0),
            traps: cfg.snmp.is_some().then_some(traps),
            peers: Default::default(),
        });
        let workers = Arc::new(Semaphore::new(cfg.workers));
        let mut tasks = vec![
            runtime.spawn(scheduler(shared.clone(), workers.clone())),
            runtime.spawn(crate::http::serve(shared.clone(), listener, shared.stop.clone())),
        ];
        if let Some(src) = cfg.mesh.as_ref().and_then(|m| m.source.clone()) {
            tasks.push(runtime.spawn(mesh_poller(shared.clone(), src)));
        }
        tasks.extend(crate::remote_write::start(
            runtime.handle(),
            &cfg.remote_write,
            &shared.store,
            &shared.metrics,
            &shared.stop,
        ));
        if let Some(snmp) = cfg.snmp.clone() {
            let src: Arc<dyn crate::snmp::Source> = shared.clone();
            tasks.push(runtime.spawn(crate::snmp::session::run(snmp, src, trap_queue, shared.stop.clone())));
        }
        Ok((Agent { shared, runtime, tasks, workers, http }, report))
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// True while the scheduler loop is turning (its last pass is younger than a few seconds) and
    /// the agent is not stopping: what a service manager's watchdog should be fed on.
    pub fn healthy(&self) -> bool {
        self.shared.healthy()
    }

    /// Sets how `/-/reload` (and [`Agent::reload_from_source`]) re-read the configuration.
    pub fn set_loader(&self, loader: Loader) {
        if let Ok(mut l) = self.shared.loader.lock() {
            *l = Some(loader);
        }
    }

    /// Applies a new configuration: operations whose definition did not change keep their
    /// schedule, statistics and reaction states; tracks and routes are redefined when they
    /// changed. Listener, store, workers and responder settings need a restart.
    pub fn reload(&self, cfg: AgentConfig) -> ReloadSummary {
        reload(&self.shared, cfg)
    }

    /// Re-reads the configuration with the loader and applies it (SIGHUP). On a configuration
    /// error nothing changes and the error is returned.
    pub fn reload_from_source(&self) -> Result<ReloadSummary, String> {
        reload_from_source(&self.shared)
    }

    /// Stops scheduling, cancels the runs in flight (each ends within
    /// [`ipsla_net::probe::CANCEL_POLL`] and is not stored, see `run_job`), stops HTTP and the
    /// responder, then gives the alert sinks up to 5 s to deliver what is queued.
    pub fn stop(self) {
        self.shared.stop.cancel();
        let n = self.shared.cfg.lock().map(|c| c.workers).unwrap_or(1) as u32;
        self.runtime.block_on(async {
            for t in self.tasks {
                let _ = t.await;
            }
            // every permit back: no run is going
            let _ = self.workers.acquire_many(n).await;
            let failover = self.shared.failover.lock().ok().and_then(|mut f| f.take());
            if let Some(f) = failover {
                f.stopped().await;
            }
            self.shared.alerts.stopped(Duration::from_secs(5)).await;
        });
        self.runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

fn reload_from_source(sh: &Shared) -> Result<ReloadSummary, String> {
    let cfg = match sh.loader.lock().ok().as_ref().and_then(|l| l.as_ref()) {
        Some(load) => load()?,
        None => return Err("this agent has no configuration source to reload from".into()),
    };
    Ok(reload(sh, cfg))
}

fn reload(sh: &Shared, new: AgentConfig) -> ReloadSummary {
    let mut sum = ReloadSummary::default();
    let Ok(mut cur) = sh.cfg.lock() else { return sum };
    for (key, differs) in [
        ("agent.http", cur.http != new.http),
        ("agent.store", cur.store != new.store),
        ("agent.workers", cur.workers != new.workers),
        ("responder", cur.responder_file != new.responder_file),
        ("remote_write", cur.remote_write != new.remote_write),
        ("agent.probe_concurrency", cur.probe_concurrency != new.probe_concurrency),
        ("snmp", cur.snmp != new.snmp),
        ("mesh.url", cur.mesh.as_ref().map(|m| &m.source) != new.mesh.as_ref().map(|m| &m.source)),
    ] {
        if differs {
            sum.needs_restart.push(key.into());
        }
    }
    let now = Instant::now();
    let Ok(mut engine) = sh.engine.lock() else { return sum };
    let (ops, outputs) = engine.reload(now, wall_now(), &new.operations, new.tracks.clone());
    let states = engine.track_states();
    drop(engine);
    sh.metrics.set_histograms(new.metrics_histograms);
    for d in &ops.forgotten {
        sh.metrics.forget(d);
    }
    for d in new.operations.iter().filter(|d| ops.changed.contains(&d.id) || ops.added.contains(&d.id)) {
        sh.metrics.declare(d);
    }
    if ops.tracks_changed {
        for old in cur.tracks.iter().filter(|o| !new.tracks.iter().any(|n| n.id == o.id)) {
            sh.metrics.forget_track(old.id);
        }
    }
    (sum.kept, sum.changed, sum.added, sum.removed, sum.tracks_changed) =
        (ops.kept, ops.changed, ops.added, ops.removed, ops.tracks_changed);
    carry_out(sh, outputs);
    sh.wake.notify_one();
    sum.routes_changed = cur.routes != new.routes || cur.route_protocol != new.route_protocol;
    if sum.routes_changed
        && let Ok(mut f) = sh.failover.lock()
    {
        let old = f.take();
        *f = if new.routes.is_empty() {
            drop(old); // cancelled: it ends at its next await
            None
        } else {
            let (routes, up) = (new.routes.clone(), states.clone());
            Some(crate::routes::Failover::start(&sh.rt, routes, new.route_protocol, up, &sh.stop, old))
        };
    }
    sum.alerts_changed = cur.alerts != new.alerts;
    if sum.alerts_changed {
        sh.alerts.reconfigure(new.alerts.clone(), &sh.metrics, Duration::from_secs(5));
    }
    if cur.store_max_size != new.store_max_size
        && let Ok(mut s) = sh.store.lock()
    {
        s.set_max_size(Some(new.store_max_size));
    }
    let (http, store, workers, responder, responder_file, snmp) =
        (cur.http, cur.store.clone(), cur.workers, cur.responder.clone(), cur.responder_file.clone(), cur.snmp.clone());
    let (remote_write, probe_concurrency) = (std::mem::take(&mut cur.remote_write), cur.probe_concurrency);
    *cur =
        AgentConfig { http, store, workers, responder, responder_file, remote_write, probe_concurrency, snmp, ..new };
    sh.generation.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        kept = sum.kept.len(),
        changed = ?sum.changed,
        added = ?sum.added,
        removed = ?sum.removed,
        tracks_changed = sum.tracks_changed,
        routes_changed = sum.routes_changed,
        alerts_changed = sum.alerts_changed,
        "configuration reloaded"
    );
    if !sum.needs_restart.is_empty() {
        tracing::warn!(settings = ?sum.needs_restart, "these settings changed and take effect only after a restart");
    }
    sum
}

/// Keeps the mesh file up to date from its URL (`[mesh] url`): every `poll`, a fetched file that
/// differs from the local copy and is a valid mesh for this site replaces the copy (written aside,
/// then renamed) and is reloaded. A fetch that fails, or a file with an error, leaves the agent
/// running on its copy, and is logged with the URL (a failing fetch once until it works again).
async fn mesh_poller(sh: Arc<Shared>, src: crate::mesh::MeshSource) {
    let (file, url) = (src.file.display().to_string(), src.url.clone());
    let mut failing = false;
    let mut refused = String::new();
    loop {
        match src.fetch().await {
            Err(why) => {
                if !failing {
                    tracing::warn!("mesh.url: fetching {url}: {why}; the agent runs on from {file}");
                }
                failing = true;
            }
            Ok(text) => {
                if failing {
                    tracing::info!("mesh.url: {url} answers again");
                }
                failing = false;
                let (sh, src, text) = (sh.clone(), src.clone(), text.clone());
                let done = tokio::task::spawn_blocking(move || update_mesh(&sh, &src, &text)).await;
                match done {
                    Ok(Ok(None)) => refused.clear(),
                    Ok(Ok(Some(sum))) => {
                        refused.clear();
                        tracing::info!(added = ?sum.added, removed = ?sum.removed, changed = ?sum.changed, "mesh.url: {file} updated from {url} and reloaded");
                    }
                    // the same refusal is logged once
                    Ok(Err(e)) if e != refused => {
                        tracing::error!("mesh.url: {e}; the agent runs on from {file}");
                        refused = e;
                    }
                    _ => {}
                }
            }
        }
        tokio::select! {
            _ = sh.stop.cancelled() => return,
            _ = tokio::time::sleep(src.poll) => {}
        }
    }
}

/// Replaces the mesh file with `text` and reloads, when `text` differs from it and is a valid
/// mesh for this site; `Ok(None)` when it is the same.
fn update_mesh(sh: &Shared, src: &crate::mesh::MeshSource, text: &str) -> Result<Option<ReloadSummary>, String> {
    if std::fs::read_to_string(&src.file).is_ok_and(|cur| cur == text) {
        return Ok(None);
    }
    crate::mesh::expand(&src.url, text, &src.site, "mesh").map_err(|e| e.0)?;
    let mut aside = src.file.clone().into_os_string();
    aside.push(".part");
    std::fs::write(&aside, text)
        .and_then(|()| std::fs::rename(&aside, &src.file))
        .map_err(|e| format!("writing {}: {e}", src.file.display()))?;
    reload_from_source(sh).map(Some)
}

/// How often the scheduler turns when nothing is due: the heartbeat `/-/healthy` watches.
const HEARTBEAT_TICK: Duration = Duration::from_secs(1);

/// The driver of the [`Engine`]: starts the due runs, carries out what the engine decides, and
/// sleeps until the next due time, a wake-up (a finished run, a reload) or the stop.
async fn scheduler(sh: Arc<Shared>, workers: Arc<Semaphore>) {
    let mut last_prune = Instant::now();
    loop {
        sh.heartbeat_ms.store(sh.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        // the engine's lock and the effects (store, alerts) are blocking work: off the async threads
        let turn = sh.clone();
        let Ok(Some((jobs, next))) = tokio::task::spawn_blocking(move || step(&turn, Instant::now())).await else {
            return;
        };
        for job in jobs {
            let (sh, workers) = (sh.clone(), workers.clone());
            tokio::spawn(async move {
                // a due run waits for a free worker, as it waited for a free thread
                let Ok(permit) = workers.acquire_owned().await else { return };
                let rt = tokio::runtime::Handle::current();
                let _ = tokio::task::spawn_blocking(move || {
                    run_job(&sh, job, &rt);
                    drop(permit);
                })
                .await;
            });
        }
        if last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = Instant::now();
            let sh = sh.clone();
            tokio::task::spawn_blocking(move || prune(&sh));
        }
        let wait = next.map_or(HEARTBEAT_TICK, |n| n.saturating_duration_since(Instant::now()).min(HEARTBEAT_TICK));
        tokio::select! {
            _ = sh.stop.cancelled() => return,
            _ = sh.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One turn of the engine: the runs due at `now` and the next due time; what else happened is
/// carried out.
fn step(sh: &Shared, now: Instant) -> Option<(Vec<Job>, Option<Instant>)> {
    let mut engine = sh.engine.lock().ok()?;
    let (jobs, mut outputs) = engine.poll_due(now);
    outputs.extend(engine.handle_timeout(now));
    let next = engine.poll_timeout();
    drop(engine);
    carry_out(sh, outputs);
    Some((jobs, next))
}

/// Drops runs older than the retention and hours older than each operation's history.
fn prune(sh: &Shared) {
    let hours: BTreeMap<u32, u8> =
        sh.engine.lock().map(|e| e.ops().map(|o| (o.def.id, o.def.history.hours)).collect()).unwrap_or_default();
    let retention = sh.cfg.lock().map(|c| c.retention).unwrap_or(Duration::from_secs(7 * 86_400));
    if let Ok(s) = sh.store.lock() {
        match s.prune(wall_ns(), retention) {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned runs older than the retention"),
            Err(e) => tracing::warn!(error = %e, "pruning the store failed"),
            _ => {}
        }
        match s.prune_aggregates(wall_ns(), &hours).and_then(|_| s.enforce_max_size()) {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned the oldest runs to keep the store under its size"),
            Err(e) => tracing::warn!(error = %e, "pruning the store failed"),
            _ => {}
        }
    }
}

/// One run, on a blocking thread: run, store (committed before it is published), export, then
/// hand the result to the engine and carry out what follows. The agent's stop cancels a run in
/// flight: it ends within [`ipsla_net::probe::CANCEL_POLL`] and is neither stored nor exported
/// (its unsent and unanswered probes would read as loss), only logged.
fn run_job(sh: &Shared, job: Job, rt: &tokio::runtime::Handle) {
    let id = job.id;
    let Some(def) = sh.engine.lock().ok().and_then(|e| e.op(id).map(|o| o.def.clone())) else { return };
    let start = wall_now();
    let stop = || sh.stop.is_cancelled();
    let hooks = Hooks { events: None, cancelled: Some(&stop) };
    let outcome = runner::run(&def.spec, &RunContext { sequence: job.sequence, rt, hooks });
    let outputs = match &outcome {
        Err(RunError::Cancelled) => {
            tracing::info!(op = id, run = job.run, "run cancelled: the agent is stopping; it is not stored");
            return;
        }
        Ok(out) => {
            if let Some(why) = &out.result.cause {
                tracing::warn!(op = id, reason = %why, "the operation failed");
            }
            let ctx = Context::of(&def.spec, id, job.run, start, out.clock.clone(), false);
            let report = Report { mesh: def.mesh.as_ref().map(Into::into), ..Report::of_run(ctx, out) };
            let json = serde_json::to_string(&report).unwrap_or_default();
            let record = RunRecord {
                op: id,
                start_ns: start.as_nanos() as i64,
                result: &out.result,
                jitter: def.spec.op.kind().jitter(),
                report: &json,
                history: def.history,
            };
            sh.write_store("a completed run", |s| s.insert_run(&record));
            sh.generation.fetch_add(1, Ordering::Relaxed);
            // a reload may have removed or redefined the operation while it ran: its series are
            // gone (or belong to the new definition) and must not come back. Under the engine's
            // lock, which a reload holds while it decides, before it forgets the series.
            if let Ok(e) = sh.engine.lock()
                && e.op(id).is_some_and(|o| o.def == def)
            {
                sh.metrics.observe(&def, &out.result, &out.detail);
            }
            let mut outputs = sh.engine.lock().map(|mut e| e.handle_result(Instant::now(), id, Some(&out.result)));
            if let Ok(v) = &mut outputs {
                // the new path is in this run's detail, which the engine does not see
                v.retain(|o| {
                    let Output::PathChange { op } = *o else { return true };
                    path_change(sh, op, &out.detail);
                    false
                });
            }
            outputs
        }
        Err(e) => {
            tracing::warn!(op = id, error = %ipsla_core::error::Chain(e), "run could not start");
            sh.engine.lock().map(|mut e| e.handle_result(Instant::now(), id, None))
        }
    };
    carry_out(sh, outputs.unwrap_or_default());
    sh.wake.notify_one();
}

/// Logs and stores that `op`'s path changed, with the new path from the run's `detail`.
fn path_change(sh: &Shared, op: u32, detail: &crate::ops::Detail) {
    let path = detail.get("path").and_then(|p| p.as_array()).map_or_else(String::new, |hops| {
        hops.iter().map(|h| h.as_str().unwrap_or("*")).collect::<Vec<_>>().join(" -> ")
    });
    let text = format!("IP SLAs({op}): path changed, now {path}");
    tracing::warn!(target: "ipsla::path", op, "{text}");
    let e = StoredEvent::new(EventSubject::Path(op), wall_ns(), "pathChange", true, None, text);
    sh.write_store("an event", |s| s.insert_event(&e));
}

/// The level a reaction's IOS line is logged at: a threshold crossed (or a timeout, a connection
/// loss) is a warning to act on; the same reaction clearing is information. The IOS text stays
/// as IOS writes it, so a clear reads "exceeded" for an element where lower is worse (mos: the
/// score went back above its threshold); the `state` field says which it is.
fn reaction_level(e: &ipsla_core::reaction::ReactionEvent) -> tracing::Level {
    if e.occurred { tracing::Level::WARN } else { tracing::Level::INFO }
}

/// Hands a reaction transition to the SNMP subagent as a notification; without `[snmp]` it is
/// logged once that no trap can be sent.
fn send_trap(sh: &Shared, op: u32, e: &ipsla_core::reaction::ReactionEvent) {
    let Some(tx) = &sh.traps else {
        tracing::warn!(
            op,
            element = e.element.keyword(),
            "reaction action trap: no SNMP trap sent, the configuration has no [snmp] section"
        );
        return;
    };
    let found = sh.engine.lock().ok().and_then(|engine| {
        let o = engine.op(op)?;
        let (i, r) =
            o.def.reactions.iter().enumerate().find(|(_, r)| r.element == e.element && r.action == e.action)?;
        Some(crate::snmp::Trap {
            op,
            config: i as u32 + 1,
            tag: o.def.tag.clone(),
            element: e.element,
            occurred: e.occurred,
            value: e.value,
            rising: r.rising,
            falling: r.falling,
        })
    });
    if let Some(t) = found
        && tx.try_send(t).is_err()
    {
        tracing::warn!(
            op,
            element = e.element.keyword(),
            "SNMP: the trap queue (256) is full while the master agent is away; this notification is dropped"
        );
    }
}

/// Carries out the engine's decisions: logs (IOS syslog lines), stored events, metrics, alerts,
/// the route failover.
fn carry_out(sh: &Shared, outputs: Vec<Output>) {
    for o in outputs {
        match o {
            Output::Busy { op } => tracing::info!(op, "busy: the previous run is still going, this one is skipped"),
            Output::Reaction { op, event: e } => {
                let text = e.syslog(op);
                if matches!(e.action, Action::Alert | Action::AlertAndTrigger | Action::Trap | Action::TrapAndTrigger) {
                    if reaction_level(&e) == tracing::Level::WARN {
                        tracing::warn!(target: "ipsla::reaction", op, value = e.value, state = "occurred", "{text}");
                    } else {
                        tracing::info!(target: "ipsla::reaction", op, value = e.value, state = "cleared", "{text}");
                    }
                }
                if matches!(e.action, Action::Alert | Action::AlertAndTrigger) {
                    sh.alerts.send(AlertEvent::reaction(op, &e, wall_ns()));
                }
                if matches!(e.action, Action::Trap | Action::TrapAndTrigger) {
                    send_trap(sh, op, &e);
                }
                sh.metrics.reaction(op, e.element.keyword(), e.occurred);
                let stored = StoredEvent::new(
                    EventSubject::Operation(op),
                    wall_ns(),
                    e.element.keyword(),
                    e.occurred,
                    Some(e.value),
                    text,
                );
                sh.write_store("an event", |s| s.insert_event(&stored));
            }
            Output::Triggered { by, op } => tracing::info!(op = by, target = op, "reaction triggered operation"),
            Output::Track(c) => {
                // %TRACK-6-STATE: IOS severity 6, informational, either way
                tracing::info!(target: "ipsla::track", track = c.id, up = c.up, "{}", c.text);
                sh.metrics.track(c.id, c.up);
                sh.alerts.send(AlertEvent::track(&c, wall_ns()));
                let value = Some(if c.up { 1.0 } else { 0.0 });
                let e = StoredEvent::new(EventSubject::Track(c.id), wall_ns(), "state", !c.up, value, c.text);
                sh.write_store("an event", |s| s.insert_event(&e));
            }
            Output::TrackStates(states) => {
                if let Ok(f) = sh.failover.lock()
                    && let Some(f) = f.as_ref()
                {
                    f.update(states);
                }
            }
            // run_job stores it with the new path, which only the run's detail has
            Output::PathChange { op } => path_change(sh, op, &crate::ops::Detail::new()),
        }
    }
}

#[cfg(test)]
mod health_tests;

#[cfg(test)]
mod log_level_tests {
    use ipsla_core::reaction::{Action, Element, ReactionEvent};

    #[test]
    fn a_reaction_clear_is_information_and_its_occurrence_a_warning() {
        let mos = |occurred| ReactionEvent { element: Element::Mos, occurred, value: 4.1, action: Action::Alert };
        assert_eq!(super::reaction_level(&mos(true)), tracing::Level::WARN);
        // IOS words the MOS clear "exceeded" (the score is back above its threshold): still a clear
        assert_eq!(mos(false).syslog(5), "%RTT-3-IPSLATHRESHOLD: IP SLAs(5): Threshold exceeded for mos");
        assert_eq!(super::reaction_level(&mos(false)), tracing::Level::INFO);
    }
}
