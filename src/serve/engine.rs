//! The engine: request validation, one batched forward pass, model versions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::batcher::Batcher;
use crate::backend::cpu::gemm::mm;
use crate::backend::{self, Backend, BackendChoice, DType, OnlineRequests, OnlineTables, TopK};
use crate::error::{Error, Result};
use crate::features;
use crate::model::Model;
use crate::train::step::{CONTEXT_EMB, MLP0};
use crate::train::Variant;

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

/// One behaviour of the user's history, or (TWIN-V2) one cluster as a virtual item.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Behaviour {
    pub item: u32,
    /// Seconds; a cluster's newest member's.
    pub timestamp: i64,
    /// Seconds watched (a cluster: the mean).
    pub play_time: f32,
    /// Completion ratio in [0, 1] (a cluster: the mean).
    pub completion: f32,
    /// Cluster size `n` (1 for a raw behaviour).
    #[serde(default = "one")]
    pub size: u32,
}

fn one() -> u32 {
    1
}

impl Behaviour {
    /// A raw behaviour; completion is `clamp(play_time / duration, 0, 1)`.
    pub fn raw(item: u32, timestamp: i64, play_time: f32, duration: f32) -> Behaviour {
        Behaviour { item, timestamp, play_time, completion: features::completion_ratio(play_time, duration), size: 1 }
    }
}

/// One user × B candidates.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreRequest {
    pub request_time: i64,
    /// The GSU's input, oldest first: the raw lifelong sequence (`twin`, `sim-soft`) or the
    /// user's clusters (`twin-v2`).
    #[serde(default)]
    pub long: Vec<Behaviour>,
    /// Raw recent behaviours, oldest first; the model uses the last `short_len` of them.
    #[serde(default)]
    pub short: Vec<Behaviour>,
    pub candidates: Vec<u32>,
    /// Also return each candidate's GSU top-K and ESU attention weights.
    #[serde(default)]
    pub debug: bool,
}

/// Why a candidate scored as it did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CandidateDebug {
    /// Positions in `long` kept by the GSU, best first, with their relevance `g`.
    pub topk_positions: Vec<u32>,
    pub topk_scores: Vec<f32>,
    /// `[K, h]`: per-head softmax weight of each finalist (order of `topk_positions`).
    pub attention: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ScoreResponse {
    pub ctr: Vec<f32>,
    pub model_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<Vec<CandidateDebug>>,
}

/// One model version, resident: host parameters (MLP, embeddings) and backend tables.
pub(crate) struct Loaded {
    pub version: u64,
    pub source: PathBuf,
    pub model: Model,
    pub tables: OnlineTables,
}

pub(crate) struct Shared {
    pub cfg: EngineConfig,
    pub backend: Arc<dyn Backend>,
    pub backend_note: String,
    pub current: RwLock<Arc<Loaded>>,
    pub next_version: std::sync::atomic::AtomicU64,
    /// Serialises swaps (loads may overlap requests, not each other).
    pub swap_lock: std::sync::Mutex<()>,
}

/// The scoring engine. `Send + Sync`: share it (`Arc<Engine>`) across threads.
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
    batcher: Option<Batcher>,
}

