//! Which reader a log file goes to: Parquet by its magic (`PAR1`, whatever the file is called),
//! MovieLens ratings by name (`ratings*`, `u.data`), anything else as a Kuai CSV log. `twin
//! import`, `twin cluster --data LOG` and the Python package all come through here.

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

/// Reads an interaction log (Parquet, MovieLens ratings or a Kuai CSV log) into a dataset.
/// `item_features` (CSV or Parquet) applies to Kuai logs.
pub fn read_log(path: &Path, item_features: Option<&Path>) -> Result<Dataset> {
    if is_parquet(path)? {
        return read_parquet_log(path, item_features);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.starts_with("ratings") || name == "u.data" {
        super::read_movielens(path)
    } else {
        super::read_kuai(path, item_features)
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
