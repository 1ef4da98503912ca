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
        .route("/operations/{id}", get(operation))
        .route("/operations/{id}/plot.svg", get(plot_svg))
}

/// `?part=main` (the page's main element only, for its refresh), `?range=`, `?size=spark`.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    part: Option<String>,
    range: Option<String>,
    size: Option<String>,
}

impl PageQuery {
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

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "agent".into(), |h| h.trim().to_string())
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
    let o = pages::Overview {
        ops,
        tracks: crate::http::track_summaries(&sh).unwrap_or_default(),
        routes: sh.route_status().filter(|r| !r.routes.is_empty()),
        responder,
        events: sh.read_store(|s| s.events(10)).unwrap_or_default(),
    };
    respond(&q, &format!("agent on {}", host()), pages::overview(&o))
}

async fn operation(State(sh): State<St>, UrlPath(id): UrlPath<u32>, Query(q): Query<PageQuery>) -> Response {
    let range = match q.range() {
        Ok(r) => r,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let Some(op) = sh.op_summaries(Instant::now()).and_then(|v| v.into_iter().find(|o| o.id == id)) else {
        return (StatusCode::NOT_FOUND, format!("no operation {id}\n")).into_response();
    };
    let runs = sh.read_store(|s| s.history(id, 20)).unwrap_or_default();
    let config = sh.op_configuration(id);
    respond(&q, &format!("operation {id}"), pages::operation(&op, range, &runs, config.as_ref()))
}

async fn plot_svg(State(sh): State<St>, UrlPath(id): UrlPath<u32>, Query(q): Query<PageQuery>) -> Response {
    let range = match q.range() {
        Ok(r) => r,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let size = match q.size.as_deref() {
        None | Some("full") => Size::Full,
        Some("spark") => Size::Spark,
        Some(s) => {
            return (StatusCode::BAD_REQUEST, format!("size={s} is not a size; use full or spark\n")).into_response();
        }
    };
    let Some(op) = sh.op_summaries(Instant::now()).and_then(|v| v.into_iter().find(|o| o.id == id)) else {
        return (StatusCode::NOT_FOUND, format!("no operation {id}\n")).into_response();
    };
    let now = now_s();
    let width = plot::column_width(range, size);
    let since_ns = ((now - range.span().as_secs_f64()) * 1e9) as i64;
    let Some(cols) = sh.read_store(|s| s.plot_columns(id, since_ns, width.as_nanos() as i64)) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let title = format!("operation {id}: {} to {}, {}", op.r#type, op.target, range.name());
    let svg = plot::svg(&cols, range, size, now, &title);
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], svg).into_response()
}
