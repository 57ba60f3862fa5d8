//! `twin demo --lifelong`: TWIN against TWIN-V2 at an equal GSU budget on lifelong users
//! (issue 16), as the TWIN-V2 paper compares them.
//!
//! One lifelong dataset (`SynthConfig::lifelong`, seeded by `--seed`) is split by time; then,
//! for each of `--seeds` training seeds:
//! - `twin`: the most recent N raw behaviours (N = `--budget`);
//! - `twin-v2`: clusters of the whole pre-split history (built on that seed's trained `twin`
//!   item embeddings, γ = 20, M = 5), the newest N rows (clusters and the singletons after the
//!   offline run) per sample;
//! - `twin-v2 on x_h`: the same, with the clusters built on the model's whole inherent item
//!   vector (item ⊕ author ⊕ topic ⊕ duration embeddings) instead of the id embeddings only;
//! - ablations (unless `--no-ablations`): `twin-v2` without `ln n`, without the
//!   completion-ratio grouping (M = 1), and with γ = 10 and γ = 40;
//! - `twin-full` with `--full`: every raw behaviour (the upper bound TWIN cannot afford).
//!
//! Every model is evaluated on the same test samples, overall and per activity quartile
//! (users ranked by pre-split history length). Tables print mean ± std over the seeds;
//! `results.json` keeps every run and `auc_by_activity.png` plots the quartile AUCs.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::plot;
use twin_engine::backend::{Backend, MAX_SEQ_LEN};
use twin_engine::cluster::{self, ClusterConfig, ClusterSet};
use twin_engine::data::{self, Dataset, SynthConfig};
use twin_engine::fileio;
use twin_engine::model::{Model, ModelConfig};
use twin_engine::rng::derive_seed;
use twin_engine::train::optim::OptimConfig;
use twin_engine::train::trainer::{self, TrainState};
use twin_engine::train::{Examples, Metrics, Split, TrainConfig, Variant};

use super::lifelong_mix::{input_mix, InputMix};
use super::train::{open_backend, TrainOpts};

/// Options of `twin demo --lifelong` (the rest come from [`TrainOpts`]).
#[derive(clap::Args, Clone, Debug)]
pub struct LifelongOpts {
    /// GSU rows per sample for every model but twin-full (N).
    #[arg(long, default_value_t = 1_000, requires = "lifelong")]
    pub budget: usize,
    /// Training seeds (model initialisation and batch order; the data stay the same).
    #[arg(long, default_value_t = 3, requires = "lifelong")]
    pub seeds: usize,
    /// Shortest lifelong history (the Pareto scale).
    #[arg(long, default_value_t = 10_000, requires = "lifelong")]
    pub life_min_len: usize,
    /// Longest lifelong history.
    #[arg(long, default_value_t = 100_000, requires = "lifelong")]
    pub life_max_len: usize,
    /// Samples (impressions) per user, the last of each history; 40 gives 9,600 training
    /// samples for 300 users. More tests whether the models are short of training data.
    #[arg(long, default_value_t = 40, requires = "lifelong")]
    pub life_samples: usize,
    /// Also train twin on every raw behaviour (slow: the GSU reads whole histories).
    #[arg(long, requires = "lifelong")]
    pub full: bool,
    /// Skip the ablations (no ln n, no completion grouping, γ = 10 and 40).
    #[arg(long, requires = "lifelong")]
    pub no_ablations: bool,
    /// Only these arms, by name (comma separated, e.g. `twin,twin-v2`); default: all above.
    #[arg(long, value_delimiter = ',', requires = "lifelong")]
    pub arms: Option<Vec<String>>,
}

/// One arm of the comparison: how its sequences are built.
#[derive(Clone, Copy, Debug)]
struct Arm {
    name: &'static str,
    variant: Variant,
    /// Clusters (γ, M) for twin-v2 arms.
    clusters: Option<(usize, usize)>,
    log_n: bool,
    /// GSU rows per sample; `None`: the budget.
    max_long: Option<usize>,
    ablation: bool,
    /// What the clusters are built on.
    on: ClusterOn,
    /// Fill the budget with the largest clusters instead of the newest rows.
    by_size: bool,
}

