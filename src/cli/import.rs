//! `twin import`: a MovieLens or KuaiRand/KuaiRec log (CSV or Parquet) into a dataset file.

use std::path::PathBuf;

use anyhow::Result;

use twin_engine::data::{self, LogFormat};

/// `twin import`: convert a MovieLens (ratings.csv, u.data, ratings.dat) or KuaiRand/KuaiRec
/// log, CSV or Parquet, into a dataset file.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// The log file. Its reader is chosen by content, whatever the file is called: Parquet by
    /// its magic, MovieLens ratings by their first line, else a Kuai CSV log.
    pub log: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// The reader, when the content does not say.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub format: LogFormat,
    /// KuaiRand/KuaiRec item features, CSV or Parquet (video_id, author_id, topic column).
    #[arg(long)]
    pub item_features: Option<PathBuf>,
}

impl ImportArgs {
    pub fn run(self) -> Result<()> {
        let ds = data::read_log_as(&self.log, self.format, self.item_features.as_deref())?;
        ds.save(&self.out)?;
        println!("{}", ds.describe());
        println!("wrote {}", self.out.display());
        Ok(())
    }
}
