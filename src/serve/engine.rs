//! The engine: request validation, one batched forward pass, model versions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::batcher::Batcher;
use crate::backend::{self, Backend, BackendChoice, DType};
use crate::error::{Error, Result};
use crate::model::Model;
pub use crate::net::request::{Behaviour, CandidateDebug, ScoreRequest, ScoreResponse};
use crate::net::serving::ServingNet;
use crate::net::Variant;

/// Settings; the defaults suit a GPU under load and keep single requests fast.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub backend: BackendChoice,
    /// Storage of the projection tables.
    pub dtype: DType,
    /// The variant the model was trained as (which sequence modules it uses).
    pub variant: Variant,
    /// Gather concurrent requests into one backend call.
    pub batching: bool,
    /// Most requests per backend call.
    pub max_batch_requests: usize,
    /// Most candidates per backend call (a batch closes before exceeding it).
    pub max_batch_candidates: usize,
    /// How long the first request of a batch waits for company.
    pub max_wait: Duration,
    /// Requests waiting at most; beyond it `score` answers `Error::Overloaded` at once.
    pub queue_capacity: usize,
    /// Per-request limits.
    pub max_candidates: usize,
    pub max_seq_len: usize,
}

/// Upper bounds on the engine's options: each sizes an allocation or a wait, so an absurd value
/// (a C caller's 2^40 queue, a 2^64 µs wait) is refused by name instead of aborting the process
/// or leaving a request unanswered.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;
pub const MAX_BATCH_REQUESTS: usize = 1 << 16;
pub const MAX_BATCH_CANDIDATES: usize = 1 << 24;
pub const MAX_CANDIDATES: usize = 1 << 20;
pub const MAX_WAIT: Duration = Duration::from_secs(10);

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            backend: BackendChoice::Auto,
            dtype: DType::F32,
            variant: Variant::Twin,
            batching: true,
            max_batch_requests: 64,
            max_batch_candidates: 16_384,
            max_wait: Duration::from_micros(500),
            queue_capacity: 4_096,
            max_candidates: 4_096,
            max_seq_len: 100_000,
        }
    }
}

/// One model version, resident: the host model (request validation, debug output) and its
/// parameters on the backend.
pub(crate) struct Loaded {
    pub version: u64,
    pub source: PathBuf,
    pub model: Model,
    pub net: ServingNet,
}

pub(crate) struct Shared {
    pub cfg: EngineConfig,
    pub backend: Arc<dyn Backend>,
    pub backend_note: String,
    pub current: RwLock<Arc<Loaded>>,
    pub next_version: std::sync::atomic::AtomicU64,
    /// Serialises swaps (loads may overlap requests, not each other).
    pub swap_lock: std::sync::Mutex<()>,
    /// Set once by [`Engine::observe_batches`].
    pub on_batch: std::sync::OnceLock<BatchObserver>,
}

impl Shared {
    pub(crate) fn observe(&self, requests: usize, seconds: f64) {
        if let Some(f) = self.on_batch.get() {
            f(requests, seconds);
        }
    }
}

/// The scoring engine. `Send + Sync`: share it (`Arc<Engine>`) across threads.
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
    batcher: Option<Batcher>,
}

/// Batches of a synthetic request each new version scores before it takes traffic (see
/// [`warm`]).
pub const WARMUP_BATCHES: usize = 3;

/// Observer of every backend call the engine makes for requests: (requests in it, seconds).
pub type BatchObserver = Box<dyn Fn(usize, f64) + Send + Sync>;

/// `read` is what is opened; `source` is what the version reports as its file (they differ when
/// the caller has already opened and checked the file, see [`Engine::swap_checked`]).
fn load_version(backend: &dyn Backend, cfg: &EngineConfig, read: &Path, source: &Path, version: u64) -> Result<Loaded> {
    let model = Model::load(read)?;
    let net = ServingNet::new(backend, &model, cfg.dtype)?;
    Ok(Loaded { version, source: source.to_path_buf(), model, net })
}

