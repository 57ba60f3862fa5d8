//! The trait's default (host) implementations of the device-tensor ops: the ops read their
//! tensors with `tensor_read`, run the CPU reference (`cpu::copy_rows`, `cpu::bias_act`) or the
//! backend's own slice-level kernels (`gemm`, `online`), and write results back with
//! `tensor_from` / `tensor_write`. On the CPU backend (tensors are [`HostMem`]) that moves
//! nothing; a GPU backend overrides the ops with device-resident versions and falls back to these
//! (paying the transfers) where its device form cannot run, e.g. an operand larger than a binding.

use std::sync::Arc;

use super::cpu::optim::{self, AdamStep};
use super::cpu::{bias_act, copy_rows};
use super::tensor::{
    f32s, words, Act, AttnDev, AttnGradsDev, BceDev, Elem, F32Slot, HostMem, IdSlot, ItemPoints, OffsetsSlot, OnlineDev, OnlineSlot, Rows,
    Staged, Tensor,
};
use super::{Backend, GemmKind, KmeansBatch, KmeansResult, OnlineBatch, OnlineTables};
use crate::error::{Error, Result};

pub(crate) fn tensor<B: Backend + ?Sized>(be: &B, name: &'static str, rows: usize, cols: usize, elem: Elem, data: Vec<u32>) -> Tensor {
    Tensor { name, rows, cols, elem, backend: be.kind(), device_id: be.device_id(), inner: Arc::new(HostMem::new(data)) }
}

fn mem<'a, B: Backend + ?Sized>(be: &B, t: &'a Tensor) -> Result<&'a HostMem> {
    t.storage::<HostMem>(be.kind(), be.device_id())
}

pub(crate) fn read<B: Backend + ?Sized>(be: &B, ts: &[&Tensor]) -> Result<Vec<Vec<u32>>> {
    ts.iter().map(|t| mem(be, t).map(|m| m.lock().clone())).collect()
}

pub(crate) fn write<B: Backend + ?Sized>(be: &B, t: &Tensor, data: &[u32]) -> Result<()> {
    mem(be, t)?.lock().copy_from_slice(data);
    Ok(())
}

/// A tensor of the backend's own kind holding `data` (an upload on a GPU backend).
pub(crate) fn put<B: Backend + ?Sized>(be: &B, name: &'static str, rows: usize, cols: usize, elem: Elem, data: Vec<u32>) -> Result<Tensor> {
    if be.kind() == super::BackendKind::Cpu {
        return Ok(tensor(be, name, rows, cols, elem, data));
    }
    // SAFETY: `data` holds rows * cols words by construction at every call site.
    unsafe { be.tensor_from_unchecked(name, rows, cols, elem, &data) }
}

/// Rebuild the staged batch from the host layout and run the backend's `online`.
pub(crate) fn online_dev<B: Backend + ?Sized>(be: &B, t: &OnlineTables, staged: &Staged, slot: &OnlineSlot) -> Result<OnlineDev> {
    let w = be.tensor_read(&[&staged.tensor])?.remove(0);
    let [so, it, cr, sz, co, ca] = &slot.host;
    let sizes = f32s(&w[sz.clone()]);
    let batch = OnlineBatch {
        seq_offsets: &w[so.clone()],
        items: &w[it.clone()],
        cross: &w[cr.clone()],
        sizes: &sizes,
        cand_offsets: &w[co.clone()],
        cands: &w[ca.clone()],
    };
    let o = be.online(t, &batch, slot.k)?;
    let (k, n) = (slot.k, slot.n_cands);
    let mut tk = o.topk.idx.clone();
    tk.extend(words(&o.topk.score));
    tk.extend_from_slice(&o.topk.count);
    Ok(OnlineDev {
        out: put(be, "online out", n, t.d_model(), Elem::F32, words(&o.out))?,
        topk: put(be, "online topk", 1, n * (2 * k + 1), Elem::U32, tk)?,
        flag: put(be, "online flag", 1, 1, Elem::U32, vec![0])?,
        flag_ok: 0,
    })
}

fn ids(w: &[u32], r: Rows<'_>) -> Option<Vec<u32>> {
    match r {
        Rows::All => None,
        Rows::Ids(s) => Some(w[s.range.clone()].to_vec()),
    }
}

