//! Data layer: dataset file, validation, MovieLens / Kuai readers, synthetic generator.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use twin_engine::data::kuai::read_kuai;
use twin_engine::data::movielens::read_movielens;
use twin_engine::data::synth::{generate, SynthConfig};
use twin_engine::data::{Behaviours, Dataset, Items, Samples};
use twin_engine::features;
use twin_engine::Error;

// ---------------------------------------------------------------- helpers

/// Two users, three items, five behaviours, three samples; valid.
fn tiny() -> Dataset {
    Dataset {
        source: "hand".into(),
        items: Items {
            author: vec![0, 1, 1],
            topic: vec![2, 0, 1],
            duration_bucket: vec![3, 0, 5],
            external_id: vec![10, 20, 30],
            n_authors: 2,
            n_topics: 3,
        },
        user_offsets: vec![0, 3, 5],
        user_ids: vec![7, 9],
        behaviours: Behaviours {
            item: vec![0, 1, 2, 2, 0],
            timestamp: vec![100, 100, 250, 50, 60],
            play_time: vec![1.0, 0.0, 30.0, 2.5, 4.0],
            duration: vec![5.0, 5.0, 60.0, 5.0, 0.0],
        },
        samples: Samples { user: vec![0, 1, 1], item: vec![2, 1, 0], request_time: vec![250, 55, 61], label: vec![1, 0, 1] },
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

/// Every user's timestamps are non-decreasing and every sample's history is strictly earlier.
fn check_sorted_and_no_leak(ds: &Dataset) {
    for u in 0..ds.n_users() {
        let ts = &ds.behaviours.timestamp[ds.user_range(u)];
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "user {u} not sorted");
    }
    for s in 0..ds.samples.len() {
        let (u, t) = (ds.samples.user[s] as usize, ds.samples.request_time[s]);
        let h = ds.history_before(u, t);
        let full = ds.user_range(u);
        assert_eq!(h.start, full.start);
        assert!(ds.behaviours.timestamp[h.clone()].iter().all(|&x| x < t), "sample {s} sees the future");
        // Maximal: the next behaviour (if any) is at or after the request.
        if h.end < full.end {
            assert!(ds.behaviours.timestamp[h.end] >= t);
        }
    }
}

fn data_dir() -> Option<PathBuf> {
    let d = std::env::var_os("TWIN_DATA_DIR")?;
    Some(PathBuf::from(d))
}

// ---------------------------------------------------------------- file format

#[test]
fn save_load_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.twindata");
    let ds = tiny();
    ds.validate().unwrap();
    ds.save(&p).unwrap();
    assert_eq!(Dataset::load(&p).unwrap(), ds);

    let cfg = SynthConfig { n_users: 40, n_items: 1000, n_authors: 100, n_topics: 16, max_len: 3000, ..Default::default() };
    let syn = generate(&cfg).unwrap();
    syn.save(&p).unwrap();
    let back = Dataset::load(&p).unwrap();
    assert_eq!(back, syn);
    assert_eq!(back.describe(), syn.describe());

    // The empty dataset is valid and round-trips too.
    let empty = Dataset::default();
    empty.validate().unwrap();
    empty.save(&p).unwrap();
    assert_eq!(Dataset::load(&p).unwrap(), empty);
}

#[test]
fn load_rejects_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.twindata");
    tiny().save(&p).unwrap();
    let good = fs::read(&p).unwrap();

    for cut in [0, 7, 8, 20, 30, good.len() / 2, good.len() - 4, good.len() - 1] {
        fs::write(&p, &good[..cut]).unwrap();
        assert!(Dataset::load(&p).is_err(), "truncated at {cut}");
    }
    for i in (0..good.len()).step_by(3) {
        let mut b = good.clone();
        b[i] ^= 0x21;
        fs::write(&p, &b).unwrap();
        assert!(Dataset::load(&p).is_err(), "flipped byte {i}");
    }
    let mut b = good.clone();
    b[..8].copy_from_slice(b"TWINMODL");
    fs::write(&p, &b).unwrap();
    let e = Dataset::load(&p).unwrap_err();
    assert!(matches!(e, Error::CorruptFile { .. }), "{e}");
    assert!(e.to_string().contains("magic"), "{e}");

    assert!(matches!(Dataset::load(&dir.path().join("absent")), Err(Error::Io { .. })));

    // A well-framed file whose content breaks an invariant is refused by validation.
    let mut bad = tiny();
    bad.behaviours.item[1] = 99;
    bad.save(&p).unwrap();
    let e = Dataset::load(&p).unwrap_err();
    assert!(matches!(e, Error::OutOfRange { field: "behaviours.item", index: 1, value: 99, limit: 3 }), "{e}");
}