fn load_version(backend: &dyn Backend, cfg: &EngineConfig, path: &Path, version: u64) -> Result<Loaded> {
    let model = Model::load(path)?;
    let tables = model.online_tables(backend, cfg.dtype)?;
    Ok(Loaded { version, source: path.to_path_buf(), model, tables })
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
                return Err(Error::InvalidValue { field, index: 0, value: 0.0, why: "must be at least 1" });
            }
        }
        if cfg.max_seq_len > backend::MAX_SEQ_LEN {
            return Err(Error::TooLarge { field: "max_seq_len", value: cfg.max_seq_len as u64, limit: backend::MAX_SEQ_LEN as u64 });
        }
        let loaded = load_version(backend.as_ref(), &cfg, model_path, 1)?;
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            backend,
            backend_note,
            current: RwLock::new(Arc::new(loaded)),
            next_version: std::sync::atomic::AtomicU64::new(2),
            swap_lock: std::sync::Mutex::new(()),
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
            None => score_batch(&self.shared, &loaded, &[req]).pop().unwrap_or(Err(Error::Empty { field: "batch", index: 0 })),
        }
    }

    /// Load `path` as the next model version and switch to it atomically. Runs on the calling
    /// thread (requests keep being served meanwhile); a file that fails to load or build is
    /// refused with its error and the current version keeps serving.
    pub fn swap(&self, path: &Path) -> Result<u64> {
        let _one_at_a_time = self.shared.swap_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Versions count successful swaps only (swaps are serialised by the lock above).
        let version = self.shared.next_version.load(std::sync::atomic::Ordering::SeqCst);
        let new = load_version(self.shared.backend.as_ref(), &self.shared.cfg, path, version)?;
        let old = self.current();
        if new.model.config != old.model.config {
            // Requests are validated against the model; a different catalogue is a different engine.
            if new.model.config.n_items != old.model.config.n_items {
                return Err(Error::BadShape {
                    field: "new model n_items",
                    value: new.model.config.n_items as u64,
                    why: "differs from the serving model's catalogue; open a new engine instead",
                });
            }
        }
        *self.shared.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        self.shared.next_version.store(version + 1, std::sync::atomic::Ordering::SeqCst);
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
            if b.size == 0 {
                return Err(Error::InvalidValue { field: "long[].size", index: i, value: 0.0, why: "a cluster size must be at least 1" });
            }
        }
    }
    Ok(())
}

fn cross_of(b: &Behaviour, t: i64) -> [u32; features::N_CROSS] {
    features::cross_rows_from_ratio(b.completion, b.play_time, b.timestamp, t)
}

/// Score a batch of validated requests on one model version: one backend call for the
/// long sequences, one for the short ones, then the MLP on the host.
pub(crate) fn score_batch(shared: &Shared, loaded: &Loaded, reqs: &[&ScoreRequest]) -> Vec<Result<ScoreResponse>> {
    match score_batch_inner(shared, loaded, reqs) {
        Ok(v) => v.into_iter().map(Ok).collect(),
        Err(e) => {
            let msg = e.to_string();
            reqs.iter().map(|_| Err(Error::Device { backend: "engine", op: "score batch", message: msg.clone() })).collect()
        }
    }
}

