//! KuaiRand / KuaiRec-style short-video logs (CSV with a header), read by column name.
//!
//! Log columns (first alias present wins; names are case-insensitive):
//! - user: `user_id`; item: `video_id` (integer ids, `12.0` accepted) — required;
//! - time, tried per row in this order among the columns present: `time_ms` (ms since the epoch),
//!   `timestamp` (seconds, possibly fractional), `time` (`YYYY-MM-DD HH:MM:SS[.fff]`),
//!   `date` (`YYYYMMDD`) plus optional `hourmin` (`HHMM`). Dates are read as UTC. An empty/NaN
//!   cell falls through to the next column; a row with no usable time at all is skipped (KuaiRec's
//!   matrices have a few such rows), a malformed time is an error. One of them is required;
//! - play time: `play_time_ms` or `play_duration` (ms) — required;
//! - item duration: `duration_ms` or `video_duration` (ms); optional when the item file gives
//!   `video_duration`/`duration_ms`; an empty cell takes the item's duration;
//! - label: `is_click` if present, else `long_view`, else `watch_ratio >= 2.0` (KuaiRec's
//!   "liked" threshold), else `play_time / duration >= 2.0` computed from the row.
//!
//! Behaviours: when the log has `is_click`, only clicked rows (`is_click = 1`) are behaviours —
//! an unclicked impression is not something the user did; otherwise every row is. Samples: one
//! per row with a time, `request_time` = the row's time (the row itself is never in its own
//! history, which is strictly earlier).
//!
//! Item features (optional file): `video_id` plus `author_id`, a topic column (`tag`,
//! `video_tag_id`, `feat`, `video_type`, first present; a list like `"[8, 3]"` or `"8,3"` gives
//! its first element) and a duration (`video_duration`/`duration_ms`, ms). Repeated rows (daily
//! features) fill what earlier rows left empty. Authors and topics get dense ids from 1; 0 means
//! missing. `duration_bucket = features::duration_bucket(duration in seconds)`.
//! Users and items are the ones in the log, dense in ascending external-id order.

use std::collections::HashMap;
use std::path::Path;

use super::build::{build, BuildOptions, ItemMeta, Row};
use super::text::{is_missing, parse_datetime_ms, parse_yyyymmdd, Cells, Records, Sep};
use super::Dataset;
use crate::error::{Error, Result};

/// Watch ratio at or above which a KuaiRec row counts as positive.
pub const WATCH_RATIO_POSITIVE: f64 = 2.0;

#[derive(Clone, Copy)]
enum TimeCol {
    Ms(usize),
    Seconds(usize),
    DateTime(usize),
    Date(usize, Option<usize>),
}