/// Run [`WARMUP_BATCHES`] batches of a synthetic request through a version before it serves:
/// the first calls on a fresh version pay for allocations, caches and (on a GPU) kernel and
/// pipeline set-up, and a swap would otherwise hand that cost to real requests. A version that
/// cannot score the synthetic request is refused with the error.
fn warm(shared_cfg: &EngineConfig, backend: &dyn Backend, loaded: &Loaded) -> Result<()> {
    let n_items = loaded.model.n_items();
    if n_items == 0 {
        return Ok(());
    }
    let len = shared_cfg.max_seq_len.min(200);
    let t0 = 1_700_000_000i64;
    let long: Vec<Behaviour> = (0..len)
        .map(|i| Behaviour { item: (i * 7919 % n_items) as u32, timestamp: t0 + i as i64 * 60, play_time: 10.0, completion: 0.5, size: 1 })
        .collect();
    let short = long[long.len().saturating_sub(50)..].to_vec();
    let candidates: Vec<u32> = (0..shared_cfg.max_candidates.min(64)).map(|i| (i * 104_729 % n_items) as u32).collect();
    let req = ScoreRequest { request_time: t0 + len as i64 * 60 + 1, long, short, candidates, debug: false };
    let per_batch = shared_cfg.max_batch_requests.clamp(1, 8);
    let reqs: Vec<&ScoreRequest> = std::iter::repeat(&req).take(per_batch).collect();
    for _ in 0..WARMUP_BATCHES {
        loaded.net.forward(backend, &loaded.model, shared_cfg.variant, &reqs)?;
    }
    Ok(())
}

impl Engine {
    /// Load `model_path` onto the configured backend and build its tables.
    pub fn open(model_path: &Path, cfg: EngineConfig) -> Result<Engine> {
        let (backend, backend_note) = backend::open(cfg.backend)?;
        Engine::with_backend(model_path, cfg, backend, backend_note)
    }

    pub fn with_backend(model_path: &Path, cfg: EngineConfig, backend: Arc<dyn Backend>, backend_note: String) -> Result<Engine> {
        for (field, v) in [
            ("max_batch_requests", cfg.max_batch_requests),
            ("max_batch_candidates", cfg.max_batch_candidates),
            ("queue_capacity", cfg.queue_capacity),
            ("max_candidates", cfg.max_candidates),
            ("max_seq_len", cfg.max_seq_len),
        ] {
            if v == 0 {
                return Err(Error::BadSetting { name: field, value: v.to_string(), why: "must be at least 1".into() });
            }
        }
        for (field, v, limit) in [
            ("max_batch_requests", cfg.max_batch_requests, MAX_BATCH_REQUESTS),
            ("max_batch_candidates", cfg.max_batch_candidates, MAX_BATCH_CANDIDATES),
            ("queue_capacity", cfg.queue_capacity, MAX_QUEUE_CAPACITY),
            ("max_candidates", cfg.max_candidates, MAX_CANDIDATES),
            ("max_seq_len", cfg.max_seq_len, backend::MAX_SEQ_LEN),
        ] {
            if v > limit {
                return Err(Error::TooLarge { field, value: v as u64, limit: limit as u64 });
            }
        }
        if cfg.max_wait > MAX_WAIT {
            let us = |d: Duration| d.as_micros().min(u64::MAX as u128) as u64;
            return Err(Error::TooLarge { field: "max_wait_us", value: us(cfg.max_wait), limit: us(MAX_WAIT) });
        }
        let loaded = load_version(backend.as_ref(), &cfg, model_path, model_path, 1)?;
        warm(&cfg, backend.as_ref(), &loaded)?;
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            backend,
            backend_note,
            current: RwLock::new(Arc::new(loaded)),
            next_version: std::sync::atomic::AtomicU64::new(2),
            swap_lock: std::sync::Mutex::new(()),
            on_batch: std::sync::OnceLock::new(),
        });
        let batcher = if cfg.batching { Some(Batcher::start(shared.clone())?) } else { None };
        Ok(Engine { shared, batcher })
    }

    pub fn backend(&self) -> &dyn Backend {
        self.shared.backend.as_ref()
    }
    pub fn backend_note(&self) -> &str {
        &self.shared.backend_note
    }
    pub fn config(&self) -> &EngineConfig {
        &self.shared.cfg
    }

    /// Version number of the model serving new requests (1, 2, ... per successful swap).
    pub fn model_version(&self) -> u64 {
        self.current().version
    }
    pub fn model_source(&self) -> PathBuf {
        self.current().source.clone()
    }

    pub(crate) fn current(&self) -> Arc<Loaded> {
        // A poisoned lock only means a panic elsewhere while holding it; the Arc inside is intact.
        self.shared.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Score one request. With batching on, it joins whatever other callers are waiting.
    pub fn score(&self, req: &ScoreRequest) -> Result<ScoreResponse> {
        let loaded = self.current();
        validate(&self.shared.cfg, &loaded.model, req)?;
        match &self.batcher {
            Some(b) => b.submit(loaded, req.clone()),
            None => {
                let t0 = std::time::Instant::now();
                let out = score_batch(&self.shared, &loaded, &[req]).pop().unwrap_or(Err(Error::Empty { field: "batch", index: 0 }));
                self.shared.observe(1, t0.elapsed().as_secs_f64());
                out
            }
        }
    }

    /// Requests waiting in the batching queue now (0 without batching).
    pub fn queue_depth(&self) -> usize {
        self.batcher.as_ref().map_or(0, |b| b.depth())
    }

    /// Call `f(requests, seconds)` after every backend call made for requests (metrics). Only
    /// the first observer set is kept; returns whether this one was.
    pub fn observe_batches(&self, f: BatchObserver) -> bool {
        self.shared.on_batch.set(f).is_ok()
    }

    /// Load `path` as the next model version and switch to it atomically. Runs on the calling
    /// thread (requests keep being served meanwhile); a file that fails to load or build is
    /// refused with its error and the current version keeps serving.
    ///
    /// The new version is warmed (a few batches of a synthetic request) before it takes
    /// traffic, and the old one is released on this thread once its last request is answered,
    /// so neither its first batches nor the old tables' release land on a request.
    pub fn swap(&self, path: &Path) -> Result<u64> {
        self.swap_checked(path, path)
    }

    /// [`Engine::swap`] reading `read` and reporting `source` as the version's file: a caller
    /// that has opened and checked a file (e.g. refused FIFOs) passes its `/proc/self/fd/N`
    /// path, so the file checked is the file loaded.
    pub fn swap_checked(&self, read: &Path, source: &Path) -> Result<u64> {
        let _one_at_a_time = self.shared.swap_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Versions count successful swaps only (swaps are serialised by the lock above).
        let version = self.shared.next_version.load(std::sync::atomic::Ordering::SeqCst);
        let (backend, cfg) = (self.shared.backend.as_ref(), &self.shared.cfg);
        let new = super::quiet::run_quietly(|| load_version(backend, cfg, read, source, version))?;
        let old = self.current();
        if new.model.config != old.model.config {
            // Requests are validated against the model; a different catalogue is a different engine.
            if new.model.config.n_items != old.model.config.n_items {
                return Err(Error::Incompatible {
                    what: "new model",
                    why: format!(
                        "n_items = {} differs from the serving model's {} (another catalogue); open a new engine instead",
                        new.model.config.n_items, old.model.config.n_items
                    ),
                });
            }
        }
        super::quiet::run_quietly(|| warm(cfg, backend, &new))?;
        let replaced = std::mem::replace(&mut *self.shared.current.write().unwrap_or_else(|e| e.into_inner()), Arc::new(new));
        self.shared.next_version.store(version + 1, std::sync::atomic::Ordering::SeqCst);
        drop(old);
        retire(replaced);
        Ok(version)
    }

    /// [`Engine::swap`] on a background thread.
    pub fn swap_in_background(self: &Arc<Self>, path: PathBuf) -> std::thread::JoinHandle<Result<u64>> {
        let me = self.clone();
        std::thread::spawn(move || me.swap(&path))
    }
}

