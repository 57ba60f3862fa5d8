//! Host side of `kernels/esu.cu` (v1: a block per candidate; v2: a block per group of up to 8
//! candidates of one request, W^o staged once per group, the finalists' ids loaded before their
//! rows) and the standalone `esu` op.

use std::ops::Range;
use std::sync::atomic::Ordering;

use cudarc::driver::LaunchConfig;

use super::buffers::{Buf, View};
use super::gsu_topk::{cand_req, pack_batch, view, BatchRanges};
use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend, EsuVersion, Packer};
use crate::backend::{OnlineBatch, OnlineTables, TopK};
use crate::error::{Error, Result};

impl CudaBackend {
    pub fn esu_version(&self) -> EsuVersion {
        EsuVersion::from_u8(self.esu_version.load(Ordering::Relaxed))
    }

    pub fn set_esu_version(&self, v: EsuVersion) {
        self.esu_version.store(v as u8, Ordering::Relaxed);
    }

    /// ESU v2's candidates per block: `Some(1..=8)` forces it (tests reach every group size on
    /// small batches); `None` (the default) chooses per batch (the largest of 8, 4, 2 that gives
    /// every SM a block). Shared memory may still shrink it.
    pub fn set_esu_group(&self, g: Option<usize>) {
        let v = g.map_or(0, |g| g.clamp(1, V2_MAX_GROUP) as u8);
        self.esu_group.store(v, Ordering::Relaxed);
    }

    pub(crate) fn esu_group(&self) -> Option<usize> {
        match self.esu_group.load(Ordering::Relaxed) {
            0 => None,
            g => Some(g as usize),
        }
    }
}

/// Threads per v1 block (one block per candidate).
const ESU_THREADS: u32 = 128;
/// v1 keeps q, pooled, α and the finalist rows in (non-opt-in) shared memory.
const ESU_MAX_SMEM: usize = 48 * 1024;
/// Threads per v2 block (one block per group of candidates).
const V2_THREADS: u32 = 256;
/// Largest v2 group (candidates of one request per block).
pub(crate) const V2_MAX_GROUP: usize = 8;
/// v2 shared memory that still lets two blocks share an sm_90 SM: (228 KiB - 2 x 1 KiB
/// reserved) / 2.
const V2_SMEM_TWO_BLOCKS: usize = 113 * 1024;
/// Staged row tiles tried, largest first.
const V2_TILE_ROWS: [usize; 4] = [64, 32, 16, 8];

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

/// Mirrors `EsuV2Params` in kernels/esu.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct EsuV2Params {
    pub n_groups: u32,
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
    pub group: u32,
    pub tile_rows: u32,
    pub wo_rows: u32,
    pub dkp: u32,
    pub vec: u32,
}
// SAFETY: `#[repr(C)]` of 4-byte fields, the same layout as the CUDA struct.
unsafe impl KernelParam for EsuV2Params {}

pub(crate) fn smem_bytes(dim: usize, heads: usize, k: usize) -> usize {
    4 * (2 * dim + k * heads + k)
}

/// v2's padded head width: d_k when odd, else d_k + 1 (odd, so the dot phase's rows fall in
/// distinct banks).
fn v2_dkp(dim: usize, heads: usize) -> usize {
    let dk = dim / heads.max(1);
    if dk % 2 == 1 {
        dk
    } else {
        dk + 1
    }
}

/// v2's dynamic shared memory for groups of `g` and tiles of `r` pairs (kernels/esu.cu's
/// carve-up): 16 + G·h·dkp + G·D + G·K·h + G·K + G·K·J + R·h·dkp words.
pub(crate) fn v2_smem_bytes(dim: usize, heads: usize, n_cross: usize, k: usize, g: usize, r: usize) -> usize {
    let s = heads * v2_dkp(dim, heads);
    4 * (16 + g * s + g * dim + g * k * heads + g * k + g * k * n_cross + r * s)
}

