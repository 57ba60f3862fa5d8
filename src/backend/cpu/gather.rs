//! Precomputed-projection gather: `out[n] = table[ids[n]]`, f16 rows widened to f32.

use rayon::prelude::*;

use crate::backend::HostTable;

/// `ids` already checked against `table.rows`.
pub fn gather(table: &HostTable, ids: &[u32]) -> Vec<f32> {
    let cols = table.cols;
    let mut out = vec![0f32; ids.len() * cols];
    if cols == 0 {
        return out;
    }
    out.par_chunks_mut(cols).zip(ids.par_iter()).for_each(|(dst, &id)| {
        let base = id as usize * cols;
        for (c, d) in dst.iter_mut().enumerate() {
            *d = table.get(base + c);
        }
    });
    out
}
