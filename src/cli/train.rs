//! `twin train`: one model variant on a time split, with checkpoints; and what `eval` and `demo`
//! share with it (the training options, the progress bars, clusters for a split).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use twin_engine::backend::{self, Backend, BackendChoice, BackendKind};
use twin_engine::cluster::{self, ClusterConfig, ClusterSet};
use twin_engine::data::Dataset;
use twin_engine::fileio;
use twin_engine::model::{Model, ModelConfig};
use twin_engine::train::optim::OptimConfig;
use twin_engine::train::trainer::{self, Progress, TrainReport, TrainState};
use twin_engine::train::{Examples, Split, TrainConfig, Variant};

/// Options shared by train, eval and demo.
#[derive(clap::Args, Clone, Debug)]
pub struct TrainOpts {
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Adam learning rate (dense parameters).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Adagrad learning rate (embedding rows).
    #[arg(long, default_value_t = 0.05)]
    pub lr_emb: f32,
    /// The newest fraction of samples (by request time) is the test set.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Most recent raw behaviours fed to the GSU (TWIN) or clusters (TWIN-V2).
    #[arg(long, default_value_t = 10_000)]
    pub max_long: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
}

pub fn open_backend(choice: BackendChoice) -> Result<(std::sync::Arc<dyn Backend>, String)> {
    Ok(backend::open(choice)?)
}

/// Where each part of a training step runs, in words.
pub fn placement(be: &dyn Backend) -> String {
    if be.kind() == BackendKind::Cpu {
        "CPU reference (all of forward and backward)".into()
    } else {
        format!(
            "device-resident on {}: parameters, optimizer state and activations stay there; a step uploads the batch once and downloads the loss once",
            be.describe()
        )
    }
}

pub fn bar(len: u64, prefix: String) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>22} [{bar:32}] {pos}/{len} {msg} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_prefix(prefix);
    b
}

/// Clusters of every user from behaviours before `cutoff`, on the item embeddings of `model`.
pub fn cluster_for_split(be: &dyn Backend, ds: &Dataset, model: &Model, cutoff: i64, seed: u64) -> Result<ClusterSet> {
    let users: Vec<u32> = (0..ds.n_users() as u32).collect();
    let cfg = ClusterConfig { seed, ..ClusterConfig::default() };
    let pb = bar(0, "clustering".into());
    let (set, _) =
        cluster::cluster_users(be, ds, &users, Some(cutoff), model.item_embeddings(), model.config.id_dim, &cfg, &mut |d, t| {
            pb.set_length(t as u64);
            pb.set_position(d as u64);
        })?;
    pb.finish_and_clear();
    set.verify(ds).context("cluster invariants")?;
    Ok(set)
}

/// Train one variant from `state`, with progress bars; returns the report.
#[allow(clippy::too_many_arguments)]
pub fn run_training(
    state: &mut TrainState,
    be: &dyn Backend,
    ds: &Dataset,
    split: &Split,
    clusters: Option<&ClusterSet>,
    max_long: usize,
    checkpoint: Option<&Path>,
) -> Result<TrainReport> {
    let v = state.cfg.variant;
    let ex = Examples::new(ds, v, clusters, max_long, state.model.config.short_len)?;
    let pb = bar(0, format!("{v} epoch 1"));
    let report = trainer::train(state, Some(be), &ex, &split.train, &ex, &split.test, checkpoint, &mut |p| match p {
        Progress::Step { epoch, step, steps, loss } => {
            pb.set_prefix(format!("{v} epoch {}", epoch + 1));
            pb.set_length(steps as u64);
            pb.set_position(step as u64);
            pb.set_message(format!("loss {loss:.4}"));
        }
        Progress::Eval { epoch, done, total } => {
            pb.set_prefix(format!("{v} eval {}", epoch + 1));
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        }
    })?;
    pb.finish_and_clear();
    Ok(report)
}

/// Refuse, before any work, the outputs that would destroy an input or an earlier run, or that
/// could not be written at the end: `--out` or `--checkpoint` naming the data, the clusters or
/// each other; an existing checkpoint without `--resume`; a folder that does not take files.
fn check_outputs(
    data: &Path,
    init: Option<&Path>,
    clusters: Option<&Path>,
    out: &Path,
    checkpoint: Option<&Path>,
    resume: bool,
) -> Result<()> {
    let mut inputs: Vec<(&str, &Path)> = vec![("--data", data)];
    inputs.extend(clusters.map(|c| ("--clusters", c)));
    let mut outputs: Vec<(&str, &Path)> = vec![("--out", out)];
    outputs.extend(checkpoint.map(|c| ("--checkpoint", c)));
    for (oflag, o) in &outputs {
        for (iflag, i) in &inputs {
            if fileio::same_file(o, i) {
                bail!("{oflag} {} is the {iflag} file: training would overwrite it; choose another {oflag}", o.display());
            }
        }
    }
    if let Some(ck) = checkpoint {
        if fileio::same_file(ck, out) {
            bail!(
                "--checkpoint and --out are the same file ({}): the model would replace the checkpoint; give them different paths",
                ck.display()
            );
        }
        if init.is_some_and(|i| fileio::same_file(ck, i)) {
            bail!("--checkpoint {} is the --init model; give the checkpoint its own path", ck.display());
        }
        if ck.exists() && !resume {
            bail!("--checkpoint {} exists: pass --resume to continue from it, or remove it to start over", ck.display());
        }
    }
    for (flag, p) in &outputs {
        fileio::check_writable(flag, p)?;
    }
    Ok(())
}

