//! Host side of the training step's sequence ops on device tensors (math in `cpu::cross_bias`,
//! `cpu::gsu_train`, `cpu::twin_rows`, `cpu::segment_sum::segment_sum_mapped`):
//! `cross_tables_fwd` and `cross_bias_bwd` (kernels/cross_bias.cu), `gsu_train_fwd` and
//! `gsu_train_map_tail_fwd` (kernels/gsu_train.cu), `twin_rows_fwd` and `twin_rows_value_fwd`
//! (kernels/twin_rows.cu), `segment_sum_mapped_fwd` (kernels/segment_sum.cu). Inputs are device
//! tensors and staged sections, outputs new pooled tensors (or `v` in place): launches only, no
//! copy between host and device. The `DeviceOps` checks ran before any of these.

use cudarc::driver::LaunchConfig;

use super::buffers::Buf;
use super::cross_bias::CrossBiasBwdParams;
use super::gsu_topk::view;
use super::launch::KernelParam;
use super::segment_sum::SegmentSumParams;
use super::{device_err, u32_of, CudaBackend};
use crate::backend::train_rows::CrossGradLayout;
use crate::backend::{
    CrossGradsDev, CrossParams, Elem, FeatTables, GsuTrainIn, GsuTrainOut, IdSlot, OffsetsSlot, Staged, Tensor, TwinRowsSlot,
};
use crate::error::{Error, Result};

/// Threads per block of `gsu_train_fwd` (`GSU_TRAIN_THREADS` in the .cu).
const GSU_TRAIN_THREADS: u32 = 256;

/// Mirrors `GsuTrainParams` in kernels/gsu_train.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct GsuTrainParams {
    pub n_samples: u32,
    pub id_w: u32,
    pub small_w: u32,
    pub heads: u32,
    pub n_cross: u32,
    pub k: u32,
    pub bias: u32,
    pub q_scale: f32,
    pub inv_h: f32,
    pub pad0: u32,
    pub pad1: u32,
    pub pad2: u32,
}
// SAFETY: `#[repr(C)]` of 4-byte fields, the same layout as the CUDA struct.
unsafe impl KernelParam for GsuTrainParams {}

/// Mirrors `GsuTrainTailParams` in kernels/gsu_train.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct GsuTrainTailParams {
    pub n_long: u32,
    pub n_fin: u32,
    pub n_tail: u32,
    pub pad0: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for GsuTrainTailParams {}

/// Mirrors `TwinRowsParams` in kernels/twin_rows.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct TwinRowsParams {
    pub n_att: u32,
    pub n_fin: u32,
    pub n_long: u32,
    pub id_w: u32,
    pub small_w: u32,
    pub heads: u32,
    pub n_cross: u32,
    pub width: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for TwinRowsParams {}

fn cross_params(p: &CrossParams<'_>, d: usize) -> Result<CrossBiasBwdParams> {
    CrossBiasBwdParams::of(&CrossGradLayout { d, ..CrossGradLayout::of_params(p) })
}

/// The four feature tables' buffers (item, author, topic, duration).
fn tables<'a>(be: &CudaBackend, f: &FeatTables<'a>) -> Result<[&'a Buf<u32>; 4]> {
    Ok([be.tensor_buf(f.tables[0])?, be.tensor_buf(f.tables[1])?, be.tensor_buf(f.tables[2])?, be.tensor_buf(f.tables[3])?])
}

/// `cross_tables_fwd`: `(cb [V, h], cv [V, D])` from the cross parameters (checked by
/// `CrossParams::check`, which returned `d`).
pub(crate) fn cross_tables(be: &CudaBackend, p: &CrossParams<'_>, d: usize, staged: &Staged) -> Result<(Tensor, Tensor)> {
    let (v, h) = (p.offsets.rows, p.dims.heads);
    let cb = be.tensor_output("cross bias table", v, h)?;
    let cv = be.tensor_output("cross value table", v, d)?;
    let total = v * (h + d);
    if total == 0 {
        return Ok((cb, cv));
    }
    let params = cross_params(p, d)?;
    let offs = view(be.tensor_buf(&staged.tensor)?, &p.offsets.range);
    let mut b = be.launcher("cross_tables_fwd");
    b.arg(&params).arg(be.tensor_buf(p.e)?).arg(be.tensor_buf(p.w_c)?).arg(be.tensor_buf(p.beta)?).arg(be.tensor_buf(p.w_vc)?);
    b.arg(&offs).arg(be.tensor_buf(&cb)?).arg(be.tensor_buf(&cv)?);
    // SAFETY: kernel (CrossBiasBwdParams, e [V*C], w_c [h*J*C], beta [h*J], w_vc [J*C*D],
    // offsets [J+1], cb [V*h], cv [V*D]); CrossParams::check matched every tensor's shape to
    // (V, h, J, C, D) and the offsets were staged valid (0 .. V, non-decreasing) in `staged`, so
    // every row read is < V and every weight index inside its tensor; each of the V*(h+D) outputs
    // is written once by its own thread into the two fresh tensors.
    unsafe { b.launch(be.grid_1d(total as u64)) }.map_err(device_err("cross_tables_fwd launch"))?;
    Ok((cb, cv))
}

