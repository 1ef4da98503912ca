//! The agent's pages, rendered on the server with maud: no external asset, no CDN, no account.
//! Each page polls its own `?part=main` every few seconds and swaps the main element in place
//! (`web/app.js`), so it updates without a reload.

use super::plot::Range;
use crate::api::{OpSummary, OperationConfiguration, RouteStatus, StoredEvent, StoredRun, TrackSummary};
use maud::{DOCTYPE, Markup, PreEscaped, html};

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("app.js");

/// A whole page around `main`.
pub fn page(title: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { a href="/" { "ipsla" } " " span.host { (title) } }
                main #main { (main) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// What the latest run says, in words and a class for its colour.
pub struct Latest {
    /// `ok`, `over` or `failed`.
    pub class: &'static str,
    /// The return code as IOS prints it.
    pub code: String,
    /// The latest average RTT, or why there is none.
    pub rtt: String,
    /// Loss percentage, or a dash.
    pub loss: String,
    /// MOS, or a dash.
    pub mos: String,
    /// Whether the run lost probes.
    pub lossy: bool,
}

impl Latest {
    /// From a stored run (`None`: not run yet).
    pub fn of(run: Option<&StoredRun>) -> Latest {
        let Some(r) = run else {
            return Latest {
                class: "none",
                code: "not run yet".into(),
                rtt: "—".into(),
                loss: "—".into(),
                mos: "—".into(),
                lossy: false,
            };
        };
        let d = &r.report;
        let code = serde_json::from_value::<ipsla_core::ops::ReturnCode>(d["return_code"].clone())
            .map_or_else(|_| r.return_code.clone(), |c| c.cisco_text().to_string());
        let class = match r.return_code.as_str() {
            "ok" => "ok",
            "over_threshold" => "over",
            _ => "failed",
        };
        let measured = d["rtt_us"]["count"].as_u64().unwrap_or(0) > 0;
        // in the run's precision: a ms-precision run knows whole milliseconds only
        let rtt = match (d["rtt_us"]["avg"].as_f64().filter(|_| measured), d["precision"].as_str()) {
            // below its resolution, not a 0 ms path
            (Some(us), Some("ms")) if us < 1000.0 => "< 1 ms".to_string(),
            (Some(us), Some("ms")) => format!("{:.0} ms", us / 1000.0),
            (Some(us), _) => format!("{:.3} ms", us / 1000.0),
            (None, _) => format!("none ({})", code.to_lowercase()),
        };
        let (sent, received) = (d["sent"].as_u64().unwrap_or(0), d["received"].as_u64().unwrap_or(0));
        let loss = if sent > 0 {
            format!("{:.1} %", 100.0 * sent.saturating_sub(received) as f64 / sent as f64)
        } else {
            "—".into()
        };
        let mos = d["voice"]["mos"].as_f64().map_or("—".into(), |m| format!("{m:.2}"));
        let lossy = sent > received;
        Latest { class, code, rtt, loss, mos, lossy }
    }

    /// A grid cell's colour: as the return code, but an OK run that lost probes is amber.
    pub fn grid_class(&self) -> &'static str {
        if self.class == "ok" && self.lossy { "over" } else { self.class }
    }
}

/// A mesh's grids as this agent sees them.
pub struct MeshGrid {
    /// The mesh.
    pub mesh: std::sync::Arc<crate::mesh::Mesh>,
    /// Each site's row (by name): the same for every test.
    pub rows: std::collections::BTreeMap<String, GridRow>,
}

/// What the grid knows of one source site's row.
pub enum GridRow {
    /// Its cells (this agent's from its store, another's from that agent); `base` is what the
    /// cells' links to `/operations/{id}` start with (empty: this agent).
    Cells {
        /// Per test and destination.
        cells: Vec<crate::mesh::peers::Cell>,
        /// The agent's URL, or empty for this one.
        base: String,
    },
    /// The site's agent did not give its row: why.
    Unknown(String),
    /// The mesh file has no HTTP address for the site's agent.
    NoAgent,
}