#[derive(Clone, Copy)]
enum LabelCol {
    Flag(usize, &'static str),
    WatchRatio(usize),
    Computed,
}

/// Reads a KuaiRand/KuaiRec log and optionally an item-features file (see the module docs).
/// The item-features file may be CSV or Parquet (told apart by the Parquet magic).
pub fn read_kuai(log: &Path, item_features: Option<&Path>) -> Result<Dataset> {
    let meta = match item_features {
        Some(p) => super::import::read_item_features(p)?,
        None => HashMap::new(),
    };
    let item_has_duration = meta.values().any(|m| m.duration.is_some());

    let mut rec = Records::open(log, Sep::Quoted(b','))?;
    let names = header(&mut rec)?;
    let cols = KuaiLog::resolve(&names, item_has_duration, &|field, what| rec.err(field, what))?;

    let mut rows = Vec::new();
    while rec.next_record()? {
        if let Some(row) = cols.row(rec.fields(), &|field, what| rec.err(field, what))? {
            rows.push(row);
        }
    }
    cols.build(rows, &meta)
}

/// The column names of a CSV file's first record.
fn header(rec: &mut Records) -> Result<Vec<String>> {
    if !rec.next_record()? {
        return Err(rec.err("header", "empty file: expected a CSV header"));
    }
    let f = rec.fields();
    Ok((0..f.len()).map(|i| f.get(i).to_string()).collect())
}

/// A Kuai log's columns, resolved once from its header (CSV) or schema (Parquet); [`KuaiLog::row`]
/// then turns one row's cells into a [`Row`]. Both file formats go through it, so a Parquet log
/// means exactly what the same rows mean as CSV.
pub(crate) struct KuaiLog {
    names: Vec<String>,
    c_user: usize,
    c_item: usize,
    times: Vec<TimeCol>,
    c_play: usize,
    play_name: &'static str,
    c_dur: Option<(usize, &'static str)>,
    c_click: Option<usize>,
    label: LabelCol,
    source: &'static str,
}

impl KuaiLog {
    /// `names`: the columns in file order (matched case-insensitively). `err(field, what)` makes
    /// the error for a missing column.
    pub fn resolve(names: &[String], item_has_duration: bool, err: &dyn Fn(&str, String) -> Error) -> Result<KuaiLog> {
        let names: Vec<String> = names.iter().map(|n| n.trim().to_ascii_lowercase()).collect();
        let find = |n: &str| names.iter().position(|c| c == n);
        let missing = |what: &str| err(what, format!("missing required column (header has: {})", names.join(",")));

        let c_user = find("user_id").ok_or_else(|| missing("user_id"))?;
        let c_item = find("video_id").ok_or_else(|| missing("video_id"))?;
        let mut times = Vec::new();
        if let Some(c) = find("time_ms") {
            times.push(TimeCol::Ms(c));
        }
        if let Some(c) = find("timestamp") {
            times.push(TimeCol::Seconds(c));
        }
        if let Some(c) = find("time") {
            times.push(TimeCol::DateTime(c));
        }
        if let Some(c) = find("date") {
            times.push(TimeCol::Date(c, find("hourmin")));
        }
        if times.is_empty() {
            return Err(missing("time_ms|timestamp|time|date"));
        }
        let (c_play, play_name) = match (find("play_time_ms"), find("play_duration")) {
            (Some(c), _) => (c, "play_time_ms"),
            (None, Some(c)) => (c, "play_duration"),
            _ => return Err(missing("play_time_ms|play_duration")),
        };
        let c_dur = match (find("duration_ms"), find("video_duration")) {
            (Some(c), _) => Some((c, "duration_ms")),
            (None, Some(c)) => Some((c, "video_duration")),
            _ => None,
        };
        if c_dur.is_none() && !item_has_duration {
            return Err(missing("duration_ms|video_duration (in the log or the item-features file)"));
        }
        let c_click = find("is_click");
        let label = match (c_click, find("long_view"), find("watch_ratio")) {
            (Some(c), _, _) => LabelCol::Flag(c, "is_click"),
            (None, Some(c), _) => LabelCol::Flag(c, "long_view"),
            (None, None, Some(c)) => LabelCol::WatchRatio(c),
            _ => LabelCol::Computed,
        };
        let source = if find("time_ms").is_some() || c_click.is_some() {
            "kuairand"
        } else if find("watch_ratio").is_some() || find("play_duration").is_some() {
            "kuairec"
        } else {
            "kuai"
        };
        Ok(KuaiLog { names, c_user, c_item, times, c_play, play_name, c_dur, c_click, label, source })
    }

    /// Every column a row is read from (a Parquet reader decodes only these).
    #[cfg(feature = "parquet")]
    pub fn columns(&self) -> Vec<usize> {
        let mut c = vec![self.c_user, self.c_item, self.c_play];
        for t in &self.times {
            match *t {
                TimeCol::Ms(x) | TimeCol::Seconds(x) | TimeCol::DateTime(x) => c.push(x),
                TimeCol::Date(x, hm) => c.extend(std::iter::once(x).chain(hm)),
            }
        }
        c.extend(self.c_dur.map(|d| d.0));
        c.extend(self.c_click);
        match self.label {
            LabelCol::Flag(x, _) | LabelCol::WatchRatio(x) => c.push(x),
            LabelCol::Computed => {}
        }
        c.sort_unstable();
        c.dedup();
        c
    }

