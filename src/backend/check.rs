//! Input validation shared by every backend. Runs on the host before any kernel, so a GPU
//! kernel may index without bounds checks: every id, offset and length has been checked here.

use super::{
    CrossBwdIn, DeviceTable, HostTable, KmeansBatch, OnlineBatch, OnlineTables, TableData, TopK, MAX_KMEANS_K, MAX_SEQ_LEN, MAX_TOP_K,
};
use crate::error::{Error, Result};

mod tensors;
pub use tensors::*;

pub fn len(field: &'static str, got: usize, expected: usize, expected_what: &'static str) -> Result<()> {
    if got != expected {
        return Err(Error::LengthMismatch { field, got, expected, expected_what });
    }
    Ok(())
}

pub fn finite(field: &'static str, xs: &[f32]) -> Result<()> {
    // A fold over chunks vectorises; the position is only looked up on failure.
    if xs.iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    let index = xs.iter().position(|x| !x.is_finite()).unwrap_or(0);
    Err(Error::NonFinite { field, index, value: xs[index] })
}

pub fn host_table(name: &'static str, t: &HostTable) -> Result<()> {
    len(
        name,
        match &t.data {
            TableData::F32(v) => v.len(),
            TableData::F16(v) => v.len(),
        },
        t.rows * t.cols,
        "rows * cols",
    )?;
    match &t.data {
        TableData::F32(v) => finite(name, v),
        TableData::F16(v) => {
            if let Some(index) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::NonFinite { field: name, index, value: v[index].to_f32() });
            }
            Ok(())
        }
    }
}

pub fn ids_below(field: &'static str, ids: &[u32], limit: usize) -> Result<()> {
    if let Some(index) = ids.iter().position(|&i| i as usize >= limit) {
        return Err(Error::OutOfRange { field, index, value: ids[index] as u64, limit: limit as u64 });
    }
    Ok(())
}

/// `offsets` is `[R + 1]`, starts at 0, never decreases, ends at `total`.
pub fn offsets(field: &'static str, offs: &[u32], total: usize) -> Result<()> {
    if offs.is_empty() {
        return Err(Error::BadOffsets { field, index: 0, why: "needs at least one entry (0)" });
    }
    if offs[0] != 0 {
        return Err(Error::BadOffsets { field, index: 0, why: "must start at 0" });
    }
    for i in 1..offs.len() {
        if offs[i] < offs[i - 1] {
            return Err(Error::BadOffsets { field, index: i, why: "decreasing" });
        }
    }
    let last = *offs.last().unwrap_or(&0) as usize;
    if last != total {
        return Err(Error::LengthMismatch { field, got: last, expected: total, expected_what: "flat array length" });
    }
    Ok(())
}

pub fn gather(t: &DeviceTable, ids: &[u32]) -> Result<()> {
    ids_below("ids", ids, t.rows)
}

pub fn cross_bias(t: &DeviceTable, rows: &[u32], n_cross: usize) -> Result<()> {
    if n_cross == 0 {
        return Err(Error::BadShape { field: "n_cross", value: 0, why: "need at least one cross feature" });
    }
    if rows.len() % n_cross != 0 {
        return Err(Error::LengthMismatch {
            field: "cross rows",
            got: rows.len(),
            expected: rows.len() / n_cross * n_cross,
            expected_what: "a multiple of J",
        });
    }
    ids_below("cross rows", rows, t.rows)
}

pub fn cross_bias_dense(e: &[f32], w_c: &[f32], beta: &[f32], d: super::CrossDims) -> Result<()> {
    let per = d.n_cross * d.dim;
    if per == 0 || d.heads == 0 {
        return Err(Error::BadShape { field: "cross dims", value: per as u64, why: "J, C and h must be positive" });
    }
    if e.len() % per != 0 {
        return Err(Error::LengthMismatch { field: "e", got: e.len(), expected: e.len() / per * per, expected_what: "a multiple of J*C" });
    }
    len("w_c", w_c.len(), d.heads * per, "h * J * C")?;
    len("beta", beta.len(), d.heads * d.n_cross, "h * J")?;
    finite("e", e)?;
    finite("w_c", w_c)?;
    finite("beta", beta)
}

pub fn sizes(sizes: &[f32]) -> Result<()> {
    for (index, &s) in sizes.iter().enumerate() {
        if !s.is_finite() {
            return Err(Error::NonFinite { field: "sizes", index, value: s });
        }
        if s < 1.0 {
            return Err(Error::InvalidValue { field: "sizes", index, value: s as f64, why: "a cluster size must be at least 1" });
        }
    }
    Ok(())
}

