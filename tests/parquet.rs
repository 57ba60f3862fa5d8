//! Parquet logs (feature `parquet`): a Parquet file written here with the Arrow writer, holding
//! the same rows as a CSV log, imports to the same dataset as the CSV; bad values and schemas
//! are typed errors naming the column, the row and the value.
#![cfg(feature = "parquet")]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use twin_engine::data::{self, kuai::read_kuai, movielens::read_movielens, Dataset};
use twin_engine::Error;

/// The Arrow type a CSV column is written as.
#[derive(Clone, Copy)]
enum Kind {
    I64,
    I32,
    F64,
    F32,
    Str,
    Bool,
    /// `YYYYMMDD` (possibly `20200705.0`) as days since the epoch.
    Date,
}

/// Writes `csv` (header + rows; an empty cell is a null) as Parquet with one Arrow type per
/// column, in row groups of `group` rows: the same rows, typed.
fn csv_to_parquet(csv: &str, kinds: &[Kind], path: &Path, group: usize, compression: Compression) {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.len(), kinds.len());
    let rows: Vec<Vec<String>> = lines.map(split_csv).collect();
    let cell = |r: &Vec<String>, c: usize| -> Option<String> { r.get(c).filter(|s| !s.is_empty()).cloned() };
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (c, (&name, &k)) in header.iter().zip(kinds).enumerate() {
        let vals: Vec<Option<String>> = rows.iter().map(|r| cell(r, c)).collect();
        let (t, a): (DataType, ArrayRef) = match k {
            Kind::I64 => {
                (DataType::Int64, Arc::new(vals.iter().map(|v| v.as_ref().map(|s| s.parse::<i64>().unwrap())).collect::<Int64Array>()))
            }
            Kind::I32 => {
                (DataType::Int32, Arc::new(vals.iter().map(|v| v.as_ref().map(|s| s.parse::<i32>().unwrap())).collect::<Int32Array>()))
            }
            Kind::F64 => {
                (DataType::Float64, Arc::new(vals.iter().map(|v| v.as_ref().map(|s| s.parse::<f64>().unwrap())).collect::<Float64Array>()))
            }
            Kind::F32 => {
                (DataType::Float32, Arc::new(vals.iter().map(|v| v.as_ref().map(|s| s.parse::<f32>().unwrap())).collect::<Float32Array>()))
            }
            Kind::Str => (DataType::Utf8, Arc::new(vals.iter().map(|v| v.as_deref()).collect::<StringArray>())),
            Kind::Bool => (DataType::Boolean, Arc::new(vals.iter().map(|v| v.as_ref().map(|s| s == "1")).collect::<BooleanArray>())),
            Kind::Date => (
                DataType::Date32,
                Arc::new(
                    vals.iter()
                        .map(|v| {
                            v.as_ref().map(|s| {
                                let n = s.parse::<f64>().unwrap() as i64;
                                days_from_civil(n / 10_000, n / 100 % 100, n % 100) as i32
                            })
                        })
                        .collect::<Date32Array>(),
                ),
            ),
        };
        fields.push(Field::new(name, t, true));
        cols.push(a);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(group)).set_compression(compression).build();
    let mut w = ArrowWriter::try_new(fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Quote-aware split (the test data has quoted lists like "28,3").
fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for ch in line.chars() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn parse_err(r: twin_engine::Result<Dataset>) -> (usize, String, String) {
    match r {
        Err(Error::Parse { line, field, what, .. }) => (line, field, what),
        other => panic!("expected a parse error, got {:?}", other.map(|d| d.describe())),
    }
}

#[test]
fn movielens_real_parquet_equals_csv() {
    let Some(src) = std::env::var_os("TWIN_DATA_DIR").map(|d| PathBuf::from(d).join("ml-latest-small")) else {
        println!("skipped movielens_real_parquet_equals_csv: TWIN_DATA_DIR is not set");
        return;
    };
    if !src.join("ratings.csv").is_file() {
        println!("skipped movielens_real_parquet_equals_csv: {} is absent", src.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("ratings.csv");
    fs::copy(src.join("ratings.csv"), &csv).unwrap();
    fs::copy(src.join("movies.csv"), dir.path().join("movies.csv")).unwrap();
    let text = fs::read_to_string(&csv).unwrap();
    // Not called ratings*: the reader is chosen by the magic, the layout by the columns. Small
    // row groups, so the file is read as ~25 of them.
    let pq = dir.path().join("interactions.data");
    csv_to_parquet(&text, &[Kind::I64, Kind::I64, Kind::F64, Kind::I64], &pq, 4096, Compression::SNAPPY);
    assert!(data::is_parquet(&pq).unwrap() && !data::is_parquet(&csv).unwrap());
    let from_csv = read_movielens(&csv).unwrap();
    let from_pq = data::read_log(&pq, None).unwrap();
    assert!(from_csv.n_users() > 600 && from_csv.behaviours.len() > 100_000 && from_csv.items.n_topics > 10);
    assert_eq!(from_pq, from_csv);
    // f32 ratings and zstd read the same.
    let pq32 = dir.path().join("ratings32.parquet");
    csv_to_parquet(&text, &[Kind::I32, Kind::I64, Kind::F32, Kind::I64], &pq32, 1 << 20, Compression::ZSTD(Default::default()));
    assert_eq!(data::read_log(&pq32, None).unwrap(), from_csv);
}

const KUAIRAND: &str = "user_id,video_id,date,hourmin,time_ms,is_click,is_like,long_view,play_time_ms,duration_ms,tab
5,100,20220408,1600,1649433600500,1,0,1,12000,20000,1
5,200,20220408,1600,1649433600100,0,0,0,0,8000,1
2,100,20220409,900,1649494800000,1,0,0,3000,20000,0
5,300,20220408,1700,1649437200000,1,1,0,90000,,2
7,300,20220410,,,1,0,0,4000,60000,0
";
const FEATURES: &str = "video_id,author_id,video_type,upload_dt,video_duration,tag
100,77,NORMAL,2022-01-01,20000.0,\"28,3\"
200,12,AD,2022-01-02,8000.0,
300,77,NORMAL,2022-01-03,60000.0,9
";

#[test]
fn kuairand_parquet_equals_csv() {
    let dir = tempfile::tempdir().unwrap();
    let log_csv = write(dir.path(), "log_standard.csv", KUAIRAND);
    let feats_csv = write(dir.path(), "video_features.csv", FEATURES);
    let log_pq = dir.path().join("log_standard.parquet");
    let feats_pq = dir.path().join("video_features.parquet");
    use Kind::*;
    csv_to_parquet(KUAIRAND, &[I64, Str, Date, I32, I64, Bool, I64, I64, F64, I64, I32], &log_pq, 2, Compression::UNCOMPRESSED);
    csv_to_parquet(FEATURES, &[I64, I64, Str, Str, F64, Str], &feats_pq, 2, Compression::SNAPPY);
    let want = read_kuai(&log_csv, Some(&feats_csv)).unwrap();
    assert_eq!(want.source, "kuairand");
    assert_eq!(want.behaviours.len(), 4);
    // Either features file, with the Parquet log; and the Parquet features with the CSV log.
    assert_eq!(data::read_log(&log_pq, Some(&feats_pq)).unwrap(), want);
    assert_eq!(data::read_log(&log_pq, Some(&feats_csv)).unwrap(), want);
    assert_eq!(read_kuai(&log_csv, Some(&feats_pq)).unwrap(), want);
    assert_eq!(data::read_log(&log_pq, None).unwrap(), read_kuai(&log_csv, None).unwrap());
}

#[test]
fn kuairec_parquet_equals_csv() {
    let text = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio
14,148,4381,6067,2020-07-05 05:27:48.378,20200705.0,1593898068.378,0.722103
14,183,11635,6100,2020-07-05 05:28:00.057,20200705.0,1593898080.057,1.907377
14,3649,22422,10867,2020-07-05 05:29:09.479,20200705.0,1593898149.479,2.063311
19,148,1000,6067,,,,0.16
19,183,15000,6100,,,1593000000.0,2.459
";
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "small_matrix.csv", text);
    let pq = dir.path().join("small_matrix.parquet");
    use Kind::*;
    csv_to_parquet(text, &[I64, I64, F64, F64, Str, F64, F64, F64], &pq, 3, Compression::LZ4_RAW);
    let want = read_kuai(&csv, None).unwrap();
    assert_eq!(want.source, "kuairec");
    assert_eq!(want.behaviours.len(), 4);
    assert_eq!(data::read_log(&pq, None).unwrap(), want);
}

#[test]
fn parquet_errors_name_column_row_and_value() {
    let dir = tempfile::tempdir().unwrap();
    use Kind::*;
    // A rating out of range in row 3.
    let p = dir.path().join("a.parquet");
    csv_to_parquet(
        "userId,movieId,rating,timestamp\n1,2,4.5,100\n1,3,3,101\n2,2,7.5,102\n",
        &[I64, I64, F64, I64],
        &p,
        2,
        Compression::SNAPPY,
    );
    let (line, field, what) = parse_err(data::read_log(&p, None));
    assert_eq!((line, field.as_str()), (3, "rating"));
    assert!(what.contains("7.5"), "{what}");
    // A negative play time in row 2 of a Kuai log; an id that is not an integer in row 1.
    csv_to_parquet(
        "user_id,video_id,time_ms,play_time_ms,duration_ms\n1,2,1000,1,5000\n1,2,1000,-4,5000\n",
        &[I64; 5],
        &p,
        8,
        Compression::SNAPPY,
    );
    assert_eq!(parse_err(data::read_log(&p, None)).0, 2);
    csv_to_parquet(
        "user_id,video_id,time_ms,play_time_ms,duration_ms\n1,abc,1000,1,5000\n",
        &[I64, Str, I64, I64, I64],
        &p,
        8,
        Compression::SNAPPY,
    );
    let (line, field, what) = parse_err(data::read_log(&p, None));
    assert_eq!((line, field.as_str()), (1, "video_id"));
    assert!(what.contains("\"abc\""), "{what}");
    // A missing column is named, at row 0 (the schema).
    csv_to_parquet("uid,video_id,time_ms,play_time_ms,duration_ms\n1,2,1000,1,5000\n", &[I64; 5], &p, 8, Compression::SNAPPY);
    assert_eq!(parse_err(data::read_log(&p, None)).1, "user_id");
    // A column type the readers cannot take: binary user ids.
    let schema = Arc::new(Schema::new(vec![
        Field::new("userId", DataType::Binary, false),
        Field::new("movieId", DataType::Int64, false),
        Field::new("rating", DataType::Float64, false),
        Field::new("timestamp", DataType::Int64, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(arrow_array::BinaryArray::from_vec(vec![b"x"])),
        Arc::new(Int64Array::from(vec![1])),
        Arc::new(Float64Array::from(vec![1.0])),
        Arc::new(Int64Array::from(vec![1])),
    ];
    let mut w = ArrowWriter::try_new(fs::File::create(&p).unwrap(), schema.clone(), None).unwrap();
    w.write(&RecordBatch::try_new(schema, cols).unwrap()).unwrap();
    w.close().unwrap();
    let (line, field, what) = parse_err(data::read_log(&p, None));
    assert_eq!((line, field.as_str()), (0, "userId"));
    assert!(what.contains("Binary"), "{what}");
    // The magic but not a Parquet file; a truncated one.
    let fake = write(dir.path(), "fake.csv", "PAR1 but then a CSV\n1,2,3\n");
    assert!(matches!(data::read_log(&fake, None), Err(Error::CorruptFile { .. })));
    csv_to_parquet("userId,movieId,rating,timestamp\n1,2,4.5,100\n", &[I64, I64, F64, I64], &p, 8, Compression::SNAPPY);
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    assert!(matches!(data::read_log(&p, None), Err(Error::CorruptFile { .. })));
}

/// `twin import` takes a Parquet log by its magic, whatever its name.
#[cfg(feature = "server")]
#[test]
fn twin_import_reads_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("log.bin");
    csv_to_parquet(KUAIRAND, &[Kind::I64; 11], &pq, 2, Compression::SNAPPY);
    let out = dir.path().join("log.twd");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_twin")).args(["import"]).arg(&pq).arg("--out").arg(&out).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let csv = write(dir.path(), "log.csv", KUAIRAND);
    assert_eq!(Dataset::load(&out).unwrap(), read_kuai(&csv, None).unwrap());
}