// ---------------------------------------------------------------- validate

fn expect_err(ds: &Dataset, field: &str) -> Error {
    let e = ds.validate().expect_err(field);
    assert!(e.to_string().contains(field), "error {e:?} does not name {field}");
    e
}

#[test]
fn validate_catches_each_bad_field() {
    type Breaker = fn(&mut Dataset);
    let cases: Vec<(&str, Breaker)> = vec![
        ("items.author", |d| d.items.author[2] = 2),
        ("items.topic", |d| d.items.topic[0] = 3),
        ("items.duration_bucket", |d| d.items.duration_bucket[1] = features::DURATION_BUCKETS as u32),
        ("items.external_id", |d| d.items.external_id.pop().map(drop).unwrap_or(())),
        ("items.topic", |d| d.items.topic.push(0)),
        ("user_offsets", |d| d.user_offsets[2] = 4),
        ("user_offsets", |d| d.user_offsets[1] = 6),
        ("user_offsets", |d| d.user_offsets[0] = 1),
        ("user_offsets", |d| d.user_offsets.clear()),
        ("user_ids", |d| d.user_ids.push(11)),
        ("behaviours.item", |d| d.behaviours.item[4] = 3),
        ("behaviours.timestamp", |d| d.behaviours.timestamp[2] = 99),
        ("behaviours.timestamp", |d| d.behaviours.timestamp.push(1)),
        ("behaviours.play_time", |d| d.behaviours.play_time[0] = f32::NAN),
        ("behaviours.play_time", |d| d.behaviours.play_time[0] = -1.0),
        ("behaviours.duration", |d| d.behaviours.duration[3] = f32::INFINITY),
        ("behaviours.duration", |d| d.behaviours.duration[3] = -0.5),
        ("behaviours.duration", |d| d.behaviours.duration.truncate(2)),
        ("samples.user", |d| d.samples.user[1] = 2),
        ("samples.item", |d| d.samples.item[0] = 3),
        ("samples.label", |d| d.samples.label[2] = 2),
        ("samples.label", |d| d.samples.label.pop().map(drop).unwrap_or(())),
        ("samples.request_time", |d| d.samples.request_time.push(0)),
    ];
    for (field, f) in cases {
        let mut d = tiny();
        f(&mut d);
        expect_err(&d, field);
    }

    // Specific variants carry the index and value.
    let mut d = tiny();
    d.items.author[2] = 5;
    assert!(matches!(d.validate(), Err(Error::OutOfRange { field: "items.author", index: 2, value: 5, limit: 2 })));
    let mut d = tiny();
    d.behaviours.timestamp[4] = 10; // user 1: 50 then 10
    assert!(matches!(d.validate(), Err(Error::InvalidValue { field: "behaviours.timestamp", index: 4, .. })));
    let mut d = tiny();
    d.behaviours.play_time[1] = f32::NAN;
    assert!(matches!(d.validate(), Err(Error::NonFinite { field: "behaviours.play_time", index: 1, .. })));
    let mut d = tiny();
    d.user_offsets[1] = 6;
    assert!(matches!(d.validate(), Err(Error::BadOffsets { field: "user_offsets", index: 2, .. })));
    let mut d = tiny();
    d.samples.label[0] = 7;
    assert!(matches!(d.validate(), Err(Error::InvalidValue { field: "samples.label", index: 0, .. })));

    // Time going backwards across users is fine: each user is sorted on its own.
    tiny().validate().unwrap();
}

#[test]
fn describe_summarises() {
    let s = tiny().describe();
    for want in ["hand", "users: 2", "items: 3", "behaviours: 5", "samples: 3", "min 2 / median 3 / max 3", "1970-01-01", "66.7%"] {
        assert!(s.contains(want), "describe lacks {want:?}:\n{s}");
    }
}

