//! MovieLens ratings as behaviour sequences.
//!
//! Accepted inputs (detected from the first line):
//! - ml-latest / ml-25m `ratings.csv` with the header `userId,movieId,rating,timestamp`;
//!   genres from `movies.csv` beside it (`movieId,title,genres`, quoted titles allowed);
//! - ml-100k `u.data` (tab-separated, no header: `user item rating timestamp`); genres from
//!   `u.item` beside it (pipe-separated, the last 19 fields are genre flags; names from `u.genre`
//!   when present);
//! - ml-1m / ml-10m `ratings.dat` (`user::item::rating::timestamp`); genres from `movies.dat`.
//!
//! Mapping to SPEC §1 (explicit ratings):
//! - `play_time = rating`, `duration = 5.0` (the maximum rating), so `p = rating / 5`;
//!   `duration_bucket = 0` (ratings have no length);
//! - `topic` = the movie's first listed genre ("(no genres listed)" is a genre too), dense ids
//!   from 1; 0 when the movie file is absent or does not list the movie;
//! - `author`: MovieLens has none, so as a stand-in we use the release decade parsed from a
//!   title ending in "(1995)" (ml-100k: also its release date), dense ids from 1; 0 if unknown;
//! - every rating is a behaviour and also a sample `(user, movie, its timestamp, rating >= 4)`.
//!   The sample's own rating is never in its history, because history is strictly before.
//!
//! Users and movies get dense ids in ascending external-id order; external ids are kept.

use std::collections::HashMap;
use std::path::Path;

use super::build::{build, BuildOptions, ItemMeta, Row};
use super::text::{Cells, Lines, Records, Sep};
use super::Dataset;
use crate::error::{Error, Result};

/// The maximum MovieLens rating: `p = rating / MAX_RATING`.
pub const MAX_RATING: f32 = 5.0;
/// Ratings at or above this are positive samples.
pub const POSITIVE_RATING: f32 = 4.0;

/// ml-100k's genre flags, in file order (used when `u.genre` is absent).
const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Style {
    /// `ratings.csv` with header.
    Csv,
    /// `u.data`, tab-separated.
    Tab,
    /// `ratings.dat`, `::`-separated.
    Dat,
}

/// Reads a MovieLens ratings file (see the module docs for the accepted layouts).
pub fn read_movielens(path: &Path) -> Result<Dataset> {
    let style = detect_style(path)?;
    let mut rows = Vec::new();
    if let Some(st) = style {
        let mut rec = Records::open(
            path,
            match st {
                Style::Csv => Sep::Quoted(b','),
                Style::Tab => Sep::Quoted(b'\t'),
                Style::Dat => Sep::DoubleColon,
            },
        )?;
        // Column positions: fixed, or from the CSV header.
        let mut cols = [0usize, 1, 2, 3];
        if st == Style::Csv && rec.next_record()? {
            let f = rec.fields();
            for (k, name) in ["userid", "movieid", "rating", "timestamp"].iter().enumerate() {
                match (0..f.len()).find(|&i| f.get(i).eq_ignore_ascii_case(name)) {
                    Some(i) => cols[k] = i,
                    None => return Err(rec.err(*name, "missing required column in the header")),
                }
            }
        }
        let names = match st {
            Style::Csv => ["userId", "movieId", "rating", "timestamp"],
            _ => ["user", "item", "rating", "timestamp"],
        };
        while rec.next_record()? {
            rows.push(rating_row(rec.fields(), cols, names, &|field, what| rec.err(field, what))?);
        }
    }

    let dir = path.parent().unwrap_or(Path::new("."));
    let meta = match style {
        Some(Style::Csv) => movies_beside(path)?,
        Some(Style::Dat) if dir.join("movies.dat").is_file() => read_movies(&dir.join("movies.dat"), Sep::DoubleColon)?,
        Some(Style::Tab) if dir.join("u.item").is_file() => read_u_item(&dir.join("u.item"), &dir.join("u.genre"))?,
        _ => HashMap::new(),
    };
    build_ratings(rows, &meta)
}