    /// One row; `None` for a row with no usable time (documented skip).
    pub fn row(&self, f: &dyn Cells, err: &dyn Fn(&str, String) -> Error) -> Result<Option<Row>> {
        let names = &self.names;
        let (c_user, c_item) = (self.c_user, self.c_item);
        let user = parse_id(f.cell(c_user))
            .ok_or_else(|| err(&names[c_user], format!("{:?} is not a non-negative integer id", f.cell(c_user))))?;
        let item = parse_id(f.cell(c_item))
            .ok_or_else(|| err(&names[c_item], format!("{:?} is not a non-negative integer id", f.cell(c_item))))?;

        let mut key = None;
        for t in &self.times {
            let (c, v) = match *t {
                TimeCol::Ms(c) | TimeCol::Seconds(c) | TimeCol::DateTime(c) | TimeCol::Date(c, _) => (c, f.cell(c)),
            };
            if is_missing(v) {
                continue;
            }
            let bad = || err(&names[c], format!("{v:?} is not a valid time"));
            let ms = match *t {
                TimeCol::Ms(_) => v.parse::<f64>().ok().filter(|x| x.is_finite() && x.abs() < 9e15).map(|x| x.floor() as i64),
                TimeCol::Seconds(_) => {
                    v.parse::<f64>().ok().filter(|x| x.is_finite() && x.abs() < 9e12).map(|x| (x * 1000.0).round() as i64)
                }
                TimeCol::DateTime(_) => parse_datetime_ms(v),
                TimeCol::Date(_, hm) => {
                    let day = parse_yyyymmdd(v).ok_or_else(bad)?;
                    let minutes = match hm.map(|h| f.cell(h)).filter(|h| !is_missing(h)) {
                        None => 0,
                        Some(h) => {
                            let hmv = h.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0 && x.fract() == 0.0).map(|x| x as i64);
                            match hmv {
                                Some(x) if x / 100 < 24 && x % 100 < 60 => x / 100 * 60 + x % 100,
                                _ => return Err(err("hourmin", format!("{h:?} is not HHMM"))),
                            }
                        }
                    };
                    Some(day * 86_400_000 + minutes * 60_000)
                }
            };
            key = Some(ms.ok_or_else(bad)?);
            break;
        }
        // No usable time in any column: the row cannot be placed in a sequence (documented skip).
        let Some(key) = key else { return Ok(None) };

        let pv = f.cell(self.c_play);
        let play_ms = pv
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| err(self.play_name, format!("{pv:?} is not a non-negative number of ms")))?;
        let dur = match self.c_dur {
            Some((c, name)) => {
                let v = f.cell(c);
                if is_missing(v) {
                    None
                } else {
                    let d = v
                        .parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite() && *x >= 0.0)
                        .ok_or_else(|| err(name, format!("{v:?} is not a non-negative number of ms")))?;
                    Some((d / 1000.0) as f32)
                }
            }
            None => None,
        };
        let play = (play_ms / 1000.0) as f32;
        let clicked = match self.c_click {
            Some(c) => Some(parse_flag(f.cell(c)).ok_or_else(|| err("is_click", format!("{:?} is not 0 or 1", f.cell(c))))?),
            None => None,
        };
        let label = match self.label {
            LabelCol::Flag(c, name) => parse_flag(f.cell(c)).ok_or_else(|| err(name, format!("{:?} is not 0 or 1", f.cell(c))))?,
            LabelCol::WatchRatio(c) => {
                let v = f.cell(c);
                match v.parse::<f64>() {
                    Ok(r) if !r.is_nan() => (r >= WATCH_RATIO_POSITIVE) as u8,
                    _ if is_missing(v) => computed_label(play, dur),
                    _ => return Err(err("watch_ratio", format!("{v:?} is not a number"))),
                }
            }
            LabelCol::Computed => computed_label(play, dur),
        };
        Ok(Some(Row { user, item, key, ts: key.div_euclid(1000), play, dur, label, behaviour: clicked != Some(0) }))
    }

    /// The dataset of the rows read. Items the log mentions but the features file lacks keep
    /// author/topic 0 (see `build`).
    pub fn build(&self, rows: Vec<Row>, meta: &HashMap<u64, ItemMeta>) -> Result<Dataset> {
        build(rows, meta, BuildOptions { source: self.source.into(), duration_buckets: true })
    }
}

fn computed_label(play: f32, dur: Option<f32>) -> u8 {
    match dur {
        Some(d) if d > 0.0 => ((play / d) as f64 >= WATCH_RATIO_POSITIVE) as u8,
        _ => 0,
    }
}

/// Integer id; pandas writes `12.0` when a column once held a NaN.
fn parse_id(s: &str) -> Option<u64> {
    if let Ok(v) = s.parse::<u64>() {
        return Some(v);
    }
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 1.8e19).then_some(v as u64)
}

fn parse_flag(s: &str) -> Option<u8> {
    match s {
        "0" | "0.0" | "False" | "false" => Some(0),
        "1" | "1.0" | "True" | "true" => Some(1),
        _ => None,
    }
}

