//! Small text-input helpers shared by the log readers: delimited records through the `csv` crate
//! ([`Records`]: quoting, `""` escapes, quoted delimiters and newlines per RFC 4180), a streaming
//! line reader for MovieLens' `::`-separated `.dat` files (`::` is not a one-byte delimiter, and
//! those files never quote, so they are split plainly), calendar arithmetic without a date crate,
//! and dense vocabularies. Text is lossy: a record or line that is not UTF-8 is read as Latin-1,
//! so files such as ml-100k's `u.item` still read. Nothing here panics on bad input.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

/// How a file's fields are separated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sep {
    /// One-byte delimiter with CSV quoting (`"` opens a quoted field, `""` escapes a quote).
    Quoted(u8),
    /// One-byte delimiter, quotes are plain text (`u.item`, whose titles may hold `"`).
    Plain(u8),
    /// MovieLens `.dat` files' `::`. The `csv` crate takes one-byte delimiters only, and these
    /// files never quote, so their lines are split on `::` by hand.
    DoubleColon,
}

enum Source {
    /// The reader, its record, and the offset (in the reader's input, past any BOM) at which the
    /// file's last line ends without a '\n' (`u64::MAX` when it ends with one).
    Csv(Box<csv::Reader<BufReader<File>>>, csv::ByteRecord, u64),
    Dat(Lines),
}

/// Streams the records of a delimited file with the 1-based line each record starts on:
/// through the `csv` crate for one-byte delimiters (RFC 4180 quoting, quoted fields may hold the
/// delimiter, `""` and newlines), by lines for `::`. Records may have any number of fields (a
/// short row reads as empty cells); blank lines (also of only spaces) are skipped and a UTF-8
/// BOM is dropped.
pub(crate) struct Records {
    src: Source,
    fields: Fields,
    pub line: usize,
    pub path: PathBuf,
}

impl Records {
    pub fn open(path: &Path, sep: Sep) -> Result<Self> {
        let (delimiter, quoting) = match sep {
            Sep::Quoted(d) => (d, true),
            Sep::Plain(d) => (d, false),
            Sep::DoubleColon => {
                let src = Source::Dat(Lines::open(path)?);
                return Ok(Records { src, fields: Fields::default(), line: 0, path: path.to_path_buf() });
            }
        };
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        let unterminated_end = unterminated_end(&mut f).map_err(|e| Error::io(path, e))?;
        let mut inner = BufReader::with_capacity(1 << 16, f);
        let bom = inner.fill_buf().map_err(|e| Error::io(path, e))?.starts_with(BOM);
        if bom {
            inner.consume(BOM.len());
        }
        let unterminated_end = unterminated_end.saturating_sub(if bom { BOM.len() as u64 } else { 0 });
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .quoting(quoting)
            .double_quote(true)
            // Records end at '\n' only: with the default CRLF terminator the crate reports the
            // line after a "\r\n" as the previous one. A trailing '\r' is trimmed with the cell.
            .terminator(csv::Terminator::Any(b'\n'))
            .buffer_capacity(1 << 20)
            .from_reader(inner);
        let src = Source::Csv(Box::new(reader), csv::ByteRecord::new(), unterminated_end);
        Ok(Records { src, fields: Fields::default(), line: 0, path: path.to_path_buf() })
    }

    /// Reads the next non-blank record into [`Records::fields`]; `false` at the end of the file.
    pub fn next_record(&mut self) -> Result<bool> {
        let (reader, record, unterminated_end) = match &mut self.src {
            Source::Csv(reader, record, end) => (reader, record, *end),
            Source::Dat(lines) => {
                while let Some(line) = lines.next_line()? {
                    if !line.trim().is_empty() {
                        self.fields.split_plain(line, "::");
                        self.line = lines.line;
                        return Ok(true);
                    }
                }
                self.line = lines.line;
                return Ok(false);
            }
        };
        loop {
            let more = match reader.read_byte_record(record) {
                Ok(more) => more,
                Err(e) => {
                    if let Some(p) = e.position() {
                        self.line = p.line() as usize;
                    }
                    let path = &self.path;
                    return Err(match e.into_kind() {
                        csv::ErrorKind::Io(io) => Error::io(path, io),
                        other => parse_error(path, self.line, "record".into(), format!("{other:?}")),
                    });
                }
            };
            if !more {
                return Ok(false);
            }
            // The crate positions a record where its search began, before any blank lines it
            // skipped; so count back from where the record ended instead: past its own '\n' (none
            // on a last line without one) and the '\n's inside its quoted fields.
            let after = reader.position();
            let own_newline = after.byte() != unterminated_end;
            let inside = record.as_slice().iter().filter(|&&b| b == b'\n').count();
            self.line = (after.line() as usize).saturating_sub(inside + usize::from(own_newline));
            if record.len() == 1 && record[0].iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.fields.set_record(record);
            return Ok(true);
        }
    }

