//! The agent's HTTP server: `/metrics` (streamed), `/probe` ([`crate::probe`]), `/-/healthy`,
//! `/-/reload` and the JSON API,
//! whose documents are the types of [`crate::api`].
//!
//! It runs as a task on the agent's runtime ([`serve`], stopped by the agent's cancellation) and reads the agent
//! only through the `pub(crate)` methods of the daemon's shared state; anything that blocks (a
//! reload, encoding a scrape) runs on the runtime's blocking pool.

use crate::api::{LimitQuery, TrackSummary};
use crate::daemon::Shared;
use crate::tracks::TrackSource;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use std::time::{Duration, Instant};

type St = Arc<Shared>;

/// The exposition is streamed in pieces of this size: 10,000 operations make 34 MB of text, which
/// would otherwise sit in memory once per scrape.
const SCRAPE_CHUNK: usize = 256 * 1024;
/// A scraper that reads nothing for this long is dropped: the encoder holds each metric family's
/// read lock while it writes that family, and a new series (an operation's first run) waits for it.
const SCRAPE_STALL: Duration = Duration::from_secs(30);

/// Serves until `stop` is cancelled; the listener is already bound (non-blocking).
pub(crate) async fn serve(sh: St, listener: std::net::TcpListener, stop: tokio_util::sync::CancellationToken) {
    {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/probe", get(probe))
            .route("/-/healthy", get(healthy))
            .route("/-/reload", axum::routing::post(reload).put(reload))
            .route("/api/v1/operations", get(operations))
            .route("/api/v1/operations/{id}/latest", get(latest))
            .route("/api/v1/operations/{id}/history", get(history))
            .route("/api/v1/operations/{id}/aggregated", get(aggregated))
            .route("/api/v1/operations/{id}/configuration", get(configuration))
            .route("/api/v1/mesh", get(mesh_row))
            .route("/api/v1/responder", get(responder_status))
            .route("/api/v1/store", get(store_status))
            .route("/api/v1/events", get(events))
            .route("/api/v1/tracks", get(tracks))
            .route("/api/v1/routes", get(routes))
            .merge(crate::web::routes())
            .with_state(sh);
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    }
}

/// `OK` while the scheduler turns (the watchdog's test); 503 when it has stalled or is stopping.
async fn healthy(State(sh): State<St>) -> Response {
    if sh.healthy() {
        "OK\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy: the scheduler has not turned for 5 s, or the agent is stopping\n")
            .into_response()
    }
}

