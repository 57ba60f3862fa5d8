//! `twin gen`: a synthetic short-video log (users with drifting, resurfacing interests).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use twin_engine::data::{self, SynthConfig};

/// `twin gen`: generate a synthetic dataset (user and item ids are 0-based indices).
#[derive(clap::Args)]
pub struct GenArgs {
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    #[arg(long, default_value_t = 20_000)]
    pub items: usize,
    #[arg(long, default_value_t = 2_000)]
    pub authors: usize,
    #[arg(long, default_value_t = 64)]
    pub topics: usize,
    #[arg(long, default_value_t = 100)]
    pub min_len: usize,
    #[arg(long, default_value_t = 100_000)]
    pub max_len: usize,
    /// Every user gets exactly this many behaviours (instead of --min-len/--max-len).
    #[arg(long, conflicts_with_all = ["min_len", "max_len"])]
    pub fixed_len: Option<usize>,
    #[arg(long, default_value_t = 20)]
    pub samples_per_user: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The lifelong story (issue 16): 4-8 interests, dormancies of about a year during
    /// which the interest is never watched. Pair with --min-len 10000.
    #[arg(long)]
    pub lifelong: bool,
}

impl GenArgs {
    pub fn run(self) -> Result<()> {
        let t0 = Instant::now();
        let cfg = SynthConfig {
            n_users: self.users,
            n_items: self.items,
            n_authors: self.authors,
            n_topics: self.topics,
            min_len: self.min_len,
            max_len: self.max_len,
            fixed_len: self.fixed_len,
            pareto_alpha: 1.2,
            samples_per_user: self.samples_per_user,
            seed: self.seed,
            lifelong: self.lifelong,
        };
        let ds = data::generate(&cfg)?;
        ds.save(&self.out)?;
        println!("{}", ds.describe());
        println!("wrote {} in {:.2} s", self.out.display(), t0.elapsed().as_secs_f64());
        Ok(())
    }
}