/// The item vectors k-means runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClusterOn {
    /// The trained model's item-id embedding table only (`Model::item_embeddings`).
    Id,
    /// The model's whole inherent item vector `x_h` = item ⊕ author ⊕ topic ⊕ duration
    /// embeddings (`Model::inherent_features`): the id rows of a catalogue of 10^5 items get a
    /// few gradient steps each in a short run and stay near their random init, while the topic
    /// and author rows are trained by every sample.
    Inherent,
}

fn arms(o: &LifelongOpts) -> Result<Vec<Arm>> {
    let twin = Arm {
        name: "twin",
        variant: Variant::Twin,
        clusters: None,
        log_n: true,
        max_long: None,
        ablation: false,
        on: ClusterOn::Id,
        by_size: false,
    };
    let v2 = Arm { name: "twin-v2", variant: Variant::TwinV2, clusters: Some((20, 5)), ..twin };
    let mut a = vec![twin, v2, Arm { name: "twin-v2 on x_h", on: ClusterOn::Inherent, ..v2 }];
    if o.full {
        a.push(Arm { name: "twin-full", max_long: Some(MAX_SEQ_LEN), ..twin });
    }
    if !o.no_ablations {
        a.push(Arm { name: "twin-v2 without ln n", log_n: false, ablation: true, ..v2 });
        a.push(Arm { name: "twin-v2 without completion groups (M = 1)", clusters: Some((20, 1)), ablation: true, ..v2 });
        a.push(Arm { name: "twin-v2 γ = 10", clusters: Some((10, 5)), ablation: true, ..v2 });
        a.push(Arm { name: "twin-v2 γ = 40", clusters: Some((40, 5)), ablation: true, ..v2 });
    }
    // Not an ablation of the paper's model but of our budget rule: the newest N rows keep the
    // recent clusters and drop the long-dormant interests first.
    a.push(Arm { name: "twin-v2 budget by size", by_size: true, ablation: true, ..v2 });
    if let Some(names) = &o.arms {
        for n in names {
            if !a.iter().any(|arm| arm.name == n) {
                let known: Vec<&str> = a.iter().map(|arm| arm.name).collect();
                bail!("--arms: {n:?} is not an arm of this run (with these flags: {})", known.join(", "));
            }
        }
        a.retain(|arm| names.iter().any(|n| n == arm.name));
    }
    Ok(a)
}

/// Test samples per activity quartile: users ranked by their pre-split history length, cut into
/// four groups of (nearly) equal user counts; returns the samples of each and the length bounds.
fn quartiles(ds: &Dataset, split: &Split) -> (Vec<Vec<u32>>, Vec<(usize, usize)>) {
    let hist_len: Vec<usize> = (0..ds.n_users()).map(|u| ds.history_before(u, split.time).len()).collect();
    let mut order: Vec<usize> = (0..ds.n_users()).collect();
    order.sort_by_key(|&u| (hist_len[u], u));
    let mut bucket = vec![0usize; ds.n_users()];
    let mut bounds = vec![(usize::MAX, 0usize); 4];
    for (rank, &u) in order.iter().enumerate() {
        let q = rank * 4 / order.len().max(1);
        bucket[u] = q;
        bounds[q] = (bounds[q].0.min(hist_len[u]), bounds[q].1.max(hist_len[u]));
    }
    let mut out = vec![Vec::new(); 4];
    for &s in &split.test {
        out[bucket[ds.samples.user[s as usize] as usize]].push(s);
    }
    (out, bounds)
}