/// `cross_bias_bwd` into four tensors shaped like the parameters (written, not accumulated).
pub(crate) fn cross_tables_bwd(
    be: &CudaBackend,
    p: &CrossParams<'_>,
    dcb: &Tensor,
    dcv: &Tensor,
    staged: &Staged,
) -> Result<CrossGradsDev> {
    let lay = CrossGradLayout::of_params(p);
    let g = CrossGradsDev {
        de: be.tensor_output("cross e grad", p.e.rows, p.e.cols)?,
        dw_c: be.tensor_output("cross w_c grad", p.w_c.rows, p.w_c.cols)?,
        dbeta: be.tensor_output("cross beta grad", p.beta.rows, p.beta.cols)?,
        dw_vc: be.tensor_output("cross w_vc grad", p.w_vc.rows, p.w_vc.cols)?,
    };
    let total = lay.total();
    if total == 0 {
        return Ok(g);
    }
    let params = CrossBiasBwdParams::of(&lay)?;
    let offs = view(be.tensor_buf(&staged.tensor)?, &p.offsets.range);
    let mut b = be.launcher("cross_bias_bwd");
    b.arg(&params).arg(be.tensor_buf(dcb)?).arg(be.tensor_buf(dcv)?);
    b.arg(be.tensor_buf(p.e)?).arg(be.tensor_buf(p.w_c)?).arg(be.tensor_buf(p.beta)?).arg(be.tensor_buf(p.w_vc)?).arg(&offs);
    b.arg(be.tensor_buf(&g.de)?).arg(be.tensor_buf(&g.dw_c)?).arg(be.tensor_buf(&g.dbeta)?).arg(be.tensor_buf(&g.dw_vc)?);
    // SAFETY: kernel (CrossBiasBwdParams, dcb [V*h], dcv [V*D], e [V*C], w_c [h*J*C], beta [h*J],
    // w_vc [J*C*D], offsets [J+1], de [V*C], dw_c [h*J*C], dbeta [h*J], dw_vc [J*C*D]);
    // CrossParams::check and DeviceOps::cross_tables_bwd_dev matched every shape to
    // (V, h, J, C, D), the offsets were staged valid over V; each of the `total` outputs is
    // written once by its own thread into its own fresh tensor.
    unsafe { b.launch(be.grid_1d(total as u64)) }.map_err(device_err("cross_bias_bwd launch"))?;
    Ok(g)
}