pub fn log_size_bias(bias: &[f32], sizes_: &[f32], heads: usize) -> Result<()> {
    if heads == 0 {
        return Err(Error::BadShape { field: "heads", value: 0, why: "must be positive" });
    }
    len("bias", bias.len(), sizes_.len() * heads, "sizes * heads")?;
    finite("bias", bias)?;
    sizes(sizes_)
}

pub fn tables(t: &OnlineTables) -> Result<()> {
    let d = t.d_model();
    if t.heads == 0 || d % t.heads != 0 {
        return Err(Error::BadShape { field: "heads", value: t.heads as u64, why: "must divide D" });
    }
    for (name, tab) in [("p_q", &t.p_q), ("p_v", &t.p_v)] {
        if tab.rows != t.p_k.rows || tab.cols != d {
            return Err(Error::BadShape { field: name, value: tab.cols as u64, why: "P_Q, P_K, P_V must all be [n_items, D]" });
        }
    }
    if t.cross_bias.cols != t.heads {
        return Err(Error::BadShape { field: "cross_bias", value: t.cross_bias.cols as u64, why: "columns must equal heads" });
    }
    if t.cross_value.cols != d || t.cross_value.rows != t.cross_bias.rows {
        return Err(Error::BadShape {
            field: "cross_value",
            value: t.cross_value.cols as u64,
            why: "must be [V, D] with V as in cross_bias",
        });
    }
    if t.w_o.rows != d || t.w_o.cols != d {
        return Err(Error::BadShape { field: "w_o", value: t.w_o.rows as u64, why: "must be [D, D]" });
    }
    if t.n_cross() == 0 {
        return Err(Error::BadShape { field: "cross_offsets", value: 0, why: "need J >= 1 cross features" });
    }
    offsets("cross_offsets", &t.cross_offsets, t.cross_bias.rows)
}

/// Everything the online path reads: offsets, ids in range, each cross row inside its own
/// feature's vocabulary, sizes ≥ 1, non-empty sequences, L within the limit.
pub fn online(t: &OnlineTables, b: &OnlineBatch, k: usize) -> Result<()> {
    tables(t)?;
    if k == 0 {
        return Err(Error::BadShape { field: "top_k", value: 0, why: "at least one finalist per candidate is needed (1 to 256)" });
    }
    if k > MAX_TOP_K {
        return Err(Error::TooLarge { field: "top_k", value: k as u64, limit: MAX_TOP_K as u64 });
    }
    len("cand_offsets", b.cand_offsets.len(), b.seq_offsets.len(), "seq_offsets length")?;
    offsets("seq_offsets", b.seq_offsets, b.items.len())?;
    offsets("cand_offsets", b.cand_offsets, b.cands.len())?;
    let j = t.n_cross();
    len("cross", b.cross.len(), b.items.len() * j, "behaviours * J")?;
    len("sizes", b.sizes.len(), b.items.len(), "behaviours")?;
    for r in 0..b.n_requests() {
        let l = b.seq_range(r).len();
        if l == 0 {
            return Err(Error::Empty { field: "sequence", index: r });
        }
        if l > MAX_SEQ_LEN {
            return Err(Error::TooLarge { field: "sequence length", value: l as u64, limit: MAX_SEQ_LEN as u64 });
        }
    }
    ids_below("items", b.items, t.n_items())?;
    ids_below("cands", b.cands, t.n_items())?;
    for (i, &row) in b.cross.iter().enumerate() {
        let jj = i % j;
        let (lo, hi) = (t.cross_offsets[jj], t.cross_offsets[jj + 1]);
        if row < lo || row >= hi {
            return Err(Error::OutOfRange { field: "cross", index: i, value: row as u64, limit: hi as u64 });
        }
    }
    sizes(b.sizes)
}

/// `bias` for the GSU/ESU ops: `[ΣL, h]`, finite.
pub fn behaviour_bias(t: &OnlineTables, b: &OnlineBatch, bias: &[f32]) -> Result<()> {
    len("bias", bias.len(), b.items.len() * t.heads, "behaviours * heads")?;
    finite("bias", bias)
}

pub fn topk_for(b: &OnlineBatch, topk: &TopK) -> Result<()> {
    let n = b.cands.len();
    len("topk.count", topk.count.len(), n, "candidates")?;
    len("topk.idx", topk.idx.len(), n * topk.k, "candidates * k")?;
    for r in 0..b.n_requests() {
        let l = b.seq_range(r).len();
        for c in b.cand_range(r) {
            let cnt = topk.count[c] as usize;
            if cnt > topk.k || cnt > l || cnt == 0 {
                return Err(Error::OutOfRange { field: "topk.count", index: c, value: cnt as u64, limit: topk.k.min(l) as u64 + 1 });
            }
            ids_below("topk.idx", &topk.idx[c * topk.k..c * topk.k + cnt], l)?;
        }
    }
    Ok(())
}