/// First element of a list-ish cell: `"[8, 3]"`, `8,3`, `8|3`, `['a', 'b']` -> `8` / `a`.
fn first_token(s: &str) -> Option<String> {
    let s = s.trim().trim_start_matches(['[', '(', '{']).trim_end_matches([']', ')', '}']);
    s.split([',', '|', ';', ' ']).map(|t| t.trim().trim_matches(['\'', '"']).trim()).find(|t| !t.is_empty() && !is_missing(t)).map(|t| {
        // "8.0" and "8" are the same tag.
        match t.parse::<f64>() {
            Ok(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
            _ => t.to_string(),
        }
    })
}

/// A CSV item-features file (see the module docs).
pub(crate) fn read_item_features_csv(path: &Path) -> Result<HashMap<u64, ItemMeta>> {
    let mut rec = Records::open(path, Sep::Quoted(b','))?;
    let names = header(&mut rec)?;
    let cols = ItemFeatureCols::resolve(&names, &|field, what| rec.err(field, what))?;
    let mut out: HashMap<u64, ItemMeta> = HashMap::new();
    while rec.next_record()? {
        cols.apply(rec.fields(), &|field, what| rec.err(field, what), &mut out)?;
    }
    Ok(out)
}

/// An item-features file's columns, resolved once (CSV header or Parquet schema).
pub(crate) struct ItemFeatureCols {
    c_item: usize,
    c_author: Option<usize>,
    c_topic: Option<usize>,
    c_dur: Option<(usize, String)>,
}

impl ItemFeatureCols {
    pub fn resolve(names: &[String], err: &dyn Fn(&str, String) -> Error) -> Result<ItemFeatureCols> {
        let names: Vec<String> = names.iter().map(|n| n.trim().to_ascii_lowercase()).collect();
        let find = |n: &str| names.iter().position(|c| c == n);
        let c_item =
            find("video_id").ok_or_else(|| err("video_id", format!("missing required column (header has: {})", names.join(","))))?;
        let c_author = find("author_id");
        let c_topic = ["tag", "video_tag_id", "feat", "video_type"].iter().find_map(|n| find(n));
        let c_dur = find("video_duration").or_else(|| find("duration_ms")).map(|c| (c, names[c].clone()));
        Ok(ItemFeatureCols { c_item, c_author, c_topic, c_dur })
    }

    /// Every column a row is read from (for the Parquet reader).
    #[cfg(feature = "parquet")]
    pub fn columns(&self) -> Vec<usize> {
        let mut c: Vec<usize> =
            std::iter::once(self.c_item).chain(self.c_author).chain(self.c_topic).chain(self.c_dur.as_ref().map(|d| d.0)).collect();
        c.sort_unstable();
        c.dedup();
        c
    }

    /// Folds one row into `out`: repeated rows (daily features) fill what earlier rows left empty.
    pub fn apply(&self, f: &dyn Cells, err: &dyn Fn(&str, String) -> Error, out: &mut HashMap<u64, ItemMeta>) -> Result<()> {
        let id = parse_id(f.cell(self.c_item))
            .ok_or_else(|| err("video_id", format!("{:?} is not a non-negative integer id", f.cell(self.c_item))))?;
        let author = self.c_author.map(|c| f.cell(c)).filter(|v| !is_missing(v)).and_then(first_token);
        let topic = self.c_topic.map(|c| f.cell(c)).and_then(first_token);
        let duration = match &self.c_dur {
            Some((c, name)) if !is_missing(f.cell(*c)) => {
                let v = f.cell(*c);
                let d = v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| err(name.as_str(), format!("{v:?} is not a non-negative number of ms")))?;
                Some((d / 1000.0) as f32).filter(|d| *d > 0.0)
            }
            _ => None,
        };
        let m = out.entry(id).or_default();
        if m.author.is_none() {
            m.author = author;
        }
        if m.topic.is_none() {
            m.topic = topic;
        }
        if m.duration.is_none() {
            m.duration = duration;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_flags() {
        assert_eq!(first_token("[8]").as_deref(), Some("8"));
        assert_eq!(first_token("[27, 9]").as_deref(), Some("27"));
        assert_eq!(first_token("12,13").as_deref(), Some("12"));
        assert_eq!(first_token("NORMAL").as_deref(), Some("NORMAL"));
        assert_eq!(first_token("3.0").as_deref(), Some("3"));
        assert_eq!(first_token("[]"), None);
        assert_eq!(first_token(""), None);
        assert_eq!(parse_flag("1.0"), Some(1));
        assert_eq!(parse_flag("2"), None);
        assert_eq!(parse_id("12.0"), Some(12));
        assert_eq!(parse_id("-1"), None);
    }
}
