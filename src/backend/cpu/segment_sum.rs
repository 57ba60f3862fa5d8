//! Deterministic scatter-add (SPEC §5: "gradients are scatter-added back"): output row `s` is
//! the sum of source rows `perm[seg_offsets[s]..seg_offsets[s+1]]`, added in that order. The
//! host lists each segment's sources in ascending source order, so every backend adds the same
//! numbers in the same order and the result is the same run to run (no float atomics).
//! Used for per-unique-item projection gradients, embedding rows and cross-table rows.

use rayon::prelude::*;

use super::Real;

/// `src [N, width]`, `perm [M]` source rows, `seg_offsets [S + 1]`; returns `[S, width]`.
pub fn segment_sum<T: Real>(src: &[T], width: usize, perm: &[u32], seg_offsets: &[u32]) -> Vec<T> {
    let s_n = seg_offsets.len().saturating_sub(1);
    let mut out = vec![T::zero(); s_n * width];
    if width == 0 {
        return out;
    }
    out.par_chunks_mut(width).enumerate().for_each(|(s, o)| {
        for &r in &perm[seg_offsets[s] as usize..seg_offsets[s + 1] as usize] {
            let row = &src[r as usize * width..(r as usize + 1) * width];
            for (x, &y) in o.iter_mut().zip(row) {
                *x = *x + y;
            }
        }
    });
    out
}

/// [`segment_sum`] through a row map: segment `s` sums `src[map[perm[i]]]` over its entries in
/// list order, skipping entries whose map value is `NOT_KEPT` (`u32::MAX`). `perm` lists
/// positions (`< map.len()`), `map` sends a position to a source row (`cpu::gsu_train::row_map`).
/// Skipping rather than adding zero keeps the sum bit-identical to one over the kept rows alone.
pub fn segment_sum_mapped<T: Real>(src: &[T], width: usize, perm: &[u32], seg_offsets: &[u32], map: &[u32]) -> Vec<T> {
    let s_n = seg_offsets.len().saturating_sub(1);
    let mut out = vec![T::zero(); s_n * width];
    if width == 0 {
        return out;
    }
    out.par_chunks_mut(width).enumerate().for_each(|(s, o)| {
        for &p in &perm[seg_offsets[s] as usize..seg_offsets[s + 1] as usize] {
            let r = map[p as usize];
            if r == u32::MAX {
                continue;
            }
            let row = &src[r as usize * width..(r as usize + 1) * width];
            for (x, &y) in o.iter_mut().zip(row) {
                *x = *x + y;
            }
        }
    });
    out
}

/// Segments of a row→key map: `(unique keys ascending, perm, seg_offsets)` such that segment
/// `s` lists, in ascending order, every row `r` with `keys[r] == unique[s]`.
pub fn segments_of(keys: &[u32]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut perm: Vec<u32> = (0..keys.len() as u32).collect();
    // Stable: rows with equal keys keep ascending order.
    perm.sort_by_key(|&r| keys[r as usize]);
    let mut unique = Vec::new();
    let mut offs = vec![0u32];
    for (i, &r) in perm.iter().enumerate() {
        let k = keys[r as usize];
        if unique.last() != Some(&k) {
            if !unique.is_empty() {
                offs.push(i as u32);
            }
            unique.push(k);
        }
    }
    if !unique.is_empty() {
        offs.push(perm.len() as u32);
    }
    (unique, perm, offs)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn segments_group_equal_keys_in_row_order() {
        let (u, p, o) = segments_of(&[5, 2, 5, 7, 2]);
        assert_eq!(u, vec![2, 5, 7]);
        assert_eq!(p, vec![1, 4, 0, 2, 3]);
        assert_eq!(o, vec![0, 2, 4, 5]);
        let src: Vec<f32> = (0..10).map(|x| x as f32).collect(); // 5 rows × 2
        let s = segment_sum(&src, 2, &p, &o);
        assert_eq!(s, vec![2.0 + 8.0, 3.0 + 9.0, 0.0 + 4.0, 1.0 + 5.0, 6.0, 7.0]);
        let (u, p, o) = segments_of(&[]);
        assert!(u.is_empty() && p.is_empty());
        assert_eq!(o, vec![0]);
    }
}
