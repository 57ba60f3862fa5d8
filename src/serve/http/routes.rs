//! The main listener's routes: `/health`, `/ready`, `/score`, `/metrics`; `/admin/*` and
//! anything else is a 404 here. Methods are checked in each handler so a wrong one gets the
//! JSON 405 with `Allow` (axum's own 405 has no body).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http::{Method, StatusCode};
use serde_json::json;

use super::body::{not_allowed, read_body, status_of, Reply};
use super::diagnose::{diagnose, excerpt};
use super::AppState;
use crate::serve::ScoreRequest;

pub(crate) fn router(st: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", any(health))
        .route("/ready", any(ready))
        .route("/score", any(score))
        .route("/metrics", any(metrics))
        .fallback(not_found)
        .with_state(st)
}

async fn not_found(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let path = excerpt(req.uri().path(), 80);
    let msg = if req.uri().path().starts_with("/admin") {
        format!("route = {path:?}: not found here: admin routes are served only on the admin listener (--admin-addr)")
    } else {
        format!("route = {path:?}: not found (routes: GET /health, GET /ready, POST /score, GET /metrics)")
    };
    Reply::error(&st, StatusCode::NOT_FOUND, "not_found", msg).into_response()
}

fn is_get(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

async fn health(State(st): State<Arc<AppState>>, req: Request) -> Response {
    if !is_get(req.method()) {
        return not_allowed(&st, req.method(), "/health", "GET").into_response();
    }
    let e = &st.engine;
    Reply::json(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "model_version": e.model_version(),
            "model": e.model_source().display().to_string(),
            "backend": e.backend().describe(),
            "backend_note": e.backend_note(),
            "variant": e.config().variant.name(),
            "batching": e.config().batching,
        }),
    )
    .into_response()
}

async fn ready(State(st): State<Arc<AppState>>, req: Request) -> Response {
    if !is_get(req.method()) {
        return not_allowed(&st, req.method(), "/ready", "GET").into_response();
    }
    let ready = st.ready.load(Ordering::SeqCst);
    let body = json!({
        "ready": ready,
        "model_version": st.engine.model_version(),
        "queue_depth": st.engine.queue_depth(),
    });
    Reply::json(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body).into_response()
}

async fn metrics(State(st): State<Arc<AppState>>, req: Request) -> Response {
    if !is_get(req.method()) {
        return not_allowed(&st, req.method(), "/metrics", "GET").into_response();
    }
    match st.metrics.render(&st.engine) {
        Ok(text) => ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => Reply::error(&st, StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("metrics: {e}")).into_response(),
    }
}

async fn score(State(st): State<Arc<AppState>>, req: Request) -> Response {
    if req.method() != Method::POST {
        return not_allowed(&st, req.method(), "/score", "POST").into_response();
    }
    let t0 = Instant::now();
    let body = match read_body(&st, req).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    // Parsing a multi-megabyte body and scoring both block: off the async threads.
    let s = st.clone();
    let job = tokio::task::spawn_blocking(move || score_body(&s, &body));
    let (reply, version) = match tokio::time::timeout(st.cfg.request_timeout, job).await {
        Ok(Ok(r)) => r,
        Err(_) => {
            let ms = st.cfg.request_timeout.as_millis();
            let r = Reply::error(
                &st,
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("scoring did not finish within {ms} ms (--request-timeout-ms); retry later"),
            );
            (r, st.engine.model_version())
        }
        Ok(Err(_)) => {
            let r =
                Reply::error(&st, StatusCode::INTERNAL_SERVER_ERROR, "internal", "scoring task failed (panicked); the server carries on");
            (r, st.engine.model_version())
        }
    };
    st.metrics.observe_request("http", version, t0.elapsed().as_secs_f64(), reply.status.as_u16());
    reply.into_response()
}

/// Parse, score and encode one request on a blocking thread; also the version that answered.
fn score_body(st: &AppState, body: &[u8]) -> (Reply, u64) {
    let req: ScoreRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return (Reply::error(st, StatusCode::BAD_REQUEST, "bad_request", diagnose(body, &e)), st.engine.model_version()),
    };
    match st.engine.score(&req) {
        Ok(resp) => match serde_json::to_vec(&resp) {
            Ok(b) => (Reply::raw_json(StatusCode::OK, b), resp.model_version),
            Err(e) => {
                (Reply::error(st, StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("encoding the response: {e}")), resp.model_version)
            }
        },
        Err(e) => {
            let (status, kind) = status_of(&e);
            (Reply::error(st, status, kind, e.to_string()), st.engine.model_version())
        }
    }
}