/// `gsu_train_fwd` (one block per sample) and `gsu_train_map_tail_fwd`: scores, finalists, row map.
pub(crate) fn gsu_train(be: &CudaBackend, x: &GsuTrainIn<'_>, slot: &TwinRowsSlot, staged: &Staged) -> Result<GsuTrainOut> {
    let (n_long, n_fin, map_len) = (slot.n_long, slot.n_fin, slot.map_len());
    let out = GsuTrainOut {
        scores: be.tensor_output_of("gsu scores", n_long, 1, Elem::F32)?,
        sel: be.tensor_output_of("gsu finalists", n_fin, 1, Elem::U32)?,
        map: be.tensor_output_of("gsu row map", map_len, 1, Elem::U32)?,
        staging: slot.staging,
    };
    let (sb, map) = (be.tensor_buf(&staged.tensor)?, be.tensor_buf(&out.map)?);
    if n_long > 0 {
        let samples = slot.samples;
        if samples > i32::MAX as usize {
            return Err(Error::TooLarge { field: "gsu samples", value: samples as u64, limit: i32::MAX as u64 });
        }
        let p = GsuTrainParams {
            n_samples: u32_of("gsu samples", samples)?,
            id_w: u32_of("id width", x.feats.dims.id)?,
            small_w: u32_of("small width", x.feats.dims.small)?,
            heads: u32_of("heads", x.heads)?,
            n_cross: u32_of("n_cross", slot.bounds.n_cross)?,
            k: u32_of("gsu k", slot.k)?,
            bias: x.bias as u32,
            q_scale: x.q_scale,
            inv_h: if x.heads > 0 { 1.0 / x.heads as f32 } else { 0.0 },
            pad0: 0,
            pad1: 0,
            pad2: 0,
        };
        // cb is read only in the bias form (and only then checked): a null pointer otherwise.
        let cb = if x.bias { be.tensor_buf(x.cb)?.addr() } else { 0u64 };
        let [t0, t1, t2, t3] = tables(be, &x.feats)?;
        let mut b = be.launcher("gsu_train_fwd");
        b.arg(&p).arg(be.tensor_buf(x.qbar)?).arg(t0).arg(t1).arg(t2).arg(t3).arg(&cb);
        b.arg(&view(sb, &slot.feat)).arg(&view(sb, &slot.cross)).arg(&view(sb, &slot.log_n));
        b.arg(&view(sb, &slot.long_offsets)).arg(&view(sb, &slot.fin_offsets));
        b.arg(be.tensor_buf(&out.scores)?).arg(be.tensor_buf(&out.sel)?).arg(map);
        let cfg = LaunchConfig { grid_dim: (samples as u32, 1, 1), block_dim: (GSU_TRAIN_THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: kernel (GsuTrainParams, qbar [B*H], item/author/topic/duration tables, cb
        // [ΣV*h] or null when bias = 0, feat [P*4], cross [P*J], log_n [P], long_offsets [B+1],
        // fin_offsets [B+1], scores [n_long], sel [n_fin], map [map_len]); check_gsu matched qbar,
        // the tables (f32, widths, rows >= the staged bounds) and cb (when read) to the slot, whose
        // ids, offsets and fin_offsets = min(L_b, K) prefix sums were checked and staged in
        // `staged`; block b writes scores and map only at its own positions and sel only at its
        // own finalist rows (exactly min(L_b, K) of them: a strict total order), so no two
        // threads write one element and none writes outside the fresh output tensors.
        unsafe { b.launch(cfg) }.map_err(device_err("gsu_train_fwd launch"))?;
    }
    let tail = map_len - n_long;
    if tail > 0 {
        let p = GsuTrainTailParams {
            n_long: u32_of("n_long", n_long)?,
            n_fin: u32_of("n_fin", n_fin)?,
            n_tail: u32_of("map tail", tail)?,
            pad0: 0,
        };
        let mut b = be.launcher("gsu_train_map_tail_fwd");
        b.arg(&p).arg(map);
        // SAFETY: kernel (GsuTrainTailParams, map [map_len]); it writes map[n_long + t] for
        // t < map_len - n_long, inside the tensor; n_fin + t < map_rows <= u32::MAX / 2
        // (Staging::twin_rows).
        unsafe { b.launch(be.grid_1d(tail as u64)) }.map_err(device_err("gsu_train_map_tail_fwd launch"))?;
    }
    Ok(out)
}

fn rows_params(slot: &TwinRowsSlot, f: &FeatTables<'_>, heads: usize, width: usize) -> Result<TwinRowsParams> {
    Ok(TwinRowsParams {
        n_att: u32_of("attention rows", slot.n_att())?,
        n_fin: u32_of("n_fin", slot.n_fin)?,
        n_long: u32_of("n_long", slot.n_long)?,
        id_w: u32_of("id width", f.dims.id)?,
        small_w: u32_of("small width", f.dims.small)?,
        heads: u32_of("heads", heads)?,
        n_cross: u32_of("n_cross", slot.bounds.n_cross)?,
        width: u32_of("value width", width)?,
    })
}

/// `twin_rows_fwd`: `(x_h [n_att, H], bias [n_att, h])`.
pub(crate) fn twin_rows(
    be: &CudaBackend,
    feats: &FeatTables<'_>,
    cb: &Tensor,
    heads: usize,
    gsu: &GsuTrainOut,
    slot: &TwinRowsSlot,
    staged: &Staged,
) -> Result<(Tensor, Tensor)> {
    let (n, hd) = (slot.n_att(), feats.dims.width());
    let xs = be.tensor_output("attention rows x_h", n, hd)?;
    let bias = be.tensor_output("attention bias", n, heads)?;
    let total = n * (hd + heads);
    if total == 0 {
        return Ok((xs, bias));
    }
    let p = rows_params(slot, feats, heads, 0)?;
    let sb = be.tensor_buf(&staged.tensor)?;
    let [t0, t1, t2, t3] = tables(be, feats)?;
    let mut b = be.launcher("twin_rows_fwd");
    b.arg(&p).arg(t0).arg(t1).arg(t2).arg(t3).arg(be.tensor_buf(cb)?);
    b.arg(&view(sb, &slot.feat)).arg(&view(sb, &slot.cross)).arg(&view(sb, &slot.log_n)).arg(be.tensor_buf(&gsu.sel)?);
    b.arg(be.tensor_buf(&xs)?).arg(be.tensor_buf(&bias)?);
    // SAFETY: kernel (TwinRowsParams, item/author/topic/duration tables, cb [ΣV*h], feat [P*4],
    // cross [P*J], log_n [P], sel [n_fin], x [n_att*H], bias [n_att*h]); check_rows matched the
    // tables and cb to the slot's staged bounds and `gsu` to the slot (sel holds n_fin long
    // positions, written by gsu_train_fwd only), so every position is < P and every id inside
    // its table; each output element is written once by its own thread.
    unsafe { b.launch(be.grid_1d(total as u64)) }.map_err(device_err("twin_rows_fwd launch"))?;
    Ok((xs, bias))
}

/// `twin_rows_value_fwd`: `v [n_att, D] += Σ_j cv[cross_j]` in place.
pub(crate) fn twin_rows_value(
    be: &CudaBackend,
    v: &Tensor,
    cv: &Tensor,
    gsu: &GsuTrainOut,
    slot: &TwinRowsSlot,
    staged: &Staged,
) -> Result<()> {
    let total = slot.n_att() * v.cols;
    if total == 0 {
        return Ok(());
    }
    let p = TwinRowsParams {
        n_att: u32_of("attention rows", slot.n_att())?,
        n_fin: u32_of("n_fin", slot.n_fin)?,
        n_long: u32_of("n_long", slot.n_long)?,
        id_w: 0,
        small_w: 0,
        heads: 0,
        n_cross: u32_of("n_cross", slot.bounds.n_cross)?,
        width: u32_of("value width", v.cols)?,
    };
    let sb = be.tensor_buf(&staged.tensor)?;
    let mut b = be.launcher("twin_rows_value_fwd");
    b.arg(&p).arg(&view(sb, &slot.cross)).arg(be.tensor_buf(&gsu.sel)?).arg(be.tensor_buf(cv)?).arg(be.tensor_buf(v)?);
    // SAFETY: kernel (TwinRowsParams, cross [P*J], sel [n_fin], cv [ΣV*D], v [n_att*D]);
    // check_values matched v to [n_att, D], cv to [ΣV, D] and `gsu` to the slot, whose cross ids
    // are < ΣV; each element of v is read and written by its own thread only.
    unsafe { b.launch(be.grid_1d(total as u64)) }.map_err(device_err("twin_rows_value_fwd launch"))?;
    Ok(())
}

/// `segment_sum_mapped_fwd`: `out [S, W]`, positions sent through the GSU's row map.
pub(crate) fn segment_sum_mapped(
    be: &CudaBackend,
    src: &Tensor,
    perm: &IdSlot,
    segs: &OffsetsSlot,
    gsu: &GsuTrainOut,
    staged: &Staged,
) -> Result<Tensor> {
    let (s_n, width) = (segs.segments, src.cols);
    let out = be.tensor_output("segment sum (mapped)", s_n, width)?;
    if s_n * width == 0 {
        return Ok(out);
    }
    let p = SegmentSumParams { n_seg: u32_of("segments", s_n)?, width: u32_of("width", width)?, pad0: 0, pad1: 0 };
    let sb = be.tensor_buf(&staged.tensor)?;
    let mut b = be.launcher("segment_sum_mapped_fwd");
    b.arg(&p).arg(be.tensor_buf(src)?).arg(&view(sb, &perm.range)).arg(&view(sb, &segs.range));
    b.arg(be.tensor_buf(&gsu.map)?).arg(be.tensor_buf(&out)?);
    // SAFETY: kernel (SegmentSumParams, src [N*W], perm [M], seg_offsets [S+1], map [map_len],
    // out [S*W]); check_mapped: perm staged below map_len, offsets staged valid over M, src has
    // N = map_rows rows, and the map's values are < map_rows or 0xFFFFFFFF (skipped), written by
    // the GSU kernels only; each of the S*W outputs is written once by its own thread.
    unsafe { b.launch(be.grid_1d((s_n * width) as u64)) }.map_err(device_err("segment_sum_mapped launch"))?;
    Ok(out)
}
