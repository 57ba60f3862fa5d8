//! The training loop: epochs over a time split, evaluation after every epoch, an atomic
//! checkpoint after every epoch, and exact resume.
//!
//! On a GPU backend the steps run device-resident (`device_step`); parameters and optimizer
//! state come back after each epoch, so evaluation, checkpoints and resume are unchanged.
//!
//! Determinism: epoch `e` visits the training samples in a shuffle seeded by
//! `derive_seed(seed, [e])`; a step's gradients are computed with fixed-order reductions and
//! applied elementwise. A run resumed from the checkpoint of epoch `e` therefore produces the
//! same parameters, bit for bit, as the uninterrupted run (tested).

use std::path::Path;
use std::time::Instant;

use super::device_step::DeviceTrainer;
use super::optim::{OptimConfig, Optimizer};
use super::step::{self, CpuOps, Weights};
use super::{metrics, Examples, Metrics, Variant};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::fileio::{self, Reader, Writer};
use crate::model::Model;
use crate::rng::{derive_seed, SplitMix64};

pub const CHECKPOINT_MAGIC: &[u8; 8] = b"TWINCKPT";
/// Version 2 adds the catalogue fingerprint; version 1 files still load (without one).
pub const CHECKPOINT_VERSION: u32 = 2;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub variant: Variant,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub optim: OptimConfig,
}

impl TrainConfig {
    /// Refuse what would panic or train nonsense: a zero batch, non-finite or non-positive rates.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::InvalidValue { field: "batch_size", index: 0, value: 0.0, why: "must be at least 1" });
        }
        let o = &self.optim;
        for (field, v) in [("lr", o.lr), ("lr_emb", o.lr_emb), ("eps", o.eps), ("adagrad_init", o.adagrad_init)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::InvalidValue { field, index: 0, value: v as f64, why: "must be finite and positive" });
            }
        }
        for (field, v) in [("beta1", o.beta1), ("beta2", o.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::InvalidValue { field, index: 0, value: v as f64, why: "must be in [0, 1)" });
            }
        }
        Ok(())
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig { variant: Variant::Twin, epochs: 2, batch_size: 256, seed: 0, optim: OptimConfig::default() }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub test: Metrics,
    pub train_samples_per_s: f64,
    pub train_seconds: f64,
    /// Mean GSU input length per training sample (0 for variants without a GSU).
    pub gsu_len: f64,
}

/// Everything a checkpoint holds: resuming from it continues the run exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    pub cfg: TrainConfig,
    pub model: Model,
    pub optim: Optimizer,
    /// Epochs completed.
    pub epoch: usize,
    /// Loss of every step so far.
    pub step_losses: Vec<f32>,
    pub reports: Vec<EpochReport>,
    /// `Items::fingerprint` of the dataset trained on, when known (checkpoints since version 2).
    pub catalogue: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TrainReport {
    pub variant: Variant,
    pub epochs: Vec<EpochReport>,
    pub step_losses: Vec<f32>,
}

/// What the loop reports while it runs (for progress bars).
pub enum Progress {
    Step { epoch: usize, step: usize, steps: usize, loss: f64 },
    Eval { epoch: usize, done: usize, total: usize },
}

impl TrainState {
    pub fn new(model: Model, cfg: TrainConfig) -> Result<TrainState> {
        cfg.validate()?;
        let optim = Optimizer::new(&model, cfg.optim);
        Ok(TrainState { cfg, model, optim, epoch: 0, step_losses: Vec::new(), reports: Vec::new(), catalogue: None })
    }