// ---------------------------------------------------------------- MovieLens

#[test]
fn movielens_real_small() {
    let Some(dir) = data_dir() else {
        println!("skipped movielens_real_small: TWIN_DATA_DIR is not set");
        return;
    };
    let path = dir.join("ml-latest-small").join("ratings.csv");
    if !path.is_file() {
        println!("skipped movielens_real_small: {} is absent", path.display());
        return;
    }
    let ds = read_movielens(&path).unwrap();
    ds.validate().unwrap();

    // Independent count straight from the text.
    let text = fs::read_to_string(&path).unwrap();
    let mut users = HashSet::new();
    let mut movies = HashSet::new();
    let (mut n, mut pos) = (0usize, 0usize);
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        users.insert(f[0].to_string());
        movies.insert(f[1].to_string());
        n += 1;
        pos += (f[2].parse::<f32>().unwrap() >= 4.0) as usize;
    }
    assert_eq!(ds.n_users(), users.len());
    assert_eq!(ds.items.len(), movies.len());
    assert_eq!(ds.behaviours.len(), n);
    assert_eq!(ds.samples.len(), n);
    assert_eq!(ds.samples.label.iter().map(|&l| l as usize).sum::<usize>(), pos);
    // The two published releases of ml-latest-small (2018: 610/100,836; 2016: 671/100,004).
    assert!(
        matches!((ds.n_users(), n), (610, 100_836) | (671, 100_004)),
        "unexpected ml-latest-small size: {} users, {n} ratings",
        ds.n_users()
    );

    assert_eq!(ds.source, "movielens");
    assert!(ds.user_ids.windows(2).all(|w| w[0] < w[1]));
    assert!(ds.items.external_id.windows(2).all(|w| w[0] < w[1]));
    for i in 0..ds.behaviours.len() {
        let p = ds.behaviours.completion(i);
        assert!((0.0..=1.0).contains(&p));
        assert_eq!(p, ds.behaviours.play_time[i] / 5.0);
    }
    // Labels agree with the rating behind each sample.
    let mut rating: HashMap<(u32, u32, i64), f32> = HashMap::new();
    for u in 0..ds.n_users() {
        for i in ds.user_range(u) {
            rating.insert((u as u32, ds.behaviours.item[i], ds.behaviours.timestamp[i]), ds.behaviours.play_time[i]);
        }
    }
    for s in 0..ds.samples.len() {
        let r = rating[&(ds.samples.user[s], ds.samples.item[s], ds.samples.request_time[s])];
        assert_eq!(ds.samples.label[s], (r >= 4.0) as u8);
    }
    check_sorted_and_no_leak(&ds);
    // movies.csv sits beside ratings.csv: genres and decades are used.
    if path.with_file_name("movies.csv").is_file() {
        assert!(ds.items.n_topics > 15, "n_topics {}", ds.items.n_topics);
        assert!(ds.items.n_authors > 5, "n_authors {}", ds.items.n_authors);
        assert!(ds.items.topic.iter().filter(|&&t| t == 0).count() < ds.items.len() / 100);
    }
    println!("{}", ds.describe());
}

const MOVIES_CSV: &str = "movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children
2,\"Cry, the Beloved Country (1995)\",Drama
3,Casablanca (1942),Drama|Romance
5,Untitled,(no genres listed)
";

