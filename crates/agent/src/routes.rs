//! `[[route]]` tables: route failover driven by tracks, like IOS
//! `ip route 0.0.0.0 0.0.0.0 203.0.113.1 track 1` beside a floating backup
//! `ip route 0.0.0.0 0.0.0.0 198.51.100.1 10`.
//!
//! A route with `track = N` is installed while track N is up and withdrawn while it is down; a
//! route without `track` is always installed (the floating backup: give it a higher metric).
//! Routes carry the agent's own protocol number (`[agent] route_protocol`, default 167), and one
//! task on the agent's runtime keeps the kernel's table equal to what the tracks want: at start (removing what an
//! earlier run left and no longer applies), on every track change, and every 10 s (a route the
//! kernel flushed with its interface, or one deleted by hand, comes back).
//!
//! Routes stay installed when the agent exits, so that a restart does not move traffic; on start,
//! tracks are down until their operation's first result, so a tracked route is withdrawn until
//! then and traffic takes the backup meanwhile (as on a router reload).

use crate::config::{ConfigError, Result};
use ipnet::IpNet;
use ipsla_net::route::{RouteSpec, RouteTable};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Default `rtm_protocol` of our routes (`ip route show proto 167`).
pub const DEFAULT_PROTOCOL: u8 = 167;

/// How often the table is re-checked without a track change.
const RECHECK: Duration = Duration::from_secs(10);

/// One `[[route]]` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RouteFile {
    pub destination: String,
    pub gateway: Option<IpAddr>,
    pub device: Option<String>,
    pub metric: Option<u32>,
    pub table: Option<u32>,
    pub track: Option<u32>,
}

/// A validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteDef {
    /// The route.
    pub spec: RouteSpec,
    /// Installed only while this track is up; `None` = always.
    pub track: Option<u32>,
}

/// Checks `agent.route_protocol`.
pub fn protocol(v: Option<u32>) -> Result<u8> {
    match v {
        None => Ok(DEFAULT_PROTOCOL),
        Some(p) if (5..=255).contains(&p) => Ok(p as u8),
        Some(p) => Err(ConfigError(format!(
            "agent.route_protocol: {p} is not allowed; allowed: 5-255 (0-4 are the kernel's: unspec, redirect, kernel, boot, static)"
        ))),
    }
}

/// Validates the routes against the track ids.
pub fn validate(files: &[RouteFile], tracks: &[u32]) -> Result<Vec<RouteDef>> {
    let mut out: Vec<RouteDef> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let k = |n: &str| format!("route[{i}].{n}");
        let destination: IpNet = f.destination.parse().map_err(|_| {
            ConfigError(format!(
                "{}: \"{}\" is not a prefix (e.g. 0.0.0.0/0, 2001:db8::/32)",
                k("destination"),
                f.destination
            ))
        })?;
        if destination.trunc() != destination {
            return Err(ConfigError(format!(
                "{}: {destination} has host bits set; did you mean {}?",
                k("destination"),
                destination.trunc()
            )));
        }
        if let Some(g) = f.gateway
            && g.is_ipv4() != destination.addr().is_ipv4()
        {
            return Err(ConfigError(format!("{}: {g} is not of the destination's address family", k("gateway"))));
        }
        if f.gateway.is_none() && f.device.is_none() {
            return Err(ConfigError(format!("route[{i}]: set a gateway, a device, or both")));
        }
        if let Some(d) = &f.device
            && (d.is_empty() || d.len() > 15 || d.contains(['/', ' ']))
        {
            return Err(ConfigError(format!("{}: \"{d}\" is not an interface name (1-15 characters)", k("device"))));
        }
        let table = f.table.unwrap_or(254);
        if matches!(table, 0 | 253 | 255) {
            return Err(ConfigError(format!(
                "{}: {table} is not allowed; allowed: 1-252, 254 (main), 256-4294967295",
                k("table")
            )));
        }
        if let Some(t) = f.track
            && !tracks.contains(&t)
        {
            return Err(ConfigError(format!("{}: there is no track {t}", k("track"))));
        }
        let spec = RouteSpec {
            destination,
            gateway: f.gateway,
            device: f.device.clone(),
            metric: f.metric.unwrap_or(0),
            table,
        };
        if let Some(j) = out
            .iter()
            .position(|o| (o.spec.destination, o.spec.metric, o.spec.table) == (destination, spec.metric, table))
        {
            return Err(ConfigError(format!(
                "{}: route[{j}] has the same destination, metric and table, and the kernel keeps only one; give the backup a higher metric",
                k("metric")
            )));
        }
        out.push(RouteDef { spec, track: f.track });
    }
    Ok(out)
}