    /// Atomic write (temp file, fsync, rename): a crash mid-save leaves the previous file.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.model.validate()?;
        let mut w = Writer::new();
        w.str(&serde_json::to_string(&self.cfg).unwrap_or_default());
        w.u64(self.epoch as u64);
        w.f32s(&self.step_losses);
        w.str(&serde_json::to_string(&self.reports).unwrap_or_default());
        w.u8s(&self.model.encode()?);
        self.optim.encode(&mut w);
        w.u8(self.catalogue.is_some() as u8);
        w.u64(self.catalogue.unwrap_or(0));
        fileio::save(path, CHECKPOINT_MAGIC, CHECKPOINT_VERSION, &w.buf)
    }

    pub fn load(path: &Path) -> Result<TrainState> {
        let (version, payload) = fileio::load(path, CHECKPOINT_MAGIC, CHECKPOINT_VERSION)?;
        let mut r = Reader::new(&payload, path);
        let cfg: TrainConfig =
            serde_json::from_str(&r.str("train config")?).map_err(|e| Error::corrupt(path, format!("train config: {e}")))?;
        let epoch = r.u64("epoch")? as usize;
        let step_losses = r.f32s("step losses")?;
        let reports: Vec<EpochReport> =
            serde_json::from_str(&r.str("epoch reports")?).map_err(|e| Error::corrupt(path, format!("epoch reports: {e}")))?;
        let model_bytes = r.u8s("model")?;
        let model = Model::decode(&model_bytes, path)?;
        let optim = Optimizer::decode(&mut r, &model)?;
        let catalogue = match version {
            1 => None,
            _ => {
                let known = r.u8("catalogue flag")? != 0;
                let fp = r.u64("catalogue fingerprint")?;
                known.then_some(fp)
            }
        };
        r.finish()?;
        // A checksum only says the bytes are as written; the values must still make sense.
        cfg.validate().map_err(|e| Error::corrupt(path, format!("train config: {e}")))?;
        Ok(TrainState { cfg, model, optim, epoch, step_losses, reports, catalogue })
    }

    /// Tie this state to the dataset it trains on: the model's item count must match, and a
    /// state that already records a catalogue (a checkpoint) must record this one.
    pub fn bind_catalogue(&mut self, items: &crate::data::Items) -> Result<()> {
        if self.model.n_items() != items.len() {
            return Err(Error::Incompatible {
                what: "model",
                why: format!("it has {} items but the dataset has {}", self.model.n_items(), items.len()),
            });
        }
        let fp = items.fingerprint();
        match self.catalogue {
            Some(c) if c != fp => Err(Error::Incompatible {
                what: "checkpoint",
                why: format!("it was trained on another catalogue (fingerprint {c:016x}, this dataset's is {fp:016x})"),
            }),
            _ => {
                self.catalogue = Some(fp);
                Ok(())
            }
        }
    }

    pub fn report(&self) -> TrainReport {
        TrainReport { variant: self.cfg.variant, epochs: self.reports.clone(), step_losses: self.step_losses.clone() }
    }
}