/// Everything checked before a request may join a batch, so one bad request never fails or
/// stalls the others.
pub(crate) fn validate(cfg: &EngineConfig, model: &Model, req: &ScoreRequest) -> Result<()> {
    if req.candidates.is_empty() {
        return Err(Error::Empty { field: "candidates", index: 0 });
    }
    if req.candidates.len() > cfg.max_candidates {
        return Err(Error::TooLarge { field: "candidates", value: req.candidates.len() as u64, limit: cfg.max_candidates as u64 });
    }
    model.check_item_ids("candidates", &req.candidates)?;
    for (field, seq) in [("long", &req.long), ("short", &req.short)] {
        if seq.len() > cfg.max_seq_len {
            return Err(Error::TooLarge { field, value: seq.len() as u64, limit: cfg.max_seq_len as u64 });
        }
        for (i, b) in seq.iter().enumerate() {
            if b.item as usize >= model.n_items() {
                let f = if field == "long" { "long[].item" } else { "short[].item" };
                return Err(Error::OutOfRange { field: f, index: i, value: b.item as u64, limit: model.n_items() as u64 });
            }
            if !b.play_time.is_finite() {
                return Err(Error::NonFinite {
                    field: if field == "long" { "long[].play_time" } else { "short[].play_time" },
                    index: i,
                    value: b.play_time,
                });
            }
            if !b.completion.is_finite() {
                return Err(Error::NonFinite {
                    field: if field == "long" { "long[].completion" } else { "short[].completion" },
                    index: i,
                    value: b.completion,
                });
            }
            // SPEC §1: p = clamp(play_time / duration, 0, 1) and play time is a duration, so a
            // request outside those ranges carries a bug of the caller's, not a behaviour.
            if b.play_time < 0.0 {
                return Err(Error::InvalidValue {
                    field: if field == "long" { "long[].play_time" } else { "short[].play_time" },
                    index: i,
                    value: b.play_time as f64,
                    why: "a play time cannot be negative",
                });
            }
            if !(0.0..=1.0).contains(&b.completion) {
                return Err(Error::InvalidValue {
                    field: if field == "long" { "long[].completion" } else { "short[].completion" },
                    index: i,
                    value: b.completion as f64,
                    why: "a completion ratio is in [0, 1]",
                });
            }
            if b.size == 0 {
                return Err(Error::InvalidValue { field: "long[].size", index: i, value: 0.0, why: "a cluster size must be at least 1" });
            }
        }
    }
    Ok(())
}

