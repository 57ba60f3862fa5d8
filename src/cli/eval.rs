//! `twin eval`: a trained model on the test part of the time split: AUC, GAUC, logloss as JSON.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::json;

use twin_engine::data::Dataset;
use twin_engine::model::Model;
use twin_engine::train::trainer;
use twin_engine::train::{Examples, Split, Variant};

use super::train::{bar, load_clusters_checked, open_backend, TrainOpts};

/// `twin eval`: evaluate a trained model on the test part of the time split.
#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, value_enum, default_value_t = Variant::Twin)]
    pub variant: Variant,
    /// twin-v2: the clusters it was trained with (built before the split).
    #[arg(long)]
    pub clusters: Option<PathBuf>,
    #[command(flatten)]
    pub opts: TrainOpts,
}

impl EvalArgs {
    pub fn run(self) -> Result<()> {
        if self.clusters.is_some() && !self.variant.uses_clusters() {
            bail!("--clusters is only read by --variant twin-v2, not {}", self.variant);
        }
        let ds = super::load_data(&self.data)?;
        eval(&ds, self.variant, &self.model, self.clusters.as_deref(), &self.opts)
    }
}

fn eval(ds: &Dataset, variant: Variant, model: &Path, clusters: Option<&Path>, o: &TrainOpts) -> Result<()> {
    let split = Split::by_time(ds, o.test_fraction)?;
    let model = Model::load(model)?;
    if model.n_items() != ds.items.len() {
        bail!("model n_items = {} does not match the dataset's {} items", model.n_items(), ds.items.len());
    }
    let (be, note) = open_backend(o.backend)?;
    let cs = match (variant.uses_clusters(), clusters) {
        (true, Some(p)) => Some(load_clusters_checked(p, &split, ds, &model)?),
        (true, None) => bail!("--variant twin-v2 needs --clusters (twin cluster --cutoff {})", split.time),
        _ => None,
    };
    let ex = Examples::new(ds, variant, cs.as_ref(), o.max_long, model.config.short_len)?;
    let pb = bar(split.test.len() as u64, format!("{variant} eval"));
    let t0 = Instant::now();
    let (m, gsu) = trainer::evaluate(Some(be.as_ref()), &model, &ex, &split.test, o.batch.max(256), &mut |d, _| pb.set_position(d as u64))?;
    pb.finish_and_clear();
    let doc = json!({
        "variant": variant.name(), "backend": be.describe(), "backend_note": note, "split_time": split.time,
        "test_samples": m.samples, "auc": m.auc, "gauc": m.gauc, "gauc_users": m.gauc_users, "logloss": m.logloss,
        "gsu_input_length": gsu, "seconds": t0.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
