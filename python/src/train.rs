//! `train` and `evaluate` over a dataset, as `twin train` / `twin eval` do (same split, same
//! defaults), returning their reports as JSON text (the Python layer parses it).

use std::path::PathBuf;

use pyo3::prelude::*;
use serde_json::json;
use twin_engine::backend::{self, Backend};
use twin_engine::cluster::{cluster_users, ClusterConfig, ClusterSet};
use twin_engine::data::Dataset;
use twin_engine::model::{Model, ModelConfig};
use twin_engine::train::optim::OptimConfig;
use twin_engine::train::trainer::{self, TrainState};
use twin_engine::train::{Examples, Split, TrainConfig};
use twin_engine::{Error, Result};

use crate::data::PyDataset;
use crate::errors::py_err;
use crate::{parse_backend, parse_variant};

/// Clusters from `path`, refused if built from another dataset or catalogue, or past the split (they would leak the test period); or,
/// without a path, the history before the split clustered on `model`'s item embeddings.
fn clusters_for(be: &dyn Backend, ds: &Dataset, path: Option<&PathBuf>, split: &Split, model: &Model, seed: u64) -> Result<ClusterSet> {
    match path {
        Some(p) => {
            let cs = ClusterSet::load(p)?;
            cs.check_source(ds, model)?;
            if cs.cutoff > split.time {
                return Err(Error::Incompatible {
                    what: "clusters",
                    why: format!(
                        "{} was built up to time {} but the split is at {}: build them with cutoff = {}",
                        p.display(),
                        cs.cutoff,
                        split.time,
                        split.time
                    ),
                });
            }
            Ok(cs)
        }
        None => {
            let users: Vec<u32> = (0..ds.n_users() as u32).collect();
            let cfg = ClusterConfig { seed, ..ClusterConfig::default() };
            let (cs, _) =
                cluster_users(be, ds, &users, Some(split.time), model.item_embeddings(), model.config.id_dim, &cfg, &mut |_, _| {})?;
            Ok(cs)
        }
    }
}

#[pyfunction]
#[pyo3(signature = (dataset, out, variant = "twin", epochs = 4, batch = 128, lr = 1e-3, lr_emb = 0.05, test_fraction = 0.2,
                    max_long = 10_000, seed = 1, backend = "auto", init = None, clusters = None, checkpoint = None, resume = false))]
#[allow(clippy::too_many_arguments)]
pub fn train(
    py: Python<'_>,
    dataset: PyRef<'_, PyDataset>,
    out: PathBuf,
    variant: &str,
    epochs: usize,
    batch: usize,
    lr: f32,
    lr_emb: f32,
    test_fraction: f64,
    max_long: usize,
    seed: u64,
    backend: &str,
    init: Option<PathBuf>,
    clusters: Option<PathBuf>,
    checkpoint: Option<PathBuf>,
    resume: bool,
) -> PyResult<String> {
    let (variant, choice) = (parse_variant(py, variant)?, parse_backend(py, backend)?);
    let ds = dataset.inner.clone();
    let r = py.detach(|| {
        if let Some(ck) = checkpoint.as_ref().filter(|ck| ck.exists() && !resume) {
            return Err(Error::Incompatible {
                what: "checkpoint",
                why: format!("{} exists: pass resume=True to continue from it, or remove it", ck.display()),
            });
        }
        let split = Split::by_time(&ds, test_fraction)?;
        let (be, note) = backend::open(choice)?;
        let mut state = match (resume, &checkpoint) {
            (true, Some(ck)) if ck.exists() => {
                let mut s = TrainState::load(ck)?;
                if s.cfg.variant != variant {
                    return Err(Error::Incompatible {
                        what: "checkpoint",
                        why: format!("{} is for variant {}, not {variant}", ck.display(), s.cfg.variant),
                    });
                }
                s.cfg.epochs = epochs;
                s
            }
            (true, _) => return Err(Error::Incompatible { what: "resume", why: "needs checkpoint naming an existing checkpoint".into() }),
            _ => {
                let model = match &init {
                    Some(p) => Model::load(p)?,
                    None => Model::init(ModelConfig::for_items(&ds.items), &ds.items, seed)?,
                };
                let optim = OptimConfig { lr, lr_emb, ..OptimConfig::default() };
                TrainState::new(model, TrainConfig { variant, epochs, batch_size: batch, seed, optim })?
            }
        };
        state.bind_catalogue(&ds.items)?;
        let cs = if variant.uses_clusters() {
            Some(clusters_for(be.as_ref(), &ds, clusters.as_ref(), &split, &state.model, seed)?)
        } else {
            None
        };
        let ex = Examples::new(&ds, variant, cs.as_ref(), max_long, state.model.config.short_len)?;
        let report =
            trainer::train(&mut state, Some(be.as_ref()), &ex, &split.train, &ex, &split.test, checkpoint.as_deref(), &mut |_| {})?;
        state.model.save(&out)?;
        let doc = json!({
            "variant": variant.name(), "backend": be.describe(), "backend_note": note, "split_time": split.time,
            "train_samples": split.train.len(), "test_samples": split.test.len(), "epochs": report.epochs,
            "step_losses": report.step_losses, "out": out.display().to_string(),
        });
        Ok(doc.to_string())
    });
    r.map_err(py_err(py))
}

#[pyfunction]
#[pyo3(signature = (dataset, model, variant = "twin", clusters = None, test_fraction = 0.2, max_long = 10_000, batch = 256, backend = "auto"))]
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    py: Python<'_>,
    dataset: PyRef<'_, PyDataset>,
    model: PathBuf,
    variant: &str,
    clusters: Option<PathBuf>,
    test_fraction: f64,
    max_long: usize,
    batch: usize,
    backend: &str,
) -> PyResult<String> {
    let (variant, choice) = (parse_variant(py, variant)?, parse_backend(py, backend)?);
    let ds = dataset.inner.clone();
    let r = py.detach(|| {
        let split = Split::by_time(&ds, test_fraction)?;
        let m = Model::load(&model)?;
        if m.n_items() != ds.items.len() {
            return Err(Error::Incompatible {
                what: "model",
                why: format!("it has {} items but the dataset has {}", m.n_items(), ds.items.len()),
            });
        }
        let (be, note) = backend::open(choice)?;
        let cs = match (variant.uses_clusters(), &clusters) {
            (true, Some(_)) => Some(clusters_for(be.as_ref(), &ds, clusters.as_ref(), &split, &m, 0)?),
            (true, None) => {
                return Err(Error::Incompatible {
                    what: "variant twin-v2",
                    why: format!("needs clusters built with cutoff = {}", split.time),
                })
            }
            _ => None,
        };
        let ex = Examples::new(&ds, variant, cs.as_ref(), max_long, m.config.short_len)?;
        let t0 = std::time::Instant::now();
        let (mt, gsu) = trainer::evaluate(Some(be.as_ref()), &m, &ex, &split.test, batch.max(1), &mut |_, _| {})?;
        let doc = json!({
            "variant": variant.name(), "backend": be.describe(), "backend_note": note, "split_time": split.time,
            "test_samples": mt.samples, "auc": mt.auc, "gauc": mt.gauc, "gauc_users": mt.gauc_users, "logloss": mt.logloss,
            "gsu_input_length": gsu, "seconds": t0.elapsed().as_secs_f64(),
        });
        Ok(doc.to_string())
    });
    r.map_err(py_err(py))
}