async fn reload(State(sh): State<St>) -> Response {
    // the loader reads a file and the reload takes locks: off the async thread
    match tokio::task::spawn_blocking(move || sh.reload_from_source()).await {
        Ok(Ok(sum)) => Json(sum).into_response(),
        Ok(Err(e)) => {
            (StatusCode::BAD_REQUEST, format!("reload failed, configuration unchanged: {e}\n")).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn metrics(State(sh): State<St>, headers: axum::http::HeaderMap) -> Response {
    let om = crate::metrics::wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let content_type = if om { crate::metrics::OPENMETRICS_CONTENT_TYPE } else { crate::metrics::TEXT_CONTENT_TYPE };
    if let Some(r) = sh.responder()
        && let Some(status) = r.status_async().await
    {
        sh.metrics().responder(&status);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(4);
    tokio::task::spawn_blocking(move || {
        sh.metrics().encode_chunked(om, SCRAPE_CHUNK, |mut piece| {
            let stalled = Instant::now() + SCRAPE_STALL;
            loop {
                match tx.try_send(piece) {
                    Ok(()) => return true,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(p)) if Instant::now() < stalled => {
                        piece = p;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => return false,
                }
            }
        })
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (Ok::<_, std::convert::Infallible>(piece), rx))
    });
    ([(header::CONTENT_TYPE, content_type)], axum::body::Body::from_stream(body)).into_response()
}

/// One run from the query string, answered with its metrics ([`crate::probe`]).
async fn probe(State(sh): State<St>, Query(params): Query<Vec<(String, String)>>) -> Response {
    let permit = match sh.probe_permit() {
        Ok(p) => p,
        Err(0) => {
            return (StatusCode::NOT_FOUND, "/probe is off on this agent (agent.probe_concurrency = 0)\n")
                .into_response();
        }
        Err(n) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                format!("{n} /probe runs are going, the most at once (agent.probe_concurrency); try again later\n"),
            )
                .into_response();
        }
    };
    let rt = tokio::runtime::Handle::current();
    // a run blocks its thread (the pacer holds the probe schedule)
    let answer = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        crate::probe::run(&params, &rt, &|| sh.stopping())
    })
    .await;
    match answer {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, crate::metrics::TEXT_CONTENT_TYPE)], text).into_response(),
        Ok(Err(crate::probe::ProbeError::Invalid(e))) => {
            (StatusCode::BAD_REQUEST, format!("/probe: {e}\n")).into_response()
        }
        Ok(Err(crate::probe::ProbeError::Stopping)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping; the run was cancelled\n").into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn operations(State(sh): State<St>) -> Response {
    match sh.op_summaries(Instant::now()) {
        Some(list) => Json(list).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn latest(State(sh): State<St>, UrlPath(id): UrlPath<u32>) -> Response {
    match sh.read_store(|s| s.latest(id)).flatten() {
        Some(r) => Json(r.report).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no run of operation {id} yet\n")).into_response(),
    }
}

/// This site's row of the mesh grid: what the other sites' grids show for it.
async fn mesh_row(State(sh): State<St>) -> Response {
    match sh.mesh_row() {
        Some(row) => Json(row).into_response(),
        None => (StatusCode::NOT_FOUND, "this agent is not a site of a mesh ([mesh] or --mesh, docs/mesh.md)\n")
            .into_response(),
    }
}

async fn history(State(sh): State<St>, UrlPath(id): UrlPath<u32>, Query(q): Query<LimitQuery>) -> Response {
    match sh.read_store(|s| s.history(id, q.limit())) {
        Some(v) => Json(v).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn aggregated(State(sh): State<St>, UrlPath(id): UrlPath<u32>) -> Response {
    if !sh.has_operation(id) {
        return (StatusCode::NOT_FOUND, format!("no operation {id}\n")).into_response();
    }
    match sh.read_store(|s| s.aggregates(id)) {
        Some(v) => Json(v).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn configuration(State(sh): State<St>, UrlPath(id): UrlPath<u32>) -> Response {
    match sh.op_configuration(id) {
        Some(c) => Json(c).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no operation {id}\n")).into_response(),
    }
}

async fn events(State(sh): State<St>, Query(q): Query<LimitQuery>) -> Response {
    match sh.read_store(|s| s.events(q.limit())) {
        Some(v) => Json(v).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn responder_status(State(sh): State<St>) -> Response {
    match sh.responder() {
        Some(r) => match r.status_async().await {
            Some(s) => Json(s).into_response(),
            None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        },
        None => (StatusCode::NOT_FOUND, "this agent runs no responder\n").into_response(),
    }
}

async fn store_status(State(sh): State<St>) -> Response {
    match sh.store_status() {
        Some(s) => Json(s).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn tracks(State(sh): State<St>) -> Response {
    match track_summaries(&sh) {
        Some(v) => Json(v).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Every track as `/api/v1/tracks` (and the overview page) shows it.
pub(crate) fn track_summaries(sh: &Shared) -> Option<Vec<TrackSummary>> {
    let status = sh.track_status()?;
    let (now, wall) = (Instant::now(), ipsla_net::clock::wall_now());
    let v: Vec<TrackSummary> = status
        .into_iter()
        .map(|t| {
            let (operation, members) = match &t.def.source {
                TrackSource::Operation { op, .. } => (Some(*op), Vec::new()),
                TrackSource::List { members, .. } => (None, members.clone()),
            };
            let ago = t.last_change.map(|at| now.saturating_duration_since(at));
            let latest = operation.and_then(|op| sh.read_store(|s| s.latest(op)).flatten());
            TrackSummary {
                id: t.id,
                up: t.up,
                changes: t.changes,
                tracks: t.def.describe(),
                operation,
                members,
                delay_up_s: t.def.delay_up.as_secs_f64(),
                delay_down_s: t.def.delay_down.as_secs_f64(),
                last_change: ago.map(|a| {
                    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + wall.saturating_sub(a)).to_string()
                }),
                last_change_s_ago: ago.map(|a| (a.as_secs_f64() * 1000.0).round() / 1000.0),
                latest_return_code: t.last_code,
                latest_rtt_ms: latest.as_ref().and_then(|r| r.report["rtt_us"]["avg"].as_f64()).map(|us| us / 1000.0),
            }
        })
        .collect();
    Some(v)
}

async fn routes(State(sh): State<St>) -> Response {
    match sh.route_status() {
        Some(s) => Json(s).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
