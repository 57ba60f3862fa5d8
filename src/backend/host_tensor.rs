//! The trait's default (host) implementations of the device-tensor ops: tensors are
//! [`HostMem`], and the ops run the CPU reference (`cpu::copy_rows`, `cpu::bias_act`) or the
//! backend's own slice-level kernels (`gemm`, `online`). The CPU backend runs exactly these; a
//! GPU backend overrides them with device-resident versions.

use std::sync::Arc;

use super::cpu::{bias_act, copy_rows};
use super::tensor::{f32s, words, Act, Elem, HostMem, OnlineDev, OnlineSlot, Rows, Staged, Tensor};
use super::{Backend, GemmKind, OnlineBatch, OnlineTables};
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

/// Rebuild the staged batch from the host layout and run the backend's `online`.
pub(crate) fn online_dev<B: Backend + ?Sized>(be: &B, t: &OnlineTables, staged: &Staged, slot: &OnlineSlot) -> Result<OnlineDev> {
    let w = mem(be, &staged.tensor)?.lock().clone();
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
    let mut tk = vec![0u32; n * (2 * k + 1)];
    for c in 0..n {
        let row = &mut tk[c * (2 * k + 1)..(c + 1) * (2 * k + 1)];
        row[..k].copy_from_slice(&o.topk.idx[c * k..(c + 1) * k]);
        row[k..2 * k].copy_from_slice(&words(&o.topk.score[c * k..(c + 1) * k]));
        row[2 * k] = o.topk.count[c];
    }
    Ok(OnlineDev {
        out: tensor(be, "online out", n, t.d_model(), Elem::F32, words(&o.out)),
        topk: tensor(be, "online topk", n, 2 * k + 1, Elem::U32, tk),
        flag: tensor(be, "online flag", 1, 1, Elem::U32, vec![0]),
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
    src_rows: Rows<'_>,
    staged: &Staged,
    n: usize,
) -> Result<()> {
    if Arc::ptr_eq(&dst.inner, &src.inner) {
        return Err(Error::BadShape { field: "copy_rows src", value: 0, why: "source and destination are the same tensor" });
    }
    let (di, si) = {
        let w = mem(be, &staged.tensor)?.lock();
        (ids(&w, dst_rows), ids(&w, src_rows))
    };
    let s = mem(be, src)?.lock();
    let mut d = mem(be, dst)?.lock();
    copy_rows::copy_rows(&mut d, dst.cols, dst_col, di.as_deref(), &s, src.cols, si.as_deref(), n);
    Ok(())
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
    let (av, bv) = (f32s(&mem(be, a)?.lock()), f32s(&mem(be, b)?.lock()));
    let out = if m == 0 || n == 0 || k == 0 { vec![0.0; m * n] } else { be.gemm(kind, &av, &bv, m, k, n)? };
    Ok(tensor(be, "gemm out", m, n, Elem::F32, words(&out)))
}

pub(crate) fn bias_act_op<B: Backend + ?Sized>(be: &B, x: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
    if Arc::ptr_eq(&x.inner, &bias.inner) {
        return Err(Error::BadShape { field: "bias_act bias", value: 0, why: "bias and x are the same tensor" });
    }
    let b = f32s(&mem(be, bias)?.lock());
    let mut xw = mem(be, x)?.lock();
    let mut xv = f32s(&xw);
    bias_act::bias_act(&mut xv, &b, act);
    xw.copy_from_slice(&words(&xv));
    Ok(())
}
