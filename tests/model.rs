//! Model parameters, precomputed tables and the model file, through the public API.

use std::fs;
use std::path::Path;
use std::time::Instant;

use twin_engine::backend::cpu::CpuBackend;
use twin_engine::backend::{Backend, DType, HostTable};
use twin_engine::data::Items;
use twin_engine::error::Error;
use twin_engine::features;
use twin_engine::fileio::{self, Writer};
use twin_engine::model::{Model, ModelConfig, Projection, MAGIC, VERSION};

fn items(n: usize) -> Items {
    Items {
        author: (0..n as u64).map(|i| (i * 7919 % 31) as u32).collect(),
        topic: (0..n as u64).map(|i| (i * 13 % 11) as u32).collect(),
        duration_bucket: (0..n).map(|i| features::duration_bucket(i as f32 * 3.7)).collect(),
        external_id: (0..n as u64).map(|i| i * 10).collect(),
        n_authors: 31,
        n_topics: 11,
    }
}

fn model(n: usize, seed: u64) -> Model {
    let it = items(n);
    Model::init(ModelConfig::for_items(&it), &it, seed).unwrap()
}

fn bits(m: &Model) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    m.params().map(|(n, t)| (n.to_string(), t.shape.clone(), t.data.iter().map(|x| x.to_bits()).collect())).collect()
}

fn f32s(t: &HostTable) -> Vec<f32> {
    (0..t.rows * t.cols).map(|i| t.get(i)).collect()
}

/// Writes a model file by hand, following the documented payload layout, letting the test
/// tamper with a tensor on the way (the public `save` refuses to write a broken model).
fn write_raw(path: &Path, m: &Model, mut tamper: impl FnMut(&str, &mut Vec<u64>, &mut Vec<f32>)) {
    let mut w = Writer::new();
    w.str(&serde_json::to_string(&m.config).unwrap());
    w.u32s(&m.item_author);
    w.u32s(&m.item_topic);
    w.u32s(&m.item_duration_bucket);
    w.u64(m.params().count() as u64);
    for (name, t) in m.params() {
        let mut shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
        let mut data = t.data.clone();
        tamper(name, &mut shape, &mut data);
        w.str(name);
        w.u64s(&shape);
        w.f32s(&data);
    }
    fileio::save(path, MAGIC, VERSION, &w.buf).unwrap();
}

#[test]
fn config_defaults_follow_spec() {
    let c = ModelConfig::for_items(&items(10));
    assert_eq!((c.n_items, c.n_authors, c.n_topics), (10, 31, 11));
    assert_eq!((c.id_dim, c.small_dim, c.heads, c.d_head, c.cross_dim), (64, 8, 4, 32, 8));
    assert_eq!(c.n_duration_buckets, features::DURATION_BUCKETS);
    assert_eq!(c.cross_vocab, vec![10, 24, 40]);
    assert_eq!(c.cross_offsets(), features::cross_offsets());
    assert_eq!((c.n_context, c.short_len, c.top_k), (24, 50, 100));
    assert_eq!(c.mlp_hidden, vec![256, 128, 64]);
    assert_eq!((c.inherent_dim(), c.d_model(), c.mlp_input()), (144, 128, 8 + 144 + 256));
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), c);
    let shapes = c.param_shapes().unwrap();
    let m = model(10, 1);
    let got: Vec<_> = m.params().map(|(n, t)| (n, t.shape.clone())).collect();
    assert_eq!(got, shapes);
}

#[test]
fn init_is_deterministic() {
    let a = model(500, 42);
    let b = model(500, 42);
    let c = model(500, 43);
    assert_eq!(bits(&a), bits(&b));
    for (name, t) in a.params() {
        let other = c.param(name).unwrap();
        if name == "beta" || name.starts_with("mlp_b") {
            assert_eq!(t, other, "{name} is constant");
        } else {
            assert_ne!(t, other, "{name} must depend on the seed");
        }
    }
    assert!(a.param("beta").unwrap().data.iter().all(|&x| x == 1.0));
    assert!(a.param("mlp_b0").unwrap().data.iter().all(|&x| x == 0.0));
    // Embeddings look like N(0, 0.1²).
    let e = a.item_embeddings();
    assert_eq!(e.len(), 500 * 64);
    assert_eq!(e, a.param("item_emb").unwrap().data.as_slice());
    let mean = e.iter().map(|&x| x as f64).sum::<f64>() / e.len() as f64;
    let std = (e.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / e.len() as f64).sqrt();
    assert!(mean.abs() < 0.01 && (std - 0.1).abs() < 0.01, "mean {mean} std {std}");
    // Glorot: |w| ≤ sqrt(6 / (fan_in + fan_out)).
    let lim = (6.0f32 / (144.0 + 128.0)).sqrt();
    assert!(a.param("w_q").unwrap().data.iter().all(|x| x.abs() <= lim));
}