/// The layout, told from the first non-blank line; `None` for a file with no such line.
fn detect_style(path: &Path) -> Result<Option<Style>> {
    let mut lines = Lines::open(path)?;
    while let Some(line) = lines.next_line()? {
        if line.trim().is_empty() {
            continue;
        }
        return if line.contains('\t') {
            Ok(Some(Style::Tab))
        } else if line.contains("::") {
            Ok(Some(Style::Dat))
        } else if line.to_ascii_lowercase().starts_with("userid") {
            Ok(Some(Style::Csv))
        } else {
            Err(lines.err(
                "header",
                "not a MovieLens ratings file: expected a `userId,movieId,rating,timestamp` header, tab-separated u.data or ::-separated ratings.dat",
            ))
        };
    }
    Ok(None)
}

/// The dataset of MovieLens rating rows (shared with the Parquet reader).
pub(crate) fn build_ratings(rows: Vec<Row>, meta: &HashMap<u64, ItemMeta>) -> Result<Dataset> {
    build(rows, meta, BuildOptions { source: "movielens".into(), duration_buckets: false })
}

/// Genres and decades from the `movies.csv` beside a ratings file, when there is one (the CSV
/// and the Parquet ratings readers both look for it).
pub(crate) fn movies_beside(ratings: &Path) -> Result<HashMap<u64, ItemMeta>> {
    let movies = ratings.parent().unwrap_or(Path::new(".")).join("movies.csv");
    if movies.is_file() {
        read_movies(&movies, Sep::Quoted(b','))
    } else {
        Ok(HashMap::new())
    }
}

/// One rating row from its `[user, item, rating, timestamp]` cells at `cols`; `names` are those
/// columns' names for errors. Shared by the CSV and Parquet readers.
pub(crate) fn rating_row(f: &dyn Cells, cols: [usize; 4], names: [&str; 4], err: &dyn Fn(&str, String) -> Error) -> Result<Row> {
    let get = |k: usize| f.cell(cols[k]);
    let user: u64 = get(0).parse().map_err(|_| err(names[0], format!("{:?} is not a non-negative integer id", get(0))))?;
    let item: u64 = get(1).parse().map_err(|_| err(names[1], format!("{:?} is not a non-negative integer id", get(1))))?;
    let rating: f32 = get(2).parse().map_err(|_| err(names[2], format!("{:?} is not a number", get(2))))?;
    if !(rating.is_finite() && (0.0..=MAX_RATING).contains(&rating)) {
        return Err(err(names[2], format!("{rating} is outside [0, {MAX_RATING}]")));
    }
    let ts: i64 = parse_seconds(get(3)).ok_or_else(|| err(names[3], format!("{:?} is not a Unix time in seconds", get(3))))?;
    Ok(Row { user, item, key: ts, ts, play: rating, dur: Some(MAX_RATING), label: (rating >= POSITIVE_RATING) as u8, behaviour: true })
}

/// Integer seconds; a fractional value is floored (some exports write `1260759144.0`).
fn parse_seconds(s: &str) -> Option<i64> {
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v.abs() < 9e15).then(|| v.floor() as i64)
}

/// The release decade ("1990") from a title like "Heat (1995)" or "Babylon 5 (1994-1998)".
fn decade_from_title(title: &str) -> Option<String> {
    let t = title.trim_end();
    let mut end = t.len();
    // Search backwards for "(dddd" so "(2007-)" and "(1994-1998)" also work.
    while let Some(i) = t[..end].rfind('(') {
        let digits = &t.as_bytes()[i + 1..];
        if digits.len() >= 4 && digits[..4].iter().all(|c| c.is_ascii_digit()) {
            return decade(&t[i + 1..i + 5]);
        }
        end = i;
    }
    None
}

fn decade(year: &str) -> Option<String> {
    let y: i64 = year.parse().ok()?;
    (1800..=2100).contains(&y).then(|| format!("{}", y / 10 * 10))
}

fn first_genre(genres: &str) -> Option<String> {
    genres.split('|').map(str::trim).find(|g| !g.is_empty()).map(str::to_string)
}

