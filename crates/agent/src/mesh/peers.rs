//! The other sites' rows of the grid: each site's agent serves its own row at `GET /api/v1/mesh`
//! ([`Row`]); the grid of a site asks every other site whose agent has an HTTP address in the
//! mesh file (`http`, or the mesh's `http_port`), all at once, each within [`TIMEOUT`], and keeps
//! what they said for [`REFRESH`], so a page refreshed every few seconds costs each peer one small
//! request per [`REFRESH`] whoever looks. A peer that does not answer, or answers something else,
//! is a row of unknowns with the reason, never a row of numbers.

use super::{Mesh, SiteAgent};
use crate::store::StoredRun;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the other sites' rows are kept before they are asked again.
pub const REFRESH: Duration = Duration::from_secs(5);
/// The longest wait for one peer's row.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// The largest row accepted (a site of 1,000 sites and 10 tests is well under it).
const LIMIT: usize = 16 << 20;

/// `GET /api/v1/mesh`: the row of the site this agent is, one cell per test and destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The mesh file, as this agent names it.
    pub file: String,
    /// This agent's site: the row's source.
    pub site: String,
    /// Per test (the file's order), per other site (the file's order).
    pub cells: Vec<Cell>,
}

/// One cell of a row: the latest run of test `test` from the row's site to `dst`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The test's name.
    pub test: String,
    /// The destination site.
    pub dst: String,
    /// The operation's number ([`super::operation_id`]).
    pub op: u32,
    /// Its latest stored run; null before the first.
    pub latest: Option<StoredRun>,
}

/// What the grid knows of another site's row.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerRow {
    /// The site's agent answered with its row.
    Answered(Vec<Cell>),
    /// Why the row is unknown (`agent at URL did not answer (...)`).
    Unknown(String),
}

type Key = Vec<(String, String)>;
/// The rows by site name.
pub type Rows = Arc<BTreeMap<String, PeerRow>>;

/// The other sites' rows, fetched at most once per [`REFRESH`].
#[derive(Default)]
pub struct Peers {
    /// When the rows were fetched, from which (site, URL)s, and what they said. The lock is held
    /// while fetching, so that requests arriving meanwhile wait for the same answers.
    cache: tokio::sync::Mutex<Option<(Instant, Key, Rows)>>,
}

impl Peers {
    /// The rows of the mesh's other sites that have an agent address, by site name: from the
    /// cache when it is younger than [`REFRESH`] and for the same sites, else asked now.
    pub async fn rows(&self, mesh: &Mesh) -> Rows {
        let peers: Vec<(&str, &SiteAgent)> = mesh
            .sites
            .iter()
            .filter(|s| s.name != mesh.site)
            .filter_map(|s| Some((s.name.as_str(), s.http.as_ref()?)))
            .collect();
        let key: Key = peers.iter().map(|(n, a)| (n.to_string(), a.url.clone())).collect();
        let mut cache = self.cache.lock().await;
        if let Some((at, k, rows)) = cache.as_ref()
            && *k == key
            && at.elapsed() < REFRESH
        {
            return rows.clone();
        }
        let asked = futures_util::future::join_all(peers.iter().map(|(site, agent)| ask(site, agent))).await;
        let rows: Rows = Arc::new(peers.iter().map(|(site, _)| site.to_string()).zip(asked).collect());
        *cache = Some((Instant::now(), key, rows.clone()));
        rows
    }
}

/// One site's row from its agent.
async fn ask(site: &str, agent: &SiteAgent) -> PeerRow {
    let url = &agent.url;
    let text = match agent.target.get("/api/v1/mesh", TIMEOUT, LIMIT).await {
        Ok(t) => t,
        Err(why) => {
            return PeerRow::Unknown(format!(
                "agent at {url} did not answer ({why}); is it running, its [agent] http listening there?"
            ));
        }
    };
    match serde_json::from_str::<Row>(&text) {
        Ok(row) if row.site == site => PeerRow::Answered(row.cells),
        Ok(row) => PeerRow::Unknown(format!(
            "agent at {url} is site \"{}\" of its mesh, not \"{site}\"; check the site's http address",
            row.site
        )),
        Err(e) => PeerRow::Unknown(format!(
            "agent at {url} answered /api/v1/mesh with something else ({e}); is it an ipsla agent of this version?"
        )),
    }
}

/// This site's row: `latest(op)` is an operation's latest stored run.
pub fn own_row(mesh: &Mesh, latest: impl Fn(u32) -> Option<StoredRun>) -> Row {
    let cells = mesh
        .tests
        .iter()
        .flat_map(|test| {
            mesh.sites.iter().filter(|d| d.name != mesh.site).map(|d| {
                let op = super::operation_id(test, &d.name);
                Cell { test: test.clone(), dst: d.name.clone(), op, latest: latest(op) }
            })
        })
        .collect();
    Row { file: mesh.file.clone(), site: mesh.site.clone(), cells }
}
