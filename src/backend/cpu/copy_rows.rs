//! Row copy between column ranges (the reference of `kernels/copy_rows.cu`): for `i < n`,
//! `dst[dst_row(i), col0 .. col0 + w] = src[src_row(i), src_col .. src_col + w]`, where a row map
//! is the listed ids or the identity. Words are copied as they are (f32 or u32), so every
//! backend must match bit for bit. The network assembles the MLP input from embedding rows and
//! the sequence modules' outputs this way, and cuts the input gradient back into its parts.

/// The columns copied from each source row: `start .. start + width` of rows `stride` wide.
#[derive(Clone, Copy, Debug)]
pub struct SrcCols {
    pub stride: usize,
    pub start: usize,
    pub width: usize,
}

/// Inputs validated by `Backend::copy_cols` (ids below the row counts, the column ranges inside
/// both tensors).
#[allow(clippy::too_many_arguments)]
pub fn copy_rows(
    dst: &mut [u32],
    dst_cols: usize,
    col0: usize,
    dst_ids: Option<&[u32]>,
    src: &[u32],
    sc: SrcCols,
    src_ids: Option<&[u32]>,
    n: usize,
) {
    for i in 0..n {
        let dr = dst_ids.map_or(i, |d| d[i] as usize);
        let sr = src_ids.map_or(i, |s| s[i] as usize);
        let s0 = sr * sc.stride + sc.start;
        dst[dr * dst_cols + col0..dr * dst_cols + col0 + sc.width].copy_from_slice(&src[s0..s0 + sc.width]);
    }
}
