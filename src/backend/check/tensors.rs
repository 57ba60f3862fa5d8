//! Checks of the device-tensor ops (the training step's GEMMs, activations, row copies,
//! optimizers, attention and segment sums on device tensors): shapes, dtypes, distinct
//! operands and staged ids, before any kernel runs.

use super::super::{Act, Elem, GemmKind, IdSlot, OffsetsSlot, Rows, Staged, Tensor};
use super::{gemm_sizes, len};
use crate::error::{Error, Result};

/// Device GEMM operands: f32 tensors shaped for `kind` (as `Backend::gemm`), sizes within u32
/// indexing. (Finiteness was checked when the values went up.)
pub fn gemm_dev(kind: GemmKind, a: &Tensor, b: &Tensor, m: usize, k: usize, n: usize) -> Result<()> {
    gemm_sizes(m, k, n)?;
    let (ar, ac) = match kind {
        GemmKind::NN | GemmKind::NT => (m, k),
        GemmKind::TN => (k, m),
    };
    let (br, bc) = match kind {
        GemmKind::NN | GemmKind::TN => (k, n),
        GemmKind::NT => (n, k),
    };
    a.expect("gemm a", ar, ac, Elem::F32)?;
    b.expect("gemm b", br, bc, Elem::F32)
}

/// `x [m, n]` and `bias [1, n]`, both f32, distinct tensors.
pub fn bias_act(x: &Tensor, bias: &Tensor) -> Result<()> {
    x.expect("bias_act x", x.rows, x.cols, Elem::F32)?;
    bias.expect("bias_act bias", 1, x.cols, Elem::F32)?;
    if x.len() > u32::MAX as usize {
        return Err(Error::TooLarge { field: "bias_act x", value: x.len() as u64, limit: u32::MAX as u64 });
    }
    Ok(())
}

/// A row copy: same element type, the source's width fits `dst_col..`, listed ids belong to
/// `staged` and stay below the rows they index, the row counts agree. Returns the rows copied.
pub fn copy_rows(
    dst: &Tensor,
    dst_col: usize,
    dst_rows: Rows<'_>,
    src: &Tensor,
    src_cols: &std::ops::Range<usize>,
    src_rows: Rows<'_>,
    staged: &Staged,
) -> Result<usize> {
    if dst.elem != src.elem {
        return Err(Error::WrongDtype { field: "copy_rows src", expected: dst.elem.name(), got: src.elem.name() });
    }
    if src_cols.start > src_cols.end || src_cols.end > src.cols {
        return Err(Error::OutOfRange { field: "copy_rows src columns end", index: 0, value: src_cols.end as u64, limit: src.cols as u64 });
    }
    let width = src_cols.len();
    if dst_col.checked_add(width).map_or(true, |e| e > dst.cols) {
        return Err(Error::OutOfRange {
            field: "copy_rows dst_col + src cols",
            index: 0,
            value: (dst_col + width) as u64,
            limit: dst.cols as u64,
        });
    }
    for (field, r, t) in [("copy_rows dst ids", dst_rows, dst), ("copy_rows src ids", src_rows, src)] {
        if let Rows::Ids(s) = r {
            staged.owns(field, s.staging)?;
            if s.bound > t.rows {
                return Err(Error::OutOfRange { field, index: 0, value: s.bound as u64, limit: t.rows as u64 });
            }
        }
    }
    let n = match dst_rows {
        Rows::Ids(s) => s.len(),
        Rows::All => dst.rows,
    };
    let src_n = match src_rows {
        Rows::Ids(s) => s.len(),
        Rows::All => src.rows,
    };
    len("copy_rows source rows", src_n, n, "rows copied")?;
    if dst.len() > u32::MAX as usize || src.len() > u32::MAX as usize {
        return Err(Error::TooLarge { field: "copy_rows tensor", value: dst.len().max(src.len()) as u64, limit: u32::MAX as u64 });
    }
    Ok(n)
}

/// Adam operands: `w`, `g`, `m`, `v` f32 of one shape, four distinct tensors.
pub fn adam(w: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor) -> Result<()> {
    for (field, t) in [("adam g", g), ("adam m", m), ("adam v", v)] {
        t.expect(field, w.rows, w.cols, Elem::F32)?;
    }
    w.expect("adam w", w.rows, w.cols, Elem::F32)?;
    distinct(&[("adam w", w), ("adam g", g), ("adam m", m), ("adam v", v)])?;
    if w.len() > u32::MAX as usize {
        return Err(Error::TooLarge { field: "adam w", value: w.len() as u64, limit: u32::MAX as u64 });
    }
    Ok(())
}

