//! W3, one training step (SPEC §5): forward, backward and the optimizer update, batch B with a
//! lifelong sequence of L behaviours (`twin`) or L/10 clusters with `ln n` (`twin-v2`), short-term
//! 50, random ids over `items` items. Shapes `BxL`; each shape runs both variants.
//! Bytes and flops (PERF.md, "Training step"): with `H` the item-feature width, `N_u = B·(K + S)`
//! projected rows (an upper bound on the unique finalist and short-term items),
//! flops `2·B·L·h·H` (GSU scoring) `+ 3·2·2·N_u·H·D` (projection GEMMs, forward and both
//! gradients) `+ 3·4·B·(K + S)·D` (attention) `+ 3·2·B·|MLP|`, bytes `B·L·H·4` (gathered rows)
//! `+ 2·N_u·(H + D)·4 + 6·B·(K + S)·D·4`.

use super::{measure, parse_dims, Card, Options, Row, Target};
use crate::backend::BackendKind;
use crate::data::Items;
use crate::error::Result;
use crate::features;
use crate::model::{Model, ModelConfig};
use crate::rng::SplitMix64;
use crate::train::device_step::DeviceTrainer;
use crate::train::optim::{OptimConfig, Optimizer};
use crate::train::step::{self, CpuOps, Weights};
use crate::train::{Batch, Variant};

pub fn default_shapes(cpu_bound: bool) -> Vec<String> {
    let s: &[&str] = if cpu_bound { &["64x1000"] } else { &["512x1000", "512x10000"] };
    s.iter().map(|x| x.to_string()).collect()
}

/// A random catalogue of `n` items (authors n/10, 64 topics).
pub fn items(n: usize) -> Items {
    let mut r = SplitMix64::new(1);
    Items {
        author: (0..n).map(|_| r.below(n as u64 / 10 + 1) as u32).collect(),
        topic: (0..n).map(|_| r.below(64) as u32).collect(),
        duration_bucket: (0..n).map(|_| r.below(features::DURATION_BUCKETS as u64) as u32).collect(),
        external_id: (0..n as u64).collect(),
        n_authors: (n / 10 + 1) as u32,
        n_topics: 64,
    }
}

/// `b` samples, each with `l` long rows (`ln n` sizes when `log_n`) and the short-term window.
pub fn batch(cfg: &ModelConfig, b: usize, l: usize, log_n: bool, seed: u64) -> Batch {
    let mut r = SplitMix64::new(seed);
    let offs = cfg.cross_offsets();
    let mut out = Batch { long_offsets: vec![0], short_offsets: vec![0], ..Batch::default() };
    let row = |r: &mut SplitMix64, items: &mut Vec<u32>, cross: &mut Vec<u32>| {
        items.push(r.below(cfg.n_items as u64) as u32);
        for j in 0..cfg.n_cross() {
            cross.push(offs[j] + r.below((offs[j + 1] - offs[j]) as u64) as u32);
        }
    };
    for s in 0..b {
        out.target.push(r.below(cfg.n_items as u64) as u32);
        out.context.push((s % 24) as u32);
        out.label.push(r.below(2) as f32);
        out.user.push(s as u32);
        for _ in 0..l {
            row(&mut r, &mut out.long_item, &mut out.long_cross);
            out.long_log_n.push(if log_n { ((1 + r.below(19)) as f32).ln() } else { 0.0 });
        }
        out.long_offsets.push(out.long_item.len() as u32);
        for _ in 0..cfg.short_len {
            row(&mut r, &mut out.short_item, &mut out.short_cross);
        }
        out.short_offsets.push(out.short_item.len() as u32);
    }
    out
}

/// `(bytes, flops)` of one device-resident `no-seq` step of `b` samples: the MLP forward (2
/// FLOP a weight per sample) and backward (4), the MLP input written, read and its gradient
/// written, and Adam reading w, g, m, v and writing w, m, v for every MLP parameter.
pub fn work_no_seq(cfg: &ModelConfig, b: usize) -> (f64, f64) {
    let zin = cfg.mlp_input() as f64;
    let mut params = 0f64;
    let mut width = zin;
    for &w in cfg.mlp_hidden.iter().chain(std::iter::once(&1)) {
        params += width * w as f64 + w as f64;
        width = w as f64;
    }
    let b = b as f64;
    (4.0 * (3.0 * b * zin + 7.0 * params), 6.0 * b * params)
}