#[test]
fn init_rejects_inconsistent_items() {
    let it = items(100);
    let cfg = ModelConfig::for_items(&it);

    let mut short = it.clone();
    short.topic.pop();
    assert!(matches!(Model::init(cfg.clone(), &short, 1), Err(Error::LengthMismatch { field: "item_topic", .. })));

    let mut bad = it.clone();
    bad.author[9] = 31;
    match Model::init(cfg.clone(), &bad, 1) {
        Err(Error::OutOfRange { field: "item_author", index: 9, value: 31, limit: 31 }) => {}
        other => panic!("{other:?}"),
    }
    let mut bad = it.clone();
    bad.duration_bucket[0] = 24;
    assert!(matches!(Model::init(cfg.clone(), &bad, 1), Err(Error::OutOfRange { field: "item_duration_bucket", .. })));

    assert!(matches!(Model::init(cfg.clone(), &items(99), 1), Err(Error::LengthMismatch { .. })));
    assert!(Model::init(ModelConfig::for_items(&Items::default()), &Items::default(), 1).is_err());
    let mut c = cfg.clone();
    c.d_head = 0;
    assert!(matches!(Model::init(c, &it, 1), Err(Error::BadShape { field: "d_head", .. })));
    let mut c = cfg;
    c.mlp_hidden = vec![8; 20];
    assert!(Model::init(c, &it, 1).is_err());
}

#[test]
fn inherent_features_are_the_concat() {
    let m = model(200, 5);
    let x = m.inherent_features().unwrap();
    assert_eq!(x.dim(), (200, 144));
    for i in [0usize, 1, 77, 199] {
        let mut want = m.param("item_emb").unwrap().row(i).unwrap().to_vec();
        want.extend_from_slice(m.param("author_emb").unwrap().row(m.item_author[i] as usize).unwrap());
        want.extend_from_slice(m.param("topic_emb").unwrap().row(m.item_topic[i] as usize).unwrap());
        want.extend_from_slice(m.param("duration_emb").unwrap().row(m.item_duration_bucket[i] as usize).unwrap());
        assert_eq!(x.row(i).to_vec(), want, "item {i}");
    }
    let sub = m.inherent_features_of(&[199, 0, 77]).unwrap();
    assert_eq!(sub.row(0), x.row(199));
    assert_eq!(sub.row(2), x.row(77));
    assert!(matches!(m.inherent_features_of(&[3, 200]), Err(Error::OutOfRange { index: 1, value: 200, .. })));
    assert!(m.check_item_ids("cands", &[0, 199]).is_ok());
    assert!(m.check_item_ids("cands", &[200]).is_err());
}

/// Compares `got [n, d]` with `X_h W` computed in f64, relative to `Σ|x||w|`.
fn assert_projection(name: &str, got: &HostTable, x: &ndarray::Array2<f32>, w: &[f32], d: usize, rows: &[usize]) {
    let h = x.ncols();
    for &i in rows {
        for c in 0..d {
            let (mut acc, mut scale) = (0f64, 0f64);
            for t in 0..h {
                let p = x[[i, t]] as f64 * w[t * d + c] as f64;
                acc += p;
                scale += p.abs();
            }
            let g = got.get(i * d + c) as f64;
            assert!((g - acc).abs() <= 1e-4 * scale.max(1e-6), "{name}[{i},{c}] = {g}, naive {acc}");
        }
    }
}

#[test]
fn projection_tables_match_naive_loop() {
    let m = model(500, 9);
    let (q, k, v) = m.projection_tables().unwrap();
    let x = m.inherent_features().unwrap();
    let all: Vec<usize> = (0..500).collect();
    for (name, t, w) in [("p_q", &q, "w_q"), ("p_k", &k, "w_k"), ("p_v", &v, "w_v")] {
        assert_eq!((t.rows, t.cols, t.dtype()), (500, 128, DType::F32));
        assert_projection(name, t, &x, &m.param(w).unwrap().data, 128, &all);
    }
    // The single-table builder agrees bit for bit.
    assert_eq!(f32s(&m.projection_table(Projection::K).unwrap()), f32s(&k));
}

