//! `twin init`: a fresh model for a dataset's item catalogue.

use std::path::PathBuf;

use anyhow::Result;

use twin_engine::model::{Model, ModelConfig};

/// `twin init`: initialise a model for a dataset's item catalogue (deterministic from the seed).
#[derive(clap::Args)]
pub struct InitArgs {
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl InitArgs {
    pub fn run(self) -> Result<()> {
        let ds = super::load_data(&self.data)?;
        let m = Model::init(ModelConfig::for_items(&ds.items), &ds.items, self.seed)?;
        m.save(&self.out)?;
        println!("{}", m.describe());
        println!("wrote {}", self.out.display());
        Ok(())
    }
}