pub(crate) fn copy_rows_op<B: Backend + ?Sized>(
    be: &B,
    dst: &Tensor,
    dst_col: usize,
    dst_rows: Rows<'_>,
    src: &Tensor,
    sc: copy_rows::SrcCols,
    src_rows: Rows<'_>,
    staged: &Staged,
    n: usize,
) -> Result<()> {
    if Arc::ptr_eq(&dst.inner, &src.inner) {
        return Err(Error::Aliased { field: "copy_rows src", other: "copy_rows dst" });
    }
    let [w, s, mut d]: [Vec<u32>; 3] =
        be.tensor_read(&[&staged.tensor, src, dst])?.try_into().map_err(|_| Error::Empty { field: "tensor_read", index: 0 })?;
    let (di, si) = (ids(&w, dst_rows), ids(&w, src_rows));
    copy_rows::copy_rows(&mut d, dst.cols, dst_col, di.as_deref(), &s, sc, si.as_deref(), n);
    be.tensor_write(dst, &d)
}

pub(crate) fn gemm_dev<B: Backend + ?Sized>(
    be: &B,
    kind: GemmKind,
    a: &Tensor,
    b: &Tensor,
    m: usize,
    k: usize,
    n: usize,
) -> Result<Tensor> {
    let r = be.tensor_read(&[a, b])?;
    let (av, bv) = (f32s(&r[0]), f32s(&r[1]));
    let out = if m == 0 || n == 0 || k == 0 {
        vec![0.0; m * n]
    } else {
        match be.gemm(kind, &av, &bv, m, k, n) {
            // A backend whose kernel cannot bind an operand this large (wgpu under a small
            // storage-binding cap) hands the product to the reference.
            Err(Error::TooLarge { .. }) => super::cpu::CpuBackend::new().gemm(kind, &av, &bv, m, k, n)?,
            r => r?,
        }
    };
    put(be, "gemm out", m, n, Elem::F32, words(&out))
}

pub(crate) fn bias_act_op<B: Backend + ?Sized>(be: &B, x: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
    if Arc::ptr_eq(&x.inner, &bias.inner) {
        return Err(Error::Aliased { field: "bias_act bias", other: "bias_act x" });
    }
    let r = be.tensor_read(&[x, bias])?;
    let (mut xv, b) = (f32s(&r[0]), f32s(&r[1]));
    bias_act::bias_act(&mut xv, &b, act);
    be.tensor_write(x, &words(&xv))
}

/// Gather the problems' rows on the host and run the backend's `kmeans`.
pub(crate) fn kmeans_items<B: Backend + ?Sized>(
    be: &B,
    pts: &ItemPoints,
    ids: &[u32],
    offsets: &[u32],
    k: &[u32],
    seeds: &[u64],
    max_iter: u32,
) -> Result<KmeansResult> {
    let dim = pts.dim;
    let mut points = Vec::with_capacity(ids.len() * dim);
    for &i in ids {
        points.extend_from_slice(&pts.host[i as usize * dim..(i as usize + 1) * dim]);
    }
    be.kmeans(&KmeansBatch { dim, points: &points, offsets, k }, seeds, max_iter)
}