/// `(bytes, flops)` of one step of `b` samples over `l` GSU rows (see the module docs).
pub fn work(cfg: &ModelConfig, b: usize, l: usize) -> (f64, f64) {
    let hh = (2 * cfg.id_dim + 2 * cfg.small_dim) as f64;
    let d = (cfg.heads * cfg.d_head) as f64;
    let rows = (cfg.top_k.min(l) + cfg.short_len) as f64;
    let (b, l, h) = (b as f64, l as f64, cfg.heads as f64);
    let nu = b * rows;
    let mut mlp = 0f64;
    let mut width = (cfg.small_dim as f64) + hh + 2.0 * d;
    for &w in cfg.mlp_hidden.iter().chain(std::iter::once(&1)) {
        mlp += width * w as f64;
        width = w as f64;
    }
    let flops = 2.0 * b * l * h * hh + 12.0 * nu * hh * d + 12.0 * b * rows * d + 6.0 * b * mlp;
    let bytes = b * l * hh * 4.0 + 2.0 * nu * (hh + d) * 4.0 + 6.0 * b * rows * d * 4.0;
    (bytes, flops)
}

pub fn run(targets: &[Target], card: &Card, o: &Options, cpu_bound: bool, rows: &mut Vec<Row>) -> Result<()> {
    let shapes = o.shapes.clone().unwrap_or_else(|| default_shapes(cpu_bound));
    let parsed: Vec<(usize, usize)> = shapes
        .iter()
        .map(|s| {
            parse_dims("--shapes (train: BxL)", s).and_then(|d| match d.as_slice() {
                [b, l] => Ok((*b, *l)),
                _ => Err(crate::Error::InvalidValue { field: "--shapes (train)", index: 0, value: d.len() as f64, why: "expected BxL" }),
            })
        })
        .collect::<Result<_>>()?;
    let n = o.items.unwrap_or(if cpu_bound { 100_000 } else { 1_000_000 });
    let catalogue = items(n);
    let model = Model::init(ModelConfig::for_items(&catalogue), &catalogue, 1)?;
    for t in targets {
        for &(b, l) in &parsed {
            for v in [Variant::Twin, Variant::TwinV2] {
                let gsu_len = if v == Variant::TwinV2 { (l / 10).max(1) } else { l };
                let mut row = Row::new("train", t, "f32", format!("B={b},L={l}"));
                row.version = v.to_string();
                let bt = batch(&model.config, b, gsu_len, v == Variant::TwinV2, 7);
                let cpu = t.be.kind() == BackendKind::Cpu;
                let measured = if cpu {
                    // The CPU runs the host step (the reference kernels, rayon): what `twin train`
                    // runs there.
                    let mut m = model.clone();
                    let mut opt = Optimizer::new(&m, OptimConfig::default());
                    measure(t.be.as_ref(), o, &mut || {
                        let out = step::step(&CpuOps, &Weights::of(&m), v, &bt, true)?;
                        let grads = out.grads.ok_or(crate::Error::Empty { field: "gradients", index: 0 })?;
                        opt.update(&mut m, &grads)
                    })
                } else {
                    // A GPU runs the device-resident step, as `twin train` does there.
                    DeviceTrainer::new(t.be.as_ref(), &model, v, OptimConfig::default())
                        .and_then(|mut tr| measure(t.be.as_ref(), o, &mut || tr.step(t.be.as_ref(), &bt).map(|_| ())))
                };
                let (bytes, flops) = work(&model.config, b, gsu_len);
                rows.push(match measured {
                    Ok(ms) => {
                        let mut r = row.measured(&ms, bytes, flops, card);
                        r.samples_per_s = Some(b as f64 / (r.median_ms / 1e3));
                        let mut notes = Vec::new();
                        if v == Variant::TwinV2 {
                            notes.push(format!("{gsu_len} clusters per sample"));
                        }
                        if !cpu {
                            notes.push("device-resident step".into());
                        }
                        r.note = (!notes.is_empty()).then(|| notes.join("; "));
                        r
                    }
                    Err(e) => row.failed(&e),
                });
            }
            // The device-resident no-seq step: the MLP head and embeddings alone, one upload and
            // one download per step; its own work name, since no peer runs this variant.
            let mut row = Row::new("train_device", t, "f32", format!("B={b}"));
            row.version = Variant::NoSeq.to_string();
            let bt = batch(&model.config, b, 0, false, 7);
            let measured = DeviceTrainer::new(t.be.as_ref(), &model, Variant::NoSeq, OptimConfig::default())
                .and_then(|mut tr| measure(t.be.as_ref(), o, &mut || tr.step(t.be.as_ref(), &bt).map(|_| ())));
            let (bytes, flops) = work_no_seq(&model.config, b);
            rows.push(match measured {
                Ok(ms) => {
                    let mut r = row.measured(&ms, bytes, flops, card);
                    r.samples_per_s = Some(b as f64 / (r.median_ms / 1e3));
                    r.note = Some("device-resident step (parameters and optimizer state on the device)".into());
                    r
                }
                Err(e) => row.failed(&e),
            });
        }
    }
    Ok(())
}
