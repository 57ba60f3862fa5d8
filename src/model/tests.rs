//! Decoder checks that need a deliberately broken payload (the public `save` refuses to
//! write one).

use std::path::Path;

use super::*;

fn items(n: usize) -> Items {
    Items {
        author: (0..n as u32).map(|i| i % 7).collect(),
        topic: (0..n as u32).map(|i| i % 5).collect(),
        duration_bucket: (0..n as u32).map(|i| i % 24).collect(),
        external_id: (0..n as u64).collect(),
        n_authors: 7,
        n_topics: 5,
    }
}

fn small() -> Model {
    let it = items(50);
    Model::init(ModelConfig::for_items(&it), &it, 3).unwrap()
}

fn decode(m: &Model) -> Result<Model> {
    Model::decode(&m.encode().unwrap(), Path::new("mem"))
}

#[test]
fn decode_roundtrip() {
    let m = small();
    assert_eq!(decode(&m).unwrap(), m);
}

#[test]
fn decode_rejects_nan_naming_tensor() {
    let mut m = small();
    m.param_mut("w_k").unwrap().data[17] = f32::NAN;
    match decode(&m) {
        Err(Error::NonFinite { field: "w_k", index: 17, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn decode_rejects_wrong_shape_naming_tensor() {
    let mut m = small();
    let t = m.param_mut("w_o").unwrap();
    t.shape = vec![128, 64];
    t.data.truncate(128 * 64);
    match decode(&m) {
        Err(Error::BadShape { field: "w_o", value: 64, .. }) => {}
        other => panic!("{other:?}"),
    }
    let mut m = small();
    m.param_mut("beta").unwrap().data.pop();
    assert!(matches!(decode(&m), Err(Error::CorruptFile { .. })));
}

#[test]
fn decode_rejects_item_features_out_of_range() {
    let mut m = small();
    m.item_topic[3] = 5;
    match decode(&m) {
        Err(Error::OutOfRange { field: "item_topic", index: 3, value: 5, limit: 5 }) => {}
        other => panic!("{other:?}"),
    }
    let mut m = small();
    m.item_author.pop();
    assert!(matches!(decode(&m), Err(Error::LengthMismatch { field: "item_author", .. })));
}

#[test]
fn decode_rejects_missing_duplicate_unknown() {
    let m = small();
    let mut missing = m.clone();
    missing.params.retain(|(n, _)| *n != "mlp_b2");
    let e = decode(&missing).unwrap_err().to_string();
    assert!(e.contains("mlp_b2") && e.contains("missing"), "{e}");

    let mut dup = m.clone();
    let extra = dup.params[3].clone();
    dup.params.push(extra);
    let e = decode(&dup).unwrap_err().to_string();
    assert!(e.contains("duplicate") || e.contains("twice"), "{e}");

    let mut unk = m.clone();
    unk.params[0].0 = "bogus";
    let e = decode(&unk).unwrap_err().to_string();
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn decode_rejects_bad_config() {
    let mut m = small();
    m.config.heads = 0;
    assert!(matches!(decode(&m), Err(Error::BadShape { field: "heads", .. })));
    let mut m = small();
    m.config.cross_vocab[1] = 3;
    assert!(matches!(decode(&m), Err(Error::BadShape { field: "cross_vocab", .. })));
    let mut m = small();
    m.config.n_items = usize::MAX / 2;
    assert!(decode(&m).is_err());
}

#[test]
fn init_streams_are_per_tensor() {
    // Same seed and name give the same values whatever else the model holds.
    let a = small();
    let it = items(50);
    let mut cfg = ModelConfig::for_items(&it);
    cfg.mlp_hidden = vec![32];
    let b = Model::init(cfg, &it, 3).unwrap();
    for name in ["item_emb", "w_q", "w_vc", "cross_emb"] {
        assert_eq!(a.param(name).unwrap(), b.param(name).unwrap(), "{name}");
    }
    assert_ne!(a.param("w_q").unwrap(), a.param("w_k").unwrap());
}

#[test]
fn shapes_follow_config() {
    let m = small();
    let c = &m.config;
    assert_eq!(c.inherent_dim(), 144);
    assert_eq!(c.d_model(), 128);
    assert_eq!(c.mlp_input(), 8 + 144 + 256);
    assert_eq!(m.param("cross_emb").unwrap().shape, vec![74, 8]);
    assert_eq!(m.param("w_c").unwrap().shape, vec![4, 3, 8]);
    assert_eq!(m.param("mlp_w0").unwrap().shape, vec![408, 256]);
    assert_eq!(m.param("mlp_w3").unwrap().shape, vec![64, 1]);
    assert_eq!(m.param("mlp_b3").unwrap().shape, vec![1]);
    assert!(m.param("mlp_w4").is_err());
    assert!(m.param("beta").unwrap().data.iter().all(|&b| b == 1.0));
}