/// Score a batch of validated requests on one model version: one backend call for the
/// long sequences, one for the short ones, then the MLP, all on the backend (`net::serving`).
///
/// Each request keeps its own answer: a failure of the backend itself (a device error) is every
/// request's, but any other error is some request's fault that validation did not catch, so the
/// requests are then scored one by one and only the faulty one fails, with its own typed error.
pub(crate) fn score_batch(shared: &Shared, loaded: &Loaded, reqs: &[&ScoreRequest]) -> Vec<Result<ScoreResponse>> {
    match score_batch_inner(shared, loaded, reqs) {
        Ok(v) => v.into_iter().map(Ok).collect(),
        Err(e) if reqs.len() == 1 => vec![Err(e)],
        Err(e) => match shared_failure(&e) {
            Some(_) => reqs.iter().map(|_| Err(shared_failure(&e).unwrap_or(Error::Empty { field: "batch", index: 0 }))).collect(),
            None => reqs
                .iter()
                .map(|r| score_batch_inner(shared, loaded, &[r]).and_then(|mut v| v.pop().ok_or(Error::Empty { field: "batch", index: 0 })))
                .collect(),
        },
    }
}

/// A copy of `e` when it is the backend's failure rather than a request's (so every request of
/// the batch shares it); `None` otherwise.
fn shared_failure(e: &Error) -> Option<Error> {
    match e {
        Error::Driver { backend, op, source } => Some(Error::Driver { backend, op, source: source.clone() }),
        Error::Device { backend, op, message } => Some(Error::Device { backend, op, message: message.clone() }),
        Error::BackendUnavailable { backend, why } => Some(Error::BackendUnavailable { backend, why: why.clone() }),
        Error::ForeignTable { table, owner, caller } => Some(Error::ForeignTable { table, owner: owner.clone(), caller: caller.clone() }),
        _ => None,
    }
}

/// Drop a replaced version here, on the swapping thread, once the requests still holding it
/// are answered (bounded wait): whoever drops the last reference frees its tables, and that
/// should not be the batching worker between two batches.
fn retire(old: Arc<Loaded>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(old);
}

fn score_batch_inner(shared: &Shared, loaded: &Loaded, reqs: &[&ScoreRequest]) -> Result<Vec<ScoreResponse>> {
    let scored = loaded.net.forward(shared.backend.as_ref(), &loaded.model, shared.cfg.variant, reqs)?;
    Ok(scored.into_iter().map(|(ctr, debug)| ScoreResponse { ctr, model_version: loaded.version, debug }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::test_support::{small_engine, small_request};

    /// A batch that fails for one request's fault keeps the others' answers and gives that one
    /// its own typed error (not a device error for all).
    #[test]
    fn a_batch_keeps_each_requests_own_error() {
        let (_dir, e) = small_engine();
        let good = small_request();
        // Validation would refuse it; the batch path must cope with what slips through anyway.
        let bad = ScoreRequest { candidates: vec![1, 9_999], ..good.clone() };
        let loaded = e.current();
        let out = score_batch(&e.shared, &loaded, &[&good, &bad, &good]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap().ctr.len(), 2);
        assert_eq!(out[2].as_ref().unwrap().ctr.len(), 2);
        match &out[1] {
            Err(err @ Error::OutOfRange { .. }) => assert!(err.to_string().contains("9999"), "{err}"),
            other => panic!("expected the request's own OutOfRange, got {other:?}"),
        }
        // A device failure is everyone's.
        let dev = Error::Device { backend: "cuda", op: "x", message: "lost".into() };
        assert!(matches!(shared_failure(&dev), Some(Error::Device { .. })));
        // A driver failure too, its typed source shared (the same text for every request).
        let drv = Error::driver("cuda", "launch", crate::error::DriverError::Emulator("lost".into()));
        match shared_failure(&drv) {
            Some(copy @ Error::Driver { source: crate::error::DriverError::Emulator(_), .. }) => {
                assert_eq!(copy.to_string(), drv.to_string())
            }
            other => panic!("expected a shared Driver error, got {other:?}"),
        }
        assert!(shared_failure(&Error::Empty { field: "candidates", index: 0 }).is_none());
    }
}
