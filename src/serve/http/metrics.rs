//! Prometheus metrics (`GET /metrics`, text format): request latency by API and model version,
//! requests by status, errors by kind, the batching queue's depth, backend batch sizes and
//! times, swaps and their duration, open and refused connections.

use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::error::{Error, Result};
use crate::serve::Engine;

pub struct Metrics {
    registry: Registry,
    latency: HistogramVec,
    requests: IntCounterVec,
    errors: IntCounterVec,
    queue_depth: IntGauge,
    model_version: IntGauge,
    swaps: IntCounterVec,
    swap_seconds: Histogram,
    connections: IntGaugeVec,
    refused: IntCounterVec,
}

fn prom(e: prometheus::Error) -> Error {
    Error::Incompatible { what: "metrics", why: e.to_string() }
}

/// Latency buckets (seconds): 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

impl Metrics {
    /// Register every metric and hook the engine's batch observer (if no other is set).
    pub fn new(engine: &Engine) -> Result<Metrics> {
        let registry = Registry::new();
        let latency = HistogramVec::new(
            HistogramOpts::new("twin_request_duration_seconds", "Time to answer a scoring request, from its head to its answer")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["api", "model_version"],
        )
        .map_err(prom)?;
        let requests =
            IntCounterVec::new(Opts::new("twin_requests_total", "Scoring requests answered, by API and status"), &["api", "status"])
                .map_err(prom)?;
        let errors = IntCounterVec::new(
            Opts::new("twin_errors_total", "Errors answered, by kind (bad_request, too_large, timeout, overloaded, device, ...)"),
            &["kind"],
        )
        .map_err(prom)?;
        let queue_depth = IntGauge::new("twin_queue_depth", "Requests waiting in the batching queue").map_err(prom)?;
        let model_version = IntGauge::new("twin_model_version", "Version of the model serving new requests").map_err(prom)?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("twin_batch_requests", "Requests per backend call")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .map_err(prom)?;
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new("twin_batch_duration_seconds", "Time of one backend call").buckets(LATENCY_BUCKETS.to_vec()),
        )
        .map_err(prom)?;
        let swaps = IntCounterVec::new(Opts::new("twin_swaps_total", "Model swaps, by result (ok, refused)"), &["result"]).map_err(prom)?;
        let swap_seconds = Histogram::with_opts(
            HistogramOpts::new("twin_swap_duration_seconds", "Time of a swap: load, build, warm-up")
                .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0]),
        )
        .map_err(prom)?;
        let connections =
            IntGaugeVec::new(Opts::new("twin_connections_open", "Open connections, by listener"), &["listener"]).map_err(prom)?;
        let refused = IntCounterVec::new(
            Opts::new("twin_connections_refused_total", "Connections refused at the connection limit, by listener"),
            &["listener"],
        )
        .map_err(prom)?;
        for c in [
            Box::new(latency.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(requests.clone()),
            Box::new(errors.clone()),
            Box::new(queue_depth.clone()),
            Box::new(model_version.clone()),
            Box::new(batch_size.clone()),
            Box::new(batch_seconds.clone()),
            Box::new(swaps.clone()),
            Box::new(swap_seconds.clone()),
            Box::new(connections.clone()),
            Box::new(refused.clone()),
        ] {
            registry.register(c).map_err(prom)?;
        }
        let (bs, bt) = (batch_size.clone(), batch_seconds.clone());
        engine.observe_batches(Box::new(move |n, secs| {
            bs.observe(n as f64);
            bt.observe(secs);
        }));
        Ok(Metrics { registry, latency, requests, errors, queue_depth, model_version, swaps, swap_seconds, connections, refused })
    }

    pub fn observe_request(&self, api: &str, model_version: u64, seconds: f64, status: u16) {
        self.latency.with_label_values(&[api, &model_version.to_string()]).observe(seconds);
        self.requests.with_label_values(&[api, &status.to_string()]).inc();
    }

    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }

    pub fn swap(&self, ok: bool, seconds: f64) {
        self.swaps.with_label_values(&[if ok { "ok" } else { "refused" }]).inc();
        self.swap_seconds.observe(seconds);
    }

    pub fn connection_opened(&self, listener: &str) {
        self.connections.with_label_values(&[listener]).inc();
    }
    pub fn connection_closed(&self, listener: &str) {
        self.connections.with_label_values(&[listener]).dec();
    }
    pub fn connection_refused(&self, listener: &str) {
        self.refused.with_label_values(&[listener]).inc();
    }

    /// The text exposition, gauges read from the engine now.
    pub fn render(&self, engine: &Engine) -> Result<String> {
        self.queue_depth.set(engine.queue_depth() as i64);
        self.model_version.set(engine.model_version() as i64);
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).map_err(prom)?;
        String::from_utf8(buf).map_err(|e| Error::Incompatible { what: "metrics", why: e.to_string() })
    }
}
