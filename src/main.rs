//! `twin`: the engine's command line. Every failure prints one line naming the field and the
//! value, and exits non-zero.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

// See Cargo.toml: freed blocks are reused instead of returned to the OS and faulted in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use serde_json::json;

use twin_engine::backend::{self, BackendChoice, DType, OnlineRequests};
use twin_engine::cluster::{self, ClusterConfig, ClusterSet};
use twin_engine::data::{self, Dataset, SynthConfig};
use twin_engine::model::{Model, ModelConfig};
use twin_engine::online;
use twin_engine::train::Variant;

#[path = "cli/train.rs"]
mod train_cmd;

#[path = "cli/serve.rs"]
mod serve_cmd;

#[path = "cli/loadtest.rs"]
mod loadtest_cmd;

#[path = "cli/bench.rs"]
mod bench_cmd;

#[path = "cli/lifelong.rs"]
mod lifelong_cmd;

#[path = "cli/plot.rs"]
mod plot;

#[derive(Parser)]
#[command(name = "twin", version, about = "TWIN / TWIN-V2 engine: data, offline clustering, online scoring")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a synthetic short-video log (users with drifting, resurfacing interests).
    Gen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 200)]
        users: usize,
        #[arg(long, default_value_t = 20_000)]
        items: usize,
        #[arg(long, default_value_t = 2_000)]
        authors: usize,
        #[arg(long, default_value_t = 64)]
        topics: usize,
        #[arg(long, default_value_t = 100)]
        min_len: usize,
        #[arg(long, default_value_t = 100_000)]
        max_len: usize,
        /// Every user gets exactly this many behaviours (overrides min/max).
        #[arg(long)]
        fixed_len: Option<usize>,
        #[arg(long, default_value_t = 20)]
        samples_per_user: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The lifelong story (issue 16): 4-8 interests, dormancies of about a year during
        /// which the interest is never watched. Pair with --min-len 10000.
        #[arg(long)]
        lifelong: bool,
    },
    /// Convert a MovieLens (ratings.csv, u.data, ratings.dat) or KuaiRand/KuaiRec CSV log.
    Import {
        /// The log file: MovieLens ratings or a KuaiRand/KuaiRec log, as CSV or Parquet (Parquet
        /// is recognised by its magic, whatever the file's name).
        log: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// KuaiRand/KuaiRec item features, CSV or Parquet (video_id, author_id, topic column).
        #[arg(long)]
        item_features: Option<PathBuf>,
    },
    /// Initialise a model for a dataset's item catalogue (deterministic from the seed).
    Init {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Offline job (TWIN-V2 Algorithm 1): compress each user's history into clusters.
    Cluster {
        /// A dataset file, or a raw log (see `import`).
        #[arg(long)]
        data: PathBuf,
        /// Model whose item embeddings drive k-means; without it a model is initialised from --seed.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Only behaviours strictly before this time (seconds) are clustered.
        #[arg(long)]
        cutoff: Option<i64>,
        /// Cluster only the first N users.
        #[arg(long)]
        users: Option<usize>,
        #[arg(long, default_value_t = 20)]
        gamma: usize,
        #[arg(long, default_value_t = 5)]
        groups: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Score requests: GSU top-K and ESU output per candidate, as JSON.
    Score {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// TWIN-V2: score against these clusters instead of the raw history.
        #[arg(long)]
        clusters: Option<PathBuf>,
        /// Dataset user indices, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "0")]
        users: Vec<u32>,
        /// Candidate item ids, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
        candidates: Vec<u32>,
        /// Request time in seconds (default: just after the user's newest behaviour).
        #[arg(long)]
        request_time: Option<i64>,
        /// TWIN: use at most this many most recent behaviours.
        #[arg(long, default_value_t = 100_000)]
        max_len: usize,
        #[arg(long, default_value_t = 100)]
        top_k: usize,
        #[arg(long, default_value = "f32")]
        dtype: String,
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Leave the ESU output vectors out of the JSON.
        #[arg(long)]
        no_vectors: bool,
    },
    /// Train one model variant on a time split (earlier samples train, the newest test),
    /// evaluating and checkpointing after every epoch.
    Train {
        #[arg(long)]
        data: PathBuf,
        /// twin-v2, twin, sim-soft, din-short or no-seq.
        #[arg(long, default_value = "twin")]
        variant: String,
        /// Start from this model instead of a fresh one (seeded by --seed).
        #[arg(long)]
        init: Option<PathBuf>,
        /// twin-v2: clusters built before the split (twin cluster --cutoff <split time>);
        /// without it they are built here.
        #[arg(long)]
        clusters: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Written atomically after every epoch.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Continue from --checkpoint (same result as an uninterrupted run).
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        opts: train_cmd::TrainOpts,
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a trained model on the test part of the time split: AUC, GAUC, logloss.
    Eval {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value = "twin")]
        variant: String,
        #[arg(long)]
        clusters: Option<PathBuf>,
        #[command(flatten)]
        opts: train_cmd::TrainOpts,
    },
    /// The whole pipeline: data -> clusters -> train every variant -> evaluate -> table, JSON, plots.
    Demo {
        /// A dataset file or a MovieLens / KuaiRand log; default: built-in synthetic long sequences.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Synthetic users (without --data).
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Comma-separated variants to train.
        #[arg(long, value_delimiter = ',', default_value = "no-seq,din-short,sim-soft,twin,twin-v2")]
        variants: Vec<String>,
        #[arg(long, default_value = "demo_out")]
        out: PathBuf,
        #[command(flatten)]
        opts: train_cmd::TrainOpts,
        /// TWIN against TWIN-V2 at an equal GSU budget on lifelong synthetic users, over seeds,
        /// by activity quartile, with ablations (issue 16); --users, --budget (N), --life-*,
        /// --epochs and --batch apply, --variants and --data do not.
        #[arg(long)]
        lifelong: bool,
        #[command(flatten)]
        life: lifelong_cmd::LifelongOpts,
    },
    /// Say what a dataset, model or clusters file holds.
    Info { path: PathBuf },
    /// Serve a model: HTTP/JSON (GET /health, GET /ready, POST /score, GET /metrics), gRPC with
    /// --grpc-addr, and POST /admin/swap on a token-protected --admin-addr.
    Serve {
        #[command(flatten)]
        opts: serve_cmd::ServeOpts,
    },
    /// Load-test a running `twin serve` with requests built from a dataset's users.
    Loadtest {
        #[command(flatten)]
        opts: loadtest_cmd::LoadtestOpts,
    },
    /// Benchmark BENCHMARKS.md's workloads (online, cluster, train) on one backend.
    Bench {
        #[command(flatten)]
        opts: bench_cmd::BenchOpts,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // One line: the chain of contexts, outermost first.
        let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", msg.join(": "));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Gen { out, users, items, authors, topics, min_len, max_len, fixed_len, samples_per_user, seed, lifelong } => {
            let t0 = Instant::now();
            let cfg = SynthConfig {
                n_users: users,
                n_items: items,
                n_authors: authors,
                n_topics: topics,
                min_len,
                max_len,
                fixed_len,
                pareto_alpha: 1.2,
                samples_per_user,
                seed,
                lifelong,
            };
            let ds = data::generate(&cfg)?;
            ds.save(&out)?;
            println!("{}", ds.describe());
            println!("wrote {} in {:.2} s", out.display(), t0.elapsed().as_secs_f64());
        }
        Cmd::Import { log, out, item_features } => {
            let ds = read_log(&log, item_features.as_deref())?;
            ds.save(&out)?;
            println!("{}", ds.describe());
            println!("wrote {}", out.display());
        }
        Cmd::Init { data, out, seed } => {
            let ds = load_data(&data)?;
            let m = Model::init(ModelConfig::for_items(&ds.items), &ds.items, seed)?;
            m.save(&out)?;
            println!("{}", m.describe());
            println!("wrote {}", out.display());
        }
        Cmd::Cluster { data, model, out, cutoff, users, gamma, groups, seed, backend, json } => {
            cmd_cluster(&data, model.as_deref(), &out, cutoff, users, gamma, groups, seed, &backend, json)?
        }
        Cmd::Score { model, data, clusters, users, candidates, request_time, max_len, top_k, dtype, backend, no_vectors } => {
            cmd_score(&model, &data, clusters.as_deref(), &users, &candidates, request_time, max_len, top_k, &dtype, &backend, no_vectors)?
        }
        Cmd::Train { data, variant, init, clusters, out, checkpoint, resume, opts, json } => {
            let ds = load_data(&data)?;
            train_cmd::cmd_train(
                &data,
                &ds,
                parse_variant(&variant)?,
                init.as_deref(),
                clusters.as_deref(),
                &out,
                checkpoint.as_deref(),
                resume,
                &opts,
                json,
            )?
        }
        Cmd::Eval { data, model, variant, clusters, opts } => {
            let ds = load_data(&data)?;
            train_cmd::cmd_eval(&ds, parse_variant(&variant)?, &model, clusters.as_deref(), &opts)?
        }
        Cmd::Demo { lifelong: true, data, users, out, opts, life, .. } => {
            if data.is_some() {
                bail!("--lifelong generates its own users; it does not take --data");
            }
            lifelong_cmd::cmd_lifelong(users, &out, &opts, &life)?
        }
        Cmd::Demo { data, users, variants, out, opts, .. } => {
            let vs: Vec<Variant> = variants.iter().map(|v| parse_variant(v)).collect::<Result<_>>()?;
            train_cmd::cmd_demo(data.as_deref(), users, &vs, &out, &opts)?
        }
        Cmd::Info { path } => cmd_info(&path)?,
        Cmd::Serve { opts } => serve_cmd::cmd_serve(&opts)?,
        Cmd::Loadtest { opts } => loadtest_cmd::cmd_loadtest(&opts)?,
        Cmd::Bench { opts } => bench_cmd::cmd_bench(&opts)?,
    }
    Ok(())
}