    /// The current record's fields.
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// A parse error at the current record's line (see [`Lines::err`]).
    pub fn err(&self, field: impl Into<String>, what: impl Into<String>) -> Error {
        parse_error(&self.path, self.line, field.into(), what.into())
    }
}

/// The length of `f` when its last byte is not a '\n', else `u64::MAX`; leaves `f` at its start.
fn unterminated_end(f: &mut File) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata()?.len();
    let mut last = [b'\n'];
    if len > 0 && f.seek(SeekFrom::End(-1)).is_ok() {
        f.read_exact(&mut last)?;
    }
    f.seek(SeekFrom::Start(0))?;
    Ok(if last[0] == b'\n' { u64::MAX } else { len })
}

/// Streams the lines of a file with 1-based line numbers; `\r\n` and a UTF-8 BOM are stripped.
/// [`Records`] reads `::`-separated files through it (and sniffs a file's first line with it).
pub(crate) struct Lines {
    reader: BufReader<File>,
    raw: Vec<u8>,
    text: String,
    pub line: usize,
    pub path: PathBuf,
}

impl Lines {
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Lines { reader: BufReader::with_capacity(1 << 20, f), raw: Vec::new(), text: String::new(), line: 0, path: path.to_path_buf() })
    }

    /// The next line (without its terminator), or `None` at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<&str>> {
        self.raw.clear();
        let n = self.reader.read_until(b'\n', &mut self.raw).map_err(|e| Error::io(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        while matches!(self.raw.last(), Some(b'\n' | b'\r')) {
            self.raw.pop();
        }
        let mut bytes: &[u8] = &self.raw;
        if self.line == 1 && bytes.starts_with(BOM) {
            bytes = &bytes[3..];
        }
        self.text.clear();
        push_lossy(&mut self.text, bytes);
        Ok(Some(&self.text))
    }

    /// A parse error at the current line. Field and message quote the input, so both are cut to
    /// a short excerpt with control characters escaped: a hostile or binary file cannot flood or
    /// drive the terminal through an error message.
    pub fn err(&self, field: impl Into<String>, what: impl Into<String>) -> Error {
        parse_error(&self.path, self.line, field.into(), what.into())
    }
}

fn parse_error(path: &Path, line: usize, field: String, what: String) -> Error {
    Error::Parse { path: path.to_path_buf(), line, field: excerpt(&field, 80), what: excerpt(&what, 240) }
}

/// Appends `bytes` as UTF-8, or as Latin-1 when they are not UTF-8 (every byte its own code
/// point: ml-100k and ml-1m are Latin-1).
fn push_lossy(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => out.extend(bytes.iter().map(|&b| b as char)),
    }
}

/// `s` with control characters escaped (`\n`, `\u{1b}`), cut after `max` characters with a note of
/// how much was left out.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == max {
            let rest = s.chars().count() - max;
            out.push_str(&format!("… ({rest} more characters)"));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// One record's fields as text: from a [`Records`] record, or a `.dat` line split plainly.
#[derive(Default)]
pub(crate) struct Fields {
    buf: String,
    ranges: Vec<(usize, usize)>,
}

impl Fields {
    /// The fields of a record the `csv` crate parsed (quotes and escapes already resolved); a
    /// record that is not UTF-8 is read as Latin-1 as a whole.
    fn set_record(&mut self, record: &csv::ByteRecord) {
        self.buf.clear();
        self.ranges.clear();
        let utf8 = std::str::from_utf8(record.as_slice()).is_ok();
        for f in record {
            let s = self.buf.len();
            // Delimiters and quotes are ASCII, so the fields of a UTF-8 record are UTF-8 too.
            if utf8 {
                push_lossy(&mut self.buf, f);
            } else {
                self.buf.extend(f.iter().map(|&b| b as char));
            }
            self.ranges.push((s, self.buf.len()));
        }
    }

