//! Which reader a log file goes to, by its content, whatever the file is called: Parquet by its
//! magic (`PAR1`); MovieLens ratings by their first line (tab-separated `u.data`, `::`-separated
//! `ratings.dat`, or a `userId,...` header); anything else as a Kuai CSV log, whose reader names
//! the columns it misses. [`LogFormat`] overrides the guess. `twin import`, `twin cluster --data
//! LOG` and the Python package all come through here.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::build::ItemMeta;
use super::Dataset;
use crate::error::{Error, Result};

/// The first four bytes of every Parquet file (and its last four).
pub const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

/// Whether `path` starts with the Parquet magic.
pub fn is_parquet(path: &Path) -> Result<bool> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut m = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match f.read(&mut m[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(&m == PARQUET_MAGIC)
}

/// The reader of a log file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum LogFormat {
    /// Chosen by the content (see the module's documentation).
    #[default]
    Auto,
    Parquet,
    /// MovieLens ratings: `ratings.csv`, `u.data` or `ratings.dat`, told apart by the first line.
    Movielens,
    /// A KuaiRand / KuaiRec CSV log with a header.
    Kuai,
}

/// The first non-blank line of a text file (at most 64 KiB of it), lower-cased.
fn first_line(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    loop {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got == buf.len() || buf[..got].iter().any(|&b| b == b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    let text = String::from_utf8_lossy(&buf[..got]);
    Ok(text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").to_ascii_lowercase())
}

/// What [`LogFormat::Auto`] picks for `path`.
pub fn sniff_log(path: &Path) -> Result<LogFormat> {
    if is_parquet(path)? {
        return Ok(LogFormat::Parquet);
    }
    let line = first_line(path)?;
    Ok(if line.contains('\t') || line.contains("::") || line.starts_with("userid") { LogFormat::Movielens } else { LogFormat::Kuai })
}

/// Reads an interaction log (Parquet, MovieLens ratings or a Kuai CSV log) into a dataset, the
/// reader chosen by content. `item_features` (CSV or Parquet) applies to Kuai logs.
pub fn read_log(path: &Path, item_features: Option<&Path>) -> Result<Dataset> {
    read_log_as(path, LogFormat::Auto, item_features)
}

/// [`read_log`] with the reader named: a file that is not what `format` says fails in that
/// reader with its own message. `item_features` with a MovieLens log is an error (it would be
/// ignored).
pub fn read_log_as(path: &Path, format: LogFormat, item_features: Option<&Path>) -> Result<Dataset> {
    let format = if format == LogFormat::Auto { sniff_log(path)? } else { format };
    if format == LogFormat::Movielens && item_features.is_some() {
        return Err(Error::Incompatible {
            what: "item features",
            why: format!("{} is a MovieLens ratings log; item features apply only to KuaiRand / KuaiRec logs", path.display()),
        });
    }
    match format {
        LogFormat::Parquet => read_parquet_log(path, item_features),
        LogFormat::Movielens => super::read_movielens(path),
        _ => super::read_kuai(path, item_features),
    }
}

#[cfg(feature = "parquet")]
fn read_parquet_log(path: &Path, item_features: Option<&Path>) -> Result<Dataset> {
    super::parquet::read_parquet(path, item_features)
}

#[cfg(not(feature = "parquet"))]
fn read_parquet_log(path: &Path, _: Option<&Path>) -> Result<Dataset> {
    Err(no_parquet(path))
}

#[cfg(not(feature = "parquet"))]
fn no_parquet(path: &Path) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        line: 0,
        field: "format".into(),
        what: "a Parquet file, but this build has no `parquet` feature (build with --features parquet)".into(),
    }
}

/// A Kuai item-features file, CSV or Parquet.
pub(crate) fn read_item_features(path: &Path) -> Result<HashMap<u64, ItemMeta>> {
    if is_parquet(path)? {
        #[cfg(feature = "parquet")]
        return super::parquet::read_item_features_parquet(path);
        #[cfg(not(feature = "parquet"))]
        return Err(no_parquet(path));
    }
    super::kuai::read_item_features_csv(path)
}
