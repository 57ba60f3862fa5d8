//! Precomputed-projection gather: `out[n] = table[ids[n]]`, f16 rows widened to f32.

use rayon::prelude::*;

use crate::backend::{HostTable, TableData};

/// `ids` already checked against `table.rows`.
pub fn gather(table: &HostTable, ids: &[u32]) -> Vec<f32> {
    let cols = table.cols;
    let mut out = vec![0f32; ids.len() * cols];
    if cols == 0 {
        return out;
    }
    // Match on the storage once, then copy (f32) or widen (f16) whole rows.
    match &table.data {
        TableData::F32(v) => out.par_chunks_mut(cols).zip(ids.par_iter()).for_each(|(dst, &id)| {
            let base = id as usize * cols;
            dst.copy_from_slice(&v[base..base + cols]);
        }),
        TableData::F16(v) => out.par_chunks_mut(cols).zip(ids.par_iter()).for_each(|(dst, &id)| {
            let base = id as usize * cols;
            for (d, s) in dst.iter_mut().zip(&v[base..base + cols]) {
                *d = s.to_f32();
            }
        }),
    }
    out
}
