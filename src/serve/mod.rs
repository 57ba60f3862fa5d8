//! Serving: an embeddable, thread-safe scoring engine (issue 6).
//!
//! - [`Engine`] loads a model file onto a backend, uploads the network's serving parameters once
//!   per model version (`net::serving::ServingNet`), and scores requests (one user × B candidates
//!   → B CTRs) with the network's forward pass of SPEC §5 on the backend: GSU + ESU, short-term
//!   attention, MLP, σ; on CUDA one upload and one download per batch.
//! - Dynamic batching ([`batcher`]): concurrent requests are gathered into one backend call
//!   (bounded queue, max batch, max wait).
//! - Hot swap: a new model version loads and builds its tables off the request path, then
//!   replaces the old one atomically; in-flight requests finish on the version they started
//!   with; a bad file is refused and the old model keeps serving. The new version scores a few
//!   synthetic batches before it takes traffic.
//! - [`http`] (feature `server`): the network front: HTTP/JSON on axum/hyper, gRPC on tonic,
//!   Prometheus metrics, an authenticated admin listener.

mod batcher;
mod engine;
#[cfg(feature = "server")]
pub mod http;
mod quiet;
#[cfg(test)]
mod test_support;

pub use engine::{BatchObserver, Behaviour, CandidateDebug, Engine, EngineConfig, ScoreRequest, ScoreResponse, WARMUP_BATCHES};
