//! Interaction logs in Parquet (feature `parquet`): the same columns the CSV readers take, with
//! the same meaning, through the Apache `parquet` crate's Arrow reader.
//!
//! - A file with the columns `userId, movieId, rating, timestamp` (any case) is read as
//!   MovieLens ratings (`movielens` module: `p = rating / 5`, genres from a `movies.csv` beside
//!   it); any other file as a KuaiRand / KuaiRec log (`kuai` module: `user_id`, `video_id`, a
//!   time column, play time, duration, label), optionally with an item-features file in CSV or
//!   Parquet.
//! - Every row goes through the CSV readers' own row parser ([`Cells`]): each cell the parser
//!   reads is rendered as the text a CSV writer would have written (integers in decimal, floats
//!   in their shortest round-trip form, nulls empty, `Date32` as `YYYYMMDD`, timestamps as
//!   `YYYY-MM-DD HH:MM:SS.fff` UTC). The same rows therefore build the same dataset from either
//!   format, and bad values get the same errors, naming the column and the value; `line` in a
//!   [`Error::Parse`] is the 1-based row number (0: the schema).
//! - Streamed: only the columns the parser reads are decoded (a projection), one row group at a
//!   time, in batches of [`BATCH_ROWS`], so a file larger than memory can be imported as long as
//!   its parsed rows fit.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use super::build::ItemMeta;
use super::kuai::{ItemFeatureCols, KuaiLog};
use super::movielens::{build_ratings, movies_beside, rating_row};
use super::text::{civil_from_days, excerpt, Cells};
use super::Dataset;
use crate::error::{Error, Result};

/// Rows decoded per batch: large enough to amortise decoding, small enough to stay in cache.
pub const BATCH_ROWS: usize = 8192;

/// Reads a Parquet interaction log (see the module docs).
pub fn read_parquet(path: &Path, item_features: Option<&Path>) -> Result<Dataset> {
    let file = ParquetFile::open(path)?;
    let lower: Vec<String> = file.names.iter().map(|n| n.trim().to_ascii_lowercase()).collect();
    let find = |n: &str| lower.iter().position(|c| c == n);
    if let (Some(u), Some(i), Some(r), Some(t)) = (find("userid"), find("movieid"), find("rating"), find("timestamp")) {
        let cols = [u, i, r, t];
        let mut src = file.rows(&cols)?;
        let mut rows = Vec::new();
        while src.next_row()? {
            rows.push(rating_row(&src, cols, ["userId", "movieId", "rating", "timestamp"], &|f, w| src.err(f, w))?);
        }
        return build_ratings(rows, &movies_beside(path)?);
    }
    let meta = match item_features {
        Some(p) => super::import::read_item_features(p)?,
        None => HashMap::new(),
    };
    let item_has_duration = meta.values().any(|m| m.duration.is_some());
    let cols = KuaiLog::resolve(&file.names, item_has_duration, &|f, w| file.schema_err(f, w))?;
    let mut src = file.rows(&cols.columns())?;
    let mut rows = Vec::new();
    while src.next_row()? {
        if let Some(row) = cols.row(&src, &|f, w| src.err(f, w))? {
            rows.push(row);
        }
    }
    cols.build(rows, &meta)
}

/// A Kuai item-features file in Parquet (the columns of the CSV one).
pub(crate) fn read_item_features_parquet(path: &Path) -> Result<HashMap<u64, ItemMeta>> {
    let file = ParquetFile::open(path)?;
    let cols = ItemFeatureCols::resolve(&file.names, &|f, w| file.schema_err(f, w))?;
    let mut src = file.rows(&cols.columns())?;
    let mut out = HashMap::new();
    while src.next_row()? {
        cols.apply(&src, &|f, w| src.err(f, w), &mut out)?;
    }
    Ok(out)
}

/// An opened Parquet file whose schema has been read but no data yet.
struct ParquetFile {
    path: PathBuf,
    builder: ParquetRecordBatchReaderBuilder<File>,
    /// Top-level column names, in schema order.
    names: Vec<String>,
}

impl ParquetFile {
    fn open(path: &Path) -> Result<ParquetFile> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| corrupt(path, e))?;
        let names = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
        Ok(ParquetFile { path: path.to_path_buf(), builder, names })
    }

    /// An error about the schema (a missing column, a type the readers cannot take).
    fn schema_err(&self, field: &str, what: String) -> Error {
        Error::Parse { path: self.path.clone(), line: 0, field: excerpt(field, 80), what: excerpt(&what, 240) }
    }

    /// Streams the rows, decoding only the columns `cols` (schema indices).
    fn rows(self, cols: &[usize]) -> Result<ParquetRows> {
        let mut cols = cols.to_vec();
        cols.sort_unstable();
        cols.dedup();
        let schema = self.builder.schema().clone();
        for &c in &cols {
            let t = schema.field(c).data_type();
            if !supported(t) {
                return Err(self.schema_err(
                    &self.names[c],
                    format!("Parquet column type {t} is not supported (integers, floats, booleans, strings, dates and timestamps are)"),
                ));
            }
        }
        let mask = ProjectionMask::roots(self.builder.parquet_schema(), cols.iter().copied());
        let reader = self.builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(|e| corrupt(&self.path, e))?;
        Ok(ParquetRows {
            path: self.path,
            reader,
            cols,
            batch: Vec::new(),
            len: 0,
            at: 0,
            row: 0,
            cells: vec![String::new(); self.names.len()],
        })
    }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::corrupt(path, format!("not a readable Parquet file: {}", excerpt(&e.to_string(), 240)))
}

