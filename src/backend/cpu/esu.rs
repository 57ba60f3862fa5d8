//! ESU (SPEC §3.5): per head, softmax over the K finalists of `α = q_a·k_{l,a}/√d_k + bias[l,a]`
//! (max-subtracted), pooling of `v_l = P_V[item_l] + Σ_j U[cross_{l,j}]`, then `· W^o`.

use rayon::prelude::*;

use crate::backend::{HostTable, OnlineBatch, TopK};

pub struct EsuTables<'a> {
    pub p_q: &'a HostTable,
    pub p_k: &'a HostTable,
    pub p_v: &'a HostTable,
    pub cross_value: &'a HostTable,
    pub w_o: &'a HostTable,
    pub n_cross: usize,
    pub heads: usize,
}

pub fn esu(t: &EsuTables, batch: &OnlineBatch, bias: &[f32], topk: &TopK) -> Vec<f32> {
    let d = t.p_k.cols;
    let h = t.heads;
    let dk = d / h;
    let scale = 1.0 / (dk as f64).sqrt();
    // Candidate -> request, so candidates can run in parallel across requests.
    let mut req_of = vec![0usize; batch.cands.len()];
    for r in 0..batch.n_requests() {
        for c in batch.cand_range(r) {
            req_of[c] = r;
        }
    }
    // W^o widened once; the product below walks its rows contiguously.
    let w_o: Vec<f64> = (0..d * d).map(|i| t.w_o.get(i) as f64).collect();
    let mut out = vec![0f32; batch.cands.len() * d];
    out.par_chunks_mut(d.max(1)).enumerate().for_each(|(c, dst)| {
        let seq0 = batch.seq_offsets[req_of[c]] as usize;
        let (fin, _) = topk.row(c);
        let mut q = Vec::with_capacity(d);
        t.p_q.extend_row(batch.cands[c] as usize, &mut q);
        // α[l][a] and v[l][:] for the finalists only.
        let mut alpha = vec![0f64; fin.len() * h];
        let mut vals = vec![0f64; fin.len() * d];
        let mut row = Vec::with_capacity(d);
        for (f, &pos) in fin.iter().enumerate() {
            let l = seq0 + pos as usize;
            let item = batch.items[l] as usize;
            row.clear();
            t.p_k.extend_row(item, &mut row);
            for a in 0..h {
                let dot = super::dot_f64(&q[a * dk..(a + 1) * dk], &row[a * dk..(a + 1) * dk]);
                alpha[f * h + a] = dot * scale + bias[l * h + a] as f64;
            }
            let v = &mut vals[f * d..(f + 1) * d];
            row.clear();
            t.p_v.extend_row(item, &mut row);
            for j in 0..t.n_cross {
                t.cross_value.extend_row(batch.cross[l * t.n_cross + j] as usize, &mut row);
            }
            for (i, x) in v.iter_mut().enumerate() {
                *x = (0..=t.n_cross).map(|part| row[part * d + i] as f64).sum();
            }
        }
        let mut pooled = vec![0f64; d];
        for a in 0..h {
            let m = (0..fin.len()).map(|f| alpha[f * h + a]).fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = (0..fin.len()).map(|f| (alpha[f * h + a] - m).exp()).collect();
            let z: f64 = w.iter().sum();
            for (f, wf) in w.iter().enumerate() {
                let p = wf / z;
                for i in a * dk..(a + 1) * dk {
                    pooled[i] += p * vals[f * d + i];
                }
            }
        }
        let mut acc = vec![0f64; d];
        for (i, &p) in pooled.iter().enumerate() {
            for (a, &w) in acc.iter_mut().zip(&w_o[i * d..(i + 1) * d]) {
                *a += p * w;
            }
        }
        for (o, a) in dst.iter_mut().zip(&acc) {
            *o = *a as f32;
        }
    });
    out
}