/// One grid per test, MaDDash's way: a row per source, a column per destination. A cell is
/// coloured by the latest run (green OK, amber over its threshold or with loss, red failed, grey
/// not run yet) and links to the operation's page, on the agent that ran it. A row whose agent
/// did not answer is a row of unknowns with the reason, never numbers.
pub fn mesh(g: &MeshGrid) -> Markup {
    let unknown: Vec<(&str, &str)> = g
        .mesh
        .sites
        .iter()
        .filter_map(|s| match g.rows.get(&s.name) {
            Some(GridRow::Unknown(why)) => Some((s.name.as_str(), why.as_str())),
            _ => None,
        })
        .collect();
    html! {
        @for test in &g.mesh.tests {
            section.mesh {
                h3 { "Test " (test) }
                div.scroll { table.grid {
                    thead { tr { th { "source ↓ destination →" } @for d in &g.mesh.sites { th { (d.name) } } } }
                    tbody { @for s in &g.mesh.sites {
                        tr { th { (s.name) }
                            @for d in &g.mesh.sites {
                                @if d.name == s.name {
                                    td.self { "" }
                                } @else {
                                    (cell(g.rows.get(&s.name), test, &s.name, &d.name))
                                }
                            }
                        }
                    } }
                } }
            }
        }
        @if !unknown.is_empty() {
            ul.unknown { @for (site, why) in &unknown { li { (site) ": unknown: " (why) } } }
        }
    }
}

/// The cell of test `test` from `src` to `dst`.
fn cell(row: Option<&GridRow>, test: &str, src: &str, dst: &str) -> Markup {
    match row {
        Some(GridRow::Cells { cells, base }) => match cells.iter().find(|c| c.test == test && c.dst == dst) {
            Some(c) => {
                let l = Latest::of(c.latest.as_ref());
                html! {
                    td.(l.grid_class()) title={ (src) " → " (dst) ": " (l.code) } {
                        a href={ (base) "/operations/" (c.op) } { (l.rtt) br; small { "loss " (l.loss) " · MOS " (l.mos) } }
                    }
                }
            }
            None => html! {
                td.unknown title={ "unknown: the agent of " (src) " runs no test " (test) " to " (dst) " (another version of the mesh file?)" } { "unknown" }
            },
        },
        Some(GridRow::Unknown(why)) => html! { td.unknown title={ "unknown: " (why) } { "unknown" } },
        Some(GridRow::NoAgent) | None => html! {
            td.unknown title={ "measured by the agent of " (src) "; give the site an http address in the mesh file to show it here" } { "—" }
        },
    }
}

/// Everything the overview shows.
pub struct Overview {
    /// The mesh's grids, when the agent is a site of one.
    pub grid: Option<MeshGrid>,
    /// Operations with their latest run.
    pub ops: Vec<(OpSummary, Latest)>,
    /// Tracks.
    pub tracks: Vec<TrackSummary>,
    /// Routes, when the agent manages some.
    pub routes: Option<RouteStatus>,
    /// The responder's status as JSON, when the agent runs one.
    pub responder: Option<serde_json::Value>,
    /// Recent events, newest first.
    pub events: Vec<StoredEvent>,
}

