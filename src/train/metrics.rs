//! AUC, GAUC and logloss (SPEC §5).
//!
//! AUC is the Mann-Whitney statistic with tied scores counted as half (average ranks). GAUC is
//! the per-user AUC weighted by the user's sample count, skipping users whose samples all have
//! one label.

use std::collections::HashMap;

#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    pub auc: f64,
    pub gauc: f64,
    pub logloss: f64,
    pub samples: usize,
    /// Users that counted towards GAUC.
    pub gauc_users: usize,
}

/// AUC of `scores` against binary `labels`; `None` when only one class is present.
pub fn auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum_pos, mut n_pos) = (0f64, 0usize);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let avg = (i + j + 2) as f64 / 2.0;
        for &k in &idx[i..=j] {
            if labels[k] > 0.5 {
                rank_sum_pos += avg;
                n_pos += 1;
            }
        }
        i = j + 1;
    }
    let n_neg = scores.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    Some((rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0) / (n_pos as f64 * n_neg as f64))
}

/// Mean binary cross-entropy of probabilities, clamped away from 0 and 1.
pub fn logloss(prob: &[f32], labels: &[f32]) -> f64 {
    if prob.is_empty() {
        return f64::NAN;
    }
    let eps = 1e-7;
    let s: f64 = prob
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = (p as f64).clamp(eps, 1.0 - eps);
            -(y as f64 * p.ln() + (1.0 - y as f64) * (1.0 - p).ln())
        })
        .sum();
    s / prob.len() as f64
}

/// All three metrics; `users` groups samples for GAUC.
pub fn evaluate(prob: &[f32], labels: &[f32], users: &[u32]) -> Metrics {
    let mut by_user: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, &u) in users.iter().enumerate() {
        by_user.entry(u).or_default().push(i);
    }
    let mut keys: Vec<u32> = by_user.keys().copied().collect();
    keys.sort_unstable();
    let (mut num, mut den, mut n_users) = (0f64, 0f64, 0usize);
    for u in keys {
        let ix = &by_user[&u];
        let s: Vec<f32> = ix.iter().map(|&i| prob[i]).collect();
        let l: Vec<f32> = ix.iter().map(|&i| labels[i]).collect();
        if let Some(a) = auc(&s, &l) {
            num += a * ix.len() as f64;
            den += ix.len() as f64;
            n_users += 1;
        }
    }
    Metrics {
        auc: auc(prob, labels).unwrap_or(f64::NAN),
        gauc: if den > 0.0 { num / den } else { f64::NAN },
        logloss: logloss(prob, labels),
        samples: prob.len(),
        gauc_users: n_users,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// O(n²) definition: P(score_pos > score_neg) + ½ P(equal).
    fn auc_pairs(s: &[f32], l: &[f32]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..s.len() {
            for j in 0..s.len() {
                if l[i] > 0.5 && l[j] < 0.5 {
                    den += 1.0;
                    num += if s[i] > s[j] {
                        1.0
                    } else if s[i] == s[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        num / den
    }

    #[test]
    fn auc_matches_pair_counting_with_ties() {
        let mut r = crate::rng::SplitMix64::new(3);
        for n in [2usize, 5, 50, 301] {
            let s: Vec<f32> = (0..n).map(|_| (r.below(7) as f32) / 7.0).collect();
            let mut l: Vec<f32> = (0..n).map(|_| (r.below(2)) as f32).collect();
            l[0] = 0.0;
            l[n - 1] = 1.0;
            let a = auc(&s, &l).unwrap();
            assert!((a - auc_pairs(&s, &l)).abs() < 1e-12, "n={n}");
        }
        assert_eq!(auc(&[0.1, 0.9], &[0.0, 1.0]), Some(1.0));
        assert_eq!(auc(&[0.9, 0.1], &[0.0, 1.0]), Some(0.0));
        assert_eq!(auc(&[0.3, 0.3], &[0.0, 1.0]), Some(0.5));
        assert_eq!(auc(&[0.3, 0.4], &[1.0, 1.0]), None);
    }

    #[test]
    fn gauc_weights_users_and_skips_one_label_users() {
        // user 0: perfect (2 samples), user 1: inverted (4 samples), user 2: all positive (skipped).
        let p = [0.2, 0.8, 0.9, 0.8, 0.1, 0.2, 0.5];
        let y = [0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let u = [0, 0, 1, 1, 1, 1, 2];
        let m = evaluate(&p, &y, &u);
        assert_eq!(m.gauc_users, 2);
        assert!((m.gauc - (1.0 * 2.0 + 0.0 * 4.0) / 6.0).abs() < 1e-12);
        assert!((logloss(&[0.5], &[1.0]) - std::f64::consts::LN_2).abs() < 1e-12);
    }
}