/// One trained arm's results on one seed.
#[derive(Clone, Debug)]
struct Run {
    arm: &'static str,
    seed: u64,
    overall: Metrics,
    by_quartile: Vec<Metrics>,
    gsu_rows: f64,
    train_seconds: f64,
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let m = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

fn cell(xs: &[f64]) -> String {
    let (m, s) = mean_std(xs);
    format!("{m:.4} ± {s:.4}")
}

fn print_table(title: &str, arms: &[&'static str], runs: &[Run], bounds: &[(usize, usize)]) {
    println!();
    println!("{title}");
    let q: Vec<String> = bounds.iter().enumerate().map(|(i, b)| format!("AUC Q{} ({}-{})", i + 1, b.0, b.1)).collect();
    println!("| model | AUC | GAUC | logloss | {} | GSU rows |", q.join(" | "));
    println!("|---|---|---|---|{}---|", "---|".repeat(4));
    for &a in arms {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.arm == a).collect();
        let col = |f: &dyn Fn(&Run) -> f64| cell(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
        let qs: Vec<String> = (0..4).map(|i| col(&|r: &Run| r.by_quartile[i].auc)).collect();
        let rows = mean_std(&rs.iter().map(|r| r.gsu_rows).collect::<Vec<_>>()).0;
        println!(
            "| {a} | {} | {} | {} | {} | {rows:.0} |",
            col(&|r| r.overall.auc),
            col(&|r| r.overall.gauc),
            col(&|r| r.overall.logloss),
            qs.join(" | ")
        );
    }
}

/// Paired differences `a - b` of AUC per seed (overall and per quartile): mean ± std.
fn print_gap(a: &str, b: &str, runs: &[Run]) {
    let pick = |arm: &str| runs.iter().filter(|r| r.arm == arm).cloned().collect::<Vec<_>>();
    let (ra, rb) = (pick(a), pick(b));
    if ra.is_empty() || ra.len() != rb.len() {
        return;
    }
    let diff = |f: &dyn Fn(&Run) -> f64| -> String { cell(&ra.iter().zip(&rb).map(|(x, y)| f(x) - f(y)).collect::<Vec<_>>()) };
    let qs: Vec<String> = (0..4).map(|i| diff(&|r: &Run| r.by_quartile[i].auc)).collect();
    println!(
        "{a} − {b}, paired by seed: AUC {}, GAUC {}; by quartile {}",
        diff(&|r| r.overall.auc),
        diff(&|r| r.overall.gauc),
        qs.join(", ")
    );
}

pub fn run(users: usize, out_dir: &Path, o: &TrainOpts, lo: &LifelongOpts) -> Result<()> {
    let t_all = Instant::now();
    if lo.seeds == 0 {
        bail!("--seeds 0: at least one training seed is needed");
    }
    if lo.budget == 0 || lo.budget > MAX_SEQ_LEN {
        bail!("--budget {}: must be in 1..={MAX_SEQ_LEN}", lo.budget);
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("{}", out_dir.display()))?;
    let (be, note) = open_backend(o.backend)?;
    println!("backend: {} ({note})", be.describe());
    if lo.life_samples == 0 {
        bail!("--life-samples = 0: each user needs at least one sample");
    }
    let cfg = SynthConfig {
        min_len: lo.life_min_len,
        samples_per_user: lo.life_samples,
        ..SynthConfig::lifelong(users, lo.life_max_len, o.seed)
    };
    let t0 = Instant::now();
    let ds = data::generate(&cfg)?;
    let split = Split::by_time(&ds, o.test_fraction)?;
    let (buckets, bounds) = quartiles(&ds, &split);
    println!(
        "data: {} lifelong users, {} behaviours (mean {:.0}, longest {}), generated in {:.1} s; split at t = {}: {} train / {} test samples; budget N = {}",
        ds.n_users(),
        ds.behaviours.len(),
        ds.behaviours.len() as f64 / ds.n_users().max(1) as f64,
        (0..ds.n_users()).map(|u| ds.user_range(u).len()).max().unwrap_or(0),
        t0.elapsed().as_secs_f64(),
        split.time,
        split.train.len(),
        split.test.len(),
        lo.budget
    );
    let arms = arms(lo)?;
    let mut runs: Vec<Run> = Vec::new();
    let mut mixes = None;
    for si in 0..lo.seeds {
        let seed = derive_seed(o.seed, &[0x11fe, si as u64]);
        let init = Model::init(ModelConfig::for_items(&ds.items), &ds.items, seed)?;
        let mut twin_model: Option<Model> = None;
        let mut cached: Vec<((usize, usize, ClusterOn), ClusterSet)> = Vec::new();
        for arm in &arms {
            let clusters = match arm.clusters {
                None => None,
                Some((g, m)) => {
                    let gm = (g, m, arm.on);
                    if !cached.iter().any(|(k, _)| *k == gm) {
                        let emb = twin_model.as_ref().context("twin trains before the twin-v2 arms")?;
                        let t = Instant::now();
                        let cs = clusters_for(be.as_ref(), &ds, emb, split.time, (g, m), arm.on, seed)?;
                        println!(
                            "  seed {si}: clusters γ = {}, M = {} on {:?}: {} clusters from {} behaviours in {:.1} s",
                            g,
                            m,
                            arm.on,
                            cs.n_clusters(),
                            cs.size.iter().map(|&n| n as u64).sum::<u64>(),
                            t.elapsed().as_secs_f64()
                        );
                        cached.push((gm, cs));
                    }
                    cached.iter().find(|(k, _)| *k == gm).map(|(_, c)| c)
                }
            };
            let optim = OptimConfig { lr: o.lr, lr_emb: o.lr_emb, ..OptimConfig::default() };
            let tc = TrainConfig { variant: arm.variant, epochs: o.epochs, batch_size: o.batch, seed, optim };
            let mut state = TrainState::new(init.clone(), tc)?;
            let mut ex = Examples::new(&ds, arm.variant, clusters, arm.max_long.unwrap_or(lo.budget), state.model.config.short_len)?;
            ex.log_n = arm.log_n;
            ex.budget_by_size = arm.by_size;
            if si == 0 && (arm.name == "twin-v2" || arm.by_size) {
                // Log ln n is on in this arm, so each row's n can be read back from the batch.
                let train = input_mix(&ex, &ds, &split.train, 2_000)?;
                let test = input_mix(&ex, &ds, &split.test, 2_000)?;
                println!("  {} GSU input, training samples: {train}", arm.name);
                println!("  {} GSU input, test samples:     {test}", arm.name);
                if arm.name == "twin-v2" {
                    mixes = Some((train, test));
                }
            }
            let t = Instant::now();
            trainer::train(&mut state, Some(be.as_ref()), &ex, &split.train, &ex, &split.test, None, &mut |_| {})?;
            let train_seconds = t.elapsed().as_secs_f64();
            let (overall, gsu_rows) = trainer::evaluate(Some(be.as_ref()), &state.model, &ex, &split.test, 256, &mut |_, _| {})?;
            let mut by_quartile = Vec::with_capacity(4);
            for b in &buckets {
                by_quartile.push(trainer::evaluate(Some(be.as_ref()), &state.model, &ex, b, 256, &mut |_, _| {})?.0);
            }
            println!(
                "  seed {si}: {:<44} AUC {:.4}  GAUC {:.4}  logloss {:.4}  GSU rows {:>6.0}  {:.0} s",
                arm.name, overall.auc, overall.gauc, overall.logloss, gsu_rows, train_seconds
            );
            runs.push(Run { arm: arm.name, seed, overall, by_quartile, gsu_rows, train_seconds });
            if arm.name == "twin" {
                twin_model = Some(state.model);
            }
        }
    }
    let main: Vec<&'static str> = arms.iter().filter(|a| !a.ablation).map(|a| a.name).collect();
    let abl: Vec<&'static str> = arms.iter().filter(|a| a.ablation || a.name == "twin-v2").map(|a| a.name).collect();
    print_table(&format!("At an equal GSU budget N = {} ({} seeds, mean ± std):", lo.budget, lo.seeds), &main, &runs, &bounds);
    println!();
    print_gap("twin-v2", "twin", &runs);
    print_gap("twin-v2 on x_h", "twin", &runs);
    print_gap("twin-v2 on x_h", "twin-v2", &runs);
    if abl.len() > 1 {
        print_table("Ablations of twin-v2 (same budget, same seeds):", &abl, &runs, &bounds);
        println!();
        for a in abl.iter().filter(|a| **a != "twin-v2") {
            print_gap("twin-v2", a, &runs);
        }
    }
    write_outputs(out_dir, &ds, &split, lo, &arms, &runs, &bounds, mixes, t_all.elapsed().as_secs_f64())
}

/// Clusters of every user's history before the split, on `model`'s item embeddings.
fn clusters_for(
    be: &dyn Backend,
    ds: &Dataset,
    model: &Model,
    cutoff: i64,
    (gamma, groups): (usize, usize),
    on: ClusterOn,
    seed: u64,
) -> Result<ClusterSet> {
    let users: Vec<u32> = (0..ds.n_users() as u32).collect();
    let cfg = ClusterConfig { gamma, groups, seed, ..ClusterConfig::default() };
    let xh;
    let (emb, dim) = match on {
        ClusterOn::Id => (model.item_embeddings(), model.config.id_dim),
        ClusterOn::Inherent => {
            xh = model.inherent_features()?;
            (xh.as_slice().context("x_h is contiguous")?, model.config.inherent_dim())
        }
    };
    let (set, _) = cluster::cluster_users(be, ds, &users, Some(cutoff), emb, dim, &cfg, &mut |_, _| {})?;
    set.verify(ds).context("cluster invariants")?;
    Ok(set)
}

#[allow(clippy::too_many_arguments)]
fn write_outputs(
    out_dir: &Path,
    ds: &Dataset,
    split: &Split,
    lo: &LifelongOpts,
    arms: &[Arm],
    runs: &[Run],
    bounds: &[(usize, usize)],
    mixes: Option<(InputMix, InputMix)>,
    seconds: f64,
) -> Result<()> {
    let m = |x: &Metrics| json!({"auc": x.auc, "gauc": x.gauc, "logloss": x.logloss, "samples": x.samples});
    let rows: Vec<_> = runs
        .iter()
        .map(|r| {
            json!({"model": r.arm, "seed": r.seed, "overall": m(&r.overall),
                   "by_quartile": r.by_quartile.iter().map(m).collect::<Vec<_>>(),
                   "gsu_rows": r.gsu_rows, "train_seconds": r.train_seconds})
        })
        .collect();
    let doc = json!({
        "users": ds.n_users(), "behaviours": ds.behaviours.len(), "split_time": split.time,
        "train_samples": split.train.len(), "test_samples": split.test.len(), "budget": lo.budget,
        "seeds": lo.seeds, "quartile_history_lengths": bounds, "runs": rows, "seconds": seconds,
        "twin_v2_input": mixes.map(|(train, test)| json!({"train": train, "test": test})),
    });
    let json_path = out_dir.join("results.json");
    fileio::write_atomic(&json_path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    let series: Vec<plot::Series> = arms
        .iter()
        .map(|a| {
            let pts = (0..4)
                .map(|q| {
                    let xs: Vec<f64> = runs.iter().filter(|r| r.arm == a.name).map(|r| r.by_quartile[q].auc).collect();
                    ((q + 1) as f64, mean_std(&xs).0)
                })
                .collect();
            plot::Series { name: a.name.into(), points: pts }
        })
        .collect();
    let png = out_dir.join("auc_by_activity.png");
    plot::line_chart(&png, "Test AUC by user activity", "activity quartile (1 = shortest histories)", "AUC (mean over seeds)", &series)?;
    println!();
    println!("wrote {} and {} ({seconds:.0} s in all)", json_path.display(), png.display());
    Ok(())
}