/// One row at a time, its read columns rendered as text (see the module docs).
struct ParquetRows {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    /// Schema index of each decoded column, in batch order (the projection keeps schema order).
    cols: Vec<usize>,
    batch: Vec<ArrayRef>,
    len: usize,
    at: usize,
    /// 1-based number of the current row in the file.
    row: usize,
    /// The current row's cells by schema index (columns not read stay empty).
    cells: Vec<String>,
}

impl ParquetRows {
    /// Advances to the next row; `false` at the end of the file.
    fn next_row(&mut self) -> Result<bool> {
        while self.at >= self.len {
            match self.reader.next() {
                None => return Ok(false),
                Some(Err(e)) => return Err(corrupt(&self.path, e)),
                Some(Ok(b)) => {
                    // Dictionary columns (pandas categoricals) are expanded once per batch.
                    let mut arrays = Vec::with_capacity(b.num_columns());
                    for a in b.columns() {
                        arrays.push(match a.data_type() {
                            DataType::Dictionary(_, _) => {
                                let d = a.as_any_dictionary();
                                arrow_select::take::take(d.values().as_ref(), d.keys(), None).map_err(|e| corrupt(&self.path, e))?
                            }
                            _ => a.clone(),
                        });
                    }
                    self.batch = arrays;
                    self.len = b.num_rows();
                    self.at = 0;
                }
            }
        }
        for (k, &c) in self.cols.iter().enumerate() {
            render(self.batch[k].as_ref(), self.at, &mut self.cells[c]);
        }
        self.at += 1;
        self.row += 1;
        Ok(true)
    }

    fn err(&self, field: &str, what: String) -> Error {
        Error::Parse { path: self.path.clone(), line: self.row, field: excerpt(field, 80), what: excerpt(&what, 240) }
    }
}

impl Cells for ParquetRows {
    fn cell(&self, i: usize) -> &str {
        self.cells.get(i).map_or("", |s| s.trim())
    }
}

/// Types [`render`] writes; checked on the schema before any row is read.
fn supported(t: &DataType) -> bool {
    use DataType as T;
    match t {
        T::Int8 | T::Int16 | T::Int32 | T::Int64 | T::UInt8 | T::UInt16 | T::UInt32 | T::UInt64 => true,
        T::Float32 | T::Float64 | T::Boolean | T::Utf8 | T::LargeUtf8 | T::Utf8View | T::Date32 | T::Timestamp(_, _) => true,
        T::Dictionary(_, v) => matches!(v.as_ref(), T::Utf8 | T::LargeUtf8 | T::Int32 | T::Int64),
        _ => false,
    }
}

/// Writes cell `i` of `a` as CSV text into `out` (empty for a null).
fn render(a: &dyn Array, i: usize, out: &mut String) {
    use DataType as T;
    out.clear();
    if a.is_null(i) {
        return;
    }
    // Writing into a String cannot fail.
    let _ = match a.data_type() {
        T::Int8 => write!(out, "{}", a.as_primitive::<Int8Type>().value(i)),
        T::Int16 => write!(out, "{}", a.as_primitive::<Int16Type>().value(i)),
        T::Int32 => write!(out, "{}", a.as_primitive::<Int32Type>().value(i)),
        T::Int64 => write!(out, "{}", a.as_primitive::<Int64Type>().value(i)),
        T::UInt8 => write!(out, "{}", a.as_primitive::<UInt8Type>().value(i)),
        T::UInt16 => write!(out, "{}", a.as_primitive::<UInt16Type>().value(i)),
        T::UInt32 => write!(out, "{}", a.as_primitive::<UInt32Type>().value(i)),
        T::UInt64 => write!(out, "{}", a.as_primitive::<UInt64Type>().value(i)),
        // `{}` is the shortest text that reads back as the same float.
        T::Float32 => write!(out, "{}", a.as_primitive::<Float32Type>().value(i)),
        T::Float64 => write!(out, "{}", a.as_primitive::<Float64Type>().value(i)),
        T::Boolean => write!(out, "{}", a.as_boolean().value(i)),
        T::Utf8 => write!(out, "{}", a.as_string::<i32>().value(i)),
        T::LargeUtf8 => write!(out, "{}", a.as_string::<i64>().value(i)),
        T::Utf8View => write!(out, "{}", a.as_string_view().value(i)),
        T::Date32 => {
            // KuaiRand's `date` column is YYYYMMDD.
            let (y, m, d) = civil_from_days(a.as_primitive::<arrow_array::types::Date32Type>().value(i) as i64);
            write!(out, "{y:04}{m:02}{d:02}")
        }
        T::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => a.as_primitive::<arrow_array::types::TimestampSecondType>().value(i).saturating_mul(1000),
                TimeUnit::Millisecond => a.as_primitive::<arrow_array::types::TimestampMillisecondType>().value(i),
                TimeUnit::Microsecond => a.as_primitive::<arrow_array::types::TimestampMicrosecondType>().value(i).div_euclid(1000),
                TimeUnit::Nanosecond => a.as_primitive::<arrow_array::types::TimestampNanosecondType>().value(i).div_euclid(1_000_000),
            };
            let (day, ms) = (v.div_euclid(86_400_000), v.rem_euclid(86_400_000));
            let (y, m, d) = civil_from_days(day);
            write!(out, "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
        }
        // Refused by `supported` before any row is read; a dictionary was expanded per batch.
        _ => Ok(()),
    };
}