#[test]
fn movielens_small_csv() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write(
        dir.path(),
        "ratings.csv",
        "userId,movieId,rating,timestamp
7,3,4.5,300
7,1,2.0,100
3,2,5,200
7,2,4.0,100
3,5,0.5,150
7,9,3.5,500
",
    );
    // Without movies.csv: topic and author are 0.
    let ds = read_movielens(&ratings).unwrap();
    assert_eq!(ds.items.n_topics, 1);
    assert!(ds.items.topic.iter().all(|&t| t == 0));
    assert!(ds.items.author.iter().all(|&a| a == 0));

    write(dir.path(), "movies.csv", MOVIES_CSV);
    let ds = read_movielens(&ratings).unwrap();
    assert_eq!(ds.source, "movielens");
    assert_eq!(ds.user_ids, vec![3, 7]);
    assert_eq!(ds.items.external_id, vec![1, 2, 3, 5, 9]);
    assert_eq!(ds.user_offsets, vec![0, 2, 6]);
    // User 3 (dense 0): movie 5 at 150 then movie 2 at 200.
    assert_eq!(&ds.behaviours.item[0..2], &[3, 1]);
    assert_eq!(&ds.behaviours.timestamp[0..2], &[150, 200]);
    // User 7: ties at t=100 keep file order (movie 1 then movie 2).
    assert_eq!(&ds.behaviours.item[2..6], &[0, 1, 2, 4]);
    assert_eq!(&ds.behaviours.timestamp[2..6], &[100, 100, 300, 500]);
    assert_eq!(&ds.behaviours.play_time[2..6], &[2.0, 4.0, 4.5, 3.5]);
    assert!(ds.behaviours.duration.iter().all(|&d| d == 5.0));
    assert_eq!(ds.behaviours.completion(4), 0.9);
    assert!(ds.items.duration_bucket.iter().all(|&b| b == 0));
    // Samples: every rating, label = rating >= 4.
    assert_eq!(ds.samples.len(), 6);
    assert_eq!(ds.samples.label, vec![0, 1, 0, 1, 1, 0]);
    assert_eq!(ds.samples.user, vec![0, 0, 1, 1, 1, 1]);
    // Genres: Adventure, Drama, (no genres listed) are the first genres; 9 is unknown -> 0.
    let t = &ds.items.topic;
    assert_eq!(t[1], t[2], "movies 2 and 3 are both Drama first");
    assert_ne!(t[0], t[1]);
    assert_ne!(t[3], 0, "(no genres listed) is a genre");
    assert_eq!(t[4], 0);
    assert_eq!(ds.items.n_topics, 4);
    // Authors stand in for release decades: 1990 (movies 1, 2), 1940 (3), unknown (5, 9).
    let a = &ds.items.author;
    assert_eq!(a[0], a[1]);
    assert_ne!(a[0], a[2]);
    assert_eq!((a[3], a[4]), (0, 0));
    assert_eq!(ds.items.n_authors, 3);
    check_sorted_and_no_leak(&ds);
    // A sample never sees its own rating.
    assert_eq!(ds.history_before(1, 100).len(), 0);
    assert_eq!(ds.history_before(1, 101).len(), 2);
}

#[test]
fn movielens_parse_errors_name_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("userId,movieId,rating,timestamp\n1,2,4,100\n1,3,4,100\n1,x,4,100\n", 4, "movieId"),
        ("userId,movieId,rating,timestamp\n1,2,4,100\n1,3,abc,100\n", 3, "rating"),
        ("userId,movieId,rating,timestamp\n1,2,7,100\n", 2, "rating"),
        ("userId,movieId,rating,timestamp\n1,2,4,100\n\n1,2,4,yesterday\n", 4, "timestamp"),
        ("userId,movieId,rating,timestamp\n1,2,4\n", 2, "timestamp"),
        ("userId,movieId,timestamp\n1,2,100\n", 1, "rating"),
        ("hello world\n", 1, "header"),
    ];
    for (text, line, field) in cases {
        let p = write(dir.path(), "ratings.csv", text);
        match read_movielens(&p) {
            Err(Error::Parse { line: l, field: f, path, .. }) => {
                assert_eq!((l, f.as_str()), (line, field), "{text:?}");
                assert_eq!(path, p);
            }
            other => panic!("{text:?}: expected a parse error, got {other:?}"),
        }
    }
    assert!(matches!(read_movielens(&dir.path().join("nope.csv")), Err(Error::Io { .. })));
}

