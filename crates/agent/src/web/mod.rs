//! The agent's web interface on its HTTP address: `/` (every operation with its latest result
//! and a sparkline, tracks, routes, the responder, recent events), `/operations/{id}` (a
//! smokeping-style plot with selectable ranges, the last runs, the configuration) and each plot
//! as an image, `/operations/{id}/plot.svg?range=24h`, for wikis, emails and tickets.
//!
//! Pages are rendered on the server ([`pages`], maud) and plots drawn on the server ([`plot`],
//! plotters' SVG backend): the binary carries everything, the browser needs no library and no
//! network, and an image URL works without JavaScript. See docs/web.md.

pub mod pages;
pub mod plot;

use crate::daemon::Shared;
use crate::mesh::peers::PeerRow;
use crate::store::PlotSeries;
use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use plot::{Range, Size};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

type St = Arc<Shared>;

/// The pages' routes.
pub(crate) fn routes() -> Router<St> {
    Router::new()
        .route("/", get(overview))
        .route("/mesh", get(mesh))
        .route("/operations/{id}", get(operation))
        .route("/operations/{id}/plot.svg", get(plot_svg))
        .route("/operations/{id}/plot.json", get(plot_json))
}

/// `?part=main` (the page's main element only, for its refresh), `?range=`, `?size=spark`.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    part: Option<String>,
    range: Option<String>,
    size: Option<String>,
    what: Option<String>,
    hop: Option<String>,
}

impl PageQuery {
    /// The series asked for (default rtt).
    fn series(&self) -> Result<crate::store::PlotSeries, String> {
        match self.what.as_deref() {
            None => Ok(crate::store::PlotSeries::Rtt),
            Some("hop") => match self.hop.as_deref().map(str::parse::<u8>) {
                Some(Ok(ttl)) if ttl > 0 => Ok(crate::store::PlotSeries::Hop(ttl)),
                Some(_) => Err(format!(
                    "hop={} is not a hop; use the hop's TTL, 1-255\n",
                    self.hop.as_deref().unwrap_or_default()
                )),
                None => Err("what=hop needs hop=N, the hop's TTL (1-255)\n".to_string()),
            },
            Some(w) => plot::SERIES.iter().find(|(n, _)| *n == w).map(|(_, s)| *s).ok_or_else(|| {
                let names: Vec<&str> = plot::SERIES.iter().map(|(n, _)| *n).collect();
                format!("what={w} is not a series; use {}, or hop with hop=N\n", names.join(", "))
            }),
        }
    }

    /// The range asked for (default 24h), or why the request is refused.
    fn range(&self) -> Result<Range, String> {
        match self.range.as_deref() {
            None => Ok(Range::H24),
            Some(s) => Range::parse(s).ok_or_else(|| format!("range={s} is not a range; use 1h, 6h, 24h or 7d\n")),
        }
    }
}

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The whole page, or its main element alone for `?part=main`.
fn respond(q: &PageQuery, title: &str, main: maud::Markup) -> Response {
    let body = if q.part.as_deref() == Some("main") { main } else { pages::page(title, main) };
    ([(header::CACHE_CONTROL, "no-store")], Html(body.into_string())).into_response()
}

async fn overview(State(sh): State<St>, Query(q): Query<PageQuery>) -> Response {
    let Some(ops) = sh.op_summaries(Instant::now()) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let ops = ops
        .into_iter()
        .map(|o| {
            let latest = sh.read_store(|s| s.latest(o.id)).flatten();
            let l = pages::Latest::of(latest.as_ref());
            (o, l)
        })
        .collect();
    let responder = match sh.responder() {
        Some(r) => r.status_async().await.and_then(|s| serde_json::to_value(s).ok()),
        None => None,
    };
    let grid = mesh_grid(&sh).await;
    let o = pages::Overview {
        grid,
        ops,
        tracks: crate::http::track_summaries(&sh).unwrap_or_default(),
        routes: sh.route_status().filter(|r| !r.routes.is_empty()),
        responder,
        events: sh.read_store(|s| s.events(10)).unwrap_or_default(),
    };
    respond(&q, &format!("agent on {}", crate::alert::host_name()), pages::overview(&o))
}

/// The mesh's grids (one per test): this agent's row from its store, the other sites' from their
/// agents ([`crate::mesh::peers`]); `None` outside a mesh.
async fn mesh_grid(sh: &Shared) -> Option<pages::MeshGrid> {
    let mesh = sh.mesh()?;
    let own = sh.mesh_row()?;
    let peers = sh.peer_rows(&mesh).await;
    let rows = mesh
        .sites
        .iter()
        .map(|s| {
            let row = if s.name == mesh.site {
                pages::GridRow::Cells { cells: own.cells.clone(), base: String::new() }
            } else {
                match (peers.get(&s.name), &s.http) {
                    (Some(PeerRow::Answered(cells)), Some(agent)) => {
                        pages::GridRow::Cells { cells: cells.clone(), base: agent.url.clone() }
                    }
                    (Some(PeerRow::Unknown(why)), _) => pages::GridRow::Unknown(why.clone()),
                    _ => pages::GridRow::NoAgent,
                }
            };
            (s.name.clone(), row)
        })
        .collect();
    Some(pages::MeshGrid { mesh, rows })
}

