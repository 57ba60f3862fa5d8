//! Log-cluster-size reweighting (SPEC §3.3): adding `ln n` to every head's logit of a
//! behaviour counts its cluster `n` times in the softmax. Folded into the per-behaviour bias
//! because it does not depend on the candidate.

pub fn log_size_bias(bias: &[f32], sizes: &[f32], heads: usize) -> Vec<f32> {
    let mut out = bias.to_vec();
    for (row, &n) in out.chunks_mut(heads).zip(sizes) {
        let ln = (n as f64).ln() as f32;
        for x in row {
            *x += ln;
        }
    }
    out
}
