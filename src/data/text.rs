//! Small text-input helpers shared by the log readers: a streaming line reader (lossy UTF-8, so
//! Latin-1 files such as ml-100k's `u.item` still read), a quote-aware field splitter, calendar
//! arithmetic without a date crate, and dense vocabularies. Nothing here panics on bad input.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Streams the lines of a file with 1-based line numbers; `\r\n` and a UTF-8 BOM are stripped.
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
        if self.line == 1 && bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
            bytes = &bytes[3..];
        }
        self.text.clear();
        match std::str::from_utf8(bytes) {
            Ok(s) => self.text.push_str(s),
            // Latin-1 fallback: every byte is its own code point (ml-100k, ml-1m are Latin-1).
            Err(_) => self.text.extend(bytes.iter().map(|&b| b as char)),
        }
        Ok(Some(&self.text))
    }

    /// A parse error at the current line. Field and message quote the input, so both are cut to
    /// a short excerpt with control characters escaped: a hostile or binary file cannot flood or
    /// drive the terminal through an error message.
    pub fn err(&self, field: impl Into<String>, what: impl Into<String>) -> Error {
        Error::Parse { path: self.path.clone(), line: self.line, field: excerpt(&field.into(), 80), what: excerpt(&what.into(), 240) }
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

/// Splits one delimited line into fields. Double-quoted fields may hold the delimiter and `""`
/// escapes (movies.csv titles, KuaiRec's `feat` lists); unquoted fields are taken verbatim.
#[derive(Default)]
pub(crate) struct Fields {
    buf: String,
    ranges: Vec<(usize, usize)>,
}

impl Fields {
    pub fn split(&mut self, line: &str, delim: &str) {
        self.buf.clear();
        self.ranges.clear();
        if !line.contains('"') {
            for f in line.split(delim) {
                let s = self.buf.len();
                self.buf.push_str(f);
                self.ranges.push((s, self.buf.len()));
            }
            return;
        }
        let mut rest = line;
        loop {
            let start = self.buf.len();
            if let Some(q) = rest.strip_prefix('"') {
                // Quoted field: read to the closing quote, unescaping "".
                let mut r = q;
                loop {
                    match r.find('"') {
                        Some(i) => {
                            self.buf.push_str(&r[..i]);
                            r = &r[i + 1..];
                            if let Some(rr) = r.strip_prefix('"') {
                                self.buf.push('"');
                                r = rr;
                            } else {
                                break;
                            }
                        }
                        None => {
                            // Unterminated quote: keep the rest as the field's text.
                            self.buf.push_str(r);
                            r = "";
                            break;
                        }
                    }
                }
                // Anything between the closing quote and the delimiter is kept verbatim.
                match r.find(delim) {
                    Some(i) => {
                        self.buf.push_str(&r[..i]);
                        self.ranges.push((start, self.buf.len()));
                        rest = &r[i + delim.len()..];
                    }
                    None => {
                        self.buf.push_str(r);
                        self.ranges.push((start, self.buf.len()));
                        return;
                    }
                }
            } else {
                match rest.find(delim) {
                    Some(i) => {
                        self.buf.push_str(&rest[..i]);
                        self.ranges.push((start, self.buf.len()));
                        rest = &rest[i + delim.len()..];
                    }
                    None => {
                        self.buf.push_str(rest);
                        self.ranges.push((start, self.buf.len()));
                        return;
                    }
                }
            }
        }
    }

    /// Splits on `delim` with no quote handling (formats that never quote, like `u.item`).
    pub fn split_plain(&mut self, line: &str, delim: char) {
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

    #[test]
    fn csv_fields() {
        let mut f = Fields::default();
        f.split("1,\"Cry, the Beloved Country (1995)\",Drama", ",");
        assert_eq!(f.len(), 3);
        assert_eq!(f.get(1), "Cry, the Beloved Country (1995)");
        f.split("a,\"say \"\"hi\"\"\",\"[27, 9]\"", ",");
        assert_eq!(f.get(1), "say \"hi\"");
        assert_eq!(f.get(2), "[27, 9]");
        f.split("1::Toy Story (1995)::Animation", "::");
        assert_eq!(f.get(2), "Animation");
        f.split("x,\"unterminated", ",");
        assert_eq!(f.get(1), "unterminated");
        assert_eq!(f.get(9), "");
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
