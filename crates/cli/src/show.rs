//! `ipsla show ...`: what a running agent knows, read from its HTTP API and printed the way IOS
//! prints `show ip sla summary`, `show ip sla statistics [aggregated]`, `show ip sla
//! configuration`, `show track` and `show ip sla responder` (`--json`: the API's JSON,
//! pretty-printed).

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use ipsla_agent::api::{
    AccUs, HourAggregate, JitterAggregate, OpSummary, OperationConfiguration, Report, StatusReport, TrackSummary,
};
use ipsla_agent::report;
use ipsla_core::ops::ReturnCode;
use serde::de::DeserializeOwned;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(subcommand)]
    what: ShowCommand,
    /// The agent's HTTP address (`agent.http`).
    #[arg(long, global = true, value_name = "URL", default_value = "http://127.0.0.1:9167")]
    agent: String,
    /// Print the API's JSON instead of IOS-style text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ShowCommand {
    /// One line per operation: state, type, destination, latest RTT, return code and when it
    /// last ran (IOS `show ip sla summary`).
    Summary,
    /// Latest statistics of one operation or all (IOS `show ip sla statistics [N] [aggregated]`).
    #[command(after_help = "Example:\n  ipsla show statistics 10 --aggregated")]
    Statistics {
        /// Operation number (default: all).
        id: Option<u32>,
        /// Hourly aggregates and distribution buckets instead of the latest run.
        #[arg(long)]
        aggregated: bool,
    },
    /// The configuration of one operation or all, defaults included (IOS `show ip sla
    /// configuration [N]`).
    Configuration {
        /// Operation number (default: all).
        id: Option<u32>,
    },
    /// Tracks and their states (IOS `show track [N]`).
    #[command(after_help = "Example:\n  ipsla show track 1 --json")]
    Track {
        /// Track number (default: all).
        id: Option<u32>,
    },
    /// The agent's responder (IOS `show ip sla responder`).
    #[command(after_help = "Example:\n  ipsla show responder --agent http://192.0.2.5:9167")]
    Responder,
}

/// A tiny HTTP/1.1 GET client for the agent's API (hyper, already in the tree through axum).
#[derive(Debug)]
struct Api {
    host: String,
    url: String,
    rt: tokio::runtime::Runtime,
}

impl Api {
    fn new(agent: &str) -> Result<Api> {
        let host = agent.strip_prefix("http://").unwrap_or(agent).trim_end_matches('/');
        if host.is_empty() || host.contains('/') || host.contains("://") {
            bail!(
                "--agent: \"{agent}\" is not an agent address; expected http://HOST:PORT (e.g. http://127.0.0.1:9167)"
            );
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Api { host: host.to_string(), url: format!("http://{host}"), rt })
    }

    /// GET `path`: (status, body).
    fn get(&self, path: &str) -> Result<(u16, Bytes)> {
        let fetch = async {
            let stream = tokio::net::TcpStream::connect(&self.host).await?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = hyper::Request::get(path).header(hyper::header::HOST, &self.host).body(Empty::<Bytes>::new())?;
            let res = send.send_request(req).await?;
            let status = res.status().as_u16();
            let body = res.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), fetch).await })
            .map_err(|_| anyhow!("no answer within 10 s"))
            .and_then(|r| r)
            .with_context(|| format!("cannot reach the agent at {} (is `ipsla agent` running? see --agent)", self.url))
    }

    /// GET `path` as JSON; `None` on 404.
    fn json<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let (status, body) = self.get(path)?;
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .with_context(|| format!("reading {}{path}: not the JSON this version expects", self.url)),
            404 => Ok(None),
            s => bail!("{}{path}: HTTP {s}: {}", self.url, String::from_utf8_lossy(&body).trim()),
        }
    }
}

fn pretty(v: &impl serde::Serialize) -> Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