fn score_batch_inner(shared: &Shared, loaded: &Loaded, reqs: &[&ScoreRequest]) -> Result<Vec<ScoreResponse>> {
    let _range = crate::nvtx::range("serve: score batch");
    let be = shared.backend.as_ref();
    let m = &loaded.model;
    let c = &m.config;
    let variant = shared.cfg.variant;
    let (d, hd, sd) = (c.d_model(), c.inherent_dim(), c.small_dim);
    let n_cand: usize = reqs.iter().map(|r| r.candidates.len()).sum();
    let mut out_long = vec![0f32; n_cand * d];
    let mut out_short = vec![0f32; n_cand * d];
    let mut debug: Vec<Option<CandidateDebug>> = vec![None; n_cand];
    let cand_start: Vec<usize> = reqs
        .iter()
        .scan(0usize, |acc, r| {
            let s = *acc;
            *acc += r.candidates.len();
            Some(s)
        })
        .collect();

    // Host cross-bias table for debug attention weights, built once per batch that asks.
    let debug_cb = if reqs.iter().any(|r| r.debug) { Some(m.cross_tables()?.0) } else { None };
    // Long sequences (requests with at least one row).
    if variant.uses_long() {
        let mut q = OnlineRequests::new();
        let mut which = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            if r.long.is_empty() {
                continue;
            }
            // `validate` capped the length at max_seq_len.
            let seq = &r.long[..];
            let items: Vec<u32> = seq.iter().map(|b| b.item).collect();
            let cross: Vec<u32> = seq.iter().flat_map(|b| cross_of(b, r.request_time)).collect();
            let sizes: Vec<f32> = seq.iter().map(|b| if variant.uses_clusters() { b.size.max(1) as f32 } else { 1.0 }).collect();
            q.push(&items, &cross, &sizes, &r.candidates);
            which.push(i);
        }
        if !which.is_empty() {
            let batch = q.as_batch();
            let k = c.top_k;
            let (topk, out) = if variant == Variant::SimSoft {
                let topk = sim_soft_topk(m, &batch, k);
                let cross = be.cross_bias(&loaded.tables.cross_bias, batch.cross, loaded.tables.n_cross())?;
                let out = be.esu(&loaded.tables, &batch, &cross, &topk)?;
                (topk, out)
            } else {
                let o = be.online(&loaded.tables, &batch, k)?;
                (o.topk, o.out)
            };
            for (bi, &ri) in which.iter().enumerate() {
                for (ci, c_glob) in batch.cand_range(bi).zip(cand_start[ri]..) {
                    out_long[c_glob * d..(c_glob + 1) * d].copy_from_slice(&out[ci * d..(ci + 1) * d]);
                    if reqs[ri].debug {
                        let (idx, sc) = topk.row(ci);
                        let att = match &debug_cb {
                            Some(cb) => attention_weights(m, cb, reqs[ri], idx, batch.cands[ci], variant.uses_clusters()),
                            None => Vec::new(),
                        };
                        debug[c_glob] = Some(CandidateDebug { topk_positions: idx.to_vec(), topk_scores: sc.to_vec(), attention: att });
                    }
                }
            }
        }
    }
    // Short-term: attention over every one of the last `short_len` behaviours (no GSU, no ln n).
    if variant.uses_short() {
        let mut q = OnlineRequests::new();
        let mut which = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            if r.short.is_empty() {
                continue;
            }
            let seq = &r.short[r.short.len().saturating_sub(c.short_len)..];
            let items: Vec<u32> = seq.iter().map(|b| b.item).collect();
            let cross: Vec<u32> = seq.iter().flat_map(|b| cross_of(b, r.request_time)).collect();
            q.push(&items, &cross, &vec![1.0; items.len()], &r.candidates);
            which.push(i);
        }
        if !which.is_empty() {
            let batch = q.as_batch();
            let k = c.short_len;
            let mut topk = TopK {
                k,
                idx: vec![u32::MAX; batch.cands.len() * k],
                score: vec![f32::NEG_INFINITY; batch.cands.len() * k],
                count: vec![0; batch.cands.len()],
            };
            for r in 0..batch.n_requests() {
                let l = batch.seq_range(r).len();
                for ci in batch.cand_range(r) {
                    topk.count[ci] = l as u32;
                    for p in 0..l {
                        topk.idx[ci * k + p] = p as u32;
                        topk.score[ci * k + p] = 0.0;
                    }
                }
            }
            let cross = be.cross_bias(&loaded.tables.cross_bias, batch.cross, loaded.tables.n_cross())?;
            let out = be.esu(&loaded.tables, &batch, &cross, &topk)?;
            for (bi, &ri) in which.iter().enumerate() {
                for (ci, c_glob) in batch.cand_range(bi).zip(cand_start[ri]..) {
                    out_short[c_glob * d..(c_glob + 1) * d].copy_from_slice(&out[ci * d..(ci + 1) * d]);
                }
            }
        }
    }
    // MLP on [context, x_h(candidate), out_long, out_short].
    let all_cands: Vec<u32> = reqs.iter().flat_map(|r| r.candidates.iter().copied()).collect();
    let x = m.inherent_features_of(&all_cands)?;
    let zin = c.mlp_input();
    let ctx = &m.param_at(CONTEXT_EMB).data;
    let mut z = vec![0f32; n_cand * zin];
    for (ri, r) in reqs.iter().enumerate() {
        let hour = crate::train::examples::hour_of_day(r.request_time) as usize % c.n_context;
        for cg in cand_start[ri]..cand_start[ri] + r.candidates.len() {
            let zr = &mut z[cg * zin..(cg + 1) * zin];
            zr[..sd].copy_from_slice(&ctx[hour * sd..(hour + 1) * sd]);
            zr[sd..sd + hd].copy_from_slice(x.row(cg).as_slice().unwrap_or(&[]));
            zr[sd + hd..sd + hd + d].copy_from_slice(&out_long[cg * d..(cg + 1) * d]);
            zr[sd + hd + d..].copy_from_slice(&out_short[cg * d..(cg + 1) * d]);
        }
    }
    let widths: Vec<usize> = std::iter::once(zin).chain(c.mlp_hidden.iter().copied()).chain(std::iter::once(1)).collect();
    let mut h = z;
    for i in 0..widths.len() - 1 {
        let w = &m.param_at(MLP0 + 2 * i).data;
        let b = &m.param_at(MLP0 + 2 * i + 1).data;
        let mut y = mm(&h, n_cand, widths[i], w, widths[i + 1]);
        let last = i + 2 == widths.len();
        for row in y.chunks_mut(widths[i + 1]) {
            for (v, &bb) in row.iter_mut().zip(b) {
                *v += bb;
                if !last && *v < 0.0 {
                    *v = 0.0;
                }
            }
        }
        h = y;
    }
    let mut res = Vec::with_capacity(reqs.len());
    for (ri, r) in reqs.iter().enumerate() {
        let range = cand_start[ri]..cand_start[ri] + r.candidates.len();
        let ctr = h[range.clone()].iter().map(|&s| (1.0 / (1.0 + (-(s as f64)).exp())) as f32).collect();
        let dbg = if r.debug {
            Some(
                range
                    .map(|cg| {
                        debug[cg].clone().unwrap_or(CandidateDebug { topk_positions: vec![], topk_scores: vec![], attention: vec![] })
                    })
                    .collect(),
            )
        } else {
            None
        };
        res.push(ScoreResponse { ctr, model_version: loaded.version, debug: dbg });
    }
    Ok(res)
}

