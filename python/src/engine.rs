//! `Engine`: the serving engine (`twin_engine::serve::Engine`) from Python.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use twin_engine::backend::DType;
use twin_engine::serve::{Behaviour, Engine, EngineConfig, ScoreRequest};

use crate::errors::{invalid, py_err};
use crate::{opt_slice, parse_backend, parse_variant, path_str, slice};

/// One history as arrays: `(item, timestamp, play_time, value, size, value_is_duration)`. With
/// `value_is_duration` the fourth array is each behaviour's duration (raw behaviours: the
/// engine derives the completion ratio as everywhere else); otherwise it is the completion ratio
/// itself (clusters, whose `size` is then the member count).
type Seq<'py> = (
    PyReadonlyArray1<'py, u32>,
    PyReadonlyArray1<'py, i64>,
    PyReadonlyArray1<'py, f32>,
    PyReadonlyArray1<'py, f32>,
    Option<PyReadonlyArray1<'py, u32>>,
    bool,
);

/// A loaded model, scoring requests on a backend; see `twin_engine.Engine`.
#[pyclass(module = "twin_engine._native", name = "Engine", frozen)]
pub struct PyEngine {
    inner: Arc<Engine>,
}

fn behaviours(py: Python<'_>, name: &str, seq: &Option<Seq<'_>>) -> PyResult<Vec<Behaviour>> {
    let Some((item, ts, play, value, size, raw)) = seq else { return Ok(Vec::new()) };
    let field = |f: &str| format!("{name}.{f}");
    let item = slice(py, &field("item"), item)?;
    let ts = slice(py, &field("timestamp"), ts)?;
    let play = slice(py, &field("play_time"), play)?;
    let value = slice(py, &field(if *raw { "duration" } else { "completion" }), value)?;
    let size = opt_slice(py, &field("size"), size)?;
    for (f, n) in [("timestamp", ts.len()), ("play_time", play.len()), (if *raw { "duration" } else { "completion" }, value.len())]
        .into_iter()
        .chain(size.map(|s| ("size", s.len())))
    {
        if n != item.len() {
            return Err(invalid(py, format!("{name}.{f}: length {n} does not match {name}.item ({})", item.len())));
        }
    }
    Ok((0..item.len())
        .map(|i| {
            let mut b = if *raw {
                Behaviour::raw(item[i], ts[i], play[i], value[i])
            } else {
                Behaviour { item: item[i], timestamp: ts[i], play_time: play[i], completion: value[i], size: 1 }
            };
            if let Some(s) = size {
                b.size = s[i];
            }
            b
        })
        .collect())
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (model, variant = "twin", backend = "auto", dtype = "f32", batching = true, max_batch_requests = 64,
                        max_batch_candidates = 16_384, max_wait_us = 500, queue_capacity = 4_096, max_candidates = 4_096,
                        max_seq_len = 100_000))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: PathBuf,
        variant: &str,
        backend: &str,
        dtype: &str,
        batching: bool,
        max_batch_requests: usize,
        max_batch_candidates: usize,
        max_wait_us: u64,
        queue_capacity: usize,
        max_candidates: usize,
        max_seq_len: usize,
    ) -> PyResult<Self> {
        let dtype = match dtype {
            "f32" => DType::F32,
            "f16" => DType::F16,
            other => return Err(invalid(py, format!("dtype = {other:?}: expected f32 or f16"))),
        };
        let cfg = EngineConfig {
            backend: parse_backend(py, backend)?,
            dtype,
            variant: parse_variant(py, variant)?,
            batching,
            max_batch_requests,
            max_batch_candidates,
            max_wait: Duration::from_micros(max_wait_us),
            queue_capacity,
            max_candidates,
            max_seq_len,
        };
        let e = py.detach(|| Engine::open(&model, cfg)).map_err(py_err(py))?;
        Ok(PyEngine { inner: Arc::new(e) })
    }

    /// CTRs of `candidates` for one user: a float32 array, one per candidate.
    #[pyo3(signature = (request_time, candidates, long = None, short = None))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        request_time: i64,
        candidates: PyReadonlyArray1<'py, u32>,
        long: Option<Seq<'py>>,
        short: Option<Seq<'py>>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let req = ScoreRequest {
            request_time,
            long: behaviours(py, "long", &long)?,
            short: behaviours(py, "short", &short)?,
            candidates: slice(py, "candidates", &candidates)?.to_vec(),
            debug: false,
        };
        let engine = &self.inner;
        let out = py.detach(|| engine.score(&req)).map_err(py_err(py))?;
        Ok(PyArray1::from_vec(py, out.ctr))
    }

    /// Load `path` as the next model version and switch to it atomically; returns its version.
    fn swap(&self, py: Python<'_>, path: PathBuf) -> PyResult<u64> {
        let engine = &self.inner;
        py.detach(|| engine.swap(&path)).map_err(py_err(py))
    }

    #[getter]
    fn model_version(&self) -> u64 {
        self.inner.model_version()
    }

    #[getter]
    fn model_path(&self) -> String {
        path_str(&self.inner.model_source())
    }

    #[getter]
    fn backend(&self) -> String {
        self.inner.backend().describe()
    }

    #[getter]
    fn backend_note(&self) -> String {
        self.inner.backend_note().to_string()
    }

    #[getter]
    fn variant(&self) -> &'static str {
        self.inner.config().variant.name()
    }
}