pub fn kmeans(b: &KmeansBatch) -> Result<()> {
    if b.dim == 0 {
        return Err(Error::BadShape { field: "dim", value: 0, why: "must be positive" });
    }
    if b.points.len() % b.dim != 0 {
        return Err(Error::LengthMismatch {
            field: "points",
            got: b.points.len(),
            expected: b.points.len() / b.dim * b.dim,
            expected_what: "a multiple of dim",
        });
    }
    kmeans_problems(b.points.len() / b.dim, b.offsets, b.k)?;
    finite("points", b.points)
}

/// `n` points split into problems by `offsets`, each with `1 ≤ k_p ≤ n_p`, `k_p ≤ MAX_KMEANS_K`.
pub fn kmeans_problems(n: usize, offs: &[u32], k: &[u32]) -> Result<()> {
    offsets("kmeans offsets", offs, n)?;
    let n_prob = offs.len().saturating_sub(1);
    len("k", k.len(), n_prob, "number of problems")?;
    for p in 0..n_prob {
        let np = (offs[p + 1] - offs[p]) as usize;
        let kp = k[p] as usize;
        if kp == 0 || kp > np {
            return Err(Error::OutOfRange { field: "k", index: p, value: kp as u64, limit: np as u64 + 1 });
        }
        if kp > MAX_KMEANS_K {
            return Err(Error::TooLarge { field: "k", value: kp as u64, limit: MAX_KMEANS_K as u64 });
        }
    }
    Ok(())
}

pub fn centroids(b: &KmeansBatch, c: &[f32]) -> Result<()> {
    let total_k: usize = b.k.iter().map(|&k| k as usize).sum();
    len("centroids", c.len(), total_k * b.dim, "sum(k) * dim")?;
    finite("centroids", c)
}

pub fn assignments(b: &KmeansBatch, a: &[u32]) -> Result<()> {
    len("assign", a.len(), b.points.len() / b.dim, "points")?;
    for p in 0..b.n_problems() {
        let r = b.range(p);
        let start = r.start;
        if let Some(i) = a[r].iter().position(|&x| x >= b.k[p]) {
            return Err(Error::OutOfRange { field: "assign", index: start + i, value: a[start + i] as u64, limit: b.k[p] as u64 });
        }
    }
    Ok(())
}

/// Training attention: `offsets [B + 1]` over `N` rows, `q [B, D]`, `k, v [N, D]`, `bias [N, h]`,
/// `h` divides `D`, everything finite.
pub fn attn(heads: usize, q: &[f32], k: &[f32], v: &[f32], bias: &[f32], offsets: &[u32]) -> Result<()> {
    if offsets.is_empty() {
        return Err(Error::BadOffsets { field: "offsets", index: 0, why: "needs at least one entry (0)" });
    }
    let b = offsets.len() - 1;
    if heads == 0 {
        return Err(Error::BadShape { field: "heads", value: 0, why: "must be at least 1" });
    }
    let n = bias.len() / heads;
    len("bias", bias.len(), n * heads, "a multiple of heads")?;
    self::offsets("offsets", offsets, n)?;
    if b == 0 {
        len("q", q.len(), 0, "B * D with B = 0")?;
    }
    let d = if b == 0 { heads } else { q.len() / b };
    len("q", q.len(), b * d, "B * D")?;
    if d == 0 || d % heads != 0 {
        return Err(Error::BadShape { field: "D (q length / B)", value: d as u64, why: "must be a positive multiple of heads" });
    }
    len("k", k.len(), n * d, "N * D")?;
    len("v", v.len(), n * d, "N * D")?;
    for (field, x) in [("q", q), ("k", k), ("v", v), ("bias", bias)] {
        finite(field, x)?;
    }
    if n > u32::MAX as usize / d.max(1) {
        return Err(Error::TooLarge { field: "N * D", value: (n * d) as u64, limit: u32::MAX as u64 });
    }
    Ok(())
}

