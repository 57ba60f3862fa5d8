//! `twin info`: what a dataset, model or clusters file holds.

use std::path::PathBuf;

use anyhow::{bail, Result};

use twin_engine::cluster::{self, ClusterSet};
use twin_engine::data::{self, Dataset};
use twin_engine::model::Model;

/// `twin info`: say what a dataset, model or clusters file holds.
#[derive(clap::Args)]
pub struct InfoArgs {
    pub path: PathBuf,
}

fn digest(d: Option<u64>) -> String {
    d.map_or_else(|| "not recorded (format version 1)".to_string(), |d| format!("{d:016x}"))
}

impl InfoArgs {
    pub fn run(self) -> Result<()> {
        let path = self.path.as_path();
        let m = super::magic_of(path)?;
        if &m == data::format::MAGIC {
            let ds = Dataset::load(path)?;
            println!("{}", ds.describe());
            let (lo, hi) = (ds.user_ids.iter().min(), ds.user_ids.iter().max());
            if let (Some(lo), Some(hi)) = (lo, hi) {
                println!("user ids {lo}..={hi} (as the input file has them; `twin score --users` takes these)");
            }
            println!("history digest {:016x}", cluster::dataset_digest(&ds));
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
            println!(
                "built from: dataset history digest {}, item catalogue digest {}",
                digest(s.dataset_digest),
                digest(s.catalogue_digest)
            );
        } else {
            bail!("{}: not a twin dataset, model or clusters file (its first bytes are none of their magics)", path.display());
        }
        Ok(())
    }
}
