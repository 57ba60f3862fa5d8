//! Host side of `kernels/esu.cu` and the standalone `esu` op.

use cudarc::driver::LaunchConfig;

use super::buffers::{Buf, View};
use super::gsu_topk::{cand_req, pack_batch, view, BatchRanges};
use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend, Packer};
use crate::backend::{OnlineBatch, OnlineTables, TopK};
use crate::error::{Error, Result};

/// Threads per ESU block (one block per candidate).
const ESU_THREADS: u32 = 128;
/// The ESU keeps q, pooled, α and the finalist rows in (non-opt-in) shared memory.
const ESU_MAX_SMEM: usize = 48 * 1024;

/// Mirrors `EsuParams` in kernels/esu.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct EsuParams {
    pub n_cand: u32,
    pub dim: u32,
    pub heads: u32,
    pub n_cross: u32,
    pub k: u32,
    pub q_f16: u32,
    pub k_f16: u32,
    pub v_f16: u32,
    pub cv_f16: u32,
    pub wo_f16: u32,
    pub scale: f32,
    pub pad: u32,
}
// SAFETY: `#[repr(C)]` of 4-byte fields, the same layout as the CUDA struct.
unsafe impl KernelParam for EsuParams {}

pub(crate) fn smem_bytes(dim: usize, heads: usize, k: usize) -> usize {
    4 * (2 * dim + k * heads + k)
}

/// Launch `esu_fwd`: `topk_idx` [ΣB*k], `topk_count` [ΣB] (counts in 1..=min(k, L_r)),
/// `out` [ΣB*D] f32 bits.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch(
    be: &CudaBackend,
    t: &OnlineTables,
    buf: &Buf<u32>,
    br: &BatchRanges,
    bias: &View<u32>,
    k: usize,
    topk_idx: &View<u32>,
    topk_count: &View<u32>,
    out: &View<u32>,
) -> Result<()> {
    let n_cand = br.cands.len();
    if n_cand == 0 {
        return Ok(());
    }
    let dim = t.d_model();
    let smem = smem_bytes(dim, t.heads, k);
    if smem > ESU_MAX_SMEM {
        return Err(Error::TooLarge {
            field: "esu shared memory (4*(2D + K*h + K) bytes)",
            value: smem as u64,
            limit: ESU_MAX_SMEM as u64,
        });
    }
    let q = be.table_ptr(&t.p_q)?;
    let kt = be.table_ptr(&t.p_k)?;
    let v = be.table_ptr(&t.p_v)?;
    let cv = be.table_ptr(&t.cross_value)?;
    let wo = be.table_ptr(&t.w_o)?;
    let p = EsuParams {
        n_cand: u32_of("candidates", n_cand)?,
        dim: u32_of("D", dim)?,
        heads: u32_of("heads", t.heads)?,
        n_cross: u32_of("n_cross", t.n_cross())?,
        k: u32_of("top_k", k)?,
        q_f16: q.f16,
        k_f16: kt.f16,
        v_f16: v.f16,
        cv_f16: cv.f16,
        wo_f16: wo.f16,
        scale: (1.0 / (t.d_head() as f64).sqrt()) as f32,
        pad: 0,
    };
    let (seq_off, items, cross, creq, cands) =
        (view(buf, &br.seq_off), view(buf, &br.items), view(buf, &br.cross), view(buf, &br.cand_req), view(buf, &br.cands));
    let cfg = LaunchConfig { grid_dim: (p.n_cand, 1, 1), block_dim: (ESU_THREADS, 1, 1), shared_mem_bytes: smem as u32 };
    let mut b = be.launcher("esu_fwd");
    b.arg(&p)
        .arg(&q.ptr)
        .arg(&kt.ptr)
        .arg(&v.ptr)
        .arg(&cv.ptr)
        .arg(&wo.ptr)
        .arg(&seq_off)
        .arg(&items)
        .arg(&cross)
        .arg(&creq)
        .arg(&cands)
        .arg(bias)
        .arg(topk_idx)
        .arg(topk_count)
        .arg(out);
    // SAFETY: kernel (EsuParams, P_Q, P_K, P_V, cross_value, W^o, seq_off [R+1], items [ΣL],
    // cross [ΣL*J], cand_req [ΣB], cands [ΣB], bias [ΣL*h], idx [ΣB*k], count [ΣB], out [ΣB*D]);
    // tables and ids checked by check::online, finalists by check::topk_for (or produced by the
    // GSU with count = min(k, L_r) and positions < L_r); dyn smem = smem_bytes(D, h, k) ≤ 48 KiB.
    unsafe { b.launch(cfg) }.map_err(device_err("esu launch"))?;
    Ok(())
}

pub(crate) fn esu(be: &CudaBackend, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], topk: &TopK) -> Result<Vec<f32>> {
    let n_cand = batch.cands.len();
    let dim = t.d_model();
    if n_cand == 0 || dim == 0 {
        return Ok(vec![0.0; n_cand * dim]);
    }
    let creq = cand_req(batch);
    let mut pk = Packer::default();
    let br = pack_batch(&mut pk, batch, &creq);
    let rb = pk.push_f32(bias);
    let ri = pk.push(&topk.idx);
    let rc = pk.push(&topk.count);
    let buf = be.htod("esu: upload", &pk.words)?;
    let out = be.output::<u32>("esu: alloc", n_cand * dim)?;
    launch(be, t, &buf, &br, &view(&buf, &rb), topk.k, &view(&buf, &ri), &view(&buf, &rc), &out.slice(..))?;
    let words = be.dtoh("esu: download", &out, n_cand * dim)?;
    Ok(words.into_iter().map(f32::from_bits).collect())
}