pub(crate) fn adam<B: Backend + ?Sized>(be: &B, w: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, s: &AdamStep) -> Result<()> {
    let r = be.tensor_read(&[w, g, m, v])?;
    let (mut wv, gv, mut mv, mut vv) = (f32s(&r[0]), f32s(&r[1]), f32s(&r[2]), f32s(&r[3]));
    optim::adam(&mut wv, &gv, &mut mv, &mut vv, s);
    be.tensor_write(w, &words(&wv))?;
    be.tensor_write(m, &words(&mv))?;
    be.tensor_write(v, &words(&vv))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn adagrad_rows<B: Backend + ?Sized>(
    be: &B,
    w: &Tensor,
    acc: &Tensor,
    rows: &IdSlot,
    g: &Tensor,
    staged: &Staged,
    lr: f32,
    eps: f32,
) -> Result<()> {
    let r = be.tensor_read(&[w, acc, g, &staged.tensor])?;
    let (mut wv, mut av, gv) = (f32s(&r[0]), f32s(&r[1]), f32s(&r[2]));
    optim::adagrad_rows(&mut wv, &mut av, w.cols, &r[3][rows.range.clone()], &gv, lr, eps);
    be.tensor_write(w, &words(&wv))?;
    be.tensor_write(acc, &words(&av))
}

pub(crate) fn bias_act_bwd<B: Backend + ?Sized>(be: &B, dy: &Tensor, y: &Tensor, act: Act) -> Result<Tensor> {
    let r = be.tensor_read(&[dy, y])?;
    let (mut dv, yv) = (f32s(&r[0]), f32s(&r[1]));
    let db = bias_act::bias_act_bwd(&mut dv, &yv, dy.cols, act);
    be.tensor_write(dy, &words(&dv))?;
    put(be, "bias grad", 1, dy.cols, Elem::F32, words(&db))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attn_fwd<B: Backend + ?Sized>(
    be: &B,
    heads: usize,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    offs: &OffsetsSlot,
    staged: &Staged,
) -> Result<AttnDev> {
    let r = be.tensor_read(&[q, k, v, bias, &staged.tensor])?;
    let o = be.attn_fwd(heads, &f32s(&r[0]), &f32s(&r[1]), &f32s(&r[2]), &f32s(&r[3]), &r[4][offs.range.clone()])?;
    Ok(AttnDev {
        p: put(be, "attn p", offs.rows, heads, Elem::F32, words(&o.p))?,
        pooled: put(be, "attn pooled", offs.segments, q.cols, Elem::F32, words(&o.pooled))?,
    })
}

pub(crate) fn attn_bwd<B: Backend + ?Sized>(
    be: &B,
    heads: usize,
    (q, k, v, bias): (&Tensor, &Tensor, &Tensor, &Tensor),
    p: &Tensor,
    dpooled: &Tensor,
    offs: &OffsetsSlot,
    staged: &Staged,
) -> Result<AttnGradsDev> {
    let r = be.tensor_read(&[q, k, v, bias, p, dpooled, &staged.tensor])?;
    let (qv, kv, vv, bv, pv, dp) = (f32s(&r[0]), f32s(&r[1]), f32s(&r[2]), f32s(&r[3]), f32s(&r[4]), f32s(&r[5]));
    let saved = super::AttnSaved { q: &qv, k: &kv, v: &vv, bias: &bv, offsets: &r[6][offs.range.clone()], p: &pv };
    let g = be.attn_bwd(heads, saved, &dp)?;
    let (b, n, d) = (offs.segments, offs.rows, q.cols);
    Ok(AttnGradsDev {
        dq: put(be, "attn dq", b, d, Elem::F32, words(&g.dq))?,
        dk: put(be, "attn dk", n, d, Elem::F32, words(&g.dk))?,
        dv: put(be, "attn dv", n, d, Elem::F32, words(&g.dv))?,
        dbias: put(be, "attn dbias", n, heads, Elem::F32, words(&g.dbias))?,
    })
}

pub(crate) fn segment_sum<B: Backend + ?Sized>(be: &B, src: &Tensor, perm: &IdSlot, segs: &OffsetsSlot, staged: &Staged) -> Result<Tensor> {
    let r = be.tensor_read(&[src, &staged.tensor])?;
    let (p, o) = (&r[1][perm.range.clone()], &r[1][segs.range.clone()]);
    let out = if p.is_empty() { vec![0.0; segs.segments * src.cols] } else { be.segment_sum(&f32s(&r[0]), src.cols, p, o)? };
    put(be, "segment sum", segs.segments, src.cols, Elem::F32, words(&out))
}

pub(crate) fn bce<B: Backend + ?Sized>(be: &B, logits: &Tensor, labels: &F32Slot, staged: &Staged) -> Result<BceDev> {
    let r = be.tensor_read(&[logits, &staged.tensor])?;
    let (loss, d) = be.bce(&f32s(&r[0]), &f32s(&r[1][labels.range.clone()]))?;
    let bits = loss.to_bits();
    Ok(BceDev {
        loss: put(be, "bce loss", 1, 2, Elem::U32, vec![bits as u32, (bits >> 32) as u32])?,
        dlogit: put(be, "bce dlogit", labels.len(), 1, Elem::F32, words(&d))?,
        form: super::LossForm::MeanF64,
    })
}