/// Fisher-Yates shuffle of the training samples for `epoch`.
fn epoch_order(train: &[u32], seed: u64, epoch: usize) -> Vec<u32> {
    let mut v = train.to_vec();
    let mut rng = SplitMix64::new(derive_seed(seed, &[0x7472_6169_6e, epoch as u64]));
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// One host step's forward (+ backward): the CPU reference kernels. (A GPU runs `DeviceTrainer`.)
fn run_step(model: &Model, variant: Variant, b: &super::Batch, grad: bool) -> Result<step::StepOut<f32>> {
    step::step(&CpuOps, &Weights::of(model), variant, b, grad)
}

/// Predictions and metrics of `model` on `samples`. Returns the metrics and the mean GSU input
/// length. On a GPU backend the forward pass is device-resident (`DeviceTrainer::predict`).
pub fn evaluate(
    backend: Option<&dyn Backend>,
    model: &Model,
    ex: &Examples<'_>,
    samples: &[u32],
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Metrics, f64)> {
    if let Some(be) = backend.filter(|b| b.kind() != crate::backend::BackendKind::Cpu) {
        // On a GPU the forward pass runs device-resident: the parameters go up once.
        let mut tr = DeviceTrainer::new(be, model, ex.variant, OptimConfig::default())?;
        return evaluate_on_device(&mut tr, be, ex, samples, batch_size, progress);
    }
    let mut prob = Vec::with_capacity(samples.len());
    let (mut labels, mut users) = (Vec::with_capacity(samples.len()), Vec::with_capacity(samples.len()));
    let mut gsu_rows = 0usize;
    for chunk in samples.chunks(batch_size.max(1)) {
        let b = ex.batch(chunk)?;
        let out = run_step(model, ex.variant, &b, false)?;
        gsu_rows += out.gsu_rows;
        prob.extend_from_slice(&out.prob);
        labels.extend_from_slice(&b.label);
        users.extend_from_slice(&b.user);
        progress(prob.len(), samples.len());
    }
    Ok((metrics::evaluate(&prob, &labels, &users), gsu_rows as f64 / samples.len().max(1) as f64))
}

/// [`evaluate`] through a device trainer's forward pass (one upload and one download a batch).
fn evaluate_on_device(
    tr: &mut DeviceTrainer,
    be: &dyn Backend,
    ex: &Examples<'_>,
    samples: &[u32],
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Metrics, f64)> {
    let mut prob = Vec::with_capacity(samples.len());
    let (mut labels, mut users) = (Vec::with_capacity(samples.len()), Vec::with_capacity(samples.len()));
    let mut gsu_rows = 0usize;
    for chunk in samples.chunks(batch_size.max(1)) {
        let b = ex.batch(chunk)?;
        prob.extend(tr.predict(be, &b)?.1);
        if ex.variant.uses_long() {
            gsu_rows += b.long_item.len();
        }
        labels.extend_from_slice(&b.label);
        users.extend_from_slice(&b.user);
        progress(prob.len(), samples.len());
    }
    Ok((metrics::evaluate(&prob, &labels, &users), gsu_rows as f64 / samples.len().max(1) as f64))
}

/// Train `state` until `state.cfg.epochs` epochs are done, evaluating on `test` and writing
/// `checkpoint` after each epoch. A state loaded from a checkpoint continues where it stopped.
pub fn train(
    state: &mut TrainState,
    backend: Option<&dyn Backend>,
    train_ex: &Examples<'_>,
    train: &[u32],
    test_ex: &Examples<'_>,
    test: &[u32],
    checkpoint: Option<&Path>,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainReport> {
    if train.is_empty() {
        return Err(Error::Empty { field: "training samples", index: 0 });
    }
    if train_ex.variant != state.cfg.variant || test_ex.variant != state.cfg.variant {
        return Err(Error::InvalidValue { field: "variant", index: 0, value: 0.0, why: "examples and train config disagree" });
    }
    let bs = state.cfg.batch_size;
    // On a GPU the step is device-resident (one upload, one download a step); parameters and
    // optimizer state come back once an epoch for evaluation and the checkpoint.
    let device = match backend {
        Some(be) if be.kind() != crate::backend::BackendKind::Cpu => Some(be),
        _ => None,
    };
    while state.epoch < state.cfg.epochs {
        let epoch = state.epoch;
        let order = epoch_order(train, state.cfg.seed, epoch);
        let steps = order.len().div_ceil(bs);
        let t0 = Instant::now();
        let (mut loss_sum, mut gsu_rows) = (0f64, 0usize);
        let mut trainer = match device {
            Some(be) => Some(DeviceTrainer::resume(be, &state.model, state.cfg.variant, &state.optim)?),
            None => None,
        };
        for (si, chunk) in order.chunks(bs).enumerate() {
            let b = train_ex.batch(chunk)?;
            let (loss, rows) = match (&mut trainer, device) {
                (Some(tr), Some(be)) => {
                    let rows = if state.cfg.variant.uses_long() { b.long_item.len() } else { 0 };
                    (tr.step(be, &b)?, rows)
                }
                _ => {
                    let out = run_step(&state.model, state.cfg.variant, &b, true)?;
                    let grads = out.grads.ok_or(Error::Empty { field: "gradients", index: si })?;
                    state.optim.update(&mut state.model, &grads)?;
                    (out.loss, out.gsu_rows)
                }
            };
            loss_sum += loss * chunk.len() as f64;
            gsu_rows += rows;
            state.step_losses.push(loss as f32);
            progress(Progress::Step { epoch, step: si + 1, steps, loss });
        }
        let secs = t0.elapsed().as_secs_f64();
        let mut eval_progress = |done, total| progress(Progress::Eval { epoch, done, total });
        let test_m = match (&mut trainer, device) {
            (Some(tr), Some(be)) => {
                // Evaluate on the device with the parameters still there, then bring them back.
                let (m, _) = evaluate_on_device(tr, be, test_ex, test, bs.max(256), &mut eval_progress)?;
                tr.sync_into(be, &mut state.model, &mut state.optim)?;
                m
            }
            _ => evaluate(backend, &state.model, test_ex, test, bs.max(256), &mut eval_progress)?.0,
        };
        // A diverged model is an error, not a checkpoint.
        state.model.validate()?;
        state.reports.push(EpochReport {
            epoch: epoch + 1,
            train_loss: loss_sum / order.len() as f64,
            test: test_m,
            train_samples_per_s: order.len() as f64 / secs.max(1e-9),
            train_seconds: secs,
            gsu_len: gsu_rows as f64 / order.len() as f64,
        });
        state.epoch += 1;
        if let Some(p) = checkpoint {
            state.save(p)?;
        }
    }
    Ok(state.report())
}