fn magic_of(path: &Path) -> Result<[u8; 8]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut m = [0u8; 8];
    let n = f.read(&mut m).with_context(|| format!("{}", path.display()))?;
    if n < 8 {
        m = [0; 8];
    }
    Ok(m)
}

/// Parquet by its magic, else MovieLens or Kuai CSV by name (`data::read_log`).
fn read_log(path: &Path, item_features: Option<&Path>) -> Result<Dataset> {
    Ok(data::read_log(path, item_features)?)
}

/// A dataset file, or a raw log converted on the fly.
fn load_data(path: &Path) -> Result<Dataset> {
    if &magic_of(path)? == data::format::MAGIC {
        Ok(Dataset::load(path)?)
    } else {
        read_log(path, None)
    }
}

fn parse_variant(s: &str) -> Result<Variant> {
    match s.parse::<Variant>() {
        Ok(v) => Ok(v),
        Err(_) => bail!("--variant = {s:?}: expected twin-v2, twin, sim-soft, din-short or no-seq"),
    }
}

fn parse_backend(s: &str) -> Result<BackendChoice> {
    match s.parse::<BackendChoice>() {
        Ok(b) => Ok(b),
        Err(_) => bail!("--backend = {s:?}: expected cpu, cpu-ref, cuda, wgpu or auto"),
    }
}

