//! `twin bench`: BENCHMARKS.md's workloads on one backend, timed the way the GPU kit needs.
//!
//! - W1 `online` (SPEC §3): the whole online path, one row per shape, dtype and kernel version
//!   (GSU v1 and v2 are rows of their own; on CUDA also v3, and ESU v1 beside the default v2).
//! - W2 `cluster` (SPEC §4): Lloyd iterations from seeded centroids, one user's hierarchical
//!   clustering, a batch of users.
//! - W3 `train` (SPEC §5): one training step (forward, backward, optimizer) per variant.
//!
//! Inputs are built and made resident before timing (tables uploaded once; points, batches and
//! requests built once). Each timed run goes through [`Backend::time_ms`]: CUDA events on the
//! CUDA backend, a synchronised host clock elsewhere. At least `reps` timed runs after `warmup`
//! untimed ones (a `budget_s` may cut a slow row short, never below 3 runs; the row says how
//! many ran). Every row carries the bytes and flops of its work, the floor on the card
//! ([`card::Card`]), the ratio to it, and the host↔device transfers one run pays.

pub mod card;
pub mod cluster;
pub mod online;
pub mod targets;
pub mod train;

use std::time::Instant;

use serde::Serialize;

use crate::backend::{Backend, Transfers};
use crate::error::{Error, Result};
pub use card::Card;
pub use targets::{open_targets, Target};

/// What to run and how long.
#[derive(Clone, Debug)]
pub struct Options {
    /// Timed runs per row (at least 20 for reported figures).
    pub reps: usize,
    /// Untimed runs before timing.
    pub warmup: usize,
    /// Seconds one row may spend timing; `None` for no cap.
    pub budget_s: Option<f64>,
    /// Shapes in the work's own syntax (see each module); `None` for the defaults.
    pub shapes: Option<Vec<String>>,
    /// Table dtypes for W1 ("f32", "f16").
    pub dtypes: Vec<String>,
    /// Item-table rows (W1) and catalogue size (W3); `None` for the work's default.
    pub items: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options { reps: 20, warmup: 3, budget_s: None, shapes: None, dtypes: vec!["f32".into(), "f16".into()], items: None }
    }
}

/// One measured row; serialised as-is by `--json` (scripts/gpu-report.py reads these keys).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    pub work: &'static str,
    pub backend: String,
    pub version: String,
    pub dtype: String,
    pub shape: String,
    pub runs: usize,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub bytes: f64,
    pub flops: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_floor: Option<f64>,
    pub h2d_calls: f64,
    pub h2d_bytes: f64,
    pub d2h_calls: f64,
    pub d2h_bytes: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Row {
    /// A row for `target` with its work's identity filled in; the measurement comes later.
    pub fn new(work: &'static str, target: &Target, dtype: &str, shape: String) -> Row {
        Row { work, backend: target.be.kind().name().into(), version: target.version.clone(), dtype: dtype.into(), shape, ..Row::default() }
    }

    /// Fill in times, transfers and the floor from a measurement of work of `bytes` / `flops`.
    pub fn measured(mut self, m: &Measured, bytes: f64, flops: f64, card: &Card) -> Row {
        self.runs = m.times_ms.len();
        self.median_ms = quantile(&m.times_ms, 0.5);
        self.p10_ms = quantile(&m.times_ms, 0.1);
        self.p90_ms = quantile(&m.times_ms, 0.9);
        self.bytes = bytes;
        self.flops = flops;
        self.floor_us = card.floor_us(bytes, flops, self.dtype == "f16");
        self.ratio_to_floor = self.floor_us.map(|f| self.median_ms * 1e3 / f);
        let n = self.runs.max(1) as f64;
        self.h2d_calls = m.transfers.h2d_calls as f64 / n;
        self.h2d_bytes = m.transfers.h2d_bytes as f64 / n;
        self.d2h_calls = m.transfers.d2h_calls as f64 / n;
        self.d2h_bytes = m.transfers.d2h_bytes as f64 / n;
        self
    }

    /// The row of a run that failed: the error is reported, the other rows go on.
    pub fn failed(mut self, e: &Error) -> Row {
        self.error = Some(e.to_string());
        self
    }
}