pub fn main(args: ShowArgs) -> Result<()> {
    let api = Api::new(&args.agent)?;
    let out = match args.what {
        ShowCommand::Summary => summary(&api, args.json)?,
        ShowCommand::Statistics { id, aggregated } => statistics(&api, id, aggregated, args.json)?,
        ShowCommand::Configuration { id } => configuration(&api, id, args.json)?,
        ShowCommand::Track { id } => track(&api, id, args.json)?,
        ShowCommand::Responder => {
            let r: serde_json::Value = api
                .json("/api/v1/responder")?
                .ok_or_else(|| anyhow!("the agent at {} runs no responder ([responder] is not configured)", api.url))?;
            if args.json {
                pretty(&r)?
            } else {
                let s: StatusReport = serde_json::from_value(r).context("reading the responder status")?;
                crate::responder::format_status(&s)
            }
        }
    };
    crate::out::print(out)?;
    Ok(())
}

/// The operations asked for: one (an error if the agent has no such operation) or all.
fn operations(api: &Api, id: Option<u32>) -> Result<Vec<OpSummary>> {
    let all: Vec<OpSummary> = api.json("/api/v1/operations")?.unwrap_or_default();
    match id {
        None => Ok(all),
        Some(n) => match all.into_iter().find(|o| o.id == n) {
            Some(o) => Ok(vec![o]),
            None => bail!("operation {n} is not configured on the agent at {}", api.url),
        },
    }
}

/// IOS `show ip sla summary`: the latest run of every operation, one line each.
fn summary(api: &Api, json: bool) -> Result<String> {
    let ops = operations(api, None)?;
    let mut rows = Vec::new();
    for o in ops {
        let latest: Option<serde_json::Value> = api.json(&format!("/api/v1/operations/{}/latest", o.id))?;
        rows.push((o, latest));
    }
    if json {
        let v: Vec<serde_json::Value> =
            rows.iter().map(|(o, l)| serde_json::json!({"operation": o, "latest": l})).collect();
        return pretty(&v);
    }
    Ok(summary_text(&rows, std::time::SystemTime::now()))
}

