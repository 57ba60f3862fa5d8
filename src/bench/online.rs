//! W1, the online path (SPEC §3): item tables of `items` rows (D = 128 = 4 heads × 32, J = 3,
//! K = 100), random ids, cluster sizes 1..20. Shapes `LxB` (one request of L behaviours and B
//! candidates) or `RxLxB` (R such requests in one batch, the throughput case).
//! Bytes and flops are the PyTorch peer's formula (BENCHMARKS.md), per request:
//! `L(D·bpe + 4 + 4J + 4) + B(D·bpe + 4) + B·K·D·bpe + B·D·bpe` bytes and
//! `2BLD + 4BKD + 2BD²` flops, with K = min(100, L).

use super::{measure, parse_dims, Card, Options, Row, Target};
use crate::backend::{Backend, HostTable, OnlineRequests, OnlineTables, TOP_K};
use crate::error::Result;
use crate::features;
use crate::rng::SplitMix64;

pub const HEADS: usize = 4;
pub const D: usize = 128;

/// BENCHMARKS.md's W1 shapes; CPU-bound backends (the CPU, lavapipe) get smaller ones.
pub fn default_shapes(cpu_bound: bool) -> Vec<String> {
    let s: &[&str] = if cpu_bound {
        &["1000x512", "10000x64", "10000x1", "100000x1"]
    } else {
        &["1000x512", "10000x512", "100000x512", "10000x1", "100000x64", "64x10000x256"]
    };
    s.iter().map(|x| x.to_string()).collect()
}

/// `(R, L, B)` of a shape string.
pub fn shape_of(s: &str) -> Result<(usize, usize, usize)> {
    let d = parse_dims("--shapes (online: LxB or RxLxB)", s)?;
    match d.as_slice() {
        [l, b] => Ok((1, *l, *b)),
        [r, l, b] => Ok((*r, *l, *b)),
        _ => Err(crate::Error::InvalidValue { field: "--shapes (online)", index: 0, value: d.len() as f64, why: "expected LxB or RxLxB" }),
    }
}

/// The shape string the report joins on ("L=10000,B=512" or "R=64,L=10000,B=256").
pub fn shape_key(r: usize, l: usize, b: usize) -> String {
    if r == 1 {
        format!("L={l},B={b}")
    } else {
        format!("R={r},L={l},B={b}")
    }
}

/// `(bytes, flops)` of `r` requests of `(l, b)` with tables of `bpe` bytes per element.
pub fn work(r: usize, l: usize, b: usize, bpe: usize) -> (f64, f64) {
    let (l, b, k, d, j) = (l as f64, b as f64, TOP_K.min(l as usize) as f64, D as f64, features::N_CROSS as f64);
    let bpe = bpe as f64;
    let bytes = l * (d * bpe + 4.0 + 4.0 * j + 4.0) + b * (d * bpe + 4.0) + b * k * d * bpe + b * d * bpe;
    let flops = 2.0 * b * l * d + 4.0 * b * k * d + 2.0 * b * d * d;
    (bytes * r as f64, flops * r as f64)
}