/// Scatter-add: every `perm` entry a row of `src`, `seg_offsets` well-formed over `perm`.
pub fn segment_sum(src: &[f32], width: usize, perm: &[u32], seg_offsets: &[u32]) -> Result<()> {
    if width == 0 {
        return Err(Error::BadShape { field: "width", value: 0, why: "must be at least 1" });
    }
    let n = src.len() / width;
    len("src", src.len(), n * width, "a multiple of width")?;
    ids_below("perm", perm, n)?;
    offsets("seg_offsets", seg_offsets, perm.len())?;
    finite("src", src)?;
    if src.len() > u32::MAX as usize || (seg_offsets.len() - 1).saturating_mul(width) > u32::MAX as usize {
        return Err(Error::TooLarge { field: "segment_sum size", value: src.len() as u64, limit: u32::MAX as u64 });
    }
    Ok(())
}

/// `(m k, k n)`, with `m k`, `k n` and `m n` within u32 indexing.
fn gemm_sizes(m: usize, k: usize, n: usize) -> Result<(usize, usize)> {
    let mk = m.checked_mul(k).ok_or(Error::TooLarge { field: "m * k", value: u64::MAX, limit: u32::MAX as u64 })?;
    let kn = k.checked_mul(n).ok_or(Error::TooLarge { field: "k * n", value: u64::MAX, limit: u32::MAX as u64 })?;
    let mn = m.checked_mul(n).ok_or(Error::TooLarge { field: "m * n", value: u64::MAX, limit: u32::MAX as u64 })?;
    for (field, v) in [("m * k", mk), ("k * n", kn), ("m * n", mn)] {
        if v > u32::MAX as usize {
            return Err(Error::TooLarge { field, value: v as u64, limit: u32::MAX as u64 });
        }
    }
    Ok((mk, kn))
}

/// GEMM operands: `a` holds `m * k` values, `b` `k * n`, finite, sizes within u32 indexing.
pub fn gemm(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Result<()> {
    let (mk, kn) = gemm_sizes(m, k, n)?;
    len("a", a.len(), mk, "m * k")?;
    len("b", b.len(), kn, "k * n")?;
    finite("a", a)?;
    finite("b", b)
}

/// Cross backward: shapes consistent with `dims` and `offsets`, everything finite.
pub fn cross_tables_bwd(x: &CrossBwdIn<'_>) -> Result<()> {
    let (h, jn, c) = (x.dims.heads, x.dims.n_cross, x.dims.dim);
    if h == 0 || jn == 0 || c == 0 {
        return Err(Error::BadShape { field: "cross dims", value: 0, why: "heads, n_cross and dim must be positive" });
    }
    len("offsets", x.offsets.len(), jn + 1, "n_cross + 1")?;
    let v = x.e.len() / c;
    len("e", x.e.len(), v * c, "a multiple of dim")?;
    offsets("offsets", x.offsets, v)?;
    len("dcb", x.dcb.len(), v * h, "V * heads")?;
    let d = if v == 0 { 0 } else { x.dcv.len() / v };
    len("dcv", x.dcv.len(), v * d, "V * D")?;
    len("w_c", x.w_c.len(), h * jn * c, "heads * n_cross * dim")?;
    len("beta", x.beta.len(), h * jn, "heads * n_cross")?;
    len("w_vc", x.w_vc.len(), jn * c * d, "n_cross * dim * D")?;
    for (field, t) in [("dcb", x.dcb), ("dcv", x.dcv), ("e", x.e), ("w_c", x.w_c), ("beta", x.beta), ("w_vc", x.w_vc)] {
        finite(field, t)?;
    }
    Ok(())
}

/// A [`TreeJob`](super::TreeJob) against item points of `rows` rows: ids in range, offsets
/// well formed, every root at least `gamma ≥ 2` points, one stream per root.
pub fn tree_job(job: &super::TreeJob, rows: usize) -> Result<()> {
    if job.gamma < 2 {
        return Err(Error::InvalidValue { field: "gamma", index: 0, value: job.gamma as f64, why: "must be at least 2" });
    }
    if job.ids.len() > u32::MAX as usize {
        return Err(Error::TooLarge { field: "tree points", value: job.ids.len() as u64, limit: u32::MAX as u64 });
    }
    ids_below("tree point ids", job.ids, rows)?;
    offsets("tree offsets", job.offsets, job.ids.len())?;
    let n_roots = job.offsets.len() - 1;
    len("tree streams", job.streams.len(), n_roots, "number of roots")?;
    for r in 0..n_roots {
        let n = job.offsets[r + 1] - job.offsets[r];
        if n < job.gamma {
            return Err(Error::InvalidValue {
                field: "tree root size",
                index: r,
                value: n as f64,
                why: "below gamma: such a root is a final cluster already",
            });
        }
    }
    Ok(())
}