#[test]
fn movielens_u_data() {
    let dir = tempfile::tempdir().unwrap();
    let udata = write(dir.path(), "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t5\t881250900\n");
    let ds = read_movielens(&udata).unwrap();
    assert_eq!(ds.user_ids, vec![186, 196]);
    assert_eq!(ds.items.external_id, vec![242, 302]);
    assert_eq!(ds.behaviours.item, vec![1, 1, 0]);
    assert_eq!(ds.samples.label, vec![0, 1, 0]);
    assert_eq!(ds.items.n_topics, 1);

    // u.item (Latin-1 title, 19 flags) gives genres and decades.
    let flags = |on: &[usize]| (0..19).map(|i| if on.contains(&i) { "1" } else { "0" }).collect::<Vec<_>>().join("|");
    let mut uitem = Vec::new();
    uitem.extend_from_slice(format!("242|Kolya (1996)|24-Jan-1997||http://x|{}\n", flags(&[5])).as_bytes());
    uitem.extend_from_slice(b"302|L.A. Confidential (1997) Caf\xe9|01-Jan-1997||http://y|");
    uitem.extend_from_slice(format!("{}\n", flags(&[6, 10, 14, 16])).as_bytes());
    fs::write(dir.path().join("u.item"), &uitem).unwrap();
    let ds = read_movielens(&udata).unwrap();
    assert_eq!(ds.items.n_topics, 3); // unknown + Comedy + Crime
    assert_ne!(ds.items.topic[0], ds.items.topic[1]);
    assert!(ds.items.topic.iter().all(|&t| t != 0));
    assert_eq!(ds.items.author[0], ds.items.author[1]); // both 1990s
    assert_ne!(ds.items.author[0], 0);

    let bad = write(dir.path(), "u.data", "196\t242\t3\t881250949\n186\t302\t\t891717742\n");
    match read_movielens(&bad) {
        Err(Error::Parse { line: 2, field, .. }) => assert_eq!(field, "rating"),
        other => panic!("expected parse error on line 2, got {other:?}"),
    }
}

// ---------------------------------------------------------------- Kuai

#[test]
fn kuairand_style() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(
        dir.path(),
        "log_standard.csv",
        "user_id,video_id,date,hourmin,time_ms,is_click,is_like,long_view,play_time_ms,duration_ms,tab
5,100,20220408,1600,1649433600500,1,0,1,12000,20000,1
5,200,20220408,1600,1649433600100,0,0,0,0,8000,1
2,100,20220409,900,1649494800000,1,0,0,3000,20000,0
5,300,20220408,1700,1649437200000,1,1,0,90000,60000,2
",
    );
    let feats = write(
        dir.path(),
        "video_features_basic.csv",
        "video_id,author_id,video_type,upload_dt,video_duration,tag
100,77,NORMAL,2022-01-01,20000.0,\"28,3\"
200,12,AD,2022-01-02,8000.0,
300,77,NORMAL,2022-01-03,60000.0,9
",
    );
    let ds = read_kuai(&log, Some(&feats)).unwrap();
    assert_eq!(ds.source, "kuairand");
    assert_eq!(ds.user_ids, vec![2, 5]);
    assert_eq!(ds.items.external_id, vec![100, 200, 300]);
    // Unclicked impressions are samples but not behaviours.
    assert_eq!(ds.user_offsets, vec![0, 1, 3]);
    assert_eq!(ds.samples.len(), 4);
    assert_eq!(&ds.behaviours.item[1..3], &[0, 2]);
    assert_eq!(ds.behaviours.timestamp[1], 1_649_433_600);
    assert_eq!(ds.behaviours.play_time[1], 12.0);
    assert_eq!(ds.behaviours.duration[1], 20.0);
    assert_eq!(ds.behaviours.completion(2), 1.0); // 90 s of a 60 s video, clamped
                                                  // Samples of user 5 in time order: 200 (t .100), 100 (t .500), 300; labels = is_click.
    assert_eq!(ds.samples.user, vec![0, 1, 1, 1]);
    assert_eq!(ds.samples.item, vec![0, 1, 0, 2]);
    assert_eq!(ds.samples.label, vec![1, 0, 1, 1]);
    // Item features: author 77 shared, tag "28,3" -> 28, missing tag -> 0.
    assert_eq!(ds.items.author[0], ds.items.author[2]);
    assert_ne!(ds.items.author[0], ds.items.author[1]);
    assert_eq!(ds.items.topic[1], 0);
    assert_ne!(ds.items.topic[0], ds.items.topic[2]);
    assert_eq!(
        ds.items.duration_bucket,
        vec![features::duration_bucket(20.0), features::duration_bucket(8.0), features::duration_bucket(60.0)]
    );
    check_sorted_and_no_leak(&ds);

    // Without item features: author/topic 0, durations from the log.
    let ds = read_kuai(&log, None).unwrap();
    assert!(ds.items.author.iter().chain(&ds.items.topic).all(|&x| x == 0));
    assert_eq!(ds.items.duration_bucket[2], features::duration_bucket(60.0));

    // date + hourmin only, long_view as the label.
    let log2 = write(
        dir.path(),
        "log2.csv",
        "user_id,video_id,date,hourmin,long_view,play_time_ms,duration_ms
1,10,20220408,1630,1,5000,6000
1,11,20220408,1615,0,1000,6000
",
    );
    let ds = read_kuai(&log2, None).unwrap();
    assert_eq!(ds.behaviours.item, vec![1, 0]);
    assert_eq!(ds.behaviours.timestamp, vec![1_649_434_500, 1_649_435_400]);
    assert_eq!(ds.samples.label, vec![0, 1]);
}