/// `/mesh`: the grids alone.
async fn mesh(State(sh): State<St>, Query(q): Query<PageQuery>) -> Response {
    match mesh_grid(&sh).await {
        Some(g) => respond(&q, &format!("mesh {} from {}", g.mesh.file, g.mesh.site), pages::mesh(&g)),
        None => (StatusCode::NOT_FOUND, "this agent is not a site of a mesh ([mesh] or --mesh, docs/mesh.md)\n")
            .into_response(),
    }
}

async fn operation(State(sh): State<St>, UrlPath(id): UrlPath<u32>, Query(q): Query<PageQuery>) -> Response {
    let range = match q.range() {
        Ok(r) => r,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let Some(op) = sh.op_summary(id, Instant::now()) else {
        return (StatusCode::NOT_FOUND, format!("no operation {id}\n")).into_response();
    };
    let runs = sh.read_store(|s| s.history(id, 20)).unwrap_or_default();
    let config = sh.op_configuration(id);
    // the jitter family has IPDV and one-way delays; a codec adds MOS
    let kind = crate::ops::find(&op.r#type);
    let mut series: Vec<(String, String)> = Vec::new();
    if kind.is_some_and(|k| k.jitter()) {
        series.push((plot::query(PlotSeries::Ipdv), "IPDV between consecutive replies".to_string()));
    }
    // one-way delays need a reflector's timestamps: not the path kinds' ICMP echoes
    if kind.is_some_and(|k| k.jitter() && !k.paths()) {
        series.extend([
            (
                plot::query(PlotSeries::OneWaySd),
                "One-way delay, source to destination (synchronised clocks only)".to_string(),
            ),
            (
                plot::query(PlotSeries::OneWayDs),
                "One-way delay, destination to source (synchronised clocks only)".to_string(),
            ),
        ]);
    }
    if config.as_ref().is_some_and(|c| c.lines.iter().any(|l| l.label == "Codec Type")) {
        series.push((plot::query(PlotSeries::Mos), "MOS".to_string()));
    }
    // the kind's own plots (a path operation's hops), from its part of the latest run
    if let (Some(k), Some(serde_json::Value::Object(latest))) = (kind, runs.first().map(|r| &r.report)) {
        series.extend(k.plots(latest).into_iter().map(|(s, caption)| (plot::query(s), caption)));
    }
    respond(&q, &format!("operation {id}"), pages::operation(&op, range, &series, &runs, config.as_ref()))
}

/// What one plot draws.
struct Plot {
    cols: Vec<crate::store::PlotColumn>,
    series: crate::store::PlotSeries,
    range: Range,
    title: String,
    now: f64,
}

/// The plot `q` asks for, or the status and words of a refusal.
fn columns(sh: &Shared, id: u32, q: &PageQuery, size: Size) -> Result<Plot, (StatusCode, String)> {
    let range = q.range().map_err(|why| (StatusCode::BAD_REQUEST, why))?;
    let series = q.series().map_err(|why| (StatusCode::BAD_REQUEST, why))?;
    let Some(op) = sh.op_summary(id, Instant::now()) else {
        return Err((StatusCode::NOT_FOUND, format!("no operation {id}\n")));
    };
    let now = now_s();
    let width = plot::column_width(range, size);
    let since_ns = ((now - range.span().as_secs_f64()) * 1e9) as i64;
    let cols = sh
        .read_store(|s| s.plot_columns(id, since_ns, width.as_nanos() as i64, series))
        .ok_or((StatusCode::INTERNAL_SERVER_ERROR, "the store could not be read\n".to_string()))?;
    let what = match series {
        PlotSeries::Hop(ttl) => format!("hop {ttl}"),
        s => plot::SERIES.iter().find(|(_, x)| *x == s).map_or("rtt", |(n, _)| *n).to_string(),
    };
    let title = format!("operation {id}: {} to {}, {what}, {} (UTC)", op.r#type, op.target, range.name());
    Ok(Plot { cols, series, range, title, now })
}

async fn plot_svg(State(sh): State<St>, UrlPath(id): UrlPath<u32>, Query(q): Query<PageQuery>) -> Response {
    let size = match q.size.as_deref() {
        None | Some("full") => Size::Full,
        Some("spark") => Size::Spark,
        Some(s) => {
            return (StatusCode::BAD_REQUEST, format!("size={s} is not a size; use full or spark\n")).into_response();
        }
    };
    match columns(&sh, id, &q, size) {
        Ok(p) => {
            let svg = plot::svg(&p.cols, p.series, p.range, size, p.now, &p.title);
            ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], svg).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The columns a full-size plot draws, as JSON: what the picture is made of.
async fn plot_json(State(sh): State<St>, UrlPath(id): UrlPath<u32>, Query(q): Query<PageQuery>) -> Response {
    match columns(&sh, id, &q, Size::Full) {
        Ok(p) => axum::Json(p.cols).into_response(),
        Err(e) => e.into_response(),
    }
}