#[test]
fn projection_tables_at_scale() {
    let n = 100_000;
    let m = model(n, 11);
    let t0 = Instant::now();
    let (q, k, v) = m.projection_tables().unwrap();
    let dt = t0.elapsed();
    eprintln!("projection tables for {n} items: {dt:?}");
    assert!(dt.as_secs() < 60, "{dt:?}");
    let x = m.inherent_features_of(&[0, 1023, 1024, 50_000, (n - 1) as u32]).unwrap();
    for (i, id) in [0usize, 1023, 1024, 50_000, n - 1].into_iter().enumerate() {
        for (name, t, w) in [("p_q", &q, "w_q"), ("p_k", &k, "w_k"), ("p_v", &v, "w_v")] {
            let mut row = Vec::new();
            t.extend_row(id, &mut row);
            let one = HostTable::f32(1, 128, row).unwrap();
            assert_projection(name, &one, &x.slice(ndarray::s![i..i + 1, ..]).to_owned(), &m.param(w).unwrap().data, 128, &[0]);
        }
    }
}

#[test]
fn cross_tables_match_formula() {
    let m = model(50, 3);
    let (bias, value) = m.cross_tables().unwrap();
    let offs = features::cross_offsets();
    let (h, jn, c, d) = (4usize, 3usize, 8usize, 128usize);
    assert_eq!((bias.rows, bias.cols), (74, h));
    assert_eq!((value.rows, value.cols), (74, d));
    let e = &m.param("cross_emb").unwrap().data;
    let wc = &m.param("w_c").unwrap().data;
    let beta = &m.param("beta").unwrap().data;
    let wvc = &m.param("w_vc").unwrap().data;
    for j in 0..jn {
        for vv in 0..features::CROSS_VOCAB[j] {
            let r = offs[j] as usize + vv;
            for a in 0..h {
                let dot: f64 = (0..c).map(|t| e[r * c + t] as f64 * wc[(a * jn + j) * c + t] as f64).sum();
                let want = beta[a * jn + j] as f64 * dot;
                assert!((bias.get(r * h + a) as f64 - want).abs() < 1e-6, "bias[{r},{a}]");
            }
            for col in 0..d {
                let want: f64 = (0..c).map(|t| e[r * c + t] as f64 * wvc[(j * c + t) * d + col] as f64).sum();
                assert!((value.get(r * d + col) as f64 - want).abs() < 1e-6, "value[{r},{col}]");
            }
        }
    }
    // β scales the bias linearly.
    let mut m2 = m.clone();
    m2.param_mut("beta").unwrap().data.iter_mut().for_each(|b| *b = 2.0);
    let (bias2, _) = m2.cross_tables().unwrap();
    for i in 0..74 * h {
        assert!((bias2.get(i) - 2.0 * bias.get(i)).abs() <= 1e-6);
    }
}