#[test]
fn kuairec_style() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(
        dir.path(),
        "small_matrix.csv",
        "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio
14,148,4381,6067,2020-07-05 05:27:48.378,20200705.0,1593898068.378,0.722103
14,183,11635,6100,2020-07-05 05:28:00.057,20200705.0,1593898080.057,1.907377
14,3649,22422,10867,2020-07-05 05:29:09.479,20200705.0,1593898149.479,2.063311
19,148,1000,6067,,,,0.16
19,183,15000,6100,,,1593000000.0,2.459
",
    );
    let cats = write(dir.path(), "item_categories.csv", "video_id,feat\n148,[11]\n183,\"[27, 9]\"\n3649,[11]\n");
    let ds = read_kuai(&log, Some(&cats)).unwrap();
    assert_eq!(ds.source, "kuairec");
    // The row with no time at all is skipped; the rest are behaviours and samples.
    assert_eq!(ds.behaviours.len(), 4);
    assert_eq!(ds.samples.len(), 4);
    assert_eq!(ds.user_ids, vec![14, 19]);
    assert_eq!(ds.behaviours.timestamp[..3], [1_593_898_068, 1_593_898_080, 1_593_898_149]);
    assert_eq!(ds.behaviours.play_time[0], 4.381);
    assert_eq!(ds.behaviours.duration[0], 6.067);
    // watch_ratio >= 2 is positive.
    assert_eq!(ds.samples.label, vec![0, 0, 1, 1]);
    assert_eq!(ds.items.topic[0], ds.items.topic[2]);
    assert_ne!(ds.items.topic[0], ds.items.topic[1]);
    assert!(ds.items.topic.iter().all(|&t| t != 0));
    assert!(ds.items.author.iter().all(|&a| a == 0));
    check_sorted_and_no_leak(&ds);
}