/// The summary table at `now`.
fn summary_text(rows: &[(OpSummary, Option<serde_json::Value>)], now: std::time::SystemTime) -> String {
    let mut t = String::from(
        "IPSLAs Latest Operation Summary\nCodes: * active, ^ inactive, ~ pending\n\
         All Stats are in milliseconds. Stats with u are in microseconds\n\n\
         ID           Type        Destination       Stats       Return      Last\n\
         \x20                                                      Code        Run\n\
         -----------------------------------------------------------------------\n",
    );
    for (o, latest) in rows {
        let code = match o.state {
            ipsla_core::schedule::OperState::Active => '*',
            ipsla_core::schedule::OperState::Pending => '~',
            _ => '^',
        };
        let destination =
            o.target.parse::<std::net::SocketAddr>().map_or_else(|_| o.target.clone(), |a| a.ip().to_string());
        let (stats, ret, last) = match latest {
            None => ("-".to_string(), "Unknown".to_string(), "-".to_string()),
            Some(l) => {
                // a run without an RTT sample (a failure) has no statistic: "-", as IOS prints it
                let avg = l["rtt_us"]["avg"].as_f64().filter(|_| l["rtt_us"]["count"].as_u64().unwrap_or(0) > 0);
                let stats = match (avg, l["precision"].as_str()) {
                    (Some(us), Some("us")) => format!("RTT={}u", us.round() as u64),
                    (Some(us), _) => format!("RTT={}", (us / 1000.0).round() as u64),
                    (None, _) => "-".into(),
                };
                let ret = serde_json::from_value::<ReturnCode>(l["return_code"].clone())
                    .map_or_else(|_| "Unknown".to_string(), |c| c.cisco_text().to_string());
                let last = l["start"]
                    .as_str()
                    .and_then(|s| humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok())
                    .and_then(|t| now.duration_since(t).ok())
                    .map_or_else(
                        || "-".to_string(),
                        |d| match d.as_secs() {
                            1 => "1 second ago".to_string(),
                            n => format!("{n} seconds ago"),
                        },
                    );
                (stats, ret, last)
            }
        };
        let cell = |s: &str, w: usize| format!("{s:<w$} ", w = w - 1);
        t += &cell(&format!("{code}{}", o.id), 13);
        t += &cell(&o.r#type, 12);
        t += &cell(&destination, 18);
        t += &cell(&stats, 12);
        t += &cell(&ret, 12);
        t += &last;
        t.push('\n');
    }
    t
}

/// IOS `show ip sla configuration [N]`.
fn configuration(api: &Api, id: Option<u32>, json: bool) -> Result<String> {
    let mut all = Vec::new();
    for o in operations(api, id)? {
        let c: OperationConfiguration = api
            .json(&format!("/api/v1/operations/{}/configuration", o.id))?
            .ok_or_else(|| anyhow!("operation {} was removed from the agent at {} meanwhile", o.id, api.url))?;
        all.push(c);
    }
    if json {
        return match (id, all.as_slice()) {
            (Some(_), [one]) => pretty(one),
            _ => pretty(&all),
        };
    }
    let mut t = String::from("IP SLAs Infrastructure Engine-III\n");
    for c in &all {
        t += &ipsla_agent::ops::configuration::text(c);
        t.push('\n');
    }
    Ok(t)
}

fn time_to_live(o: &OpSummary) -> String {
    match o.time_to_live_s {
        None => "Forever".into(),
        Some(s) => format!("{} sec", s.floor() as u64),
    }
}

fn statistics(api: &Api, id: Option<u32>, aggregated: bool, json: bool) -> Result<String> {
    let ops = operations(api, id)?;
    if aggregated {
        let mut rows: Vec<(OpSummary, Option<Report>, Vec<HourAggregate>)> = Vec::new();
        for o in ops {
            let hours: Vec<HourAggregate> =
                api.json(&format!("/api/v1/operations/{}/aggregated", o.id))?.unwrap_or_default();
            let latest = if json { None } else { api.json(&format!("/api/v1/operations/{}/latest", o.id))? };
            rows.push((o, latest, hours));
        }
        if json {
            return pretty(&rows.iter().flat_map(|r| r.2.iter()).collect::<Vec<_>>());
        }
        let mut t = String::from("IPSLAs aggregated statistics\n\n");
        for (o, latest, hours) in &rows {
            t += &aggregated_text(o, latest.as_ref(), hours);
            t.push('\n');
        }
        return Ok(t);
    }
    let mut docs = Vec::new();
    for o in ops {
        let doc: Option<serde_json::Value> = api.json(&format!("/api/v1/operations/{}/latest", o.id))?;
        docs.push((o, doc));
    }
    if json {
        return match (id, docs.as_slice()) {
            (Some(n), [(_, None)]) => bail!("operation {n} has not run yet"),
            (Some(_), [(_, Some(d))]) => pretty(d),
            _ => pretty(&docs.iter().filter_map(|d| d.1.as_ref()).collect::<Vec<_>>()),
        };
    }
    let mut t = String::from("IPSLAs Latest Operation Statistics\n\n");
    for (o, doc) in docs {
        match doc {
            Some(d) => {
                let r: Report = serde_json::from_value(d).context("reading the latest run")?;
                t += &report::text_with_life(&r, o.successes, o.failures, Some(&time_to_live(&o)));
            }
            None => {
                let _ = write!(
                    t,
                    "IPSLA operation id: {}\nType of operation: {}\n        Latest RTT: none (no run yet)\n\
                     Latest operation start time: Unknown\nLatest operation return code: Unknown\n\
                     Number of successes: {}\nNumber of failures: {}\nOperation time to live: {}\n",
                    o.id,
                    o.r#type,
                    o.successes,
                    o.failures,
                    time_to_live(&o)
                );
            }
        }
        t.push('\n');
    }
    Ok(t)
}

/// Delays in whole milliseconds (IOS: the average is an integer division) or µs with 3 decimals.
struct Unit {
    us: bool,
}

impl Unit {
    fn name(&self) -> &'static str {
        if self.us { "microseconds" } else { "milliseconds" }
    }
    fn v(&self, us: f64) -> String {
        if self.us { format!("{us:.3}") } else { format!("{}", (us / 1000.0).floor() as i64) }
    }
    /// A sum of squares (µs²).
    fn v2(&self, us2: f64) -> String {
        if self.us { format!("{us2:.3}") } else { format!("{}", (us2 / 1e6).floor() as i64) }
    }
    /// `min/avg/max unit`, or words when the hour had no sample (never 0/0/0, a perfect delay).
    fn mam(&self, a: &AccUs) -> String {
        match (a.min, a.avg, a.max) {
            (Some(mn), Some(avg), Some(mx)) => format!("{}/{}/{} {}", self.v(mn), self.v(avg), self.v(mx), self.name()),
            _ => "none (no samples)".into(),
        }
    }
}