/// The routes the tracks want now.
pub fn wanted(defs: &[RouteDef], up: &BTreeMap<u32, bool>) -> BTreeSet<RouteSpec> {
    defs.iter()
        .filter(|d| d.track.is_none_or(|t| up.get(&t).copied().unwrap_or(false)))
        .map(|d| d.spec.clone())
        .collect()
}

/// What `/api/v1/routes` shows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, Deserialize)]
pub struct RouteStatus {
    /// Protocol number of our routes.
    pub protocol: u8,
    /// Every configured route with whether the tracks want it.
    pub routes: Vec<RouteState>,
    /// Our routes in the kernel after the last reconcile, as `ip route` prints them.
    pub installed: Vec<String>,
    /// Errors of the last reconcile.
    pub errors: Vec<String>,
    /// Reconciles done.
    pub reconciles: u64,
}

/// One configured route.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct RouteState {
    /// `ip route` form.
    pub route: String,
    /// Track it follows.
    pub track: Option<u32>,
    /// Whether it should be installed now.
    pub wanted: bool,
}

/// The failover task, on the agent's runtime.
#[derive(Debug)]
pub struct Failover {
    tx: watch::Sender<BTreeMap<u32, bool>>,
    status: Arc<Mutex<RouteStatus>>,
    /// Cancelled on drop (a reload replaces the failover) or with the agent's token.
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Failover {
    /// Starts the task on `rt`; it reconciles at once with `up` (the tracks' states now) and ends
    /// when `stop` is cancelled or the failover is dropped. `previous` (the failover a reload
    /// replaces) is stopped and waited for first, so that two never edit the table at once.
    pub fn start(
        rt: &tokio::runtime::Handle,
        defs: Vec<RouteDef>,
        protocol: u8,
        up: BTreeMap<u32, bool>,
        stop: &CancellationToken,
        previous: Option<Failover>,
    ) -> Failover {
        let (tx, rx) = watch::channel(up);
        let status = Arc::new(Mutex::new(RouteStatus { protocol, ..RouteStatus::default() }));
        let stop = stop.child_token();
        let (st, token) = (status.clone(), stop.clone());
        let task = rt.spawn(async move {
            if let Some(p) = previous {
                p.stopped().await;
            }
            run(defs, protocol, rx, st, token).await
        });
        Failover { tx, status, stop, task: Some(task) }
    }

    /// New track states (all of them); a burst of updates is reconciled once, with the newest.
    pub fn update(&self, up: BTreeMap<u32, bool>) {
        let _ = self.tx.send(up);
    }

    /// The status after the last reconcile.
    pub fn status(&self) -> RouteStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops the task and waits for it (routes stay as they are).
    pub async fn stopped(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Failover {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run(
    defs: Vec<RouteDef>,
    protocol: u8,
    mut rx: watch::Receiver<BTreeMap<u32, bool>>,
    status: Arc<Mutex<RouteStatus>>,
    stop: CancellationToken,
) {
    let table = match RouteTable::open(protocol) {
        Ok(t) => t,
        Err(e) => {
            let e = ipsla_core::error::Chain(&e);
            return tracing::error!(error = %e, "route failover cannot open netlink; routes are not managed");
        }
    };
    let mut last_errors: Vec<String> = Vec::new();
    loop {
        let up = rx.borrow_and_update().clone();
        let want = wanted(&defs, &up);
        let done = table.reconcile(&want).await;
        for r in &done.added {
            tracing::warn!(target: "ipsla::route", "route installed: {r} proto {protocol}");
        }
        for r in &done.removed {
            tracing::warn!(target: "ipsla::route", "route withdrawn: {r} proto {protocol}");
        }
        // the same failure every 10 s is logged once, until it changes
        if done.errors != last_errors {
            for e in &done.errors {
                let hint = if e.contains("Operation not permitted") || e.contains("EPERM") {
                    " (route failover needs CAP_NET_ADMIN)"
                } else {
                    ""
                };
                tracing::error!(target: "ipsla::route", "{e}{hint}");
            }
            last_errors = done.errors.clone();
        }
        let installed = table.list().await.unwrap_or_default();
        if let Ok(mut s) = status.lock() {
            s.routes = defs
                .iter()
                .map(|d| RouteState { route: d.spec.to_string(), track: d.track, wanted: want.contains(&d.spec) })
                .collect();
            s.installed = installed;
            s.errors = done.errors;
            s.reconciles += 1;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(text: &str) -> Vec<RouteFile> {
        #[derive(Deserialize)]
        struct F {
            route: Vec<RouteFile>,
        }
        toml::from_str::<F>(text).unwrap().route
    }

    const TWO: &str = "[[route]]\ndestination = \"0.0.0.0/0\"\ngateway = \"203.0.113.1\"\ntrack = 1\nmetric = 1\n\
                       [[route]]\ndestination = \"0.0.0.0/0\"\ngateway = \"198.51.100.1\"\nmetric = 10\n";

    #[test]
    fn the_tracked_route_follows_its_track_and_the_backup_stays() {
        let defs = validate(&files(TWO), &[1]).unwrap();
        let up = |v| BTreeMap::from([(1, v)]);
        let w = wanted(&defs, &up(true));
        assert_eq!(w.len(), 2);
        let w = wanted(&defs, &up(false));
        assert_eq!(w.iter().map(|r| r.to_string()).collect::<Vec<_>>(), vec!["0.0.0.0/0 via 198.51.100.1 metric 10"]);
        let w = wanted(&defs, &BTreeMap::new());
        assert_eq!(w.len(), 1, "a track with no state yet is down");
    }

    #[test]
    fn errors_name_the_key() {
        let e = |t: &str| validate(&files(t), &[1]).unwrap_err().to_string();
        assert!(
            e("[[route]]\ndestination = \"10.0.0.1/8\"\ngateway = \"10.1.1.1\"\n")
                .contains("route[0].destination: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8")
        );
        assert!(e("[[route]]\ndestination = \"x\"\ngateway = \"10.1.1.1\"\n").contains("route[0].destination"));
        assert!(e("[[route]]\ndestination = \"10.0.0.0/8\"\ngateway = \"::1\"\n").contains("route[0].gateway"));
        assert!(e("[[route]]\ndestination = \"10.0.0.0/8\"\n").contains("route[0]: set a gateway"));
        assert!(
            e("[[route]]\ndestination = \"10.0.0.0/8\"\ngateway = \"10.1.1.1\"\ntrack = 2\n")
                .contains("route[0].track: there is no track 2")
        );
        assert!(e("[[route]]\ndestination = \"10.0.0.0/8\"\ndevice = \"a/b\"\n").contains("route[0].device"));
        assert!(
            e("[[route]]\ndestination = \"10.0.0.0/8\"\ndevice = \"eth0\"\ntable = 255\n").contains("route[0].table")
        );
        let same = "[[route]]\ndestination = \"0.0.0.0/0\"\ngateway = \"203.0.113.1\"\ntrack = 1\n\
                    [[route]]\ndestination = \"0.0.0.0/0\"\ngateway = \"198.51.100.1\"\n";
        assert!(e(same).contains("route[1].metric: route[0] has the same destination"));
        assert!(protocol(Some(4)).unwrap_err().to_string().contains("agent.route_protocol"));
        assert_eq!(protocol(None).unwrap(), 167);
    }
}