#[test]
fn kuai_errors() {
    let dir = tempfile::tempdir().unwrap();
    let no_play = write(dir.path(), "a.csv", "user_id,video_id,time_ms,duration_ms\n1,2,1000,5000\n");
    match read_kuai(&no_play, None) {
        Err(e @ Error::Parse { line: 1, .. }) => assert!(e.to_string().contains("play_time_ms"), "{e}"),
        other => panic!("expected a missing-column error, got {other:?}"),
    }
    let no_user = write(dir.path(), "b.csv", "uid,video_id,time_ms,play_time_ms,duration_ms\n1,2,1000,1,5000\n");
    assert!(matches!(read_kuai(&no_user, None), Err(Error::Parse { line: 1, ref field, .. }) if field == "user_id"));
    let no_time = write(dir.path(), "c.csv", "user_id,video_id,play_time_ms,duration_ms\n1,2,1,5000\n");
    assert!(read_kuai(&no_time, None).unwrap_err().to_string().contains("time_ms"));
    let no_dur = write(dir.path(), "d.csv", "user_id,video_id,time_ms,play_time_ms\n1,2,1000,1\n");
    assert!(read_kuai(&no_dur, None).unwrap_err().to_string().contains("duration_ms"));
    // ... unless the item file has durations.
    let feats = write(dir.path(), "f.csv", "video_id,video_duration\n2,4000\n");
    let ds = read_kuai(&no_dur, Some(&feats)).unwrap();
    assert_eq!(ds.behaviours.duration, vec![4.0]);

    let bad_rows = [
        ("user_id,video_id,time_ms,play_time_ms,duration_ms\n1,2,1000,1,5000\n1,2,1000,-4,5000\n", 3, "play_time_ms"),
        ("user_id,video_id,time_ms,play_time_ms,duration_ms\n1,abc,1000,1,5000\n", 2, "video_id"),
        ("user_id,video_id,time_ms,play_time_ms,duration_ms\n1,2,soon,1,5000\n", 2, "time_ms"),
        ("user_id,video_id,date,hourmin,play_time_ms,duration_ms\n1,2,20221345,1200,1,5\n", 2, "date"),
        ("user_id,video_id,date,hourmin,play_time_ms,duration_ms\n1,2,20221105,1275,1,5\n", 2, "hourmin"),
        ("user_id,video_id,time_ms,is_click,play_time_ms,duration_ms\n1,2,1000,yes,1,5000\n", 2, "is_click"),
        ("user_id,video_id,timestamp,play_duration,video_duration,watch_ratio\n1,2,1.5,1,5000,x\n", 2, "watch_ratio"),
    ];
    for (text, line, field) in bad_rows {
        let p = write(dir.path(), "e.csv", text);
        match read_kuai(&p, None) {
            Err(Error::Parse { line: l, field: f, .. }) => assert_eq!((l, f.as_str()), (line, field), "{text:?}"),
            other => panic!("{text:?}: expected parse error, got {other:?}"),
        }
    }
    let bad_feats = write(dir.path(), "g.csv", "id,author_id\n2,3\n");
    assert!(matches!(read_kuai(&no_dur, Some(&bad_feats)), Err(Error::Parse { ref field, .. }) if field == "video_id"));
    let empty = write(dir.path(), "h.csv", "");
    assert!(matches!(read_kuai(&empty, None), Err(Error::Parse { .. })));
}

// ---------------------------------------------------------------- synthetic

fn small_cfg(seed: u64) -> SynthConfig {
    SynthConfig { n_users: 300, n_items: 5_000, n_authors: 500, n_topics: 32, max_len: 20_000, seed, ..Default::default() }
}

#[test]
fn synth_deterministic_and_seeded() {
    let a = generate(&small_cfg(1)).unwrap();
    let b = generate(&small_cfg(1)).unwrap();
    let c = generate(&small_cfg(2)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.behaviours, c.behaviours);
    assert_ne!(a.items, c.items);
    a.validate().unwrap();
    assert_eq!(a.source, "synthetic");
    assert_eq!(a.items.len(), 5_000);
    assert_eq!(a.n_users(), 300);
}

#[test]
fn synth_lengths_tail_and_fixed() {
    let cfg =
        SynthConfig { n_users: 1000, n_items: 2_000, n_authors: 100, n_topics: 16, min_len: 10, max_len: 5_000, ..Default::default() };
    let ds = generate(&cfg).unwrap();
    let mut lens: Vec<usize> = (0..ds.n_users()).map(|u| ds.user_range(u).len()).collect();
    assert!(lens.iter().all(|&l| (10..=5_000).contains(&l)));
    lens.sort_unstable();
    let (med, max) = (lens[lens.len() / 2], lens[lens.len() - 1]);
    assert!(max >= 20 * med, "not heavy-tailed: median {med}, max {max}");
    assert!(lens[lens.len() * 99 / 100] >= 5 * med, "tail too thin: p99 {}, median {med}", lens[lens.len() * 99 / 100]);
    // Samples: min(samples_per_user, len) each.
    assert_eq!(ds.samples.len(), lens.iter().map(|&l| l.min(cfg.samples_per_user)).sum::<usize>());

    let fixed = generate(&SynthConfig { fixed_len: Some(777), samples_per_user: 5, ..cfg.clone() }).unwrap();
    assert!((0..fixed.n_users()).all(|u| fixed.user_range(u).len() == 777));
    assert_eq!(fixed.samples.len(), 5 * 1000);
    // Fixed length shorter than samples_per_user.
    let short = generate(&SynthConfig { n_users: 10, fixed_len: Some(3), ..cfg }).unwrap();
    assert_eq!(short.samples.len(), 30);
    short.validate().unwrap();
}

