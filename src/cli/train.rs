//! `twin train`, `twin eval` and `twin demo`: the training side of the command line.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use twin_engine::backend::{self, Backend, BackendKind};
use twin_engine::cluster::{self, ClusterConfig, ClusterSet};
use twin_engine::data::{self, Dataset, SynthConfig};
use twin_engine::fileio;
use twin_engine::model::{Model, ModelConfig};
use crate::plot;
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
    #[arg(long, default_value = "auto")]
    pub backend: String,
}

pub fn open_backend(name: &str) -> Result<(std::sync::Arc<dyn Backend>, String)> {
    let choice = name.parse().map_err(|_| anyhow::anyhow!("--backend = {name:?}: expected cpu, cpu-ref, cuda, wgpu or auto"))?;
    Ok(backend::open(choice)?)
}

/// Where each part of a training step runs, in words.
fn placement(be: &dyn Backend) -> String {
    if be.kind() == BackendKind::Cpu {
        "CPU reference (all of forward and backward)".into()
    } else {
        format!(
            "device-resident on {}: parameters, optimizer state and activations stay there; a step uploads the batch once and downloads the loss once",
            be.describe()
        )
    }
}

fn bar(len: u64, prefix: String) -> indicatif::ProgressBar {
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
fn run_training(
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

fn load_clusters_checked(path: &Path, split: &Split) -> Result<ClusterSet> {
    let cs = ClusterSet::load(path)?;
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

#[allow(clippy::too_many_arguments)]
pub fn cmd_train(
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
    let (be, note) = open_backend(&o.backend)?;
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
        (true, Some(p)) => Some(load_clusters_checked(p, &split)?),
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

pub fn cmd_eval(ds: &Dataset, variant: Variant, model: &Path, clusters: Option<&Path>, o: &TrainOpts) -> Result<()> {
    let split = Split::by_time(ds, o.test_fraction)?;
    let model = Model::load(model)?;
    if model.n_items() != ds.items.len() {
        bail!("model n_items = {} does not match the dataset's {} items", model.n_items(), ds.items.len());
    }
    let (be, note) = open_backend(&o.backend)?;
    let cs = match (variant.uses_clusters(), clusters) {
        (true, Some(p)) => Some(load_clusters_checked(p, &split)?),
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

/// The default demo data: long-sequence synthetic users sized to finish in minutes on 2 CPU cores.
pub fn demo_synth(users: usize, seed: u64) -> SynthConfig {
    SynthConfig {
        n_users: users,
        n_items: 20_000,
        n_authors: 2_000,
        n_topics: 64,
        min_len: 200,
        max_len: 5_000,
        fixed_len: None,
        pareto_alpha: 1.2,
        samples_per_user: 20,
        seed,
        lifelong: false,
    }
}

#[derive(serde::Serialize)]
struct Row {
    variant: String,
    auc: f64,
    gauc: f64,
    logloss: f64,
    train_samples_per_s: f64,
    gsu_input_length: f64,
    train_seconds: f64,
    epochs: Vec<trainer::EpochReport>,
}

#[allow(clippy::too_many_arguments)]
pub fn cmd_demo(data: Option<&Path>, users: usize, variants: &[Variant], out_dir: &Path, o: &TrainOpts) -> Result<()> {
    let t_all = Instant::now();
    std::fs::create_dir_all(out_dir).with_context(|| format!("{}", out_dir.display()))?;
    let (be, note) = open_backend(&o.backend)?;
    println!("backend: {} ({note})", be.describe());
    println!("training step: {}", placement(be.as_ref()));
    let ds = match data {
        Some(p) => super::load_data(p)?,
        None => {
            let pb = bar(0, "generating".into());
            pb.set_message(format!("{users} synthetic users"));
            let ds = data::generate(&demo_synth(users, o.seed))?;
            pb.finish_and_clear();
            ds
        }
    };
    let split = Split::by_time(&ds, o.test_fraction)?;
    let lens: Vec<usize> = (0..ds.n_users()).map(|u| ds.user_range(u).len()).collect();
    println!(
        "data: {} ({} users, {} items, {} behaviours, mean sequence {:.0}, max {}); split at t = {}: {} train / {} test samples",
        ds.source,
        ds.n_users(),
        ds.items.len(),
        ds.behaviours.len(),
        ds.behaviours.len() as f64 / ds.n_users().max(1) as f64,
        lens.iter().max().copied().unwrap_or(0),
        split.time,
        split.train.len(),
        split.test.len()
    );
    let optim = OptimConfig { lr: o.lr, lr_emb: o.lr_emb, ..OptimConfig::default() };
    let init = Model::init(ModelConfig::for_items(&ds.items), &ds.items, o.seed)?;
    let mut rows: Vec<Row> = Vec::new();
    let mut reports: Vec<TrainReport> = Vec::new();
    let mut trained_twin: Option<Model> = None;
    let mut order: Vec<Variant> = variants.to_vec();
    // twin-v2 clusters on the trained twin's item embeddings, so it runs after twin when both are asked for.
    order.sort_by_key(|v| matches!(v, Variant::TwinV2));
    for v in order {
        let clusters = if v.uses_clusters() {
            let emb_model = trained_twin.as_ref().unwrap_or(&init);
            let src = if trained_twin.is_some() { "the trained twin model's" } else { "the initial model's" };
            let t0 = Instant::now();
            let cs = cluster_for_split(be.as_ref(), &ds, emb_model, split.time, o.seed)?;
            println!(
                "clusters for twin-v2: {} clusters from {} behaviours before the split ({:.1}x), on {src} item embeddings, {:.1} s",
                cs.n_clusters(),
                cs.size.iter().map(|&n| n as u64).sum::<u64>(),
                cs.size.iter().map(|&n| n as f64).sum::<f64>() / cs.n_clusters().max(1) as f64,
                t0.elapsed().as_secs_f64()
            );
            Some(cs)
        } else {
            None
        };
        let mut state =
            TrainState::new(init.clone(), TrainConfig { variant: v, epochs: o.epochs, batch_size: o.batch, seed: o.seed, optim })?;
        let ck = out_dir.join(format!("{v}.twinckpt"));
        let report = run_training(&mut state, be.as_ref(), &ds, &split, clusters.as_ref(), o.max_long, Some(&ck))?;
        state.model.save(&out_dir.join(format!("{v}.twinmodl")))?;
        let last = report.epochs.last().context("no epoch ran")?;
        let secs: f64 = report.epochs.iter().map(|e| e.train_seconds).sum();
        let samples: f64 = report.epochs.iter().map(|e| e.train_samples_per_s * e.train_seconds).sum();
        println!(
            "{:<10} AUC {:.4}  GAUC {:.4}  logloss {:.4}  {:>7.0} samples/s  GSU input {:>6.0}",
            v.name(),
            last.test.auc,
            last.test.gauc,
            last.test.logloss,
            samples / secs.max(1e-9),
            last.gsu_len
        );
        rows.push(Row {
            variant: v.name().into(),
            auc: last.test.auc,
            gauc: last.test.gauc,
            logloss: last.test.logloss,
            train_samples_per_s: samples / secs.max(1e-9),
            gsu_input_length: last.gsu_len,
            train_seconds: secs,
            epochs: report.epochs.clone(),
        });
        if v == Variant::Twin {
            trained_twin = Some(state.model.clone());
        }
        reports.push(report);
    }
    // Table in the requested order.
    rows.sort_by_key(|r| variants.iter().position(|v| v.name() == r.variant));
    println!();
    println!("| variant | AUC | GAUC | logloss | train samples/s | GSU input length |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.0} | {:.0} |",
            r.variant, r.auc, r.gauc, r.logloss, r.train_samples_per_s, r.gsu_input_length
        );
    }
    let doc = json!({
        "data": ds.source, "users": ds.n_users(), "items": ds.items.len(), "behaviours": ds.behaviours.len(),
        "split_time": split.time, "train_samples": split.train.len(), "test_samples": split.test.len(),
        "backend": be.describe(), "backend_note": note, "training_step": placement(be.as_ref()),
        "epochs": o.epochs, "batch": o.batch, "lr": o.lr, "lr_emb": o.lr_emb, "seed": o.seed,
        "results": rows, "seconds": t_all.elapsed().as_secs_f64(),
    });
    let json_path = out_dir.join("results.json");
    twin_engine::fileio::write_atomic(&json_path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    let bars: Vec<(String, f64)> = rows.iter().map(|r| (r.variant.clone(), r.auc)).collect();
    plot::bar_chart(&out_dir.join("auc.png"), "Test AUC per variant", "AUC", &bars, Some(0.5))?;
    let series: Vec<plot::Series> = reports
        .iter()
        .map(|r| {
            // Smoothed per-step training loss (mean over a window of 10 steps).
            let w = 10usize;
            let pts = r
                .step_losses
                .chunks(w)
                .enumerate()
                .map(|(i, c)| (((i * w) + c.len()) as f64, c.iter().map(|&x| x as f64).sum::<f64>() / c.len() as f64))
                .collect();
            plot::Series { name: r.variant.name().into(), points: pts }
        })
        .collect();
    plot::line_chart(&out_dir.join("loss.png"), "Training loss (mean of 10 steps)", "step", "BCE loss", &series)?;
    println!();
    println!(
        "wrote {}, {}, {} and each variant's model and checkpoint in {} ({:.0} s in all)",
        json_path.display(),
        out_dir.join("auc.png").display(),
        out_dir.join("loss.png").display(),
        out_dir.display(),
        t_all.elapsed().as_secs_f64()
    );
    Ok(())
}
