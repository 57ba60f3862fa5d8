//! Test support shared by the test binaries (tests/ops.rs, tests/parity/): random inputs with
//! outliers, the online tables built from them, requests, and closeness checks. Requests come
//! from the library's own generator (`twin_engine::bench::online::RequestGen`, the one the
//! benchmarks use), so the three callers draw them one way.
#![allow(dead_code)]

use twin_engine::backend::{Backend, DType, HostTable, OnlineRequests, OnlineTables};
use twin_engine::bench::online::RequestGen;
use twin_engine::features;
use twin_engine::rng::SplitMix64;

pub const H: usize = 4;
pub const DK: usize = 32;
pub const D: usize = H * DK;
pub const N_ITEMS: usize = 5000;

/// The outliers [`randn_with`] puts at every 97th value (index ≡ 13 mod 97).
#[derive(Clone, Copy, Debug)]
pub enum Outliers {
    /// ±v by the sign of the draw (the parity tests: ±50, so single q·k products reach 2500).
    Fixed(f32),
    /// The draw times s (tests/ops.rs: ×20, within what its naive f64 loops check tightly).
    Scaled(f64),
}

/// Normal(0, scale) with outliers.
pub fn randn_with(rng: &mut SplitMix64, n: usize, scale: f64, outliers: Outliers) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = rng.normal() * scale;
            if i % 97 != 13 {
                return x as f32;
            }
            match outliers {
                Outliers::Fixed(v) if x < 0.0 => -v,
                Outliers::Fixed(v) => v,
                Outliers::Scaled(s) => (x * s) as f32,
            }
        })
        .collect()
}

/// Normal(0, scale) with the parity tests' outliers: every 97th value is ±50.
pub fn randn(rng: &mut SplitMix64, n: usize, scale: f64) -> Vec<f32> {
    randn_with(rng, n, scale, Outliers::Fixed(50.0))
}

/// `|a - b| <= atol + rtol * |b|`.
pub fn close(a: f32, b: f32, atol: f32, rtol: f32) -> bool {
    (a - b).abs() <= atol + rtol * b.abs()
}

/// Elementwise comparison; NaN anywhere in `got` fails (outputs are poisoned with NaN).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: impl Fn(usize) -> f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(!g.is_nan(), "{what}[{i}] is NaN (unwritten output?)");
        let err = (g - w).abs();
        let tol = atol(i) + rtol * w.abs();
        assert!(err <= tol, "{what}[{i}]: got {g}, want {w} (|err| {err} > tol {tol})");
        if err / tol.max(f32::MIN_POSITIVE) > worst.1 {
            worst = (i, err / tol);
        }
    }
    eprintln!("  {what}: {} values, worst error {:.3} of tolerance at {}", got.len(), worst.1, worst.0);
}

/// The shape and distribution of random online tables (see [`Tables::shaped`]).
#[derive(Clone, Copy, Debug)]
pub struct TableShape {
    pub n_items: usize,
    /// Row width of P_Q/P_K/P_V, cross values and W^o: `heads` · d_k.
    pub d: usize,
    pub heads: usize,
    /// How P_Q/P_K/P_V are stored (and, with `all_in_dtype`, cross values and W^o).
    pub dtype: DType,
    /// Cross values and W^o in `dtype` too (the CUDA ESU tests' f16 paths for every table);
    /// otherwise they stay f32, as the model stores them.
    pub all_in_dtype: bool,
    pub outliers: Outliers,
}

impl TableShape {
    /// The parity tests' tables: 5,000 items, D = 128 over 4 heads, ±50 outliers.
    pub fn parity(dtype: DType) -> TableShape {
        TableShape { n_items: N_ITEMS, d: D, heads: H, dtype, all_in_dtype: false, outliers: Outliers::Fixed(50.0) }
    }
}

/// Random online tables (host copies; [`Tables::upload`] puts them on a backend).
pub struct Tables {
    pub host_pq: HostTable,
    pub host_pk: HostTable,
    pub host_pv: HostTable,
    pub host_cb: HostTable,
    pub host_cv: HostTable,
    pub host_wo: HostTable,
    pub dtype: DType,
    pub heads: usize,
}

impl Tables {
    /// The parity tests' tables ([`TableShape::parity`]).
    pub fn new(seed: u64, dtype: DType) -> Tables {
        Tables::shaped(seed, &TableShape::parity(dtype))
    }

    /// Tables of `s`: P_Q, P_K (scale 0.3), P_V (1.0), cross bias and values (0.5), W^o
    /// (1/√d), drawn in that order from one stream seeded with `seed`.
    pub fn shaped(seed: u64, s: &TableShape) -> Tables {
        let mut rng = SplitMix64::new(seed);
        let v = *features::cross_offsets().last().unwrap() as usize;
        let mut table = |rows: usize, cols: usize, scale: f64, in_dtype: bool| {
            let t = HostTable::f32(rows, cols, randn_with(&mut rng, rows * cols, scale, s.outliers)).unwrap();
            if in_dtype && s.dtype == DType::F16 {
                t.to_f16()
            } else {
                t
            }
        };
        let (n, d) = (s.n_items, s.d);
        let host_pq = table(n, d, 0.3, true);
        let host_pk = table(n, d, 0.3, true);
        let host_pv = table(n, d, 1.0, true);
        let host_cb = table(v, s.heads, 0.5, false);
        let host_cv = table(v, d, 0.5, s.all_in_dtype);
        let host_wo = table(d, d, 1.0 / (d as f64).sqrt(), s.all_in_dtype);
        Tables { host_pq, host_pk, host_pv, host_cb, host_cv, host_wo, dtype: s.dtype, heads: s.heads }
    }

    pub fn upload(&self, be: &dyn Backend) -> OnlineTables {
        OnlineTables {
            p_q: be.upload_table("p_q", &self.host_pq).unwrap(),
            p_k: be.upload_table("p_k", &self.host_pk).unwrap(),
            p_v: be.upload_table("p_v", &self.host_pv).unwrap(),
            cross_bias: be.upload_table("cross_bias", &self.host_cb).unwrap(),
            cross_value: be.upload_table("cross_value", &self.host_cv).unwrap(),
            w_o: be.upload_table("w_o", &self.host_wo).unwrap(),
            cross_offsets: features::cross_offsets(),
            heads: self.heads,
        }
    }
}

/// Every value of `t` widened to f32 (what a naive loop reads from an f16 table).
pub fn values(t: &HostTable) -> Vec<f32> {
    (0..t.rows * t.cols).map(|i| t.get(i)).collect()
}

/// Requests of the given `(L, B)` shapes, one after the other in one batch, over the parity
/// tables' items, cluster sizes 1..=19. Item ids repeat on purpose: every 7th behaviour copies
/// an earlier one of the same request (item, cross rows and size), so exact score ties occur
/// and exercise the tie rule.
pub fn requests(shapes: &[(usize, usize)], seed: u64) -> OnlineRequests {
    RequestGen { n_items: N_ITEMS, max_size: 19, repeats: true }.requests(shapes, seed)
}