/// Clusters from `path`, refused if built from another dataset or catalogue than `ds` and
/// `model`'s, or from history past the split.
pub fn load_clusters_checked(path: &Path, split: &Split, ds: &Dataset, model: &Model) -> Result<ClusterSet> {
    let cs = ClusterSet::load(path)?;
    cs.check_source(ds, model).with_context(|| format!("--clusters {}", path.display()))?;
    if cs.cutoff > split.time {
        let built = if cs.cutoff == i64::MAX { "with no cutoff".to_string() } else { format!("up to time {}", cs.cutoff) };
        bail!(
            "{}: clusters were built {built} but the split is at {}: twin-v2 clusters must come from history before the split (twin cluster --cutoff {})",
            path.display(),
            split.time,
            split.time
        );
    }
    Ok(cs)
}

/// `twin train`: train one model variant on a time split (earlier samples train, the newest
/// test), evaluating and checkpointing after every epoch.
#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, value_enum, default_value_t = Variant::Twin)]
    pub variant: Variant,
    /// Start from this model instead of a fresh one (seeded by --seed).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// twin-v2: clusters built before the split (twin cluster --cutoff <split time>);
    /// without it they are built here.
    #[arg(long)]
    pub clusters: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    /// Written atomically after every epoch.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue from --checkpoint (same result as an uninterrupted run).
    #[arg(long, requires = "checkpoint")]
    pub resume: bool,
    #[command(flatten)]
    pub opts: TrainOpts,
    #[arg(long)]
    pub json: bool,
}

impl TrainArgs {
    pub fn run(self) -> Result<()> {
        if self.clusters.is_some() && !self.variant.uses_clusters() {
            bail!("--clusters is only read by --variant twin-v2, not {}", self.variant);
        }
        let ds = super::load_data(&self.data)?;
        let (init, clusters, checkpoint) = (self.init.as_deref(), self.clusters.as_deref(), self.checkpoint.as_deref());
        train(&self.data, &ds, self.variant, init, clusters, &self.out, checkpoint, self.resume, &self.opts, self.json)
    }
}

#[allow(clippy::too_many_arguments)]
fn train(
    data_path: &Path,
    ds: &Dataset,
    variant: Variant,
    init: Option<&Path>,
    clusters: Option<&Path>,
    out: &Path,
    checkpoint: Option<&Path>,
    resume: bool,
    o: &TrainOpts,
    as_json: bool,
) -> Result<()> {
    check_outputs(data_path, init, clusters, out, checkpoint, resume)?;
    let split = Split::by_time(ds, o.test_fraction)?;
    let (be, note) = open_backend(o.backend)?;
    eprintln!("backend: {} ({note}); training step: {}", be.describe(), placement(be.as_ref()));
    eprintln!("note: split at t = {}: {} training samples, {} test samples", split.time, split.train.len(), split.test.len());
    let mut state = match (resume, checkpoint) {
        (true, Some(ck)) if ck.exists() => {
            let s = TrainState::load(ck)?;
            if s.cfg.variant != variant {
                bail!("--resume: checkpoint {} is for variant {}, not {variant}", ck.display(), s.cfg.variant);
            }
            eprintln!("note: resuming from {} after epoch {}", ck.display(), s.epoch);
            let mut s = s;
            s.cfg.epochs = o.epochs;
            s
        }
        (true, _) => bail!("--resume needs --checkpoint naming an existing checkpoint"),
        _ => {
            let model = match init {
                Some(p) => Model::load(p)?,
                None => Model::init(ModelConfig::for_items(&ds.items), &ds.items, o.seed)?,
            };
            let optim = OptimConfig { lr: o.lr, lr_emb: o.lr_emb, ..OptimConfig::default() };
            TrainState::new(model, TrainConfig { variant, epochs: o.epochs, batch_size: o.batch, seed: o.seed, optim })?
        }
    };
    state.bind_catalogue(&ds.items).with_context(|| format!("--data {}", data_path.display()))?;
    let cs = match (variant.uses_clusters(), clusters) {
        (true, Some(p)) => Some(load_clusters_checked(p, &split, ds, &state.model)?),
        (true, None) => {
            eprintln!("note: no --clusters given; clustering history before the split on this model's item embeddings");
            Some(cluster_for_split(be.as_ref(), ds, &state.model, split.time, o.seed)?)
        }
        (false, _) => None,
    };
    let report = run_training(&mut state, be.as_ref(), ds, &split, cs.as_ref(), o.max_long, checkpoint)?;
    state.model.save(out)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for e in &report.epochs {
            println!(
                "epoch {}: train loss {:.4} | test AUC {:.4} GAUC {:.4} logloss {:.4} | {:.0} samples/s, GSU input {:.0}",
                e.epoch, e.train_loss, e.test.auc, e.test.gauc, e.test.logloss, e.train_samples_per_s, e.gsu_len
            );
        }
        println!("wrote {}", out.display());
    }
    Ok(())
}