/// Timed runs of one piece of work and the transfers they paid in all.
#[derive(Clone, Debug)]
pub struct Measured {
    pub times_ms: Vec<f64>,
    pub transfers: Transfers,
}

/// Warm up, then time `f` `o.reps` times (fewer, but at least 3, if `o.budget_s` runs out).
pub fn measure(be: &dyn Backend, o: &Options, f: &mut dyn FnMut() -> Result<()>) -> Result<Measured> {
    let spent = |since: Instant, share: f64| o.budget_s.is_some_and(|b| since.elapsed().as_secs_f64() > b * share);
    let warm = Instant::now();
    for _ in 0..o.warmup {
        f()?;
        if spent(warm, 0.25) {
            break;
        }
    }
    let timed = Instant::now();
    let before = be.transfers();
    let mut times_ms = Vec::with_capacity(o.reps);
    while times_ms.len() < o.reps.max(1) {
        times_ms.push(be.time_ms(f)?);
        if times_ms.len() >= 3 && spent(timed, 1.0) {
            break;
        }
    }
    Ok(Measured { times_ms, transfers: be.transfers().since(before) })
}

/// Linear-interpolated quantile of unsorted samples.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 < v.len() {
        v[i] * (1.0 - frac) + v[i + 1] * frac
    } else {
        v[i]
    }
}

/// Parse `AxB` / `AxBxC` into numbers; `what` names the flag in the error.
pub fn parse_dims(what: &'static str, s: &str) -> Result<Vec<usize>> {
    let bad = || Error::InvalidValue { field: what, index: 0, value: f64::NAN, why: "expected numbers joined by 'x', e.g. 10000x512" };
    let dims: Vec<usize> = s.split('x').map(|t| t.trim().replace('_', "").parse::<usize>().map_err(|_| bad())).collect::<Result<_>>()?;
    if dims.iter().any(|&d| d == 0) {
        return Err(Error::InvalidValue { field: what, index: 0, value: 0.0, why: "every dimension must be at least 1" });
    }
    Ok(dims)
}

/// The table `twin bench` prints: one line per row.
pub fn format_table(card: &Card, clock: &str, rows: &[Row]) -> String {
    let mut out = format!(
        "card: {} | copy {:.1} GB/s | f32 {:.2} TFLOP/s | f16 {:.2} TFLOP/s\n  ({})\nclock: {clock}\n",
        card.device,
        card.bw_bytes_per_s / 1e9,
        card.f32_flops / 1e12,
        card.f16_flops / 1e12,
        card.how
    );
    out += &format!(
        "{:<17} {:<8} {:<10} {:<5} {:<28} {:>4} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8} {:>13} {:>13}\n",
        "work",
        "backend",
        "version",
        "dtype",
        "shape",
        "runs",
        "median ms",
        "p10 ms",
        "p90 ms",
        "MB",
        "GFLOP",
        "floor µs",
        "×floor",
        "h2d calls/MB",
        "d2h calls/MB"
    );
    for r in rows {
        if let Some(e) = &r.error {
            out += &format!("{:<17} {:<8} {:<10} {:<5} {:<28} error: {e}\n", r.work, r.backend, r.version, r.dtype, r.shape);
            continue;
        }
        let opt = |x: Option<f64>, p: usize| x.map_or("—".to_string(), |v| format!("{v:.p$}"));
        out += &format!(
            "{:<17} {:<8} {:<10} {:<5} {:<28} {:>4} {:>10.4} {:>10.4} {:>10.4} {:>9.2} {:>9.3} {:>9} {:>8} {:>13} {:>13}{}\n",
            r.work,
            r.backend,
            r.version,
            r.dtype,
            r.shape,
            r.runs,
            r.median_ms,
            r.p10_ms,
            r.p90_ms,
            r.bytes / 1e6,
            r.flops / 1e9,
            opt(r.floor_us, 1),
            opt(r.ratio_to_floor, 1),
            format!("{:.1}/{:.2}", r.h2d_calls, r.h2d_bytes / 1e6),
            format!("{:.1}/{:.2}", r.d2h_calls, r.d2h_bytes / 1e6),
            r.note.as_ref().map_or(String::new(), |n| format!("  ({n})")),
        );
    }
    out
}

