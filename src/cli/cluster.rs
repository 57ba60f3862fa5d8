//! `twin cluster`: the offline job (TWIN-V2 Algorithm 1) that compresses each user's history
//! into clusters.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use twin_engine::backend::{self, BackendChoice};
use twin_engine::cluster::{self, ClusterConfig};
use twin_engine::model::{Model, ModelConfig};

/// `twin cluster`: compress each user's history into clusters.
#[derive(clap::Args)]
pub struct ClusterArgs {
    /// A dataset file, or a raw log (see `import`).
    #[arg(long)]
    pub data: PathBuf,
    /// Model whose item embeddings drive k-means; without it a model is initialised from --seed.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    /// Only behaviours strictly before this time (seconds) are clustered.
    #[arg(long)]
    pub cutoff: Option<i64>,
    /// Cluster only the first N users (in the dataset's order).
    #[arg(long)]
    pub users: Option<usize>,
    #[arg(long, default_value_t = 20)]
    pub gamma: usize,
    #[arg(long, default_value_t = 5)]
    pub groups: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ClusterArgs {
    pub fn run(self) -> Result<()> {
        let ClusterArgs { data: data_path, model, out, cutoff, users, gamma, groups, seed, backend: choice, json: as_json } = self;
        let (data_path, out) = (data_path.as_path(), out.as_path());
        let t_load = Instant::now();
        let ds = super::load_data(data_path)?;
        let model = match model.as_deref() {
            Some(p) => Model::load(p)?,
            None => {
                eprintln!("note: no --model given; item embeddings come from a model initialised with seed {seed}");
                Model::init(ModelConfig::for_items(&ds.items), &ds.items, seed)?
            }
        };
        if model.n_items() != ds.items.len() {
            bail!("model n_items = {} does not match the dataset's {} items", model.n_items(), ds.items.len());
        }
        let (be, note) = backend::open(choice)?;
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
            println!(
                "compression  {:.2}x (behaviours per cluster), largest cluster {} < gamma {}",
                inv.compression_ratio, inv.max_size, gamma
            );
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
}