#[test]
fn online_tables_on_cpu() {
    let m = model(300, 21);
    let be = CpuBackend::new();
    let (_, pk, _) = m.projection_tables().unwrap();
    let (cb, _) = m.cross_tables().unwrap();
    let ids = [0u32, 5, 299, 5, 123];
    for dtype in [DType::F32, DType::F16] {
        let t = m.online_tables(&be, dtype).unwrap();
        for tab in [&t.p_q, &t.p_k, &t.p_v] {
            assert_eq!((tab.rows, tab.cols, tab.dtype), (300, 128, dtype));
        }
        assert_eq!((t.cross_bias.rows, t.cross_bias.cols, t.cross_bias.dtype), (74, 4, DType::F32));
        assert_eq!((t.cross_value.rows, t.cross_value.cols, t.cross_value.dtype), (74, 128, DType::F32));
        assert_eq!((t.w_o.rows, t.w_o.cols, t.w_o.dtype), (128, 128, DType::F32));
        assert_eq!(t.cross_offsets, features::cross_offsets());
        assert_eq!((t.heads, t.n_items(), t.d_model(), t.n_cross(), t.d_head()), (4, 300, 128, 3, 32));

        let got = be.gather(&t.p_k, &ids).unwrap();
        for (n, &id) in ids.iter().enumerate() {
            for c in 0..128 {
                let want = pk.get(id as usize * 128 + c);
                let g = got[n * 128 + c];
                match dtype {
                    DType::F32 => assert_eq!(g.to_bits(), want.to_bits()),
                    DType::F16 => assert!((g - want).abs() <= 1e-3 * want.abs() + 1e-6, "{g} vs {want}"),
                }
            }
        }
        let w = be.gather(&t.w_o, &[7]).unwrap();
        assert_eq!(w, m.param("w_o").unwrap().row(7).unwrap());
        // The cross-bias gather-and-sum reads the same table.
        let rows = features::cross_rows(30.0, 60.0, 0, 4096);
        let b = be.cross_bias(&t.cross_bias, &rows, 3).unwrap();
        for (a, &got) in b.iter().enumerate() {
            let want: f32 = rows.iter().map(|&r| cb.get(r as usize * 4 + a)).sum();
            assert!((got - want).abs() < 1e-6);
        }
    }
}

#[test]
fn save_load_roundtrip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.twin");
    let m = model(500, 77);
    m.save(&p).unwrap();
    let back = Model::load(&p).unwrap();
    assert_eq!(back.config, m.config);
    assert_eq!(back.item_author, m.item_author);
    assert_eq!(back.item_topic, m.item_topic);
    assert_eq!(back.item_duration_bucket, m.item_duration_bucket);
    assert_eq!(bits(&back), bits(&m));
    assert_eq!(back.describe(), m.describe());
    let bytes = fs::read(&p).unwrap();
    assert_eq!(&bytes[..8], b"TWINMODL");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
    // Saving is deterministic.
    let p2 = dir.path().join("m2.twin");
    back.save(&p2).unwrap();
    assert_eq!(fs::read(&p2).unwrap(), bytes);
    // No temp files left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn describe_lists_tensors() {
    let m = model(100, 1);
    let s = m.describe();
    assert!(s.contains(&m.n_params().to_string()), "{s}");
    for (name, t) in m.params() {
        assert!(s.contains(name), "{name}");
        assert!(s.contains(&format!("{:?}", t.shape)), "{name}");
    }
    assert!(s.contains("[100, 64]"));
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.twin");
    let m = model(60, 4);
    m.save(&p).unwrap();
    let good = fs::read(&p).unwrap();
    let bad = dir.path().join("bad.twin");

    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend((0..good.len()).step_by(good.len() / 150 + 1));
    cuts.extend([good.len() / 2, good.len() - 5, good.len() - 4, good.len() - 1]);
    for cut in cuts {
        fs::write(&bad, &good[..cut]).unwrap();
        assert!(matches!(Model::load(&bad), Err(Error::CorruptFile { .. })), "cut {cut}");
    }
    let mut padded = good.clone();
    padded.push(0);
    fs::write(&bad, &padded).unwrap();
    assert!(Model::load(&bad).is_err());

    let mut offsets: Vec<usize> = (0..200).collect();
    offsets.extend((0..good.len()).step_by(good.len() / 200 + 1));
    offsets.push(good.len() - 1);
    for i in offsets {
        for mask in [0x01u8, 0x80] {
            let mut b = good.clone();
            b[i] ^= mask;
            fs::write(&bad, &b).unwrap();
            assert!(Model::load(&bad).is_err(), "flip {mask:#x} at {i}");
        }
    }

    let mut b = good.clone();
    b[..8].copy_from_slice(b"TWINDATA");
    fs::write(&bad, &b).unwrap();
    assert!(matches!(Model::load(&bad), Err(Error::CorruptFile { .. })));

    // A future version, correctly framed, is refused by name.
    fileio::save(&bad, MAGIC, VERSION + 1, &good[20..good.len() - 4]).unwrap();
    assert!(matches!(Model::load(&bad), Err(Error::UnsupportedVersion { found: 2, supported: 1, .. })));

    assert!(matches!(Model::load(&dir.path().join("absent.twin")), Err(Error::Io { .. })));
    // The original still loads.
    assert_eq!(bits(&Model::load(&p).unwrap()), bits(&m));
}