/// Row-sparse Adagrad operands: `acc` shaped like `w`, distinct rows staged in `staged` below
/// `w.rows`, `g [rows, w.cols]`, all f32, distinct tensors.
pub fn adagrad_rows(w: &Tensor, acc: &Tensor, rows: &IdSlot, g: &Tensor, staged: &Staged) -> Result<()> {
    w.expect("adagrad w", w.rows, w.cols, Elem::F32)?;
    acc.expect("adagrad acc", w.rows, w.cols, Elem::F32)?;
    g.expect("adagrad g", rows.len(), w.cols, Elem::F32)?;
    staged.owns("adagrad rows", rows.staging)?;
    if !rows.distinct {
        return Err(Error::Incompatible {
            what: "adagrad rows",
            why: format!("{} ids staged with Staging::ids (may repeat); stage them with Staging::rows (distinct)", rows.len()),
        });
    }
    if rows.bound > w.rows {
        return Err(Error::OutOfRange { field: "adagrad rows", index: 0, value: rows.bound as u64, limit: w.rows as u64 });
    }
    distinct(&[("adagrad w", w), ("adagrad acc", acc), ("adagrad g", g)])?;
    if w.len() > u32::MAX as usize || g.len() > u32::MAX as usize {
        return Err(Error::TooLarge { field: "adagrad w", value: w.len().max(g.len()) as u64, limit: u32::MAX as u64 });
    }
    Ok(())
}

/// No tensor passed as two operands; the error names both operands' fields.
fn distinct(ts: &[(&'static str, &Tensor)]) -> Result<()> {
    for (i, &(other, a)) in ts.iter().enumerate() {
        for &(field, b) in &ts[i + 1..] {
            if std::sync::Arc::ptr_eq(&a.inner, &b.inner) {
                return Err(Error::Aliased { field, other });
            }
        }
    }
    Ok(())
}

/// `dy` and `y` f32 of one shape, distinct; the activation one the backward handles.
pub fn bias_act_bwd(dy: &Tensor, y: &Tensor, act: Act) -> Result<()> {
    dy.expect("bias_act_bwd dy", dy.rows, dy.cols, Elem::F32)?;
    y.expect("bias_act_bwd y", dy.rows, dy.cols, Elem::F32)?;
    distinct(&[("bias_act_bwd dy", dy), ("bias_act_bwd y", y)])?;
    if act == Act::Sigmoid {
        return Err(Error::Incompatible {
            what: "bias_act_bwd act",
            why: "Sigmoid is not differentiated here (training ends in logits; use Relu or None)".into(),
        });
    }
    if dy.len() > u32::MAX as usize {
        return Err(Error::TooLarge { field: "bias_act_bwd dy", value: dy.len() as u64, limit: u32::MAX as u64 });
    }
    Ok(())
}

/// Attention on tensors: `q [B, D]`, `k, v [N, D]`, `bias [N, h]`, f32, `D` a positive multiple
/// of `heads`, offsets staged in `staged` with `B` segments over `N` rows.
pub fn attn_dev(heads: usize, q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, offs: &OffsetsSlot, staged: &Staged) -> Result<()> {
    if heads == 0 {
        return Err(Error::BadShape { field: "heads", value: 0, why: "must be at least 1" });
    }
    staged.owns("attn offsets", offs.staging)?;
    let (b, n, d) = (offs.segments, offs.rows, q.cols);
    if d == 0 || d % heads != 0 {
        return Err(Error::BadShape { field: "D (q cols)", value: d as u64, why: "must be a positive multiple of heads" });
    }
    q.expect("attn q", b, d, Elem::F32)?;
    k.expect("attn k", n, d, Elem::F32)?;
    v.expect("attn v", n, d, Elem::F32)?;
    bias.expect("attn bias", n, heads, Elem::F32)?;
    if n > u32::MAX as usize / d {
        return Err(Error::TooLarge { field: "N * D", value: (n * d) as u64, limit: u32::MAX as u64 });
    }
    Ok(())
}

/// Segment sums on tensors: `src [N, W]` f32, `perm` staged below `N`, the offsets staged over
/// `perm.len()` entries, both in `staged`.
pub fn segment_sum_dev(src: &Tensor, perm: &IdSlot, segs: &OffsetsSlot, staged: &Staged) -> Result<()> {
    src.expect("segment_sum src", src.rows, src.cols, Elem::F32)?;
    staged.owns("segment_sum perm", perm.staging)?;
    staged.owns("segment_sum offsets", segs.staging)?;
    if perm.bound > src.rows {
        return Err(Error::OutOfRange { field: "segment_sum perm", index: 0, value: perm.bound as u64, limit: src.rows as u64 });
    }
    len("segment_sum offsets end", segs.rows, perm.len(), "perm length")?;
    if src.len() > u32::MAX as usize || segs.segments.saturating_mul(src.cols) > u32::MAX as usize {
        return Err(Error::TooLarge { field: "segment_sum size", value: src.len() as u64, limit: u32::MAX as u64 });
    }
    Ok(())
}