    /// Splits on `delim` with no quote handling: MovieLens `ratings.dat` / `movies.dat`, whose
    /// `::` separator the `csv` crate (one-byte delimiters) cannot express, and which never quote.
    pub fn split_plain(&mut self, line: &str, delim: &str) {
        self.buf.clear();
        self.ranges.clear();
        for f in line.split(delim) {
            let s = self.buf.len();
            self.buf.push_str(f);
            self.ranges.push((s, self.buf.len()));
        }
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Field `i`, trimmed; `""` when the line is shorter.
    pub fn get(&self, i: usize) -> &str {
        match self.ranges.get(i) {
            Some(&(s, e)) => self.buf[s..e].trim(),
            None => "",
        }
    }
}

/// One row's cells by column index, as text: a CSV line split into [`Fields`], or a Parquet row
/// rendered cell by cell (`data::parquet`). The log readers parse rows through this, so both
/// formats obey the same rules and errors.
pub(crate) trait Cells {
    /// Cell `i`, trimmed; `""` when missing (a short line, a null).
    fn cell(&self, i: usize) -> &str;
}

impl Cells for Fields {
    fn cell(&self, i: usize) -> &str {
        self.get(i)
    }
}

/// Empty cells and pandas' spellings of a missing value.
pub(crate) fn is_missing(s: &str) -> bool {
    matches!(s, "" | "nan" | "NaN" | "NAN" | "null" | "NULL" | "None" | "NA" | "N/A")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day count since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` (UTC) of a Unix time in seconds.
pub(crate) fn format_date(seconds: i64) -> String {
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since the epoch of a `YYYYMMDD` integer (KuaiRand's `date`, which pandas may have
/// written as `20200705.0`).
pub(crate) fn parse_yyyymmdd(s: &str) -> Option<i64> {
    let v: f64 = s.parse().ok()?;
    if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 1e8) {
        return None;
    }
    let v = v as i64;
    let (y, m, d) = (v / 10_000, (v / 100 % 100) as u32, (v % 100) as u32);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Milliseconds since the epoch of `YYYY-MM-DD HH:MM:SS[.fff]` (or with a `T`), read as UTC.
pub(crate) fn parse_datetime_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], s[i + 1..].trim()),
        None => (s, ""),
    };
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    if dp.next().is_some() || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    if !time.is_empty() {
        let mut tp = time.split(':');
        let h: i64 = tp.next()?.parse().ok()?;
        let mi: i64 = tp.next()?.parse().ok()?;
        let sec: f64 = match tp.next() {
            Some(x) => x.parse().ok()?,
            None => 0.0,
        };
        let valid = tp.next().is_none() && (0..24).contains(&h) && (0..60).contains(&mi) && (0.0..61.0).contains(&sec);
        if !valid {
            return None;
        }
        ms += (h * 3600 + mi * 60) * 1000 + (sec * 1000.0).round() as i64;
    }
    Some(ms)
}

/// Maps raw category strings to dense ids `1..`, with `0` reserved for "unknown", in a
/// deterministic order (numbers numerically, then other strings lexicographically).
pub(crate) struct Vocab {
    pub ids: HashMap<String, u32>,
    pub size: u32,
}

impl Vocab {
    pub fn build<'a>(values: impl Iterator<Item = &'a str>) -> Vocab {
        let mut set: BTreeMap<(Option<i64>, &str), ()> = BTreeMap::new();
        for v in values {
            set.insert((v.parse::<i64>().ok(), v), ());
        }
        let mut ids = HashMap::with_capacity(set.len());
        for (i, ((_, v), _)) in set.into_iter().enumerate() {
            ids.insert(v.to_string(), i as u32 + 1);
        }
        let size = ids.len() as u32 + 1;
        Vocab { ids, size }
    }

    pub fn get(&self, v: Option<&str>) -> u32 {
        v.and_then(|v| self.ids.get(v).copied()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("plain", 10), "plain");
        assert_eq!(excerpt("a\x1b[31mb\n", 20), "a\\u{1b}[31mb\\n");
        let long = "x".repeat(20_000);
        let e = excerpt(&long, 240);
        assert!(e.len() < 300 && e.ends_with("(19760 more characters)"), "{e}");
    }

    /// Every non-blank record of `text` (written to a file) as (line, fields).
    fn records(text: &[u8], sep: Sep) -> Vec<(usize, Vec<String>)> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        std::fs::write(&p, text).unwrap();
        let mut r = Records::open(&p, sep).unwrap();
        let mut out = vec![];
        while r.next_record().unwrap() {
            let f = r.fields();
            let fields = (0..f.len()).map(|i| f.get(i).to_string()).collect();
            out.push((r.line, fields));
        }
        out
    }

    fn row(line: usize, f: &[&str]) -> (usize, Vec<String>) {
        (line, f.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn csv_records() {
        let text =
            "\u{feff}movieId,title\r\n1,\"Cry, the Beloved Country (1995)\",Drama\n\n   \na,\"say \"\"hi\"\"\",\"[27, 9]\"\nshort\n,,\n";
        let got = records(text.as_bytes(), Sep::Quoted(b','));
        assert_eq!(
            got,
            [
                row(1, &["movieId", "title"]),
                row(2, &["1", "Cry, the Beloved Country (1995)", "Drama"]),
                row(5, &["a", "say \"hi\"", "[27, 9]"]),
                row(6, &["short"]),
                row(7, &["", "", ""]),
            ]
        );
        // A quoted field may span lines; the next record's line number counts them.
        let got = records(b"1,\"two\nlines\",x\n2,y\n", Sep::Quoted(b','));
        assert_eq!(got, [row(1, &["1", "two\nlines", "x"]), row(3, &["2", "y"])]);
        // CRLF lines: the '\r' goes with the (trimmed) last cell, quoted or not.
        assert_eq!(records(b"a,\"b\"\r\nc,d\r\n", Sep::Quoted(b',')), [row(1, &["a", "b"]), row(2, &["c", "d"])]);
        // Unterminated quote at the end of the file: the rest is the field's text.
        assert_eq!(records(b"x,\"unterminated", Sep::Quoted(b',')), [row(1, &["x", "unterminated"])]);
        assert_eq!(records(b"\n\na\n\n\"b\nc\"", Sep::Quoted(b',')), [row(3, &["a"]), row(5, &["b\nc"])]);
        // Tab- and pipe-separated; quoting off keeps quotes verbatim; Latin-1 fallback.
        assert_eq!(records(b"196\t242\t3\n", Sep::Quoted(b'\t')), [row(1, &["196", "242", "3"])]);
        assert_eq!(records(b"1|\"Heat\" Caf\xe9|x\n", Sep::Plain(b'|')), [row(1, &["1", "\"Heat\" Caf\u{e9}", "x"])]);
        // `::` lines: split plainly, quotes kept, blank lines skipped.
        let got = records(b"1::\"Toy\" Story (1995)::Animation\n\n2::b::c\n", Sep::DoubleColon);
        assert_eq!(got, [row(1, &["1", "\"Toy\" Story (1995)", "Animation"]), row(3, &["2", "b", "c"])]);
    }

    #[test]
    fn calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        for z in [-800_000i64, -1, 59, 10_956, 18_000, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(format_date(1_260_759_144), "2009-12-14");
        assert_eq!(parse_yyyymmdd("20200705.0"), Some(days_from_civil(2020, 7, 5)));
        assert_eq!(parse_yyyymmdd("20200230"), None);
        assert_eq!(parse_datetime_ms("2020-07-05 05:27:48.378"), Some(1_593_926_868_378));
        assert_eq!(parse_datetime_ms("2020-13-05"), None);
    }

    #[test]
    fn vocab_order() {
        let v = Vocab::build(["10", "9", "b", "a", "9"].into_iter());
        assert_eq!(v.size, 5);
        assert_eq!(v.get(Some("a")), 1);
        assert_eq!(v.get(Some("9")), 3);
        assert_eq!(v.get(Some("10")), 4);
        assert_eq!(v.get(Some("zz")), 0);
        assert_eq!(v.get(None), 0);
    }
}
