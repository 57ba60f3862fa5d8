//! `twin demo`: the whole pipeline on one dataset (data -> clusters -> train every variant ->
//! evaluate -> table, JSON, plots), or with `--lifelong` TWIN against TWIN-V2 at an equal GSU
//! budget (src/cli/lifelong.rs).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use twin_engine::data::{self, SynthConfig};
use twin_engine::model::{Model, ModelConfig};
use twin_engine::train::optim::OptimConfig;
use twin_engine::train::trainer::{self, TrainReport, TrainState};
use twin_engine::train::{Split, TrainConfig, Variant};

use super::lifelong::{self, LifelongOpts};
use super::plot;
use super::train::{bar, cluster_for_split, open_backend, placement, run_training, TrainOpts};

/// `twin demo`: the whole pipeline, or the lifelong comparison.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// A dataset file or a MovieLens / KuaiRand log; default: built-in synthetic long sequences.
    #[arg(long, conflicts_with = "lifelong")]
    pub data: Option<PathBuf>,
    /// Synthetic users (without --data).
    #[arg(long, default_value_t = 1000, conflicts_with = "data")]
    pub users: usize,
    /// Comma-separated variants to train.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "no-seq,din-short,sim-soft,twin,twin-v2", conflicts_with = "lifelong")]
    pub variants: Vec<Variant>,
    #[arg(long, default_value = "demo_out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub opts: TrainOpts,
    /// TWIN against TWIN-V2 at an equal GSU budget on lifelong synthetic users, over seeds,
    /// by activity quartile, with ablations (issue 16); --users, --budget (N), --life-*,
    /// --epochs and --batch apply, --variants and --data do not.
    #[arg(long)]
    pub lifelong: bool,
    #[command(flatten)]
    pub life: LifelongOpts,
}

impl DemoArgs {
    pub fn run(self) -> Result<()> {
        if self.lifelong {
            return lifelong::run(self.users, &self.out, &self.opts, &self.life);
        }
        demo(self.data.as_deref(), self.users, &self.variants, &self.out, &self.opts)
    }
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

fn demo(data: Option<&Path>, users: usize, variants: &[Variant], out_dir: &Path, o: &TrainOpts) -> Result<()> {
    let t_all = Instant::now();
    std::fs::create_dir_all(out_dir).with_context(|| format!("{}", out_dir.display()))?;
    let (be, note) = open_backend(o.backend)?;
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