#[test]
fn well_framed_but_invalid_contents_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.twin");
    let m = model(40, 8);

    write_raw(&p, &m, |_, _, _| {});
    assert_eq!(bits(&Model::load(&p).unwrap()), bits(&m));

    write_raw(&p, &m, |n, _, d| {
        if n == "w_vc" {
            d[5] = f32::NAN;
        }
    });
    match Model::load(&p) {
        Err(Error::NonFinite { field: "w_vc", index: 5, .. }) => {}
        other => panic!("{other:?}"),
    }
    write_raw(&p, &m, |n, _, d| {
        if n == "author_emb" {
            d[0] = f32::INFINITY;
        }
    });
    assert!(matches!(Model::load(&p), Err(Error::NonFinite { field: "author_emb", .. })));

    write_raw(&p, &m, |n, s, d| {
        if n == "w_q" {
            s[1] = 64;
            d.truncate(144 * 64);
        }
    });
    match Model::load(&p) {
        Err(e @ Error::BadShape { field: "w_q", .. }) => assert!(e.to_string().contains("w_q")),
        other => panic!("{other:?}"),
    }
    write_raw(&p, &m, |n, s, _| {
        if n == "beta" {
            s.push(1);
        }
    });
    assert!(matches!(Model::load(&p), Err(Error::BadShape { field: "beta", .. })));
    // Shape says one thing, data another.
    write_raw(&p, &m, |n, _, d| {
        if n == "mlp_b1" {
            d.pop();
        }
    });
    let e = Model::load(&p).unwrap_err();
    assert!(matches!(e, Error::CorruptFile { .. }) && e.to_string().contains("mlp_b1"), "{e}");

    // Item features out of vocabulary.
    let mut m2 = m.clone();
    m2.item_topic[7] = 11;
    write_raw(&p, &m2, |_, _, _| {});
    assert!(matches!(Model::load(&p), Err(Error::OutOfRange { field: "item_topic", index: 7, value: 11, limit: 11 })));
    // Config that no longer matches the tensors.
    let mut m3 = m.clone();
    m3.config.id_dim = 32;
    write_raw(&p, &m3, |_, _, _| {});
    assert!(matches!(Model::load(&p), Err(Error::BadShape { field: "item_emb", value: 64, .. })));
    // Garbage config JSON.
    let mut w = Writer::new();
    w.str("{not json");
    fileio::save(&p, MAGIC, VERSION, &w.buf).unwrap();
    assert!(matches!(Model::load(&p), Err(Error::CorruptFile { .. })));
}

#[test]
fn failed_save_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.twin");
    let old = model(30, 1);
    old.save(&p).unwrap();

    // A path inside a directory that does not exist fails cleanly.
    let nowhere = dir.path().join("no/such/dir/m.twin");
    assert!(matches!(old.save(&nowhere), Err(Error::Io { .. })));
    assert!(!nowhere.exists());

    // A broken model is refused before anything is written.
    let mut broken = model(30, 2);
    broken.param_mut("w_o").unwrap().data[3] = f32::NAN;
    assert!(matches!(broken.save(&p), Err(Error::NonFinite { field: "w_o", index: 3, .. })));
    let mut broken = model(30, 2);
    broken.param_mut("topic_emb").unwrap().shape = vec![11, 4, 2];
    assert!(matches!(broken.save(&p), Err(Error::BadShape { field: "topic_emb", .. })));
    assert_eq!(bits(&Model::load(&p).unwrap()), bits(&old));

    // A successful save replaces it whole; no temp files remain.
    let new = model(30, 2);
    new.save(&p).unwrap();
    assert_eq!(bits(&Model::load(&p).unwrap()), bits(&new));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn tables_refuse_a_model_broken_in_memory() {
    let mut m = model(30, 1);
    m.param_mut("w_k").unwrap().shape = vec![128, 144];
    assert!(matches!(m.projection_tables(), Err(Error::BadShape { field: "w_k", .. })));
    let mut m = model(30, 1);
    m.item_author[2] = 99;
    assert!(matches!(m.inherent_features(), Err(Error::OutOfRange { field: "item_author", .. })));
    let mut m = model(30, 1);
    m.param_mut("w_o").unwrap().data[0] = f32::NAN;
    assert!(m.online_tables(&CpuBackend::new(), DType::F32).is_err());
    assert!(m.param("nope").is_err());
}