#[test]
fn synth_shape_and_no_leak() {
    let ds = generate(&small_cfg(7)).unwrap();
    check_sorted_and_no_leak(&ds);
    let b = &ds.behaviours;
    // Durations 5 s .. 10 min, completion in [0, 1], about three years of history.
    assert!(b.duration.iter().all(|&d| (5.0..=600.0).contains(&d)));
    assert!((0..b.len()).all(|i| (0.0..=1.0).contains(&b.completion(i)) && b.play_time[i] <= b.duration[i]));
    let span = b.timestamp.iter().max().unwrap() - b.timestamp.iter().min().unwrap();
    assert!(span > 2 * 365 * 86_400 && span < 5 * 365 * 86_400, "span {span}");
    // Every sample's item is the user's behaviour at exactly the request time (an impression).
    for s in 0..ds.samples.len() {
        let u = ds.samples.user[s] as usize;
        let h = ds.history_before(u, ds.samples.request_time[s]);
        assert_eq!(b.item[h.end], ds.samples.item[s]);
        assert_eq!(b.timestamp[h.end], ds.samples.request_time[s]);
    }
    let pos = ds.samples.label.iter().filter(|&&l| l == 1).count() as f64 / ds.samples.len() as f64;
    assert!((0.15..0.75).contains(&pos), "positive rate {pos}");
}

#[test]
fn synth_labels_are_predictable_from_history() {
    let ds = generate(&small_cfg(3)).unwrap();
    let b = &ds.behaviours;
    // Share of the history (before the request) on the target's topic, weighted by completion.
    let (mut hit, mut n_hit, mut miss, mut n_miss) = (0usize, 0usize, 0usize, 0usize);
    for s in 0..ds.samples.len() {
        let u = ds.samples.user[s] as usize;
        let topic = ds.items.topic[ds.samples.item[s] as usize];
        let h = ds.history_before(u, ds.samples.request_time[s]);
        let liked_same = h.clone().filter(|&i| ds.items.topic[b.item[i] as usize] == topic && b.completion(i) >= 0.6).count();
        if liked_same * 20 >= h.len().max(1) {
            hit += ds.samples.label[s] as usize;
            n_hit += 1;
        } else {
            miss += ds.samples.label[s] as usize;
            n_miss += 1;
        }
    }
    let (r_hit, r_miss) = (hit as f64 / n_hit.max(1) as f64, miss as f64 / n_miss.max(1) as f64);
    assert!(n_hit > 100 && n_miss > 100, "{n_hit} / {n_miss}");
    assert!(r_hit > r_miss + 0.3, "history does not predict the label: {r_hit:.2} vs {r_miss:.2}");
}

#[test]
fn synth_bad_config_is_an_error() {
    let ok = small_cfg(1);
    for bad in [
        SynthConfig { n_items: 0, ..ok.clone() },
        SynthConfig { n_topics: 0, ..ok.clone() },
        SynthConfig { n_authors: 0, ..ok.clone() },
        SynthConfig { min_len: 0, ..ok.clone() },
        SynthConfig { min_len: 100, max_len: 99, ..ok.clone() },
        SynthConfig { pareto_alpha: 0.0, ..ok.clone() },
    ] {
        assert!(generate(&bad).is_err(), "{bad:?}");
    }
    // No users is a mistake (an empty dataset that every later command would refuse), named.
    let e = generate(&SynthConfig { n_users: 0, ..ok }).unwrap_err().to_string();
    assert!(e.contains("n_users") && e.contains("at least 1"), "{e}");
}

#[test]
fn synth_speed() {
    // 200 users x 10^4 behaviours; the brief's target is 1,000 x 10^4 in seconds (release).
    let cfg = SynthConfig { n_users: 200, fixed_len: Some(10_000), ..Default::default() };
    let t = std::time::Instant::now();
    let ds = generate(&cfg).unwrap();
    let el = t.elapsed();
    assert_eq!(ds.behaviours.len(), 2_000_000);
    println!("synth: 2e6 behaviours in {el:?}");
    assert!(el.as_secs_f64() < 20.0, "synthetic generation too slow: {el:?}");
}