/// How the ESU runs for one batch (shapes only; a candidate's output does not depend on it).
pub(crate) struct EsuPlan {
    pub version: EsuVersion,
    pub k: usize,
    pub smem: usize,
    /// v2: candidates per group (the largest), pairs per row tile, group offsets [n_groups + 1].
    pub group: usize,
    pub tile_rows: usize,
    pub group_off: Vec<u32>,
}

/// Blocks v2 launches with groups of `g`: Σ_r ⌈B_r / g⌉.
fn v2_blocks(batch: &OnlineBatch, g: usize) -> usize {
    (0..batch.n_requests()).map(|r| batch.cand_range(r).len().div_ceil(g)).sum()
}

/// The asked version where it fits, else v1. v2's group: as forced (`set_esu_group`), else the
/// largest of 8, 4, 2 that still gives every SM a block (else 1); then R, then G, shrink until
/// two blocks fit an SM (a single block where even G = 1, R = 8 does not, up to the opt-in
/// limit).
pub(crate) fn plan(be: &CudaBackend, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Result<EsuPlan> {
    let (dim, heads, j) = (t.d_model(), t.heads, t.n_cross());
    let v1 = |smem| EsuPlan { version: EsuVersion::V1, k, smem, group: 1, tile_rows: 0, group_off: Vec::new() };
    let v1_smem = smem_bytes(dim, heads, k);
    if be.esu_version() == EsuVersion::V1 {
        return Ok(v1(v1_smem));
    }
    let want = match be.esu_group() {
        Some(g) => g.clamp(1, V2_MAX_GROUP),
        None => [8usize, 4, 2].into_iter().find(|&g| v2_blocks(batch, g) >= be.sm_count().max(1) as usize).unwrap_or(1),
    };
    let mut choice = None;
    let mut g = want;
    'fit: while g >= 1 {
        for r in V2_TILE_ROWS {
            if v2_smem_bytes(dim, heads, j, k, g, r) <= V2_SMEM_TWO_BLOCKS {
                choice = Some((g, r));
                break 'fit;
            }
        }
        g /= 2;
    }
    let (g, r) = choice.unwrap_or((1, V2_TILE_ROWS[V2_TILE_ROWS.len() - 1]));
    let smem = v2_smem_bytes(dim, heads, j, k, g, r);
    if smem > be.smem_optin() as usize {
        return Ok(v1(v1_smem));
    }
    let mut group_off = Vec::with_capacity(v2_blocks(batch, g) + 1);
    for rq in 0..batch.n_requests() {
        group_off.extend(batch.cand_range(rq).step_by(g).map(|c| c as u32));
    }
    group_off.push(batch.cands.len() as u32);
    Ok(EsuPlan { version: EsuVersion::V2, k, smem, group: g, tile_rows: r, group_off })
}

/// Put v2's group offsets in the packed upload (nothing for v1).
pub(crate) fn pack_plan(pk: &mut Packer, plan: &EsuPlan) -> Range<usize> {
    pk.push(&plan.group_off)
}

