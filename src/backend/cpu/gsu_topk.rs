//! CP-GSU relevance + top-K (SPEC §3.4) on the CPU. Per request the K rows of the sequence
//! are widened to f32 once; candidates run in parallel, each scoring all `L` behaviours with
//! f64 dot products and keeping the best `min(k, L)` under the tie rule.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::backend::{HostTable, OnlineBatch, TopK};
use crate::error::{Error, Result};

/// Best first: higher score, then (tie) larger position.
#[inline]
pub fn rank_order(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal).then(b.0.cmp(&a.0))
}

/// The `min(k, scores.len())` best `(position, score)` pairs, best first.
pub fn select_topk(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = scores.iter().enumerate().map(|(i, &s)| (i as u32, s)).collect();
    let k = k.min(all.len());
    if k < all.len() {
        all.select_nth_unstable_by(k - 1, rank_order);
        all.truncate(k);
    }
    all.sort_unstable_by(rank_order);
    all
}

/// `g_{b,l} = (q_b·k_l / √d_k + Σ_a bias[l,a]) / h`, the head mean of SPEC's α.
pub fn scores_for(q: &[f32], keys: &[f32], bias: &[f32], heads: usize, out: &mut [f32]) {
    let d = q.len();
    let scale = 1.0 / ((d / heads) as f64).sqrt();
    for (l, o) in out.iter_mut().enumerate() {
        let k = &keys[l * d..(l + 1) * d];
        let dot = super::dot_f64(q, k);
        let b: f64 = bias[l * heads..(l + 1) * heads].iter().map(|&x| x as f64).sum();
        *o = ((dot * scale + b) / heads as f64) as f32;
    }
}

pub fn gsu_topk(p_q: &HostTable, p_k: &HostTable, heads: usize, batch: &OnlineBatch, bias: &[f32], k: usize) -> Result<TopK> {
    let d = p_k.cols;
    let n_cand = batch.cands.len();
    let mut idx = vec![u32::MAX; n_cand * k];
    let mut score = vec![f32::NEG_INFINITY; n_cand * k];
    let mut count = vec![0u32; n_cand];
    for r in 0..batch.n_requests() {
        let seq = batch.seq_range(r);
        let cands = batch.cand_range(r);
        if cands.is_empty() {
            continue;
        }
        let mut keys = Vec::with_capacity(seq.len() * d);
        for &it in &batch.items[seq.clone()] {
            p_k.extend_row(it as usize, &mut keys);
        }
        let b = &bias[seq.start * heads..seq.end * heads];
        let rows: Vec<Result<Vec<(u32, f32)>>> = batch.cands[cands.clone()]
            .par_iter()
            .enumerate()
            .map(|(ci, &cand)| {
                let mut q = Vec::with_capacity(d);
                p_q.extend_row(cand as usize, &mut q);
                let mut s = vec![0f32; seq.len()];
                scores_for(&q, &keys, b, heads, &mut s);
                if let Some(pos) = s.iter().position(|x| x.is_nan()) {
                    return Err(Error::NonFinite {
                        field: "gsu score (candidate, position)",
                        index: (cands.start + ci) * seq.len() + pos,
                        value: s[pos],
                    });
                }
                Ok(select_topk(&s, k))
            })
            .collect();
        for (ci, row) in rows.into_iter().enumerate() {
            let row = row?;
            let c = cands.start + ci;
            count[c] = row.len() as u32;
            for (j, (p, s)) in row.into_iter().enumerate() {
                idx[c * k + j] = p;
                score[c * k + j] = s;
            }
        }
    }
    Ok(TopK { k, idx, score, count })
}