/// `/`'s main element.
pub fn overview(o: &Overview) -> Markup {
    html! {
        @if let Some(g) = &o.grid {
            section {
                h2 { "Mesh " (g.mesh.file) ", from " (g.mesh.site) }
                (mesh(g))
            }
        }
        section {
            h2 { "Operations" }
            @if o.ops.is_empty() {
                p.empty { "No operation is configured: add [[operation]] tables to the agent's file (docs/operation-keys.md)." }
            } @else {
                div.scroll { table {
                    thead { tr { th { "id" } th { "last return code" } th { "RTT" } th { "loss" } th { "MOS" }
                                 th { "type" } th { "target" } th { "tag" } th { "state" } th { "reactions" } th { "last 6 h" } } }
                    tbody { @for (op, l) in &o.ops {
                        tr.(l.class) {
                            td { a href={ "/operations/" (op.id) } { (op.id) } }
                            td.code { (l.code) } td { (l.rtt) } td { (l.loss) } td { (l.mos) }
                            td { (op.r#type) } td { (op.target) } td { (op.tag) }
                            td { (format!("{:?}", op.state).to_lowercase()) }
                            td.reactions { @if op.active_reactions.is_empty() { "—" } @else { (op.active_reactions.join(", ")) } }
                            td { a href={ "/operations/" (op.id) } {
                                img.spark alt={ "RTT of operation " (op.id) " over 6 hours" }
                                    src={ "/operations/" (op.id) "/plot.svg?range=6h&size=spark" };
                            } }
                        }
                    } }
                } }
            }
        }
        @if !o.tracks.is_empty() {
            section {
                h2 { "Tracks" }
                div.scroll { table {
                    thead { tr { th { "track" } th { "follows" } th { "state" } th { "changes" } th { "last change" } } }
                    tbody { @for t in &o.tracks {
                        tr.(if t.up { "ok" } else { "failed" }) {
                            td { (t.id) } td { (t.tracks) } td.code { (if t.up { "Up" } else { "Down" }) }
                            td { (t.changes) } td { (t.last_change.clone().unwrap_or_else(|| "never".into())) }
                        }
                    } }
                } }
            }
        }
        @if let Some(r) = &o.routes {
            section {
                h2 { "Routes" }
                ul { @for s in &r.routes {
                    li { (s.route) " — " (if s.wanted { "wanted" } else { "withdrawn" })
                         @if let Some(t) = s.track { " (track " (t) ")" } }
                } }
                p { (r.installed.len()) " installed with protocol " (r.protocol) }
            }
        }
        @if let Some(r) = &o.responder {
            section {
                h2 { "Responder" }
                p { (r["sessions"].as_array().map_or(0, Vec::len)) " sessions, up " (r["uptime_s"]) " s" }
                div.scroll { table.counters { tbody {
                    @if let Some(stats) = r["stats"].as_object() { @for (k, v) in stats { @if v.is_number() {
                        tr { td { (k) } td { (v) } }
                    } } }
                } } }
            }
        }
        section {
            h2 { "Recent events" }
            @if o.events.is_empty() { p.empty { "None yet." } }
            ul.events { @for e in &o.events {
                li { span.time { (e.time) } " " (e.text) }
            } }
        }
    }
}

/// What a stored run says beyond the table's columns: why it failed, and its kind's own lines
/// (a dns answer, http phases, a path's hops), as `ipsla show statistics` prints them.
fn latest_text(r: &StoredRun) -> String {
    let mut t = String::new();
    if let Some(why) = r.report["reason"].as_str() {
        t.push_str(&format!("Failure reason: {why}\n"));
    }
    if let (Some(kind), Some(detail)) =
        (r.report["operation"].as_str().and_then(crate::ops::find), r.report.as_object())
    {
        kind.text(detail, &mut t);
    }
    t
}

/// An operation's page: the plot with its ranges, the last runs and the configuration.
pub fn operation(
    op: &OpSummary,
    range: Range,
    series: &[(String, String)],
    runs: &[StoredRun],
    config: Option<&OperationConfiguration>,
) -> Markup {
    html! {
        h2 { "Operation " (op.id) ": " (op.r#type) " to " (op.target) @if !op.tag.is_empty() { " — " (op.tag) } }
        nav.ranges { @for r in Range::ALL {
            @if r == range { strong { (r.name()) } } @else { a href={ "?range=" (r.name()) } { (r.name()) } }
        } }
        figure {
            img.plot alt={ "RTT of operation " (op.id) " over " (range.name()) }
                src={ "/operations/" (op.id) "/plot.svg?range=" (range.name()) };
            figcaption { "As an image: " code { "/operations/" (op.id) "/plot.svg?range=" (range.name()) } }
        }
        @for (query, caption) in series {
            figure {
                img.plot alt={ (caption) " of operation " (op.id) " over " (range.name()) }
                    src={ "/operations/" (op.id) "/plot.svg?range=" (range.name()) "&" (query) };
                figcaption { (caption) }
            }
        }
        @if let Some(t) = runs.first().map(latest_text).filter(|t| !t.is_empty()) {
            h3 { "Latest run" }
            pre.config.latest { (t) }
        }
        h3 { "Last runs" }
        div.scroll { table {
            thead { tr { th { "start" } th { "return code" } th { "RTT" } th { "loss" } th { "MOS" } } }
            tbody { @for r in runs {
                @let l = Latest::of(Some(r));
                tr.(l.class) { td { (crate::store::rfc3339_ns(r.start_ns, humantime::format_rfc3339_millis)) } td.code { (l.code) } td { (l.rtt) } td { (l.loss) } td { (l.mos) } }
            } }
        } }
        @if let Some(c) = config {
            h3 { "Configuration" }
            pre.config { (crate::ops::configuration::text(c)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Latest;
    use crate::store::StoredRun;

    fn rtt(avg_us: f64, precision: &str) -> String {
        let report = serde_json::json!({
            "return_code": "ok", "precision": precision, "sent": 10, "received": 10,
            "rtt_us": {"count": 10, "avg": avg_us},
        });
        let run = StoredRun { op: 1, start: String::new(), start_ns: 0, return_code: "ok".into(), report };
        Latest::of(Some(&run)).rtt
    }

    #[test]
    fn a_rtt_below_the_runs_resolution_is_said_so_not_zero() {
        assert_eq!(rtt(400.0, "ms"), "< 1 ms", "whole-ms samples of 0 and 1 ms");
        assert_eq!(rtt(0.0, "ms"), "< 1 ms");
        assert_eq!(rtt(2600.0, "ms"), "3 ms");
        assert_eq!(rtt(37.0, "us"), "0.037 ms");
    }
}