/// Both signs of one direction's jitter as one accumulator of |jitter|.
fn both(pos: &AccUs, neg: &AccUs) -> AccUs {
    let count = pos.count + neg.count;
    let pick = |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64| match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    };
    AccUs {
        count,
        min: pick(pos.min, neg.min, f64::min),
        avg: (count > 0).then(|| (pos.sum + neg.sum) / count as f64),
        max: pick(pos.max, neg.max, f64::max),
        sum: pos.sum + neg.sum,
        sum2: pos.sum2 + neg.sum2,
    }
}

fn code_text(name: &str) -> String {
    serde_json::from_value::<ReturnCode>(serde_json::Value::String(name.into()))
        .map(|c| c.cisco_text().to_string())
        .unwrap_or_else(|_| name.to_string())
}

/// One operation's hours, laid out like IOS `show ip sla statistics aggregated details`.
fn aggregated_text(o: &OpSummary, latest: Option<&Report>, hours: &[HourAggregate]) -> String {
    let u = Unit { us: latest.is_some_and(|r| r.precision == ipsla_core::ops::Precision::Us) };
    let mut t = String::new();
    let w = &mut t;
    let _ = writeln!(w, "Round Trip Time (RTT) for Index {}", o.id);
    let _ = writeln!(w, "Type of operation: {}", o.r#type);
    if hours.is_empty() {
        let _ = writeln!(w, "        No statistics kept yet (history_hours = 0, or no run in the kept hours)");
    }
    for h in hours {
        let _ = writeln!(w, "Start Time Index: {}", report::ios_time(&h.hour_start));
        let _ = writeln!(w, "Number of successes: {}", h.ok);
        let _ = writeln!(w, "Number of failures: {}", h.failures);
        let failed: Vec<String> =
            h.return_codes.iter().filter(|(c, _)| *c != "ok").map(|(c, n)| format!("{} {n}", code_text(c))).collect();
        if !failed.is_empty() {
            let _ = writeln!(w, "        Failures by return code: {}", failed.join(", "));
        }
        let rtt = h.jitter.as_ref().map_or(&h.completion_us, |j| &j.rtt_us);
        let _ = writeln!(w, "RTT Values:");
        let _ = writeln!(w, "        Number Of RTT: {}\t\tRTT Min/Avg/Max: {}", rtt.count, u.mam(rtt));
        if let Some(j) = &h.jitter {
            jitter_text(w, &u, j);
        }
        let _ = writeln!(w, "Distribution Statistics:");
        let c = &h.completion_us;
        let _ = writeln!(w, "        Number of Completions/Sum of Latency: {}/{} {}", c.count, u.v(c.sum), u.name());
        let _ = writeln!(w, "        Sum of Latency squared: {} {} squared", u.v2(c.sum2), u.name());
        for b in &h.distribution {
            let range = match b.upper_ms {
                Some(up) => format!("{}-{} ms", b.lower_ms, up.saturating_sub(1)),
                None => format!("{}-Inf ms", b.lower_ms),
            };
            let _ = writeln!(w, "        Bucket Range: {range}");
            let _ = writeln!(w, "        Number of Completions: {}", b.count);
            let _ = writeln!(
                w,
                "        Percent of Total Completions for this Range: {} %",
                (b.count * 100).checked_div(c.count).unwrap_or(0)
            );
        }
    }
    t
}

fn jitter_text(w: &mut String, u: &Unit, j: &JitterAggregate) {
    let _ = writeln!(w, "Latency one-way time:");
    let _ = writeln!(w, "        Number of Latency one-way Samples: {}", j.one_way_sd_us.count);
    let _ = writeln!(w, "        Source to Destination Latency one way Min/Avg/Max: {}", u.mam(&j.one_way_sd_us),);
    let _ = writeln!(w, "        Destination to Source Latency one way Min/Avg/Max: {}", u.mam(&j.one_way_ds_us),);
    let (sd, ds) = (both(&j.jitter_sd_pos_us, &j.jitter_sd_neg_us), both(&j.jitter_ds_pos_us, &j.jitter_ds_neg_us));
    let _ = writeln!(w, "Jitter Time:");
    let _ = writeln!(w, "        Number of SD Jitter Samples: {}", sd.count);
    let _ = writeln!(w, "        Number of DS Jitter Samples: {}", ds.count);
    let _ = writeln!(w, "        Source to Destination Jitter Min/Avg/Max: {}", u.mam(&sd));
    let _ = writeln!(w, "        Destination to Source Jitter Min/Avg/Max: {}", u.mam(&ds));
    let _ = writeln!(w, "Over Threshold:");
    let pct = (j.over_threshold * 100).checked_div(j.rtt_us.count).map_or("no samples".into(), |p| format!("{p}%"));
    let _ = writeln!(w, "        Number Of RTT Over Threshold: {} ({pct})", j.over_threshold);
    let _ = writeln!(w, "Packet Loss Values:");
    let _ = writeln!(w, "        Loss Source to Destination: {}", j.loss_sd);
    let _ = writeln!(w, "        Loss Destination to Source: {}", j.loss_ds);
    let _ = writeln!(w, "        Loss unknown direction (MIA): {}", j.loss_mia);
    let _ = writeln!(w, "        Out Of Sequence: {}\tPacket Late Arrival: {}", j.out_of_sequence, j.late);
    let _ = writeln!(w, "        Packets sent: {}\tReceived: {}", j.sent, j.received);
    let _ = writeln!(w, "Voice Score Values:");
    let none = "none (needs a codec and a reply)";
    match (j.icpif_min.zip(j.icpif_max), j.mos_min.zip(j.mos_max)) {
        (Some((imin, imax)), Some((mmin, mmax))) => {
            let _ = writeln!(w, "        Calculated Planning Impairment Factor (ICPIF) Min/Max: {imin}/{imax}");
            let _ = writeln!(w, "        Mean Opinion Score (MOS) Min/Max: {mmin:.2}/{mmax:.2}");
        }
        _ => {
            let _ = writeln!(w, "        Calculated Planning Impairment Factor (ICPIF) Min/Max: {none}");
            let _ = writeln!(w, "        Mean Opinion Score (MOS) Min/Max: {none}");
        }
    }
}

/// `00:01:02` under a day, `1d02h` beyond (as IOS prints elapsed times).
fn elapsed(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s < 86_400 {
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}d{:02}h", s / 86_400, s / 3600 % 24)
    }
}

