//! What twin-v2's GSU input is made of (issue 16's "find out why"): for training and for test
//! samples, the share of the budget's rows that are clusters (n ≥ 2) and how many behaviours
//! the rows stand for. Clusters are built once from the history before the split, and a sample
//! reads only the clusters wholly in its past (the rest of its history as raw rows), so
//! training samples can see a different mix from test samples.

use anyhow::Result;

use twin_engine::data::Dataset;
use twin_engine::train::Examples;

/// Means over the samples looked at.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct InputMix {
    pub samples: usize,
    /// GSU rows per sample.
    pub rows: f64,
    /// Share of the rows that are clusters of two or more behaviours.
    pub cluster_share: f64,
    /// Behaviours the rows stand for (Σ n).
    pub behaviours: f64,
    /// Those behaviours as a share of the sample's history before its request.
    pub history_share: f64,
}

/// The mix over at most `max_samples` of `samples`, evenly spaced.
pub fn input_mix(ex: &Examples, ds: &Dataset, samples: &[u32], max_samples: usize) -> Result<InputMix> {
    let step = samples.len().div_ceil(max_samples.max(1)).max(1);
    let picked: Vec<u32> = samples.iter().step_by(step).copied().collect();
    let (mut rows, mut clusters, mut behaviours, mut share) = (0f64, 0f64, 0f64, 0f64);
    for chunk in picked.chunks(256) {
        let b = ex.batch(chunk)?;
        for (i, &s) in chunk.iter().enumerate() {
            let r = b.long_offsets[i] as usize..b.long_offsets[i + 1] as usize;
            let ns: Vec<f64> = b.long_log_n[r.clone()].iter().map(|&l| (l as f64).exp().round()).collect();
            let hist = ds.history_before(ds.samples.user[s as usize] as usize, ds.samples.request_time[s as usize]).len();
            rows += r.len() as f64;
            clusters += ns.iter().filter(|&&n| n >= 2.0).count() as f64;
            let stood_for: f64 = ns.iter().sum();
            behaviours += stood_for;
            share += stood_for / hist.max(1) as f64;
        }
    }
    let n = picked.len().max(1) as f64;
    Ok(InputMix {
        samples: picked.len(),
        rows: rows / n,
        cluster_share: clusters / rows.max(1.0),
        behaviours: behaviours / n,
        history_share: share / n,
    })
}

impl std::fmt::Display for InputMix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} rows, {:.1}% of them clusters, standing for {:.0} behaviours ({:.1}% of the history before the request; {} samples)",
            self.rows,
            100.0 * self.cluster_share,
            self.behaviours,
            100.0 * self.history_share,
            self.samples
        )
    }
}