/// SIM soft search: relevance = item-embedding inner product, top-K under SPEC's tie rule.
fn sim_soft_topk(m: &Model, batch: &crate::backend::OnlineBatch<'_>, k: usize) -> TopK {
    let id = m.config.id_dim;
    let emb = m.item_embeddings();
    let n = batch.cands.len();
    let mut t = TopK { k, idx: vec![u32::MAX; n * k], score: vec![f32::NEG_INFINITY; n * k], count: vec![0; n] };
    for r in 0..batch.n_requests() {
        let seq = batch.seq_range(r);
        for ci in batch.cand_range(r) {
            let c = batch.cands[ci] as usize;
            let ec = &emb[c * id..(c + 1) * id];
            let s: Vec<f32> = batch.items[seq.clone()]
                .iter()
                .map(|&it| crate::backend::cpu::dot_f64(ec, &emb[it as usize * id..(it as usize + 1) * id]) as f32)
                .collect();
            let top = crate::backend::cpu::gsu_topk::select_topk(&s, k);
            t.count[ci] = top.len() as u32;
            for (j, (p, sc)) in top.into_iter().enumerate() {
                t.idx[ci * k + j] = p;
                t.score[ci * k + j] = sc;
            }
        }
    }
    t
}

/// Debug only: the ESU's per-head softmax weights over the finalists, on the host.
fn attention_weights(m: &Model, cb: &crate::backend::HostTable, req: &ScoreRequest, idx: &[u32], cand: u32, log_n: bool) -> Vec<f32> {
    let c = &m.config;
    let (h, d, dk) = (c.heads, c.d_model(), c.d_head);
    let rows: Vec<&Behaviour> = idx.iter().filter_map(|&p| req.long.get(p as usize)).collect();
    let items: Vec<u32> = rows.iter().map(|b| b.item).collect();
    let (Ok(xq), Ok(xk)) = (m.inherent_features_of(&[cand]), m.inherent_features_of(&items)) else { return Vec::new() };
    let (Ok(wq), Ok(wk)) = (m.param("w_q"), m.param("w_k")) else { return Vec::new() };
    let hd = c.inherent_dim();
    let q = mm(xq.as_slice().unwrap_or(&[]), 1, hd, &wq.data, d);
    let k = mm(xk.as_slice().unwrap_or(&[]), items.len(), hd, &wk.data, d);
    let mut att = vec![0f32; items.len() * h];
    for a in 0..h {
        let logits: Vec<f64> = rows
            .iter()
            .enumerate()
            .map(|(r, b)| {
                let dot: f64 = (0..dk).map(|t| q[a * dk + t] as f64 * k[r * d + a * dk + t] as f64).sum();
                let bias: f64 = cross_of(b, req.request_time).iter().map(|&row| cb.get(row as usize * h + a) as f64).sum();
                dot / (dk as f64).sqrt() + bias + if log_n { (b.size.max(1) as f64).ln() } else { 0.0 }
            })
            .collect();
        let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
        for (r, l) in logits.iter().enumerate() {
            att[r * h + a] = ((l - mx).exp() / z) as f32;
        }
    }
    att
}