/// Uniform in [-1, 1): fast enough for 10^8-element tables.
pub fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n).map(|_| (r.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect()
}

/// Host copies of the model's online tables (`n` items), f32.
pub struct HostTables {
    pub pq: HostTable,
    pub pk: HostTable,
    pub pv: HostTable,
    pub cb: HostTable,
    pub cv: HostTable,
    pub wo: HostTable,
}

impl HostTables {
    pub fn random(n: usize) -> Result<HostTables> {
        let v = *features::cross_offsets().last().unwrap_or(&0) as usize;
        Ok(HostTables {
            pq: HostTable::f32(n, D, fill(n * D, 1))?,
            pk: HostTable::f32(n, D, fill(n * D, 2))?,
            pv: HostTable::f32(n, D, fill(n * D, 3))?,
            cb: HostTable::f32(v, HEADS, fill(v * HEADS, 4))?,
            cv: HostTable::f32(v, D, fill(v * D, 5))?,
            wo: HostTable::f32(D, D, fill(D * D, 6))?,
        })
    }

    /// Upload to `be`, the projection tables as `f16` when asked.
    pub fn upload(&self, be: &dyn Backend, f16: bool) -> Result<OnlineTables> {
        let conv = |t: &HostTable| if f16 { t.to_f16() } else { t.clone() };
        Ok(OnlineTables {
            p_q: be.upload_table("p_q", &conv(&self.pq))?,
            p_k: be.upload_table("p_k", &conv(&self.pk))?,
            p_v: be.upload_table("p_v", &conv(&self.pv))?,
            cross_bias: be.upload_table("cross_bias", &self.cb)?,
            cross_value: be.upload_table("cross_value", &self.cv)?,
            w_o: be.upload_table("w_o", &self.wo)?,
            cross_offsets: features::cross_offsets(),
            heads: HEADS,
        })
    }
}

/// How [`RequestGen::requests`] draws random requests: the benchmarks' and the tests' one
/// generator (tests/support/mod.rs calls it), so they cannot drift apart.
#[derive(Clone, Copy, Debug)]
pub struct RequestGen {
    /// Behaviour and candidate items are drawn from `0..n_items`.
    pub n_items: usize,
    /// Cluster sizes are drawn from `1..=max_size`.
    pub max_size: u32,
    /// Every 7th behaviour (position ≡ 3 mod 7) copies an earlier one of its request (item,
    /// cross rows and size), so exact score ties occur: the parity tests exercise the tie rule
    /// with them; the benchmarks draw every behaviour afresh.
    pub repeats: bool,
}

impl RequestGen {
    /// Requests of the given `(L, B)` shapes, one after the other in one batch. Per behaviour:
    /// its item, one row in each cross feature's vocabulary, its size; then the candidates.
    pub fn requests(&self, shapes: &[(usize, usize)], seed: u64) -> OnlineRequests {
        let mut rng = SplitMix64::new(seed);
        let offs = features::cross_offsets();
        let j = features::N_CROSS;
        let n = self.n_items as u64;
        let mut req = OnlineRequests::new();
        for &(l, b) in shapes {
            let mut items: Vec<u32> = Vec::with_capacity(l);
            let mut cross: Vec<u32> = Vec::with_capacity(l * j);
            let mut sizes: Vec<f32> = Vec::with_capacity(l);
            for i in 0..l {
                if self.repeats && i > 0 && i % 7 == 3 {
                    // src < i: behaviours 0..i are already in items, cross and sizes.
                    let src = rng.below(i as u64) as usize;
                    items.push(items[src]);
                    cross.extend_from_within(src * j..(src + 1) * j);
                    sizes.push(sizes[src]);
                    continue;
                }
                items.push(rng.below(n) as u32);
                for w in offs.windows(2) {
                    cross.push(w[0] + rng.below((w[1] - w[0]) as u64) as u32);
                }
                sizes.push(1.0 + rng.below(self.max_size as u64) as f32);
            }
            let cands: Vec<u32> = (0..b).map(|_| rng.below(n) as u32).collect();
            req.push(&items, &cross, &sizes, &cands);
        }
        req
    }
}

/// `r` random requests of `(l, b)` over `n_items` items, cluster sizes 1..=20, no repeats.
pub fn requests(n_items: usize, r: usize, l: usize, b: usize, seed: u64) -> OnlineRequests {
    RequestGen { n_items, max_size: 20, repeats: false }.requests(&vec![(l, b); r], seed)
}

/// Every shape × dtype × target of W1.
pub fn run(targets: &[Target], card: &Card, o: &Options, cpu_bound: bool, rows: &mut Vec<Row>) -> Result<()> {
    let n_items = o.items.unwrap_or(if cpu_bound { 100_000 } else { 1_000_000 });
    let shapes = o.shapes.clone().unwrap_or_else(|| default_shapes(cpu_bound));
    let parsed: Vec<(usize, usize, usize)> = shapes.iter().map(|s| shape_of(s)).collect::<Result<_>>()?;
    let host = HostTables::random(n_items)?;
    for dtype in &o.dtypes {
        let f16 = dtype == "f16";
        for t in targets {
            let tables = host.upload(t.be.as_ref(), f16);
            let tables = match tables {
                Ok(tb) => tb,
                Err(e) => {
                    for &(r, l, b) in &parsed {
                        rows.push(Row::new("online", t, dtype, shape_key(r, l, b)).failed(&e));
                    }
                    continue;
                }
            };
            for (i, &(r, l, b)) in parsed.iter().enumerate() {
                let req = requests(n_items, r, l, b, 100 + i as u64);
                let batch = req.as_batch();
                let row = Row::new("online", t, dtype, shape_key(r, l, b));
                let (bytes, flops) = work(r, l, b, if f16 { 2 } else { 4 });
                let m = measure(t.be.as_ref(), o, &mut || t.be.online(&tables, &batch, TOP_K).map(|_| ()));
                rows.push(match m {
                    Ok(m) => row.measured(&m, bytes, flops, card),
                    Err(e) => row.failed(&e),
                });
            }
        }
    }
    Ok(())
}