/// `movies.csv` (`movieId,title,genres`) or `movies.dat` (`id::title::genres`).
fn read_movies(path: &Path, sep: Sep) -> Result<HashMap<u64, ItemMeta>> {
    let mut rec = Records::open(path, sep)?;
    let mut out = HashMap::new();
    let (mut c_id, mut c_title, mut c_genres) = (0, 1, 2);
    let mut first = true;
    while rec.next_record()? {
        let f = rec.fields();
        if first {
            first = false;
            if f.get(0).eq_ignore_ascii_case("movieid") {
                let find = |n: &str| (0..f.len()).find(|&i| f.get(i).eq_ignore_ascii_case(n));
                c_id = 0;
                c_title = find("title").ok_or_else(|| rec.err("title", "missing required column in the header"))?;
                c_genres = find("genres").ok_or_else(|| rec.err("genres", "missing required column in the header"))?;
                continue;
            }
        }
        let id: u64 = f.get(c_id).parse().map_err(|_| rec.err("movieId", format!("{:?} is not a non-negative integer id", f.get(c_id))))?;
        out.entry(id).or_insert_with(|| ItemMeta {
            author: decade_from_title(f.get(c_title)),
            topic: first_genre(f.get(c_genres)),
            duration: None,
        });
    }
    Ok(out)
}

/// ml-100k `u.item`: `id|title|release date|video release date|url|19 genre flags`.
fn read_u_item(path: &Path, genre_path: &Path) -> Result<HashMap<u64, ItemMeta>> {
    let mut names: Vec<String> = ML100K_GENRES.iter().map(|s| s.to_string()).collect();
    if genre_path.is_file() {
        // `u.genre`: `name|index` per line.
        let mut rec = Records::open(genre_path, Sep::Quoted(b'|'))?;
        while rec.next_record()? {
            let f = rec.fields();
            let idx: usize = f.get(1).parse().map_err(|_| rec.err("genre index", format!("{:?} is not an index", f.get(1))))?;
            if idx >= 64 {
                return Err(rec.err("genre index", format!("{idx} is too large")));
            }
            if idx >= names.len() {
                names.resize(idx + 1, String::new());
            }
            names[idx] = f.get(0).to_string();
        }
    }
    // Titles never contain '|' and are never quoted in u.item, but may hold a '"'.
    let mut rec = Records::open(path, Sep::Plain(b'|'))?;
    let mut out = HashMap::new();
    while rec.next_record()? {
        let f = rec.fields();
        let n = f.len();
        if n < 5 + names.len() {
            return Err(rec.err("genres", format!("{n} fields, expected {} (5 + one flag per genre)", 5 + names.len())));
        }
        let id: u64 = f.get(0).parse().map_err(|_| rec.err("movie id", format!("{:?} is not a non-negative integer id", f.get(0))))?;
        let flags = n - names.len();
        let mut topic = None;
        for (g, name) in names.iter().enumerate() {
            match f.get(flags + g) {
                "1" => {
                    topic = Some(name.clone());
                    break;
                }
                "0" | "" => {}
                other => return Err(rec.err(format!("genre flag {g}"), format!("{other:?} is not 0 or 1"))),
            }
        }
        let date = f.get(2);
        let author = decade_from_title(f.get(1)).or_else(|| date.rsplit('-').next().and_then(decade));
        out.entry(id).or_insert(ItemMeta { author, topic: Some(topic.unwrap_or_else(|| "(no genres listed)".into())), duration: None });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades() {
        assert_eq!(decade_from_title("Toy Story (1995)").as_deref(), Some("1990"));
        assert_eq!(decade_from_title("Babylon 5 (1994-1998) ").as_deref(), Some("1990"));
        assert_eq!(decade_from_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)").as_deref(), Some("1990"));
        assert_eq!(decade_from_title("Babylon 5"), None);
        assert_eq!(decade_from_title("(abc) x"), None);
        assert_eq!(first_genre("Adventure|Animation").as_deref(), Some("Adventure"));
        assert_eq!(first_genre("(no genres listed)").as_deref(), Some("(no genres listed)"));
        assert_eq!(parse_seconds("1260759144.9"), Some(1260759144));
        assert_eq!(parse_seconds("x"), None);
    }
}