/// The JSON `twin bench --json` prints and the kit collects.
#[derive(Serialize)]
pub struct Report<'a> {
    pub card: &'a Card,
    pub clock: &'a str,
    pub rows: &'a [Row],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;

    #[test]
    fn quantiles_interpolate() {
        let xs: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.5), 5.5);
        assert!((quantile(&xs, 0.1) - 1.9).abs() < 1e-12);
        assert!((quantile(&xs, 0.9) - 9.1).abs() < 1e-12);
        assert_eq!(quantile(&[3.0], 0.9), 3.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn dims_parse_or_name_the_flag() {
        assert_eq!(parse_dims("--shapes", "10000x512").unwrap(), [10000, 512]);
        assert_eq!(parse_dims("--shapes", "64x10_000x256").unwrap(), [64, 10000, 256]);
        for bad in ["", "x5", "5x", "0x5", "ax5", "5x-1"] {
            let e = parse_dims("--shapes", bad).unwrap_err().to_string();
            assert!(e.contains("--shapes"), "{bad:?}: {e}");
        }
    }

    /// W1's work at (10^4, 512) f16 on the peer's card (3.01 TB/s, 790 TFLOP/s) is the 5 µs
    /// floor BENCHMARKS.md lists.
    #[test]
    fn online_floor_matches_the_benchmark_table() {
        let (bytes, flops) = online::work(1, 10_000, 512, 2);
        let card = Card {
            backend: "cuda".into(),
            device: "H100".into(),
            bw_bytes_per_s: 3.01e12,
            f32_flops: 790e12 / 14.0,
            f16_flops: 790e12,
            how: String::new(),
        };
        let us = card.floor_us(bytes, flops, true).unwrap();
        assert!((5.0..5.7).contains(&us), "{us} µs");
        assert_eq!(online::work(64, 10_000, 256, 2).0, 64.0 * online::work(1, 10_000, 256, 2).0);
    }

    #[test]
    fn measure_runs_reps_or_stops_at_the_budget() {
        let be = CpuBackend::new();
        let mut calls = 0;
        let o = Options { reps: 7, warmup: 2, ..Options::default() };
        let m = measure(&be, &o, &mut || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((m.times_ms.len(), calls), (7, 9));
        assert_eq!(m.transfers, Transfers::default());
        // A budget already spent still leaves three timed runs.
        let o = Options { reps: 50, warmup: 5, budget_s: Some(0.0), ..Options::default() };
        let m = measure(&be, &o, &mut || {
            std::thread::sleep(std::time::Duration::from_millis(1));
            Ok(())
        })
        .unwrap();
        assert_eq!(m.times_ms.len(), 3);
        assert!(m.times_ms.iter().all(|&t| t >= 1.0), "{:?}", m.times_ms);
        // An error inside the work is returned, not timed.
        let e = measure(&be, &o, &mut || Err(Error::Empty { field: "x", index: 0 })).unwrap_err();
        assert!(e.to_string().contains('x'));
    }

    #[test]
    fn transfers_since() {
        let a = Transfers { h2d_calls: 5, h2d_bytes: 100, d2h_calls: 2, d2h_bytes: 8, ..Default::default() };
        let b = Transfers { h2d_calls: 2, h2d_bytes: 40, d2h_calls: 2, d2h_bytes: 0, ..Default::default() };
        assert_eq!(a.since(b), Transfers { h2d_calls: 3, h2d_bytes: 60, d2h_calls: 0, d2h_bytes: 8, ..Default::default() });
        let c = crate::backend::TransferCounter::default();
        c.up(10);
        c.up(6);
        c.down(4);
        assert_eq!(c.get(), Transfers { h2d_calls: 2, h2d_bytes: 16, d2h_calls: 1, d2h_bytes: 4, ..Default::default() });
    }
}
