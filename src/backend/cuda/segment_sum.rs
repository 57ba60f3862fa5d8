//! Host side of `kernels/segment_sum.cu`: deterministic scatter-add, one thread per output
//! element adding its segment's source rows in list order (bit-identical to the CPU).

use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend};
use crate::backend::{IdSlot, OffsetsSlot, Staged, Tensor};
use crate::error::Result;

/// Mirrors `SegmentSumParams` in kernels/segment_sum.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentSumParams {
    pub n_seg: u32,
    pub width: u32,
    pub pad0: u32,
    pub pad1: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for SegmentSumParams {}

pub(crate) fn segment_sum(be: &CudaBackend, src: &[f32], width: usize, perm: &[u32], seg_offsets: &[u32]) -> Result<Vec<f32>> {
    let s_n = seg_offsets.len() - 1;
    let total = s_n * width;
    if total == 0 {
        return Ok(Vec::new());
    }
    let p = SegmentSumParams { n_seg: u32_of("segments", s_n)?, width: u32_of("width", width)?, pad0: 0, pad1: 0 };
    let sd = be.htod("segment_sum: upload src", src)?;
    let pd = be.htod("segment_sum: upload perm", perm)?;
    let od = be.htod("segment_sum: upload seg_offsets", seg_offsets)?;
    let out = be.output::<f32>("segment_sum: alloc", total)?;
    let mut b = be.launcher("segment_sum_fwd");
    b.arg(&p).arg(&sd).arg(&pd).arg(&od).arg(&out);
    // SAFETY: kernel (SegmentSumParams, src [N*W], perm [M], seg_offsets [S+1], out [S*W]);
    // check::segment_sum validated perm < N, the offsets (0 .. M, non-decreasing) and the sizes;
    // the grid-stride loop covers exactly S*W elements, each written once by its own thread.
    unsafe { b.launch(be.grid_1d(total as u64)) }.map_err(device_err("segment_sum launch"))?;
    be.dtoh("segment_sum: download", &out, total)
}

impl CudaBackend {
    /// `segment_sum` on tensors (checked by `check::segment_sum_dev`): `out [S, W]` stays on the
    /// device.
    pub(crate) fn segment_sum_dev(&self, src: &Tensor, perm: &IdSlot, segs: &OffsetsSlot, staged: &Staged) -> Result<Tensor> {
        let (s_n, width) = (segs.segments, src.cols);
        let out = self.tensor_output("segment sum", s_n, width)?;
        if s_n * width == 0 {
            return Ok(out);
        }
        let p = SegmentSumParams { n_seg: u32_of("segments", s_n)?, width: u32_of("width", width)?, pad0: 0, pad1: 0 };
        let sb = self.tensor_buf(&staged.tensor)?;
        let (pv, ov) = (sb.slice(perm.range.clone()), sb.slice(segs.range.clone()));
        let mut b = self.launcher("segment_sum_fwd");
        b.arg(&p).arg(self.tensor_buf(src)?).arg(&pv).arg(&ov).arg(self.tensor_buf(&out)?);
        // SAFETY: kernel (SegmentSumParams, src [N*W], perm [M], seg_offsets [S+1], out [S*W]);
        // perm was staged below N = src.rows, the offsets staged valid over M = perm.len()
        // (check::segment_sum_dev); each of the S*W outputs is written once by its own thread.
        unsafe { b.launch(self.grid_1d((s_n * width) as u64)) }.map_err(device_err("segment_sum launch"))?;
        Ok(out)
    }
}
