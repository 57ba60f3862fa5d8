//! gRPC beside HTTP: service `twin.v1.Scorer`, method `Score`, the messages of
//! `proto/twin.proto` written out as prost structs (so no `protoc` is needed to build), served
//! by tonic's unary machinery on the connection layer of [`super::conn`] (HTTP/2).
//!
//! Status codes: a bad request is `INVALID_ARGUMENT` with the same message as the HTTP 400, a
//! full queue `UNAVAILABLE` (retryable), a backend failure `INTERNAL`. Every answer carries the
//! serving model version in the `x-model-version` metadata.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::body::status_of;
use super::AppState;
use crate::serve::{Behaviour, ScoreRequest, ScoreResponse};

/// The messages of `proto/twin.proto`, package `twin.v1`.
pub mod pb {
    /// One behaviour, or (TWIN-V2) one cluster; `size` absent means 1.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Behaviour {
        #[prost(uint32, tag = "1")]
        pub item: u32,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
        #[prost(float, tag = "3")]
        pub play_time: f32,
        #[prost(float, tag = "4")]
        pub completion: f32,
        #[prost(uint32, optional, tag = "5")]
        pub size: Option<u32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScoreRequest {
        #[prost(int64, tag = "1")]
        pub request_time: i64,
        #[prost(message, repeated, tag = "2")]
        pub long: Vec<Behaviour>,
        #[prost(message, repeated, tag = "3")]
        pub short: Vec<Behaviour>,
        #[prost(uint32, repeated, tag = "4")]
        pub candidates: Vec<u32>,
        #[prost(bool, tag = "5")]
        pub debug: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CandidateDebug {
        #[prost(uint32, repeated, tag = "1")]
        pub topk_positions: Vec<u32>,
        #[prost(float, repeated, tag = "2")]
        pub topk_scores: Vec<f32>,
        #[prost(float, repeated, tag = "3")]
        pub attention: Vec<f32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScoreResponse {
        #[prost(float, repeated, tag = "1")]
        pub ctr: Vec<f32>,
        #[prost(uint64, tag = "2")]
        pub model_version: u64,
        #[prost(message, repeated, tag = "3")]
        pub debug: Vec<CandidateDebug>,
    }
}

/// The method's full path.
pub const SCORE_PATH: &str = "/twin.v1.Scorer/Score";

impl From<&pb::Behaviour> for Behaviour {
    fn from(b: &pb::Behaviour) -> Behaviour {
        Behaviour { item: b.item, timestamp: b.timestamp, play_time: b.play_time, completion: b.completion, size: b.size.unwrap_or(1) }
    }
}

impl From<&pb::ScoreRequest> for ScoreRequest {
    fn from(r: &pb::ScoreRequest) -> ScoreRequest {
        ScoreRequest {
            request_time: r.request_time,
            long: r.long.iter().map(Behaviour::from).collect(),
            short: r.short.iter().map(Behaviour::from).collect(),
            candidates: r.candidates.clone(),
            debug: r.debug,
        }
    }
}

impl From<ScoreResponse> for pb::ScoreResponse {
    fn from(r: ScoreResponse) -> pb::ScoreResponse {
        pb::ScoreResponse {
            ctr: r.ctr,
            model_version: r.model_version,
            debug: r
                .debug
                .unwrap_or_default()
                .into_iter()
                .map(|d| pb::CandidateDebug { topk_positions: d.topk_positions, topk_scores: d.topk_scores, attention: d.attention })
                .collect(),
        }
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// The `twin.v1.Scorer` service (a tower service over HTTP/2 requests).
#[derive(Clone)]
pub struct ScorerServer {
    st: Arc<AppState>,
}

impl ScorerServer {
    pub(crate) fn new(st: Arc<AppState>) -> ScorerServer {
        ScorerServer { st }
    }
}

struct ScoreMethod(Arc<AppState>);

fn with_version<T>(mut r: tonic::Response<T>, version: u64) -> tonic::Response<T> {
    if let Ok(v) = version.to_string().parse() {
        r.metadata_mut().insert("x-model-version", v);
    }
    r
}

impl tonic::server::UnaryService<pb::ScoreRequest> for ScoreMethod {
    type Response = pb::ScoreResponse;
    type Future = BoxFuture<tonic::Response<pb::ScoreResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<pb::ScoreRequest>) -> Self::Future {
        let st = self.0.clone();
        Box::pin(async move {
            let t0 = Instant::now();
            let msg = request.into_inner();
            let s = st.clone();
            // Engine::score blocks: off the async threads, like HTTP.
            let job = tokio::task::spawn_blocking(move || s.engine.score(&ScoreRequest::from(&msg)));
            let Ok(out) = tokio::time::timeout(st.cfg.request_timeout, job).await else {
                st.metrics.error("timeout");
                let v = st.engine.model_version();
                st.metrics.observe_request("grpc", v, t0.elapsed().as_secs_f64(), 503);
                let ms = st.cfg.request_timeout.as_millis();
                return Err(tonic::Status::deadline_exceeded(format!("scoring did not finish within {ms} ms (--request-timeout-ms)")));
            };
            let (result, version, http_status) = match out {
                Ok(Ok(resp)) => {
                    let v = resp.model_version;
                    (Ok(with_version(tonic::Response::new(pb::ScoreResponse::from(resp)), v)), v, 200)
                }
                Ok(Err(e)) => {
                    let (status, kind) = status_of(&e);
                    st.metrics.error(kind);
                    let code = match status.as_u16() {
                        503 => tonic::Code::Unavailable,
                        500 => tonic::Code::Internal,
                        _ => tonic::Code::InvalidArgument,
                    };
                    let v = st.engine.model_version();
                    let mut s = tonic::Status::new(code, e.to_string());
                    if let Ok(mv) = v.to_string().parse() {
                        s.metadata_mut().insert("x-model-version", mv);
                    }
                    (Err(s), v, status.as_u16())
                }
                Err(_) => {
                    st.metrics.error("internal");
                    (Err(tonic::Status::internal("scoring task failed (panicked)")), st.engine.model_version(), 500)
                }
            };
            st.metrics.observe_request("grpc", version, t0.elapsed().as_secs_f64(), http_status);
            result
        })
    }
}

impl<B> tower::Service<http::Request<B>> for ScorerServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != SCORE_PATH {
            self.st.metrics.error("not_found");
            return Box::pin(async move { Ok(tonic::Status::unimplemented("methods: twin.v1.Scorer/Score").into_http()) });
        }
        let st = self.st.clone();
        Box::pin(async move {
            let max = st.cfg.max_body_bytes;
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<pb::ScoreResponse, pb::ScoreRequest>::default())
                .apply_max_message_size_config(Some(max), None);
            // The message must arrive within the body timeout like an HTTP body: a stream whose
            // sender trickles (or stops) would otherwise hold its connection for ever.
            let limit = st.cfg.body_timeout + st.cfg.request_timeout;
            match tokio::time::timeout(limit, grpc.unary(ScoreMethod(st.clone()), req)).await {
                Ok(resp) => Ok(resp),
                Err(_) => {
                    st.metrics.error("timeout");
                    let ms = limit.as_millis();
                    Ok(tonic::Status::deadline_exceeded(format!("no answer within {ms} ms (body + request timeouts)")).into_http())
                }
            }
        })
    }
}