#[allow(clippy::too_many_arguments)]
fn cmd_cluster(
    data_path: &Path,
    model: Option<&Path>,
    out: &Path,
    cutoff: Option<i64>,
    users: Option<usize>,
    gamma: usize,
    groups: usize,
    seed: u64,
    backend_name: &str,
    as_json: bool,
) -> Result<()> {
    let t_load = Instant::now();
    let ds = load_data(data_path)?;
    let model = match model {
        Some(p) => Model::load(p)?,
        None => {
            eprintln!("note: no --model given; item embeddings come from a model initialised with seed {seed}");
            Model::init(ModelConfig::for_items(&ds.items), &ds.items, seed)?
        }
    };
    if model.n_items() != ds.items.len() {
        bail!("model n_items = {} does not match the dataset's {} items", model.n_items(), ds.items.len());
    }
    let (be, note) = backend::open(parse_backend(backend_name)?)?;
    eprintln!("backend: {} ({note})", be.describe());
    let n_users = users.unwrap_or(ds.n_users()).min(ds.n_users());
    let user_list: Vec<u32> = (0..n_users as u32).collect();
    let cfg = ClusterConfig { gamma, groups, seed, ..Default::default() };
    let load_s = t_load.elapsed().as_secs_f64();

    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} clustering [{bar:40}] {pos}/{len} behaviours {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let t0 = Instant::now();
    let dim = model.config.id_dim;
    let (set, stats) =
        cluster::cluster_users(be.as_ref(), &ds, &user_list, cutoff, model.item_embeddings(), dim, &cfg, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let inv = set.verify(&ds).context("invariant check failed")?;
    set.save(out)?;
    let summary = json!({
        "backend": be.describe(),
        "users": inv.users,
        "behaviours": inv.behaviours,
        "clusters": inv.clusters,
        "compression_ratio": inv.compression_ratio,
        "max_cluster_size": inv.max_size,
        "gamma": gamma,
        "kmeans_problems": stats.kmeans_problems,
        "backend_calls": stats.backend_calls,
        "levels": stats.levels,
        "forced_position_splits": stats.forced_chunks,
        "seconds": secs,
        "load_seconds": load_s,
        "users_per_second": inv.users as f64 / secs.max(1e-9),
        "invariants": "held: every behaviour in exactly one cluster, each cluster inside one group, sizes < gamma, sum n = T",
        "out": out.display().to_string(),
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("users        {}", inv.users);
        println!("behaviours   {}", inv.behaviours);
        println!("clusters     {}", inv.clusters);
        println!("compression  {:.2}x (behaviours per cluster), largest cluster {} < gamma {}", inv.compression_ratio, inv.max_size, gamma);
        println!(
            "k-means      {} problems in {} backend calls over {} levels ({} forced position splits)",
            stats.kmeans_problems, stats.backend_calls, stats.levels, stats.forced_chunks
        );
        println!(
            "seconds      {:.3} ({:.0} users/s) on {}; loading took {:.3}",
            secs,
            inv.users as f64 / secs.max(1e-9),
            be.describe(),
            load_s
        );
        println!("invariants   held: every behaviour in exactly one cluster, each cluster inside one group, sizes < gamma, sum n = T");
        println!("wrote        {}", out.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cmd_score(
    model_path: &Path,
    data_path: &Path,
    clusters: Option<&Path>,
    users: &[u32],
    cands: &[u32],
    request_time: Option<i64>,
    max_len: usize,
    top_k: usize,
    dtype: &str,
    backend_name: &str,
    no_vectors: bool,
) -> Result<()> {
    let dtype = match dtype {
        "f32" => DType::F32,
        "f16" => DType::F16,
        other => bail!("--dtype = {other:?}: expected f32 or f16"),
    };
    let ds = load_data(data_path)?;
    let model = Model::load(model_path)?;
    if model.n_items() != ds.items.len() {
        bail!("model n_items = {} does not match the dataset's {} items", model.n_items(), ds.items.len());
    }
    model.check_item_ids("candidates", cands)?;
    let set = clusters.map(ClusterSet::load).transpose()?;
    let (be, note) = backend::open(parse_backend(backend_name)?)?;
    let t0 = Instant::now();
    let tables = model.online_tables(be.as_ref(), dtype)?;
    let build_s = t0.elapsed().as_secs_f64();

    let mut req = OnlineRequests::new();
    let mut times = Vec::new();
    for (i, &u) in users.iter().enumerate() {
        if u as usize >= ds.n_users() {
            bail!("users[{i}] = {u} is out of range (the dataset has {} users)", ds.n_users());
        }
        let r = ds.user_range(u as usize);
        let newest = if r.is_empty() { 0 } else { ds.behaviours.timestamp[r.end - 1] };
        let t = request_time.unwrap_or(newest.saturating_add(1));
        times.push(t);
        match &set {
            Some(s) => {
                let slot = s.slot_of(u).with_context(|| format!("users[{i}] = {u} has no clusters in the clusters file"))?;
                online::push_clusters(&mut req, s, slot, t, cands)?;
            }
            None => online::push_history(&mut req, &ds, u as usize, t, max_len, cands)?,
        }
    }
    let t1 = Instant::now();
    let out = be.online(&tables, &req.as_batch(), top_k)?;
    let score_s = t1.elapsed().as_secs_f64();
    let d = tables.d_model();
    let mut reqs = Vec::new();
    for (r, &u) in users.iter().enumerate() {
        let seq = req.as_batch().seq_range(r);
        let mut cand_json = Vec::new();
        for c in req.as_batch().cand_range(r) {
            let (idx, sc) = out.topk.row(c);
            let top: Vec<_> =
                idx.iter().zip(sc).map(|(&p, &s)| json!({"position": p, "item": req.items[seq.start + p as usize], "score": s})).collect();
            let mut cj = json!({"item": req.cands[c], "top_k": top});
            if !no_vectors {
                cj["esu_out"] = json!(out.out[c * d..(c + 1) * d]);
            }
            cand_json.push(cj);
        }
        reqs.push(json!({"user": u, "request_time": times[r], "sequence_length": seq.len(), "candidates": cand_json}));
    }
    let doc = json!({
        "backend": be.describe(),
        "backend_note": note,
        "mode": if set.is_some() { "twin-v2 (clusters)" } else { "twin (raw history)" },
        "dtype": format!("{dtype:?}").to_lowercase(),
        "table_build_seconds": build_s,
        "score_seconds": score_s,
        "requests": reqs,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

fn cmd_info(path: &Path) -> Result<()> {
    let m = magic_of(path)?;
    if &m == data::format::MAGIC {
        println!("{}", Dataset::load(path)?.describe());
    } else if &m == twin_engine::model::MAGIC {
        println!("{}", Model::load(path)?.describe());
    } else if &m == cluster::MAGIC {
        let s = ClusterSet::load(path)?;
        let sizes: usize = s.size.iter().map(|&n| n as usize).sum();
        println!(
            "clusters file: {} users, {} clusters, {} behaviours ({:.2} per cluster), gamma {}, groups {}, seed {}, cutoff {}",
            s.n_users(),
            s.n_clusters(),
            sizes,
            sizes as f64 / s.n_clusters().max(1) as f64,
            s.gamma,
            s.groups,
            s.seed,
            if s.cutoff == i64::MAX { "none".to_string() } else { s.cutoff.to_string() }
        );
    } else {
        bail!("{}: not a twin dataset, model or clusters file (its first bytes are none of their magics)", path.display());
    }
    Ok(())
}
