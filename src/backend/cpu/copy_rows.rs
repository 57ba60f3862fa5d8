//! Row copy into a column range (the reference of `kernels/copy_rows.cu`): for `i < n`,
//! `dst[dst_row(i), col0 .. col0 + w] = src[src_row(i), 0 .. w]` with `w = src_cols`, where a
//! row map is the listed ids or the identity. Words are copied as they are (f32 or u32), so every
//! backend must match bit for bit. The network assembles the MLP input from embedding rows and
//! the sequence modules' outputs this way.

/// Inputs validated by `Backend::copy_rows` (ids below the row counts, `col0 + w <= dst_cols`).
#[allow(clippy::too_many_arguments)]
pub fn copy_rows(
    dst: &mut [u32],
    dst_cols: usize,
    col0: usize,
    dst_ids: Option<&[u32]>,
    src: &[u32],
    src_cols: usize,
    src_ids: Option<&[u32]>,
    n: usize,
) {
    for i in 0..n {
        let dr = dst_ids.map_or(i, |d| d[i] as usize);
        let sr = src_ids.map_or(i, |s| s[i] as usize);
        dst[dr * dst_cols + col0..dr * dst_cols + col0 + src_cols].copy_from_slice(&src[sr * src_cols..(sr + 1) * src_cols]);
    }
}