/// Launch the planned ESU: `topk_idx` [ΣB*k], `topk_count` [ΣB] (counts in 1..=min(k, L_r)),
/// `groups` v2's group offsets in `buf` (from `pack_plan`), `out` [ΣB*D] f32 bits.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch(
    be: &CudaBackend,
    t: &OnlineTables,
    plan: &EsuPlan,
    buf: &Buf<u32>,
    br: &BatchRanges,
    groups: &Range<usize>,
    bias: &View<u32>,
    topk_idx: &View<u32>,
    topk_count: &View<u32>,
    out: &View<u32>,
) -> Result<()> {
    let n_cand = br.cands.len();
    if n_cand == 0 {
        return Ok(());
    }
    let dim = t.d_model();
    let k = plan.k;
    let q = be.table_ptr(&t.p_q)?;
    let kt = be.table_ptr(&t.p_k)?;
    let v = be.table_ptr(&t.p_v)?;
    let cv = be.table_ptr(&t.cross_value)?;
    let wo = be.table_ptr(&t.w_o)?;
    let scale = (1.0 / (t.d_head() as f64).sqrt()) as f32;
    let (seq_off, items, cross, creq, cands) =
        (view(buf, &br.seq_off), view(buf, &br.items), view(buf, &br.cross), view(buf, &br.cand_req), view(buf, &br.cands));
    if plan.version == EsuVersion::V2 {
        let n_groups = plan.group_off.len().saturating_sub(1);
        let s = t.heads * v2_dkp(dim, t.heads);
        let p = EsuV2Params {
            n_groups: u32_of("esu groups", n_groups)?,
            dim: u32_of("D", dim)?,
            heads: u32_of("heads", t.heads)?,
            n_cross: u32_of("n_cross", t.n_cross())?,
            k: u32_of("top_k", k)?,
            q_f16: q.f16,
            k_f16: kt.f16,
            v_f16: v.f16,
            cv_f16: cv.f16,
            wo_f16: wo.f16,
            scale,
            group: plan.group as u32,
            tile_rows: plan.tile_rows as u32,
            wo_rows: u32_of("esu W^o tile rows", (plan.tile_rows * s / dim.max(1)).clamp(1, dim.max(1)))?,
            dkp: u32_of("esu head width", v2_dkp(dim, t.heads))?,
            vec: u32::from(dim % 4 == 0),
        };
        let smem = u32_of("esu v2 shared memory", plan.smem)?;
        let cfg = LaunchConfig { grid_dim: (p.n_groups, 1, 1), block_dim: (V2_THREADS, 1, 1), shared_mem_bytes: smem };
        be.allow_smem("esu_fwd_v2", smem)?;
        let gv = view(buf, groups);
        let mut b = be.launcher("esu_fwd_v2");
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
            .arg(&gv)
            .arg(out);
        // SAFETY: kernel (EsuV2Params, P_Q, P_K, P_V, cross_value, W^o, seq_off [R+1], items
        // [ΣL], cross [ΣL*J], cand_req [ΣB], cands [ΣB], bias [ΣL*h], idx [ΣB*k], count [ΣB],
        // group_off [n_groups+1], out [ΣB*D]); tables and ids checked by check::online,
        // finalists by check::topk_for (or produced by the GSU with count = min(k, L_r) and
        // positions < L_r); group_off from `plan` (consecutive candidates of one request, at
        // most `group` each, covering 0..ΣB); dyn smem = v2_smem_bytes(.., group, tile_rows) ≤
        // the opt-in limit (allowed above); vec pieces are aligned since D % 4 == 0 then.
        unsafe { b.launch(cfg) }.map_err(device_err("esu v2 launch"))?;
        return Ok(());
    }
    if plan.smem > ESU_MAX_SMEM {
        return Err(Error::TooLarge {
            field: "esu shared memory (4*(2D + K*h + K) bytes)",
            value: plan.smem as u64,
            limit: ESU_MAX_SMEM as u64,
        });
    }
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
        scale,
        pad: 0,
    };
    let cfg = LaunchConfig { grid_dim: (p.n_cand, 1, 1), block_dim: (ESU_THREADS, 1, 1), shared_mem_bytes: plan.smem as u32 };
    let mut b = be.launcher("esu_fwd_v1");
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
    let plan = plan(be, t, batch, topk.k)?;
    let rg = pack_plan(&mut pk, &plan);
    let buf = be.htod("esu: upload", &pk.words)?;
    let out = be.output::<u32>("esu: alloc", n_cand * dim)?;
    launch(be, t, &plan, &buf, &br, &rg, &view(&buf, &rb), &view(&buf, &ri), &view(&buf, &rc), &out.slice(..))?;
    let words = be.dtoh("esu: download", &out, n_cand * dim)?;
    Ok(words.into_iter().map(f32::from_bits).collect())
}