fn track(api: &Api, id: Option<u32>, json: bool) -> Result<String> {
    let raw: Vec<serde_json::Value> = api.json("/api/v1/tracks")?.unwrap_or_default();
    if let Some(n) = id
        && !raw.iter().any(|t| t["id"] == n)
    {
        bail!("track {n} is not configured on the agent at {}", api.url);
    }
    if json {
        return match id {
            Some(n) => pretty(&raw.iter().find(|t| t["id"] == n)),
            None => pretty(&raw),
        };
    }
    let all: Vec<TrackSummary> =
        serde_json::from_value(serde_json::Value::Array(raw)).context("reading /api/v1/tracks")?;
    let shown = all.iter().filter(|t| id.is_none_or(|n| t.id == n));
    Ok(shown.map(|t| track_text(t, &all)).collect::<Vec<_>>().join("\n"))
}

fn track_text(t: &TrackSummary, all: &[TrackSummary]) -> String {
    let mut o = String::new();
    let w = &mut o;
    let state = if t.up { "Up" } else { "Down" };
    let _ = writeln!(w, "Track {}", t.id);
    // "ip sla 1 reachability" -> "IP SLA 1 reachability"; "list boolean and" -> "List boolean and"
    let what = match t.tracks.strip_prefix("ip sla ") {
        Some(rest) => format!("IP SLA {rest}"),
        None => t.tracks.replacen("list", "List", 1),
    };
    let _ = writeln!(w, "  {what}");
    let label = if t.tracks.ends_with("reachability") {
        "Reachability".to_string()
    } else if t.tracks.ends_with("state") {
        "State".to_string()
    } else if let Some(k) = t.tracks.strip_prefix("list boolean ") {
        format!("Boolean {}", k.to_uppercase())
    } else {
        "Threshold weight".to_string()
    };
    let _ = writeln!(w, "  {label} is {state}");
    let _ = writeln!(
        w,
        "    {} change{}, last change {}",
        t.changes,
        if t.changes == 1 { "" } else { "s" },
        t.last_change_s_ago.map_or("never".to_string(), elapsed)
    );
    for m in &t.members {
        let up = all.iter().find(|x| x.id == *m).is_some_and(|x| x.up);
        let _ = writeln!(w, "    object {m} {}", if up { "Up" } else { "Down" });
    }
    if t.delay_up_s > 0.0 || t.delay_down_s > 0.0 {
        let _ = writeln!(w, "  Delay up {} secs, down {} secs", t.delay_up_s, t.delay_down_s);
    }
    if t.operation.is_some() {
        let code = t.latest_return_code.map_or("Unknown", ReturnCode::cisco_text);
        let _ = writeln!(w, "  Latest operation return code: {code}");
        if let Some(ms) = t.latest_rtt_ms {
            let _ = writeln!(w, "  Latest RTT (millisecs) {}", ms.floor() as u64);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track_json(extra: &str) -> TrackSummary {
        serde_json::from_str(&format!(
            r#"{{"id":1,"up":true,"changes":3,"tracks":"ip sla 1 state","operation":1,"members":[],
                "delay_up_s":0.0,"delay_down_s":5.0,"last_change":"x","last_change_s_ago":62.4,
                "latest_return_code":"ok","latest_rtt_ms":4.7{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn show_track_like_ios() {
        let t = track_json("");
        assert_eq!(
            track_text(&t, std::slice::from_ref(&t)),
            "Track 1\n  IP SLA 1 state\n  State is Up\n    3 changes, last change 00:01:02\n  Delay up 0 secs, down 5 secs\n  Latest operation return code: OK\n  Latest RTT (millisecs) 4\n"
        );
        let list: TrackSummary = serde_json::from_str(
            r#"{"id":5,"up":false,"changes":1,"tracks":"list boolean and","operation":null,"members":[1,2],
                "delay_up_s":0.0,"delay_down_s":0.0,"last_change":null,"last_change_s_ago":90061.0,
                "latest_return_code":null,"latest_rtt_ms":null}"#,
        )
        .unwrap();
        assert_eq!(
            track_text(&list, &[t, list.clone()]),
            "Track 5\n  List boolean and\n  Boolean AND is Down\n    1 change, last change 1d01h\n    object 1 Up\n    object 2 Down\n"
        );
    }

    #[test]
    fn aggregated_like_ios() {
        let hour: HourAggregate = serde_json::from_str(
            r#"{"op":2,"hour_start":"2027-01-15T08:00:00Z","hour_start_s":1,"runs":5,"ok":3,"failures":2,
                "return_codes":{"ok":3,"over_threshold":1,"timeout":1},
                "completion_us":{"count":4,"min":5000.0,"avg":73750.0,"max":250000.0,"sum":295000.0,"sum2":6.3375e10},
                "distribution_interval_ms":10,
                "distribution":[{"lower_ms":0,"upper_ms":10,"count":1},{"lower_ms":10,"upper_ms":20,"count":1},
                                {"lower_ms":20,"upper_ms":null,"count":2}],"jitter":null}"#,
        )
        .unwrap();
        let o = OpSummary {
            id: 2,
            r#type: "udp-echo".into(),
            target: "127.0.0.1:7".into(),
            tag: String::new(),
            state: ipsla_core::schedule::OperState::Active,
            runs: 11,
            busies: 0,
            stored: 11,
            frequency_s: 60.0,
            successes: 9,
            failures: 2,
            life_s: None,
            time_to_live_s: None,
            active_reactions: Vec::new(),
            mesh: None,
        };
        let t = aggregated_text(&o, None, &[hour]);
        assert!(
            t.starts_with(
                "Round Trip Time (RTT) for Index 2\nType of operation: udp-echo\nStart Time Index: 08:00:00 UTC Fri Jan 15 2027\n\
                 Number of successes: 3\nNumber of failures: 2\n        Failures by return code: Over threshold 1, Timeout 1\n\
                 RTT Values:\n        Number Of RTT: 4\t\tRTT Min/Avg/Max: 5/73/250 milliseconds\n"
            ),
            "{t}"
        );
        assert!(t.contains("Distribution Statistics:\n        Number of Completions/Sum of Latency: 4/295 milliseconds\n        Sum of Latency squared: 63375 milliseconds squared\n"), "{t}");
        assert!(t.contains("        Bucket Range: 10-19 ms\n        Number of Completions: 1\n        Percent of Total Completions for this Range: 25 %\n"), "{t}");
        assert!(t.contains("        Bucket Range: 20-Inf ms\n        Number of Completions: 2\n        Percent of Total Completions for this Range: 50 %\n"), "{t}");
    }

    #[test]
    fn summary_like_ios_with_failures_as_dashes() {
        let op = |id: u32, kind: &str, target: &str, state: &str| -> OpSummary {
            serde_json::from_value(serde_json::json!({
                "id": id, "type": kind, "target": target, "tag": "", "state": state, "runs": 1, "busies": 0,
                "stored": 1, "frequency_s": 60.0, "life_s": null, "time_to_live_s": null
            }))
            .unwrap()
        };
        let start = "2027-01-15T08:00:00.000000Z";
        let now = humantime::parse_rfc3339("2027-01-15T08:00:42Z").unwrap();
        let run = |code: &str, count: u64, avg: Option<f64>, precision: &str| {
            serde_json::json!({"return_code": code, "precision": precision, "start": start,
                               "rtt_us": {"count": count, "avg": avg}})
        };
        let rows = vec![
            (op(1, "udp-jitter", "10.0.0.2:5000", "active"), Some(run("ok", 10, Some(1480.0), "ms"))),
            (op(2, "udp-jitter", "[2001:db8::2]:5000", "active"), Some(run("ok", 10, Some(900.4), "us"))),
            // a failed run has no RTT: a dash, never 0
            (op(3, "icmp-echo", "10.0.0.3", "active"), Some(run("timeout", 0, None, "us"))),
            (op(4, "udp-echo", "10.0.0.4:7", "pending"), None),
        ];
        let t = summary_text(&rows, now);
        let body: Vec<&str> = t.lines().skip(7).collect();
        assert_eq!(
            body,
            [
                "*1           udp-jitter  10.0.0.2          RTT=1       OK          42 seconds ago",
                "*2           udp-jitter  2001:db8::2       RTT=900u    OK          42 seconds ago",
                "*3           icmp-echo   10.0.0.3          -           Timeout     42 seconds ago",
                "~4           udp-echo    10.0.0.4          -           Unknown     -",
            ]
        );
    }

    #[test]
    fn agent_address() {
        assert_eq!(Api::new("http://127.0.0.1:9167/").unwrap().host, "127.0.0.1:9167");
        assert_eq!(Api::new("localhost:80").unwrap().host, "localhost:80");
        assert!(Api::new("https://x/api").unwrap_err().to_string().contains("--agent"));
    }
}
